#include "app/live_sources.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <thread>

#include "io/sources/http/http_source.h"
#include "io/sources/mqtt/mqtt_source.h"
#include "io/sources/nats/nats_source.h"
#include "io/sources/tcp/tcp_source.h"

namespace evpipe::app {

using namespace std::chrono_literals;

live_sources::live_sources(boost::asio::io_context& ioc, pipeline::router& router,
                           pipeline::metrics_registry& registry, stages::envelope_limits limits,
                           io::mqtt_subscription_memory* mqtt_memory)
    : ioc_(ioc), router_(router), registry_(registry), limits_(limits), mqtt_memory_(mqtt_memory) {}

live_sources::~live_sources() = default;

void live_sources::set_metrics_thread(std::function<void(std::function<void()>)> run_there) {
  std::lock_guard lock(mu_);
  on_metrics_thread_ = std::move(run_there);
}

namespace {
std::string endpoint_text(const config::endpoint& e) { return e.host + ":" + std::to_string(e.port); }
}  // namespace

pipeline::source_probe& live_sources::probe_for(const std::string& kind, const std::string& address) {
  if (auto* p = registry_.find_source(kind, address)) {
    p->retired.store(false, std::memory_order_relaxed);
    return *p;
  }
  pipeline::source_probe* added = nullptr;
  if (on_metrics_thread_) {
    on_metrics_thread_([&] { added = &registry_.add_source(kind, address); });
  } else {
    added = &registry_.add_source(kind, address);
  }
  return *added;
}

void live_sources::retire_probe(const io::source& src) {
  auto it = probe_of_.find(&src);
  if (it == probe_of_.end()) return;
  it->second->retired.store(true, std::memory_order_relaxed);
  probe_of_.erase(it);
}

std::unique_ptr<io::source> live_sources::make_tcp(const config::tcp_source& c) {
  auto& probe = probe_for("tcp", endpoint_text(c.listen));
  auto src = std::make_unique<io::tcp_source>(ioc_, c, router_, probe, limits_);
  probe_of_[src.get()] = &probe;
  return src;
}
std::unique_ptr<io::source> live_sources::make_mqtt(const config::mqtt_source& c) {
  auto& probe = probe_for("mqtt", c.client_id.empty() ? c.url : c.url + " as " + c.client_id);
  auto src = std::make_unique<io::mqtt_source>(ioc_, c, router_, probe, limits_, mqtt_memory_);
  probe_of_[src.get()] = &probe;
  return src;
}
std::unique_ptr<io::source> live_sources::make_http(const config::http_source& c) {
  auto& probe = probe_for("http", endpoint_text(c.listen));
  auto src = std::make_unique<io::http_source>(ioc_, c, router_, probe, limits_);
  probe_of_[src.get()] = &probe;
  return src;
}

std::unique_ptr<io::source> live_sources::make_nats(const config::nats_source& c) {
  std::string servers;
  for (const auto& s : c.servers) servers += (servers.empty() ? "" : ",") + s;
  auto& probe = probe_for("nats", servers + " stream " + c.stream + " as " + c.durable);
  auto src = std::make_unique<io::nats_source>(c, router_, probe, limits_);
  probe_of_[src.get()] = &probe;
  return src;
}

void live_sources::start_all(const config::settings& s) {
  std::lock_guard lock(mu_);
  // Probes in the order tcp, mqtt, http, as before reloads existed.
  for (const auto& c : s.tcp_sources) tcp_.push_back(make_tcp(c));
  for (const auto& c : s.mqtt_sources) mqtt_.push_back(make_mqtt(c));
  for (const auto& c : s.http_sources) http_.push_back(make_http(c));
  for (const auto& c : s.nats_sources) nats_.push_back(make_nats(c));
  for (auto* list : {&tcp_, &mqtt_, &http_, &nats_}) {
    for (auto& src : *list) src->start();
  }
  if (!tcp_.empty()) first_tcp_port_ = static_cast<io::tcp_source&>(*tcp_.front()).port();
  std::vector<std::string> urls;
  for (const auto& c : s.mqtt_sources) urls.push_back(c.url);
  std::lock_guard notes(notes_mu_);
  for (size_t i = 0; i < mqtt_.size(); ++i) mqtt_list_.emplace_back(static_cast<io::mqtt_source*>(mqtt_[i].get()), urls[i]);
}

std::unique_ptr<io::source> live_sources::start_one(const std::function<std::unique_ptr<io::source>()>& make,
                                                    const std::string& what) {
  // The source it replaces closed its listener on the I/O thread a moment
  // ago: a bind can fail until that ran.
  std::string last;
  for (int attempt = 0; attempt < 40; ++attempt) {
    auto src = make();
    try {
      src->start();
      return src;
    } catch (const std::exception& e) {
      last = e.what();
      retire_probe(*src);
      retired_.push_back(std::move(src));  // may hold Asio objects: destroyed at exit
    }
    std::this_thread::sleep_for(50ms);
  }
  spdlog::error("reload: cannot start {}: {}", what, last);
  return nullptr;
}

void live_sources::stop_one(io::source& src, std::chrono::milliseconds budget) {
  // As in the drain: no new events; what was read is committed and acked;
  // then the connections close (producers reconnect to the new source).
  auto end = std::chrono::steady_clock::now() + budget;
  src.stop_reading();
  while (src.reading_connections() > 0 && std::chrono::steady_clock::now() < end) std::this_thread::sleep_for(1ms);
  while (src.open_connections() > 0 && std::chrono::steady_clock::now() < end) std::this_thread::sleep_for(1ms);
  src.close();
}

int live_sources::apply(const config::reload_plan& plan, config::settings& effective,
                        std::chrono::milliseconds stop_budget) {
  std::lock_guard lock(mu_);
  if (draining_) return -1;
  int failed = 0;
  // Stops first: a changed source keeps its address, which must be free.
  auto stop_all = [&](std::vector<std::unique_ptr<io::source>>& list, const config::source_changes& ch) {
    for (size_t i : ch.stop) {
      spdlog::info("reload: stopping {}", list[i]->describe());
      stop_one(*list[i], stop_budget);
      retire_probe(*list[i]);
    }
  };
  stop_all(tcp_, plan.tcp);
  stop_all(mqtt_, plan.mqtt);
  stop_all(http_, plan.http);
  if (plan.mqtt.any()) {
    // The notes must not name a stopped session's source.
    std::lock_guard notes(notes_mu_);
    mqtt_list_.clear();
  }

  // The lists in the new config's order: kept sources move over, new ones
  // start; the stopped ones retire.
  auto rebuild = [&]<class C>(std::vector<std::unique_ptr<io::source>>& list, const config::source_changes& ch,
                              const std::vector<C>& next_cfgs, std::vector<C>& eff_cfgs, auto make) {
    std::vector<std::unique_ptr<io::source>> next(next_cfgs.size());
    for (auto [i, j] : ch.keep) next[j] = std::move(list[i]);
    for (size_t j : ch.start) {
      const C& c = next_cfgs[j];
      next[j] = start_one([&] { return (this->*make)(c); }, "a new source");
      if (next[j]) spdlog::info("reload: started {}", next[j]->describe());
    }
    for (auto& old : list) {
      if (old) retired_.push_back(std::move(old));
    }
    list.clear();
    eff_cfgs.clear();
    for (size_t j = 0; j < next.size(); ++j) {
      if (!next[j]) {
        ++failed;
        continue;
      }
      list.push_back(std::move(next[j]));
      eff_cfgs.push_back(next_cfgs[j]);
    }
  };
  auto next_tcp = effective.tcp_sources;
  auto next_mqtt = effective.mqtt_sources;
  auto next_http = effective.http_sources;
  rebuild(tcp_, plan.tcp, next_tcp, effective.tcp_sources, &live_sources::make_tcp);
  rebuild(mqtt_, plan.mqtt, next_mqtt, effective.mqtt_sources, &live_sources::make_mqtt);
  rebuild(http_, plan.http, next_http, effective.http_sources, &live_sources::make_http);
  std::lock_guard notes(notes_mu_);
  mqtt_list_.clear();
  for (size_t i = 0; i < mqtt_.size(); ++i) {
    mqtt_list_.emplace_back(static_cast<io::mqtt_source*>(mqtt_[i].get()), effective.mqtt_sources[i].url);
  }
  return failed;
}

size_t live_sources::swap_http_tenancy(config::source_changes& ch, const std::vector<config::http_source>& running,
                                       const std::vector<config::http_source>& next) {
  std::lock_guard lock(mu_);
  if (draining_) return 0;
  size_t swapped = 0;
  for (auto stop = ch.stop.begin(); stop != ch.stop.end();) {
    config::http_source was = running[*stop];
    auto start = std::find_if(ch.start.begin(), ch.start.end(), [&](size_t j) {
      was.tenancy = next[j].tenancy;
      return was == next[j];
    });
    if (start == ch.start.end()) {
      ++stop;
      continue;
    }
    auto& src = static_cast<io::http_source&>(*http_[*stop]);
    src.set_tenancy(next[*start].tenancy);
    spdlog::info("reload: {}: new tenancy (tokens, tenant, allowed_tenants) from each connection's next request on",
                 src.describe());
    ch.keep.emplace_back(*stop, *start);
    ch.start.erase(start);
    stop = ch.stop.erase(stop);
    ++swapped;
  }
  return swapped;
}

void live_sources::stop_reading_all() {
  std::lock_guard lock(mu_);
  draining_ = true;
  for (auto* list : {&tcp_, &mqtt_, &http_, &nats_}) {
    for (auto& src : *list) src->stop_reading();
  }
}

void live_sources::wait_not_reading(std::chrono::steady_clock::time_point deadline) {
  std::lock_guard lock(mu_);
  for (auto* list : {&tcp_, &mqtt_, &http_, &nats_}) {
    for (auto& src : *list) {
      while (src->reading_connections() > 0 && std::chrono::steady_clock::now() < deadline) {
        std::this_thread::sleep_for(1ms);
      }
    }
  }
}

void live_sources::close_all(std::chrono::steady_clock::time_point ack_deadline) {
  std::lock_guard lock(mu_);
  // Connections close themselves once their last ack is written.
  for (auto* list : {&tcp_, &mqtt_, &http_, &nats_, &retired_}) {
    for (auto& src : *list) {
      while (src->open_connections() > 0 && std::chrono::steady_clock::now() < ack_deadline) {
        std::this_thread::sleep_for(1ms);
      }
      src->close();
    }
  }
}

std::vector<std::string> live_sources::describe() {
  std::lock_guard lock(mu_);
  std::vector<std::string> out;
  for (auto* list : {&tcp_, &mqtt_, &http_, &nats_}) {
    for (auto& src : *list) out.push_back(src->describe());
  }
  return out;
}

// An MQTT session that keeps failing, or whose every filter was refused (or
// granted only QoS 0), is evpipe's or its config's problem: not ready. A
// broker that is down is only noted: the other sources still work, and
// /metrics shows it (mqtt_connections_active).
std::vector<io::http_server_options::source_note> live_sources::mqtt_notes() {
  std::vector<io::http_server_options::source_note> notes;
  std::lock_guard lock(notes_mu_);
  for (const auto& [src, url] : mqtt_list_) {
    auto r = src->ready_state();
    std::string who = "mqtt " + url;
    if (r.flapping > 0) {
      notes.push_back({true, who + ": " + std::to_string(r.flapping) + " of " + std::to_string(r.sessions) +
                                 " sessions keep failing soon after connecting (protocol errors or client id "
                                 "takeovers: see the log)"});
    }
    if (r.shared_silent > 0) {
      // A warning, not unready: the probe cannot tell a broker without $share
      // from an ACL that denies the probe topic, and the other sources (and
      // this one's other filters, were the check wrong) still ingest.
      notes.push_back({false, who + ": " + std::to_string(r.shared_silent) + " of " + std::to_string(r.sessions) +
                                 " sessions receive nothing through shared_group (the broker does not seem to "
                                 "support $share subscriptions: see the log)"});
    }
    if (r.filters > 0 && r.degraded_filters >= static_cast<int64_t>(r.filters)) {
      notes.push_back({true, who + ": every subscription was refused or granted only QoS 0"});
    } else if (r.degraded_filters > 0) {
      notes.push_back(
          {false, who + ": " + std::to_string(r.degraded_filters) + " subscriptions refused or granted only QoS 0"});
    }
    if (r.connected < r.sessions && r.flapping == 0) {
      notes.push_back({false, who + ": " + std::to_string(r.sessions - r.connected) + " of " +
                                  std::to_string(r.sessions) + " sessions not connected to the broker"});
    }
  }
  return notes;
}

}  // namespace evpipe::app

namespace evpipe::app {

// A NATS source whose consumer cannot be set up for a reason waiting will not
// fix (the stream was deleted, a consumer of the wrong kind), or whose
// connection the library closed for good, is not ready; a server away, or a
// consumer not bound yet, is noted (the library reconnects).
std::vector<io::http_server_options::source_note> live_sources::nats_notes() {
  std::vector<io::http_server_options::source_note> notes;
  std::lock_guard lock(mu_);
  for (const auto& src : nats_) {
    auto r = static_cast<io::nats_source&>(*src).ready_state();
    std::string who = src->describe();
    if (r.closed_for_good) {
      // Waiting will not bring it back: not ready, with the reason.
      notes.push_back({true, who + ": " + r.problem + "; restart evpipe once that is fixed"});
      continue;
    }
    if (!r.connected) notes.push_back({false, who + ": not connected to a server"});
    if (r.consumers_ready < r.consumers) {
      notes.push_back({r.problem_is_config, who + ": " + std::to_string(r.consumers - r.consumers_ready) + " of " +
                                                std::to_string(r.consumers) + " consumers not pulling" +
                                                (r.problem.empty() ? std::string() : " (" + r.problem + ")")});
    }
  }
  return notes;
}

}  // namespace evpipe::app
