#pragma once
// [stream]: the read side's live stream of committed events (read/stream,
// docs/read.md). Part of config::settings; parsed by detail::parse_stream()
// (config/reader.h, stream_section.cc).

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace evpipe::config {

struct stream_section {
  // GET /v1/stream (Server-Sent Events); "" disables. When the key is not in
  // the file, the default address is taken only if it is free (a second
  // evpipe on the host runs without a stream, with a warning).
  std::string listen = "127.0.0.1:9465";
  bool listen_set = false;                      // the file names listen
  uint32_t max_clients = 64;                    // further clients get 503
  uint32_t max_filters = 32;                    // topics + kinds of a client's subscriptions, all together
  uint32_t max_client_buffer_bytes = 8u << 20;  // a client holding more falls back to catch-up from the table (docs/read.md)
  uint32_t poll_ms = 20;                        // how often the tail reads past the last position
  bool wake_on_commit = true;                   // also read soon after a shard of this process commits (paced)
  uint32_t writer_threads = 0;                  // threads writing the tail's reads to the sockets; 0: one per core, at most 4
  uint32_t max_fanout_writes_per_s = 20'000;    // paces the reads commits start (a write per live client each); 0: none
  uint32_t heartbeat_s = 15;                    // an SSE comment line when idle this long
  std::string bearer_token_file;                // "" = no authentication; else file holding the token
  std::string bearer_token;                     // read from bearer_token_file at load; never printed
  // "<token> <tenant>" per line: a client with one of these tokens gets only
  // its tenant's events, whatever it asks for (docs/tenants.md); "" = none.
  std::string tokens_file;
  std::vector<std::pair<std::string, std::string>> tokens;  // read from tokens_file at load; never printed
};

}  // namespace evpipe::config
