-- evpipe schema. Applied by `evpipe migrate`; every statement is idempotent.
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
CREATE UNIQUE INDEX IF NOT EXISTS events_mirror_idempotency_key_key
    ON events_mirror (idempotency_key);

CREATE INDEX IF NOT EXISTS idx_events_mirror_topic ON events_mirror (topic);
CREATE INDEX IF NOT EXISTS idx_events_mirror_trace_id ON events_mirror (trace_id);
CREATE INDEX IF NOT EXISTS idx_events_mirror_created_at ON events_mirror (created_at);
CREATE INDEX IF NOT EXISTS idx_events_mirror_kind ON events_mirror ((payload->>'kind'));

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
CREATE UNIQUE INDEX IF NOT EXISTS dlq_events_topic_digest_key
    ON dlq_events (original_topic, event_digest);
CREATE INDEX IF NOT EXISTS idx_dlq_events_created_at ON dlq_events (created_at);
CREATE INDEX IF NOT EXISTS idx_dlq_events_reason_code ON dlq_events (reason_code);
