#include "io/sources/nats/nats_source.h"

#include <nats/nats.h>
#include <spdlog/spdlog.h>

#include <stdexcept>

#include "io/sources/nats/nats_consumer.h"

namespace evpipe::io {

using namespace std::chrono_literals;

namespace {

std::string last_error(natsStatus s) {
  std::string text = natsStatus_GetText(s);
  const char* detail = nats_GetLastError(nullptr);
  if (detail != nullptr && *detail != '\0' && text.find(detail) == std::string::npos) text += std::string(": ") + detail;
  return text;
}

std::string servers_text(const config::nats_source& cfg) {
  std::string s;
  for (const auto& u : cfg.servers) s += (s.empty() ? "" : ",") + u;
  return s;
}

// The library's connection events, on its own threads.
void on_disconnected(natsConnection*, void* closure) {
  auto* sh = static_cast<nats_source::shared*>(closure);
  if (sh->connected.exchange(false)) {
    sh->probe.connections_active.fetch_sub(1);
    if (!sh->stopping.load()) spdlog::warn("nats: disconnected from {}; reconnecting", servers_text(sh->cfg));
  }
}

void on_connected(natsConnection* nc, void* closure) {
  auto* sh = static_cast<nats_source::shared*>(closure);
  if (!sh->connected.exchange(true)) {
    sh->probe.connections_active.fetch_add(1);
    char url[256] = {};
    natsConnection_GetConnectedUrl(nc, url, sizeof url);
    spdlog::info("nats: connected to {}", url);
  }
}

// The library runs every connection's callbacks in order on one thread it
// shares among connections, also after natsConnection_Close and
// natsConnection_Destroy have returned: this one comes last for a
// connection, and only then may their closure go (close()).
void on_closed(natsConnection* nc, void* closure) {
  auto* sh = static_cast<nats_source::shared*>(closure);
  if (!sh->stopping.load()) {
    // Not closed by evpipe: the library gave the connection up for good.
    const char* text = nullptr;
    natsStatus s = natsConnection_GetLastError(nc, &text);
    std::string why = text != nullptr && *text != '\0' ? text : natsStatus_GetText(s);
    spdlog::error("nats: the client library closed the connection to {} for good ({}); restart evpipe once that is fixed",
                  servers_text(sh->cfg), why);
    sh->set_problem("the connection is closed for good: " + why, true);
    sh->gave_up.store(true);
  }
  std::lock_guard lock(sh->closed_mu);
  sh->closed = true;
  sh->closed_cv.notify_all();
}

void on_reconnected(natsConnection* nc, void* closure) {
  pipeline::bump(static_cast<nats_source::shared*>(closure)->probe.reconnects);
  on_connected(nc, closure);
}

void on_async_error(natsConnection*, natsSubscription*, natsStatus err, void* closure) {
  auto* sh = static_cast<nats_source::shared*>(closure);
  spdlog::warn("nats: {} ({})", natsStatus_GetText(err), servers_text(sh->cfg));
}

void check(natsStatus s, const std::string& what) {
  if (s != NATS_OK) throw std::runtime_error("[[sources.nats]] " + what + ": " + last_error(s));
}

}  // namespace

void nats_source::shared::set_problem(std::string p, bool config) {
  std::lock_guard lock(problem_mu);
  problem = std::move(p);
  problem_is_config = config;
}

nats_source::nats_source(config::nats_source cfg, pipeline::router& router, pipeline::source_probe& probe,
                         stages::envelope_limits limits)
    : cfg_(std::move(cfg)) {
  sh_ = std::make_unique<shared>(cfg_, router, probe, limits);
  if (cfg_.filter_subjects.size() <= 1) {
    consumers_.push_back(std::make_shared<nats_consumer>(
        *sh_, cfg_.durable, cfg_.filter_subjects.empty() ? std::string() : cfg_.filter_subjects.front()));
  } else {
    // nats-server 2.9 gives a consumer one filter subject: one per filter.
    for (size_t i = 0; i < cfg_.filter_subjects.size(); ++i) {
      consumers_.push_back(
          std::make_shared<nats_consumer>(*sh_, cfg_.durable + "-" + std::to_string(i + 1), cfg_.filter_subjects[i]));
    }
  }
}

nats_source::~nats_source() {
  close();
  // Left to the library's callback thread, which may still run with it.
  if (keep_shared_) (void)sh_.release();
}

void nats_source::connect_or_throw() {
  check(natsOptions_Create(&opts_), "options");
  std::vector<const char*> urls;
  bool tls = !cfg_.ca_file.empty() || !cfg_.cert_file.empty();
  for (const auto& u : cfg_.servers) {
    urls.push_back(u.c_str());
    tls = tls || u.starts_with("tls://");
  }
  check(natsOptions_SetServers(opts_, urls.data(), static_cast<int>(urls.size())), "servers");
  check(natsOptions_SetName(opts_, "evpipe"), "name");
  // Reconnect forever: a server away is waited for, like an MQTT broker.
  check(natsOptions_SetMaxReconnect(opts_, -1), "reconnect");
  check(natsOptions_SetReconnectWait(opts_, 500), "reconnect wait");
  check(natsOptions_SetDisconnectedCB(opts_, on_disconnected, sh_.get()), "callbacks");
  check(natsOptions_SetReconnectedCB(opts_, on_reconnected, sh_.get()), "callbacks");
  check(natsOptions_SetErrorHandler(opts_, on_async_error, sh_.get()), "callbacks");
  check(natsOptions_SetClosedCB(opts_, on_closed, sh_.get()), "callbacks");
  if (tls) {
    check(natsOptions_SetSecure(opts_, true), "TLS");
    if (!cfg_.ca_file.empty()) check(natsOptions_LoadCATrustedCertificates(opts_, cfg_.ca_file.c_str()), "ca_file");
    if (!cfg_.cert_file.empty()) {
      check(natsOptions_LoadCertificatesChain(opts_, cfg_.cert_file.c_str(), cfg_.key_file.c_str()),
            "cert_file/key_file");
    }
  }
  // Secrets go to the library only; messages name the file, never its text.
  if (!cfg_.creds_file.empty()) {
    check(natsOptions_SetUserCredentialsFromFiles(opts_, cfg_.creds_file.c_str(), nullptr),
          "creds_file \"" + cfg_.creds_file + "\"");
  }
  if (!cfg_.token.empty()) check(natsOptions_SetToken(opts_, cfg_.token.c_str()), "token_file");
  if (!cfg_.user.empty()) check(natsOptions_SetUserInfo(opts_, cfg_.user.c_str(), cfg_.password.c_str()), "user");

  // First without retrying, to tell refused credentials (fatal: a clear
  // error at start) from servers not reachable yet (waited for).
  natsStatus s = natsConnection_Connect(&sh_->conn, opts_);
  if (s == NATS_OK) {
    on_connected(sh_->conn, sh_.get());
  } else if (s == NATS_NO_SERVER) {
    spdlog::warn("nats: no server of {} is reachable ({}); retrying in the background", servers_text(cfg_),
                 last_error(s));
    sh_->set_problem("no server reachable", false);
    check(natsOptions_SetRetryOnFailedConnect(opts_, true, on_connected, sh_.get()), "retry");
    s = natsConnection_Connect(&sh_->conn, opts_);
    if (s != NATS_NOT_YET_CONNECTED && s != NATS_OK) check(s, "connecting to " + servers_text(cfg_));
    if (s == NATS_OK) on_connected(sh_->conn, sh_.get());
  } else {
    std::string why = last_error(s);
    bool auth = s == NATS_CONNECTION_AUTH_FAILED || s == NATS_NOT_PERMITTED ||
                why.find("uthorization") != std::string::npos || why.find("uthentication") != std::string::npos;
    if (auth) {
      throw std::runtime_error("[[sources.nats]] " + servers_text(cfg_) + ": the server refused evpipe's credentials (" +
                               why + "); check " +
                               (!cfg_.creds_file.empty()   ? "creds_file"
                                : !cfg_.token_file.empty() ? "token_file"
                                : !cfg_.user.empty()       ? "user and password_file"
                                                           : "the server's authorization: none is configured"));
    }
    // A server that verifies client certificates just closes a connection
    // without one: libnats then reports a protocol error of its own.
    const bool closed =
        s == NATS_PROTOCOL_ERROR || s == NATS_CONNECTION_CLOSED || s == NATS_IO_ERROR || s == NATS_SSL_ERROR;
    const std::string hint = tls && cfg_.cert_file.empty() && closed
                                 ? "; if the server verifies client certificates (tls { verify: true }), set "
                                   "cert_file and key_file"
                                 : "";
    throw std::runtime_error("[[sources.nats]] cannot connect to " + servers_text(cfg_) + ": " + why + hint);
  }
  jsOptions jo;
  jsOptions_Init(&jo);
  check(natsConnection_JetStream(&sh_->js, sh_->conn, &jo), "JetStream");
}

void nats_source::start() {
  connect_or_throw();
  // The consumers are set up now when the server is there, so that what
  // waiting cannot fix (no such stream, a consumer of the wrong kind) stops
  // the start with its reason.
  std::vector<bool> pending(consumers_.size(), true);
  if (sh_->connected.load()) {
    for (size_t i = 0; i < consumers_.size(); ++i) {
      bool config_problem = false;
      std::string why = consumers_[i]->setup(config_problem);
      if (why.empty()) {
        pending[i] = false;
        sh_->probe.nats_consumers_ready.fetch_add(1);
        continue;
      }
      if (config_problem) throw std::runtime_error("[[sources.nats]] " + servers_text(cfg_) + ": " + why);
      spdlog::warn("nats: {}; retrying", why);
      sh_->set_problem(why, false);
    }
  }
  reading_.store(static_cast<int>(consumers_.size()));
  for (size_t i = 0; i < consumers_.size(); ++i) {
    pullers_.emplace_back([this, c = consumers_[i], setup_needed = bool(pending[i])] {
      auto delay = 500ms;
      std::string told;
      for (bool ready = !setup_needed; !ready && !sh_->stopping.load();) {
        bool config_problem = false;
        std::string why = sh_->connected.load() ? c->setup(config_problem) : std::string("not connected");
        if (why.empty()) {
          ready = true;
          sh_->probe.nats_consumers_ready.fetch_add(1);
          sh_->set_problem({}, false);
          spdlog::info("nats: pulling from consumer \"{}\" on stream \"{}\"", c->name(), cfg_.stream);
          break;
        }
        if (why != told && why != "not connected") spdlog::error("nats: {}; retrying", why);
        told = why;
        sh_->set_problem(why, config_problem);
        for (auto until = std::chrono::steady_clock::now() + delay;
             std::chrono::steady_clock::now() < until && !sh_->stopping.load();) {
          std::this_thread::sleep_for(20ms);
        }
        delay = std::min<std::chrono::milliseconds>(delay * 2, 10s);
      }
      if (c->ready()) c->pull_loop();
      reading_.fetch_sub(1);
    });
  }
  acker_ = std::thread([this] { acker_loop(); });
}

void nats_source::acker_loop() {
  for (;;) {
    auto tick = 1000ms;
    for (const auto& c : consumers_) tick = std::min(tick, c->progress_every() / 4);
    tick = std::max(tick, std::chrono::milliseconds(25));
    bool stop = false;
    {
      std::unique_lock lock(sh_->ack_mu);
      sh_->ack_cv.wait_for(lock, tick, [&] { return sh_->ack_wanted || acker_stop_.load(); });
      sh_->ack_wanted = false;
      stop = acker_stop_.load();
    }
    for (const auto& c : consumers_) c->ack_committed();
    auto now = std::chrono::steady_clock::now();
    for (const auto& c : consumers_) c->send_progress(now);
    if (stop) break;
  }
}

void nats_source::stop_reading() {
  sh_->stopping.store(true);
  for (auto& c : consumers_) c->wake();
}

size_t nats_source::open_connections() {
  for (const auto& c : consumers_) {
    if (c->unacked() > 0) return 1;
  }
  return 0;
}

void nats_source::close() {
  std::call_once(closed_, [this] {
    sh_->stopping.store(true);
    for (auto& c : consumers_) c->wake();
    for (auto& t : pullers_) {
      if (t.joinable()) t.join();
    }
    if (acker_.joinable()) {
      acker_stop_.store(true);
      sh_->ack_cv.notify_one();
      acker_.join();  // its last pass acks what committed
    }
    if (sh_->conn != nullptr) (void)natsConnection_FlushTimeout(sh_->conn, 2000);  // the last acks leave
    // The connection closes before the subscriptions are destroyed: a pull
    // request the server still holds may deliver to a subscription at any
    // time, and libnats before 3.6.1 could crash its read loop on a message
    // for a subscription being destroyed (nats.c #637, fixed by #638).
    // Closed, the read loop is gone; what was not acked is redelivered.
    if (sh_->conn != nullptr) natsConnection_Close(sh_->conn);
    for (auto& c : consumers_) {
      if (c->ready()) sh_->probe.nats_consumers_ready.fetch_sub(1);
      c->release_all();
    }
    if (sh_->js != nullptr) jsCtx_Destroy(sh_->js);
    sh_->js = nullptr;
    if (sh_->conn != nullptr) {
      on_disconnected(sh_->conn, sh_.get());
      natsConnection_Destroy(sh_->conn);
      // The disconnected and closed callbacks that the close queued run
      // later, on the library's thread, with sh_: it must outlive them
      // (ThreadSanitizer caught the disconnected one writing to a source
      // already destroyed, at shutdown).
      std::unique_lock lock(sh_->closed_mu);
      if (!sh_->closed_cv.wait_for(lock, 10s, [&] { return sh_->closed; })) {
        spdlog::warn("nats: the client library did not report the connection closed within 10 s; its state is left to it");
        keep_shared_ = true;
      }
    }
    sh_->conn = nullptr;
    if (opts_ != nullptr) natsOptions_Destroy(opts_);
    opts_ = nullptr;
  });
}

std::string nats_source::describe() const {
  std::string consumers;
  for (const auto& c : consumers_) consumers += (consumers.empty() ? "" : ", ") + c->name();
  return "nats " + servers_text(cfg_) + " stream " + cfg_.stream + " (durable pull consumer " + consumers +
         ", max_ack_pending " + std::to_string(cfg_.max_ack_pending) + ")";
}

nats_source::readiness nats_source::ready_state() const {
  readiness r;
  r.connected = sh_->connected.load();
  r.consumers = consumers_.size();
  for (const auto& c : consumers_) r.consumers_ready += c->ready() ? 1 : 0;
  std::lock_guard lock(sh_->problem_mu);
  r.problem = sh_->problem;
  r.problem_is_config = sh_->problem_is_config;
  r.closed_for_good = sh_->gave_up.load();
  return r;
}

}  // namespace evpipe::io
