#include "stages/batch.h"

#include <gtest/gtest.h>

namespace evpipe::stages {
namespace {

class recording_origin : public event_origin {
 public:
  void on_outcomes(std::span<const outcome> o) override { got.insert(got.end(), o.begin(), o.end()); }
  std::vector<outcome> got;
};

TEST(CopyFormat, EncodesOneTupleByteForByte) {
  std::string out;
  copy_format::append_event_row(out, "t/a", "{\"x\":1}");
  const std::string expected = std::string("\x00\x02", 2) +          // two fields
                               std::string("\x00\x00\x00\x03", 4) + "t/a" +  // varchar: its text
                               std::string("\x00\x00\x00\x08", 4) + "\x01" + "{\"x\":1}";  // jsonb: version 1 + text
  EXPECT_EQ(out, expected);
}

TEST(CopyFormat, HeaderAndTrailer) {
  EXPECT_EQ(copy_format::header.size(), 19u);
  EXPECT_EQ(copy_format::header.substr(0, 11), std::string_view("PGCOPY\n\xff\r\n\0", 11));
  EXPECT_EQ(copy_format::trailer, std::string_view("\xff\xff", 2));
}

TEST(CopyFormat, BinarySafeForAnyBytesAndLengths) {
  std::string payload(70000, 'a');
  payload[10] = '\t';
  payload[11] = '\n';
  payload[12] = '\\';
  std::string out;
  copy_format::append_event_row(out, "", payload);
  ASSERT_EQ(out.size(), 2 + 4 + 0 + 4 + 1 + payload.size());
  // 70001 = 0x00011171, big-endian.
  EXPECT_EQ(out.substr(6, 4), std::string("\x00\x01\x11\x71", 4));
  EXPECT_EQ(out.substr(11), payload);
}

TEST(WriteBatch, CopyDataIsHeaderRowsTrailerAndReopensForMoreRows) {
  write_batch b;
  auto origin = std::make_shared<recording_origin>();
  b.begin_origin(origin);
  b.add_row("t", "{}", "k1", "kind", 1, 0);
  std::string one(b.copy_data());
  std::string row;
  copy_format::append_event_row(row, "t", "{}");
  EXPECT_EQ(one, std::string(copy_format::header) + row + std::string(copy_format::trailer));
  b.add_row("t", "{}", "k2", "kind", 2, 0);
  std::string two(b.copy_data());
  EXPECT_EQ(two, std::string(copy_format::header) + row + row + std::string(copy_format::trailer));
  EXPECT_EQ(b.row_count(), 2u);
  EXPECT_EQ(b.text(b.rows()[1].key), "k2");
}

TEST(CopyFormat, HeadersAreAThirdJsonbFieldOrNull) {
  std::string with, without;
  copy_format::append_event_row_with_headers(with, "t", "{}", R"({"content_type":"a"})");
  copy_format::append_event_row_with_headers(without, "t", "{}", "");
  const std::string base = std::string("\x00\x00\x00\x01", 4) + "t" + std::string("\x00\x00\x00\x03", 4) + "\x01{}";
  EXPECT_EQ(with, std::string("\x00\x03", 2) + base + std::string("\x00\x00\x00\x15", 4) + "\x01" +
                      R"({"content_type":"a"})");
  EXPECT_EQ(without, std::string("\x00\x03", 2) + base + std::string("\xff\xff\xff\xff", 4));
}

TEST(WriteBatch, RowsWithoutHeadersStayTwoFieldTuples) {
  write_batch b;
  b.begin_origin(std::make_shared<recording_origin>());
  b.add_row("t", "{}", "k1", "kind", 1, 0);
  b.add_row("t", "{}", "k2", "kind", 2, 0, "");
  EXPECT_FALSE(b.has_headers());
  std::string row;
  copy_format::append_event_row(row, "t", "{}");
  EXPECT_EQ(std::string(b.copy_data()), std::string(copy_format::header) + row + row + std::string(copy_format::trailer));
}

TEST(WriteBatch, TheFirstRowWithHeadersWidensTheBatchsEarlierTuples) {
  write_batch b;
  b.begin_origin(std::make_shared<recording_origin>());
  b.add_row("t", R"({"a":1})", "k1", "kind", 1, 0);
  (void)b.copy_data();  // sealed, then reopened by the next row
  b.add_row("u", R"({"b":2})", "k2", "kind", 2, 0);
  b.add_row("v", R"({"c":3})", "k3", "kind", 3, 0, R"({"content_type":"x"})");
  b.add_row("w", R"({"d":4})", "k4", "kind", 4, 0);
  ASSERT_TRUE(b.has_headers());
  std::string expected(copy_format::header), r1, r2, r3, r4;
  copy_format::append_event_row_with_headers(r1, "t", R"({"a":1})", "");
  copy_format::append_event_row_with_headers(r2, "u", R"({"b":2})", "");
  copy_format::append_event_row_with_headers(r3, "v", R"({"c":3})", R"({"content_type":"x"})");
  copy_format::append_event_row_with_headers(r4, "w", R"({"d":4})", "");
  EXPECT_EQ(std::string(b.copy_data()), expected + r1 + r2 + r3 + r4 + std::string(copy_format::trailer));
  // Offsets still find each row's tuple and payload (slices, dead letters).
  EXPECT_EQ(b.row_payload(0), R"({"a":1})");
  EXPECT_EQ(b.row_payload(2), R"({"c":3})");
  EXPECT_EQ(b.row_payload(3), R"({"d":4})");
  std::string slice;
  b.copy_slice(1, 3, slice);
  EXPECT_EQ(slice, std::string(copy_format::header) + r2 + r3 + std::string(copy_format::trailer));
  // A refused row's dead letter keeps its headers.
  b.reject_row(2, "23514", "check", true);
  ASSERT_EQ(b.dead_letters().size(), 1u);
  EXPECT_EQ(b.dead_letters()[0].headers, R"({"content_type":"x"})");
  b.clear();
  EXPECT_FALSE(b.has_headers());
}

// Tenants (docs/tenants.md): the first row with a tenant widens the batch to
// (topic, payload, headers, tenant_id); earlier rows get NULL headers and ''.
TEST(WriteBatch, TheFirstRowWithATenantWidensTheBatchsEarlierTuples) {
  write_batch b;
  b.begin_origin(std::make_shared<recording_origin>());
  b.add_row("t", R"({"a":1})", "k1", "kind", 1, 0);
  b.add_row("u", R"({"b":2})", "k2", "kind", 2, 0, R"({"content_type":"x"})");
  b.add_row("v", R"({"c":3})", "k3", "kind", 3, 0, "", false, "alpha");
  b.add_row("w", R"({"d":4})", "k4", "kind", 4, 0);
  ASSERT_TRUE(b.has_tenant());
  ASSERT_TRUE(b.has_headers());
  std::string r1, r2, r3, r4;
  copy_format::append_event_row_with_tenant(r1, "t", R"({"a":1})", "", "");
  copy_format::append_event_row_with_tenant(r2, "u", R"({"b":2})", R"({"content_type":"x"})", "");
  copy_format::append_event_row_with_tenant(r3, "v", R"({"c":3})", "", "alpha");
  copy_format::append_event_row_with_tenant(r4, "w", R"({"d":4})", "", "");
  EXPECT_EQ(std::string(b.copy_data()),
            std::string(copy_format::header) + r1 + r2 + r3 + r4 + std::string(copy_format::trailer));
  // Four fields, the last one tenant_id's text.
  EXPECT_EQ(r3.substr(0, 2), std::string("\0\4", 2));
  EXPECT_EQ(r3.substr(r3.size() - 4 - 5), std::string("\0\0\0\5alpha", 9));
  EXPECT_EQ(b.row_payload(0), R"({"a":1})");
  EXPECT_EQ(b.row_payload(2), R"({"c":3})");
  EXPECT_EQ(b.row_payload(3), R"({"d":4})");
  EXPECT_EQ(b.text(b.rows()[2].tenant), "alpha");
  // A refused row's dead letter keeps its tenant, and its digest is the tenant's.
  b.reject_row(2, "23514", "check", true);
  b.add_row("v", R"({"c":3})", "k3", "kind", 5, 0);
  b.reject_row(4, "23514", "check", true);
  ASSERT_EQ(b.dead_letters().size(), 2u);
  EXPECT_EQ(b.dead_letters()[0].tenant, "alpha");
  EXPECT_EQ(b.dead_letters()[1].tenant, "");
  EXPECT_NE(b.dead_letters()[0].digest, b.dead_letters()[1].digest);
  b.clear();
  EXPECT_FALSE(b.has_tenant());
  EXPECT_FALSE(b.has_headers());
}

TEST(WriteBatch, TracksOutcomesPerOriginInOrder) {
  write_batch b;
  auto a = std::make_shared<recording_origin>();
  auto c = std::make_shared<recording_origin>();
  b.begin_origin(a);
  b.add_row("t", "{}", "k1", "x", 1, 0);
  b.add_duplicate(2, 0);
  b.begin_origin(c);
  b.add_skipped(1, 0);
  b.begin_origin(c);  // same origin again: no new entry
  dead_letter dl;
  dl.why = reason::invalid_ts;
  b.add_dead_letter(dl, 2, 0);
  ASSERT_EQ(b.origins().size(), 2u);
  auto& o = b.outcomes();
  ASSERT_EQ(o.size(), 4u);
  EXPECT_EQ(o[0].origin, 0u);
  EXPECT_EQ(o[0].kind, outcome_kind::mirrored);
  EXPECT_EQ(o[1].kind, outcome_kind::duplicate);
  EXPECT_EQ(o[2].origin, 1u);
  EXPECT_EQ(o[2].kind, outcome_kind::skipped);
  EXPECT_EQ(o[3].kind, outcome_kind::dead_lettered);
  EXPECT_EQ(o[3].why, reason::invalid_ts);
  b.mark_row_duplicate(0);
  EXPECT_EQ(o[0].kind, outcome_kind::duplicate);
  b.clear();
  EXPECT_TRUE(b.empty());
  EXPECT_EQ(b.copy_data(), std::string(copy_format::header) + std::string(copy_format::trailer));
}

TEST(WriteBatch, CopySliceHoldsExactlyTheRowsOfTheRange) {
  write_batch b;
  auto origin = std::make_shared<recording_origin>();
  b.begin_origin(origin);
  for (int i = 0; i < 5; ++i) b.add_row("t" + std::to_string(i), "{\"n\":" + std::to_string(i) + "}", "k" + std::to_string(i), "x", i + 1, 0);
  std::string slice, expected(copy_format::header);
  b.copy_slice(1, 3, slice);
  copy_format::append_event_row(expected, "t1", "{\"n\":1}");
  copy_format::append_event_row(expected, "t2", "{\"n\":2}");
  expected += copy_format::trailer;
  EXPECT_EQ(slice, expected);
  b.copy_slice(0, 5, slice);
  EXPECT_EQ(slice, std::string(b.copy_data()));
  EXPECT_EQ(b.row_payload(4), "{\"n\":4}");
}

TEST(WriteBatch, RejectedRowBecomesADeadLetterOnce) {
  write_batch b;
  auto origin = std::make_shared<recording_origin>();
  b.begin_origin(origin);
  b.add_row("t", "{\"a\":1}", "k1", "x", 1, 0);
  b.add_row("t", "{\"a\":2}", "k2", "x", 2, 0);
  b.reject_row(1, "23514", "violates check constraint", true);
  b.reject_row(1, "23514", "violates check constraint", true);  // a retried write: no second entry
  ASSERT_EQ(b.dead_letters().size(), 1u);
  const auto& dl = b.dead_letters()[0];
  EXPECT_EQ(dl.why, reason::db_rejected);
  EXPECT_EQ(dl.sqlstate, "23514");
  EXPECT_EQ(dl.bytes, "{\"a\":2}");
  EXPECT_TRUE(dl.bytes_are_json);
  EXPECT_NE(dl.message.find("23514"), std::string::npos);
  EXPECT_EQ(dl.digest.size(), 16u);
  EXPECT_EQ(b.outcomes()[1].kind, outcome_kind::dead_lettered);
  EXPECT_EQ(b.outcomes()[1].why, reason::db_rejected);
  EXPECT_EQ(b.outcomes()[0].kind, outcome_kind::mirrored);
}

TEST(WriteBatch, GivingUpTurnsEveryUnstoredRowIntoADeadLetter) {
  write_batch b;
  auto origin = std::make_shared<recording_origin>();
  b.begin_origin(origin);
  b.add_row("t", "{\"a\":1}", "k1", "x", 1, 0);
  b.add_row("t", "{\"a\":2}", "k2", "x", 2, 0);
  b.add_row("t", "{\"a\":3}", "k3", "x", 3, 0);
  b.mark_row_duplicate(0);  // already stored: stays a duplicate
  b.dead_letter_all_rows(reason::retries_exhausted, "not committed after 3 attempts: 55P03 lock timeout");
  EXPECT_EQ(b.row_count(), 0u);
  EXPECT_EQ(b.copy_data(), std::string(copy_format::header) + std::string(copy_format::trailer));
  ASSERT_EQ(b.dead_letters().size(), 2u);
  for (const auto& dl : b.dead_letters()) {
    EXPECT_EQ(dl.why, reason::retries_exhausted);
    EXPECT_TRUE(dl.bytes_are_json);
    EXPECT_NE(dl.message.find("55P03"), std::string::npos);
  }
  EXPECT_EQ(b.outcomes()[0].kind, outcome_kind::duplicate);
  EXPECT_EQ(b.outcomes()[1].why, reason::retries_exhausted);
  EXPECT_EQ(b.outcomes()[2].kind, outcome_kind::dead_lettered);
}

TEST(DeadLetterRouting, JsonGoesToPayloadElseRawBytes) {
  event_batch eb;
  event_record bad_json;
  bad_json.raw = eb.append("not json");
  bad_json.topic = eb.append("t");
  bad_json.message = eb.append("m");
  bad_json.why = reason::invalid_json;
  auto d1 = route_dead_letter(eb, bad_json);
  EXPECT_FALSE(d1.bytes_are_json);
  EXPECT_EQ(d1.bytes, "not json");
  EXPECT_EQ(d1.topic, "t");
  EXPECT_EQ(d1.message, "m");

  event_record bad_ts = bad_json;
  bad_ts.raw = eb.append("{\"ts\":1}");
  bad_ts.why = reason::invalid_ts;
  auto d2 = route_dead_letter(eb, bad_ts);
  EXPECT_TRUE(d2.bytes_are_json);
  EXPECT_EQ(d2.why, reason::invalid_ts);

  event_record big = bad_json;
  big.why = reason::too_large;
  big.raw_truncated = true;
  auto d3 = route_dead_letter(eb, big);
  EXPECT_FALSE(d3.bytes_are_json);
  EXPECT_TRUE(d3.truncated);
}

// The buffers reserved for a batch's limits serve batch after batch: with
// tenancy on every batch widens to four fields at its first row, which moves
// nothing and keeps the reserved COPY buffer (a new one a batch was a fresh
// 16 MiB to fault in each time). Widening mid-batch still moves the rows.
TEST(WriteBatch, ReservedBuffersServeEveryBatchAndAWidenAtTheFirstRowKeepsThem) {
  write_batch b;
  b.reserve(64, 1 << 16);
  auto origin = std::make_shared<recording_origin>();
  const char* reserved = b.copy_data().data();
  b.clear();
  for (int batch = 0; batch < 3; ++batch) {
    b.begin_origin(origin);
    std::string expected(copy_format::header);
    for (int i = 0; i < 50; ++i) {
      const std::string key = "k" + std::to_string(batch) + "-" + std::to_string(i);
      b.add_row("t", "{}", key, "kind", static_cast<uint64_t>(i + 1), 0, "", false, "alpha");
      copy_format::append_event_row_with_tenant(expected, "t", "{}", "", "alpha");
    }
    std::string_view data = b.copy_data();
    EXPECT_EQ(data.data(), reserved) << "batch " << batch;
    EXPECT_EQ(std::string(data), expected + std::string(copy_format::trailer));
    b.clear();
  }
  // A row of two fields, then one with a tenant: the first row is widened.
  b.begin_origin(origin);
  b.add_row("t", "{}", "a", "kind", 1, 0);
  b.add_row("t", "{}", "b", "kind", 2, 0, "", false, "alpha");
  std::string expected(copy_format::header);
  copy_format::append_event_row_with_tenant(expected, "t", "{}", "", "");
  copy_format::append_event_row_with_tenant(expected, "t", "{}", "", "alpha");
  EXPECT_EQ(std::string(b.copy_data()), expected + std::string(copy_format::trailer));
}

}  // namespace
}  // namespace evpipe::stages
