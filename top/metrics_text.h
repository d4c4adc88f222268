#pragma once
// A reader of the Prometheus text exposition format (0.0.4), enough for
// `evpipe top`: sample lines `name{label="value",...} value [timestamp]`;
// comments (# HELP, # TYPE) and blank lines are skipped. Debian packages no
// parser of it (prometheus-cpp only writes the format), hence this one.

#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace evpipe::top {

struct sample {
  std::string name;
  std::map<std::string, std::string> labels;
  double value = 0;
  [[nodiscard]] const std::string& label(const std::string& key) const;
};

// One scrape. Lines that do not parse are skipped and counted.
struct scrape {
  std::vector<sample> samples;
  size_t bad_lines = 0;

  // Every sample of `name`.
  [[nodiscard]] std::vector<const sample*> family(std::string_view name) const;
  // The sum of every sample of `name` whose labels include `match` (all when empty).
  [[nodiscard]] double sum(std::string_view name, const std::map<std::string, std::string>& match = {}) const;
  // Whether any sample of `name` exists.
  [[nodiscard]] bool has(std::string_view name) const;
};

[[nodiscard]] scrape parse_metrics(std::string_view text);

// Percentile q (0..1) of the observations between two scrapes of a histogram
// `name` (its `_bucket` series, cumulative, with `le`), summed over every
// other label; linear inside the bucket like PromQL's histogram_quantile.
// nullopt when nothing was observed in between.
[[nodiscard]] std::optional<double> quantile_between(const scrape& before, const scrape& now, std::string_view name,
                                                     double q, const std::map<std::string, std::string>& match = {});

}  // namespace evpipe::top
