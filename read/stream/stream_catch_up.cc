// stream_hub::catch_up (stream_hub.h): the clients behind the tail read from
// the table, a page a round, those at one filter and time bound sharing their
// reads (docs/read.md, "Catch-up"). Runs on the hub's thread, between tail
// reads, so the tail does not move under it.
#include "read/stream/stream_hub.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <tuple>

#include "io/postgres/pg_connection.h"
#include "read/stream/stream_hub_client.h"
#include "read/table_reader.h"

namespace evpipe::read {

bool stream_hub::catch_up(std::vector<std::shared_ptr<client_state>>& clients, table_reader& reader, position tail,
                          bool tail_busy, const std::function<void(const io::pg_status&)>& failed) {
  // Clients behind the tail whose queue has room, grouped by what they read
  // (filter and time bound), by position within a group.
  std::vector<client_state*> waiting;
  for (auto& c : clients) {
    if (c->live || !c->started || c->dead) continue;
    // A client that resumes from a position the tail has not reached yet
    // (one another reader gave it: another evpipe's stream, a replay) waits
    // for the tail to pass it: made live at the tail now, it would be handed
    // the rows between the tail and its position a second time.
    if (c->pos > tail) continue;
    if (c->client->queued_bytes() > opts_.max_client_buffer_bytes / 2) continue;
    waiting.push_back(c.get());
  }
  std::sort(waiting.begin(), waiting.end(), [](const client_state* a, const client_state* b) {
    return std::tie(a->since_time, a->filter.any_of, a->filter.tenant, a->pos) <
           std::tie(b->since_time, b->filter.any_of, b->filter.tenant, b->pos);
  });
  for (size_t g = 0; g < waiting.size();) {
    size_t g_end = g + 1;
    while (g_end < waiting.size() && waiting[g_end]->filter == waiting[g]->filter &&
           waiting[g_end]->since_time == waiting[g]->since_time) {
      ++g_end;
    }
    // One page from the lowest position of the group; each client takes the
    // rows after its own position. Clients past the page's end are read
    // again from there, so every client gets a page per round, and clients
    // that fell behind at nearby positions meet at one and read together.
    for (size_t next = g; next < g_end;) {
      bool want_ws = false, want_sse = false;
      for (size_t i = next; i < g_end; ++i) {
        (waiting[i]->client->format() == frame_format::websocket ? want_ws : want_sse) = true;
      }
      const client_state& lead = *waiting[next];
      read_window w;
      w.after = lead.pos;
      w.until = tail;
      w.any_of = lead.filter.any_of;
      w.tenant = lead.filter.tenant;
      w.since_time = lead.since_time;
      // The lead's page size (page_rows; catch_up_page at first), at most
      // catch_up_page while live clients wait on the tail, which waits for
      // each read.
      const uint32_t rows = lead.page_rows != 0 ? lead.page_rows : opts_.catch_up_page;
      w.limit = tail_busy ? std::min(rows, opts_.catch_up_page) : rows;
      auto frames = std::make_shared<event_frames>(want_ws, want_sse, 0);
      // Retention drops after a client started that took rows past its
      // position (a time as since asks only for what is kept): checked in
      // one transaction with the read, so none lands in between, and said
      // before the client is handed anything of the page.
      int64_t seen = INT64_MAX;
      for (size_t i = next; i < g_end; ++i) {
        if (!waiting[i]->dead) seen = std::min(seen, waiting[i]->drops_seen);
      }
      // A page stops at the first row past a quarter of the clients' limit
      // (it holds at least one row): rows larger than the last page's, whose
      // size set this one's rows, are left for the next page, sized by them.
      // They are read to the end of this page and dropped, not cancelled: a
      // cancel can land on this connection's next statement.
      const size_t page_bytes = opts_.max_client_buffer_bytes / 4;
      bool full_in_bytes = false;
      std::vector<table_reader::drop_record> drops;
      auto st = reader.begin_drop_guard(lead.pos, seen, drops);
      if (st.ok) {
        st = reader.read(w, [&](const event_row& r) {
          if (full_in_bytes) return row_action::next;
          if (frames->size() > 0 &&
              frames->bytes(frame_format::websocket) + frames->bytes(frame_format::sse) >= page_bytes) {
            full_in_bytes = true;
            return row_action::next;
          }
          frames->add(r);
          return row_action::next;
        });
      }
      reader.end_drop_guard();
      for (size_t i = next; st.ok && !drops.empty() && i < g_end; ++i) {
        client_state& c = *waiting[i];
        // A time as since asks for what is kept; so does a client that has
        // had nothing yet from the start.
        if (c.dead || !c.since_time.empty() || c.pos.tx == 0) continue;
        std::vector<table_reader::drop_record> gone;
        for (const auto& d : drops) {
          if (d.seq > c.drops_seen && d.last > c.pos) gone.push_back(d);
        }
        if (gone.empty()) continue;
        c.client->on_error(describe_dropped(c.pos, gone));
        c.dead = true;
      }
      if (!st.ok) {
        if (st.sqlstate.rfind("22", 0) == 0) {
          // The clients' own input (a time PostgreSQL does not take).
          for (size_t i = next; i < g_end; ++i) {
            if (waiting[i]->dead) continue;
            waiting[i]->client->on_error("cannot read from there: " + st.message);
            waiting[i]->dead = true;
          }
          break;
        }
        failed(st);
        return false;
      }
      const size_t n = frames->size();
      // A short page: everything up to the tail was read, from a position at
      // or before every client's of the group.
      const bool to_tail = n < w.limit && !full_in_bytes;
      std::shared_ptr<const event_frames> shared = std::move(frames);
      // A full page: the clients that take it read what fits in a quarter of
      // their queue's limit at this page's bytes per row next time (so a page
      // stays well inside the room a round needs: at most half the limit
      // queued), at most twice this page's rows and a tail read's, and at
      // most catch_up_page while the tail is busy. Below catch_up_page when
      // rows are that large: a page does not read rows only to drop them.
      uint32_t next_page = 0;
      if (!to_tail) {
        const size_t row_bytes =
            std::max<size_t>(1, (shared->bytes(frame_format::websocket) + shared->bytes(frame_format::sse)) / n);
        const size_t most = tail_busy ? opts_.catch_up_page : std::min(size_t{w.limit} * 2, size_t{opts_.tail_page});
        next_page = static_cast<uint32_t>(std::max<size_t>(1, std::min(most, page_bytes / row_bytes)));
      }
      size_t i = next;
      for (; i < g_end; ++i) {
        client_state& c = *waiting[i];
        if (c.dead) continue;
        const size_t first = shared->first_after(c.pos);
        if (!to_tail && first >= n) break;  // at or past the page's end (the rest too: sorted)
        if (first < n) {
          c.client->on_events(shared, first, n);
          probe_.events_delivered.fetch_add(n - first, std::memory_order_relaxed);
          c.pos = shared->pos(n - 1);
          c.page_rows = next_page;
        }
        if (to_tail) {
          // Live from here.
          c.pos = tail;
          c.live = true;
          c.page_rows = 0;
          c.since_time.clear();
          c.client->on_caught_up(tail);
        }
        c.client->flush();
      }
      next = i;
    }
    g = g_end;
  }
  return true;
}

}  // namespace evpipe::read
