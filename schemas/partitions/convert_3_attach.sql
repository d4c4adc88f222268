-- From a plain events_mirror / dlq_events to partitioned ones, step 3 of 3
-- (docs/partitions.md, "From a plain table"), after `evpipe migrate` with
-- [storage] partition set (step 2) created the partitioned tables, their
-- first partitions and the key tables. Still with every writer stopped:
--   1. the keys of the stored rows go to evpipe_mirror_keys and
--      evpipe_dlq_keys, so that a redelivery of an old event is still
--      recognized;
--   2. ids continue after the old ones;
--   3. the rows the plain table holds from the first partition's start on
--      (written since step 2's period began) move to the partitioned table;
--   4. the plain table becomes the partition of everything before that
--      start: FOR VALUES FROM (MINVALUE) TO (start). It keeps its rows and
--      its indexes; ATTACH builds the unique (id, created_at) index it lacks
--      and checks its rows against the range (both read the whole table).
--      Retention later drops it whole, once its range is past the retention.
BEGIN;
INSERT INTO evpipe_mirror_keys (tenant_id, idempotency_key, created_at)
  SELECT DISTINCT ON (tenant_id, idempotency_key) tenant_id, idempotency_key, created_at
  FROM events_mirror_plain WHERE idempotency_key IS NOT NULL
  ORDER BY tenant_id, idempotency_key, created_at
  ON CONFLICT DO NOTHING;
INSERT INTO evpipe_dlq_keys (original_topic, event_digest, created_at)
  SELECT DISTINCT ON (original_topic, event_digest) original_topic, event_digest, created_at
  FROM dlq_events_plain WHERE event_digest IS NOT NULL
  ORDER BY original_topic, event_digest, created_at
  ON CONFLICT DO NOTHING;
DO $$
DECLARE
  t text;
  start timestamptz;
  cols text;
  pk text;
BEGIN
  FOREACH t IN ARRAY ARRAY['events_mirror', 'dlq_events'] LOOP
    EXECUTE format('SELECT setval(pg_get_serial_sequence(%L, ''id''), greatest((SELECT max(id) FROM %I), 1))',
                   t, t || '_plain');
    SELECT min(substring(pg_get_expr(c.relpartbound, c.oid) FROM 'FROM \(''([^'']+)''\)')::timestamptz) INTO start
      FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = t::regclass;
    IF start IS NULL THEN
      RAISE EXCEPTION '% has no partition yet: run `evpipe migrate` with [storage] partition set first', t;
    END IF;
    SELECT string_agg(quote_ident(attname), ', ' ORDER BY attnum) INTO cols FROM pg_attribute
      WHERE attrelid = t::regclass AND attnum > 0 AND NOT attisdropped AND attgenerated = '';
    EXECUTE format('INSERT INTO %I (%s) SELECT %s FROM %I WHERE created_at >= %L', t, cols, cols, t || '_plain', start);
    EXECUTE format('DELETE FROM %I WHERE created_at >= %L', t || '_plain', start);
    EXECUTE format('ALTER TABLE %I ALTER COLUMN created_at SET NOT NULL', t || '_plain');
    -- Its primary key on (id) gives way to the parent's on (id, created_at):
    -- taken from a unique index <table>_plain_id_created_at built beforehand
    -- (CONCURRENTLY, docs/partitions.md) if there is one, else ATTACH builds it.
    SELECT conname INTO pk FROM pg_constraint WHERE conrelid = (t || '_plain')::regclass AND contype = 'p';
    IF pk IS NOT NULL THEN
      EXECUTE format('ALTER TABLE %I DROP CONSTRAINT %I', t || '_plain', pk);
    END IF;
    IF to_regclass(t || '_plain_id_created_at') IS NOT NULL THEN
      EXECUTE format('ALTER TABLE %I ADD CONSTRAINT %I PRIMARY KEY USING INDEX %I', t || '_plain',
                     t || '_plain_pkey', t || '_plain_id_created_at');
    END IF;
    EXECUTE format('ALTER TABLE %I ATTACH PARTITION %I FOR VALUES FROM (MINVALUE) TO (%L)', t, t || '_plain', start);
  END LOOP;
END $$;
COMMIT;
