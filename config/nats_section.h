#pragma once
// [[sources.nats]]: a NATS JetStream stream read through a durable pull
// consumer (io/sources/nats, docs/nats.md). Part of config::settings; parsed
// by detail::parse_nats() (nats_section.cc).

#include <cstdint>
#include <string>
#include <vector>

#include "config/tenants_section.h"

namespace evpipe::config {

struct nats_source {
  std::vector<std::string> servers;         // "nats://host:port" or "tls://host:port"; several = one cluster
  std::string stream;                       // the JetStream stream to read (must exist)
  std::string durable = "evpipe";           // the durable pull consumer; created when missing
  std::vector<std::string> filter_subjects; // [] = every subject of the stream; with more than one, one consumer
                                            // per filter, named <durable>-1, <durable>-2, ... (nats-server 2.9
                                            // consumers take one filter)
  // Credentials, at most one kind; none is ever logged or printed.
  std::string creds_file;                   // NATS credentials file (user JWT and NKey seed)
  std::string token_file;                   // file holding a token (first line)
  std::string token;                        // read from token_file at load
  std::string user;                         // with password_file
  std::string password_file;                // file holding the password (first line)
  std::string password;                     // read from password_file at load
  // TLS: any of these (or a tls:// server) turns it on.
  std::string ca_file;                      // CA bundle to verify the servers ("" = system default)
  std::string cert_file;                    // client certificate (with key_file)
  std::string key_file;                     // client private key
  uint32_t max_ack_pending = 16384;         // per consumer: fetch nothing more while this many are unacked
  uint32_t fetch_batch = 512;               // most messages asked for in one pull
  uint32_t max_deliveries = 10;             // a message delivered more often is dead-lettered as max_deliveries,
                                            // unprocessed (0: no limit)
  uint32_t ack_wait_s = 30;                 // AckWait of a consumer evpipe creates; in-progress acks every third of it
  source_tenancy tenancy;                   // tenant, allowed_tenants (docs/tenants.md)
  std::string topic_separator = "/";        // the subject's '.' become this in the topic ("." keeps the subject)
  bool operator==(const nats_source&) const = default;
};

}  // namespace evpipe::config
