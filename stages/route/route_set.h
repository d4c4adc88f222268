#pragma once
// The routes of a configuration, compiled for the hot path: topic filters
// split into levels, JSON paths into steps, defaults already in their binary
// COPY form. Built once at startup (throws config::config_error naming the
// route and the key); immutable afterwards and shared by every thread.

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "config/route_config.h"
#include "stages/route/probe.h"

namespace evpipe::stages::route {

// One step of a JSON path: an object key, or an array index (index >= 0).
struct path_step {
  std::string key;
  int32_t index = -1;
};

struct compiled_column {
  config::route_column cfg;
  std::vector<path_step> steps;  // json_path sources
  std::string default_field;     // has_default: the whole binary field (length + bytes)
};

struct compiled_route {
  config::route cfg;
  uint16_t index = 0;
  std::vector<std::string> filters;                // cfg.topics (MQTT topic filters)
  std::vector<compiled_column> columns;
  std::vector<uint16_t> identity_columns;          // positions of cfg.idempotency in columns, ascending
  std::vector<uint16_t> key_columns;               // upsert: positions of cfg.key in columns, ascending
  // An upsert route whose rows a redelivery cannot change: order_by is set,
  // and two messages the route calls the same (same identity) carry the same
  // key and order_by values, so the second is never newer than what the
  // first stored and its ON CONFLICT update does nothing. Its messages need
  // no row in evpipe_route_keys (docs/routes.md, "Identity across restarts").
  bool self_idempotent = false;
  route_counts* counts = nullptr;  // route_probe::instance().of(cfg.name)
};

// A routed tuple's header holds the route's index in 15 bits
// (stages::write_batch::foreign_identity_bit, stages/batch.h).
inline constexpr size_t route_index_limit = 0x8000;

class route_set {
 public:
  static constexpr size_t max_routes_per_message = 16;

  route_set() = default;
  explicit route_set(const std::vector<config::route>& routes);

  // The routes that take a message, in config order, written to `out`; their
  // count is returned. Routes are checked in order and the first match ends
  // the search, unless that route says `also = true`. A route with the
  // standard envelope needs has_envelope (a valid envelope) and, when it lists
  // kinds, one of them; an envelope "none" route matches by topic alone.
  size_t match(std::string_view topic, std::string_view kind, bool has_envelope,
               std::span<uint16_t, max_routes_per_message> out) const noexcept;

  // Whether the first route matching `topic` by its topics alone takes bare
  // messages (envelope "none"): such a message skips the envelope rules.
  [[nodiscard]] const compiled_route* bare_route_for(std::string_view topic) const noexcept;

  // The same two in two steps, for a caller that meets one topic many times
  // (pipeline::intake keeps the last topic's mask): topic_mask() tests every
  // route's topics once (bit i: route i takes the topic, or has no topics),
  // and the overloads below decide from the mask alone. Only while
  // maskable(): at most 64 routes.
  static constexpr size_t max_masked_routes = 64;
  [[nodiscard]] bool maskable() const noexcept { return routes_.size() <= max_masked_routes; }
  [[nodiscard]] uint64_t topic_mask(std::string_view topic) const noexcept;
  size_t match(uint64_t topic_mask, std::string_view kind, bool has_envelope,
               std::span<uint16_t, max_routes_per_message> out) const noexcept;
  [[nodiscard]] const compiled_route* bare_route_for(uint64_t topic_mask) const noexcept;

  [[nodiscard]] const compiled_route& at(size_t i) const noexcept { return routes_[i]; }
  [[nodiscard]] size_t size() const noexcept { return routes_.size(); }
  [[nodiscard]] bool empty() const noexcept { return routes_.empty(); }

 private:
  // Whether route r takes a message that passed its topics (has_envelope
  // and kinds): the rest of match()'s test.
  [[nodiscard]] static bool takes(const compiled_route& r, std::string_view kind, bool has_envelope) noexcept;

  std::vector<compiled_route> routes_;
  uint64_t with_topics_ = 0;  // bit i: route i lists topics (the first 64)
};

}  // namespace evpipe::stages::route
