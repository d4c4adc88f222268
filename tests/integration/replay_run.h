#pragma once
// `evpipe replay` run as a user runs it (its config in `dir`), with what it
// printed: for the replay integration tests.

#include <sys/wait.h>

#include <cstdlib>
#include <fstream>
#include <iterator>
#include <sstream>
#include <string>
#include <vector>

namespace evpipe::testing {

struct replay_result {
  int exit_code = -1;
  std::vector<std::string> lines;  // stdout
  std::string err;                 // stderr
  std::string last_position;       // from "last position: ..."
};

inline replay_result run_replay(const std::string& binary, const std::string& dir, const std::string& args) {
  auto text_of = [](const std::string& path) {
    std::ifstream in(path);
    return std::string(std::istreambuf_iterator<char>(in), {});
  };
  replay_result r;
  std::string out = dir + "/replay.out", err = dir + "/replay.err";
  std::string cmd = binary + " replay --config " + dir + "/evpipe.toml " + args + " >" + out + " 2>" + err;
  int status = std::system(cmd.c_str());
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  std::istringstream lines(text_of(out));
  for (std::string l; std::getline(lines, l);) r.lines.push_back(l);
  r.err = text_of(err);
  auto at = r.err.find("last position: ");
  if (at != std::string::npos) r.last_position = r.err.substr(at + 15, r.err.find('\n', at) - at - 15);
  return r;
}

}  // namespace evpipe::testing
