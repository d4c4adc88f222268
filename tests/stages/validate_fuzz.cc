// Fuzz target: the envelope validator on arbitrary bytes. Beyond not
// crashing, a valid verdict must satisfy every envelope rule, a refusal must
// carry a message, and every message must be valid UTF-8 (it is stored in a
// TEXT column). The same input must get the same verdict twice. The bare
// check with numbers beyond the parser (stages/big_numbers.h) accepts all
// the plain check accepts, unmarked, and refuses only with a message.
#include <simdjson.h>

#include <cstdint>
#include <string_view>

#include "stages/validate.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static evpipe::stages::envelope_validator validator([] {
    evpipe::stages::envelope_limits l;
    l.max_event_bytes = 1 << 16;
    l.max_depth = 16;
    return l;
  }());
  std::string_view line(reinterpret_cast<const char*>(data), size);
  evpipe::stages::envelope env;
  auto first = validator.check(line, env);
  if (first.ok()) {
    if (!evpipe::stages::is_pg_uuid(env.trace_id) || !evpipe::stages::is_iso8601_datetime(env.ts) ||
        env.kind.empty() || env.idempotency_key.empty() || env.idempotency_key.size() > 255 ||
        // The topic column is VARCHAR(255): characters, not bytes.
        (env.has_topic && (env.topic.empty() || !evpipe::stages::fits_varchar(env.topic, 255)))) {
      __builtin_trap();
    }
  } else if (first.message.empty() || !simdjson::validate_utf8(first.message.data(), first.message.size())) {
    __builtin_trap();
  }
  auto second = validator.check(line, env);
  if (second.why != first.why || second.message != first.message) __builtin_trap();
  auto plain = validator.check_json(line, line.size());
  auto bare = validator.check_json(line, line.size(), true);
  if (plain.ok() && (!bare.ok() || validator.marked_numbers())) __builtin_trap();
  if (!bare.ok() && (validator.marked_numbers() || bare.message.empty())) __builtin_trap();
  // Markers stand only where values do: never as a key.
  if (bare.ok() && validator.marked_numbers()) {
    auto key_marked = [](auto& self, simdjson::dom::element e) -> bool {
      if (e.is_object()) {
        for (auto field : simdjson::dom::object(e)) {
          if (!field.key.empty() && field.key[0] == '\0') return true;
          if (self(self, field.value)) return true;
        }
      } else if (e.is_array()) {
        for (auto child : simdjson::dom::array(e)) {
          if (self(self, child)) return true;
        }
      }
      return false;
    };
    if (key_marked(key_marked, validator.document())) __builtin_trap();
  }
  return 0;
}
