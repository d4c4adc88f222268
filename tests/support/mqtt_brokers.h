#pragma once
// Brokers the project does not ship, for the interop tests
// (tests/integration/mqtt_interop_integration_test.cc), each started as a
// plain child process on loopback ports in the scratch directory:
//  - rabbitmq_broker: Debian's RabbitMQ with its MQTT plugin, its own node
//    name, data dir, epmd and distribution port (nothing on other addresses);
//  - aedes_broker: the aedes broker (npm, installed by scripts/test.sh into
//    the scratch directory) run by Debian's node with aedes_broker.mjs.
// And a QoS 2 publisher, which tests/support/mqtt_peer.h's client lacks.
// For tests only: errors throw.

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "tests/support/harness.h"
#include "tests/support/mqtt_peer.h"

namespace evpipe::testing {

// Starts `args` with the test's environment plus `env` (NAME=value), stdout
// and stderr appended to `log_path`, in a process group of its own (so a
// script's children can be killed with it).
inline pid_t spawn_in_group(const std::vector<std::string>& args, const std::vector<std::string>& env,
                            const std::string& log_path) {
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 1, log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
  posix_spawn_file_actions_adddup2(&fa, 1, 2);
  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETPGROUP);
  posix_spawnattr_setpgroup(&attr, 0);
  std::vector<char*> argv, envp;
  for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  // `env` first and the inherited copies of its names left out: getenv
  // takes the first of two entries of one name.
  for (const auto& e : env) envp.push_back(const_cast<char*>(e.c_str()));
  for (char** e = environ; *e != nullptr; ++e) {
    std::string_view entry(*e);
    bool replaced = false;
    for (const auto& mine : env) replaced |= entry.substr(0, entry.find('=') + 1) == mine.substr(0, mine.find('=') + 1);
    if (!replaced) envp.push_back(*e);
  }
  envp.push_back(nullptr);
  pid_t pid = -1;
  int rc = posix_spawn(&pid, args[0].c_str(), &fa, &attr, argv.data(), envp.data());
  posix_spawn_file_actions_destroy(&fa);
  posix_spawnattr_destroy(&attr);
  if (rc != 0) throw std::runtime_error("cannot start " + args[0]);
  return pid;
}

// Ends a process group started by spawn_in_group: `sig` to its leader, and
// SIGKILL to the whole group if it has not exited within `grace`.
inline void stop_group(pid_t& pid, int sig, std::chrono::milliseconds grace) {
  if (pid <= 0) return;
  pid_t group = pid;
  ::kill(pid, sig);
  if (wait_for_exit(pid, grace) == -1 && pid > 0) {
    ::kill(-group, SIGKILL);
    ::waitpid(pid, nullptr, 0);
    pid = -1;
  }
  ::kill(-group, SIGKILL);  // anything the leader left behind
}

inline std::string read_text(const std::string& path) {
  std::ifstream in(path);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

// Waits until 127.0.0.1:port accepts a connection while `pid` lives.
inline void wait_listening(uint16_t port, pid_t& pid, std::chrono::milliseconds timeout, const std::string& what,
                           const std::string& log_path) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    try {
      ::close(connect_loopback(port));
      return;
    } catch (const std::exception&) {
    }
    int status = 0;
    if (::waitpid(pid, &status, WNOHANG) == pid) {
      pid = -1;
      throw std::runtime_error(what + " exited at startup: " + read_text(log_path));
    }
    std::this_thread::sleep_for(50ms);
  }
  throw std::runtime_error(what + " did not listen on " + std::to_string(port) + " in time: " + read_text(log_path));
}

// RabbitMQ (Debian's rabbitmq-server, EVPIPE_TEST_RABBITMQ names its
// start script) with the MQTT plugin on 127.0.0.1:port(). Its own node name,
// data dir and epmd (ERL_EPMD_PORT on a free port, started here so that it
// ends with the test; the node would otherwise leave a daemon behind). A
// start takes 10 to 20 s on this machine: a test starts one broker and never
// restarts it.
class rabbitmq_broker {
 public:
  static std::string script() {
    return env_or("EVPIPE_TEST_RABBITMQ", "/usr/lib/rabbitmq/bin/rabbitmq-server");
  }

  explicit rabbitmq_broker(const std::string& name)
      : port_(free_port()), amqp_port_(free_port()), dist_port_(free_port()), epmd_port_(free_port()) {
    dir_ = env_or("TMPDIR", "/tmp") + "/rabbitmq_" + std::to_string(::getpid()) + "_" + name;
    if (std::system(("mkdir -p '" + dir_ + "/log'").c_str()) != 0) throw std::runtime_error("mkdir " + dir_);
    std::ofstream(dir_ + "/rabbitmq.conf")
        << "listeners.tcp.default = 127.0.0.1:" << amqp_port_ << "\n"
        << "mqtt.listeners.tcp.default = 127.0.0.1:" << port_ << "\n"
        << "mqtt.allow_anonymous = true\n"
        << "distribution.listener.interface = 127.0.0.1\n"
        << "distribution.listener.port_range.min = " << dist_port_ << "\n"
        << "distribution.listener.port_range.max = " << dist_port_ << "\n"
        << "log.file = " << dir_ << "/log/rabbit.log\nlog.console = false\n";
    std::ofstream(dir_ + "/enabled_plugins") << "[rabbitmq_mqtt].\n";
    std::ofstream(dir_ + "/rabbitmq-env.conf") << "";  // not the machine's /etc/rabbitmq one
    std::string node = "evpipe_" + name + "_" + std::to_string(::getpid()) + "@localhost";
    env_ = {"HOME=" + dir_,  // the Erlang cookie goes here
            "RABBITMQ_NODENAME=" + node,
            "RABBITMQ_BASE=" + dir_,
            "RABBITMQ_MNESIA_BASE=" + dir_ + "/mnesia",
            "RABBITMQ_LOG_BASE=" + dir_ + "/log",
            "RABBITMQ_CONFIG_FILE=" + dir_ + "/rabbitmq.conf",
            "RABBITMQ_ADVANCED_CONFIG_FILE=" + dir_ + "/advanced.config",
            "RABBITMQ_CONF_ENV_FILE=" + dir_ + "/rabbitmq-env.conf",
            "RABBITMQ_ENABLED_PLUGINS_FILE=" + dir_ + "/enabled_plugins",
            "RABBITMQ_PID_FILE=" + dir_ + "/rabbitmq.pid",
            "RABBITMQ_NODE_IP_ADDRESS=127.0.0.1",
            "RABBITMQ_NODE_PORT=" + std::to_string(amqp_port_),
            "RABBITMQ_DIST_PORT=" + std::to_string(dist_port_),
            "ERL_EPMD_ADDRESS=127.0.0.1",
            "ERL_EPMD_PORT=" + std::to_string(epmd_port_)};
    epmd_pid_ = spawn_in_group({"/usr/bin/epmd", "-port", std::to_string(epmd_port_), "-address", "127.0.0.1"}, {},
                               dir_ + "/epmd.log");
    wait_listening(epmd_port_, epmd_pid_, 10s, "epmd", dir_ + "/epmd.log");
    pid_ = spawn_in_group({script()}, env_, dir_ + "/server.log");
    // The plugin opens the MQTT port last, once the node has booted.
    wait_listening(port_, pid_, 120s, "rabbitmq-server", dir_ + "/server.log");
  }
  ~rabbitmq_broker() {
    stop_group(pid_, SIGTERM, 30s);
    stop_group(epmd_pid_, SIGTERM, 5s);
  }
  rabbitmq_broker(const rabbitmq_broker&) = delete;
  rabbitmq_broker& operator=(const rabbitmq_broker&) = delete;

  [[nodiscard]] uint16_t port() const { return port_; }
  [[nodiscard]] std::string url() const { return "mqtt://127.0.0.1:" + std::to_string(port_); }
  [[nodiscard]] std::string log() const { return read_text(dir_ + "/log/rabbit.log"); }
  // The broker's own view of its queues (name, ready, unacknowledged), for a
  // failure message: tells a message the broker still holds from one it lost.
  [[nodiscard]] std::string queues() const {
    std::string cmd = "env";
    for (const auto& e : env_) cmd += " '" + e + "'";
    cmd += " /usr/lib/rabbitmq/bin/rabbitmqctl -q list_queues name messages_ready messages_unacknowledged > '" + dir_ +
           "/queues.txt' 2>&1";
    if (std::system(cmd.c_str()) != 0) return "rabbitmqctl failed: " + read_text(dir_ + "/queues.txt");
    return read_text(dir_ + "/queues.txt");
  }

 private:
  std::string dir_;
  uint16_t port_, amqp_port_, dist_port_, epmd_port_;
  std::vector<std::string> env_;
  pid_t pid_ = -1, epmd_pid_ = -1;
};

// aedes on 127.0.0.1:port(), run by node from EVPIPE_TEST_AEDES_MODULES (the
// node_modules directory scripts/test.sh installs it into). Sessions are kept
// in memory: restart() loses them, like a broker without persistence.
class aedes_broker {
 public:
  static std::string modules() { return env_or("EVPIPE_TEST_AEDES_MODULES"); }
  static bool available() {
    std::string m = modules();
    return !m.empty() && ::access((m + "/aedes/aedes.js").c_str(), R_OK) == 0 &&
           ::access("/usr/bin/node", X_OK) == 0;
  }

  explicit aedes_broker(const std::string& name) : port_(free_port()) {
    dir_ = env_or("TMPDIR", "/tmp") + "/aedes_" + std::to_string(::getpid()) + "_" + name;
    if (std::system(("mkdir -p '" + dir_ + "'").c_str()) != 0) throw std::runtime_error("mkdir " + dir_);
    start();
  }
  ~aedes_broker() { stop(); }
  aedes_broker(const aedes_broker&) = delete;
  aedes_broker& operator=(const aedes_broker&) = delete;

  void start() {
    pid_ = spawn_in_group({"/usr/bin/node", EVPIPE_SOURCE_DIR "/tests/support/aedes_broker.mjs", modules(),
                           std::to_string(port_)},
                          {}, dir_ + "/aedes.log");
    wait_listening(port_, pid_, 30s, "aedes", dir_ + "/aedes.log");
  }
  void stop() { stop_group(pid_, SIGTERM, 5s); }

  [[nodiscard]] uint16_t port() const { return port_; }
  [[nodiscard]] std::string url() const { return "mqtt://127.0.0.1:" + std::to_string(port_); }
  [[nodiscard]] std::string log() const { return read_text(dir_ + "/aedes.log"); }

 private:
  std::string dir_;
  uint16_t port_;
  pid_t pid_ = -1;
};

// A publisher that sends QoS 2 PUBLISHes and completes each handshake
// (PUBLISH → PUBREC → PUBREL → PUBCOMP) one message at a time.
class qos2_publisher {
 public:
  qos2_publisher(uint16_t port, const std::string& client_id) : sock_(mqtt_socket::connect_to(port)) {
    mqtt::connect_packet c;
    c.client_id = client_id;
    c.clean_session = true;
    c.keepalive_s = 60;
    std::string out;
    mqtt::encode_connect(out, c);
    sock_.send(out);
    mqtt::frame f;
    mqtt::connack_packet ack;
    if (!sock_.read(f, 30s) || mqtt::parse_connack(f, ack) != mqtt::decode_status::ok || ack.return_code != 0) {
      throw std::runtime_error("qos2 publisher: no CONNACK");
    }
  }

  // True once the broker has completed the QoS 2 handshake for the message.
  bool publish(const std::string& topic, const std::string& payload, std::chrono::milliseconds timeout = 30s) {
    mqtt::publish_packet p;
    p.topic = topic;
    p.payload = payload;
    p.qos = 2;
    p.packet_id = ++id_ == 0 ? ++id_ : id_;
    std::string out;
    mqtt::encode_publish(out, p);
    sock_.send(out);
    if (!await(mqtt::packet_type::pubrec, timeout)) return false;
    out.clear();
    mqtt::encode_pubrel(out, p.packet_id);
    sock_.send(out);
    return await(mqtt::packet_type::pubcomp, timeout);
  }

 private:
  bool await(mqtt::packet_type type, std::chrono::milliseconds timeout) {
    auto deadline = std::chrono::steady_clock::now() + timeout;
    mqtt::frame f;
    while (std::chrono::steady_clock::now() < deadline) {
      if (sock_.read(f, 100ms) && f.type == type) return true;
      if (sock_.eof()) return false;
    }
    return false;
  }
  mqtt_socket sock_;
  uint16_t id_ = 0;
};

}  // namespace evpipe::testing
