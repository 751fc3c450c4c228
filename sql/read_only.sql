-- read_only: in a read-only transaction (as on a hot standby) every writing
-- function of es_ext is refused with 25006 before it does anything -- no
-- transaction id, no row; the readers and es_fold keep working (es_fold
-- skips its automatic snapshot).  test/t/050_hot_standby.pl checks the same
-- on a standby, for every function of the extension.

SELECT store_mark();
CREATE SCHEMA ro;

-- a reducer that counts its calls in a session setting (allowed read-only)
SELECT set_config('regress.ro_calls', '0', false);
CREATE FUNCTION ro.total(state jsonb, event jsonb) RETURNS jsonb
LANGUAGE plpgsql AS $$
BEGIN
  PERFORM set_config('regress.ro_calls', (current_setting('regress.ro_calls')::int + 1)::text, false);
  RETURN jsonb_build_object('n', (state->>'n')::int + 1,
                            'sum', (state->>'sum')::int + (event->'data'->>'i')::int);
END $$;
CREATE FUNCTION ro.v1_to_v2(data jsonb) RETURNS jsonb
LANGUAGE sql IMMUTABLE AS $$ SELECT data || '{"v2": true}' $$;

-- an inline projection
CREATE TABLE ro.totals (stream_id text PRIMARY KEY, n int NOT NULL, total int NOT NULL);
CREATE FUNCTION ro.project_total() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO ro.totals AS t VALUES (NEW.stream_id, 1, (NEW.data->>'i')::int)
  ON CONFLICT (stream_id) DO UPDATE SET n = t.n + 1, total = t.total + excluded.total;
  RETURN NULL;
END $$;
CREATE TRIGGER ro_totals AFTER INSERT ON es.events
  FOR EACH ROW WHEN (NEW.category = 'rocount') EXECUTE FUNCTION ro.project_total();

-- the store as a writable transaction leaves it: events, an explicit
-- snapshot, an upcaster, an outbox route, a consumer group and a lease
SELECT version FROM es.es_append('rocount-1', 0,
  (SELECT jsonb_agg(jsonb_build_object('type', 'Added', 'data', jsonb_build_object('i', i),
                                       'metadata', jsonb_build_object('correlation_id', 'ro-corr',
                                                                      'causation_id', 'ro-cause')))
     FROM generate_series(1, 6) i));
-- (the upcaster first: the registry is part of a snapshot's fingerprint)
SELECT es.es_register_upcaster('Renamed', 1, 'ro.v1_to_v2(jsonb)');
SELECT es.es_snapshot_save('rocount-1', 'ro.total(jsonb,jsonb)', '{"n": 0, "sum": 0}', 4);
SELECT es.es_outbox_route('rocount');
SELECT es.es_outbox_create_group('ro_group') > 0 AS created;
SELECT version FROM es.es_append('rocount-1', 6, '[{"type": "Added", "data": {"i": 7}}]');
SELECT lease AS ro_lease, "position" AS ro_position FROM es.es_outbox_claim('ro_group', 1) \gset
SELECT * FROM ro.totals;
SELECT store_mark();
CREATE TEMP TABLE ro_before AS
  SELECT (SELECT count(*) FROM es.snapshots) AS snapshots,
         (SELECT count(*) FROM es.upcasters) AS upcasters,
         (SELECT count(*) FROM es.outbox_routes) AS routes,
         (SELECT count(*) FROM es.outbox_groups) AS groups,
         (SELECT count(*) FROM es.outbox) AS outbox,
         (SELECT count(*) FROM es.outbox_deliveries) AS deliveries,
         (SELECT string_agg(d.position || ':' || d.attempts || ':' || d.lease, ',' ORDER BY d.position)
            FROM es.outbox_deliveries AS d) AS leases;
SELECT set_config('regress.ro_calls', '0', false);

-- every writer: 25006, whatever its arguments would have done
BEGIN READ ONLY;
SELECT try($$SELECT es.es_append('rocount-1', NULL, '[{"type": "Added", "data": {"i": 8}}]')$$);
SELECT try($$SELECT es.es_append('rocount-2', 0, '[{"type": "Added", "data": {"i": 1}}]')$$);
SELECT try($$SELECT es.es_snapshot_save('rocount-1', 'ro.total(jsonb,jsonb)', '{"n": 0, "sum": 0}')$$);
SELECT try($$SELECT es.es_snapshot_delete('rocount-1')$$);
SELECT try($$SELECT es.es_snapshot_delete(NULL)$$);
SELECT try($$SELECT es.es_register_upcaster('Added', 1, 'ro.v1_to_v2(jsonb)')$$);
SELECT try($$SELECT es.es_unregister_upcaster('Renamed', 1)$$);
SELECT try($$SELECT es.es_projection_replay('ro_totals', NULL, 10, false)$$);
SELECT try($$SELECT es.es_outbox_route('rocount', 'Added')$$);
SELECT try($$SELECT es.es_outbox_unroute('rocount')$$);
SELECT try($$SELECT es.es_outbox_create_group('ro_group_2')$$);
SELECT try($$SELECT es.es_outbox_alter_group('ro_group', max_attempts => 3)$$);
SELECT try($$SELECT es.es_outbox_drop_group('ro_group')$$);
SELECT try($$SELECT es.es_outbox_claim('ro_group', 10)$$);
SELECT try(format($$SELECT es.es_outbox_ack('ro_group', %L, ARRAY[%s]::bigint[])$$, :'ro_lease', :ro_position));
SELECT try(format($$SELECT es.es_outbox_nack('ro_group', %L, ARRAY[%s]::bigint[], 'boom')$$, :'ro_lease', :ro_position));
SELECT try($$SELECT es.es_outbox_replay('ro_group')$$);
SELECT try($$SELECT es.es_outbox_discard('ro_group')$$);
SELECT try($$SELECT es.es_outbox_cleanup()$$);
-- refused before the arguments are even looked at
SELECT try($$SELECT es.es_append(NULL, NULL, NULL)$$);
SELECT try($$SELECT es.es_outbox_claim('no_such_group')$$);
-- a wake-up is not a write: allowed, as NOTIFY is in a read-only transaction
SELECT try($$SELECT es.es_outbox_notify()$$);
-- nothing was attempted: the transaction never took an xid
SELECT pg_current_xact_id_if_assigned() IS NULL AS no_xid;
COMMIT;

-- the procedure: its ALTER TABLE is refused by PostgreSQL (25006)
SET default_transaction_read_only = on;
SELECT try($$CALL es.es_rebuild_projection('ro_totals', 'TRUNCATE ro.totals')$$);
RESET default_transaction_read_only;
SELECT t.tgenabled FROM pg_trigger AS t WHERE t.tgname = 'ro_totals';

-- nothing written
SELECT * FROM store_counts();
SELECT * FROM ro.totals;
SELECT b.* IS NOT DISTINCT FROM n.* AS unchanged
  FROM ro_before AS b,
       (SELECT (SELECT count(*) FROM es.snapshots) AS snapshots,
               (SELECT count(*) FROM es.upcasters) AS upcasters,
               (SELECT count(*) FROM es.outbox_routes) AS routes,
               (SELECT count(*) FROM es.outbox_groups) AS groups,
               (SELECT count(*) FROM es.outbox) AS outbox,
               (SELECT count(*) FROM es.outbox_deliveries) AS deliveries,
               (SELECT string_agg(d.position || ':' || d.attempts || ':' || d.lease, ',' ORDER BY d.position)
                  FROM es.outbox_deliveries AS d) AS leases) AS n;
SELECT projection FROM es.projection_status WHERE projection = 'ro_totals';

-- the readers work in a read-only transaction
BEGIN READ ONLY;
SELECT version, event_type, data FROM es.es_read_stream('rocount-1', 5);
SELECT es.es_stream_version('rocount-1');
SELECT count(*) AS log_rows, max(horizon) = es.es_log_horizon() AS same_horizon
  FROM es.es_read_all(NULL, 10000) WHERE stream_id = 'rocount-1';
SELECT count(*) FROM es.es_read_all(NULL, 10, 'rocount', ARRAY['Added']);
SELECT count(*) FROM es.es_events_by_correlation('ro-corr');
SELECT count(*) FROM es.es_events_by_causation('ro-cause');
SELECT (es.es_upcast(e)).data FROM es.events AS e WHERE e.stream_id = 'rocount-1' AND e.version = 1;
SELECT es.es_fold_agg('ro.total(jsonb,jsonb)', '{"n": 0, "sum": 0}', e ORDER BY e.version)
  FROM es.events AS e WHERE e.stream_id = 'rocount-1';
SELECT setting, mode FROM es.es_outbox_notify_status();
SELECT count(*) >= 0 AS user_objects FROM es.es_user_objects();
SELECT consumer_group, undelivered, in_flight FROM es.outbox_status WHERE consumer_group = 'ro_group';
SELECT count(*) FROM es.outbox_dead_letters;
SELECT count(*) >= 0 AS holders FROM es.horizon_holders;
-- es_fold: from the explicit snapshot (version 4: 3 reducer calls); with
-- es.snapshot_every = 1 it would write an automatic snapshot, and skips it
SET LOCAL es.snapshot_every = 1;
SELECT set_config('regress.ro_calls', '0', false);
SELECT state, version, snapshot_version, events_applied
  FROM es.es_fold_state('rocount-1', 'ro.total(jsonb,jsonb)', '{"n": 0, "sum": 0}');
SELECT current_setting('regress.ro_calls') AS reducer_calls;
SELECT es.es_fold('rocount-1', 'ro.total(jsonb,jsonb)', '{"n": 0, "sum": 0}');
SELECT es.es_fold('rocount-1', 'ro.total(jsonb,jsonb)', '{"n": 0, "sum": 0}', 3);
SELECT pg_current_xact_id_if_assigned() IS NULL AS no_xid;
COMMIT;
SELECT version, automatic FROM es.snapshots WHERE stream_id = 'rocount-1' ORDER BY version;

-- the same transaction may write once it is read-write
BEGIN;
SET TRANSACTION READ ONLY;
SELECT try($$SELECT es.es_append('rocount-1', 7, '[{"type": "Added", "data": {"i": 8}}]')$$);
ROLLBACK;
SELECT version FROM es.es_append('rocount-1', 7, '[{"type": "Added", "data": {"i": 8}}]');
SELECT * FROM ro.totals;

-- clean up what later topics would see
SELECT es.es_outbox_drop_group('ro_group');
SELECT es.es_outbox_unroute('rocount');
SELECT es.es_unregister_upcaster('Renamed', 1);
SELECT es.es_snapshot_delete(NULL, 'ro.total(jsonb,jsonb)');
DROP TRIGGER ro_totals ON es.events;
