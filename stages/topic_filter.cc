#include "stages/topic_filter.h"

#include <cctype>
#include <vector>

namespace evpipe::stages {

namespace {

std::vector<std::string_view> levels(std::string_view s) {
  std::vector<std::string_view> out;
  size_t start = 0;
  for (;;) {
    size_t slash = s.find('/', start);
    out.push_back(s.substr(start, slash == std::string_view::npos ? std::string_view::npos : slash - start));
    if (slash == std::string_view::npos) return out;
    start = slash + 1;
  }
}

}  // namespace

std::string topic_filter_problem(std::string_view filter) {
  if (filter.empty()) return "a topic filter is empty";
  if (filter.find('\0') != std::string_view::npos) return "a topic filter holds a NUL character";
  auto parts = levels(filter);
  for (size_t i = 0; i < parts.size(); ++i) {
    auto p = parts[i];
    if (p.find('#') != std::string_view::npos && (p != "#" || i + 1 != parts.size())) {
      return "'#' must be a whole level and the last one (e.g. \"tracker/events/#\")";
    }
    if (p.find('+') != std::string_view::npos && p != "+") return "'+' must be a whole level (e.g. \"tracker/+/created\")";
  }
  return "";
}

bool topic_matches(std::string_view filter, std::string_view topic) noexcept {
  if (!topic.empty() && topic[0] == '$' && !filter.empty() && (filter[0] == '+' || filter[0] == '#')) return false;
  // Walks both level by level without allocating (the stream calls this per
  // event and subscription).
  size_t f = 0, t = 0;
  for (;;) {
    size_t fe = filter.find('/', f);
    std::string_view flevel = filter.substr(f, fe == std::string_view::npos ? std::string_view::npos : fe - f);
    if (flevel == "#") return true;  // the rest of the topic, whatever it is
    size_t te = topic.find('/', t);
    std::string_view tlevel = topic.substr(t, te == std::string_view::npos ? std::string_view::npos : te - t);
    if (flevel != "+" && flevel != tlevel) return false;
    bool f_last = fe == std::string_view::npos, t_last = te == std::string_view::npos;
    if (f_last || t_last) {
      if (f_last && t_last) return true;
      // The topic ended first: only a trailing "/#" matches its parent.
      return t_last && filter.substr(fe + 1) == "#";
    }
    f = fe + 1;
    t = te + 1;
  }
}

std::string topic_filter_regex(std::string_view filter) {
  std::string re = "^";
  auto parts = levels(filter);
  // A wildcard first level must not match a leading '$': spelled out as a
  // character class rather than a lookahead, which keeps the expression in
  // the subset every regex engine reads the same way.
  for (size_t i = 0; i < parts.size(); ++i) {
    auto p = parts[i];
    if (p == "#") {
      // "a/#" also matches "a": the slash before '#' is optional with the rest.
      if (i == 0) {
        re += "([^$].*)?";
      } else {
        re.pop_back();  // the '/' added after the previous level
        re += "(/.*)?";
      }
      return re + "$";
    }
    if (p == "+") {
      re += i == 0 ? "([^$/][^/]*)?" : "[^/]*";
    } else {
      for (char c : p) {
        if (!std::isalnum(static_cast<unsigned char>(c)) && !(static_cast<unsigned char>(c) & 0x80)) re += '\\';
        re += c;
      }
    }
    if (i + 1 < parts.size()) re += '/';
  }
  return re + "$";
}

}  // namespace evpipe::stages
