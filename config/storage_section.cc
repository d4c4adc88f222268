#include "config/storage_section.h"

#include <charconv>

#include "config/reader.h"

namespace evpipe::config::detail {

storage_section parse_storage(const toml::table& t, const std::string& origin) {
  table_reader r(t, "[storage]", origin);
  storage_section s;
  r.str("partition", s.partition);
  r.str("retention", s.retention);
  r.uint("premake", s.premake, 1, 366);
  r.uint("check_interval_s", s.check_interval_s, 1, 86'400);
  r.uint("lock_timeout_ms", s.lock_timeout_ms, 10, 60'000);
  r.reject_unknown();
  if (s.partition != "none" && s.partition != "day" && s.partition != "week" && s.partition != "month") {
    r.fail("partition", "must be \"none\", \"day\", \"week\" or \"month\", got \"" + s.partition + "\"");
  }
  if (!s.retention.empty()) {
    // A count and a unit, so that "30" (seconds? days?) is never guessed.
    const std::string& v = s.retention;
    uint64_t n = 0;
    auto [end, ec] = std::from_chars(v.data(), v.data() + v.size(), n);
    const size_t digits = static_cast<size_t>(end - v.data());
    const std::string unit = v.substr(digits);
    uint64_t per = unit == "h" ? 3600 : unit == "d" ? 86'400 : unit == "w" ? 604'800 : 0;
    if (ec != std::errc() || digits == 0 || per == 0 || n == 0 || n > 100'000) {
      r.fail("retention", "must be a positive count then h, d or w (\"30d\", \"12h\", \"8w\"), got \"" + v + "\"");
    }
    s.retention_s = n * per;
    if (!s.partitioned()) {
      r.fail("retention", "drops whole partitions: set partition = \"day\", \"week\" or \"month\" as well");
    }
  }
  return s;
}

}  // namespace evpipe::config::detail
