// `evpipe check-config --check-db` run on a config the test writes: the
// startup checks against the database, without starting evpipe.
#pragma once

#include <sys/wait.h>

#include <cstdlib>
#include <fstream>
#include <iterator>
#include <string>

#include "tests/support/harness.h"

namespace evpipe::testing {

// Writes `config` to a folder of its own (`name` tells tests apart), runs
// check-config --check-db on it; returns the exit code, stderr in `err`.
inline int check_config_db(const std::string& config, const std::string& name, std::string& err) {
  std::string dir = env_or("TMPDIR", "/tmp") + "/evpipe_it_" + std::to_string(::getpid()) + "_" + name;
  if (std::system(("mkdir -p '" + dir + "'").c_str()) != 0) return -1;
  std::ofstream(dir + "/evpipe.toml") << config;
  std::string cmd = evpipe_binary() + " check-config --check-db --config '" + dir + "/evpipe.toml' > '" + dir +
                    "/out' 2> '" + dir + "/err'";
  int rc = std::system(cmd.c_str());
  std::ifstream in(dir + "/err");
  err.assign(std::istreambuf_iterator<char>(in), {});
  return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

}  // namespace evpipe::testing
