#include "app/version.h"

#include <boost/version.hpp>
#include <libpq-fe.h>
#include <openssl/crypto.h>
#include <openssl/opensslv.h>
#include <simdjson.h>
#include <spdlog/version.h>
#include <toml++/toml.h>
#ifdef EVPIPE_WITH_MIMALLOC
#include <mimalloc.h>
#endif

#include <string>

#ifndef EVPIPE_VERSION
#define EVPIPE_VERSION "unknown"
#endif
#ifndef EVPIPE_GIT_COMMIT
#define EVPIPE_GIT_COMMIT "unknown"
#endif

namespace evpipe::app {

namespace {

std::string dotted(int major, int minor, int patch) {
  return std::to_string(major) + "." + std::to_string(minor) + "." + std::to_string(patch);
}

}  // namespace

std::string version_text() {
  std::string out = "evpipe " EVPIPE_VERSION "\ncommit " EVPIPE_GIT_COMMIT "\n";
  // PQlibVersion() is the libpq loaded at run time, e.g. 150010 for 15.10.
  int pq = PQlibVersion();
  out += "libpq " + std::to_string(pq / 10000) + "." + std::to_string(pq % 10000) + "\n";
  // simdjson picks its kernel at run time from the CPU (haswell, westmere, fallback...).
  out += "simdjson " + dotted(simdjson::SIMDJSON_VERSION_MAJOR, simdjson::SIMDJSON_VERSION_MINOR,
                              simdjson::SIMDJSON_VERSION_REVISION) +
         " (kernel " + simdjson::get_active_implementation()->name() + ")\n";
  out += "boost " + dotted(BOOST_VERSION / 100000, BOOST_VERSION / 100 % 1000, BOOST_VERSION % 100) + "\n";
  out += "spdlog " + dotted(SPDLOG_VER_MAJOR, SPDLOG_VER_MINOR, SPDLOG_VER_PATCH) + "\n";
  out += "tomlplusplus " + dotted(TOML_LIB_MAJOR, TOML_LIB_MINOR, TOML_LIB_PATCH) + "\n";
  out += std::string("openssl ") + OpenSSL_version(OPENSSL_VERSION) + "\n";
#ifdef EVPIPE_WITH_MIMALLOC
  // MI_MALLOC_VERSION 209 is 2.0.9.
  out += "mimalloc " + dotted(MI_MALLOC_VERSION / 100, MI_MALLOC_VERSION / 10 % 10, MI_MALLOC_VERSION % 10) + "\n";
#endif
  out.pop_back();  // CLI11 adds the last newline
  return out;
}

}  // namespace evpipe::app
