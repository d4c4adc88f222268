#pragma once
// The hot half of payload schemas: walks a value of the simdjson document
// the envelope validator already parsed, checking it against a compiled
// program (stages/schema/program.h). Nothing is parsed again and nothing is
// allocated while a value passes; a failure builds its message once.

#include <simdjson.h>

#include <string>
#include <string_view>
#include <vector>

#include "stages/schema/program.h"

namespace evpipe::stages::schema {

// Why a value failed: the first failure in document order.
struct violation {
  keyword what = keyword::type;
  std::string pointer;    // JSON pointer of the failing value, from the checked value ("" = the value itself)
  std::string detail;     // what was expected ("3 is below the minimum 5")
  std::string schema_at;  // the subschema that failed, in its file ("#/properties/amount")
};

// Holds the path being walked, reused between calls. Owned by one thread
// (intake keeps one per I/O thread); not thread-safe. Programs are shared.
class walker {
 public:
  // True when `value` is valid against `p`; else fills `why` when given.
  [[nodiscard]] bool check(const program& p, simdjson::dom::element value, violation* why = nullptr);

 private:
  struct step {
    std::string_view key;  // object member, or
    size_t index = 0;      // array element when key.data() is null
  };
  // Report: keep the path and build the message of a failure; the verdict
  // alone needs neither (walker.cc).
  template <bool Report>
  bool walk(uint32_t node_index, simdjson::dom::element v);
  template <bool Report>
  bool walk_child(uint32_t node_index, simdjson::dom::element v);
  template <bool Report>
  bool check_value(const node& n, simdjson::dom::element v);
  template <bool Report>
  bool walk_rare(const node& n, simdjson::dom::element v);
  template <bool Report>
  bool walk_string(const node& n, std::string_view s);
  template <bool Report>
  bool walk_number(const node& n, simdjson::dom::element v);
  template <bool Report>
  bool walk_array(const node& n, simdjson::dom::array a);
  template <bool Report>
  bool walk_object(const node& n, simdjson::dom::object o);
  // Returns false; when reporting, records the failure with detail().
  template <bool Report, typename Detail>
  bool fail(const node& n, keyword k, Detail&& detail);
  void record(const node& n, keyword k, std::string detail);

  std::vector<step> path_;
  const program* p_ = nullptr;
  violation* why_ = nullptr;
};

// The formats `format` asserts, exposed for tests.
// RFC 4122 text form: 8-4-4-4-12 hex digits, either case.
[[nodiscard]] bool is_uuid_text(std::string_view s) noexcept;
// RFC 3339 section 5.6 date-time: full-date "T" full-time, seconds and an
// offset required, real calendar days (leap years), second 60 allowed.
[[nodiscard]] bool is_rfc3339_date_time(std::string_view s) noexcept;

}  // namespace evpipe::stages::schema
