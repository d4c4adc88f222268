#pragma once
// A fast path for the patterns payload schemas mostly use: a sequence of
// single characters and character classes with quantifiers, optionally
// anchored ("^[0-9]+\.[0-9]+\.[0-9]+$", "^[a-z0-9_-]{3,32}$"). Such a pattern
// is matched bit-parallel (one bit per position of the expanded pattern, a
// few instructions per byte), where RE2's Match costs a few hundred
// instructions of setup per call (bench/schema_callgrind.sh). Anything else
// (groups, alternation, '.', negated classes, non-ASCII, flags) is left to
// RE2: compile() returns nullopt and the walker keeps using RE2.
//
// Same verdict as RE2 (UNANCHORED search, default options) on every string
// it accepts: every atom matches ASCII bytes only, so a multi-byte UTF-8
// character matches no atom in either engine. simple_pattern_test checks
// it against RE2 on generated strings. Immutable after compile.

#include <array>
#include <cstdint>
#include <optional>
#include <string_view>

namespace evpipe::stages::schema {

class simple_pattern {
 public:
  [[nodiscard]] static std::optional<simple_pattern> compile(std::string_view pattern);

  // Whether `s` contains a match (or is one, when anchored at both ends).
  [[nodiscard]] bool search(std::string_view s) const noexcept {
    const uint64_t accept = uint64_t{1} << positions_;
    if (anchored_start_ && anchored_end_ && optional_run_ == 0) {
      // "^...$" with no optional position (the usual shape): the state is
      // only ever advanced; a few instructions per byte.
      uint64_t state = 1;
      for (unsigned char c : s) {
        const uint64_t moved = state & class_of_[c];
        state = (moved << 1) | (moved & repeat_);
      }
      return (state & accept) != 0;
    }
    uint64_t state = close(1);  // before position 0
    if (!anchored_end_ && (state & accept)) return true;
    for (unsigned char c : s) {
      const uint64_t moved = state & class_of_[c];
      state = close((moved << 1) | (moved & repeat_));
      if (!anchored_start_) state |= close(1);
      if (!anchored_end_ && (state & accept)) return true;
      if (state == 0) return false;
    }
    return (state & accept) != 0;
  }

 private:
  // Adds the states reached by skipping optional positions.
  [[nodiscard]] uint64_t close(uint64_t state) const noexcept {
    for (unsigned i = 0; i < optional_run_; ++i) state |= (state & optional_) << 1;
    return state;
  }

  std::array<uint64_t, 256> class_of_{};  // per byte: the positions it matches (bit i = position i)
  uint64_t repeat_ = 0;                   // positions that may match again (+, *)
  uint64_t optional_ = 0;                 // positions that may be skipped (?, *, {n,m} beyond n)
  unsigned optional_run_ = 0;             // the longest run of optional positions
  unsigned positions_ = 0;                // state `positions_` is a complete match
  bool anchored_start_ = false, anchored_end_ = false;
};

}  // namespace evpipe::stages::schema
