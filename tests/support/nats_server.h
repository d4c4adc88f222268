#pragma once
// Debian's nats-server with JetStream on 127.0.0.1, its storage in a scratch
// directory of $TMPDIR, for the NATS source's tests (like mosquitto_broker in
// tests/support/mqtt_peer.h); scripts/test.sh installs it and
// EVPIPE_TEST_NATS_SERVER names the binary. nats_client is the test's own
// side of the server (libnats): it creates streams, publishes, and reads a
// consumer's state. For tests only: errors throw.

#include <nats/nats.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <fstream>
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "tests/support/harness.h"

namespace evpipe::testing {

// A test CA in `dir` (ca.pem), and certificates it signed for the server
// (server.pem/.key, for 127.0.0.1 and localhost) and for a client
// (client.pem/.key), made with the openssl command line; valid two days.
inline void make_test_certificates(const std::string& dir) {
  std::ofstream(dir + "/san.ext") << "subjectAltName=IP:127.0.0.1,DNS:localhost\n";
  const std::string q = " >>'" + dir + "/openssl.log' 2>&1";
  const std::string cmd =
      "cd '" + dir + "' && openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days 2 "
      "-subj /CN=evpipe-test-ca" + q + " && openssl req -newkey rsa:2048 -nodes -keyout server.key -out server.csr "
      "-subj /CN=127.0.0.1" + q + " && openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial "
      "-out server.pem -days 2 -extfile san.ext" + q + " && openssl req -newkey rsa:2048 -nodes -keyout client.key "
      "-out client.csr -subj /CN=evpipe" + q + " && openssl x509 -req -in client.csr -CA ca.pem -CAkey ca.key "
      "-CAcreateserial -out client.pem -days 2" + q;
  if (std::system(cmd.c_str()) != 0) throw std::runtime_error("openssl failed: see " + dir + "/openssl.log");
}

class nats_server {
 public:
  struct auth {
    std::string user, password;  // both set: the one account; anonymous clients are refused
    std::string token;           // set: clients must present it
    // Set: a directory of make_test_certificates(): the server speaks only
    // TLS, with its certificate, and takes only clients whose certificate the
    // CA signed.
    std::string tls_dir;
    // Set: a directory of make_test_nats_jwts() (tests/support/nats_jwt.h):
    // operator mode, its one account preloaded; clients present user.creds.
    std::string jwt_dir;
  };
  // `extra`: more lines of the server's config (a cluster block); `port`: 0
  // for a free one.
  explicit nats_server(const std::string& name, auth a = {}, const std::string& extra = "", uint16_t port = 0)
      : port_(port != 0 ? port : free_port()) {
    dir_ = env_or("TMPDIR", "/tmp") + "/nats_" + std::to_string(::getpid()) + "_" + name;
    std::string mk = "rm -rf '" + dir_ + "' && mkdir -p '" + dir_ + "'";
    if (std::system(mk.c_str()) != 0) throw std::runtime_error("mkdir " + dir_);
    std::ofstream conf(dir_ + "/nats.conf");
    conf << "server_name: evpipe_test_" << name << "\n"
         << "listen: 127.0.0.1:" << port_ << "\n"
         << "http: 0\n"
         << "log_file: \"" << dir_ << "/nats.log\"\n"
         << "jetstream {\n  store_dir: \"" << dir_ << "/js\"\n  max_memory_store: 64MB\n  max_file_store: 1GB\n}\n";
    if (!a.user.empty()) conf << "authorization {\n  user: \"" << a.user << "\"\n  password: \"" << a.password << "\"\n}\n";
    if (!a.token.empty()) conf << "authorization {\n  token: \"" << a.token << "\"\n}\n";
    if (!a.tls_dir.empty()) {
      conf << "tls {\n  cert_file: \"" << a.tls_dir << "/server.pem\"\n  key_file: \"" << a.tls_dir
           << "/server.key\"\n  ca_file: \"" << a.tls_dir << "/ca.pem\"\n  verify: true\n  timeout: 5\n}\n";
    }
    if (!a.jwt_dir.empty()) {
      auto file = [&](const std::string& name) {
        std::ifstream in(a.jwt_dir + "/" + name);
        return std::string((std::istreambuf_iterator<char>(in)), {});
      };
      conf << "operator: \"" << a.jwt_dir << "/operator.jwt\"\nsystem_account: " << file("sys.pub")
           << "\nresolver: MEMORY\nresolver_preload: {\n  " << file("account.pub") << ": \"" << file("account.jwt")
           << "\"\n  " << file("sys.pub") << ": \"" << file("sys.jwt") << "\"\n}\n";
    }
    conf << extra;
    conf.close();
    start();
  }
  ~nats_server() { stop(SIGKILL); }
  nats_server(const nats_server&) = delete;
  nats_server& operator=(const nats_server&) = delete;

  [[nodiscard]] uint16_t port() const { return port_; }
  [[nodiscard]] std::string url() const { return "nats://127.0.0.1:" + std::to_string(port_); }
  [[nodiscard]] std::string dir() const { return dir_; }
  [[nodiscard]] std::string log() const {
    std::ifstream in(dir_ + "/nats.log");
    return std::string(std::istreambuf_iterator<char>(in), {});
  }

  void start() {
    std::string bin = env_or("EVPIPE_TEST_NATS_SERVER", "/usr/sbin/nats-server");
    std::string conf = dir_ + "/nats.conf";
    std::vector<char*> argv{bin.data(), const_cast<char*>("-c"), conf.data(), nullptr};
    if (posix_spawn(&pid_, bin.c_str(), nullptr, nullptr, argv.data(), environ) != 0) {
      throw std::runtime_error("cannot start " + bin);
    }
    auto deadline = std::chrono::steady_clock::now() + 30s;
    while (std::chrono::steady_clock::now() < deadline) {
      try {
        ::close(connect_loopback(port_));
        return;
      } catch (const std::exception&) {
        std::this_thread::sleep_for(20ms);
      }
    }
    throw std::runtime_error("nats-server did not listen on " + std::to_string(port_) + ": " + log());
  }
  void stop(int sig = SIGTERM) {
    if (pid_ <= 0) return;
    ::kill(pid_, sig);
    ::waitpid(pid_, nullptr, 0);
    pid_ = -1;
  }

 private:
  std::string dir_;
  uint16_t port_;
  pid_t pid_ = -1;
};

// Three (or n) nats-servers clustered on loopback ports, JetStream on each
// with its own storage: streams with replicas = n survive one node away.
class nats_cluster {
 public:
  explicit nats_cluster(const std::string& name, int n = 3) {
    std::vector<uint16_t> client_ports, route_ports;
    for (int i = 0; i < n; ++i) {
      client_ports.push_back(free_port());
      route_ports.push_back(free_port());
    }
    std::string routes;
    for (auto p : route_ports) routes += (routes.empty() ? "" : ", ") + std::string("nats-route://127.0.0.1:") + std::to_string(p);
    for (int i = 0; i < n; ++i) {
      std::string extra = "cluster {\n  name: evpipe_" + name + "\n  listen: 127.0.0.1:" +
                          std::to_string(route_ports[i]) + "\n  routes: [" + routes + "]\n}\n";
      nodes_.push_back(std::make_unique<nats_server>(name + "_" + std::to_string(i), nats_server::auth{}, extra,
                                                     client_ports[i]));
    }
  }
  [[nodiscard]] nats_server& node(int i) { return *nodes_.at(i); }
  // Every node's URL, comma-separated (a client takes the list).
  [[nodiscard]] std::string urls() const {
    std::string u;
    for (const auto& n : nodes_) u += (u.empty() ? "" : ",") + n->url();
    return u;
  }

 private:
  std::vector<std::unique_ptr<nats_server>> nodes_;
};

// The test's client: one connection and its JetStream context.
class nats_client {
 public:
  explicit nats_client(const std::string& url, const nats_server::auth& a = {}) {
    natsOptions* o = nullptr;
    ok(natsOptions_Create(&o), "options");
    // One URL, or a cluster's comma-separated list.
    std::vector<std::string> urls;
    for (size_t at = 0; at <= url.size();) {
      size_t comma = std::min(url.find(',', at), url.size());
      urls.push_back(url.substr(at, comma - at));
      at = comma + 1;
    }
    std::vector<const char*> list;
    for (const auto& u : urls) list.push_back(u.c_str());
    ok(natsOptions_SetServers(o, list.data(), static_cast<int>(list.size())), "servers");
    ok(natsOptions_SetReconnectWait(o, 200), "reconnect wait");
    ok(natsOptions_SetMaxReconnect(o, -1), "reconnect");
    if (!a.user.empty()) ok(natsOptions_SetUserInfo(o, a.user.c_str(), a.password.c_str()), "user");
    if (!a.token.empty()) ok(natsOptions_SetToken(o, a.token.c_str()), "token");
    if (!a.jwt_dir.empty()) {
      ok(natsOptions_SetUserCredentialsFromFiles(o, (a.jwt_dir + "/user.creds").c_str(), nullptr), "creds");
    }
    if (!a.tls_dir.empty()) {
      ok(natsOptions_SetSecure(o, true), "tls");
      ok(natsOptions_LoadCATrustedCertificates(o, (a.tls_dir + "/ca.pem").c_str()), "ca");
      ok(natsOptions_LoadCertificatesChain(o, (a.tls_dir + "/client.pem").c_str(), (a.tls_dir + "/client.key").c_str()),
         "client certificate");
    }
    // A cluster's nodes may refuse clients for a moment while their routes form.
    natsStatus s = natsConnection_Connect(&nc_, o);
    for (auto until = std::chrono::steady_clock::now() + 30s; s != NATS_OK && std::chrono::steady_clock::now() < until;) {
      std::this_thread::sleep_for(200ms);
      s = natsConnection_Connect(&nc_, o);
    }
    natsOptions_Destroy(o);
    ok(s, "connect " + url);
    // A publish the stream refused (a node down, no leader for a moment) is
    // reported only here, never by js_PublishAsyncComplete: publish_async
    // counts these and throws, so a producer retries the batch.
    jsOptions jo;
    jsOptions_Init(&jo);
    jo.PublishAsync.ErrHandler = [](jsCtx*, jsPubAckErr*, void* self) {
      static_cast<nats_client*>(self)->async_failed_.fetch_add(1);
    };
    jo.PublishAsync.ErrHandlerClosure = this;
    ok(natsConnection_JetStream(&js_, nc_, &jo), "jetstream");
  }
  ~nats_client() {
    jsCtx_Destroy(js_);
    natsConnection_Destroy(nc_);
  }
  nats_client(const nats_client&) = delete;
  nats_client& operator=(const nats_client&) = delete;

  // A file-backed stream of `subjects` (e.g. "tracker.>"), kept on `replicas`
  // nodes. In a cluster that is still electing its JetStream leader this is
  // retried for up to 30 s.
  void add_stream(const std::string& name, const std::string& subjects, int replicas = 1) {
    jsStreamConfig sc;
    jsStreamConfig_Init(&sc);
    sc.Name = name.c_str();
    const char* subj[] = {subjects.c_str()};
    sc.Subjects = subj;
    sc.SubjectsLen = 1;
    sc.Storage = js_FileStorage;
    sc.Replicas = replicas;
    auto deadline = std::chrono::steady_clock::now() + 30s;
    for (;;) {
      jsStreamInfo* si = nullptr;
      jsErrCode jerr = static_cast<jsErrCode>(0);
      natsStatus s = js_AddStream(&si, js_, &sc, nullptr, &jerr);
      jsStreamInfo_Destroy(si);
      if (s == NATS_OK || std::chrono::steady_clock::now() > deadline) {
        ok(s, "add stream " + name);
        return;
      }
      std::this_thread::sleep_for(200ms);
    }
  }
  // Publishes and waits for the stream's ack of each message.
  void publish(const std::string& subject, const std::string& data) {
    jsPubAck* pa = nullptr;
    jsErrCode jerr = static_cast<jsErrCode>(0);
    ok(js_Publish(&pa, js_, subject.c_str(), data.data(), static_cast<int>(data.size()), nullptr, &jerr),
       "publish " + subject);
    jsPubAck_Destroy(pa);
  }
  // Many messages, acknowledged by the stream as a whole at the end. Throws
  // when any of them was not stored (some may have been: a retry can store a
  // message twice, as any at-least-once producer does).
  void publish_async(const std::vector<std::pair<std::string, std::string>>& msgs) {
    async_failed_.store(0);
    for (const auto& [subject, data] : msgs) {
      ok(js_PublishAsync(js_, subject.c_str(), data.data(), static_cast<int>(data.size()), nullptr), "publish");
    }
    jsPubOptions po;
    jsPubOptions_Init(&po);
    po.MaxWait = 30000;
    if (natsStatus s = js_PublishAsyncComplete(js_, &po); s != NATS_OK) {
      // Acks lost with a connection never come: left pending they would make
      // every later call time out too. The caller publishes the batch again.
      natsMsgList pending{};
      if (js_PublishAsyncGetPendingList(&pending, js_) == NATS_OK) natsMsgList_Destroy(&pending);
      ok(s, "publish complete");
    }
    if (int failed = async_failed_.load(); failed > 0) {
      throw std::runtime_error(std::to_string(failed) + " of " + std::to_string(msgs.size()) +
                               " async publishes were refused by the stream");
    }
  }

  // How many messages the stream holds now (a retried publish may store one
  // twice), or -1 when it cannot be read.
  int64_t stream_messages(const std::string& stream) {
    jsStreamInfo* si = nullptr;
    jsErrCode jerr = static_cast<jsErrCode>(0);
    if (js_GetStreamInfo(&si, js_, stream.c_str(), nullptr, &jerr) != NATS_OK) return -1;
    auto n = static_cast<int64_t>(si->State.Msgs);
    jsStreamInfo_Destroy(si);
    return n;
  }

  struct consumer_state {
    bool exists = false;
    uint64_t delivered = 0;       // consumer sequence of the last delivery
    int64_t ack_pending = 0;
    uint64_t redelivered = 0;     // messages delivered more than once, pending now
    uint64_t ack_floor = 0;       // consumer sequence all acked up to (redeliveries count)
    uint64_t ack_floor_stream = 0;  // stream sequence all acked up to
    uint64_t pending = 0;         // not yet delivered
  };
  consumer_state consumer(const std::string& stream, const std::string& name) {
    jsConsumerInfo* ci = nullptr;
    jsErrCode jerr = static_cast<jsErrCode>(0);
    consumer_state st;
    if (js_GetConsumerInfo(&ci, js_, stream.c_str(), name.c_str(), nullptr, &jerr) != NATS_OK) return st;
    st.exists = true;
    st.delivered = ci->Delivered.Consumer;
    st.ack_pending = ci->NumAckPending;
    st.redelivered = ci->NumRedelivered;
    st.ack_floor = ci->AckFloor.Consumer;
    st.ack_floor_stream = ci->AckFloor.Stream;
    st.pending = ci->NumPending;
    jsConsumerInfo_Destroy(ci);
    return st;
  }
  // Takes up to `n` messages from a durable consumer and gives each back
  // unacknowledged (NAK: redelivered at once): each counts one delivery.
  int fetch_and_nak(const std::string& stream, const std::string& durable, int n) {
    jsSubOptions so;
    jsSubOptions_Init(&so);
    so.Stream = stream.c_str();
    so.Consumer = durable.c_str();
    natsSubscription* sub = nullptr;
    jsErrCode jerr = static_cast<jsErrCode>(0);
    ok(js_PullSubscribe(&sub, js_, nullptr, durable.c_str(), nullptr, &so, &jerr), "pull subscribe");
    natsMsgList list{};
    int got = 0;
    if (natsSubscription_Fetch(&list, sub, n, 2000, &jerr) == NATS_OK) {
      for (int i = 0; i < list.Count; ++i) {
        natsMsg_Nak(list.Msgs[i], nullptr);
        ++got;
      }
      natsMsgList_Destroy(&list);
    }
    natsConnection_Flush(nc_);
    natsSubscription_Destroy(sub);
    return got;
  }
  // A durable pull consumer as evpipe creates it, with a short AckWait.
  void add_consumer(const std::string& stream, const std::string& durable, int64_t ack_wait_ms) {
    jsConsumerConfig cc;
    jsConsumerConfig_Init(&cc);
    cc.Durable = durable.c_str();
    cc.AckPolicy = js_AckExplicit;
    cc.AckWait = ack_wait_ms * 1'000'000;
    cc.MaxDeliver = -1;
    jsConsumerInfo* ci = nullptr;
    jsErrCode jerr = static_cast<jsErrCode>(0);
    ok(js_AddConsumer(&ci, js_, stream.c_str(), &cc, nullptr, &jerr), "add consumer");
    jsConsumerInfo_Destroy(ci);
  }

 private:
  static void ok(natsStatus s, const std::string& what) {
    if (s != NATS_OK) {
      throw std::runtime_error("nats " + what + ": " + natsStatus_GetText(s) + " " + nats_GetLastError(nullptr));
    }
  }
  natsConnection* nc_ = nullptr;
  jsCtx* js_ = nullptr;
  std::atomic<int> async_failed_{0};  // refused async publishes (the ErrHandler above)
};

}  // namespace evpipe::testing
