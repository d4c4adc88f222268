-- AutoCore's tables (shared/seeds: the MQTT monitor), as evpipe's routes in
-- config/examples/autocore.toml fill them. Apply once: psql -f autocore.sql
-- (then `evpipe migrate` for evpipe's own tables).

-- Current device state: one row per device, upserted from
-- autocore/<device>/status; last_seen is the device's own timestamp, so an
-- older or redelivered status never moves it backwards.
CREATE TABLE IF NOT EXISTS devices (
    device_id TEXT PRIMARY KEY,
    is_online BOOLEAN NOT NULL DEFAULT false,
    status TEXT,
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

-- Relay state changes. Written by the trigger below, in the transaction of
-- the upsert that changed relays.current_state: the database compares the
-- old and the new state in one step, so evpipe needs no read-back, and a
-- redelivered or older message (which the upsert ignores) adds no history.
CREATE TABLE IF NOT EXISTS relay_state_history (
    id BIGSERIAL PRIMARY KEY,
    device_id TEXT NOT NULL,
    relay_index INTEGER NOT NULL,
    state BOOLEAN NOT NULL,
    previous_state BOOLEAN,         -- NULL: the first state evpipe saw for this relay
    triggered_by TEXT,
    changed_at TIMESTAMPTZ NOT NULL
);
CREATE INDEX IF NOT EXISTS relay_state_history_relay ON relay_state_history (device_id, relay_index, changed_at);

CREATE OR REPLACE FUNCTION relays_record_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP = 'INSERT' OR NEW.current_state IS DISTINCT FROM OLD.current_state THEN
    INSERT INTO relay_state_history (device_id, relay_index, state, previous_state, triggered_by, changed_at)
    VALUES (NEW.device_id, NEW.relay_index, NEW.current_state,
            CASE WHEN TG_OP = 'UPDATE' THEN OLD.current_state END, NEW.triggered_by,
            coalesce(NEW.changed_at, now()));
  END IF;
  RETURN NULL;
END $$;
DROP TRIGGER IF EXISTS relays_record_change ON relays;
CREATE TRIGGER relays_record_change AFTER INSERT OR UPDATE OF current_state ON relays
    FOR EACH ROW EXECUTE FUNCTION relays_record_change();

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
