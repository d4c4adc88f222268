#include "io/sources/nats/nats_fetch.h"

namespace evpipe::io {

namespace {

int held_by(natsSubscription* sub) {
  int msgs = 0, bytes = 0;
  if (natsSubscription_GetPending(sub, &msgs, &bytes) != NATS_OK) return 0;
  return msgs;
}

}  // namespace

natsStatus fetch_messages(natsSubscription* sub, int batch, int64_t timeout_ms, std::vector<natsMsg*>& out,
                          uint64_t* held_taken) {
  const size_t before = out.size();
  natsStatus s = NATS_OK;
  // What the subscription holds (late deliveries, and the status messages
  // that ended their requests) one at a time. The count is re-read each
  // round: status messages are dropped by the library, so a round may take
  // none, and a fetch of one with nothing left held sends a request of one.
  while (static_cast<int>(out.size() - before) < batch && held_by(sub) > 0) {
    natsMsgList list{};
    s = natsSubscription_Fetch(&list, sub, 1, timeout_ms, nullptr);
    if (s != NATS_OK) break;
    for (int i = 0; i < list.Count; ++i) {
      out.push_back(list.Msgs[i]);
      list.Msgs[i] = nullptr;
    }
    if (held_taken != nullptr) *held_taken += static_cast<uint64_t>(list.Count);
    natsMsgList_Destroy(&list);
  }
  if (out.size() > before) return NATS_OK;
  if (s != NATS_OK) return s;
  // Nothing held: a whole batch. Messages a late request delivers between the
  // check above and this call are taken by it first; it stays within its
  // array unless more than half a batch lands in that instant (a late request
  // exists only for the few milliseconds after a fetch that timed out while
  // the server still held its request).
  natsMsgList list{};
  s = natsSubscription_Fetch(&list, sub, batch, timeout_ms, nullptr);
  if (s == NATS_OK) {
    for (int i = 0; i < list.Count; ++i) {
      out.push_back(list.Msgs[i]);
      list.Msgs[i] = nullptr;
    }
  }
  natsMsgList_Destroy(&list);
  return s;
}

}  // namespace evpipe::io
