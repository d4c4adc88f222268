#include "config/stream_section.h"

#include "config/reader.h"

namespace evpipe::config::detail {

stream_section parse_stream(const toml::table& t, const std::string& origin, const std::string& base_dir) {
  table_reader r(t, "[stream]", origin);
  stream_section s;
  s.listen_set = t.contains("listen");
  r.str("listen", s.listen);
  r.uint("max_clients", s.max_clients, 1, 100'000);
  r.uint("max_filters", s.max_filters, 1, 10'000);
  r.uint("max_client_buffer_bytes", s.max_client_buffer_bytes, 4096, 1u << 30);
  r.uint("poll_ms", s.poll_ms, 1, 10'000);
  r.boolean("wake_on_commit", s.wake_on_commit);
  r.uint("writer_threads", s.writer_threads, 0, 64);
  r.uint("max_fanout_writes_per_s", s.max_fanout_writes_per_s, 0, 100'000'000);
  r.uint("heartbeat_s", s.heartbeat_s, 1, 3600);
  r.str("bearer_token_file", s.bearer_token_file);
  r.str("tokens_file", s.tokens_file);
  r.reject_unknown();
  if (!s.tokens_file.empty()) read_tokens_file(r, "tokens_file", s.tokens_file, s.tokens, base_dir);
  if (!s.listen.empty()) (void)parse_listen(s.listen, origin + ": [stream] listen");
  s.bearer_token_file = resolve_path(s.bearer_token_file, base_dir);
  if (!s.bearer_token_file.empty()) s.bearer_token = read_secret(s.bearer_token_file, r, "bearer_token_file");
  return s;
}

}  // namespace evpipe::config::detail
