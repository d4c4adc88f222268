#pragma once
// The hot half of payload schemas: walks a value of the simdjson document
// the envelope validator already parsed, on its tape, checking it against a compiled
// program (stages/schema/program.h). Nothing is parsed again and nothing is
// allocated while a value passes; a failure builds its message once.

#include <simdjson.h>

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "stages/schema/formats.h"
#include "stages/schema/program.h"
#include "stages/schema/tape.h"

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
//
// A value is given as a document and the index of the value on its tape
// (stages/schema/tape.h): the walk reads the tape directly instead of going
// through dom::element, whose every string read and step to the next member
// is a call that checks the type again.
class walker {
 public:
  // True when the value at tape index `at` of `doc` is valid against `p`;
  // else fills `why` when given.
  [[nodiscard]] bool check(const program& p, const simdjson::dom::document& doc, size_t at, violation* why = nullptr);
  // The document's value itself (parser.doc after parser.parse()).
  [[nodiscard]] bool check(const program& p, const simdjson::dom::document& doc, violation* why = nullptr) {
    return check(p, doc, tape::root, why);
  }

  // schema_set::check's memo of the last kind it looked up with this walker:
  // events of one kind tend to come in runs, and comparing the name is
  // cheaper than hashing it. `set_id` names the set (schema_set ids are
  // never reused, so a set freed and another allocated at its address do
  // not match); `entry` is that set's entry for `kind`, or null.
  struct kind_memo {
    uint64_t set_id = 0;
    std::string kind;
    const void* entry = nullptr;
  };
  kind_memo last_kind;

 private:
  struct step {
    std::string_view key;  // object member, or
    size_t index = 0;      // array element when key.data() is null
  };
  // Report: keep the path and build the message of a failure; the verdict
  // alone needs neither (walker.cc). `at` is a tape index.
  template <bool Report>
  bool walk(uint32_t node_index, size_t at);
  // A member or an item against its subschema's leaf (program.h), on the
  // tape `t` (t_, kept by the caller where calls cannot change it): the
  // index after the value when it is valid, else `failed`.
  static constexpr size_t failed = SIZE_MAX;
  template <bool Report>
  size_t check_leaf(const leaf& l, tape::view t, size_t at);
  [[nodiscard]] bool several_string_checks(const node& n, std::string_view s) const;
  [[nodiscard]] static const member_leaf* find_member(const node& n, const uint8_t* at) noexcept;
  template <bool Report>
  bool check_value(const node& n, size_t at);
  template <bool Report>
  bool walk_rare(const node& n, size_t at);
  template <bool Report>
  bool walk_string(const node& n, std::string_view s);
  template <bool Report>
  bool walk_number(const node& n, size_t at);
  template <bool Report>
  bool walk_array(const node& n, size_t at);
  template <bool Report>
  bool walk_object(const node& n, size_t at);
  // Returns false; when reporting, records the failure with detail().
  template <bool Report, typename Detail>
  bool fail(const node& n, keyword k, Detail&& detail);
  void record(const node& n, keyword k, std::string detail);

  std::vector<step> path_;
  const program* p_ = nullptr;
  const node* nodes_ = nullptr;  // p_->nodes, one load less per value
  violation* why_ = nullptr;
  tape::view t_;         // the document walked
  tape::view literals_;  // p_'s enum and const values
};

}  // namespace evpipe::stages::schema
