// read/position: the opaque text form of (tx, id) and its order.
#include "read/position.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <random>
#include <vector>

namespace evpipe::read {
namespace {

TEST(Position, RoundTripsThroughText) {
  for (position p : {position{0, 0}, position{1, 1}, position{0x123456789abcdefull, 42},
                     position{UINT64_MAX, INT64_MAX}}) {
    auto text = encode(p);
    EXPECT_EQ(text.size(), position_text_size);
    auto back = decode(text);
    ASSERT_TRUE(back) << text;
    EXPECT_EQ(*back, p);
  }
  EXPECT_EQ(encode({0x2a, 0x10}), "1-000000000000002a0000000000000010");
}

// Clients compare and store positions as strings: the text order must be the
// pair order, transaction first.
TEST(Position, TextOrderIsPositionOrder) {
  std::mt19937_64 rng(7);
  std::vector<position> ps;
  for (int i = 0; i < 2000; ++i) {
    // Small ranges too, so that equal transactions (ordered by id) occur.
    uint64_t tx = (i % 2) ? rng() : rng() % 8;
    ps.push_back({tx, static_cast<int64_t>(rng() % (i % 3 ? 8 : INT64_MAX))});
  }
  for (size_t i = 1; i < ps.size(); ++i) {
    const auto &a = ps[i - 1], &b = ps[i];
    EXPECT_EQ(a < b, encode(a) < encode(b));
    EXPECT_EQ(a == b, encode(a) == encode(b));
  }
  EXPECT_LT(position({1, 9}), position({2, 1}));  // the transaction decides before the id
}

TEST(Position, RefusesWhatEncodeNeverWrites) {
  std::string good = encode({5, 6});
  EXPECT_FALSE(decode(""));
  EXPECT_FALSE(decode("now"));
  EXPECT_FALSE(decode(good.substr(1)));
  EXPECT_FALSE(decode(good + "0"));
  std::string other_encoding = good;
  other_encoding[0] = '2';
  EXPECT_FALSE(decode(other_encoding));
  EXPECT_FALSE(decode("1-000000000000000A0000000000000006"));            // uppercase: one text per position
  EXPECT_FALSE(decode("1-00000000000000050000000000000g06"));            // not hex
  EXPECT_FALSE(decode("1-0000000000000005ffffffffffffffff"));            // a negative id
  EXPECT_FALSE(decode("2025-01-15T10:30:00Z"));                         // a time is not a position
  EXPECT_TRUE(decode(good));
}

}  // namespace
}  // namespace evpipe::read
