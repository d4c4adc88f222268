#pragma once
// What `evpipe --version` prints: the release, the git commit it was built
// from, and the versions of the libraries that decide its behaviour.

#include <string>

namespace evpipe::app {

// Several lines: "evpipe 0.1.0", "commit <hash>" ("unknown" when built outside
// git), then one line per library (compiled-against, and run-time where the
// library can say: libpq, OpenSSL, simdjson's chosen kernel).
[[nodiscard]] std::string version_text();

}  // namespace evpipe::app
