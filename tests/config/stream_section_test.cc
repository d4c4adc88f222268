// [stream] (config/stream_section.cc): the live stream's keys, their
// defaults and limits (docs/read.md).
#include <gtest/gtest.h>

#include "tests/support/config_error.h"
#include "config/config.h"

using evpipe::config::config_error;
using evpipe::config::load_string;

namespace {

using evpipe::testing::config_error_of;

TEST(StreamSection, DefaultsListenOnLoopback9465UnlessTheFileSaysOtherwise) {
  auto s = load_string("");
  EXPECT_EQ(s.stream.listen, "127.0.0.1:9465");
  EXPECT_FALSE(s.stream.listen_set) << "the default is best effort: a busy port is no error";
  EXPECT_EQ(s.stream.max_clients, 64u);
  EXPECT_EQ(s.stream.max_filters, 32u);
  EXPECT_EQ(s.stream.max_client_buffer_bytes, 8u << 20);
  EXPECT_EQ(s.stream.heartbeat_s, 15u);
  EXPECT_TRUE(s.stream.wake_on_commit);
  EXPECT_EQ(s.stream.writer_threads, 0u) << "0: one writer per core, at most 4";
  EXPECT_EQ(load_string("[stream]\nwriter_threads = 2\n").stream.writer_threads, 2u);
  EXPECT_EQ(s.stream.max_fanout_writes_per_s, 20'000u) << "100 live clients: reads at least 5 ms apart";
  EXPECT_EQ(load_string("[stream]\nmax_fanout_writes_per_s = 0\n").stream.max_fanout_writes_per_s, 0u) << "0: no pacing";
  auto off = load_string("[stream]\nlisten = \"\"\n");
  EXPECT_EQ(off.stream.listen, "");
  EXPECT_TRUE(off.stream.listen_set);
  auto other = load_string("[stream]\nlisten = \"127.0.0.1:19465\"\nmax_clients = 3\n");
  EXPECT_EQ(other.stream.listen, "127.0.0.1:19465");
  EXPECT_TRUE(other.stream.listen_set);
  EXPECT_EQ(other.stream.max_clients, 3u);
}

TEST(StreamSection, RefusesWhatItCannotMean) {
  EXPECT_NE(config_error_of("[stream]\nlisten = \"nowhere\"\n").find("[stream] listen"), std::string::npos)
      << config_error_of("[stream]\nlisten = \"nowhere\"\n");
  EXPECT_NE(config_error_of("[stream]\nmax_clients = 0\n").find("max_clients"), std::string::npos);
  EXPECT_NE(config_error_of("[stream]\nwriter_threads = 65\n").find("writer_threads"), std::string::npos);
  EXPECT_NE(config_error_of("[stream]\nmax_fanout_writes_per_s = -1\n").find("max_fanout_writes_per_s"),
            std::string::npos);
  EXPECT_NE(config_error_of("[stream]\nmax_client_buffer_bytes = 100\n").find("max_client_buffer_bytes"), std::string::npos);
  EXPECT_NE(config_error_of("[stream]\nlistn = \"127.0.0.1:1\"\n").find("listn"), std::string::npos) << "a misspelt key";
  EXPECT_NE(config_error_of("[stream]\nbearer_token_file = \"/nonexistent/token\"\n").find("bearer_token_file"),
            std::string::npos);
}

}  // namespace
