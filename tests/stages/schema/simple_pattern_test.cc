// The bit-parallel fast path for simple patterns (stages/schema/simple_pattern.cc)
// against RE2, the engine it stands in for: the same verdict on generated
// strings for every pattern it accepts, and RE2 left with the rest.
#include "stages/schema/simple_pattern.h"

#include <gtest/gtest.h>
#include <re2/re2.h>

#include <random>
#include <string>
#include <vector>

namespace evpipe::stages::schema {
namespace {

bool re2_search(const RE2& re, std::string_view s) {
  return re.Match(re2::StringPiece(s.data(), s.size()), 0, s.size(), RE2::UNANCHORED, nullptr, 0);
}

// Strings built from the bytes a pattern talks about, plus bytes it does not
// (a newline, a multi-byte character, a NUL), so both verdicts are common.
std::vector<std::string> samples(std::string_view pattern, std::mt19937_64& rng) {
  std::string alphabet = "09a.-_:/Zz \n";
  alphabet += std::string(1, '\0');
  for (char c : pattern) {
    if (c != '\\') alphabet.push_back(c);
  }
  std::vector<std::string> out = {"", "\xC3\xA9", "aaa", "aa", "aaaa", "abbbc", "ac", "1.0.0", "10.20.30", "1.0.0\n",
                                  "24h", "a:b", "::1", "/x", "x-y", "d", "abcd", "12", "1234", "---", "a-", "_z"};
  for (int i = 0; i < 3000; ++i) {
    std::string s;
    const size_t len = rng() % 14;
    for (size_t k = 0; k < len; ++k) {
      if (rng() % 40 == 0) s += "\xC3\xA9";  // é
      else s.push_back(alphabet[rng() % alphabet.size()]);
    }
    out.push_back(s);
  }
  return out;
}

TEST(simple_pattern, same_verdict_as_re2) {
  const char* patterns[] = {
      R"(^[0-9]+\.[0-9]+\.[0-9]+$)",  // schemas/kinds/project_created.json
      R"(^[0-9]+[smhd]$)",
      R"(^[a-z0-9][a-z0-9_.-]*$)",
      R"(^/)",
      R"(^[a-z_]+:[a-z_]+$)",
      R"(^[0-9a-fA-F:]*:[0-9a-fA-F:.]*$)",
      R"([0-9]{2,4})",
      R"(^a{3}$)",
      R"(^a{1,3}b?c*$)",
      R"(a?b?c?d$)",
      R"(x)",
      R"(\d\w-\.)",
      R"(^[\d_]{0,2}z)",
      R"(^$)",
      R"()",
      R"(:)",
      R"(^[a-]+[-z]$)",
      R"(^[ -/]+$)",
      R"(^a{2,}$)",
      R"(ab*c)",
      R"(^a?a?a?aaa$)",
  };
  std::mt19937_64 rng(7);
  for (const char* p : patterns) {
    auto fast = simple_pattern::compile(p);
    ASSERT_TRUE(fast.has_value()) << p << " should take the fast path";
    RE2 re(p);
    ASSERT_TRUE(re.ok()) << p;
    size_t matched = 0, total = 0;
    for (const auto& s : samples(p, rng)) {
      const bool want = re2_search(re, s);
      matched += want;
      ++total;
      ASSERT_EQ(fast->search(s), want) << "pattern " << p << " on \"" << s << "\"";
    }
    if (std::string_view(p) != "" && std::string_view(p) != "^$") {
      EXPECT_GT(matched, 0u) << p;
      EXPECT_LT(matched, total) << p;
    }
  }
}

TEST(simple_pattern, leaves_the_rest_to_re2) {
  const char* patterns[] = {
      R"(^[0-9]{1,3}(\.[0-9]{1,3}){3}$)",  // a group
      "a|b",                               // alternation
      "^.+$",                              // '.' matches a whole UTF-8 character
      "[^a]",                              // so does a negated class
      "a+?",                               // lazy
      "a**",
      "\\s",
      "\\pL",
      "(?i)abc",
      "é",                                 // not ASCII
      "a{0}",
      "[[:alpha:]]",
      "a$b",
      "x{1,100}",                          // more positions than a word has bits
  };
  for (const char* p : patterns) EXPECT_FALSE(simple_pattern::compile(p).has_value()) << p;
}

}  // namespace
}  // namespace evpipe::stages::schema
