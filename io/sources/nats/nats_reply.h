#pragma once
// What a JetStream delivery's reply subject says about it, read directly.
// The client library's natsMsg_GetMetaData allocates a struct and copies
// every field (stream, consumer, domain) for each message, about 1,300
// instructions a message in a drain (docs/performance-scale.md); the puller
// needs one number of it.
//
// After "$JS.ACK." the subject holds (the ACK subject of nats-server):
//   v1: <stream>.<consumer>.<delivered>.<stream seq>.<consumer seq>.<time>.<pending>
//   v2: <domain>.<account hash>.<stream>.<consumer>.<delivered>.<stream seq>.
//       <consumer seq>.<time>.<pending>[.<more>...]
// that is 7 tokens, or 9 and more. Stream and consumer names hold no '.'.

#include <cstdint>
#include <optional>
#include <string_view>

namespace evpipe::io {

// How many times the server has delivered this message (1 the first time);
// empty when `reply` is no JetStream delivery's subject of either form.
[[nodiscard]] std::optional<uint64_t> nats_delivery_count(std::string_view reply) noexcept;

}  // namespace evpipe::io
