// stages/tenant/token_table: the constant-time token lookup that the HTTP
// source's binding and the stream server share; and binding_slot, through
// which a reload swaps an HTTP source's binding in place.

#include "stages/tenant/token_table.h"

#include <gtest/gtest.h>

#include "stages/tenant/binding.h"

namespace evpipe::stages::tenant {
namespace {

TEST(TenantTokens, ATokenTableFindsExactlyItsTokens) {
  token_table t({{"alpha-token-0123456789", "alpha"}, {"beta-token", "beta"}, {"admin", ""}});
  EXPECT_EQ(t.size(), 3u);
  ASSERT_NE(t.find("alpha-token-0123456789"), nullptr);
  EXPECT_EQ(*t.find("alpha-token-0123456789"), "alpha");
  EXPECT_EQ(*t.find("beta-token"), "beta");
  // A token bound to no tenant (the stream's bearer_token) is found all the same.
  ASSERT_NE(t.find("admin"), nullptr);
  EXPECT_EQ(*t.find("admin"), "");
  for (std::string_view wrong : {"alpha-token-012345678", "alpha-token-01234567890", "alpha-token-0123456788",
                                 "Alpha-token-0123456789", "beta-token ", "beta-toke", "", "admi", "admin\n"}) {
    EXPECT_EQ(t.find(wrong), nullptr) << wrong;
  }
  EXPECT_EQ(t.find(std::string_view("admin\0", 6)), nullptr);
}

TEST(TenantTokens, AnEmptyTokenTableFindsNothingNotEvenTheEmptyToken) {
  token_table none;
  EXPECT_TRUE(none.empty());
  EXPECT_EQ(none.find(""), nullptr);
  EXPECT_EQ(none.find("x"), nullptr);
}

// Each table draws its own key; two tables of the same tokens agree.
TEST(TenantTokens, TwoTablesOfOneFileAgree) {
  std::vector<std::pair<std::string, std::string>> file = {{"t1", "a"}, {"t2", "b"}};
  token_table one(file), two(file);
  EXPECT_EQ(*one.find("t2"), *two.find("t2"));
  EXPECT_EQ(two.find("t3"), nullptr);
}

// A request keeps the binding it took even when a reload stores another one;
// the next load() sees only the new one.
TEST(TenantTokens, ABindingSlotSwapsWholeBindings) {
  config::source_tenancy old_cfg, new_cfg;
  old_cfg.tokens = {{"a-token", "alpha"}, {"gone-token", "gone"}};
  new_cfg.tokens = {{"a-token", "alpha"}, {"new-token", "newcomer"}};
  binding_slot slot(std::make_shared<const binding>(old_cfg, "tenant_id"));
  auto during = slot.load();
  slot.store(std::make_shared<const binding>(new_cfg, "tenant_id"));
  ASSERT_NE(during->tenant_of_token("gone-token"), nullptr);
  EXPECT_EQ(*during->tenant_of_token("gone-token"), "gone");
  EXPECT_EQ(during->tenant_of_token("new-token"), nullptr);
  auto after = slot.load();
  EXPECT_EQ(after->tenant_of_token("gone-token"), nullptr);
  EXPECT_EQ(*after->tenant_of_token("new-token"), "newcomer");
  EXPECT_EQ(*after->tenant_of_token("a-token"), "alpha");
}

}  // namespace
}  // namespace evpipe::stages::tenant
