#pragma once
// Decentralised NATS auth for tests (operator mode): an operator, one
// account with JetStream and one user, as nkeys and JWTs signed with
// Ed25519 (OpenSSL), and the user's creds file, as `nsc` would make them
// (Debian has no nsc). nats_server takes the directory (auth.jwt_dir); the
// files: operator.jwt, account.pub, account.jwt, user.creds, sys.pub, sys.jwt. Formats: the
// nkeys and JWT v2 encodings of nats-io/nkeys and nats-io/jwt. Tests only:
// errors throw.

#include <openssl/evp.h>
#include <openssl/rand.h>

#include <cstdint>
#include <ctime>
#include <fstream>
#include <stdexcept>
#include <string>

namespace evpipe::testing {

namespace nkeys_detail {

inline uint16_t crc16(const std::string& data) {
  uint16_t crc = 0;  // CRC-16/XMODEM
  for (unsigned char c : data) {
    crc ^= static_cast<uint16_t>(c) << 8;
    for (int i = 0; i < 8; ++i) crc = (crc & 0x8000) ? static_cast<uint16_t>((crc << 1) ^ 0x1021) : static_cast<uint16_t>(crc << 1);
  }
  return crc;
}

// `in` in an alphabet of 2^bits characters, most significant bits first, no padding.
inline std::string encode_bits(const std::string& in, const char* alphabet, int bits_per_char) {
  std::string out;
  uint32_t buf = 0;
  int bits = 0;
  const uint32_t mask = (1u << bits_per_char) - 1;
  for (unsigned char c : in) {
    buf = (buf << 8) | c;
    bits += 8;
    while (bits >= bits_per_char) {
      out += alphabet[(buf >> (bits - bits_per_char)) & mask];
      bits -= bits_per_char;
    }
  }
  if (bits > 0) out += alphabet[(buf << (bits_per_char - bits)) & mask];
  return out;
}
inline std::string base32(const std::string& in) { return encode_bits(in, "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", 5); }
inline std::string base64url(const std::string& in) {
  return encode_bits(in, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_", 6);
}

inline std::string with_crc(std::string raw) {
  const uint16_t c = crc16(raw);
  raw += static_cast<char>(c & 0xFF);
  raw += static_cast<char>(c >> 8);
  return raw;
}

}  // namespace nkeys_detail

// One nkey pair: its public key ("O...", "A...", "U...") and its seed ("SO...", ...).
struct nkey {
  std::string seed_raw;  // 32 bytes
  std::string pub_raw;   // 32 bytes
  unsigned char prefix = 0;

  static nkey make(unsigned char prefix) {
    nkey k;
    k.prefix = prefix;
    unsigned char seed[32];
    if (RAND_bytes(seed, sizeof seed) != 1) throw std::runtime_error("RAND_bytes");
    k.seed_raw.assign(reinterpret_cast<char*>(seed), 32);
    EVP_PKEY* p = EVP_PKEY_new_raw_private_key(EVP_PKEY_ED25519, nullptr, seed, 32);
    if (!p) throw std::runtime_error("ed25519 key");
    unsigned char pub[32];
    size_t n = sizeof pub;
    EVP_PKEY_get_raw_public_key(p, pub, &n);
    EVP_PKEY_free(p);
    k.pub_raw.assign(reinterpret_cast<char*>(pub), 32);
    return k;
  }
  static nkey operator_key() { return make(14 << 3); }
  static nkey account_key() { return make(0); }
  static nkey user_key() { return make(20 << 3); }

  [[nodiscard]] std::string public_key() const {
    return nkeys_detail::base32(nkeys_detail::with_crc(std::string(1, static_cast<char>(prefix)) + pub_raw));
  }
  [[nodiscard]] std::string seed() const {
    constexpr unsigned char seed_prefix = 18 << 3;
    std::string raw;
    raw += static_cast<char>(seed_prefix | (prefix >> 5));
    raw += static_cast<char>((prefix & 31) << 3);
    return nkeys_detail::base32(nkeys_detail::with_crc(raw + seed_raw));
  }
  [[nodiscard]] std::string sign(const std::string& data) const {
    EVP_PKEY* p = EVP_PKEY_new_raw_private_key(EVP_PKEY_ED25519, nullptr,
                                               reinterpret_cast<const unsigned char*>(seed_raw.data()), 32);
    EVP_MD_CTX* ctx = EVP_MD_CTX_new();
    unsigned char sig[64];
    size_t n = sizeof sig;
    bool ok = p && ctx && EVP_DigestSignInit(ctx, nullptr, nullptr, nullptr, p) == 1 &&
              EVP_DigestSign(ctx, sig, &n, reinterpret_cast<const unsigned char*>(data.data()), data.size()) == 1;
    EVP_MD_CTX_free(ctx);
    EVP_PKEY_free(p);
    if (!ok) throw std::runtime_error("ed25519 sign");
    return std::string(reinterpret_cast<char*>(sig), n);
  }
};

// A JWT v2 of `type` for `subject`, signed by `issuer`; `nats` holds the
// type's own claims (JSON members, without "type" and "version").
inline std::string nats_jwt(const nkey& issuer, const nkey& subject, const std::string& name, const std::string& type,
                            const std::string& nats) {
  const std::string header = nkeys_detail::base64url(R"({"typ":"JWT","alg":"ed25519-nkey"})");
  auto claims = [&](const std::string& jti) {
    return "{\"jti\":\"" + jti + "\",\"iat\":" + std::to_string(std::time(nullptr)) + ",\"iss\":\"" +
           issuer.public_key() + "\",\"name\":\"" + name + "\",\"sub\":\"" + subject.public_key() + "\",\"nats\":{" +
           nats + (nats.empty() ? "" : ",") + "\"type\":\"" + type + "\",\"version\":2}}";
  };
  // jti: SHA-512/256 of the claims without it, in base32.
  const std::string unhashed = claims("");
  unsigned char md[64];
  unsigned int len = 0;
  EVP_Digest(unhashed.data(), unhashed.size(), md, &len, EVP_sha512_256(), nullptr);
  const std::string payload = nkeys_detail::base64url(claims(nkeys_detail::base32(std::string(reinterpret_cast<char*>(md), len))));
  const std::string signing_input = header + "." + payload;
  return signing_input + "." + nkeys_detail::base64url(issuer.sign(signing_input));
}

// Writes operator.jwt, account.pub, account.jwt, user.creds, and the
// system account's sys.pub and sys.jwt (JetStream needs one) to `dir`.
inline void make_test_nats_jwts(const std::string& dir) {
  const nkey op = nkey::operator_key(), acc = nkey::account_key(), user = nkey::user_key(), sys = nkey::account_key();
  std::ofstream(dir + "/operator.jwt") << nats_jwt(op, op, "evpipe-test-operator", "operator",
                                                   "\"system_account\":\"" + sys.public_key() + "\"");
  std::ofstream(dir + "/sys.pub") << sys.public_key();
  std::ofstream(dir + "/sys.jwt") << nats_jwt(op, sys, "SYS", "account", "");
  std::ofstream(dir + "/account.pub") << acc.public_key();
  std::ofstream(dir + "/account.jwt") << nats_jwt(
      op, acc, "EVPIPE", "account",
      R"("limits":{"subs":-1,"data":-1,"payload":-1,"imports":-1,"exports":-1,"wildcards":true,"conn":-1,"leaf":-1,)"
      R"("mem_storage":-1,"disk_storage":-1,"streams":-1,"consumer":-1},"default_permissions":{"pub":{},"sub":{}})");
  const std::string user_jwt = nats_jwt(acc, user, "evpipe", "user", R"("pub":{},"sub":{},"subs":-1,"data":-1,"payload":-1)");
  std::ofstream(dir + "/user.creds") << "-----BEGIN NATS USER JWT-----\n" << user_jwt
                                     << "\n------END NATS USER JWT------\n\n"
                                        "************************* IMPORTANT *************************\n"
                                        "NKEY Seed printed below can be used to sign and prove identity.\n\n"
                                        "-----BEGIN USER NKEY SEED-----\n"
                                     << user.seed() << "\n------END USER NKEY SEED------\n";
}

}  // namespace evpipe::testing
