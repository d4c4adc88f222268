// The routed rows of a write_batch: per-route streams, slices by event,
// refusals, duplicates and giving up, as the sink and the shard use them.
#include <gtest/gtest.h>

#include "stages/batch.h"

namespace evpipe::stages {
namespace {

struct null_origin : event_origin {
  void on_outcomes(std::span<const outcome>) override {}
};

// [u16 route][u32 length][tuple], as intake writes event_record::routed.
std::string routed(std::initializer_list<std::pair<uint16_t, std::string>> parts) {
  std::string out;
  for (const auto& [route, tuple] : parts) {
    out.push_back(static_cast<char>(route >> 8));
    out.push_back(static_cast<char>(route));
    uint32_t n = static_cast<uint32_t>(tuple.size());
    for (int k = 0; k < 4; ++k) out.push_back(static_cast<char>(n >> (24 - 8 * k)));
    out += tuple;
  }
  return out;
}

const std::string header(copy_format::header), trailer(copy_format::trailer);

TEST(RoutedBatch, StreamsPerRouteAndSlicesByEvent) {
  write_batch b;
  b.begin_origin(std::make_shared<null_origin>());
  b.add_routed(routed({{0, "A1"}, {1, "B1"}}), false, "t", "{\"m\":1}", "k1", "", 1, 0);
  b.add_routed(routed({{1, "B2"}}), true, "t", "{\"m\":2}", "k2", "kind", 2, 0);  // also mirrored
  b.add_routed(routed({{0, "A3"}}), false, "t", "{\"m\":3}", "k3", "", 3, 0);
  EXPECT_EQ(b.event_count(), 3u) << "one outcome per event, however many rows";
  EXPECT_EQ(b.row_count(), 1u);
  EXPECT_EQ(b.routed_row_count(), 4u);
  EXPECT_TRUE(b.routed_rows()[0].counts_event);
  EXPECT_FALSE(b.routed_rows()[1].counts_event) << "one count per event";
  EXPECT_FALSE(b.routed_rows()[2].counts_event) << "its events_mirror row counts it";
  EXPECT_TRUE(b.routed_rows()[3].counts_event);
  std::string s;
  b.route_copy_slice(0, 0, SIZE_MAX, s);
  EXPECT_EQ(s, header + "A1A3" + trailer);
  b.route_copy_slice(1, 0, SIZE_MAX, s);
  EXPECT_EQ(s, header + "B1B2" + trailer);
  b.route_copy_slice(0, 1, 2, s);
  EXPECT_TRUE(s.empty()) << "event 1 has no row of route 0";
  b.route_copy_slice(1, 1, 3, s);
  EXPECT_EQ(s, header + "B2" + trailer);

  // The pieces the sink sends: the route's own stream when all of it is
  // wanted, the slice otherwise.
  const auto joined = [](const write_batch::copy_pieces& p) {
    std::string out;
    for (auto part : p.parts()) out += part;
    return out;
  };
  std::string scratch;
  auto whole = b.route_copy(0, 0, SIZE_MAX, scratch);
  EXPECT_EQ(whole.count, 3u) << "all of route 0's rows: its stream, not a copy";
  EXPECT_EQ(whole.tuples, 2u);
  EXPECT_EQ(joined(whole), header + "A1A3" + trailer);
  EXPECT_TRUE(scratch.empty());
  auto part = b.route_copy(1, 1, 3, scratch);
  EXPECT_EQ(part.count, 1u);
  EXPECT_EQ(part.tuples, 1u);
  EXPECT_EQ(joined(part), header + "B2" + trailer);
  EXPECT_EQ(b.route_copy(0, 1, 2, scratch).tuples, 0u) << "event 1 has no row of route 0";
  EXPECT_EQ(b.route_copy(0, 1, 2, scratch).count, 0u);
  EXPECT_EQ(b.route_copy(7, 0, SIZE_MAX, scratch).count, 0u) << "a route without a stream";
  auto all_in_range = b.route_copy(1, 0, 2, scratch);  // events 0 and 1 hold all of route 1's rows
  EXPECT_EQ(all_in_range.count, 3u) << "a range holding every row of the route: its stream";
  EXPECT_EQ(joined(all_in_range), header + "B1B2" + trailer);

  b.mark_event_duplicate(2);
  auto without_dup = b.route_copy(0, 0, SIZE_MAX, scratch);
  EXPECT_EQ(without_dup.count, 1u) << "a row left out: a slice";
  EXPECT_EQ(joined(without_dup), header + "A1" + trailer) << "a duplicate's rows are left out of the pieces too";
  b.route_copy_slice(0, 0, SIZE_MAX, s);
  EXPECT_EQ(s, header + "A1" + trailer) << "a duplicate's rows are left out";
  b.reject_routed(0, "23514", "check violated");
  b.route_copy_slice(1, 0, SIZE_MAX, s);
  EXPECT_EQ(s, header + "B2" + trailer) << "a refused event's rows are left out";
  EXPECT_EQ(joined(b.route_copy(1, 0, SIZE_MAX, scratch)), header + "B2" + trailer);
  EXPECT_EQ(b.route_copy(1, 0, SIZE_MAX, scratch).tuples, 1u);
  ASSERT_EQ(b.dead_letters().size(), 1u);
  EXPECT_EQ(b.dead_letters()[0].why, reason::db_rejected);
  EXPECT_EQ(b.dead_letters()[0].bytes, "{\"m\":1}");
  EXPECT_EQ(b.outcomes()[0].kind, outcome_kind::dead_lettered);

  b.clear();
  EXPECT_EQ(b.routed_row_count(), 0u);
  EXPECT_EQ(b.byte_count(), header.size());
}

TEST(RoutedBatch, AReservedBatchKeepsItsRouteStreamsInPlaceAcrossRowsRoutesAndBatches) {
  write_batch b;
  b.reserve(1000, 100'000);
  b.begin_origin(std::make_shared<null_origin>());
  const std::string tuple(90, 'x');
  std::string scratch;
  uint64_t seq = 0;
  b.add_routed(routed({{0, tuple}}), false, "t", "{}", "k", "", ++seq, 0);
  const char* stream = b.route_copy(0, 0, SIZE_MAX, scratch).part[1].data();
  for (int i = 0; i < 900; ++i) b.add_routed(routed({{0, tuple}}), false, "t", "{}", "k", "", ++seq, 0);
  EXPECT_EQ(b.route_copy(0, 0, SIZE_MAX, scratch).part[1].data(), stream)
      << "81,090 bytes of tuples fit the room reserved at the route's first row: no growth by doubling";
  b.add_routed(routed({{5, tuple}}), false, "t", "{}", "k", "", ++seq, 0);  // the streams' vector grows
  EXPECT_EQ(b.route_copy(0, 0, SIZE_MAX, scratch).part[1].data(), stream) << "a moved stream keeps its buffer";
  EXPECT_EQ(b.route_copy(5, 0, SIZE_MAX, scratch).tuples, 1u);

  b.clear();
  b.begin_origin(std::make_shared<null_origin>());
  b.add_routed(routed({{0, "C1"}}), false, "t", "{}", "k", "", 1, 0);
  auto again = b.route_copy(0, 0, SIZE_MAX, scratch);
  EXPECT_EQ(again.part[1].data(), stream) << "the next batch reuses the stream's buffer";
  std::string joined;
  for (auto part : again.parts()) joined += part;
  EXPECT_EQ(joined, header + "C1" + trailer) << "and holds only its own rows";
  EXPECT_EQ(b.route_copy(5, 0, SIZE_MAX, scratch).count, 0u) << "route 5 has no row in this batch";
}

TEST(RoutedBatch, GivingUpDeadLettersRoutedOnlyEventsToo) {
  write_batch b;
  b.begin_origin(std::make_shared<null_origin>());
  b.add_routed(routed({{0, "A1"}}), false, "t", "{\"m\":1}", "k1", "", 1, 0);
  b.add_routed(routed({{0, "A2"}}), false, "t", "{\"m\":2}", "k2", "", 2, 0);
  b.mark_event_duplicate(1);
  b.dead_letter_all_rows(reason::retries_exhausted, "not committed");
  EXPECT_EQ(b.routed_row_count(), 0u);
  ASSERT_EQ(b.dead_letters().size(), 1u) << "the duplicate is already stored";
  EXPECT_EQ(b.dead_letters()[0].why, reason::retries_exhausted);
  EXPECT_EQ(b.outcomes()[0].kind, outcome_kind::dead_lettered);
  EXPECT_EQ(b.outcomes()[0].why, reason::retries_exhausted);
  EXPECT_EQ(b.outcomes()[1].kind, outcome_kind::duplicate);
}

}  // namespace
}  // namespace evpipe::stages
