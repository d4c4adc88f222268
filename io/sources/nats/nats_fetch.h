#pragma once
// A bounded pull from a JetStream pull subscription that works around a heap
// buffer overflow in libnats before 3.9 (nats.c #749; Debian 12 ships 3.4.1).
//
// libnats' _fetch() allocates room for `batch` messages, first takes what the
// subscription already holds (messages a pull request delivered after the
// fetch that sent it had timed out), then subtracts that count from the
// request's batch and loops `while (count != batch)` against the *reduced*
// batch. When more than half of `batch` was already held, count is past the
// loop's bound: the fetch keeps waiting and writes every further message on
// the inbox (the rest of a late request) past the end of its array, and
// returns a list whose pointers are garbage. Under load, with several
// processes on one durable, this crashed evpipe (SIGSEGV in
// natsMsg_GetMetaData on a listed message; docs/nats.md).
//
// fetch_messages() never lets that happen: when the subscription holds
// messages it takes them with fetches of one (a fetch of one cannot run past
// its array: its loop stops at count 1), and only with nothing held does it
// ask the server for a whole batch.
//
// Called from the one puller thread of a subscription (libnats allows one
// fetch at a time per subscription).

#include <nats/nats.h>

#include <cstdint>
#include <vector>

namespace evpipe::io {

// Appends at most `batch` fetched messages to `out` (the caller owns them and
// destroys them). NATS_OK when at least one was appended; else the fetch's
// status (NATS_TIMEOUT when nothing came within `timeout_ms`). `held_taken`,
// if given, is increased by the number of messages taken one by one from
// what the subscription held.
[[nodiscard]] natsStatus fetch_messages(natsSubscription* sub, int batch, int64_t timeout_ms,
                                        std::vector<natsMsg*>& out, uint64_t* held_taken = nullptr);

}  // namespace evpipe::io
