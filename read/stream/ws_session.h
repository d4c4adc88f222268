#pragma once
// GET /v1/stream upgraded to a WebSocket (Boost.Beast): the client sends
//   {"type":"subscribe","kinds":[…],"topics":[…],"since":"<position>"|"now"|"<ISO time>"}
//   {"type":"unsubscribe","kinds":[…],"topics":[…]}
//   {"type":"ping"}
// and receives {"type":"event",…}, {"type":"caught_up","position":…},
// {"type":"error","message":…} (the connection stays open) and {"type":"pong"}.
// WebSocket pings go out every heartbeat_s; a client that has not answered
// the previous one by then is closed.
//
// One session runs on its client's thread, with an io_context of its own
// (asynchronous reads and writes on one thread, as Beast requires); the hub
// thread hands it messages by posting to that io_context.

#include <boost/beast/http/empty_body.hpp>
#include <boost/beast/http/message.hpp>

#include <atomic>
#include <optional>
#include <string>

#include <functional>

#include "config/config.h"
#include "read/stream/stream_hub.h"

namespace evpipe::read {

// Serves one upgraded connection until it closes. To end it at shutdown, the
// caller sets `stopping` and then shuts `fd` down, which ends the read the
// session always has pending (the close is then counted as a shutdown).
// `fd` stays owned by the caller. `ending` is called once, as the connection
// ends and before a close frame goes out, so the caller can free the client's
// max_clients slot before the client can see the close and reconnect.
void serve_websocket(int fd, const boost::beast::http::request<boost::beast::http::empty_body>& req,
                     const config::stream_section& cfg, stream_hub& hub, const std::atomic<bool>& stopping,
                     std::function<void()> ending,
                     std::optional<std::string> tenant = {});  // every subscription of it: this tenant's rows only

}  // namespace evpipe::read
