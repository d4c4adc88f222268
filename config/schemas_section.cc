#include "config/schemas_section.h"

#include <re2/re2.h>

#include "config/reader.h"

namespace evpipe::config::detail {

schemas_section parse_schemas(const toml::table& t, const std::string& origin, const std::string& base_dir) {
  table_reader r(t, "[schemas]", origin);
  schemas_section s;
  r.boolean("enabled", s.enabled);
  r.str("dir", s.dir, false);
  r.str("version_path", s.version_path, false);
  r.str("unknown_version", s.unknown_version, false);
  r.reject_unknown();
  if (s.unknown_version != "accept" && s.unknown_version != "dead_letter") {
    r.fail("unknown_version", "must be \"accept\" or \"dead_letter\"");
  }
  static const RE2 path_re(R"([^.]+(\.[^.]+)*)", byte_patterns());
  if (!RE2::FullMatch(s.version_path, path_re)) r.fail("version_path", "must be keys joined by dots (\"payload.version\")");
  s.dir = resolve_path(s.dir, base_dir);
  return s;
}

}  // namespace evpipe::config::detail
