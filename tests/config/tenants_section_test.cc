// [tenants] and the tenant keys of sources (config/tenants_section.cc,
// docs/tenants.md): defaults, bounds, the tokens file, refusals naming the key.

#include <gtest/gtest.h>

#include <fstream>

#include "tests/support/config_error.h"
#include "config/config.h"

namespace evpipe::config {
namespace {

using evpipe::testing::config_error_of;

TEST(TenantsConfig, OffByDefaultAndParsedWithQuotas) {
  auto s = load_string("[[sources.tcp]]\nlisten = \"127.0.0.1:7000\"\n");
  EXPECT_FALSE(s.tenants.enabled);
  EXPECT_EQ(s.tenants.field, "tenant_id");
  s = load_string(R"([tenants]
enabled = true
field = "org"
events_per_s = 100
[tenants.quotas.alpha]
events_per_s = 5
burst = 7
[[sources.tcp]]
listen = "127.0.0.1:7000"
tenant = "alpha"
[[sources.mqtt]]
url = "mqtt://127.0.0.1:1883"
topics = ["tenants/#"]
tenant_topic = "tenants/+/events/#"
allowed_tenants = ["alpha", "beta"]
)");
  EXPECT_TRUE(s.tenants.enabled);
  EXPECT_EQ(s.tenants.field, "org");
  EXPECT_EQ(s.tenants.quota.events_per_s, 100u);
  ASSERT_EQ(s.tenants.quotas.size(), 1u);
  EXPECT_EQ(s.tenants.quotas[0].first, "alpha");
  EXPECT_EQ(s.tenants.quotas[0].second, (tenant_quota{5, 7}));
  EXPECT_EQ(s.tcp_sources.at(0).tenancy.tenant, "alpha");
  EXPECT_EQ(s.mqtt_sources.at(0).tenancy.tenant_topic, "tenants/+/events/#");
  EXPECT_EQ(s.mqtt_sources.at(0).tenancy.allowed_tenants, (std::vector<std::string>{"alpha", "beta"}));
  // check-config prints them, and what it prints loads back the same.
  auto again = load_string(to_toml(s));
  EXPECT_EQ(again.tenants, s.tenants);
  EXPECT_EQ(again.tcp_sources.at(0).tenancy, s.tcp_sources.at(0).tenancy);
  EXPECT_EQ(again.mqtt_sources.at(0).tenancy, s.mqtt_sources.at(0).tenancy);
}

TEST(TenantsConfig, RefusalsNameTheKey) {
  EXPECT_NE(config_error_of("[[sources.tcp]]\nlisten = \"127.0.0.1:7000\"\ntenant = \"a\"\n").find("tenant keys need [tenants] enabled"),
            std::string::npos);
  const std::string on = "[tenants]\nenabled = true\n";
  EXPECT_NE(config_error_of(on + "[[sources.tcp]]\nlisten = \"127.0.0.1:7000\"\ntenant = \"a b\"\n").find("tenant: \"a b\" is not a tenant name"),
            std::string::npos);
  EXPECT_NE(config_error_of(on + "[[sources.tcp]]\nlisten = \"127.0.0.1:7000\"\ntenant_topic = \"a/+\"\n").find("unknown key \"tenant_topic\""),
            std::string::npos);
  EXPECT_NE(config_error_of(on + "[[sources.mqtt]]\nurl = \"mqtt://h:1\"\ntopics = [\"a\"]\ntenant_topic = \"a/b\"\n").find("exactly one '+'"),
            std::string::npos);
  EXPECT_NE(config_error_of(on + "[[sources.http]]\nlisten = \"127.0.0.1:1\"\ntokens_file = \"/nonexistent/t\"\n").find("tokens_file: cannot read"),
            std::string::npos);
  EXPECT_NE(config_error_of("[tenants]\nfield = \"a.b\"\n").find("field: must be one field name"), std::string::npos);
  EXPECT_NE(config_error_of("[tenants]\n[tenants.quotas.alpha]\nrate = 1\n").find("unknown key \"rate\""), std::string::npos);
  EXPECT_NE(config_error_of("[tenants]\nevents_per_s = -1\n").find("events_per_s"), std::string::npos);
}

// tenant_property: MQTT 5 only, alone among the credential keys, printed by
// check-config and loaded back the same.
TEST(TenantsConfig, TenantPropertyIsAnMqtt5SourcesOnlyCredential) {
  const std::string on = "[tenants]\nenabled = true\n";
  const std::string mqtt = "[[sources.mqtt]]\nurl = \"mqtt://127.0.0.1:1883\"\ntopics = [\"t/#\"]\n";
  auto s = load_string(on + mqtt + "protocol = \"5\"\ntenant_property = \"tenant\"\nallowed_tenants = [\"alpha\"]\n");
  EXPECT_EQ(s.mqtt_sources.at(0).tenancy.tenant_property, "tenant");
  EXPECT_TRUE(s.mqtt_sources.at(0).tenancy.any());
  const std::string printed = to_toml(s);
  EXPECT_NE(printed.find("tenant_property = 'tenant'"), std::string::npos) << printed;
  EXPECT_EQ(load_string(printed).mqtt_sources.at(0).tenancy, s.mqtt_sources.at(0).tenancy);

  EXPECT_NE(config_error_of(on + mqtt + "tenant_property = \"tenant\"\n").find("tenant_property: needs protocol = \"5\""),
            std::string::npos)
      << "the default protocol is 3.1.1";
  EXPECT_NE(config_error_of(on + mqtt + "protocol = \"3.1.1\"\ntenant_property = \"tenant\"\n").find("needs protocol = \"5\""),
            std::string::npos);
  EXPECT_NE(config_error_of(on + mqtt + "protocol = \"5\"\ntenant_property = \"tenant\"\ntenant = \"alpha\"\n")
                .find("tenant_property: and tenant exclude each other"),
            std::string::npos);
  EXPECT_NE(config_error_of(on + mqtt + "protocol = \"5\"\ntenant_property = \"tenant\"\ntenant_topic = \"t/+\"\n")
                .find("tenant_property: and tenant_topic exclude each other"),
            std::string::npos);
  EXPECT_NE(config_error_of(mqtt + "protocol = \"5\"\ntenant_property = \"tenant\"\n").find("tenant keys need [tenants] enabled"),
            std::string::npos);
  EXPECT_NE(config_error_of(on + "[[sources.tcp]]\nlisten = \"127.0.0.1:7000\"\ntenant_property = \"tenant\"\n")
                .find("unknown key \"tenant_property\""),
            std::string::npos);
}

TEST(TenantsConfig, TheTokensFileBindsEachTokenToOneTenant) {
  std::string dir = ::testing::TempDir();
  std::ofstream(dir + "/tokens_ok") << "# comment\n\nalpha-token alpha\r\n  beta-token\tbeta  \n";
  auto s = load_string("[tenants]\nenabled = true\n[[sources.http]]\nlisten = \"127.0.0.1:1\"\ntokens_file = \"" + dir +
                       "/tokens_ok\"\n");
  using pairs = std::vector<std::pair<std::string, std::string>>;
  EXPECT_EQ(s.http_sources.at(0).tenancy.tokens, (pairs{{"alpha-token", "alpha"}, {"beta-token", "beta"}}));
  EXPECT_EQ(to_toml(s).find("alpha-token"), std::string::npos) << "tokens are never printed";
  auto with = [&](const std::string& text) {
    std::ofstream(dir + "/tokens_bad", std::ios::trunc) << text;
    return config_error_of("[tenants]\nenabled = true\n[[sources.http]]\nlisten = \"127.0.0.1:1\"\ntokens_file = \"" + dir +
                    "/tokens_bad\"\n");
  };
  EXPECT_NE(with("a alpha\na beta\n").find("line 2: a token given twice"), std::string::npos);
  EXPECT_NE(with("a alpha extra\n").find("line 1: expected \"<token> <tenant>\""), std::string::npos);
  EXPECT_NE(with("lonely\n").find("line 1: expected"), std::string::npos);
  EXPECT_NE(with("a -bad\n").find("is not a tenant name"), std::string::npos);
  EXPECT_NE(with("# nothing\n").find("holds no token"), std::string::npos);
  std::ofstream(dir + "/bearer") << "tok\n";
  EXPECT_NE(config_error_of("[tenants]\nenabled = true\n[[sources.http]]\nlisten = \"127.0.0.1:1\"\ntokens_file = \"" + dir +
                     "/tokens_ok\"\nbearer_token_file = \"" + dir + "/bearer\"\n")
                .find("exclude each other"),
            std::string::npos);
}

TEST(TenantsConfig, TenantNames) {
  EXPECT_TRUE(valid_tenant_name("alpha"));
  EXPECT_TRUE(valid_tenant_name("tenant-123"));
  EXPECT_TRUE(valid_tenant_name("a.b_c:d-e"));
  EXPECT_TRUE(valid_tenant_name(std::string(64, 'x')));
  EXPECT_FALSE(valid_tenant_name(std::string(65, 'x')));
  EXPECT_FALSE(valid_tenant_name(""));
  EXPECT_FALSE(valid_tenant_name("-a"));
  EXPECT_FALSE(valid_tenant_name("a b"));
  EXPECT_FALSE(valid_tenant_name("a/b"));
}

}  // namespace
}  // namespace evpipe::config
