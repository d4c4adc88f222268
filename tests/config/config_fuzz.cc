// Fuzz target: the config loader. Any text must give either settings or a
// config_error (one clear message), never another exception or a crash; and
// settings that load must survive check-config's round trip unchanged.
#include <cstdint>
#include <string_view>

#include "config/config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view text(reinterpret_cast<const char*>(data), size);
  evpipe::config::settings s;
  try {
    s = evpipe::config::load_string(text, "fuzz.toml");
  } catch (const evpipe::config::config_error& e) {
    if (std::string_view(e.what()).empty()) __builtin_trap();
    return 0;
  }
  auto again = evpipe::config::load_string(evpipe::config::to_toml(s), "round-trip");
  if (again.batch.max_rows != s.batch.max_rows || again.batch.linger_ms != s.batch.linger_ms ||
      again.effective_shards() != s.effective_shards() || again.tcp_sources.size() != s.tcp_sources.size() ||
      again.metrics.prefix != s.metrics.prefix) {
    __builtin_trap();
  }
  return 0;
}
