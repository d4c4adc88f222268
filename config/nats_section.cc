#include <toml++/toml.h>

#include "config/config.h"
#include "config/reader.h"
#include "config/source_sections.h"

namespace evpipe::config::detail {

namespace {

// A JetStream subject token list: tokens separated by '.', no empty token, no
// blanks; '*' and '>' (last) as wildcards in filters.
bool valid_subject_filter(std::string_view s) {
  if (s.empty()) return false;
  size_t start = 0;
  for (;;) {
    size_t dot = s.find('.', start);
    std::string_view tok = s.substr(start, dot == std::string_view::npos ? std::string_view::npos : dot - start);
    if (tok.empty() || tok.find_first_of(" \t\r\n") != std::string_view::npos) return false;
    if (tok == ">" && dot != std::string_view::npos) return false;
    if (tok.size() > 1 && tok.find_first_of("*>") != std::string_view::npos) return false;
    if (dot == std::string_view::npos) return true;
    start = dot + 1;
  }
}

// Stream and consumer names: JetStream refuses these characters in them.
bool valid_name(std::string_view n) {
  return !n.empty() && n.size() <= 200 && n.find_first_of(" \t\r\n.*>/\\") == std::string_view::npos;
}

}  // namespace

nats_source parse_nats(const toml::table& t, const std::string& where, const std::string& origin,
                       const std::string& base_dir) {
  table_reader r(t, where, origin);
  nats_source n;
  r.str_list("servers", n.servers);
  r.str("stream", n.stream, false);
  r.str("durable", n.durable, false);
  r.str_list("filter_subjects", n.filter_subjects);
  r.str("creds_file", n.creds_file);
  r.str("token_file", n.token_file);
  r.str("user", n.user);
  r.str("password_file", n.password_file);
  r.str("ca_file", n.ca_file);
  r.str("cert_file", n.cert_file);
  r.str("key_file", n.key_file);
  r.uint("max_ack_pending", n.max_ack_pending, 1, 1u << 20);
  r.uint("fetch_batch", n.fetch_batch, 1, 65536);
  r.uint("max_deliveries", n.max_deliveries, 0, 1'000'000);
  r.uint("ack_wait_s", n.ack_wait_s, 3, 86'400);
  r.str("topic_separator", n.topic_separator, false);
  r.reject_unknown();
  for (auto* file : {&n.creds_file, &n.token_file, &n.password_file, &n.ca_file, &n.cert_file, &n.key_file}) {
    *file = resolve_path(*file, base_dir);
  }

  if (n.servers.empty()) r.fail("servers", "is required: at least one \"nats://host:port\"");
  for (const auto& s : n.servers) {
    if (!s.starts_with("nats://") && !s.starts_with("tls://")) {
      r.fail("servers", "\"" + s + "\" must start with nats:// or tls://");
    }
    // Credentials go in their own keys, where they are kept out of logs.
    if (s.find('@') != std::string::npos) r.fail("servers", "must not hold credentials: use user/password_file, token_file or creds_file");
  }
  if (n.stream.empty()) r.fail("stream", "is required: the JetStream stream to read");
  if (!valid_name(n.stream)) r.fail("stream", "\"" + n.stream + "\" is not a valid stream name");
  if (!valid_name(n.durable)) r.fail("durable", "\"" + n.durable + "\" is not a valid consumer name (no '.', '*', '>', blanks)");
  for (const auto& f : n.filter_subjects) {
    if (!valid_subject_filter(f)) r.fail("filter_subjects", "\"" + f + "\" is not a valid subject filter");
  }
  int kinds = int(!n.creds_file.empty()) + int(!n.token_file.empty()) + int(!n.user.empty() || !n.password_file.empty());
  if (kinds > 1) r.fail("creds_file", "creds_file, token_file and user/password_file are alternatives: set one");
  if (n.user.empty() != n.password_file.empty()) r.fail("user", "user and password_file go together");
  if (!n.token_file.empty()) n.token = read_secret(n.token_file, r, "token_file");
  if (!n.password_file.empty()) n.password = read_secret(n.password_file, r, "password_file");
  if (n.cert_file.empty() != n.key_file.empty()) r.fail("cert_file", "cert_file and key_file go together");
  if (n.fetch_batch > n.max_ack_pending) r.fail("fetch_batch", "must not be above max_ack_pending");
  if (n.topic_separator.size() > 4) r.fail("topic_separator", "must be at most 4 bytes");
  parse_source_tenancy(r, n.tenancy, "nats", base_dir);
  return n;
}

toml::table nats_to_toml(const nats_source& n) {
  toml::array servers, filters;
  for (const auto& s : n.servers) servers.push_back(s);
  for (const auto& f : n.filter_subjects) filters.push_back(f);
  toml::table t{{"servers", std::move(servers)},
                {"stream", n.stream},
                {"durable", n.durable},
                {"filter_subjects", std::move(filters)},
                {"max_ack_pending", int64_t(n.max_ack_pending)},
                {"fetch_batch", int64_t(n.fetch_batch)},
                {"max_deliveries", int64_t(n.max_deliveries)},
                {"ack_wait_s", int64_t(n.ack_wait_s)},
                {"topic_separator", n.topic_separator}};
  // Files are named, the secrets in them never.
  for (auto [key, value] : {std::pair{"creds_file", &n.creds_file}, {"token_file", &n.token_file}, {"user", &n.user},
                            {"password_file", &n.password_file}, {"ca_file", &n.ca_file}, {"cert_file", &n.cert_file},
                            {"key_file", &n.key_file}}) {
    if (!value->empty()) t.insert(key, *value);
  }
  return t;
}

}  // namespace evpipe::config::detail
