#pragma once
// What the tenant integration tests share (docs/tenants.md): events with and
// without a tenant claim, an HTTP POST with a bearer token, and a fixture
// with a scratch folder and a daemon config with [tenants] enabled.

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <string>
#include <vector>

#include "tests/support/harness.h"
#include "tests/support/http_request.h"
#include "tests/support/test_events.h"

namespace evpipe::testing {

// An event whose payload carries `payload_extra` and whose envelope carries `top_extra`.
inline std::string event(const std::string& key, const std::string& top_extra = "", const std::string& payload_extra = "") {
  return "{\"trace_id\":\"" + uuid_for(static_cast<uint32_t>(std::hash<std::string>{}(key))) +
         "\",\"ts\":\"2025-01-15T10:30:00Z\",\"kind\":\"project_created\",\"idempotency_key\":\"" + key + "\"" +
         top_extra + ",\"payload\":{\"n\":1" + payload_extra + "}}";
}
inline std::string claim(const std::string& tenant) { return ",\"tenant_id\":\"" + tenant + "\""; }

// A POST of NDJSON to /v1/events, with a bearer token unless `token` is empty.
inline http_reply post(uint16_t port, const std::string& body, const std::string& token) {
  return http_request(port, "POST", "/v1/events", body,
                      "Content-Type: application/x-ndjson\r\n" +
                          (token.empty() ? std::string() : "Authorization: Bearer " + token + "\r\n"));
}

class Tenants : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!db.available()) {
      if (!env_or("EVPIPE_REQUIRE_DB").empty()) FAIL() << "EVPIPE_TEST_DSN is not set";
      GTEST_SKIP() << "EVPIPE_TEST_DSN not set (scripts/test.sh sets it)";
    }
    dir = std::filesystem::path(env_or("TMPDIR", "/tmp")) / ("evpipe_it_" + std::to_string(::getpid()) + "_tenants_" +
                                                ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::remove_all(dir);
    std::filesystem::create_directories(dir);
  }
  void TearDown() override { std::filesystem::remove_all(dir); }
  std::string config(uint16_t metrics, const std::string& rest) {
    return "[pipeline]\nshards = 2\n[postgres]\ndsn = \"" + db.dsn() + "\"\n[http]\nlisten = \"127.0.0.1:" +
           std::to_string(metrics) + "\"\n[tenants]\nenabled = true\n" + rest;
  }
  static std::string tcp(uint16_t port, const std::string& extra) {
    return "[[sources.tcp]]\nlisten = \"127.0.0.1:" + std::to_string(port) + "\"\n" + extra;
  }
  // "tenant|key" of every events_mirror row, in order.
  std::vector<std::string> rows() {
    return db.column("SELECT tenant_id || '|' || idempotency_key FROM events_mirror ORDER BY 1");
  }
  test_db db;
  std::filesystem::path dir;
};

}  // namespace evpipe::testing
