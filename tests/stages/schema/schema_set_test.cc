// Loading a schema directory and routing events to <kind>.json or
// <kind>/<version>.json (stages/schema/schema_set.cc), and the active set a
// reload swaps while other threads check events (stages/schema/active.cc).
#include "stages/schema/schema_set.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <thread>

#include "stages/schema/active.h"
#include "stages/schema/compile.h"

namespace evpipe::stages::schema {
namespace {

namespace fs = std::filesystem;

struct scratch_dir {
  fs::path path;
  scratch_dir() {
    path = fs::temp_directory_path() / ("evpipe-schemas-" + std::to_string(::getpid()) + "-" +
                                        std::to_string(counter()++));
    fs::remove_all(path);
    fs::create_directories(path);
  }
  ~scratch_dir() { fs::remove_all(path); }
  static int& counter() {
    static int n = 0;
    return n;
  }
  void write(const std::string& name, const std::string& text) const {
    fs::create_directories((path / name).parent_path());
    std::ofstream(path / name) << text;
  }
};

std::string event(const std::string& kind, const std::string& payload) {
  return R"({"trace_id":"550e8400-e29b-41d4-a716-446655440000","ts":"2025-01-15T10:30:00Z","kind":")" + kind +
         R"(","idempotency_key":"k","payload":)" + payload + "}";
}

validation check(const schema_set& set, const std::string& text) {
  static simdjson::dom::parser parser;
  simdjson::dom::element doc = parser.parse(text);
  walker w;
  simdjson::dom::element kind = doc["kind"];
  return set.check(std::string_view(kind), parser.doc, w);
}

void write_versioned(const scratch_dir& d) {
  d.write("task_completed.json", R"({"required":["task_id"]})");
  d.write("project_created/1.json", R"({"required":["name"]})");
  d.write("project_created/2.json", R"({"required":["name","owner"]})");
  d.write("project_created.json", R"({"required":["legacy"]})");
  d.write("README.md", "not a schema");
}

// The payload is found from the event's end when it comes last, and from
// the start otherwise: checked wherever it is among the members.
TEST(schema_set, payload_checked_wherever_it_is_among_the_members) {
  schema_set set{set_options{}};
  set.add("k", "", compile_schema(R"({"required":["name"]})", "k.json"));
  const std::string head = R"("trace_id":"550e8400-e29b-41d4-a716-446655440000","ts":"2025-01-15T10:30:00Z","kind":"k")";
  for (const std::string payload : {R"({"name":1})", R"({})"}) {
    const bool ok = payload != "{}";
    EXPECT_EQ(check(set, "{" + head + R"(,"payload":)" + payload + "}").ok(), ok);
    EXPECT_EQ(check(set, R"({"payload":)" + payload + "," + head + "}").ok(), ok);
    EXPECT_EQ(check(set, "{" + head + R"(,"payload":)" + payload + R"(,"topic":{"a":{}}})").ok(), ok);
    EXPECT_EQ(check(set, "{" + head + R"(,"payload":)" + payload + R"(,"n":9007199254740992003})").ok(), ok);
  }
}

TEST(schema_set, routes_by_kind_and_version) {
  scratch_dir d;
  write_versioned(d);
  set_options o;
  o.dir = d.path.string();
  o.dead_letter_unknown_version = true;
  auto set = schema_set::load(o);
  EXPECT_EQ(set->files(), 4u);
  // A kind without versions: its one schema, whatever the event's version.
  EXPECT_TRUE(check(*set, event("task_completed", R"({"task_id":1,"version":9})")).ok());
  EXPECT_EQ(check(*set, event("task_completed", R"({})")).why, reason::schema_violation);
  // Versioned: the version picks the file; strings and integers alike.
  EXPECT_TRUE(check(*set, event("project_created", R"({"version":1,"name":"a"})")).ok());
  EXPECT_TRUE(check(*set, event("project_created", R"({"version":"1","name":"a"})")).ok());
  auto v2 = check(*set, event("project_created", R"({"version":2,"name":"a"})"));
  EXPECT_EQ(v2.why, reason::schema_violation);
  EXPECT_EQ(v2.message, "/payload: required: property \"owner\" is missing (project_created/2.json#)");
  EXPECT_TRUE(check(*set, event("project_created", R"({"version":2,"name":"a","owner":"b"})")).ok());
  // No version: <kind>.json.
  EXPECT_EQ(check(*set, event("project_created", R"({"name":"a"})")).why, reason::schema_violation);
  EXPECT_TRUE(check(*set, event("project_created", R"({"legacy":true})")).ok());
  // A version without a file.
  auto v3 = check(*set, event("project_created", R"({"version":3,"name":"a"})"));
  EXPECT_EQ(v3.why, reason::unknown_schema_version);
  EXPECT_EQ(v3.message, "kind project_created has no schema for version \"3\" (versions: 1, 2)");
  EXPECT_EQ(check(*set, event("project_created", R"({"version":1.5})")).why, reason::unknown_schema_version);
  // Kinds without a schema pass.
  EXPECT_TRUE(check(*set, event("login_failed", R"({})")).ok());
}

TEST(schema_set, unknown_version_accepted_when_so_configured) {
  scratch_dir d;
  d.write("project_created/1.json", R"({"required":["name"]})");
  set_options o;
  o.dir = d.path.string();
  auto set = schema_set::load(o);
  EXPECT_TRUE(check(*set, event("project_created", R"({"version":7})")).ok());
  EXPECT_TRUE(check(*set, event("project_created", R"({})")).ok());  // no version, no <kind>.json
  EXPECT_FALSE(check(*set, event("project_created", R"({"version":1})")).ok());
}

TEST(schema_set, configured_version_path) {
  scratch_dir d;
  d.write("k/a.json", R"({"required":["x"]})");
  set_options o;
  o.dir = d.path.string();
  o.version_path = "meta.schema";
  o.dead_letter_unknown_version = true;
  schema_set probe(o);
  auto set = schema_set::load(o);
  std::string with_meta = event("k", R"({"y":1})");
  with_meta.insert(1, R"("meta":{"schema":"a"},)");
  EXPECT_EQ(check(*set, with_meta).why, reason::schema_violation);
  EXPECT_EQ(check(*set, event("k", R"({"version":"a"})")).why, reason::unknown_schema_version);
}

TEST(schema_set, a_bad_file_is_named_with_its_pointer) {
  scratch_dir d;
  d.write("a.json", R"({"type":"object"})");
  d.write("b/1.json", R"({"properties":{"n":{"multipleOf":3}}})");
  set_options o;
  o.dir = d.path.string();
  try {
    (void)schema_set::load(o);
    FAIL() << "loaded";
  } catch (const schema_error& e) {
    EXPECT_STREQ(e.what(), "b/1.json at #/properties/n/multipleOf: keyword \"multipleOf\" is not supported "
                           "(docs/schemas.md lists those that are)");
  }
  o.dir = (d.path / "missing").string();
  EXPECT_THROW((void)schema_set::load(o), schema_error);
}

// SIGHUP under load, in miniature: threads check events without pause while
// the active set is swapped back and forth between two sets that disagree
// on every event. Each event's verdict must be one whole set's verdict, and
// a set that fails to load must leave the running one in place.
TEST(active_schemas, swaps_whole_sets_under_load) {
  scratch_dir a, b, bad;
  // Set A wants n even-length names, set B odd, over a large payload: a
  // check that straddled two sets would show as a mixed verdict below.
  a.write("k.json", R"({"properties":{"n1":{"maxLength":1},"n2":{"maxLength":1},"n3":{"maxLength":1}}})");
  b.write("k.json", R"({"properties":{"n1":{"minLength":2},"n2":{"minLength":2},"n3":{"minLength":2}}})");
  bad.write("k.json", R"({"not":{}})");
  config::schemas_section ca, cb, cbad;
  ca.enabled = cb.enabled = cbad.enabled = true;
  ca.dir = a.path.string();
  cb.dir = b.path.string();
  cbad.dir = bad.path.string();
  ASSERT_EQ(install_schemas(ca), 1u);

  const std::string short_names = event("k", R"({"n1":"a","n2":"b","n3":"c"})");
  const std::string long_names = event("k", R"({"n1":"aa","n2":"bb","n3":"cc"})");
  std::atomic<bool> stop{false};
  std::atomic<uint64_t> checked{0}, mixed{0}, unchecked{0};
  std::vector<std::thread> readers;
  for (int t = 0; t < 3; ++t) {
    readers.emplace_back([&] {
      simdjson::dom::parser p1, p2;
      [[maybe_unused]] simdjson::dom::element e1 = p1.parse(short_names), e2 = p2.parse(long_names);
      while (!stop.load(std::memory_order_relaxed)) {
        const schema_set* set = thread_schemas();
        if (!set) {
          ++unchecked;
          continue;
        }
        // Under one snapshot exactly one of the two events passes.
        bool s = set->check("k", p1.doc, thread_walker()).ok();
        bool l = set->check("k", p2.doc, thread_walker()).ok();
        if (s == l) ++mixed;
        ++checked;
      }
    });
  }
  size_t failed_loads = 0;
  for (int i = 0; i < 200; ++i) {
    (void)install_schemas(i % 2 ? ca : cb);
    try {
      (void)install_schemas(cbad);
    } catch (const schema_error&) {
      ++failed_loads;
    }
    std::this_thread::sleep_for(std::chrono::microseconds(200));
  }
  stop = true;
  for (auto& r : readers) r.join();
  EXPECT_EQ(failed_loads, 200u);
  EXPECT_EQ(mixed.load(), 0u);
  EXPECT_EQ(unchecked.load(), 0u) << "a failed load must not turn schemas off";
  EXPECT_GT(checked.load(), 1000u);
  config::schemas_section off;
  (void)install_schemas(off);
  EXPECT_EQ(thread_schemas(), nullptr);
}

// One walker remembers the last kind it looked up (walker::kind_memo): the
// memo must follow the kind, the set, and a set that gained a schema.
TEST(schema_set, one_walker_across_kinds_and_sets_checks_each_against_its_own_schema) {
  auto make = [](const std::string& a_schema) {
    auto set = std::make_shared<schema_set>(set_options{});
    set->add("a", "", compile_schema(a_schema, "a.json"));
    set->add("b", "", compile_schema(R"({"required":["y"]})", "b.json"));
    return set;
  };
  auto needs_x = make(R"({"required":["x"]})");
  auto needs_z = make(R"({"required":["z"]})");
  simdjson::dom::parser parser;
  walker w;
  auto check_with = [&](const schema_set& set, const std::string& kind, const std::string& payload) {
    (void)parser.parse(event(kind, payload));
    return set.check(kind, parser.doc, w).ok();
  };
  for (int round = 0; round < 3; ++round) {
    EXPECT_TRUE(check_with(*needs_x, "a", R"({"x":1})"));
    EXPECT_FALSE(check_with(*needs_x, "b", R"({"x":1})"));
    EXPECT_FALSE(check_with(*needs_z, "a", R"({"x":1})"));
    EXPECT_TRUE(check_with(*needs_z, "a", R"({"z":1})"));
    EXPECT_TRUE(check_with(*needs_z, "b", R"({"y":1})"));
    EXPECT_TRUE(check_with(*needs_z, "c", R"({})"));  // no schema for c
    EXPECT_FALSE(check_with(*needs_x, "a", R"({"z":1})"));
  }
  // A kind added after the walker remembered that the set had none.
  EXPECT_TRUE(check_with(*needs_x, "c", R"({})"));
  needs_x->add("c", "", compile_schema(R"({"required":["w"]})", "c.json"));
  EXPECT_FALSE(check_with(*needs_x, "c", R"({})"));
  // A set freed and another made, possibly at the same address.
  needs_z.reset();
  auto needs_v = make(R"({"required":["v"]})");
  EXPECT_FALSE(check_with(*needs_v, "a", R"({"z":1})"));
  EXPECT_TRUE(check_with(*needs_v, "a", R"({"v":1})"));
}

}  // namespace
}  // namespace evpipe::stages::schema
