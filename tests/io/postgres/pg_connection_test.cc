#include "io/postgres/pg_connection.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>

namespace evpipe::io {
namespace {

pg_status failed(std::string sqlstate, bool lost = false) { return pg_status{false, std::move(sqlstate), "m", lost}; }

TEST(PgFailure, ClassifiesBySqlstateClass) {
  EXPECT_EQ(classify(pg_status{}), pg_failure::none);
  EXPECT_EQ(classify(failed("23505")), pg_failure::duplicate_key);
  for (const char* data : {"22P02", "22001", "22021", "23514", "23502", "23503", "54000", "P0001"}) {
    EXPECT_EQ(classify(failed(data)), pg_failure::data) << data;
  }
  for (const char* transient : {"08006", "40001", "40P01", "53100", "55P03", "57P01", "58030", "42501", "42P01", "XX000"}) {
    EXPECT_EQ(classify(failed(transient)), pg_failure::transient) << transient;
  }
  EXPECT_EQ(classify(failed("")), pg_failure::transient);
  EXPECT_EQ(classify(failed("23514", true)), pg_failure::transient) << "a lost connection is transient whatever it said";
}

// A server that accepts the TCP connection and never answers.
struct silent_server {
  silent_server() {
    fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a);
    ::listen(fd, 8);
    socklen_t len = sizeof a;
    ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
    port = ntohs(a.sin_port);
  }
  ~silent_server() { ::close(fd); }
  int fd = -1;
  uint16_t port = 0;
};

TEST(PgConnection, DsnConnectTimeoutWinsOverTheDefault) {
  // evpipe's default is 5 s; the DSN asks for 1 (which libpq rounds up to 2).
  silent_server server;
  pg_connection conn;
  auto start = std::chrono::steady_clock::now();
  auto st = conn.connect("host=127.0.0.1 port=" + std::to_string(server.port) + " connect_timeout=1", "t");
  auto took = std::chrono::steady_clock::now() - start;
  EXPECT_FALSE(st.ok);
  EXPECT_TRUE(st.connection_lost);
  EXPECT_LT(took, std::chrono::milliseconds(4500)) << st.message;
}

TEST(PgConnection, EmptyDsnMeansLibpqEnvironment) {
  // Nothing in the DSN: host and port come from PG* variables.
  silent_server server;
  ::setenv("PGHOST", "127.0.0.1", 1);
  ::setenv("PGPORT", std::to_string(server.port).c_str(), 1);
  ::setenv("PGCONNECT_TIMEOUT", "2", 1);
  pg_connection conn;
  auto start = std::chrono::steady_clock::now();
  auto st = conn.connect("", "t");
  auto took = std::chrono::steady_clock::now() - start;
  for (const char* v : {"PGHOST", "PGPORT", "PGCONNECT_TIMEOUT"}) ::unsetenv(v);
  EXPECT_FALSE(st.ok);
  EXPECT_NE(st.message.find(std::to_string(server.port)), std::string::npos) << st.message;
  EXPECT_LT(took, std::chrono::milliseconds(4500)) << "PGCONNECT_TIMEOUT must win over the default";
}

}  // namespace
}  // namespace evpipe::io
