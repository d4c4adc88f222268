#include "io/sources/http/content_coding.h"

#include <zlib.h>

#include <algorithm>
#include <cctype>

namespace evpipe::io {

namespace {

bool iequals(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return std::tolower(static_cast<unsigned char>(x)) == std::tolower(static_cast<unsigned char>(y));
         });
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

// A zlib (RFC 1950) header: deflate method, a window zlib can use, and the
// check bits. Otherwise an HTTP "deflate" body is taken as raw deflate.
bool has_zlib_header(std::string_view in) {
  if (in.size() < 2) return false;
  auto cmf = static_cast<unsigned char>(in[0]), flg = static_cast<unsigned char>(in[1]);
  return (cmf & 0x0F) == 8 && (cmf >> 4) <= 7 && ((cmf << 8) | flg) % 31 == 0;
}

// inflate's state, ended on every path.
struct inflater {
  z_stream zs{};
  bool ready = false;
  explicit inflater(int window_bits) { ready = inflateInit2(&zs, window_bits) == Z_OK; }
  ~inflater() {
    if (ready) inflateEnd(&zs);
  }
  inflater(const inflater&) = delete;
  inflater& operator=(const inflater&) = delete;
};

}  // namespace

content_coding coding_of(std::string_view header) noexcept {
  content_coding found = content_coding::identity;
  while (!header.empty()) {
    size_t comma = header.find(',');
    std::string_view item = trim(header.substr(0, comma));
    header = comma == std::string_view::npos ? std::string_view{} : header.substr(comma + 1);
    if (item.empty() || iequals(item, "identity")) continue;
    content_coding c = content_coding::unsupported;
    if (iequals(item, "gzip") || iequals(item, "x-gzip")) c = content_coding::gzip;
    if (iequals(item, "deflate")) c = content_coding::deflate;
    // One coding at most: stacked codings are rare enough to refuse.
    if (c == content_coding::unsupported || found != content_coding::identity) return content_coding::unsupported;
    found = c;
  }
  return found;
}

decode_status decode_body(content_coding coding, std::string_view in, size_t max_out, std::string& out) {
  out.clear();
  if (in.empty()) return decode_status::ok;
  // 15 + 16: gzip wrapper only; 15: zlib wrapper; -15: raw deflate.
  int window_bits = coding == content_coding::gzip ? 15 + 16 : has_zlib_header(in) ? 15 : -15;
  inflater z(window_bits);
  if (!z.ready) return decode_status::corrupt;
  z.zs.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(in.data()));
  z.zs.avail_in = static_cast<uInt>(in.size());  // the body limit keeps it far below 4 GiB
  // Grow the output in steps rather than trusting any size the sender claims
  // (gzip's ISIZE is mod 2^32 and can lie); one byte past the limit is enough
  // to know the body is too large.
  constexpr size_t step = 64 * 1024;
  for (;;) {
    size_t have = out.size();
    size_t room = std::min(step, max_out + 1 - have);
    // Doubling, but never past the limit: memory stays within max_out + 1.
    // (A fresh string, as reserve() on a used one may round up to double.)
    if (have + room > out.capacity()) {
      std::string bigger;
      bigger.reserve(std::min(max_out + 1, std::max(2 * out.capacity(), have + room)));
      bigger.append(out);
      out.swap(bigger);
    }
    out.resize(have + room);
    z.zs.next_out = reinterpret_cast<Bytef*>(out.data() + have);
    z.zs.avail_out = static_cast<uInt>(room);
    int rc = inflate(&z.zs, Z_NO_FLUSH);
    out.resize(have + (room - z.zs.avail_out));
    if (out.size() > max_out) return decode_status::too_large;
    if (rc == Z_STREAM_END) {
      // gzip allows several members one after another (RFC 1952 section 2.2).
      if (z.zs.avail_in == 0) return decode_status::ok;
      if (coding != content_coding::gzip || inflateReset(&z.zs) != Z_OK) return decode_status::corrupt;
      continue;
    }
    // No progress with room to write: the stream stops short of its end.
    if (rc == Z_BUF_ERROR && z.zs.avail_out != 0) return decode_status::corrupt;
    if (rc != Z_OK && rc != Z_BUF_ERROR) return decode_status::corrupt;
  }
}

}  // namespace evpipe::io
