#pragma once
// The payload schemas of every kind, loaded from one directory
// (docs/schemas.md): <dir>/<kind>.json, or <dir>/<kind>/<version>.json when
// events carry a version. Picks the program for an event and checks its
// payload, giving the verdict as a stages::validation (schema_violation,
// unknown_schema_version).
//
// Immutable once loaded and shared by every I/O thread; a reload loads a new
// set and swaps it whole (stages/schema/active.h). Keyed by kind today; a
// tenant would add one level above it (a set per tenant), not change this.

#include <simdjson.h>

#include <absl/container/flat_hash_map.h>

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "stages/schema/program.h"
#include "stages/schema/walker.h"
#include "stages/validate.h"

namespace evpipe::stages::schema {

struct set_options {
  std::string dir;                             // the schema directory, resolved
  std::string version_path = "payload.version";  // dotted path of the version, from the event's root
  bool dead_letter_unknown_version = false;    // else accept the event unchecked
};

class schema_set {
 public:
  explicit schema_set(set_options opts);

  // Compiles every schema file under opts.dir; throws schema_error naming
  // the first file that fails (and where in it).
  [[nodiscard]] static std::shared_ptr<const schema_set> load(const set_options& opts);

  // Adds one compiled schema: version "" is <kind>.json.
  void add(const std::string& kind, const std::string& version, std::shared_ptr<const program> p);

  // The payload of a valid envelope (`event` is the whole document, as the
  // envelope validator parsed it) against the schema of its kind and
  // version. Kinds without a schema pass.
  [[nodiscard]] validation check(std::string_view kind, const simdjson::dom::document& event, walker& w) const;

  [[nodiscard]] size_t files() const noexcept { return files_; }
  [[nodiscard]] const set_options& options() const noexcept { return opts_; }

 private:
  struct kind_schemas {
    std::shared_ptr<const program> any_version;  // <kind>.json
    absl::flat_hash_map<std::string, std::shared_ptr<const program>> by_version;  // <kind>/<version>.json
  };
  // The program for `event`, or nullptr with `unknown` set when the version has none.
  const program* pick(const kind_schemas& k, simdjson::dom::element event, std::string& unknown) const;
  // check() for a kind with versioned files.
  validation check_versioned(const kind_schemas& k, std::string_view kind, const simdjson::dom::document& event,
                             walker& w) const;

  set_options opts_;
  uint64_t id_;  // unique per set and per add(): the key of walker::kind_memo
  std::vector<std::string> version_steps_;  // version_path split at '.'
  absl::flat_hash_map<std::string, kind_schemas> kinds_;
  size_t files_ = 0;
};

}  // namespace evpipe::stages::schema
