#include "app/log_limiter.h"

namespace evpipe::app {

std::string log_limiter::site_template(std::string_view message) const {
  std::string out;
  out.reserve(std::min(message.size(), t_.template_chars));
  bool in_digits = false;
  for (char c : message) {
    if (out.size() >= t_.template_chars) break;
    bool digit = c >= '0' && c <= '9';
    if (digit && !in_digits) out += '#';
    if (!digit) out += c;
    in_digits = digit;
  }
  return out;
}

// `key` is "<level> <template>".
log_limiter::summary log_limiter::summarise(const std::string& key, const site& s) const {
  return {s.level, std::to_string(s.suppressed) + " lines like this were suppressed in the last " +
                       std::to_string(t_.interval.count() / 1000) + " s: " + key.substr(key.find(' ') + 1)};
}

// Reports and resets the sites whose window ended with lines suppressed, and
// forgets idle sites when there are too many.
void log_limiter::sweep(clock::time_point now, std::vector<summary>& out) {
  for (auto it = sites_.begin(); it != sites_.end();) {
    auto& s = it->second;
    bool ended = now - s.window_start >= t_.interval;
    if (ended && s.suppressed > 0) {
      out.push_back(summarise(it->first, s));
      s.suppressed = 0;
    }
    if (ended && sites_.size() > t_.max_sites / 2) {
      sites_.erase(it++);
    } else {
      ++it;
    }
  }
}

log_limiter::decision log_limiter::admit(int level, std::string_view message, clock::time_point now) {
  decision d;
  std::string key = std::to_string(level) + ' ' + site_template(message);
  std::lock_guard lock(mu_);
  // Summaries come within about one interval of the end of a flood, even if
  // that site logs nothing more, as long as anything logs.
  if (now - last_sweep_ >= t_.interval / 10) {
    sweep(now, d.summaries);
    last_sweep_ = now;
  }
  auto [it, fresh] = sites_.try_emplace(key);
  site& s = it->second;
  if (fresh) {
    if (sites_.size() > t_.max_sites) {
      // Too many sites even after the sweep: this one goes unlimited rather
      // than unbounded memory.
      sites_.erase(it);
      return d;
    }
    s.level = level;
    s.window_start = now;
  }
  if (now - s.window_start >= t_.interval) {
    if (s.suppressed > 0) d.summaries.push_back(summarise(key, s));
    s.window_start = now;
    s.written = 0;
    s.suppressed = 0;
  }
  if (s.written < t_.lines_per_interval) {
    ++s.written;
  } else {
    ++s.suppressed;
    d.write = false;
  }
  return d;
}

std::vector<log_limiter::summary> log_limiter::drain() {
  std::vector<summary> out;
  std::lock_guard lock(mu_);
  for (auto& [key, s] : sites_) {
    if (s.suppressed == 0) continue;
    out.push_back(summarise(key, s));
    s.suppressed = 0;
  }
  return out;
}

}  // namespace evpipe::app
