#pragma once
// Request bodies sent with a Content-Encoding (RFC 9110 section 8.4): which
// codings the HTTP source takes, and inflating them with zlib under a limit
// on the decoded size, so that a small compressed body cannot expand past
// max_body_bytes (a zip bomb is refused, memory stays bounded).
//
// Stateless functions; safe from any thread.

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace evpipe::io {

enum class content_coding : uint8_t {
  identity,     // no header, "identity", or an empty value
  gzip,         // "gzip" or "x-gzip": RFC 1952, one or more members
  deflate,      // "deflate": zlib (RFC 1950); raw deflate (RFC 1951) is taken too, as some clients send it
  unsupported,  // anything else ("br", "zstd", "compress", stacked codings): 415
};

// The coding named by a Content-Encoding header value (case-insensitive,
// "identity" entries ignored).
[[nodiscard]] content_coding coding_of(std::string_view header) noexcept;

enum class decode_status : uint8_t {
  ok,
  too_large,  // the decoded body would exceed the limit: 413
  corrupt,    // not a valid stream of the coding, or bytes after its end: 400
};

// Inflates `in` into `out` (replaced), stopping as soon as it would hold more
// than `max_out` bytes. `coding` is gzip or deflate.
[[nodiscard]] decode_status decode_body(content_coding coding, std::string_view in, size_t max_out, std::string& out);

// A leading UTF-8 byte order mark removed: RFC 8259 section 8.1 lets a
// parser ignore one, and some Windows tools write it.
[[nodiscard]] constexpr std::string_view without_bom(std::string_view s) noexcept {
  return s.starts_with("\xEF\xBB\xBF") ? s.substr(3) : s;
}

}  // namespace evpipe::io
