-- snapshot: es.snapshots -- explicit and automatic snapshots, proof that
-- es_fold uses them, their bounds (up_to_version, as_of), invalidation, and
-- who may write them

-- the setting exists once the library is loaded; automatic snapshots are
-- turned off until the part that tests them
LOAD 'es_ext';
SHOW es.snapshot_every;
SET es.snapshot_every = 0;

-- a reducer that counts its calls in a session setting
SELECT set_config('regress.calls', '0', false);
CREATE FUNCTION counting(state jsonb, event jsonb) RETURNS jsonb
LANGUAGE plpgsql AS $$
BEGIN
  PERFORM set_config('regress.calls', (current_setting('regress.calls')::int + 1)::text, false);
  RETURN jsonb_build_object('n', (state->>'n')::int + 1,
                            'sum', (state->>'sum')::int + (event->'data'->>'i')::int,
                            'last', event->'version');
END $$;
-- calls(): the count so far, then reset
CREATE FUNCTION calls() RETURNS int LANGUAGE plpgsql AS $$
DECLARE
  n int := current_setting('regress.calls')::int;
BEGIN
  PERFORM set_config('regress.calls', '0', false);
  RETURN n;
END $$;

-- events 1..6 in one batch, 7..10 in another
SELECT version FROM es.es_append('snap-1', 0,
  (SELECT jsonb_agg(jsonb_build_object('type', 'Added', 'data', jsonb_build_object('i', i))) FROM generate_series(1, 6) i));
SELECT version FROM es.es_append('snap-1', 6,
  (SELECT jsonb_agg(jsonb_build_object('type', 'Added', 'data', jsonb_build_object('i', i))) FROM generate_series(7, 10) i));
CREATE TEMP TABLE batch_times AS
  SELECT version, recorded_at FROM es.events WHERE stream_id = 'snap-1';

-- the states a full replay gives, for every version
CREATE TEMP TABLE replay AS
  SELECT v, es.es_fold('snap-1', 'counting(jsonb,jsonb)', '{"n": 0, "sum": 0}', v) AS state
    FROM generate_series(0, 10) AS v;
SELECT calls() AS replay_calls;
SELECT * FROM replay WHERE v IN (5, 6, 10) ORDER BY v;

-- no snapshot yet: all 10 events
SELECT snapshot_version, events_applied, calls() AS calls
  FROM es.es_fold_state('snap-1', 'counting(jsonb,jsonb)', '{"n": 0, "sum": 0}');

-- an explicit snapshot at version 6
SELECT es.es_snapshot_save('snap-1', 'counting(jsonb,jsonb)', '{"n": 0, "sum": 0}', 6) AS saved;
SELECT calls() AS save_calls;
SELECT stream_id, reducer, version, state, automatic, octet_length(initial_hash) AS ih, octet_length(fingerprint) AS fp
  FROM es.snapshots ORDER BY version;
SELECT reducer::regprocedure FROM es.snapshots;

-- es_fold starts from it: 4 events applied, 4 reducer calls, same state
SELECT s.snapshot_version, s.events_applied, calls() AS calls, s.state = r.state AS same_state
  FROM es.es_fold_state('snap-1', 'counting(jsonb,jsonb)', '{"n": 0, "sum": 0}') AS s,
       replay AS r WHERE r.v = 10;

-- never past up_to_version: below 6 it replays from the start
SELECT up_to, s.snapshot_version, s.events_applied, s.version, s.state = r.state AS same_state
  FROM generate_series(4, 8) AS up_to,
       LATERAL es.es_fold_state('snap-1', 'counting(jsonb,jsonb)', '{"n": 0, "sum": 0}', up_to) AS s,
       replay AS r WHERE r.v = s.version
 ORDER BY up_to;
SELECT calls() > 0 AS called;

-- nor past as_of: the snapshot's last event must be recorded by then
SELECT s.snapshot_version, s.events_applied, s.version
  FROM es.es_fold_state('snap-1', 'counting(jsonb,jsonb)', '{"n": 0, "sum": 0}',
                        as_of => (SELECT recorded_at FROM batch_times WHERE version = 6)) AS s;
SELECT s.snapshot_version, s.events_applied, s.version
  FROM es.es_fold_state('snap-1', 'counting(jsonb,jsonb)', '{"n": 0, "sum": 0}',
                        as_of => (SELECT recorded_at FROM batch_times WHERE version = 6) - interval '1 microsecond') AS s;
-- a snapshot at 8 is newer, but its event 8 was recorded after that as_of
SELECT es.es_snapshot_save('snap-1', 'counting(jsonb,jsonb)', '{"n": 0, "sum": 0}', 8) AS saved;
SELECT s.snapshot_version, s.events_applied, s.version
  FROM es.es_fold_state('snap-1', 'counting(jsonb,jsonb)', '{"n": 0, "sum": 0}',
                        as_of => (SELECT recorded_at FROM batch_times WHERE version = 6)) AS s;
SELECT s.snapshot_version, s.events_applied, s.version
  FROM es.es_fold_state('snap-1', 'counting(jsonb,jsonb)', '{"n": 0, "sum": 0}') AS s;
SELECT calls() > 0 AS called;

-- es.snapshots is guarded: only es_fold, es_snapshot_save and
-- es_snapshot_delete write it (a forged state would be every reader's fold)
SELECT try($$UPDATE es.snapshots SET state = '{"n": 1000, "sum": 0, "last": 8}' WHERE stream_id = 'snap-1'$$);
SELECT try($$INSERT INTO es.snapshots SELECT * FROM es.snapshots WHERE false$$);
SELECT try($$DELETE FROM es.snapshots WHERE stream_id = 'snap-1'$$);
SELECT try($$TRUNCATE es.snapshots$$);
-- proof that the stored state is what the fold starts from: tamper with it
-- (as the table's owner, with the guard off)
ALTER TABLE es.snapshots DISABLE TRIGGER es_guard_write;
UPDATE es.snapshots SET state = '{"n": 1000, "sum": 0, "last": 8}' WHERE stream_id = 'snap-1' AND version = 8;
ALTER TABLE es.snapshots ENABLE TRIGGER es_guard_write;
SELECT es.es_fold('snap-1', 'counting(jsonb,jsonb)', '{"n": 0, "sum": 0}') AS tampered;
-- deleting snapshots changes no result (here: it repairs the tampered one)
SELECT es.es_snapshot_delete('snap-1', 'counting(jsonb,jsonb)') AS deleted;
SELECT s.snapshot_version, s.events_applied, s.state = r.state AS same_state
  FROM es.es_fold_state('snap-1', 'counting(jsonb,jsonb)', '{"n": 0, "sum": 0}') AS s,
       replay AS r WHERE r.v = 10;
SELECT calls() AS calls;

-- a snapshot is not used for another initial state ...
SELECT es.es_snapshot_save('snap-1', 'counting(jsonb,jsonb)', '{"n": 0, "sum": 0}', 6) AS saved;
SELECT snapshot_version, events_applied, state
  FROM es.es_fold_state('snap-1', 'counting(jsonb,jsonb)', '{"n": 100, "sum": 0}');
-- ... nor for another reducer, even one with the same body ...
CREATE FUNCTION counting_copy(state jsonb, event jsonb) RETURNS jsonb
LANGUAGE plpgsql AS $$
BEGIN
  PERFORM set_config('regress.calls', (current_setting('regress.calls')::int + 1)::text, false);
  RETURN jsonb_build_object('n', (state->>'n')::int + 1,
                            'sum', (state->>'sum')::int + (event->'data'->>'i')::int,
                            'last', event->'version');
END $$;
SELECT snapshot_version, events_applied
  FROM es.es_fold_state('snap-1', 'counting_copy(jsonb,jsonb)', '{"n": 0, "sum": 0}');
-- ... nor once the reducer's definition changed
CREATE OR REPLACE FUNCTION counting(state jsonb, event jsonb) RETURNS jsonb
LANGUAGE plpgsql AS $$
BEGIN
  PERFORM set_config('regress.calls', (current_setting('regress.calls')::int + 1)::text, false);
  RETURN jsonb_build_object('n', (state->>'n')::int + 1,
                            'sum', (state->>'sum')::int + 10 * (event->'data'->>'i')::int,
                            'last', event->'version');
END $$;
SELECT snapshot_version, events_applied, state
  FROM es.es_fold_state('snap-1', 'counting(jsonb,jsonb)', '{"n": 0, "sum": 0}');
-- a snapshot saved with the new definition replaces the stale one
SELECT es.es_snapshot_save('snap-1', 'counting(jsonb,jsonb)', '{"n": 0, "sum": 0}', 7) AS saved;
SELECT version, state FROM es.snapshots WHERE stream_id = 'snap-1' ORDER BY version;
SELECT snapshot_version, events_applied, state
  FROM es.es_fold_state('snap-1', 'counting(jsonb,jsonb)', '{"n": 0, "sum": 0}');
-- other changes of the definition count too (here: volatility)
ALTER FUNCTION counting(jsonb, jsonb) STABLE;
SELECT snapshot_version, events_applied
  FROM es.es_fold_state('snap-1', 'counting(jsonb,jsonb)', '{"n": 0, "sum": 0}');
ALTER FUNCTION counting(jsonb, jsonb) VOLATILE;
SELECT snapshot_version, events_applied
  FROM es.es_fold_state('snap-1', 'counting(jsonb,jsonb)', '{"n": 0, "sum": 0}');
-- and so does the upcaster registry: the reducer would see other data
CREATE FUNCTION snap_up(data jsonb) RETURNS jsonb LANGUAGE sql AS $$ SELECT data $$;
SELECT es.es_register_upcaster('SnapOther', 1, 'snap_up(jsonb)');
SELECT snapshot_version, events_applied
  FROM es.es_fold_state('snap-1', 'counting(jsonb,jsonb)', '{"n": 0, "sum": 0}');
SELECT es.es_unregister_upcaster('SnapOther', 1);
SELECT snapshot_version, events_applied
  FROM es.es_fold_state('snap-1', 'counting(jsonb,jsonb)', '{"n": 0, "sum": 0}');
-- a (forged) snapshot past the stream's end is never used
ALTER TABLE es.snapshots DISABLE TRIGGER es_guard_write;
INSERT INTO es.snapshots (stream_id, reducer, initial_hash, fingerprint, version, state)
  SELECT stream_id, reducer, initial_hash, fingerprint, 999, '{"forged": true}'
    FROM es.snapshots WHERE stream_id = 'snap-1' AND version = 7;
ALTER TABLE es.snapshots ENABLE TRIGGER es_guard_write;
SELECT snapshot_version, events_applied, state ? 'forged' AS forged
  FROM es.es_fold_state('snap-1', 'counting(jsonb,jsonb)', '{"n": 0, "sum": 0}');
SELECT es.es_snapshot_delete('snap-1') AS deleted;
SELECT calls() > 0 AS called;

-- automatic snapshots: after folding es.snapshot_every events or more
SET es.snapshot_every = 4;
SELECT snapshot_version, events_applied, version
  FROM es.es_fold_state('snap-1', 'counting(jsonb,jsonb)', '{"n": 0, "sum": 0}');
SELECT version, automatic FROM es.snapshots WHERE stream_id = 'snap-1' ORDER BY version;
SELECT snapshot_version, events_applied, version
  FROM es.es_fold_state('snap-1', 'counting(jsonb,jsonb)', '{"n": 0, "sum": 0}');
-- 3 more events: fewer than 4 applied, no new snapshot
SELECT version FROM es.es_append('snap-1', 10,
  (SELECT jsonb_agg(jsonb_build_object('type', 'Added', 'data', jsonb_build_object('i', i))) FROM generate_series(11, 13) i));
SELECT snapshot_version, events_applied, version
  FROM es.es_fold_state('snap-1', 'counting(jsonb,jsonb)', '{"n": 0, "sum": 0}');
SELECT version, automatic FROM es.snapshots WHERE stream_id = 'snap-1' ORDER BY version;
-- 2 more: 5 applied, a new automatic snapshot replaces the older one
SELECT version FROM es.es_append('snap-1', 13,
  (SELECT jsonb_agg(jsonb_build_object('type', 'Added', 'data', jsonb_build_object('i', i))) FROM generate_series(14, 15) i));
SELECT snapshot_version, events_applied, version
  FROM es.es_fold_state('snap-1', 'counting(jsonb,jsonb)', '{"n": 0, "sum": 0}');
SELECT version, automatic FROM es.snapshots WHERE stream_id = 'snap-1' ORDER BY version;
-- explicit snapshots stay
SELECT es.es_snapshot_save('snap-1', 'counting(jsonb,jsonb)', '{"n": 0, "sum": 0}', 12) AS saved;
SELECT version FROM es.es_append('snap-1', 15,
  (SELECT jsonb_agg(jsonb_build_object('type', 'Added', 'data', jsonb_build_object('i', i))) FROM generate_series(16, 19) i));
SELECT snapshot_version, events_applied, version
  FROM es.es_fold_state('snap-1', 'counting(jsonb,jsonb)', '{"n": 0, "sum": 0}');
SELECT version, automatic FROM es.snapshots WHERE stream_id = 'snap-1' ORDER BY version;
-- time travel still uses the explicit one
SELECT snapshot_version, events_applied, version
  FROM es.es_fold_state('snap-1', 'counting(jsonb,jsonb)', '{"n": 0, "sum": 0}', 14);
SELECT calls() > 0 AS called;

-- no automatic snapshot in a read-only transaction, under REPEATABLE READ
-- or SERIALIZABLE, or for a role that cannot write snapshots
SELECT version FROM es.es_append('snap-2', 0,
  (SELECT jsonb_agg(jsonb_build_object('type', 'Added', 'data', jsonb_build_object('i', i))) FROM generate_series(1, 10) i));
BEGIN READ ONLY;
SELECT events_applied FROM es.es_fold_state('snap-2', 'counting(jsonb,jsonb)', '{"n": 0, "sum": 0}');
COMMIT;
BEGIN ISOLATION LEVEL REPEATABLE READ;
SELECT events_applied FROM es.es_fold_state('snap-2', 'counting(jsonb,jsonb)', '{"n": 0, "sum": 0}');
COMMIT;
BEGIN ISOLATION LEVEL SERIALIZABLE;
SELECT events_applied FROM es.es_fold_state('snap-2', 'counting(jsonb,jsonb)', '{"n": 0, "sum": 0}');
COMMIT;
CREATE ROLE regress_snap_reader IN ROLE es_reader;
CREATE ROLE regress_snap_writer IN ROLE es_writer;
SET ROLE regress_snap_reader;
SELECT events_applied, state FROM es.es_fold_state('snap-2', 'counting(jsonb,jsonb)', '{"n": 0, "sum": 0}');
SELECT count(*) AS reader_sees_snapshots FROM es.snapshots;
RESET ROLE;
SELECT count(*) AS snap_2_snapshots FROM es.snapshots WHERE stream_id = 'snap-2';
-- a writer does write them
SET ROLE regress_snap_writer;
SELECT events_applied FROM es.es_fold_state('snap-2', 'counting(jsonb,jsonb)', '{"n": 0, "sum": 0}');
RESET ROLE;
SELECT version, automatic FROM es.snapshots WHERE stream_id = 'snap-2';
-- and snapshots serve every role that may fold
SET ROLE regress_snap_reader;
SELECT snapshot_version, events_applied FROM es.es_fold_state('snap-2', 'counting(jsonb,jsonb)', '{"n": 0, "sum": 0}');
RESET ROLE;
SELECT calls() > 0 AS called;

-- row level security on es.events: snapshots are neither used nor written
-- for a role it applies to, and cannot be saved
ALTER TABLE es.events ENABLE ROW LEVEL SECURITY;
CREATE POLICY regress_snap_all ON es.events FOR SELECT TO regress_snap_writer USING (true);
SET ROLE regress_snap_writer;
SELECT snapshot_version, events_applied FROM es.es_fold_state('snap-2', 'counting(jsonb,jsonb)', '{"n": 0, "sum": 0}');
SELECT snapshot_version, events_applied FROM es.es_fold_state('snap-2', 'counting(jsonb,jsonb)', '{"n": 10, "sum": 0}');
SELECT try($$SELECT es.es_snapshot_save('snap-2', 'counting(jsonb,jsonb)', '{"n": 0, "sum": 0}')$$);
RESET ROLE;
SELECT count(*) AS snap_2_snapshots FROM es.snapshots WHERE stream_id = 'snap-2';
DROP POLICY regress_snap_all ON es.events;
ALTER TABLE es.events DISABLE ROW LEVEL SECURITY;
SET es.snapshot_every = 0;

-- es_snapshot_save: bad arguments
SELECT try($$SELECT es.es_snapshot_save(NULL, 'counting(jsonb,jsonb)', '{}')$$);
SELECT try($$SELECT es.es_snapshot_save('snap-1', NULL, '{}')$$);
SELECT try($$SELECT es.es_snapshot_save('snap-1', 'counting(jsonb,jsonb)', NULL)$$);
SELECT try($$SELECT es.es_snapshot_save('snap-1', 'counting(jsonb,jsonb)', '{}', 0)$$);
SELECT try($$SELECT es.es_snapshot_save('snap-1', 'counting(jsonb,jsonb)', '{"n": 0, "sum": 0}', 100)$$);
SELECT try($$SELECT es.es_snapshot_save('snap-none', 'counting(jsonb,jsonb)', '{}')$$);
SELECT try($$SELECT es.es_snapshot_save('snap-1', 'snap_up(jsonb)', '{}')$$);
SET ROLE regress_snap_reader;
SELECT try($$SELECT es.es_snapshot_save('snap-1', 'counting(jsonb,jsonb)', '{}')$$);
SELECT try($$SELECT es.es_snapshot_delete('snap-1')$$);
SELECT try($$DELETE FROM es.snapshots$$);
RESET ROLE;
SELECT count(*) AS nothing_saved FROM es.snapshots WHERE stream_id IN ('snap-none') OR version = 100;

-- es_snapshot_delete: by stream and reducer, by reducer, everything
SELECT es.es_snapshot_save('snap-2', 'counting(jsonb,jsonb)', '{"n": 0, "sum": 0}', 5) AS saved;
SELECT es.es_snapshot_save('snap-2', 'counting_copy(jsonb,jsonb)', '{"n": 0, "sum": 0}', 5) AS saved;
SELECT es.es_snapshot_save('snap-1', 'counting_copy(jsonb,jsonb)', '{"n": 0, "sum": 0}', 5) AS saved;
SELECT stream_id, reducer::regprocedure, version FROM es.snapshots ORDER BY 1, 2, 3;
SELECT es.es_snapshot_delete('snap-2', 'counting_copy(jsonb,jsonb)') AS deleted;
SELECT es.es_snapshot_delete(NULL, 'counting_copy(jsonb,jsonb)') AS deleted;
SELECT es.es_snapshot_delete('snap-none') AS deleted;
SELECT try($$SELECT es.es_snapshot_delete('snap-1', 4294967295::oid::regprocedure)$$);
SELECT es.es_snapshot_delete(NULL) AS deleted_all;
SELECT count(*) AS left_over FROM es.snapshots;
SELECT calls() > 0 AS called;

DROP ROLE regress_snap_reader, regress_snap_writer;
RESET es.snapshot_every;

-- a state folded under another search_path (a writer's own operators in
-- front of the reducer's names) is never another caller's snapshot: the
-- path is part of the fingerprint unless the reducer sets its own
CREATE SCHEMA snap_evil;
CREATE FUNCTION snap_evil.evil_add(integer, integer) RETURNS integer LANGUAGE sql AS $$ SELECT 1000000 $$;
CREATE OPERATOR snap_evil.+ (LEFTARG = integer, RIGHTARG = integer, FUNCTION = snap_evil.evil_add);
CREATE FUNCTION public.snap_count(s jsonb, e jsonb) RETURNS jsonb LANGUAGE sql
	AS $$ SELECT jsonb_build_object('n', coalesce((s->>'n')::int, 0) + 1) $$;
SELECT version FROM es.es_append('snap-path', 0, '[{"type": "A", "data": {}}, {"type": "A", "data": {}}]');
SET search_path = snap_evil, pg_catalog, public;
SET es.snapshot_every = 1;
SELECT es.es_fold('snap-path', 'public.snap_count(jsonb,jsonb)', '{}') AS folded_with_other_operators;
RESET search_path;
SELECT count(*) AS snapshots_written FROM es.snapshots WHERE stream_id = 'snap-path';
SELECT s.state, s.snapshot_version
  FROM es.es_fold_state('snap-path', 'public.snap_count(jsonb,jsonb)', '{}') AS s;
-- a reducer that sets its own search_path shares its snapshots
ALTER FUNCTION public.snap_count(jsonb, jsonb) SET search_path = pg_catalog, public;
SET search_path = snap_evil, pg_catalog, public;
SELECT es.es_fold('snap-path', 'public.snap_count(jsonb,jsonb)', '{}') AS folded_with_its_own_path;
RESET search_path;
SELECT s.state, s.snapshot_version
  FROM es.es_fold_state('snap-path', 'public.snap_count(jsonb,jsonb)', '{}') AS s;
RESET es.snapshot_every;
SELECT es.es_snapshot_delete('snap-path') >= 0 AS deleted;
DROP FUNCTION public.snap_count(jsonb, jsonb);
DROP SCHEMA snap_evil CASCADE;
