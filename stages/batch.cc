#include "stages/batch.h"

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
}  // namespace copy_format

dead_letter route_dead_letter(const event_batch& from, const event_record& ev) {
  dead_letter dl;
  dl.topic.assign(from.view(ev.topic));
  dl.why = ev.why;
  dl.message.assign(from.view(ev.message));
  dl.bytes.assign(from.view(ev.raw));
  dl.truncated = ev.raw_truncated;
  // Only invalid_json and too_large events may not parse; every other reason
  // was found in a document that the validator walked to the end.
  dl.bytes_are_json = ev.why != reason::invalid_json && ev.why != reason::too_large;
  dl.digest.resize(16);
  for (int i = 0; i < 8; ++i) {
    dl.digest[i] = static_cast<char>(ev.digest_hi >> (56 - 8 * i));
    dl.digest[8 + i] = static_cast<char>(ev.digest_lo >> (56 - 8 * i));
  }
  return dl;
}

write_batch::write_batch() { clear(); }

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

void write_batch::add_row(std::string_view topic, std::string_view payload, std::string_view key,
                          std::string_view kind, uint64_t seq, int64_t received_ns) {
  note_open();
  if (sealed_) {
    copy_.resize(copy_.size() - copy_format::trailer.size());
    sealed_ = false;
  }
  copy_format::append_event_row(copy_, topic, payload);
  rows_.push_back(row{keep(key), keep(topic), keep(kind), static_cast<uint32_t>(pending_.size())});
  pending_.push_back(pending{static_cast<uint32_t>(origins_.size() - 1), seq, outcome_kind::mirrored,
                             reason::none, received_ns});
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

std::string_view write_batch::copy_data() {
  if (!sealed_) {
    copy_.append(copy_format::trailer);
    sealed_ = true;
  }
  return copy_;
}

void write_batch::clear() {
  copy_.assign(copy_format::header);
  sealed_ = false;
  meta_.clear();
  rows_.clear();
  dead_.clear();
  pending_.clear();
  origins_.clear();
}

}  // namespace evpipe::stages
