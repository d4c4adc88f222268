-- AutoCore's tables (shared/seeds: the MQTT monitor), as evpipe's routes in
-- config/examples/autocore.toml fill them. Apply once: psql -f autocore.sql
-- (then `evpipe migrate` for evpipe's own tables).

-- Current device state: one row per device, upserted from
-- autocore/<device>/status; last_seen is the device's own timestamp, so an
-- older or redelivered status never moves it backwards.
CREATE TABLE IF NOT EXISTS devices (
    device_id TEXT PRIMARY KEY,
    status TEXT,
    -- Computed from the status the device sends ("online", "offline"):
    -- the route writes status, PostgreSQL keeps this in step with it. A
    -- devices table made by an earlier version of this file has a plain
    -- is_online the route no longer writes; change it once with
    --   ALTER TABLE devices DROP COLUMN is_online, ADD COLUMN is_online BOOLEAN
    --     GENERATED ALWAYS AS (status IS NOT DISTINCT FROM 'online') STORED;
    is_online BOOLEAN GENERATED ALWAYS AS (status IS NOT DISTINCT FROM 'online') STORED,
    last_seen TIMESTAMPTZ,
    ip_address TEXT,
    firmware_version TEXT,
    uptime_s BIGINT,
    updated_at TIMESTAMPTZ          -- when evpipe received the message that set this state
);

-- Current relay state, upserted from autocore/<device>/relay/<index>/status.
CREATE TABLE IF NOT EXISTS relays (
    device_id TEXT NOT NULL,
    relay_index INTEGER NOT NULL CHECK (relay_index >= 0),
    current_state BOOLEAN NOT NULL,
    triggered_by TEXT,
    changed_at TIMESTAMPTZ,         -- the device's timestamp of this state
    PRIMARY KEY (device_id, relay_index)
);

-- Every relay message, appended (a route with also = true, next to the
-- upsert of relays). Keeping them all is what makes the history exact:
-- devices send out of order and one batch may hold several changes of one
-- relay, which an upsert (or a trigger on it) would fold into the newest.
CREATE TABLE IF NOT EXISTS relay_events (
    device_id TEXT NOT NULL,
    relay_index INTEGER NOT NULL,
    state BOOLEAN NOT NULL,
    triggered_by TEXT,
    changed_at TIMESTAMPTZ NOT NULL
);
CREATE INDEX IF NOT EXISTS relay_events_relay ON relay_events (device_id, relay_index, changed_at);

-- The state changes: each relay message whose state differs from the one
-- before it in the device's own time order (the first one counts as a change).
CREATE OR REPLACE VIEW relay_state_history AS
SELECT device_id, relay_index, state, previous_state, triggered_by, changed_at
FROM (SELECT e.*, lag(state) OVER (PARTITION BY device_id, relay_index ORDER BY changed_at) AS previous_state
      FROM relay_events e) AS ordered
WHERE previous_state IS DISTINCT FROM state;

-- Sensor data, appended from autocore/<device>/telemetry.
CREATE TABLE IF NOT EXISTS telemetry (
    device_id TEXT NOT NULL,
    temperature DOUBLE PRECISION CHECK (temperature BETWEEN -60 AND 150),
    humidity DOUBLE PRECISION CHECK (humidity BETWEEN 0 AND 100),
    voltage DOUBLE PRECISION,
    memory_free BIGINT,
    measured_at TIMESTAMPTZ NOT NULL,
    received_at TIMESTAMPTZ NOT NULL
);
CREATE INDEX IF NOT EXISTS telemetry_device_time ON telemetry (device_id, measured_at);

-- Touch-screen interactions, appended from autocore/<device>/display/interaction.
CREATE TABLE IF NOT EXISTS display_interactions (
    device_id TEXT NOT NULL,
    screen TEXT,
    element TEXT,
    action TEXT,
    details JSONB,
    occurred_at TIMESTAMPTZ NOT NULL
);
