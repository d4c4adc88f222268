// Binary forms and text conversions of routed column values.
#include "stages/route/pg_binary.h"

#include <gtest/gtest.h>

#include "tests/stages/route/tuple_reader.h"

namespace evpipe::stages::route {
namespace {

using config::column_type;

int64_t ts(std::string_view s) {
  int64_t us = 0;
  EXPECT_EQ(parse_timestamp(s, us), parse_status::ok) << s;
  return us;
}

TEST(PgBinary, TimestampsAreMicrosecondsSince2000) {
  EXPECT_EQ(ts("2000-01-01T00:00:00Z"), 0);
  EXPECT_EQ(ts("2000-01-01 00:00"), 0) << "no offset is UTC, seconds optional";
  EXPECT_EQ(ts("2025-01-28T10:30:00Z"), (int64_t{1738060200} * 1'000'000) - unix_to_pg_epoch_us);
  EXPECT_EQ(ts("2025-01-28T12:30:00+02:00"), ts("2025-01-28T10:30:00Z"));
  EXPECT_EQ(ts("2025-01-28T05:00:00-0530"), ts("2025-01-28T10:30:00Z"));
  EXPECT_EQ(ts("2025-01-28T11:30:00+01"), ts("2025-01-28T10:30:00Z"));
  EXPECT_EQ(ts("1999-12-31T23:59:59.5Z"), -500'000);
  EXPECT_EQ(ts("2000-01-01T00:00:00.1234565Z"), 123'457) << "rounded to microseconds";
  EXPECT_EQ(ts("2000-01-01T00:00:00,000001Z"), 1);
  EXPECT_EQ(ts("2016-12-31T23:59:60Z"), ts("2017-01-01T00:00:00Z")) << "a leap second is the next minute, as in PostgreSQL";
  EXPECT_EQ(ts("2024-02-29T00:00:00Z") - ts("2024-02-28T00:00:00Z"), int64_t{86'400'000'000});
  EXPECT_EQ(ts("1970-01-01T00:00:00Z"), -unix_to_pg_epoch_us);
}

TEST(PgBinary, BadTimestamps) {
  int64_t us;
  for (const char* bad : {"", "2025-02-29T00:00:00Z", "2025-13-01T00:00:00Z", "2025-01-28", "2025-01-28T24:00:00Z",
                          "2025-01-28T10:30:00+25:00", "yesterday", "1738060200", "2025-01-28T10:30:00ZZ"}) {
    EXPECT_EQ(parse_timestamp(bad, us), parse_status::malformed) << bad;
  }
  EXPECT_EQ(parse_timestamp("0000-01-01T00:00:00Z", us), parse_status::out_of_range);
}

TEST(PgBinary, Uuids) {
  uint8_t b[16];
  ASSERT_TRUE(parse_uuid("0189c0de-1234-7abc-8def-0123456789ab", b));
  EXPECT_EQ(b[0], 0x01);
  EXPECT_EQ(b[1], 0x89);
  EXPECT_EQ(b[15], 0xab);
  uint8_t c[16];
  ASSERT_TRUE(parse_uuid("{0189C0DE1234-7ABC-8DEF-0123456789AB}", c));
  EXPECT_EQ(0, std::memcmp(b, c, 16)) << "every form PostgreSQL accepts, same value";
  EXPECT_FALSE(parse_uuid("0189c0de-1234-7abc-8def-0123456789a", b));
  EXPECT_FALSE(parse_uuid("not-a-uuid", b));
}

TEST(PgBinary, FromTextEveryType) {
  using testing::read_tuples;
  std::string out, why;
  ASSERT_EQ(append_from_text(out, column_type::int4, "-7", &why), parse_status::ok);
  EXPECT_EQ(testing::as_int4(std::string(out.substr(4))), -7);
  out.clear();
  ASSERT_EQ(append_from_text(out, column_type::int8, "9223372036854775807", &why), parse_status::ok);
  EXPECT_EQ(testing::as_int8(std::string(out.substr(4))), INT64_MAX);
  out.clear();
  ASSERT_EQ(append_from_text(out, column_type::float8, "2.5", &why), parse_status::ok);
  EXPECT_EQ(testing::as_float8(std::string(out.substr(4))), 2.5);
  out.clear();
  ASSERT_EQ(append_from_text(out, column_type::boolean, "true", &why), parse_status::ok);
  EXPECT_EQ(out.substr(4), std::string(1, '\1'));
  out.clear();
  ASSERT_EQ(append_from_text(out, column_type::text, "ESP32_001", &why), parse_status::ok);
  EXPECT_EQ(out.substr(4), "ESP32_001");
  out.clear();
  ASSERT_EQ(append_from_text(out, column_type::uuid, "0189c0de-1234-7abc-8def-0123456789ab", &why), parse_status::ok);
  EXPECT_EQ(out.size(), 20u);
  out.clear();
  ASSERT_EQ(append_from_text(out, column_type::timestamptz, "2000-01-01T00:00:01Z", &why), parse_status::ok);
  EXPECT_EQ(testing::as_int8(std::string(out.substr(4))), 1'000'000);
}

TEST(PgBinary, FromTextRefusals) {
  std::string out, why;
  EXPECT_EQ(append_from_text(out, column_type::int4, "2147483648", &why), parse_status::out_of_range);
  EXPECT_NE(why.find("out of range for int4"), std::string::npos) << why;
  EXPECT_EQ(append_from_text(out, column_type::int8, "9223372036854775808", &why), parse_status::out_of_range);
  EXPECT_EQ(append_from_text(out, column_type::int4, "12a", &why), parse_status::malformed);
  EXPECT_EQ(append_from_text(out, column_type::int4, "", &why), parse_status::malformed);
  EXPECT_EQ(append_from_text(out, column_type::float8, "nan", &why), parse_status::out_of_range);
  EXPECT_EQ(append_from_text(out, column_type::float8, "inf", &why), parse_status::out_of_range);
  EXPECT_EQ(append_from_text(out, column_type::float8, "1e999", &why), parse_status::out_of_range);
  EXPECT_EQ(append_from_text(out, column_type::boolean, "yes", &why), parse_status::malformed);
  EXPECT_EQ(append_from_text(out, column_type::uuid, "x", &why), parse_status::malformed);
  EXPECT_EQ(append_from_text(out, column_type::timestamptz, "2025-02-30T00:00:00Z", &why), parse_status::malformed);
  EXPECT_EQ(append_from_text(out, column_type::text, std::string_view("a\0b", 3), &why), parse_status::out_of_range);
  EXPECT_TRUE(out.empty()) << "nothing is appended on failure";
}

}  // namespace
}  // namespace evpipe::stages::route
