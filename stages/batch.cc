#include "stages/batch.h"

#include "stages/dedup.h"
#include "stages/huge_pages.h"

#include <xxhash.h>

#include <algorithm>
#include <cstring>

namespace evpipe::stages {

namespace copy_format {
namespace {
void put_u16(std::string& out, uint16_t v) {
  char b[2] = {static_cast<char>(v >> 8), static_cast<char>(v)};
  out.append(b, 2);
}
void put_u32(std::string& out, uint32_t v) {
  char b[4] = {static_cast<char>(v >> 24), static_cast<char>(v >> 16), static_cast<char>(v >> 8),
               static_cast<char>(v)};
  out.append(b, 4);
}
}  // namespace

void append_event_row(std::string& out, std::string_view topic, std::string_view payload) {
  // Tuple: field count, then (length, bytes) per field. varchar's binary form
  // is its text; jsonb's is a version byte (1) followed by the JSON text.
  out.reserve(out.size() + 2 + 4 + topic.size() + 4 + 1 + payload.size());
  put_u16(out, 2);
  put_u32(out, static_cast<uint32_t>(topic.size()));
  out.append(topic);
  put_u32(out, static_cast<uint32_t>(payload.size() + 1));
  out.push_back('\1');
  out.append(payload);
}

void append_event_row_with_headers(std::string& out, std::string_view topic, std::string_view payload,
                                   std::string_view headers) {
  append_event_row(out, topic, payload);
  out[out.size() - payload.size() - 1 - 4 - topic.size() - 4 - 1] = 3;  // the field count's low byte
  if (headers.empty()) {
    put_u32(out, 0xFFFFFFFFu);  // -1: NULL
  } else {
    put_u32(out, static_cast<uint32_t>(headers.size() + 1));
    out.push_back('\1');
    out.append(headers);
  }
}

void append_event_row_with_tenant(std::string& out, std::string_view topic, std::string_view payload,
                                  std::string_view headers, std::string_view tenant) {
  const size_t at = out.size();
  append_event_row_with_headers(out, topic, payload, headers);
  out[at + 1] = 4;
  put_u32(out, static_cast<uint32_t>(tenant.size()));
  out.append(tenant);
}
}  // namespace copy_format

namespace {
// XXH3-128 as 16 big-endian bytes (the dlq_events.event_digest column).
std::string digest_bytes(uint64_t hi, uint64_t lo) {
  std::string d(16, '\0');
  for (int i = 0; i < 8; ++i) {
    d[i] = static_cast<char>(hi >> (56 - 8 * i));
    d[8 + i] = static_cast<char>(lo >> (56 - 8 * i));
  }
  return d;
}
}  // namespace

dead_letter route_dead_letter(const event_batch& from, const event_record& ev) {
  dead_letter dl;
  dl.topic.assign(from.view(ev.topic));
  dl.why = ev.why;
  dl.message.assign(from.view(ev.message));
  dl.bytes.assign(from.view(ev.raw));
  dl.truncated = ev.raw_truncated;
  // Only invalid_json and too_large events may not parse, and max_deliveries
  // ones were never parsed; every other reason was found in a document that
  // the validator walked to the end.
  dl.bytes_are_json = ev.why != reason::invalid_json && ev.why != reason::too_large && ev.why != reason::max_deliveries;
  dl.digest = digest_bytes(ev.digest_hi, ev.digest_lo);
  dl.headers.assign(from.view(ev.headers));
  dl.tenant.assign(from.view(ev.tenant));
  return dl;
}

write_batch::write_batch() { clear(); }

void write_batch::reserve(size_t rows, size_t copy_bytes) {
  copy_.reserve(copy_bytes);
  rows_.reserve(rows);
  pending_.reserve(rows);
  routed_.reserve(rows);
  // A row's key, topic and kind, and a routed row's whole message (for its
  // dead letter; kept even when its events_mirror row holds it in copy_ too).
  meta_.reserve(rows * 64 + copy_bytes);
  advise_huge_pages(copy_.data(), copy_.capacity());
  advise_huge_pages(meta_.data(), meta_.capacity());
  reserved_rows_ = rows;
  reserved_bytes_ = copy_bytes;
  streams_reserved_ = 0;
  for (const auto& c : route_copy_) streams_reserved_ += c.capacity();
}

void write_batch::note_open() {
  if (pending_.empty()) opened_ = std::chrono::steady_clock::now();
}

span_ref write_batch::keep(std::string_view s) {
  span_ref r{static_cast<uint32_t>(meta_.size()), static_cast<uint32_t>(s.size())};
  meta_.append(s);
  return r;
}

void write_batch::begin_origin(const std::shared_ptr<event_origin>& origin) {
  if (origins_.empty() || origins_.back() != origin) origins_.push_back(origin);
}

void write_batch::widen_to(uint16_t fields) {
  // Each tuple: u16 field count, then u32 length + bytes per field; the new
  // fields go at its end. Every later tuple moves by the bytes added before it.
  if (rows_.empty()) {
    // Only the header (with tenancy on every batch widens at its first row):
    // no tuple to move, and the buffer reserved for the batch stays.
    copy_.assign(copy_format::header);
    sealed_ = false;
    fields_ = fields;
    return;
  }
  const uint32_t added = (fields_ < 3 ? 4 : 0) + 4;  // headers NULL; tenant_id '' (length 0)
  // The old buffer becomes the next widening's (widen_scratch_): neither is
  // allocated again, and the new one has at least the capacity copy_ had
  // (clear() keeps it for the next batch).
  std::string& wide = widen_scratch_;
  const size_t had = wide.capacity();
  wide.reserve(std::max(copy_.capacity(), copy_.size() + added * rows_.size() + 64));
  if (wide.capacity() != had) advise_huge_pages(wide.data(), wide.capacity());  // new memory only
  wide.assign(copy_format::header);
  for (auto& r : rows_) {
    auto off = static_cast<uint32_t>(wide.size());
    wide.append(copy_, r.copy_off, r.copy_len);
    wide[off + 1] = static_cast<char>(fields);
    uint32_t grew = 0;
    if (fields_ < 3) {
      wide.append("\377\377\377\377", 4);  // headers: NULL
      grew += 4;
    }
    if (fields == 4) {
      wide.append("\0\0\0\0", 4);  // tenant_id: '' (tenancy off for this row)
      grew += 4;
    }
    r.payload_off = r.payload_off - r.copy_off + off;
    r.copy_off = off;
    r.copy_len += grew;
  }
  copy_.swap(wide);
  sealed_ = false;
  fields_ = fields;
}

void write_batch::add_row(std::string_view topic, std::string_view payload, std::string_view key,
                          std::string_view kind, uint64_t seq, int64_t received_ns, std::string_view headers,
                          bool identity_key, std::string_view tenant) {
  note_open();
  if (sealed_) {
    copy_.resize(copy_.size() - copy_format::trailer.size());
    sealed_ = false;
  }
  const uint16_t need = !tenant.empty() ? 4 : !headers.empty() ? 3 : 2;
  if (need > fields_) widen_to(need);
  auto off = static_cast<uint32_t>(copy_.size());
  if (identity_key) ++identity_rows_;
  uint32_t payload_off = 0;
  if (fields_ == 4) {
    // topic, payload, headers, tenant: the payload's place from the tuple's start.
    copy_format::append_event_row_with_tenant(copy_, topic, payload, headers, tenant);
    payload_off = off + 2 + 4 + static_cast<uint32_t>(topic.size()) + 4 + 1;
  } else if (fields_ == 3) {
    copy_format::append_event_row_with_headers(copy_, topic, payload, headers);
    payload_off = static_cast<uint32_t>(copy_.size() - payload.size() - 4 - (headers.empty() ? 0 : headers.size() + 1));
  } else {
    copy_format::append_event_row(copy_, topic, payload);
    payload_off = static_cast<uint32_t>(copy_.size() - payload.size());
  }
  auto len = static_cast<uint32_t>(copy_.size() - off);
  rows_.push_back(row{keep(key), keep(topic), keep(kind), static_cast<uint32_t>(pending_.size()), off, len,
                      payload_off, static_cast<uint32_t>(payload.size()), keep(headers), keep(tenant), identity_key});
  pending_.push_back(pending{static_cast<uint32_t>(origins_.size() - 1), seq, outcome_kind::mirrored,
                             reason::none, received_ns});
}

void write_batch::add_routed(std::string_view routed, bool mirror, std::string_view topic, std::string_view payload,
                             std::string_view key, std::string_view kind, uint64_t seq, int64_t received_ns,
                             std::string_view headers, bool identity_key, std::string_view tenant) {
  if (mirror) {
    add_row(topic, payload, key, kind, seq, received_ns, headers, identity_key, tenant);  // also takes the event's outcome
  } else {
    note_open();
    pending_.push_back(pending{static_cast<uint32_t>(origins_.size() - 1), seq, outcome_kind::mirrored,
                               reason::none, received_ns});
  }
  const auto outcome = static_cast<uint32_t>(pending_.size() - 1);
  span_ref t = keep(topic), p = keep(payload), k = keep(key), kd = keep(kind), h = keep(headers), tn = keep(tenant);
  bool first = !mirror;
  size_t pos = 0;
  while (pos + 6 <= routed.size()) {
    auto* u = reinterpret_cast<const unsigned char*>(routed.data() + pos);
    const uint16_t header = static_cast<uint16_t>((u[0] << 8) | u[1]);
    const uint16_t route = header & static_cast<uint16_t>(~foreign_identity_bit);
    uint32_t len = (uint32_t(u[2]) << 24) | (uint32_t(u[3]) << 16) | (uint32_t(u[4]) << 8) | u[5];
    if (route_copy_.size() <= route) route_copy_.resize(route + 1);
    std::string& stream = route_copy_[route];
    // A route's tuples are a few typed columns: room for the batch's rows at
    // up to 256 bytes each (address space only), as long as the streams'
    // rooms together stay within the batch's byte limit, which counts them all.
    if (stream.capacity() < 64 && streams_reserved_ < reserved_bytes_) {
      const size_t room = std::min(reserved_rows_ * 256, reserved_bytes_ - streams_reserved_);
      stream.reserve(room);
      advise_huge_pages(stream.data(), stream.capacity());
      streams_reserved_ += room;
    }
    routed_.push_back(routed_row{route, outcome, static_cast<uint32_t>(stream.size()), len, t, p, k, kd, h, tn, first,
                                 (header & foreign_identity_bit) != 0});
    first = false;
    stream.append(routed.substr(pos + 6, len));
    routed_bytes_ += len;
    pos += 6 + len;
  }
}

size_t write_batch::route_copy_slice(size_t route, size_t first_outcome, size_t last_outcome,
                                     std::string& out) const {
  out.clear();
  if (route >= route_copy_.size()) return 0;
  bool any = false;
  size_t n = 0;
  for (const auto& r : routed_) {
    if (r.route != route || r.outcome_index < first_outcome || r.outcome_index >= last_outcome) continue;
    if (pending_[r.outcome_index].kind != outcome_kind::mirrored) continue;  // refused or a duplicate
    if (!any) out.assign(copy_format::header);
    any = true;
    ++n;
    out.append(route_copy_[route], r.copy_off, r.copy_len);
  }
  if (any) out.append(copy_format::trailer);
  return n;
}

write_batch::copy_pieces write_batch::route_copy(size_t route, size_t first_outcome, size_t last_outcome,
                                                 std::string& scratch) const {
  copy_pieces out;
  if (route >= route_copy_.size() || route_copy_[route].empty()) return out;
  size_t all = 0, wanted = 0;
  for (const auto& r : routed_) {
    if (r.route != route) continue;
    ++all;
    if (r.outcome_index >= first_outcome && r.outcome_index < last_outcome &&
        pending_[r.outcome_index].kind == outcome_kind::mirrored) {
      ++wanted;
    }
  }
  if (wanted == all) {
    out.part = {copy_format::header, route_copy_[route], copy_format::trailer};
    out.count = 3;
    out.tuples = all;
    return out;
  }
  out.tuples = route_copy_slice(route, first_outcome, last_outcome, scratch);
  if (out.tuples == 0) return out;
  out.part[0] = scratch;
  out.count = 1;
  return out;
}

void write_batch::reject_routed(uint32_t outcome_index, std::string sqlstate, std::string message) {
  auto& p = pending_[outcome_index];
  if (p.kind == outcome_kind::dead_lettered) return;
  for (const auto& r : routed_) {
    if (r.outcome_index != outcome_index) continue;
    dead_letter dl;
    dl.topic.assign(text(r.topic));
    dl.why = reason::db_rejected;
    dl.message = "PostgreSQL refused the routed row: SQLSTATE " + sqlstate + ": " + message;
    dl.sqlstate = std::move(sqlstate);
    dl.bytes.assign(text(r.payload));
    dl.bytes_are_json = true;  // routed events passed the JSON rules at intake
    dl.headers.assign(text(r.headers));
    dl.tenant.assign(text(r.tenant));
    auto h = XXH3_128bits_withSeed(dl.bytes.data(), dl.bytes.size(), tenant_hash_seed(dl.tenant));
    dl.digest = digest_bytes(h.high64, h.low64);
    dl.outcome_index = outcome_index;
    p.kind = outcome_kind::dead_lettered;
    p.why = reason::db_rejected;
    dead_.push_back(std::move(dl));
    return;
  }
}

void write_batch::add_dead_letter(dead_letter dl, uint64_t seq, int64_t received_ns) {
  note_open();
  dl.outcome_index = static_cast<uint32_t>(pending_.size());
  pending_.push_back(pending{static_cast<uint32_t>(origins_.size() - 1), seq,
                             outcome_kind::dead_lettered, dl.why, received_ns});
  dead_.push_back(std::move(dl));
}

void write_batch::add_duplicate(uint64_t seq, int64_t received_ns) {
  note_open();
  pending_.push_back(pending{static_cast<uint32_t>(origins_.size() - 1), seq, outcome_kind::duplicate,
                             reason::none, received_ns});
}

void write_batch::add_skipped(uint64_t seq, int64_t received_ns) {
  note_open();
  pending_.push_back(pending{static_cast<uint32_t>(origins_.size() - 1), seq, outcome_kind::skipped,
                             reason::none, received_ns});
}

void write_batch::reject_row(size_t i, std::string sqlstate, std::string message, bool payload_is_storable_json) {
  const row& r = rows_[i];
  if (pending_[r.outcome_index].kind == outcome_kind::dead_lettered) return;  // already (a retried write)
  dead_letter dl;
  dl.topic.assign(text(r.topic));
  dl.why = reason::db_rejected;
  dl.message = "PostgreSQL refused the row: SQLSTATE " + sqlstate + ": " + message;
  dl.sqlstate = std::move(sqlstate);
  dl.bytes.assign(row_payload(i));
  dl.bytes_are_json = payload_is_storable_json;
  dl.headers.assign(text(r.headers));
  dl.tenant.assign(text(r.tenant));
  auto h = XXH3_128bits_withSeed(dl.bytes.data(), dl.bytes.size(), tenant_hash_seed(dl.tenant));
  dl.digest = digest_bytes(h.high64, h.low64);
  dl.outcome_index = r.outcome_index;
  auto& p = pending_[r.outcome_index];
  p.kind = outcome_kind::dead_lettered;
  p.why = reason::db_rejected;
  dead_.push_back(std::move(dl));
}

void write_batch::dead_letter_all_rows(reason why, const std::string& message) {
  for (size_t i = 0; i < rows_.size(); ++i) {
    if (pending_[rows_[i].outcome_index].kind == outcome_kind::duplicate) continue;  // already stored
    size_t before = dead_.size();
    reject_row(i, "", message, true);  // rows passed validation: their JSON is storable
    if (dead_.size() > before) {
      dead_.back().why = why;
      dead_.back().message = message;
      pending_[rows_[i].outcome_index].why = why;
    }
  }
  rows_.clear();
  identity_rows_ = 0;
  copy_.assign(copy_format::header);
  sealed_ = false;
  fields_ = 2;
  // Events that only routed tables would have held.
  for (const auto& r : routed_) {
    if (pending_[r.outcome_index].kind != outcome_kind::mirrored) continue;
    reject_routed(r.outcome_index, "", message);
    dead_.back().why = why;
    dead_.back().message = message;
    pending_[r.outcome_index].why = why;
  }
  routed_.clear();
  for (auto& c : route_copy_) c.clear();
  routed_bytes_ = 0;
}

void write_batch::copy_slice(size_t first, size_t last, std::string& out) const {
  out.assign(copy_format::header);
  if (first < last) {
    size_t from = rows_[first].copy_off;
    size_t to = rows_[last - 1].copy_off + rows_[last - 1].copy_len;
    out.append(copy_, from, to - from);
  }
  out.append(copy_format::trailer);
}

void write_batch::copy_stored_slice(size_t first, size_t last, std::string& out) const {
  out.assign(copy_format::header);
  for (size_t i = first; i < last; ++i) {
    if (pending_[rows_[i].outcome_index].kind != outcome_kind::mirrored) continue;
    out.append(copy_, rows_[i].copy_off, rows_[i].copy_len);
  }
  out.append(copy_format::trailer);
}

std::string_view write_batch::copy_data() {
  if (!sealed_) {
    copy_.append(copy_format::trailer);
    sealed_ = true;
  }
  return copy_;
}

void write_batch::clear() {
  timeline_.clear();
  copy_.assign(copy_format::header);
  sealed_ = false;
  fields_ = 2;
  meta_.clear();
  rows_.clear();
  dead_.clear();
  pending_.clear();
  origins_.clear();
  routed_.clear();
  for (auto& c : route_copy_) c.clear();
  routed_bytes_ = 0;
  identity_rows_ = 0;
  routes_.reset();
}

}  // namespace evpipe::stages
