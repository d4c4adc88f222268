#include "config/reader.h"

#include <fstream>

namespace evpipe::config::detail {

const toml::table* section(const toml::table& root, const char* name, const std::string& origin) {
  const toml::node* n = root.get(name);
  if (!n) return nullptr;
  if (!n->is_table()) throw config_error(origin + ": [" + name + "] must be a table");
  return n->as_table();
}

std::string read_secret(const std::string& path, table_reader& r, const char* key) {
  std::ifstream in(path);
  if (!in) r.fail(key, "cannot read \"" + path + "\"");
  std::string line;
  std::getline(in, line);
  if (!line.empty() && line.back() == '\r') line.pop_back();
  if (line.empty()) r.fail(key, "\"" + path + "\" is empty");
  return line;
}

bool valid_filter(std::string_view f) {
  if (f.empty() || f.size() > 65535 || f.find('\0') != std::string_view::npos) return false;
  size_t start = 0;
  for (;;) {
    size_t end = f.find('/', start);
    std::string_view level = f.substr(start, end == std::string_view::npos ? std::string_view::npos : end - start);
    if (level.find_first_of("+#") != std::string_view::npos && level.size() != 1) return false;
    if (level == "#" && end != std::string_view::npos) return false;
    if (end == std::string_view::npos) return true;
    start = end + 1;
  }
}

size_t utf8_chars(std::string_view s) {
  size_t n = 0;
  for (unsigned char c : s) n += (c & 0xC0) != 0x80;
  return n;
}

std::string resolve_path(const std::string& path, const std::string& base_dir) {
  if (path.empty() || path.front() == '/' || base_dir.empty()) return path;
  return base_dir + "/" + path;
}

void parse_route_by(table_reader& r, std::string& route_by) {
  r.str("route_by", route_by);
  if (route_by != "key" && route_by != "connection") r.fail("route_by", "must be \"key\" or \"connection\"");
}

}  // namespace evpipe::config::detail
