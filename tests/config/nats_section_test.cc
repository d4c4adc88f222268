// [[sources.nats]] (config/nats_section.cc): defaults, bounds, credentials
// read from their files and never printed, and a change named by a reload.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>

#include "config/config.h"
#include "config/reload.h"

namespace evpipe::config {
namespace {

const std::string minimal = "[[sources.nats]]\nservers = [\"nats://127.0.0.1:4222\"]\nstream = \"EVENTS\"\n";

std::string refused(const std::string& body) {
  try {
    (void)load_string(body);
  } catch (const config_error& e) {
    return e.what();
  }
  return "";
}

TEST(nats_section, defaults) {
  auto s = load_string(minimal);
  ASSERT_EQ(s.nats_sources.size(), 1u);
  const auto& n = s.nats_sources[0];
  EXPECT_EQ(n.servers, std::vector<std::string>{"nats://127.0.0.1:4222"});
  EXPECT_EQ(n.stream, "EVENTS");
  EXPECT_EQ(n.durable, "evpipe");
  EXPECT_TRUE(n.filter_subjects.empty());
  EXPECT_EQ(n.max_ack_pending, 16384u);
  EXPECT_EQ(n.fetch_batch, 512u);
  EXPECT_EQ(n.max_deliveries, 10u);
  EXPECT_EQ(n.ack_wait_s, 30u);
  EXPECT_EQ(n.topic_separator, "/");
  EXPECT_TRUE(problems_for_run(s).empty());  // a NATS source alone is a source
}

TEST(nats_section, bad_values_are_refused_by_key) {
  EXPECT_NE(refused("[[sources.nats]]\nstream = \"E\"\n").find("servers: is required"), std::string::npos);
  EXPECT_NE(refused("[[sources.nats]]\nservers = [\"http://x:1\"]\nstream = \"E\"\n").find("nats:// or tls://"),
            std::string::npos);
  EXPECT_NE(refused("[[sources.nats]]\nservers = [\"nats://u:p@x:1\"]\nstream = \"E\"\n").find("must not hold credentials"),
            std::string::npos);
  EXPECT_NE(refused("[[sources.nats]]\nservers = [\"nats://x:1\"]\n").find("stream"), std::string::npos);
  EXPECT_NE(refused(minimal + "durable = \"a.b\"\n").find("durable"), std::string::npos);
  EXPECT_NE(refused(minimal + "filter_subjects = [\"a..b\"]\n").find("filter_subjects"), std::string::npos);
  EXPECT_NE(refused(minimal + "filter_subjects = [\"a.>.b\"]\n").find("filter_subjects"), std::string::npos);
  EXPECT_NE(refused(minimal + "fetch_batch = 600\nmax_ack_pending = 500\n").find("fetch_batch"), std::string::npos);
  EXPECT_NE(refused(minimal + "max_ack_pending = 0\n").find("max_ack_pending"), std::string::npos);
  EXPECT_NE(refused(minimal + "user = \"u\"\n").find("password_file go together"), std::string::npos);
  EXPECT_NE(refused(minimal + "cert_file = \"/c\"\n").find("key_file go together"), std::string::npos);
  EXPECT_NE(refused(minimal + "unknown_key = 1\n").find("unknown_key"), std::string::npos);
  EXPECT_TRUE(refused(minimal + "filter_subjects = [\"tracker.>\", \"autocore.*.telemetry\"]\n").empty());
}

TEST(nats_section, secrets_are_read_from_files_and_never_printed) {
  auto dir = std::filesystem::temp_directory_path() / ("evpipe-nats-cfg-" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  std::ofstream(dir / "token") << "tok-SECRET-1\n";
  std::ofstream(dir / "password") << "pw-SECRET-2\n";
  std::ofstream(dir / "a.toml") << minimal << "token_file = \"token\"\n";
  auto s = load_file((dir / "a.toml").string());
  EXPECT_EQ(s.nats_sources[0].token, "tok-SECRET-1");
  EXPECT_EQ(to_toml(s).find("SECRET"), std::string::npos) << to_toml(s);
  EXPECT_NE(to_toml(s).find((dir / "token").string()), std::string::npos) << to_toml(s);

  std::ofstream(dir / "b.toml") << minimal << "user = \"evpipe\"\npassword_file = \"password\"\n";
  s = load_file((dir / "b.toml").string());
  EXPECT_EQ(s.nats_sources[0].password, "pw-SECRET-2");
  EXPECT_EQ(to_toml(s).find("SECRET"), std::string::npos) << to_toml(s);
  // The printed config names the file by its absolute path: it loads back
  // to the same source, the secret read again from the file.
  EXPECT_EQ(load_string(to_toml(s)).nats_sources.at(0), s.nats_sources[0]);
  std::ofstream(dir / "c.toml") << minimal << "token_file = \"token\"\nuser = \"u\"\npassword_file = \"password\"\n";
  try {
    (void)load_file((dir / "c.toml").string());
    ADD_FAILURE() << "two kinds of credentials accepted";
  } catch (const config_error& e) {
    EXPECT_NE(std::string(e.what()).find("alternatives"), std::string::npos) << e.what();
  }
  std::filesystem::remove_all(dir);
}

TEST(nats_section, a_change_is_named_by_a_reload_as_needing_a_restart) {
  auto running = load_string(minimal);
  auto next = load_string(minimal + "fetch_batch = 64\n");
  auto plan = plan_reload(running, next);
  EXPECT_NE(std::find(plan.kept.begin(), plan.kept.end(), "[[sources.nats]]"), plan.kept.end());
  EXPECT_TRUE(plan_reload(running, load_string(minimal)).kept.empty());
}

}  // namespace
}  // namespace evpipe::config
