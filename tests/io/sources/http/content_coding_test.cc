// Request-body codings: which header values are taken, and inflating under a
// limit on the decoded size.

#include "io/sources/http/content_coding.h"

#include <gtest/gtest.h>
#include <zlib.h>

#include <string>

namespace evpipe::io {
namespace {

// `text` compressed with zlib; window_bits picks the wrapper (31 gzip, 15 zlib, -15 raw).
std::string compress(const std::string& text, int window_bits) {
  z_stream zs{};
  EXPECT_EQ(deflateInit2(&zs, Z_BEST_COMPRESSION, Z_DEFLATED, window_bits, 9, Z_DEFAULT_STRATEGY), Z_OK);
  std::string out(deflateBound(&zs, text.size()) + 64, '\0');
  zs.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(text.data()));
  zs.avail_in = static_cast<uInt>(text.size());
  zs.next_out = reinterpret_cast<Bytef*>(out.data());
  zs.avail_out = static_cast<uInt>(out.size());
  EXPECT_EQ(deflate(&zs, Z_FINISH), Z_STREAM_END);
  out.resize(zs.total_out);
  deflateEnd(&zs);
  return out;
}

TEST(ContentCoding, NamesTheCodingsItTakes) {
  EXPECT_EQ(coding_of(""), content_coding::identity);
  EXPECT_EQ(coding_of("identity"), content_coding::identity);
  EXPECT_EQ(coding_of("gzip"), content_coding::gzip);
  EXPECT_EQ(coding_of(" GZip "), content_coding::gzip);
  EXPECT_EQ(coding_of("x-gzip"), content_coding::gzip);
  EXPECT_EQ(coding_of("Deflate"), content_coding::deflate);
  EXPECT_EQ(coding_of("identity, gzip"), content_coding::gzip);
  EXPECT_EQ(coding_of("br"), content_coding::unsupported);
  EXPECT_EQ(coding_of("zstd"), content_coding::unsupported);
  EXPECT_EQ(coding_of("compress"), content_coding::unsupported);
  EXPECT_EQ(coding_of("gzip, gzip"), content_coding::unsupported);
  EXPECT_EQ(coding_of("gzip, br"), content_coding::unsupported);
}

TEST(ContentCoding, InflatesGzipZlibAndRawDeflateExactly) {
  std::string text;
  for (int i = 0; i < 5000; ++i) text += "{\"n\":" + std::to_string(i) + "}\n";
  std::string out;
  EXPECT_EQ(decode_body(content_coding::gzip, compress(text, 31), 1 << 20, out), decode_status::ok);
  EXPECT_EQ(out, text);
  EXPECT_EQ(decode_body(content_coding::deflate, compress(text, 15), 1 << 20, out), decode_status::ok);
  EXPECT_EQ(out, text);
  EXPECT_EQ(decode_body(content_coding::deflate, compress(text, -15), 1 << 20, out), decode_status::ok);
  EXPECT_EQ(out, text);
  // Two gzip members make one body.
  EXPECT_EQ(decode_body(content_coding::gzip, compress("a\n", 31) + compress("b\n", 31), 100, out), decode_status::ok);
  EXPECT_EQ(out, "a\nb\n");
  // Exactly at the limit is fine.
  EXPECT_EQ(decode_body(content_coding::gzip, compress(text, 31), text.size(), out), decode_status::ok);
}

TEST(ContentCoding, RefusesABombWithoutInflatingIt) {
  std::string zeros(64 << 20, '0');  // 64 MiB of one byte: about 64 KiB compressed
  std::string bomb = compress(zeros, 31);
  zeros.clear();
  zeros.shrink_to_fit();
  std::string out;
  EXPECT_EQ(decode_body(content_coding::gzip, bomb, 1 << 20, out), decode_status::too_large);
  EXPECT_LE(out.capacity(), (1u << 20) + 64) << "inflated past the limit";
  std::string text = "{\"a\":1}\n";
  EXPECT_EQ(decode_body(content_coding::gzip, compress(text, 31), text.size() - 1, out), decode_status::too_large);
}

TEST(ContentCoding, RefusesBrokenStreams) {
  std::string text(1000, 'x');
  std::string gz = compress(text, 31);
  std::string out;
  EXPECT_EQ(decode_body(content_coding::gzip, gz.substr(0, gz.size() / 2), 1 << 20, out), decode_status::corrupt);
  EXPECT_EQ(decode_body(content_coding::gzip, gz + "junk", 1 << 20, out), decode_status::corrupt);
  EXPECT_EQ(decode_body(content_coding::gzip, "{\"not\":\"gzip\"}", 1 << 20, out), decode_status::corrupt);
  EXPECT_EQ(decode_body(content_coding::deflate, compress(text, 15) + "x", 1 << 20, out), decode_status::corrupt);
}

TEST(ContentCoding, DropsOneLeadingByteOrderMark) {
  EXPECT_EQ(without_bom("\xEF\xBB\xBF{}"), "{}");
  EXPECT_EQ(without_bom("{}"), "{}");
  EXPECT_EQ(without_bom("\xEF\xBB"), "\xEF\xBB");
  EXPECT_EQ(without_bom("\xEF\xBB\xBF\xEF\xBB\xBF{}"), "\xEF\xBB\xBF{}");
}

}  // namespace
}  // namespace evpipe::io
