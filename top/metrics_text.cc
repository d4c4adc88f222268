#include "top/metrics_text.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdlib>

namespace evpipe::top {

namespace {

bool includes(const sample& s, const std::map<std::string, std::string>& match) {
  for (const auto& [k, v] : match) {
    auto it = s.labels.find(k);
    if (it == s.labels.end() || it->second != v) return false;
  }
  return true;
}

double parse_value(std::string_view v, bool& ok) {
  ok = true;
  if (v == "+Inf" || v == "Inf") return HUGE_VAL;
  if (v == "-Inf") return -HUGE_VAL;
  if (v == "NaN") return std::nan("");
  std::string copy(v);
  char* end = nullptr;
  double d = std::strtod(copy.c_str(), &end);
  ok = end == copy.c_str() + copy.size() && !copy.empty();
  return d;
}

// Parses `name{labels} value`; false when the line is malformed.
bool parse_line(std::string_view line, sample& out) {
  size_t i = 0;
  while (i < line.size() && line[i] != '{' && line[i] != ' ' && line[i] != '\t') ++i;
  out.name.assign(line.substr(0, i));
  if (out.name.empty()) return false;
  if (i < line.size() && line[i] == '{') {
    ++i;
    for (;;) {
      while (i < line.size() && (line[i] == ' ' || line[i] == ',')) ++i;
      if (i >= line.size()) return false;
      if (line[i] == '}') {
        ++i;
        break;
      }
      size_t eq = line.find('=', i);
      if (eq == std::string_view::npos || eq + 1 >= line.size() || line[eq + 1] != '"') return false;
      std::string key(line.substr(i, eq - i));
      std::string value;
      size_t j = eq + 2;
      for (; j < line.size() && line[j] != '"'; ++j) {
        if (line[j] == '\\' && j + 1 < line.size()) {
          ++j;
          value += line[j] == 'n' ? '\n' : line[j];
        } else {
          value += line[j];
        }
      }
      if (j >= line.size()) return false;
      out.labels.emplace(std::move(key), std::move(value));
      i = j + 1;
    }
  }
  while (i < line.size() && (line[i] == ' ' || line[i] == '\t')) ++i;
  size_t end = i;
  while (end < line.size() && line[end] != ' ' && line[end] != '\t') ++end;
  bool ok = false;
  out.value = parse_value(line.substr(i, end - i), ok);
  return ok;
}

}  // namespace

const std::string& sample::label(const std::string& key) const {
  static const std::string none;
  auto it = labels.find(key);
  return it == labels.end() ? none : it->second;
}

std::vector<const sample*> scrape::family(std::string_view name) const {
  std::vector<const sample*> out;
  for (const auto& s : samples) {
    if (s.name == name) out.push_back(&s);
  }
  return out;
}

double scrape::sum(std::string_view name, const std::map<std::string, std::string>& match) const {
  double total = 0;
  for (const auto& s : samples) {
    if (s.name == name && includes(s, match)) total += s.value;
  }
  return total;
}

bool scrape::has(std::string_view name) const {
  return std::any_of(samples.begin(), samples.end(), [&](const sample& s) { return s.name == name; });
}

scrape parse_metrics(std::string_view text) {
  scrape out;
  size_t pos = 0;
  while (pos < text.size()) {
    size_t nl = text.find('\n', pos);
    if (nl == std::string_view::npos) nl = text.size();
    std::string_view line = text.substr(pos, nl - pos);
    pos = nl + 1;
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    size_t first = line.find_first_not_of(" \t");
    if (first == std::string_view::npos || line[first] == '#') continue;
    sample s;
    if (parse_line(line.substr(first), s)) {
      out.samples.push_back(std::move(s));
    } else {
      ++out.bad_lines;
    }
  }
  return out;
}

std::optional<double> quantile_between(const scrape& before, const scrape& now, std::string_view name, double q,
                                       const std::map<std::string, std::string>& match) {
  // Cumulative counts by upper bound, summed over the other labels.
  std::string bucket = std::string(name) + "_bucket";
  std::map<double, double> delta;
  for (const auto* s : now.family(bucket)) {
    if (!includes(*s, match)) continue;
    bool ok = false;
    double le = parse_value(s->label("le"), ok);
    if (ok) delta[le] += s->value;
  }
  for (const auto* s : before.family(bucket)) {
    if (!includes(*s, match)) continue;
    bool ok = false;
    double le = parse_value(s->label("le"), ok);
    if (ok && delta.count(le)) delta[le] -= s->value;
  }
  if (delta.empty()) return std::nullopt;
  double total = delta.rbegin()->second;
  if (total <= 0) return std::nullopt;
  double rank = q * total;
  double lower = 0, below = 0;
  for (const auto& [le, count] : delta) {
    if (count >= rank) {
      // The top bucket has no upper bound: report its lower edge, as PromQL does.
      if (std::isinf(le)) return lower;
      double in_bucket = count - below;
      if (in_bucket <= 0) return le;
      return lower + (le - lower) * (rank - below) / in_bucket;
    }
    lower = le;
    below = count;
  }
  return lower;
}

}  // namespace evpipe::top
