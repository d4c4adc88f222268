#pragma once
// Test helper: reads binary COPY tuples back into fields (nullopt = NULL).
#include <cstdint>
#include <cstring>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace evpipe::stages::route::testing {

using field = std::optional<std::string>;

inline uint32_t be32(const char* p) {
  auto* u = reinterpret_cast<const unsigned char*>(p);
  return (uint32_t(u[0]) << 24) | (uint32_t(u[1]) << 16) | (uint32_t(u[2]) << 8) | u[3];
}
inline uint64_t be64(std::string_view s) { return (uint64_t(be32(s.data())) << 32) | be32(s.data() + 4); }
inline int32_t as_int4(const field& f) { return static_cast<int32_t>(be32(f->data())); }
inline int64_t as_int8(const field& f) { return static_cast<int64_t>(be64(*f)); }
inline double as_float8(const field& f) {
  uint64_t b = be64(*f);
  double d;
  std::memcpy(&d, &b, 8);
  return d;
}

// Every tuple in `s` (no header/trailer), each as its fields.
inline std::vector<std::vector<field>> read_tuples(std::string_view s) {
  std::vector<std::vector<field>> out;
  size_t p = 0;
  while (p < s.size()) {
    uint16_t n = static_cast<uint16_t>((uint8_t(s[p]) << 8) | uint8_t(s[p + 1]));
    p += 2;
    std::vector<field> row;
    for (uint16_t i = 0; i < n; ++i) {
      uint32_t len = be32(s.data() + p);
      p += 4;
      if (len == 0xFFFFFFFFu) {
        row.emplace_back(std::nullopt);
      } else {
        row.emplace_back(std::string(s.substr(p, len)));
        p += len;
      }
    }
    out.push_back(std::move(row));
  }
  return out;
}

}  // namespace evpipe::stages::route::testing
