#pragma once
// Test support for the PostgreSQL deployment tests: a scratch database of its
// own in the test cluster (for what cannot be confined to a schema, such as a
// pooler that refuses the `options` startup parameter), a PostgreSQL cluster
// of its own (for what changes a whole server, such as making it read-only),
// and Debian's PgBouncer run on a loopback port with its own ini file.
// Header-only.

#include <libpq-fe.h>

#include <cstdio>
#include <fstream>
#include <map>
#include <stdexcept>
#include <string>
#include <vector>

#include "tests/support/harness.h"

namespace evpipe::testing {

// The keywords of a libpq connection string or URI (host, port, user, ...).
inline std::map<std::string, std::string> dsn_keywords(const std::string& dsn) {
  char* err = nullptr;
  PQconninfoOption* opts = PQconninfoParse(dsn.c_str(), &err);
  if (!opts) {
    std::string why = err ? err : "cannot parse";
    PQfreemem(err);
    throw std::runtime_error("DSN: " + why);
  }
  std::map<std::string, std::string> out;
  for (auto* o = opts; o->keyword; ++o) {
    if (o->val && *o->val) out[o->keyword] = o->val;
  }
  PQconninfoFree(opts);
  if (!out.count("user")) out["user"] = env_or("PGUSER", env_or("USER", "postgres").c_str());
  if (!out.count("host")) out["host"] = "127.0.0.1";
  if (!out.count("port")) out["port"] = "5432";
  return out;
}

// A database created for one test in the cluster of EVPIPE_TEST_DSN and
// dropped (with its connections) afterwards.
class scratch_database {
 public:
  explicit scratch_database(const std::string& base_dsn, const std::string& name)
      : keys_(dsn_keywords(base_dsn)), name_(name) {
    admin_ = PQconnectdb(base_dsn.c_str());
    if (PQstatus(admin_) != CONNECTION_OK) throw std::runtime_error(PQerrorMessage(admin_));
    PQsetNoticeProcessor(admin_, [](void*, const char*) {}, nullptr);
    run(admin_, "DROP DATABASE IF EXISTS " + name_ + " WITH (FORCE)");
    run(admin_, "CREATE DATABASE " + name_);
    conn_ = PQconnectdb(dsn().c_str());
    if (PQstatus(conn_) != CONNECTION_OK) throw std::runtime_error(PQerrorMessage(conn_));
    PQsetNoticeProcessor(conn_, [](void*, const char*) {}, nullptr);
  }
  ~scratch_database() {
    PQfinish(conn_);
    try {
      if (env_or("EVPIPE_TEST_KEEP").empty()) run(admin_, "DROP DATABASE IF EXISTS " + name_ + " WITH (FORCE)");
      for (const auto& role : roles_) run(admin_, "DROP ROLE IF EXISTS " + role);
    } catch (const std::exception&) {
    }
    PQfinish(admin_);
  }
  // Drops `role` (cluster-wide) once the database is gone.
  void drop_role(const std::string& role) { roles_.push_back(role); }
  // A key=value DSN straight to the server.
  [[nodiscard]] std::string dsn() const {
    return "host=" + host() + " port=" + port() + " user=" + user() + " dbname=" + name_;
  }
  [[nodiscard]] const std::string& name() const { return name_; }
  [[nodiscard]] std::string host() const { return keys_.at("host"); }
  [[nodiscard]] std::string port() const { return keys_.at("port"); }
  [[nodiscard]] std::string user() const { return keys_.at("user"); }
  void exec(const std::string& sql) { run(conn_, sql); }
  long count(const std::string& sql) {
    PGresult* r = PQexec(conn_, sql.c_str());
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
      std::string err = PQresultErrorMessage(r);
      PQclear(r);
      throw std::runtime_error(sql + ": " + err);
    }
    long n = std::stol(PQgetvalue(r, 0, 0));
    PQclear(r);
    return n;
  }

 private:
  static void run(PGconn* c, const std::string& sql) {
    PGresult* r = PQexec(c, sql.c_str());
    auto st = PQresultStatus(r);
    std::string err = PQresultErrorMessage(r);
    PQclear(r);
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) throw std::runtime_error(sql + ": " + err);
  }
  std::map<std::string, std::string> keys_;
  std::vector<std::string> roles_;
  std::string name_;
  PGconn* admin_ = nullptr;
  PGconn* conn_ = nullptr;
};

// A private PostgreSQL cluster on a loopback port, in a scratch directory,
// stopped and removed afterwards; trust auth for the same user as the test
// cluster (the cluster's OS user when running as root, as scripts/lib.sh does).
class scratch_cluster {
 public:
  explicit scratch_cluster(const std::string& name) {
    user_ = dsn_keywords(env_or("EVPIPE_TEST_DSN")).at("user");
    dir_ = env_or("TMPDIR", "/tmp") + "/evpipe_cluster_" + std::to_string(::getpid()) + "_" + name;
    port_ = free_port();
    std::string bin = pg_bin();
    sh("rm -rf '" + dir_ + "' && mkdir -p '" + dir_ + "'" + (::geteuid() == 0 ? " && chown postgres '" + dir_ + "'" : ""));
    sh(as_owner("'" + bin + "/initdb' -D '" + dir_ + "/data' -U " + user_ + " -A trust -E UTF8 --locale=C.UTF-8") +
       " >'" + dir_ + "/initdb.log' 2>&1");
    std::ofstream(dir_ + "/data/postgresql.conf", std::ios::app)
        << "listen_addresses = '127.0.0.1'\nport = " << port_ << "\nunix_socket_directories = '" << dir_
        << "'\nshared_buffers = 32MB\nmax_connections = 30\nlogging_collector = off\n";
    sh(as_owner("'" + bin + "/pg_ctl' -D '" + dir_ + "/data' -l '" + dir_ + "/postgres.log' -w -t 60 start") +
       " >/dev/null");
    started_ = true;
  }
  ~scratch_cluster() {
    if (started_) {
      (void)std::system((as_owner("'" + pg_bin() + "/pg_ctl' -D '" + dir_ + "/data' -m immediate -w stop") +
                         " >/dev/null 2>&1").c_str());
    }
    if (env_or("EVPIPE_TEST_KEEP").empty()) (void)std::system(("rm -rf '" + dir_ + "'").c_str());
  }
  [[nodiscard]] uint16_t port() const { return port_; }
  [[nodiscard]] std::string dsn(const std::string& dbname = "postgres") const {
    return "host=127.0.0.1 port=" + std::to_string(port_) + " user=" + user_ + " dbname=" + dbname;
  }

 private:
  static std::string pg_bin() {
    std::string bin = env_or("EVPIPE_TEST_PG_BIN");
    if (!bin.empty()) return bin;
    FILE* p = ::popen("ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1", "r");
    char buf[512] = {};
    if (p && std::fgets(buf, sizeof buf, p)) bin = buf;
    if (p) ::pclose(p);
    while (!bin.empty() && bin.back() == '\n') bin.pop_back();
    if (bin.empty()) throw std::runtime_error("PostgreSQL server binaries not found under /usr/lib/postgresql");
    return bin;
  }
  static std::string as_owner(const std::string& cmd) {
    return ::geteuid() == 0 ? "runuser -u postgres -- " + cmd : cmd;
  }
  void sh(const std::string& cmd) {
    if (std::system(cmd.c_str()) != 0) {
      std::ifstream in(dir_ + "/initdb.log");
      throw std::runtime_error("failed: " + cmd + "\n" + std::string(std::istreambuf_iterator<char>(in), {}));
    }
  }
  std::string user_, dir_;
  uint16_t port_ = 0;
  bool started_ = false;
};

// Debian's PgBouncer (EVPIPE_TEST_PGBOUNCER, else /usr/sbin/pgbouncer) on a
// loopback port, in front of one scratch database, with trust auth through an
// auth file. `extra` goes into the [pgbouncer] section (pool_mode etc.).
class pgbouncer_process {
 public:
  static std::string binary() { return env_or("EVPIPE_TEST_PGBOUNCER", "/usr/sbin/pgbouncer"); }
  static bool available() { return ::access(binary().c_str(), X_OK) == 0; }

  pgbouncer_process(const scratch_database& db, const std::string& extra) : user_(db.user()) {
    dir_ = env_or("TMPDIR", "/tmp") + "/evpipe_pgbouncer_" + std::to_string(::getpid()) + "_" + db.name();
    std::string mk = "mkdir -p '" + dir_ + "'";
    if (std::system(mk.c_str()) != 0) throw std::runtime_error("mkdir " + dir_);
    port_ = free_port();
    std::ofstream(dir_ + "/users.txt") << "\"" << user_ << "\" \"\"\n";
    std::ofstream(dir_ + "/pgbouncer.ini")
        << "[databases]\n"
        << db.name() << " = host=" << db.host() << " port=" << db.port() << " dbname=" << db.name()
        << " user=" << user_ << "\n"
        << "[pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = " << port_ << "\nunix_socket_dir =\n"
        << "auth_type = trust\nauth_file = " << dir_ << "/users.txt\nadmin_users = " << user_ << "\n"
        << "logfile = " << dir_ << "/pgbouncer.log\npidfile = " << dir_ << "/pgbouncer.pid\n"
        << "ignore_startup_parameters = extra_float_digits\n" << extra << "\n";
    // PgBouncer refuses to run as root; then it runs as the cluster's user,
    // which must be able to write its log in the scratch directory.
    std::vector<std::string> args{binary()};
    if (::geteuid() == 0) {
      std::string own = "chown -R '" + user_ + "' '" + dir_ + "'";
      if (std::system(own.c_str()) != 0) throw std::runtime_error(own);
      args.insert(args.end(), {"-u", user_});
    }
    args.push_back(dir_ + "/pgbouncer.ini");
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    // It logs to its logfile and to stderr: keep stderr out of the test output.
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 2, (dir_ + "/stderr.log").c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    int rc = posix_spawn(&pid_, argv[0], &fa, nullptr, argv.data(), environ);
    posix_spawn_file_actions_destroy(&fa);
    if (rc != 0) throw std::runtime_error("cannot start " + binary());
    auto deadline = std::chrono::steady_clock::now() + 20s;
    while (std::chrono::steady_clock::now() < deadline) {
      try {
        ::close(connect_loopback(port_));
        return;
      } catch (const std::exception&) {
      }
      int status;
      if (::waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
        throw std::runtime_error("pgbouncer exited at startup: " + log());
      }
      std::this_thread::sleep_for(20ms);
    }
    throw std::runtime_error("pgbouncer did not listen in time: " + log());
  }
  ~pgbouncer_process() {
    if (pid_ > 0) {
      ::kill(pid_, SIGTERM);
      ::waitpid(pid_, nullptr, 0);
    }
  }
  [[nodiscard]] uint16_t port() const { return port_; }
  // A DSN to `dbname` through the pooler.
  [[nodiscard]] std::string dsn(const std::string& dbname) const {
    return "host=127.0.0.1 port=" + std::to_string(port_) + " user=" + user_ + " dbname=" + dbname;
  }
  // Runs one command on the admin console (RECONNECT, SET, SHOW ...).
  void admin(const std::string& command) {
    PGconn* c = PQconnectdb(dsn("pgbouncer").c_str());
    if (PQstatus(c) != CONNECTION_OK) {
      std::string err = PQerrorMessage(c);
      PQfinish(c);
      throw std::runtime_error("pgbouncer admin: " + err);
    }
    PGresult* r = PQexec(c, command.c_str());
    auto st = PQresultStatus(r);
    std::string err = PQresultErrorMessage(r);
    PQclear(r);
    PQfinish(c);
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) throw std::runtime_error(command + ": " + err);
  }
  [[nodiscard]] std::string log() const {
    std::ifstream in(dir_ + "/pgbouncer.log");
    return std::string(std::istreambuf_iterator<char>(in), {});
  }

 private:
  std::string user_, dir_;
  uint16_t port_ = 0;
  pid_t pid_ = -1;
};

}  // namespace evpipe::testing
