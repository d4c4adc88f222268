-- From a plain events_mirror / dlq_events to partitioned ones, step 1 of 3
-- (docs/partitions.md, "From a plain table"). Run with evpipe and every other
-- writer of these tables stopped. Moves the plain tables aside under
-- <table>_plain, with their indexes and constraints renamed too, so that
-- step 2 (`evpipe migrate` with [storage] partition set) can create the
-- partitioned tables under the old names. Nothing is copied.
BEGIN;
DO $$
DECLARE
  t text;
  r record;
BEGIN
  FOREACH t IN ARRAY ARRAY['events_mirror', 'dlq_events'] LOOP
    IF (SELECT relkind FROM pg_class WHERE oid = to_regclass(t)) IS DISTINCT FROM 'r' THEN
      RAISE EXCEPTION '% is not a plain table here: nothing to convert', t;
    END IF;
    -- A range partition takes no NULL in its key; the few rows without a
    -- time (only writers that set created_at = NULL explicitly) get the oldest one.
    EXECUTE format('UPDATE %I SET created_at = ''-infinity'' WHERE created_at IS NULL', t);
    FOR r IN SELECT c.relname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
             WHERE i.indrelid = t::regclass LOOP
      -- Renaming a constraint's index renames the constraint as well.
      EXECUTE format('ALTER INDEX %I RENAME TO %I', r.relname, left(r.relname, 57) || '_plain');
    END LOOP;
    EXECUTE format('ALTER TABLE %I RENAME TO %I', t, t || '_plain');
  END LOOP;
END $$;
COMMIT;
