// The delivery count of a JetStream delivery, read from its reply subject in
// both forms nats-server writes, and nothing read from anything else.
#include "io/sources/nats/nats_reply.h"

#include <gtest/gtest.h>

namespace evpipe::io {
namespace {

TEST(NatsReply, DeliveryCountOfBothForms) {
  // v1: stream, consumer, delivered, stream seq, consumer seq, time, pending.
  EXPECT_EQ(nats_delivery_count("$JS.ACK.ORDERS.evpipe.1.42.40.1700000000000000000.7"), 1u);
  EXPECT_EQ(nats_delivery_count("$JS.ACK.ORDERS.evpipe.12.42.40.1700000000000000000.0"), 12u);
  // v2: domain ("_" for none) and account hash first, then the same, then a random token.
  EXPECT_EQ(nats_delivery_count("$JS.ACK._.ABCDEFGH.ORDERS.evpipe.3.42.40.1700000000000000000.0.xYz1"), 3u);
  EXPECT_EQ(nats_delivery_count("$JS.ACK.hub.ABCDEFGH.ORDERS.evpipe.250.42.40.1700000000000000000.5"), 250u);
  EXPECT_EQ(nats_delivery_count("$JS.ACK.hub.H.S.C.18446744073709551615.1.1.1.1.extra.more"), 18446744073709551615u);
}

TEST(NatsReply, AnythingElseIsNoDelivery) {
  EXPECT_FALSE(nats_delivery_count(""));
  EXPECT_FALSE(nats_delivery_count("_INBOX.abc.123"));
  EXPECT_FALSE(nats_delivery_count("$JS.ACK."));
  EXPECT_FALSE(nats_delivery_count("$JS.ACKS.ORDERS.evpipe.1.42.40.1.7"));
  EXPECT_FALSE(nats_delivery_count("$JS.ACK.ORDERS.evpipe.1.42.40.1"));        // 6 tokens
  EXPECT_FALSE(nats_delivery_count("$JS.ACK.ORDERS.evpipe.1.42.40.1.7.8"));    // 8 tokens: neither form
  EXPECT_FALSE(nats_delivery_count("$JS.ACK.ORDERS.evpipe.x1.42.40.1.7"));     // not a number
  EXPECT_FALSE(nats_delivery_count("$JS.ACK.ORDERS.evpipe..42.40.1.7"));       // empty
  EXPECT_FALSE(nats_delivery_count("$JS.ACK.ORDERS.evpipe.-1.42.40.1.7"));
  EXPECT_FALSE(nats_delivery_count("$JS.ACK.ORDERS.evpipe.18446744073709551616.42.40.1.7"));  // past 64 bits
}

}  // namespace
}  // namespace evpipe::io
