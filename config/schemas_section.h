#pragma once
// [schemas]: payload schemas per kind (stages/schema, docs/schemas.md). Part
// of config::settings; parsed by detail::parse_schemas() (config/reader.h,
// schemas_section.cc). Reloaded live on SIGHUP, files included.

#include <string>

namespace evpipe::config {

struct schemas_section {
  bool enabled = false;                          // off: only the envelope is checked
  std::string dir = "schemas/kinds/";            // <kind>.json, <kind>/<version>.json; relative to the config file's folder
  std::string version_path = "payload.version";  // dotted path of an event's schema version, from the event's root
  std::string unknown_version = "accept";        // a version without a schema: "accept" (unchecked) or "dead_letter"
  bool operator==(const schemas_section&) const = default;
};

}  // namespace evpipe::config
