// Internal to evpipe::config: reading one TOML table with typed, bounded keys,
// and the small rules several sections share. Not part of the public API.
#pragma once

#include <re2/re2.h>
#include <toml++/toml.h>

#include <cstdint>
#include <cstdlib>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "config/config.h"

namespace evpipe::config::detail {

// The config's pattern checks: RE2 over a value's bytes, in linear time and
// without recursion whatever the value's length (libstdc++'s std::regex
// recursed once a byte, and a long value overflowed the stack). Latin-1
// mode, as std::regex matched bytes: `[^@]` and `.` take any byte, not only
// valid UTF-8 (a DSN's password from ${ENV} can hold any).
inline const RE2::Options& byte_patterns() {
  static const RE2::Options options = [] {
    RE2::Options o;
    o.set_encoding(RE2::Options::EncodingLatin1);
    return o;
  }();
  return options;
}

// Reads keys of one table, checking types and bounds, and remembers which keys
// it knows so that the rest can be reported as unknown.
class table_reader {
 public:
  table_reader(const toml::table& t, std::string where, const std::string& origin)
      : t_(t), where_(std::move(where)), origin_(origin) {}

  template <typename U>
  void uint(const char* key, U& dst, uint64_t lo, uint64_t hi) {
    known_.insert(key);
    const toml::node* n = t_.get(key);
    if (!n) return;
    // The type first: value<int64_t>() converts a float, which is undefined
    // behaviour out of int64_t's range (655e36, found by config_fuzz).
    if (!n->is_integer()) fail(key, "must be an integer");
    auto v = n->value<int64_t>();
    if (!v) fail(key, "must be an integer");
    if (*v < 0 || static_cast<uint64_t>(*v) < lo || static_cast<uint64_t>(*v) > hi) {
      fail(key, "must be between " + std::to_string(lo) + " and " + std::to_string(hi) + ", got " +
                    std::to_string(*v));
    }
    dst = static_cast<U>(*v);
  }

  void str(const char* key, std::string& dst, bool allow_empty = true) {
    known_.insert(key);
    const toml::node* n = t_.get(key);
    if (!n) return;
    if (!n->is_string()) fail(key, "must be a string");
    dst = expand(key, *n->value<std::string>());
    if (!allow_empty && dst.empty()) fail(key, "must not be empty");
  }

  void boolean(const char* key, bool& dst) {
    known_.insert(key);
    const toml::node* n = t_.get(key);
    if (!n) return;
    if (!n->is_boolean()) fail(key, "must be true or false");
    dst = *n->value<bool>();
  }

  void str_list(const char* key, std::vector<std::string>& dst) {
    known_.insert(key);
    const toml::node* n = t_.get(key);
    if (!n) return;
    if (!n->is_array()) fail(key, "must be an array of strings");
    dst.clear();
    for (auto& item : *n->as_array()) {
      if (!item.is_string()) fail(key, "must be an array of strings");
      dst.push_back(expand(key, *item.value<std::string>()));
    }
  }

  // ${NAME} and ${NAME:-default} from the environment, $$ for a literal $;
  // any other $ stays as it is.
  [[nodiscard]] std::string expand(const char* key, const std::string& text) const {
    if (text.find('$') == std::string::npos) return text;
    std::string out;
    for (size_t i = 0; i < text.size(); ++i) {
      if (text[i] != '$' || i + 1 == text.size()) {
        out.push_back(text[i]);
        continue;
      }
      if (text[i + 1] == '$') {
        out.push_back('$');
        ++i;
        continue;
      }
      if (text[i + 1] != '{') {
        out.push_back('$');
        continue;
      }
      size_t close = text.find('}', i + 2);
      if (close == std::string::npos) fail(key, "\"${\" without a closing \"}\" (write $$ for a literal $)");
      std::string inner = text.substr(i + 2, close - i - 2);
      std::string name = inner, fallback;
      bool has_default = false;
      if (auto d = inner.find(":-"); d != std::string::npos) {
        name = inner.substr(0, d);
        fallback = inner.substr(d + 2);
        has_default = true;
      }
      static const RE2 var_re("[A-Za-z_][A-Za-z0-9_]*", byte_patterns());
      if (!RE2::FullMatch(name, var_re)) fail(key, "\"${" + inner + "}\" is not a valid variable reference");
      const char* v = std::getenv(name.c_str());
      if (v && *v) {
        out += v;
      } else if (has_default) {
        out += fallback;
      } else {
        fail(key, "environment variable " + name + " is not set (give a default with ${" + name + ":-value})");
      }
      i = close;
    }
    return out;
  }

  [[noreturn]] void fail(const std::string& key, const std::string& problem) const {
    throw config_error(origin_ + ": " + where_ + " " + key + ": " + problem);
  }

  // A key read by other means (a sub-table), so that reject_unknown() passes it.
  void known(const char* key) { known_.insert(key); }

  void reject_unknown() const {
    for (auto&& [k, v] : t_) {
      if (!known_.count(std::string(k.str()))) {
        throw config_error(origin_ + ": " + where_ + ": unknown key \"" + std::string(k.str()) + "\"");
      }
    }
  }

 private:
  const toml::table& t_;
  std::string where_;
  const std::string& origin_;
  std::set<std::string> known_;
};

const toml::table* section(const toml::table& root, const char* name, const std::string& origin);

// The first line of a secret file (password, token), without its line break.
std::string read_secret(const std::string& path, table_reader& r, const char* key);

// MQTT topic filter rules (MQTT 3.1.1 section 4.7): '+' and '#' only as whole
// levels, '#' only last, no U+0000.
bool valid_filter(std::string_view f);

// Characters of UTF-8 text (config does not depend on stages/).
size_t utf8_chars(std::string_view s);

// A file named in the config: relative paths are taken from the config
// file's folder, so that a service started from / finds them.
std::string resolve_path(const std::string& path, const std::string& base_dir);

// [stream] (config/stream_section.cc).
stream_section parse_stream(const toml::table& t, const std::string& origin, const std::string& base_dir);

// [storage] (config/storage_section.cc).
storage_section parse_storage(const toml::table& t, const std::string& origin);

// [schemas] (config/schemas_section.cc).
schemas_section parse_schemas(const toml::table& t, const std::string& origin, const std::string& base_dir);

// A TCP or HTTP source's route_by: "key" (the default) or "connection".
void parse_route_by(table_reader& r, std::string& route_by);

// [tenants] and each source's tenant keys (config/tenants_section.cc). `kind`:
// "tcp", "mqtt" or "http" (tenant_topic and tenant_property are MQTT's, tokens_file HTTP's).
tenants_section parse_tenants(const toml::table& t, const std::string& origin);
void parse_source_tenancy(table_reader& r, source_tenancy& t, std::string_view kind, const std::string& base_dir);
// A tokens file ("<token> <tenant>" per line, # comments) named by `key`;
// `path` is resolved against base_dir.
void read_tokens_file(table_reader& r, const char* key, std::string& path,
                      std::vector<std::pair<std::string, std::string>>& tokens, const std::string& base_dir);

}  // namespace evpipe::config::detail
