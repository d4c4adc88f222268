// Tenant resolution (stages/tenant/binding.cc, docs/tenants.md): each way of
// finding the tenant, and every cross-tenant claim refused.

#include "stages/tenant/binding.h"

#include <gtest/gtest.h>
#include <simdjson.h>

#include "stages/tenant/quota.h"

namespace evpipe::stages::tenant {
namespace {

struct parsed {
  simdjson::dom::parser parser;
  simdjson::dom::element doc;
  explicit parsed(const std::string& json) { doc = parser.parse(json); }
};

resolution run(const binding& b, const std::string& json, std::string_view credential = {},
               std::string_view topic = "t") {
  parsed p(json);
  auto r = resolve(b, credential, topic, &p.doc);
  static thread_local std::string kept;
  kept.assign(r.tenant);  // the view points into the document, which dies here
  r.tenant = kept;
  return r;
}

config::source_tenancy with(std::string fixed = {}, std::vector<std::string> allowed = {}, std::string topic = {}) {
  config::source_tenancy t;
  t.tenant = std::move(fixed);
  t.allowed_tenants = std::move(allowed);
  t.tenant_topic = std::move(topic);
  return t;
}

TEST(TenantResolve, TheClaimAtTheTopLevelOrInThePayloadIsTheTenantWithoutCredentials) {
  binding b(with(), "tenant_id");
  EXPECT_EQ(run(b, R"({"tenant_id":"alpha","payload":{}})").tenant, "alpha");
  EXPECT_EQ(run(b, R"({"payload":{"tenant_id":"beta"}})").tenant, "beta");
  EXPECT_EQ(run(b, R"({"tenant_id":"alpha","payload":{"tenant_id":"beta"}})").tenant, "alpha");
  EXPECT_EQ(run(b, R"({"payload":{}})").tenant, "");
  binding org(with(), "org");
  EXPECT_EQ(run(org, R"({"org":"acme","tenant_id":"x"})").tenant, "acme");
}

TEST(TenantResolve, AFixedTenantWinsAndAnotherClaimIsAMismatch) {
  binding b(with("alpha"), "tenant_id");
  auto same = run(b, R"({"tenant_id":"alpha"})");
  EXPECT_TRUE(same.ok());
  EXPECT_EQ(same.tenant, "alpha");
  EXPECT_EQ(run(b, R"({})").tenant, "alpha");
  auto other = run(b, R"({"payload":{"tenant_id":"beta"}})");
  EXPECT_EQ(other.why, reason::tenant_mismatch);
  EXPECT_EQ(other.tenant, "alpha") << "dead-lettered as the sender's, never the claimed tenant's";
  EXPECT_NE(other.message.find("\"beta\""), std::string::npos) << other.message;
}

TEST(TenantResolve, ATokensTenantIsTheCredentialAndAnotherClaimIsAMismatch) {
  binding b(with(), "tenant_id");
  EXPECT_EQ(run(b, R"({"tenant_id":"beta"})", "beta").tenant, "beta");
  EXPECT_EQ(run(b, R"({})", "beta").tenant, "beta");
  auto r = run(b, R"({"tenant_id":"alpha"})", "beta");
  EXPECT_EQ(r.why, reason::tenant_mismatch);
  EXPECT_EQ(r.tenant, "beta");
}

TEST(TenantResolve, AnMqttTopicLevelIsTheCredentialWhenTheTopicMatches) {
  binding b(with({}, {}, "tenants/+/events/#"), "tenant_id");
  EXPECT_EQ(b.tenant_of_topic("tenants/alpha/events/x/y"), "alpha");
  EXPECT_EQ(b.tenant_of_topic("tenants/alpha/events"), "alpha");
  EXPECT_EQ(b.tenant_of_topic("other/alpha/events/x"), "");
  EXPECT_EQ(run(b, R"({})", {}, "tenants/alpha/events/a").tenant, "alpha");
  EXPECT_EQ(run(b, R"({"tenant_id":"beta"})", {}, "tenants/alpha/events/a").why, reason::tenant_mismatch);
  EXPECT_EQ(run(b, R"({"tenant_id":"beta"})", {}, "elsewhere/a").tenant, "beta");
}

// tenant_property (MQTT 5): the link passes the property's value as the
// credential; a value that is no tenant name is never anyone's tenant.
TEST(TenantResolve, AUserPropertysValueIsTheCredentialWhenItIsATenantName) {
  config::source_tenancy t;
  t.tenant_property = "tenant";
  binding b(t, "tenant_id");
  EXPECT_EQ(b.property(), "tenant");
  EXPECT_EQ(run(b, R"({})", "alpha").tenant, "alpha");
  EXPECT_EQ(run(b, R"({"tenant_id":"beta"})", "alpha").why, reason::tenant_mismatch);
  EXPECT_EQ(run(b, R"({"tenant_id":"beta"})").tenant, "beta") << "no property: the claim decides";
  for (std::string bad : {std::string("a b"), std::string("-a"), std::string(65, 'x')}) {
    auto r = run(b, R"({"tenant_id":"alpha"})", bad);
    EXPECT_EQ(r.why, reason::invalid_tenant) << bad;
    EXPECT_EQ(r.tenant, "") << bad;
    EXPECT_NE(r.message.find("user property \"tenant\""), std::string::npos) << r.message;
  }
}

TEST(TenantResolve, AllowedTenantsRefuseTheOthersWithoutAttributingThem) {
  binding b(with({}, {"alpha", "beta"}), "tenant_id");
  EXPECT_TRUE(run(b, R"({"tenant_id":"beta"})").ok());
  auto r = run(b, R"({"tenant_id":"gamma"})");
  EXPECT_EQ(r.why, reason::tenant_mismatch);
  EXPECT_EQ(r.tenant, "");
  EXPECT_EQ(run(b, R"({})").why, reason::tenant_mismatch);
}

TEST(TenantResolve, AClaimThatIsNoTenantNameIsInvalid) {
  binding b(with(), "tenant_id");
  EXPECT_EQ(run(b, R"({"tenant_id":7})").why, reason::invalid_tenant);
  EXPECT_EQ(run(b, R"({"tenant_id":""})").why, reason::invalid_tenant);
  EXPECT_EQ(run(b, R"({"tenant_id":"a b"})").why, reason::invalid_tenant);
  EXPECT_EQ(run(b, std::string(R"({"tenant_id":")") + std::string(65, 'a') + "\"}").why, reason::invalid_tenant);
  EXPECT_TRUE(run(b, std::string(R"({"tenant_id":")") + std::string(64, 'a') + "\"}").ok());
}

TEST(TenantResolve, WithoutADocumentOnlyTheCredentialsCount) {
  binding b(with("alpha"), "tenant_id");
  auto r = resolve(b, {}, "t", nullptr);
  EXPECT_TRUE(r.ok());
  EXPECT_EQ(r.tenant, "alpha");
}

TEST(TenantQuota, ABurstPassesThenTheTenantIsOverByTheRatesInterval) {
  config::tenants_section cfg;
  cfg.enabled = true;
  cfg.quota = {100, 10};  // 100/s: 10 ms an event; 10 at once
  cfg.quotas.push_back({"vip", {1000, 0}});
  quota_book book(cfg);
  auto* a = book.find("alpha");
  ASSERT_NE(a, nullptr);
  EXPECT_EQ(book.find("alpha"), a) << "one bucket per tenant";
  const int64_t t0 = 1'000'000'000;
  for (int i = 0; i < 10; ++i) EXPECT_EQ(quota_book::charge(*a, 1, t0), 0) << i;
  EXPECT_EQ(quota_book::charge(*a, 1, t0), 10'000'000);  // the 11th: one interval over
  EXPECT_EQ(quota_book::over_ns(*a, t0), 10'000'000);
  EXPECT_EQ(quota_book::over_ns(*a, t0 + 10'000'000), 0);
  // Another tenant is untouched.
  auto* b = book.find("beta");
  ASSERT_NE(b, a);
  EXPECT_EQ(quota_book::charge(*b, 1, t0), 0);
  auto* vip = book.find("vip");
  ASSERT_NE(vip, nullptr);
  EXPECT_EQ(vip->interval_ns, 1'000'000);
  EXPECT_EQ(vip->burst_ns, 1000 * 1'000'000LL) << "burst 0: one second's worth";
}

TEST(TenantQuota, NoQuotaMeansNoBucket) {
  config::tenants_section cfg;
  cfg.enabled = true;
  cfg.quotas.push_back({"limited", {10, 1}});
  quota_book book(cfg);
  EXPECT_EQ(book.find("free"), nullptr);
  EXPECT_NE(book.find("limited"), nullptr);
}

// The tokens file's lookup (keyed digests, then a compare without early
// exit): only a whole, exact token names its tenant.
TEST(TenantTokens, OnlyTheExactTokenNamesItsTenant) {
  config::source_tenancy t;
  t.tokens = {{"alpha-token-0123456789", "alpha"}, {"beta-token", "beta"}, {"b", "short"}};
  binding b(t, "tenant_id");
  ASSERT_TRUE(b.uses_tokens());
  ASSERT_NE(b.tenant_of_token("alpha-token-0123456789"), nullptr);
  EXPECT_EQ(*b.tenant_of_token("alpha-token-0123456789"), "alpha");
  EXPECT_EQ(*b.tenant_of_token("beta-token"), "beta");
  EXPECT_EQ(*b.tenant_of_token("b"), "short");
  for (std::string_view wrong : {"alpha-token-012345678", "alpha-token-01234567890", "alpha-token-0123456788",
                                 "Alpha-token-0123456789", "beta-token ", "beta-toke", "", "bb"}) {
    EXPECT_EQ(b.tenant_of_token(wrong), nullptr) << wrong;
  }
  // A token with a NUL inside is its own token, not its prefix's.
  EXPECT_EQ(b.tenant_of_token(std::string_view("b\0", 2)), nullptr);
  // Two bindings of one file (a source restarted) key their digests apart
  // and still agree on every token.
  binding again(t, "tenant_id");
  EXPECT_EQ(*again.tenant_of_token("beta-token"), "beta");
  EXPECT_EQ(again.tenant_of_token("beta-tokens"), nullptr);
}

// A refused HTTP request gives its charges back (intake::settle_request).
TEST(TenantQuota, ARefundGivesBackWhatARefusedRequestWasCharged) {
  config::tenants_section cfg;
  cfg.enabled = true;
  cfg.quota = {100, 10};
  quota_book book(cfg);
  auto* a = book.find("alpha");
  ASSERT_NE(a, nullptr);
  const int64_t t0 = 1'000'000'000;
  EXPECT_EQ(quota_book::charge(*a, 15, t0), 5 * 10'000'000);
  quota_book::refund(*a, 15);
  EXPECT_EQ(quota_book::over_ns(*a, t0), 0);
  EXPECT_EQ(quota_book::charge(*a, 10, t0), 0) << "the whole burst is there again";
}

}  // namespace
}  // namespace evpipe::stages::tenant
