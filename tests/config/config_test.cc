#include "tests/support/config_error.h"
#include "config/config.h"

#include <gtest/gtest.h>

#include <fstream>

namespace evpipe::config {
namespace {

using evpipe::testing::config_error_of;

TEST(Config, DefaultsWhenEmpty) {
  auto s = load_string("");
  EXPECT_EQ(s.batch.max_rows, 16384u);
  EXPECT_EQ(s.batch.max_bytes, 16u << 20);
  EXPECT_EQ(s.pipeline.queue_capacity, 16384u);
  EXPECT_EQ(s.batch.linger_ms, 0u);
  EXPECT_EQ(s.metrics.prefix, "evpipe");
  EXPECT_EQ(s.http.listen, "127.0.0.1:9464");
  EXPECT_GE(s.effective_shards(), 1u);
  EXPECT_TRUE(s.tcp_sources.empty());
}

TEST(Config, ReadsEverySection) {
  auto s = load_string(R"(
[pipeline]
shards = 3
queue_capacity = 1000
[batch]
max_rows = 10
max_bytes = 2048
linger_ms = 7
[dedup]
window_keys = 5
[postgres]
dsn = "host=127.0.0.1 dbname=x"
[http]
listen = "[::1]:9000"
[metrics]
prefix = "taylor"
[[sources.tcp]]
listen = "127.0.0.1:7000"
topic = "a/b"
[[sources.tcp]]
listen = "0.0.0.0:7001"
)");
  EXPECT_EQ(s.effective_shards(), 3u);
  EXPECT_EQ(s.batch.linger_ms, 7u);
  EXPECT_EQ(s.dedup.window_keys, 5u);
  EXPECT_EQ(s.metrics.prefix, "taylor");
  ASSERT_EQ(s.tcp_sources.size(), 2u);
  EXPECT_EQ(s.tcp_sources[0].listen.port, 7000);
  EXPECT_EQ(s.tcp_sources[0].topic, "a/b");
  EXPECT_EQ(s.tcp_sources[1].topic, "evpipe/tcp");
}

TEST(Config, ErrorsNameTheKeyAndTheProblem) {
  EXPECT_EQ(config_error_of("[batch]\nmax_rows = 0"), "test.toml: [batch] max_rows: must be between 1 and 1000000, got 0");
  EXPECT_EQ(config_error_of("[batch]\nmax_rows = \"ten\""), "test.toml: [batch] max_rows: must be an integer");
  // A float, even one past int64's range (config_fuzz found 655e36 converted
  // with undefined behaviour): refused as such, not converted.
  EXPECT_EQ(config_error_of("[batch]\nmax_rows = 100.0"), "test.toml: [batch] max_rows: must be an integer");
  EXPECT_EQ(config_error_of("[[sources.tcp]]\nlisten = \"127.0.0.1:7000\"\nmax_unacked = 655e36"),
            "test.toml: [[sources.tcp]] #1 max_unacked: must be an integer");
  EXPECT_EQ(config_error_of("[batch]\nmax_rowz = 1"), "test.toml: [batch]: unknown key \"max_rowz\"");
  EXPECT_EQ(config_error_of("[bach]\nmax_rows = 1"), "test.toml: unknown section or key \"bach\"");
  EXPECT_EQ(config_error_of("[[sources.tcp]]\ntopic = \"x\""), "test.toml: [[sources.tcp]] #1 listen: is required (\"host:port\")");
  EXPECT_NE(config_error_of("[[sources.tcp]]\nlisten = \"nohost\"").find("expected \"host:port\""), std::string::npos);
  EXPECT_NE(config_error_of("[[sources.tcp]]\nlisten = \"h:99999\"").find("port must be a number"), std::string::npos);
  // Found by config_fuzz: a host that is neither a name nor an address.
  EXPECT_NE(config_error_of("[[sources.tcp]]\nlisten = \"]1]:7::000\"").find("not a host name or IP address"), std::string::npos);
  EXPECT_NE(config_error_of("[[sources.tcp]]\nlisten = \"::1:7000\"").find("IPv6 goes in brackets"), std::string::npos);
  EXPECT_EQ(config_error_of("[[sources.tcp]]\nlisten = \"[fe80::1%eth0]:7000\""), "");
  // `run` cannot listen on a name, so the check refuses it (issue 18).
  EXPECT_NE(config_error_of("[[sources.tcp]]\nlisten = \"localhost:7000\"").find("not an IP address"), std::string::npos);
  EXPECT_NE(config_error_of("[[sources.kafka]]\nx = 1").find("unknown source type \"kafka\""), std::string::npos);
  EXPECT_NE(config_error_of("[metrics]\nprefix = \"bad-name\"").find("Prometheus metric name"), std::string::npos);
  EXPECT_NE(config_error_of("[postgres]\nretry_base_ms = 500\nretry_max_ms = 100").find("retry_max_ms"), std::string::npos);
  // A TOML syntax error carries the line and column.
  EXPECT_NE(config_error_of("[batch\n").find("test.toml:1:"), std::string::npos);
}

TEST(Config, MasksPasswords) {
  EXPECT_EQ(mask_dsn("postgresql://u:secret@h:5432/db"), "postgresql://u:****@h:5432/db");
  EXPECT_EQ(mask_dsn("host=h password=secret dbname=d"), "host=h password=**** dbname=d");
  EXPECT_EQ(mask_dsn("host=h dbname=d"), "host=h dbname=d");
  EXPECT_EQ(mask_dsn("postgresql://h/db?user=u&password=secret"), "postgresql://h/db?user=u&password=****");
  EXPECT_EQ(mask_dsn("postgresql://h/db?password=secret&sslmode=require"),
            "postgresql://h/db?password=****&sslmode=require");
  auto s = load_string("[postgres]\ndsn = \"postgresql://u:hunter2@h/db\"");
  EXPECT_EQ(to_toml(s).find("hunter2"), std::string::npos);
}

// Values of any length are checked without recursion: libstdc++'s
// std::regex recursed once a character, and a 4 KB listen host (found by the
// config fuzzer) overflowed the stack instead of giving an error. Each of
// these values is 200,000 characters, checked by every pattern the config
// uses; a valid long key=value password is masked whole.
TEST(Config, ValuesOfAnyLengthAreCheckedWithoutOverflowingTheStack) {
  const std::string long_name(200'000, 'a');
  EXPECT_NE(config_error_of("[[sources.tcp]]\nlisten = \"" + long_name + "-:7000\"").find("not a host name or IP address"),
            std::string::npos);
  EXPECT_NE(config_error_of("[[sources.tcp]]\nlisten = \"[" + std::string(200'000, ':') + "x]:7000\"")
                .find("not a host name or IP address"),
            std::string::npos);
  EXPECT_NE(config_error_of("[metrics]\nprefix = \"" + long_name + "-\"").find("Prometheus metric name"),
            std::string::npos);
  EXPECT_NE(config_error_of("[postgres]\nschema = \"" + long_name + "\"").find("lowercase identifier"),
            std::string::npos);
  EXPECT_NE(config_error_of("[schemas]\nversion_path = \"" + long_name + "..x\"").find("keys joined by dots"),
            std::string::npos);
  EXPECT_NE(config_error_of("[postgres]\ndsn = \"${" + long_name + "-}\"").find("not a valid variable reference"),
            std::string::npos);
  EXPECT_EQ(mask_dsn("host=h password=" + long_name + " dbname=d"), "host=h password=**** dbname=d");
  EXPECT_EQ(mask_dsn("host=h password='" + long_name + " x' dbname=d"), "host=h password=**** dbname=d");
  EXPECT_EQ(mask_dsn("postgresql://u:" + long_name + "@h/db"), "postgresql://u:****@h/db");
  EXPECT_EQ(mask_dsn("postgresql://h/db?password=" + long_name + "&sslmode=require"),
            "postgresql://h/db?password=****&sslmode=require");
}

// A password is masked whatever its bytes (one from ${ENV} need not be
// UTF-8), and white space is libpq's, vertical tab included.
TEST(Config, PasswordsOfAnyBytesAreMasked) {
  EXPECT_EQ(mask_dsn("postgresql://u:p\xe9ss@h/db"), "postgresql://u:****@h/db");
  EXPECT_EQ(mask_dsn("host=h password=ab\xe9" "cd dbname=d"), "host=h password=**** dbname=d");
  EXPECT_EQ(mask_dsn("postgresql://h/db?password=\xff\xfe&sslmode=require"), "postgresql://h/db?password=****&sslmode=require");
  EXPECT_EQ(mask_dsn("host=h\vpassword=secret\vdbname=d"), "host=h\vpassword=****\vdbname=d");
}

TEST(Config, EffectiveConfigRoundTrips) {
  auto s = load_string("[batch]\nmax_rows = 77\n[[sources.tcp]]\nlisten = \"127.0.0.1:7000\"\n");
  auto again = load_string(to_toml(s));
  EXPECT_EQ(again.batch.max_rows, 77u);
  ASSERT_EQ(again.tcp_sources.size(), 1u);
  EXPECT_EQ(again.tcp_sources[0].listen.str(), "127.0.0.1:7000");
}

TEST(Config, RouteByKeyOrConnectionOnTcpAndHttpSources) {
  auto s = load_string(
      "[[sources.tcp]]\nlisten = \"127.0.0.1:7000\"\n"
      "[[sources.tcp]]\nlisten = \"127.0.0.1:7001\"\nroute_by = \"connection\"\n"
      "[[sources.http]]\nlisten = \"127.0.0.1:7002\"\nroute_by = \"connection\"\n");
  EXPECT_EQ(s.tcp_sources[0].route_by, "key");
  EXPECT_EQ(s.tcp_sources[1].route_by, "connection");
  EXPECT_EQ(s.http_sources[0].route_by, "connection");
  auto again = load_string(to_toml(s));
  EXPECT_EQ(again.tcp_sources[1].route_by, "connection");
  EXPECT_EQ(again.http_sources[0].route_by, "connection");
  EXPECT_EQ(config_error_of("[[sources.tcp]]\nlisten = \"127.0.0.1:7000\"\nroute_by = \"topic\""),
            "test.toml: [[sources.tcp]] #1 route_by: must be \"key\" or \"connection\"");
  // MQTT acks each message by itself: nothing waits on another shard there.
  EXPECT_NE(config_error_of("[[sources.mqtt]]\nurl = \"mqtt://127.0.0.1:1883\"\ntopics = [\"a\"]\nroute_by = \"connection\"")
                .find("unknown key \"route_by\""),
            std::string::npos);
}

TEST(Config, SelectiveAcksOnTcpSourcesAreOnUnlessTurnedOff) {
  auto s = load_string(
      "[[sources.tcp]]\nlisten = \"127.0.0.1:7000\"\n"
      "[[sources.tcp]]\nlisten = \"127.0.0.1:7001\"\nselective_acks = false\n");
  EXPECT_TRUE(s.tcp_sources[0].selective_acks);
  EXPECT_FALSE(s.tcp_sources[1].selective_acks);
  auto again = load_string(to_toml(s));
  EXPECT_TRUE(again.tcp_sources[0].selective_acks);
  EXPECT_FALSE(again.tcp_sources[1].selective_acks);
  EXPECT_EQ(config_error_of("[[sources.tcp]]\nlisten = \"127.0.0.1:7000\"\nselective_acks = \"yes\""),
            "test.toml: [[sources.tcp]] #1 selective_acks: must be true or false");
}

TEST(Config, EffectiveConfigWithoutSourcesRoundTrips) {
  // Found by config_fuzz: check-config's output must load again.
  auto s = load_string("");
  EXPECT_NO_THROW((void)load_string(to_toml(s)));
  EXPECT_TRUE(load_string("[sources]\ntcp = []\n").tcp_sources.empty());
}

TEST(Config, ReadsMqttSources) {
  std::string pw = ::testing::TempDir() + "/mqtt_password";
  std::ofstream(pw) << "s3cret-pw\n";
  auto s = load_string(R"([[sources.mqtt]]
url = "mqtt://broker.local:1884"
client_id = "ingest-1"
username = "evpipe"
password_file = ")" + pw + R"("
topics = ["tracker/events/#", "autocore/+/telemetry"]
connections = 3
shared_group = "ingest"
max_inflight = 100
base_ms = 10
max_ms = 2000
jitter_pct = 50
dlq_publish = true
[[sources.mqtt]]
url = "mqtt://127.0.0.1"
topics = ["a/b"]
)");
  ASSERT_EQ(s.mqtt_sources.size(), 2u);
  const auto& m = s.mqtt_sources[0];
  EXPECT_EQ(m.broker.host, "broker.local");
  EXPECT_EQ(m.broker.port, 1884);
  EXPECT_FALSE(m.tls);
  EXPECT_EQ(m.password, "s3cret-pw");
  EXPECT_EQ(m.topics.size(), 2u);
  EXPECT_EQ(m.connections, 3u);
  EXPECT_EQ(m.qos, 1u);
  EXPECT_TRUE(m.dlq_publish);
  EXPECT_EQ(s.mqtt_sources[1].broker.port, 1883) << "the MQTT port by default";
  EXPECT_EQ(s.mqtt_sources[1].client_id, default_mqtt_client_id());
  EXPECT_EQ(s.mqtt_sources[1].client_id.rfind("evpipe-", 0), 0u) << "the default names the host";
  EXPECT_GT(s.mqtt_sources[1].client_id.size(), 7u);

  // The effective configuration names the password file, never the password.
  std::string out = to_toml(s);
  EXPECT_EQ(out.find("s3cret-pw"), std::string::npos);
  EXPECT_NE(out.find(pw), std::string::npos);
  auto again = load_string(out);
  EXPECT_EQ(again.mqtt_sources[0].password, "s3cret-pw");
  EXPECT_EQ(again.mqtt_sources[0].topics, m.topics);
}

TEST(Config, MqttProtocolAndSessionExpiry) {
  auto s = load_string("[[sources.mqtt]]\nurl = \"mqtt://h:1\"\ntopics = [\"a\"]\n");
  EXPECT_EQ(s.mqtt_sources[0].protocol, "3.1.1") << "3.1.1 by default";
  s = load_string("[[sources.mqtt]]\nurl = \"mqtt://h:1\"\ntopics = [\"a\"]\nprotocol = \"5\"\nsession_expiry_s = 3600\n");
  EXPECT_EQ(s.mqtt_sources[0].protocol, "5");
  EXPECT_EQ(s.mqtt_sources[0].session_expiry_s, 3600u);
  auto again = load_string(to_toml(s));
  EXPECT_EQ(again.mqtt_sources[0].protocol, "5");
  EXPECT_EQ(again.mqtt_sources[0].session_expiry_s, 3600u);
  EXPECT_NE(config_error_of("[[sources.mqtt]]\nurl = \"mqtt://h:1\"\ntopics = [\"a\"]\nprotocol = \"3.1\"").find("protocol: must be"),
            std::string::npos);
  EXPECT_NE(config_error_of("[[sources.mqtt]]\nurl = \"mqtt://h:1\"\ntopics = [\"a\"]\nsession_expiry_s = 60").find("needs protocol"),
            std::string::npos);
  EXPECT_NE(config_error_of("[[sources.mqtt]]\nurl = \"mqtt://h:1\"\ntopics = [\"a\"]\nprotocol = \"5\"\nsession_expiry_s = 0")
                .find("session_expiry_s: 0 ends the session"),
            std::string::npos);
}

TEST(Config, MqttErrorsNameTheKey) {
  EXPECT_NE(config_error_of("[[sources.mqtt]]\ntopics = [\"a\"]").find("url: is required"), std::string::npos);
  EXPECT_NE(config_error_of("[[sources.mqtt]]\nurl = \"tcp://h:1\"\ntopics = [\"a\"]").find("must start with mqtt://"),
            std::string::npos);
  EXPECT_NE(config_error_of("[[sources.mqtt]]\nurl = \"mqtt://h:1\"").find("topics: is required"), std::string::npos);
  EXPECT_NE(config_error_of("[[sources.mqtt]]\nurl = \"mqtt://h:1\"\ntopics = [\"a/#/b\"]").find("not a valid MQTT topic filter"),
            std::string::npos);
  EXPECT_NE(config_error_of("[[sources.mqtt]]\nurl = \"mqtt://h:1\"\ntopics = [\"a\"]\nconnections = 2")
                .find("needs shared_group"),
            std::string::npos);
  EXPECT_NE(config_error_of("[[sources.mqtt]]\nurl = \"mqtt://h:1\"\ntopics = [\"a\"]\nqos = 3").find("qos: must be between 0 and 2"),
            std::string::npos);
  EXPECT_NE(config_error_of("[[sources.mqtt]]\nurl = \"mqtt://h:1\"\ntopics = [\"a\"]\nusername = \"u\"\npassword_file = \"/nonexistent/pw\"")
                .find("password_file: cannot read"),
            std::string::npos);
  EXPECT_NE(config_error_of("[[sources.mqtt]]\nurl = \"mqtt://h:1\"\ntopics = [\"a\"]\nca_file = \"x\"").find("need an mqtts:// url"),
            std::string::npos);
  EXPECT_NE(config_error_of("[[sources.mqtt]]\nurl = \"mqtt://h:1\"\ntopics = [\"a\"]\ncolour = 1").find("unknown key \"colour\""),
            std::string::npos);
}

TEST(Config, ReadsHttpSources) {
  std::string tok = ::testing::TempDir() + "/http_token";
  std::ofstream(tok) << "tok-123\n";
  auto s = load_string(R"([[sources.http]]
listen = "127.0.0.1:8080"
topic = "tracker/events/http"
max_body_bytes = 1024
bearer_token_file = ")" + tok + R"("
)");
  ASSERT_EQ(s.http_sources.size(), 1u);
  EXPECT_EQ(s.http_sources[0].listen.port, 8080);
  EXPECT_EQ(s.http_sources[0].max_body_bytes, 1024u);
  EXPECT_EQ(s.http_sources[0].bearer_token, "tok-123");
  EXPECT_EQ(to_toml(s).find("tok-123"), std::string::npos);
  EXPECT_NE(config_error_of("[[sources.http]]\ntopic = \"x\"").find("listen: is required"), std::string::npos);
  EXPECT_NE(config_error_of("[[sources.http]]\nlisten = \"127.0.0.1:1\"\nmax_body_bytes = 1").find("max_body_bytes: must be between"),
            std::string::npos);
}

TEST(Config, ReadsHttpCorsOrigins) {
  auto s = load_string(R"([[sources.http]]
listen = "127.0.0.1:8080"
cors_allow_origins = ["https://dash.example", "http://127.0.0.1:5173"]
)");
  ASSERT_EQ(s.http_sources.size(), 1u);
  EXPECT_EQ(s.http_sources[0].cors_allow_origins,
            (std::vector<std::string>{"https://dash.example", "http://127.0.0.1:5173"}));
  EXPECT_EQ(load_string(to_toml(s)).http_sources[0].cors_allow_origins, s.http_sources[0].cors_allow_origins);
  EXPECT_TRUE(load_string("[[sources.http]]\nlisten = \"127.0.0.1:1\"\n").http_sources[0].cors_allow_origins.empty());
  EXPECT_EQ(load_string("[[sources.http]]\nlisten = \"127.0.0.1:1\"\ncors_allow_origins = [\"*\"]")
                .http_sources[0].cors_allow_origins.size(), 1u);
  for (const char* bad : {"dash.example", "https://dash.example/", "https://dash.example/app", "https://", "ftp://x"}) {
    EXPECT_NE(config_error_of(std::string("[[sources.http]]\nlisten = \"127.0.0.1:1\"\ncors_allow_origins = [\"") + bad + "\"]")
                  .find("cors_allow_origins: \"" + std::string(bad) + "\" is not an origin"),
              std::string::npos) << bad;
  }
}

TEST(Config, ShippedDefaultFileLoads) {
  auto s = load_file(std::string(EVPIPE_SOURCE_DIR) + "/config/evpipe.toml");
  EXPECT_EQ(s.batch.max_rows, settings{}.batch.max_rows);
  EXPECT_EQ(s.batch.linger_ms, settings{}.batch.linger_ms);
  EXPECT_EQ(s.dedup.window_keys, settings{}.dedup.window_keys);
  EXPECT_EQ(s.pipeline.queue_capacity, settings{}.pipeline.queue_capacity);
  EXPECT_EQ(s.tcp_sources.size(), 1u);
}

// [route_keys]: how long evpipe_route_keys rows are kept (docs/routes.md).
TEST(Config, RouteKeysRetention) {
  auto d = load_string("");
  EXPECT_EQ(d.route_keys.retention_s, 604'800u) << "7 days by default";
  EXPECT_EQ(d.route_keys.prune_batch, 1000u);
  EXPECT_EQ(d.route_keys.prune_interval_ms, 60'000u);
  auto s = load_string("[route_keys]\nretention_s = 0\nprune_batch = 50\nprune_interval_ms = 10\n");
  EXPECT_EQ(s.route_keys.retention_s, 0u) << "0: never pruned";
  EXPECT_EQ(s.route_keys.prune_batch, 50u);
  EXPECT_EQ(load_string(to_toml(s)).route_keys.prune_batch, 50u) << "check-config shows it";
  EXPECT_EQ(config_error_of("[route_keys]\nprune_batch = 0"),
            "test.toml: [route_keys] prune_batch: must be between 1 and 100000, got 0");
  EXPECT_EQ(config_error_of("[route_keys]\nretention = 5"), "test.toml: [route_keys]: unknown key \"retention\"");
  EXPECT_EQ(load_file(std::string(EVPIPE_SOURCE_DIR) + "/config/evpipe.toml").route_keys.retention_s,
            d.route_keys.retention_s);
}

// [pipeline] slow_batch_ms (docs/operations.md, "Hiccups"): 50 ms by
// default, 0 turns the traces off, bounded by a minute.
TEST(Config, SlowBatchThreshold) {
  EXPECT_EQ(load_string("").pipeline.slow_batch_ms, 50u);
  auto s = load_string("[pipeline]\nslow_batch_ms = 0\n");
  EXPECT_EQ(s.pipeline.slow_batch_ms, 0u) << "0: off";
  EXPECT_EQ(load_string(to_toml(s)).pipeline.slow_batch_ms, 0u) << "check-config shows it";
  EXPECT_EQ(load_string("[pipeline]\nslow_batch_ms = 60000\n").pipeline.slow_batch_ms, 60'000u);
  EXPECT_EQ(config_error_of("[pipeline]\nslow_batch_ms = 60001"),
            "test.toml: [pipeline] slow_batch_ms: must be between 0 and 60000, got 60001");
  EXPECT_EQ(load_file(std::string(EVPIPE_SOURCE_DIR) + "/config/evpipe.toml").pipeline.slow_batch_ms, 50u);
}

TEST(Config, EmptyDsnLeavesConnectionSettingsToLibpq) {
  EXPECT_EQ(settings{}.postgres.dsn, "") << "no host or database the user did not ask for";
  EXPECT_EQ(load_string("[postgres]\ndsn = \"\"\n").postgres.dsn, "");
  EXPECT_EQ(load_file(std::string(EVPIPE_SOURCE_DIR) + "/config/evpipe.toml").postgres.dsn, "");
}

TEST(Config, SchemaIsALowercaseIdentifier) {
  EXPECT_EQ(settings{}.postgres.schema, "");
  EXPECT_EQ(load_string("[postgres]\nschema = \"ingest_2\"\n").postgres.schema, "ingest_2");
  for (const char* bad : {"Ingest", "in gest", "a;b", "1x", "x.y"}) {
    EXPECT_NE(config_error_of(std::string("[postgres]\nschema = \"") + bad + "\"\n").find("schema"), std::string::npos) << bad;
  }
}

TEST(Config, MissingFileIsOneClearError) {
  try {
    (void)load_file("/nonexistent/evpipe.toml");
    FAIL();
  } catch (const config_error& e) {
    EXPECT_NE(std::string(e.what()).find("/nonexistent/evpipe.toml"), std::string::npos);
  }
}

// ${NAME} and ${NAME:-default} come from the environment, $$ is a literal $,
// and an unset variable without a default names the key and the variable.
TEST(Config, ExpandsEnvironmentVariablesInStrings) {
  ::setenv("EVPIPE_TEST_PGPW", "s3cret", 1);
  ::setenv("EVPIPE_TEST_TOPIC", "tracker/events/env", 1);
  ::unsetenv("EVPIPE_TEST_UNSET");
  auto s = load_string(R"([postgres]
dsn = "postgresql://evpipe:${EVPIPE_TEST_PGPW}@127.0.0.1/${EVPIPE_TEST_UNSET:-evpipe}"
[log]
level = "${EVPIPE_TEST_UNSET:-warn}"
[[sources.tcp]]
listen = "127.0.0.1:7000"
topic = "${EVPIPE_TEST_TOPIC}"
[[sources.mqtt]]
url = "mqtt://127.0.0.1:1883"
topics = ["${EVPIPE_TEST_TOPIC}/#"]
client_id = "pay$$roll"
)");
  EXPECT_EQ(s.postgres.dsn, "postgresql://evpipe:s3cret@127.0.0.1/evpipe");
  EXPECT_EQ(s.log.level, "warn");
  EXPECT_EQ(s.tcp_sources.at(0).topic, "tracker/events/env");
  EXPECT_EQ(s.mqtt_sources.at(0).topics.at(0), "tracker/events/env/#");
  EXPECT_EQ(s.mqtt_sources.at(0).client_id, "pay$roll");
  EXPECT_EQ(to_toml(s).find("s3cret"), std::string::npos) << "the expanded password is still masked";
  std::string err = config_error_of("[postgres]\ndsn = \"postgresql://u:${EVPIPE_TEST_UNSET}@h/db\"");
  EXPECT_NE(err.find("[postgres] dsn: environment variable EVPIPE_TEST_UNSET is not set"), std::string::npos) << err;
  EXPECT_NE(config_error_of("[postgres]\ndsn = \"${EVPIPE_TEST_PGPW\"").find("without a closing"), std::string::npos);
  EXPECT_NE(config_error_of("[postgres]\ndsn = \"${1BAD}\"").find("not a valid variable reference"), std::string::npos);
  // check-config's output loads again to the same values (found by config_fuzz).
  auto round = load_string(to_toml(s), "round-trip");
  EXPECT_EQ(round.mqtt_sources.at(0).client_id, "pay$roll");
  EXPECT_EQ(load_string(to_toml(load_string("[metrics]\nprefix = \"p\"\n[log]\nlevel = \"info\"\n[postgres]\ndsn = \"a$${x}\"")),
                        "rt").postgres.dsn, "a${x}");
  // A lone $ is left alone (passwords often hold one).
  EXPECT_EQ(load_string("[postgres]\ndsn = \"password=a$b\"").postgres.dsn, "password=a$b");
}

// Files named in the config are found next to it, whatever the working
// directory of the service.
TEST(Config, RelativeFilesResolveAgainstTheConfigFolder) {
  std::string dir = ::testing::TempDir() + "/evpipe_relative_cfg";
  ASSERT_EQ(std::system(("mkdir -p '" + dir + "/secrets'").c_str()), 0);
  std::ofstream(dir + "/secrets/token") << "tok-rel\n";
  std::ofstream(dir + "/secrets/mqtt_pw") << "pw-rel\n";
  std::ofstream(dir + "/evpipe.toml") << R"([[sources.http]]
listen = "127.0.0.1:8080"
bearer_token_file = "secrets/token"
[[sources.mqtt]]
url = "mqtts://127.0.0.1:8883"
topics = ["a/#"]
username = "u"
password_file = "secrets/mqtt_pw"
ca_file = "secrets/ca.pem"
)";
  ASSERT_EQ(::chdir("/"), 0);
  auto s = load_file(dir + "/evpipe.toml");
  EXPECT_EQ(s.http_sources.at(0).bearer_token, "tok-rel");
  EXPECT_EQ(s.mqtt_sources.at(0).password, "pw-rel");
  EXPECT_EQ(s.mqtt_sources.at(0).ca_file, dir + "/secrets/ca.pem");
  // check-config and run both report the missing CA file.
  auto problems = problems_for_run(s);
  ASSERT_EQ(problems.size(), 1u);
  EXPECT_NE(problems[0].find("ca_file: cannot read \"" + dir + "/secrets/ca.pem\""), std::string::npos) << problems[0];
}

// A listener takes an IP address; a host name is refused by the check with the
// key's name, not by `run` later.
TEST(Config, ListenAddressesMustBeIpAddresses) {
  std::string err = config_error_of("[[sources.tcp]]\nlisten = \"localhost:7000\"");
  EXPECT_NE(err.find("[[sources.tcp]] #1 listen: \"localhost\" is not an IP address"), std::string::npos) << err;
  EXPECT_NE(config_error_of("[http]\nlisten = \"localhost:9464\"").find("[http] listen: \"localhost\" is not an IP address"),
            std::string::npos);
  EXPECT_NE(config_error_of("[[sources.http]]\nlisten = \"example.org:80\"").find("is not an IP address"), std::string::npos);
  EXPECT_EQ(config_error_of("[[sources.tcp]]\nlisten = \"[::1]:7000\"\n[http]\nlisten = \"0.0.0.0:9464\""), "");
  // A broker, unlike a listener, may be a name.
  EXPECT_EQ(config_error_of("[[sources.mqtt]]\nurl = \"mqtt://localhost:1883\"\ntopics = [\"a\"]"), "");
}

TEST(Config, NoSourceIsAProblemForRun) {
  auto problems = problems_for_run(load_string(""));
  ASSERT_EQ(problems.size(), 1u);
  EXPECT_NE(problems[0].find("no sources configured"), std::string::npos);
  EXPECT_TRUE(problems_for_run(load_string("[[sources.tcp]]\nlisten = \"127.0.0.1:7000\"")).empty());
}

}  // namespace
}  // namespace evpipe::config
