// Column extraction: every type, every source, and every bad value
// (missing, null, wrong type, out of range), each failure naming the route,
// the column and the source; a bad message leaves its neighbours alone.
#include "stages/route/extract.h"

#include <gtest/gtest.h>

#include "config/config.h"
#include "stages/route/pg_binary.h"
#include "tests/stages/route/tuple_reader.h"

namespace evpipe::stages::route {
namespace {

using testing::field;
using testing::read_tuples;

route_set make_routes(const std::string& columns, const std::string& extra = "") {
  return route_set(config::load_string("[[routes]]\nname = \"r\"\ntopics = [\"autocore/#\"]\nenvelope = \"none\"\n"
                                       "table = \"t\"\n" + extra + "columns = [" + columns + "]\n")
                       .routes);
}

struct one {
  extract_status status;
  std::vector<field> row;
  extract_error err;
};

one extract_one(const route_set& rs, std::string_view json, std::string_view topic = "autocore/ESP32_001/telemetry",
                int64_t received_us = 0) {
  route_stage stage(rs);
  route_scratch scratch;
  std::vector<route_rows> rows(rs.size());
  std::vector<extract_error> results;
  routed_message m{{json, topic, received_us}, 0};
  stage.extract_batch(std::span(&m, 1), scratch, rows, results);
  one out{results[0].status, {}, results[0]};
  auto tuples = read_tuples(rows[0].tuples);
  EXPECT_EQ(tuples.size(), rows[0].count);
  if (!tuples.empty()) out.row = tuples[0];
  if (out.status != extract_status::ok) EXPECT_TRUE(rows[0].tuples.empty()) << "a failed message leaves no bytes";
  return out;
}

TEST(Extract, EveryType) {
  auto rs = make_routes(R"(
  { name = "device_id", type = "text" },
  { name = "relay_index", type = "int4" },
  { name = "memory_free", type = "int8" },
  { name = "temperature", type = "float8" },
  { name = "state", type = "bool" },
  { name = "timestamp", type = "timestamptz" },
  { name = "id", type = "uuid" },
  { name = "extra", type = "jsonb" })");
  auto r = extract_one(rs, R"({"device_id":"ESP32_001","relay_index":3,"memory_free":45120000000,)"
                           R"("temperature":25.6,"state":true,"timestamp":"2000-01-01T00:00:01Z",)"
                           R"("id":"0189c0de-1234-7abc-8def-0123456789ab","extra":{"a": [1, 2],  "b":"x"}})");
  ASSERT_EQ(r.status, extract_status::ok) << r.err.message;
  ASSERT_EQ(r.row.size(), 8u);
  EXPECT_EQ(*r.row[0], "ESP32_001");
  EXPECT_EQ(testing::as_int4(r.row[1]), 3);
  EXPECT_EQ(testing::as_int8(r.row[2]), 45120000000);
  EXPECT_EQ(testing::as_float8(r.row[3]), 25.6);
  EXPECT_EQ(*r.row[4], std::string(1, '\1'));
  EXPECT_EQ(testing::as_int8(r.row[5]), 1'000'000);
  EXPECT_EQ(r.row[6]->size(), 16u);
  EXPECT_EQ(static_cast<uint8_t>((*r.row[6])[0]), 0x01);
  EXPECT_EQ(*r.row[7], "\1{\"a\":[1,2],\"b\":\"x\"}");
}

TEST(Extract, NumbersAcrossTypes) {
  auto rs = make_routes(R"({ name = "i", type = "int4" }, { name = "f", type = "float8" }, { name = "l", type = "int8" })");
  auto r = extract_one(rs, R"({"i": 3.0, "f": 2, "l": -9223372036854775808})");
  ASSERT_EQ(r.status, extract_status::ok) << r.err.message;
  EXPECT_EQ(testing::as_int4(r.row[0]), 3) << "an integral double is an integer";
  EXPECT_EQ(testing::as_float8(r.row[1]), 2.0) << "an integer is a float8";
  EXPECT_EQ(testing::as_int8(r.row[2]), INT64_MIN);
  r = extract_one(rs, R"({"f": 18446744073709551615})");
  ASSERT_EQ(r.status, extract_status::ok) << r.err.message;
  EXPECT_EQ(testing::as_float8(r.row[1]), 18446744073709551615.0);
}

TEST(Extract, Sources) {
  auto rs = make_routes(R"(
  { name = "device", source = "topic[1]", type = "text" },
  { name = "relay", source = "topic[3]", type = "int4" },
  { name = "topic", source = "topic", type = "text" },
  { name = "at", source = "received_at", type = "timestamptz" },
  { name = "body", source = "message", type = "jsonb" },
  { name = "deep", source = "a.b[1].c", type = "int4" },
  { name = "absent", source = "topic[9]", type = "text" })");
  const std::string msg = R"({"a":{"b":[{"c":1},{"c":2}]}})";
  auto r = extract_one(rs, msg, "autocore/ESP32_001/relay/7/status", unix_to_pg_epoch_us + 5);
  ASSERT_EQ(r.status, extract_status::ok) << r.err.message;
  EXPECT_EQ(*r.row[0], "ESP32_001");
  EXPECT_EQ(testing::as_int4(r.row[1]), 7);
  EXPECT_EQ(*r.row[2], "autocore/ESP32_001/relay/7/status");
  EXPECT_EQ(testing::as_int8(r.row[3]), 5);
  EXPECT_EQ(*r.row[4], "\1" + msg) << "the message exactly as received";
  EXPECT_EQ(testing::as_int4(r.row[5]), 2);
  EXPECT_FALSE(r.row[6].has_value()) << "a topic without that level: NULL";
}

// Member names are found in any order of the members, with paths that share
// a first step; of two members of one name the first counts; a first step
// that is not there gives NULL.
TEST(Extract, MemberNamesInAnyOrderAndTheFirstOfTwoOfOneName) {
  auto rs = make_routes(R"(
  { name = "b", source = "b", type = "int4" },
  { name = "a", source = "a", type = "int4" },
  { name = "nx", source = "n.x", type = "int4" },
  { name = "topic", source = "topic", type = "text" },
  { name = "ny", source = "n.y[1]", type = "int4" },
  { name = "gone", source = "gone.z", type = "int4" },
  { name = "dup", source = "dup", type = "text" })");
  for (std::string_view msg : {R"({"a":1,"b":2,"n":{"x":3,"y":[0,4]},"dup":"first","dup":"second"})",
                               R"({"dup":"first","n":{"y":[9,4],"x":3},"zz":0,"b":2,"dup":"second","a":1})",
                               R"({"dup":"first","b":2,"a":1,"n":{"x":3,"y":[7,4]},"dup":"second"})"}) {
    auto r = extract_one(rs, msg);
    ASSERT_EQ(r.status, extract_status::ok) << r.err.message;
    EXPECT_EQ(testing::as_int4(r.row[0]), 2) << msg;
    EXPECT_EQ(testing::as_int4(r.row[1]), 1) << msg;
    EXPECT_EQ(testing::as_int4(r.row[2]), 3) << msg;
    EXPECT_EQ(*r.row[3], "autocore/ESP32_001/telemetry");
    EXPECT_EQ(testing::as_int4(r.row[4]), 4) << msg;
    EXPECT_FALSE(r.row[5].has_value()) << msg;
    EXPECT_EQ(*r.row[6], "first") << msg;
  }
  auto r = extract_one(rs, R"({"a":1,"b":2})");
  ASSERT_EQ(r.status, extract_status::ok) << r.err.message;
  EXPECT_FALSE(r.row[2].has_value()) << "n absent: NULL";
  EXPECT_FALSE(r.row[6].has_value());
  r = extract_one(rs, R"({"a":1,"b":"two"})");
  EXPECT_EQ(r.status, extract_status::wrong_type);
  EXPECT_EQ(r.err.message, "route \"r\": column \"b\" (source \"b\"): expected an integer, got a string");
}

TEST(Extract, MissingNullAndExtra) {
  auto rs = make_routes(R"(
  { name = "device_id", type = "text", required = true },
  { name = "humidity", type = "float8" },
  { name = "online", type = "bool", default = true })");
  auto r = extract_one(rs, R"({"device_id":"E","humidity":null,"online":null,"unknown":[1,2,3]})");
  ASSERT_EQ(r.status, extract_status::ok) << r.err.message;
  EXPECT_FALSE(r.row[1].has_value()) << "null: NULL";
  EXPECT_EQ(*r.row[2], std::string(1, '\1')) << "null: the default";
  r = extract_one(rs, R"({"humidity":1})");
  EXPECT_EQ(r.status, extract_status::missing);
  EXPECT_EQ(r.err.message, "route \"r\": column \"device_id\" (source \"device_id\"): required, but absent or null");
  r = extract_one(rs, R"({"device_id":null})");
  EXPECT_EQ(r.status, extract_status::missing) << "null counts as absent";
}

TEST(Extract, WrongTypes) {
  struct bad {
    const char* type;
    const char* value;
    const char* says;
  };
  const bad cases[] = {
      {"text", "12", "expected a string, got a number"},
      {"int4", "\"12\"", "expected an integer, got a string"},
      {"int4", "1.5", "expected an integer, got a number"},
      {"int8", "true", "expected an integer, got a boolean"},
      {"float8", "\"NaN\"", "expected a number, got a string"},
      {"float8", "\"Infinity\"", "expected a number, got a string"},
      {"bool", "1", "expected true or false, got a number"},
      {"bool", "\"true\"", "expected true or false, got a string"},
      {"timestamptz", "1738060200", "expected an ISO 8601 date-time string, got a number"},
      {"uuid", "[]", "expected a UUID string, got an array"},
      {"text", "{}", "expected a string, got an object"},
  };
  for (const auto& c : cases) {
    auto rs = make_routes(std::string("{ name = \"v\", source = \"payload.v\", type = \"") + c.type + "\" }");
    auto r = extract_one(rs, std::string(R"({"payload":{"v":)") + c.value + "}}");
    EXPECT_EQ(r.status, extract_status::wrong_type) << c.type << " " << c.value;
    EXPECT_EQ(r.err.message, std::string("route \"r\": column \"v\" (source \"payload.v\"): ") + c.says);
  }
}

TEST(Extract, OutOfRange) {
  struct bad {
    const char* type;
    const char* value;
    const char* says;
  };
  const bad cases[] = {
      {"int4", "2147483648", "2147483648 is out of range for int4"},
      {"int4", "-2147483649", "-2147483649 is out of range for int4"},
      {"int8", "9223372036854775808", "9223372036854775808 is out of range for int8"},
      {"int8", "1e19", "is out of range for int8"},
      {"timestamptz", "\"2025-02-29T10:00:00Z\"", "\"2025-02-29T10:00:00Z\" is not an ISO 8601 date-time"},
      {"timestamptz", "\"2025-01-28T25:00:00Z\"", "is not an ISO 8601 date-time"},
      {"timestamptz", "\"0000-01-01T00:00:00Z\"", "is out of range for timestamptz"},
      {"timestamptz", "\"\"", "\"\" is not an ISO 8601 date-time"},
      {"uuid", "\"0189c0de-1234-7abc-8def-0123456789aZ\"", "is not a UUID"},
      {"text", "\"a\\u0000b\"", "text cannot hold U+0000"},
      {"jsonb", "{\"k\":\"\\u0000\"}", "jsonb cannot hold U+0000"},
  };
  for (const auto& c : cases) {
    auto rs = make_routes(std::string("{ name = \"v\", type = \"") + c.type + "\" }");
    auto r = extract_one(rs, std::string(R"({"v":)") + c.value + "}");
    EXPECT_EQ(r.status, extract_status::out_of_range) << c.type << " " << c.value << ": " << r.err.message;
    EXPECT_NE(r.err.message.find(c.says), std::string::npos) << r.err.message;
    EXPECT_EQ(r.err.message.rfind("route \"r\": column \"v\" (source \"v\"): ", 0), 0u) << r.err.message;
  }
}

TEST(Extract, TopicSegmentsOfTheWrongType) {
  auto rs = make_routes(R"({ name = "relay", source = "topic[3]", type = "int4", required = true })");
  auto r = extract_one(rs, "{}", "autocore/E/relay/x/status");
  EXPECT_EQ(r.status, extract_status::wrong_type);
  EXPECT_EQ(r.err.message, "route \"r\": column \"relay\" (source \"topic[3]\"): \"x\" is not an integer");
  r = extract_one(rs, "{}", "autocore/E/relay/99999999999/status");
  EXPECT_EQ(r.status, extract_status::out_of_range);
  r = extract_one(rs, "{}", "autocore/E");
  EXPECT_EQ(r.status, extract_status::missing);
  EXPECT_NE(r.err.message.find("has no level 3"), std::string::npos) << r.err.message;
}

TEST(Extract, NotJsonOrNotAnObject) {
  auto rs = make_routes(R"({ name = "v", type = "int4" })");
  // JSON itself cannot write NaN or Infinity.
  for (const char* bad : {"{", "{\"v\": NaN}", "{\"v\": Infinity}", "{\"v\": 1e400, \"w\": 01}", "not json", ""}) {
    EXPECT_EQ(extract_one(rs, bad).status, extract_status::invalid_json) << bad;
  }
  auto r = extract_one(rs, "[1,2]");
  EXPECT_EQ(r.status, extract_status::wrong_type);
  EXPECT_EQ(r.err.message, "route \"r\": the message is an array, not a JSON object");
}

// Numbers beyond a double or 64 bits: the message is still JSON; only a
// column that needs such a number refuses it, each type as for any number.
TEST(Extract, NumbersBeyondTheParserAreReadOnlyWhereAColumnNeedsThem) {
  auto rs = make_routes(R"({ name = "id", type = "text" }, { name = "f", type = "float8" },
                           { name = "i", type = "int8" }, { name = "j", type = "jsonb" })");
  // In a field no column reads, and in a jsonb value: stored exactly.
  auto r = extract_one(rs, R"({"id":"a","serial":123456789012345678901234567890,"j":{"e":1e400,"n":[-99999999999999999999]}})");
  ASSERT_EQ(r.status, extract_status::ok) << r.err.message;
  EXPECT_EQ(*r.row[0], "a");
  EXPECT_FALSE(r.row[1].has_value());
  EXPECT_EQ(r.row[3]->substr(1), R"({"e":1e400,"n":[-99999999999999999999]})");
  r = extract_one(rs, R"({"j":1E+400})");
  ASSERT_EQ(r.status, extract_status::ok) << r.err.message;
  EXPECT_EQ(r.row[3]->substr(1), "1E+400");
  // An integer past 64 bits is a float8 still; past a double, not.
  r = extract_one(rs, R"({"f":18446744073709551616})");
  ASSERT_EQ(r.status, extract_status::ok) << r.err.message;
  EXPECT_EQ(testing::as_float8(r.row[1]), 18446744073709551616.0);
  struct bad {
    const char* json;
    extract_status status;
    const char* message;
  };
  for (const bad& b : {
           bad{R"({"f":1e400})", extract_status::out_of_range, "column \"f\" (source \"f\"): 1e400 is out of range for float8"},
           bad{R"({"f":-1.5e999})", extract_status::out_of_range, "-1.5e999 is out of range for float8"},
           bad{R"({"i":99999999999999999999})", extract_status::out_of_range, "99999999999999999999 is out of range for int8"},
           bad{R"({"i":1e400})", extract_status::wrong_type, "expected an integer, got 1e400"},
           bad{R"({"id":1e400})", extract_status::wrong_type, "expected a string, got a number"},
       }) {
    r = extract_one(rs, b.json);
    EXPECT_EQ(r.status, b.status) << b.json << ": " << r.err.message;
    EXPECT_NE(r.err.message.find(b.message), std::string::npos) << r.err.message;
  }
  // A message that holds U+0000 is never read with markers: refused as before.
  r = extract_one(rs, R"({"id":"\u0000","f":1e400})");
  EXPECT_EQ(r.status, extract_status::invalid_json);
}

TEST(Extract, ABadMessageLeavesItsNeighboursAlone) {
  auto rs = make_routes(R"({ name = "device_id", type = "text", required = true }, { name = "t", type = "float8" })");
  route_stage stage(rs);
  route_scratch scratch;
  std::vector<route_rows> rows(1);
  std::vector<extract_error> results;
  const std::string msgs[] = {R"({"device_id":"a","t":1})", R"({"t":"hot"})", R"({"device_id":"b","t":"x"})",
                              "{nope", R"({"device_id":"c"})"};
  std::vector<routed_message> in;
  for (const auto& m : msgs) in.push_back({{m, "autocore/x", 0}, 0});
  stage.extract_batch(in, scratch, rows, results);
  ASSERT_EQ(results.size(), 5u);
  EXPECT_EQ(results[0].status, extract_status::ok);
  EXPECT_EQ(results[1].status, extract_status::missing);
  EXPECT_EQ(results[2].status, extract_status::wrong_type);
  EXPECT_EQ(results[3].status, extract_status::invalid_json);
  EXPECT_EQ(results[4].status, extract_status::ok);
  auto tuples = read_tuples(rows[0].tuples);
  ASSERT_EQ(tuples.size(), 2u);
  EXPECT_EQ(rows[0].count, 2u);
  EXPECT_EQ(*tuples[0][0], "a");
  EXPECT_EQ(*tuples[1][0], "c");
  EXPECT_FALSE(tuples[1][1].has_value());
}

TEST(Extract, IdentityFromIdempotencyColumns) {
  auto rs = make_routes(R"({ name = "device_id", type = "text" }, { name = "temperature", type = "float8" },
                           { name = "timestamp", type = "timestamptz" })",
                        "idempotency = [\"device_id\", \"timestamp\"]\n");
  simdjson::dom::parser p;
  std::string out, id1, id2, id3;
  auto row = [&](const std::string& json, std::string& id) {
    simdjson::padded_string ps(json);
    auto doc = p.parse(ps);
    ASSERT_FALSE(doc.error());
    extract_error err;
    ASSERT_EQ(extract_row(rs.at(0), doc.value_unsafe(), {json, "autocore/x", 0}, out, &err, &id), extract_status::ok)
        << err.message;
  };
  row(R"({"device_id":"E1","temperature":1,"timestamp":"2025-01-28T10:30:00Z"})", id1);
  row(R"({"timestamp":"2025-01-28T11:30:00+01:00","temperature":2,"device_id":"E1"})", id2);
  row(R"({"device_id":"E1","temperature":1,"timestamp":"2025-01-28T10:30:01Z"})", id3);
  EXPECT_EQ(id1, id2) << "same device and instant, whatever the bytes and the other columns";
  EXPECT_NE(id1, id3);
  EXPECT_EQ(id1.rfind(std::string("r\0", 2), 0), 0u) << "the route's name first";
}

}  // namespace
}  // namespace evpipe::stages::route
