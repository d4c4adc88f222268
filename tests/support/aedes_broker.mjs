// The aedes MQTT broker (npm `aedes`, installed by scripts/test.sh into the
// scratch directory) on 127.0.0.1:<port>, for the interop tests
// (tests/integration/mqtt_interop_integration_test.cc).
//   node aedes_broker.mjs <node_modules dir> <port>
// Memory persistence: sessions live as long as this process, so a restart of
// the broker loses them, as a broker without persistence does. Prints
// "listening" once the port accepts connections; exits on SIGTERM.
import net from 'node:net'
import path from 'node:path'
import { pathToFileURL } from 'node:url'

const [modules, port] = process.argv.slice(2)
const { Aedes } = await import(pathToFileURL(path.join(modules, 'aedes', 'aedes.js')).href)
const broker = await Aedes.createBroker()
const server = net.createServer(broker.handle)
broker.on('clientError', (client, err) => console.log('client error', client.id, err.message))
broker.on('client', (client) => console.log('client connected', client.id))
broker.on('subscribe', (subs, client) =>
  console.log('subscribe', client.id, subs.map((s) => `${s.topic} qos ${s.qos}`).join(', ')))
server.listen(Number(port), '127.0.0.1', () => console.log('listening'))
process.on('SIGTERM', () => {
  server.close()
  broker.close(() => process.exit(0))
  setTimeout(() => process.exit(0), 1000).unref()
})
