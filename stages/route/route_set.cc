#include "stages/route/route_set.h"

#include <simdjson.h>

#include <algorithm>
#include <bit>

#include "config/config.h"
#include "stages/route/pg_binary.h"
#include "stages/topic_filter.h"

namespace evpipe::stages::route {

namespace {

// See compiled_route::self_idempotent. The key and order_by columns must
// come from what a redelivery repeats (the bytes and the topic; not
// received_at), and be determined by the identity: its columns include them,
// or the identity is the digest of the topic and the bytes (which fixes every
// value a message's topic and bytes give).
bool is_self_idempotent(const config::route& r) {
  using config::column_source;
  if (!r.upsert || r.order_by.empty() || r.envelope_standard || r.mirror) return false;
  std::vector<std::string> decisive = r.key;
  decisive.push_back(r.order_by);
  const bool digest = r.idempotency_digest || r.idempotency.empty();
  for (const auto& name : decisive) {
    const config::route_column* c = r.column(name);
    if (c == nullptr || c->source == column_source::received_at) return false;
    if (!digest && std::find(r.idempotency.begin(), r.idempotency.end(), name) == r.idempotency.end()) return false;
  }
  return true;
}

[[noreturn]] void fail(const config::route& r, const std::string& key, const std::string& problem) {
  throw config::config_error("[[routes]] \"" + r.name + "\" " + key + ": " + problem);
}

}  // namespace

route_set::route_set(const std::vector<config::route>& routes) {
  routes_.reserve(routes.size());
  for (size_t i = 0; i < routes.size(); ++i) {
    // A routed tuple's header holds the route's index in 15 bits (the top
    // bit says the message's identity is another route's: pipeline/intake).
    if (i >= route_index_limit) fail(routes[i], "name", "more than " + std::to_string(route_index_limit) + " routes");
    compiled_route cr;
    cr.cfg = routes[i];
    cr.index = static_cast<uint16_t>(i);
    cr.filters = cr.cfg.topics;
    for (const auto& c : cr.cfg.columns) {
      compiled_column cc;
      cc.cfg = c;
      for (const auto& p : c.path) {
        path_step st;
        if (p.size() > 2 && p.front() == '[' && p.back() == ']') {
          st.index = std::stoi(p.substr(1, p.size() - 2));
        } else {
          st.key = p;
        }
        cc.steps.push_back(std::move(st));
      }
      if (c.has_default) {
        std::string problem;
        if (c.type == config::column_type::jsonb) {
          // A jsonb default is JSON text: check it with the parser that reads messages.
          simdjson::dom::parser parser;
          if (parser.parse(simdjson::padded_string(c.default_text)).error()) {
            fail(cr.cfg, "columns \"" + c.name + "\" default", "\"" + c.default_text + "\" is not JSON");
          }
          pg_binary::append_jsonb(cc.default_field, c.default_text);
        } else if (append_from_text(cc.default_field, c.type, c.default_text, &problem) != parse_status::ok) {
          fail(cr.cfg, "columns \"" + c.name + "\" default", problem);
        }
      }
      cr.columns.push_back(std::move(cc));
    }
    for (const auto& name : cr.cfg.idempotency) {
      for (size_t k = 0; k < cr.columns.size(); ++k) {
        if (cr.columns[k].cfg.name == name) cr.identity_columns.push_back(static_cast<uint16_t>(k));
      }
    }
    for (const auto& name : cr.cfg.key) {
      for (size_t k = 0; k < cr.columns.size(); ++k) {
        if (cr.columns[k].cfg.name == name) cr.key_columns.push_back(static_cast<uint16_t>(k));
      }
    }
    // Ascending, as append_fields walks a tuple.
    std::sort(cr.identity_columns.begin(), cr.identity_columns.end());
    cr.identity_columns.erase(std::unique(cr.identity_columns.begin(), cr.identity_columns.end()),
                              cr.identity_columns.end());
    std::sort(cr.key_columns.begin(), cr.key_columns.end());
    cr.self_idempotent = is_self_idempotent(cr.cfg);
    cr.counts = &route_probe::instance().of(cr.cfg.name);
    if (!cr.filters.empty() && i < max_masked_routes) with_topics_ |= uint64_t{1} << i;
    routes_.push_back(std::move(cr));
  }
}

bool route_set::takes(const compiled_route& r, std::string_view kind, bool has_envelope) noexcept {
  if (r.cfg.envelope_standard && !has_envelope) return false;
  if (r.cfg.kinds.empty()) return true;
  bool kind_ok = false;
  for (const auto& k : r.cfg.kinds) kind_ok |= k == kind;
  return kind_ok;
}

size_t route_set::match(std::string_view topic, std::string_view kind, bool has_envelope,
                        std::span<uint16_t, max_routes_per_message> out) const noexcept {
  size_t n = 0;
  for (const auto& r : routes_) {
    if (r.cfg.envelope_standard && !has_envelope) continue;
    bool topic_ok = r.filters.empty();
    for (const auto& f : r.filters) {
      if (topic_matches(f, topic)) {
        topic_ok = true;
        break;
      }
    }
    if (!topic_ok || !takes(r, kind, has_envelope)) continue;
    out[n++] = r.index;
    if (!r.cfg.also || n == out.size()) break;
  }
  return n;
}

const compiled_route* route_set::bare_route_for(std::string_view topic) const noexcept {
  for (const auto& r : routes_) {
    for (const auto& f : r.filters) {
      if (topic_matches(f, topic)) return r.cfg.envelope_standard ? nullptr : &r;
    }
  }
  return nullptr;
}

uint64_t route_set::topic_mask(std::string_view topic) const noexcept {
  uint64_t mask = 0;
  for (size_t i = 0; i < routes_.size() && i < max_masked_routes; ++i) {
    const auto& r = routes_[i];
    bool ok = r.filters.empty();
    for (const auto& f : r.filters) {
      if (topic_matches(f, topic)) {
        ok = true;
        break;
      }
    }
    if (ok) mask |= uint64_t{1} << i;
  }
  return mask;
}

size_t route_set::match(uint64_t topic_mask, std::string_view kind, bool has_envelope,
                        std::span<uint16_t, max_routes_per_message> out) const noexcept {
  size_t n = 0;
  for (uint64_t m = topic_mask; m != 0; m &= m - 1) {
    const auto& r = routes_[static_cast<size_t>(std::countr_zero(m))];
    if (!takes(r, kind, has_envelope)) continue;
    out[n++] = r.index;
    if (!r.cfg.also || n == out.size()) break;
  }
  return n;
}

const compiled_route* route_set::bare_route_for(uint64_t topic_mask) const noexcept {
  const uint64_t m = topic_mask & with_topics_;
  if (m == 0) return nullptr;
  const auto& r = routes_[static_cast<size_t>(std::countr_zero(m))];
  return r.cfg.envelope_standard ? nullptr : &r;
}

}  // namespace evpipe::stages::route
