#include "top/top_view.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <map>
#include <set>

namespace evpipe::top {

namespace {

std::string fmt(const char* f, double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, f, v);
  return buf;
}

// A column of a table: left-aligned first, right-aligned after.
std::string row(const std::vector<std::string>& cells, const std::vector<int>& widths) {
  std::string out;
  for (size_t i = 0; i < cells.size() && i < widths.size(); ++i) {
    std::string c = cells[i].substr(0, static_cast<size_t>(widths[i]));
    std::string pad(static_cast<size_t>(widths[i]) - c.size(), ' ');
    out += i == 0 ? c + pad : pad + c;
    if (i + 1 < cells.size()) out += ' ';
  }
  return out;
}

double rate(const view_input& in, const std::string& name, const std::map<std::string, std::string>& match = {}) {
  if (!in.before || in.interval_s <= 0) return std::nan("");
  double d = in.now->sum(name, match) - in.before->sum(name, match);
  return d < 0 ? std::nan("") : d / in.interval_s;  // a restart resets counters
}

std::string rate_text(double r) { return std::isnan(r) ? "-" : format_count(r); }

}  // namespace

std::string format_count(double v) {
  if (std::isnan(v)) return "-";
  if (std::fabs(v) >= 1e9) return fmt("%.1fG", v / 1e9);
  if (std::fabs(v) >= 1e6) return fmt("%.1fM", v / 1e6);
  if (std::fabs(v) >= 100 || v == std::floor(v)) {
    // Whole numbers with thousands separators.
    long long n = std::llround(v);
    std::string digits = std::to_string(std::llabs(n)), out;
    for (size_t i = 0; i < digits.size(); ++i) {
      if (i > 0 && (digits.size() - i) % 3 == 0) out += ',';
      out += digits[i];
    }
    return (n < 0 ? "-" : "") + out;
  }
  return fmt("%.1f", v);
}

std::string format_seconds(double s) {
  if (std::isnan(s)) return "-";
  if (s < 1e-3) return fmt("%.0fus", s * 1e6);
  if (s < 1) return fmt("%.1fms", s * 1e3);
  return fmt("%.2fs", s);
}

std::vector<std::string> render_view(const view_input& in, int width, int height) {
  std::vector<std::string> lines;
  const std::string p = in.prefix;
  const scrape& now = *in.now;
  lines.push_back("evpipe top  " + in.url + "  " + in.clock + "  (q quits)");
  std::string db = "database: " + (in.ready.empty() ? std::string("?") : in.ready);
  if (now.has(p + "_db_errors_total")) db += "   db errors " + format_count(now.sum(p + "_db_errors_total"));
  if (now.has(p + "_config_reloads_total")) {
    db += "   reloads " + format_count(now.sum(p + "_config_reloads_total", {{"result", "success"}})) + " ok " +
          format_count(now.sum(p + "_config_reloads_total", {{"result", "failure"}})) + " failed";
  }
  lines.push_back(db);
  if (!in.error.empty()) lines.push_back("scrape error: " + in.error);

  // Sources: one row per `source` label.
  lines.push_back("");
  const std::vector<int> sw = {8, 10, 13, 6, 9, 8};
  lines.push_back(row({"SOURCE", "EVENTS/S", "RECEIVED", "CONNS", "UNACKED", "PAUSES/S"}, sw));
  std::set<std::string> kinds;
  for (const auto* s : now.family(p + "_events_received_total")) kinds.insert(s->label("source"));
  for (const auto& k : kinds) {
    std::map<std::string, std::string> m = {{"source", k}};
    lines.push_back(row({k, rate_text(rate(in, p + "_events_received_total", m)),
                         format_count(now.sum(p + "_events_received_total", m)),
                         format_count(now.sum(p + "_connections_active", m)),
                         format_count(now.sum(p + "_unacked_events", m)),
                         rate_text(rate(in, p + "_backpressure_waits_total", m))},
                        sw));
  }

  // Shards: one row each (queue depth, batches and rows per batch, write
  // time, retries: all labelled by shard). Beyond 8 shards the rest fold into
  // one row, so the view still fits 80x24. A scrape from before the shard
  // label on the write counters shows them in one "all" row.
  lines.push_back("");
  const std::vector<int> hw = {6, 7, 10, 10, 10, 10, 11, 8};
  lines.push_back(
      row({"SHARD", "QUEUE", "BATCHES/S", "ROWS/BATCH", "WRITE AVG", "WRITE P99", "RETRIES/S", "BATCHES"}, hw));
  // The sum over the shards in `ids` (one label value each; {""}: unlabelled).
  auto over = [&](const scrape& sc, const std::string& name, const std::vector<std::string>& ids,
                  std::map<std::string, std::string> m = {}) {
    double t = 0;
    for (const auto& id : ids) {
      if (!id.empty()) m["shard"] = id;
      t += sc.sum(name, m);
    }
    return t;
  };
  auto rate_over = [&](const std::string& name, const std::vector<std::string>& ids,
                       const std::map<std::string, std::string>& m = {}) {
    if (!in.before || in.interval_s <= 0) return std::nan("");
    double d = over(now, name, ids, m) - over(*in.before, name, ids, m);
    return d < 0 ? std::nan("") : d / in.interval_s;
  };
  auto shard_row = [&](const std::string& label, const std::vector<std::string>& ids, bool with_writes) {
    std::string queue = format_count(over(now, p + "_queue_depth", ids));
    if (!with_writes) return row({label, queue}, hw);
    double batches = rate_over(p + "_batches_total", ids);
    double rows = rate_over(p + "_copy_rows_total", ids);
    const std::map<std::string, std::string> wm = {{"stage", "write"}};
    double wsum = rate_over(p + "_stage_latency_seconds_sum", ids, wm);
    double wcount = rate_over(p + "_stage_latency_seconds_count", ids, wm);
    std::optional<double> p99;
    if (in.before && ids.size() == 1) {
      std::map<std::string, std::string> one = wm;
      if (!ids[0].empty()) one["shard"] = ids[0];
      p99 = quantile_between(*in.before, now, p + "_stage_latency_seconds", 0.99, one);
    }
    return row({label, queue, rate_text(batches), batches > 0 ? format_count(rows / batches) : "-",
                wcount > 0 ? format_seconds(wsum / wcount) : "-", p99 ? format_seconds(*p99) : "-",
                rate_text(rate_over(p + "_db_retries_total", ids)), format_count(over(now, p + "_batches_total", ids))},
               hw);
  };
  bool per_shard_writes = false;
  for (const auto* s : now.family(p + "_batches_total")) per_shard_writes |= !s->label("shard").empty();
  std::vector<std::string> shard_ids;
  for (const auto* s : now.family(p + "_queue_depth")) shard_ids.push_back(s->label("shard"));
  constexpr size_t max_shard_rows = 8;
  for (size_t i = 0; i < shard_ids.size(); ++i) {
    if (shard_ids.size() > max_shard_rows && i == max_shard_rows - 1) {
      std::vector<std::string> rest(shard_ids.begin() + static_cast<std::ptrdiff_t>(i), shard_ids.end());
      lines.push_back(shard_row(rest.front() + "-" + rest.back(), rest, per_shard_writes));
      break;
    }
    const std::string& id = shard_ids[i];
    lines.push_back(shard_row(id.empty() ? "all" : id, {id}, per_shard_writes));
  }
  if (!per_shard_writes) lines.push_back(shard_row("all", {""}, true));

  // End-to-end latency over the interval.
  lines.push_back("");
  std::string lat = "E2E LATENCY";
  if (in.before) {
    lat += fmt(" (last %.1f s):", in.interval_s);
    const char* names[] = {"p50", "p99", "p99.9"};
    const double qs[] = {0.5, 0.99, 0.999};
    for (int i = 0; i < 3; ++i) {
      auto v = quantile_between(*in.before, now, p + "_event_latency_seconds", qs[i]);
      lat += std::string(" ") + names[i] + " " + (v ? format_seconds(*v) : "-");
    }
    lat += ", " + rate_text(rate(in, p + "_event_latency_seconds_count") * in.interval_s) + " events";
  }
  lines.push_back(lat);

  // Dead letters by reason, the largest first.
  lines.push_back("");
  const std::vector<int> dw = {24, 12, 10};
  lines.push_back(row({"DLQ REASON", "TOTAL", "PER S"}, dw));
  std::map<std::string, double> by_reason;
  for (const auto* s : now.family(p + "_dlq_total")) by_reason[s->label("reason")] += s->value;
  std::vector<std::pair<std::string, double>> reasons(by_reason.begin(), by_reason.end());
  std::sort(reasons.begin(), reasons.end(), [](const auto& a, const auto& b) { return a.second > b.second; });
  if (reasons.empty()) lines.push_back("(none)");
  for (const auto& [reason, total] : reasons) {
    lines.push_back(row({reason, format_count(total), rate_text(rate(in, p + "_dlq_total", {{"reason", reason}}))}, dw));
  }

  // Fit the terminal: cut long lines, drop what does not fit (the last line
  // says how many).
  for (auto& l : lines) {
    if (static_cast<int>(l.size()) > width) l.resize(static_cast<size_t>(std::max(width, 0)));
  }
  if (static_cast<int>(lines.size()) > height && height > 0) {
    size_t hidden = lines.size() - static_cast<size_t>(height) + 1;
    lines.resize(static_cast<size_t>(height - 1));
    lines.push_back(("(" + std::to_string(hidden) + " more lines: enlarge the terminal)").substr(0, static_cast<size_t>(width)));
  }
  return lines;
}

}  // namespace evpipe::top
