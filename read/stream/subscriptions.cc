#include "read/stream/subscriptions.h"

#include <algorithm>

namespace evpipe::read {

namespace {

void normalize(std::vector<std::string>& v) {
  std::sort(v.begin(), v.end());
  v.erase(std::unique(v.begin(), v.end()), v.end());
}

// `have` takes every value `want` takes: all of them ([]), or each of
// `want`'s (by name: a filter `t/#` is not taken to cover `t/a`, which at
// worst keeps a redundant subscription).
bool covers(const std::vector<std::string>& have, const std::vector<std::string>& want) {
  if (have.empty()) return true;
  if (want.empty()) return false;
  return std::includes(have.begin(), have.end(), want.begin(), want.end());
}

bool covers(const row_clause& have, const row_clause& want) {
  return covers(have.topic_filters, want.topic_filters) && covers(have.kinds, want.kinds);
}

void merge_into(std::vector<std::string>& into, const std::vector<std::string>& more) {
  into.insert(into.end(), more.begin(), more.end());
  normalize(into);
}

// Drops every subscription another one covers (the first of equal ones stays).
void drop_covered(std::vector<row_clause>& subs) {
  for (size_t i = 0; i < subs.size();) {
    bool covered = false;
    for (size_t j = 0; j < subs.size() && !covered; ++j) {
      covered = j != i && covers(subs[j], subs[i]) && !(j > i && covers(subs[i], subs[j]));
    }
    if (covered) {
      subs.erase(subs.begin() + static_cast<std::ptrdiff_t>(i));
    } else {
      ++i;
    }
  }
}

}  // namespace

void add_subscription(std::vector<row_clause>& subs, row_clause add) {
  normalize(add.topic_filters);
  normalize(add.kinds);
  for (const auto& c : subs) {
    if (covers(c, add)) return;
  }
  for (auto& c : subs) {
    // Same topics, more kinds (or the other way round): one subscription.
    if (c.topic_filters == add.topic_filters && !c.kinds.empty() && !add.kinds.empty()) {
      merge_into(c.kinds, add.kinds);
      drop_covered(subs);
      return;
    }
    if (c.kinds == add.kinds && !c.topic_filters.empty() && !add.topic_filters.empty()) {
      merge_into(c.topic_filters, add.topic_filters);
      drop_covered(subs);
      return;
    }
  }
  subs.push_back(std::move(add));
  drop_covered(subs);
}

void remove_subscription(std::vector<row_clause>& subs, const std::vector<std::string>& topics,
                         const std::vector<std::string>& kinds) {
  if (topics.empty() && kinds.empty()) {
    subs.clear();
    return;
  }
  auto take_out = [](std::vector<std::string>& from, const std::vector<std::string>& what) {
    if (from.empty() || what.empty()) return false;  // takes every value, or nothing to take out
    for (const auto& w : what) std::erase(from, w);
    return from.empty();  // named some, names none now: it ends
  };
  std::erase_if(subs, [&](row_clause& c) {
    const bool no_topics = take_out(c.topic_filters, topics);
    const bool no_kinds = take_out(c.kinds, kinds);
    return no_topics || no_kinds;
  });
}

size_t filter_count(const std::vector<row_clause>& subs) {
  size_t n = 0;
  for (const auto& c : subs) n += c.topic_filters.size() + c.kinds.size();
  return n;
}

}  // namespace evpipe::read
