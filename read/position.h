#pragma once
// A position in events_mirror: where a reader (replay, the stream, a client
// that reconnects) stands, as one opaque string. It is the pair (tx, id): the
// 64-bit id of the transaction that wrote the row (the row's `tx` column,
// DEFAULT pg_current_xact_id()) and the row's id. Readers only read rows whose
// transaction is below the visibility horizon (docs/read.md), so ordering by
// (tx, id) is a commit-safe order: once a reader has passed P, no row can
// appear at or before P.
//
// The text form is "1-" followed by tx and id as 16 lowercase hex digits each:
// fixed width, so two positions compare as strings the way they compare as
// pairs, and the leading "1-" leaves room for another encoding later.
// Pure functions; thread-safe.

#include <compare>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace evpipe::read {

struct position {
  uint64_t tx = 0;  // the writing transaction's xid8 (epoch and xid)
  int64_t id = 0;   // events_mirror.id, to order the rows of one transaction

  auto operator<=>(const position&) const = default;
  // Before every row: where a reader that wants everything starts.
  [[nodiscard]] static constexpr position start() noexcept { return {}; }
};

inline constexpr size_t position_text_size = 2 + 16 + 16;

// "1-<tx hex 16><id hex 16>".
[[nodiscard]] std::string encode(position p);
// The position of a string from encode(); nullopt for anything else (wrong
// length or prefix, a non-hex digit, uppercase, a negative id).
[[nodiscard]] std::optional<position> decode(std::string_view text) noexcept;

}  // namespace evpipe::read
