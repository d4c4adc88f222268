-- evpipe schema: the tables. Applied by `evpipe migrate` in one transaction;
-- every statement is idempotent. The indexes are in schemas/schema.h.
-- events_mirror and dlq_events are a compatible superset of the TaylorDash
-- tables: existing INSERTs of (topic, payload) and existing queries keep working.

CREATE TABLE IF NOT EXISTS events_mirror (
    id BIGSERIAL PRIMARY KEY,
    topic VARCHAR(255) NOT NULL,
    payload JSONB NOT NULL,
    created_at TIMESTAMPTZ DEFAULT now(),
    trace_id UUID GENERATED ALWAYS AS ((payload->>'trace_id')::uuid) STORED
);

-- The idempotency backstop: the key is derived from the stored envelope, so
-- writers that predate evpipe need no change, and one row per key holds even
-- across restarts of evpipe (its in-memory window forgets).
ALTER TABLE events_mirror
    ADD COLUMN IF NOT EXISTS idempotency_key TEXT
    GENERATED ALWAYS AS (payload->>'idempotency_key') STORED;
-- Its unique index, and every other index, is listed in schemas/schema.h:
-- `evpipe migrate` builds the missing ones after this file (CONCURRENTLY on a
-- table that has rows) and accepts an equivalent unique index of any name.

CREATE TABLE IF NOT EXISTS dlq_events (
    id BIGSERIAL PRIMARY KEY,
    original_topic VARCHAR(255) NOT NULL,
    failure_reason TEXT NOT NULL,
    payload JSONB,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
-- reason_code: stable machine-readable reason (invalid_json, missing_field, ...).
-- payload holds the event when it is valid JSON; raw holds its bytes when it is
-- not (or a prefix, for events over the size limit).
ALTER TABLE dlq_events ADD COLUMN IF NOT EXISTS reason_code TEXT;
ALTER TABLE dlq_events ADD COLUMN IF NOT EXISTS raw BYTEA;
ALTER TABLE dlq_events ALTER COLUMN payload DROP NOT NULL;
-- event_digest: XXH3-128 of the event's bytes. A producer that resends a bad
-- event (at-least-once delivery) gets one DLQ row per topic, not one per try.
ALTER TABLE dlq_events ADD COLUMN IF NOT EXISTS event_digest BYTEA;
-- Unique on (original_topic, event_digest): see schemas/schema.h.

-- What each MQTT client id subscribed to at a broker, written by evpipe after
-- each SUBACK: MQTT 3.1.1 cannot list a persistent session's subscriptions,
-- and a filter removed from the config must be UNSUBSCRIBEd or the broker
-- keeps delivering it. Also tells when a client id change left an old session
-- behind (rows of this host under an id the config no longer has).
CREATE TABLE IF NOT EXISTS evpipe_mqtt_subscriptions (
    client_id TEXT NOT NULL,
    broker TEXT NOT NULL,
    filter TEXT NOT NULL,
    qos SMALLINT NOT NULL,
    host TEXT NOT NULL DEFAULT '',
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (client_id, broker, filter)
);

-- tx: the id of the transaction that wrote the row, the first half of its
-- read position (tx, id); readers only read below the visibility horizon, so
-- no row appears behind a position they have passed (docs/read.md). The
-- default is STABLE, so adding the column rewrites nothing: rows that predate
-- it all get this migration's transaction id, which is later than theirs.
-- Writers need no change: the default fills it in, COPY and INSERT alike.
ALTER TABLE events_mirror ADD COLUMN IF NOT EXISTS tx xid8 NOT NULL DEFAULT pg_current_xact_id();
-- Its index (tx, id), which readers resume on: see schemas/schema.h.

-- headers: what the transport said about the event besides its bytes, as a
-- JSON object; today an MQTT 5 message's content type and user properties,
-- {"content_type": "...", "user_properties": [["k", "v"], ...]} (repeated
-- keys and their order kept), NULL for every event without them. Nullable
-- with no default, so adding it rewrites nothing. evpipe names the column only
-- in batches that carry headers (docs/mqtt.md).
ALTER TABLE events_mirror ADD COLUMN IF NOT EXISTS headers JSONB;
ALTER TABLE dlq_events ADD COLUMN IF NOT EXISTS headers JSONB;

-- tenant_id (docs/tenants.md): the tenant an event belongs to, '' when
-- tenancy is off or none is known. NOT NULL with a constant default, so
-- adding it rewrites nothing and writers that name only (topic, payload)
-- need no change. Idempotency is scoped to it: the unique index is on
-- (idempotency_key, tenant_id) (schemas/schema.h), which `evpipe migrate`
-- builds concurrently before dropping the index on idempotency_key alone.
ALTER TABLE events_mirror ADD COLUMN IF NOT EXISTS tenant_id TEXT NOT NULL DEFAULT '';
ALTER TABLE dlq_events ADD COLUMN IF NOT EXISTS tenant_id TEXT NOT NULL DEFAULT '';

-- What retention took from events_mirror ([storage] retention,
-- docs/partitions.md): in the transaction that drops a partition, or deletes
-- rows past the retention from the DEFAULT partition, evpipe records how many
-- rows went and the last read position among them. A reader resuming from a
-- position before it (the stream's `since`, `replay --since`) is told that
-- events it never got are gone instead of resuming past the gap in silence
-- (docs/read.md, "Positions before what retention dropped").
CREATE TABLE IF NOT EXISTS evpipe_retention_marks (
    seq BIGSERIAL PRIMARY KEY,  -- the order of the drops (readers note the last one they have seen)
    table_name TEXT NOT NULL,
    dropped TEXT NOT NULL,
    rows BIGINT NOT NULL,
    last_tx xid8 NOT NULL,
    last_id BIGINT NOT NULL,
    dropped_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
ALTER TABLE evpipe_retention_marks ADD COLUMN IF NOT EXISTS seq BIGSERIAL;
