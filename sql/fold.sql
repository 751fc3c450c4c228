-- fold: es_fold, es_fold_state and es_fold_agg -- results, time travel,
-- reducer checks and errors, bad arguments, privileges and RLS
SET es.snapshot_every = 0;	-- snapshots have their own file (snapshot.sql)

-- an order stream in three batches, plus a second stream
SELECT version FROM es.es_append('fold-1', 0, '[
  {"type": "OrderPlaced", "data": {"customer": "c-7"}},
  {"type": "ItemAdded",   "data": {"sku": "A1", "qty": 2, "price": 9.5}}
]');
SELECT version FROM es.es_append('fold-1', 2, '[
  {"type": "ItemAdded",   "data": {"sku": "B2", "qty": 1, "price": 20}},
  {"type": "ItemRemoved", "data": {"sku": "A1"}, "metadata": {"by": "support"}}
]');
SELECT version FROM es.es_append('fold-1', 4, '[{"type": "OrderConfirmed", "data": {}}]');
SELECT version FROM es.es_append('fold-2', 0, '[{"type": "OrderPlaced", "data": {"customer": "c-9"}}]');

-- a reducer in SQL
CREATE FUNCTION order_sql(state jsonb, event jsonb) RETURNS jsonb
LANGUAGE sql IMMUTABLE AS $$
  SELECT CASE event->>'type'
    WHEN 'OrderPlaced' THEN state || jsonb_build_object('customer', event->'data'->'customer', 'status', 'open')
    WHEN 'ItemAdded' THEN jsonb_set(state, ARRAY['items', event->'data'->>'sku'],
                                    jsonb_build_object('qty', event->'data'->'qty', 'price', event->'data'->'price'))
    WHEN 'ItemRemoved' THEN state #- ARRAY['items', event->'data'->>'sku']
    WHEN 'OrderConfirmed' THEN state || '{"status": "confirmed"}'
    ELSE state
  END || jsonb_build_object('version', event->'version')
$$;

-- the same reducer in PL/pgSQL
CREATE FUNCTION order_plpgsql(state jsonb, event jsonb) RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
  CASE event->>'type'
    WHEN 'OrderPlaced' THEN
      state := state || jsonb_build_object('customer', event->'data'->'customer', 'status', 'open');
    WHEN 'ItemAdded' THEN
      state := jsonb_set(state, ARRAY['items', event->'data'->>'sku'],
                         jsonb_build_object('qty', event->'data'->'qty', 'price', event->'data'->'price'));
    WHEN 'ItemRemoved' THEN
      state := state #- ARRAY['items', event->'data'->>'sku'];
    WHEN 'OrderConfirmed' THEN
      state := state || '{"status": "confirmed"}';
    ELSE
      NULL;
  END CASE;
  RETURN state || jsonb_build_object('version', event->'version');
END
$$;

-- a reducer taking the event as an es.events row
CREATE FUNCTION order_row(state jsonb, e es.events) RETURNS jsonb
LANGUAGE sql IMMUTABLE AS $$
  SELECT state || jsonb_build_object('types', COALESCE(state->'types', '[]') || to_jsonb(e.event_type),
                                     'version', e.version)
$$;

-- folds: SQL and PL/pgSQL give the same state
SELECT es.es_fold('fold-1', 'order_sql(jsonb,jsonb)', '{"items": {}}');
SELECT es.es_fold('fold-1', 'order_plpgsql(jsonb,jsonb)', '{"items": {}}');
SELECT es.es_fold('fold-1', 'order_row(jsonb,es.events)', '{}');
SELECT es.es_fold('fold-2', 'order_plpgsql(jsonb,jsonb)', '{"items": {}}');

-- the event argument: every key, with its JSON type
CREATE FUNCTION last_event(state jsonb, event jsonb) RETURNS jsonb
LANGUAGE sql IMMUTABLE AS $$ SELECT event $$;
SELECT k.key, jsonb_typeof(k.value) AS type,
       CASE WHEN k.key IN ('event_id', 'recorded_at', 'global_position') THEN '…' ELSE k.value::text END AS value
  FROM jsonb_each(es.es_fold('fold-1', 'last_event(jsonb,jsonb)', 'null', 4)) AS k
 ORDER BY k.key;
-- recorded_at is ISO 8601 in UTC, event_id and global_position are the stored ones
SET TimeZone = 'America/New_York';
SELECT ev->>'recorded_at' LIKE '%+00:00' AS utc,
       (ev->>'recorded_at')::timestamptz = e.recorded_at AS same_time,
       (ev->>'event_id')::uuid = e.event_id AS same_id,
       (ev->>'global_position')::bigint = e.global_position AS same_position
  FROM es.es_fold('fold-1', 'last_event(jsonb,jsonb)', 'null', 3) AS ev,
       es.events AS e
 WHERE e.stream_id = 'fold-1' AND e.version = 3;
RESET TimeZone;

-- an empty or missing stream folds to the initial state
SELECT es.es_fold('fold-none', 'order_sql(jsonb,jsonb)', '{"empty": true}');
SELECT es.es_fold('fold-none', 'order_sql(jsonb,jsonb)', 'null');
SELECT * FROM es.es_fold_state('fold-none', 'order_sql(jsonb,jsonb)', '[]');

-- es_fold_state: the version to use as the next expected version
SELECT state->>'status' AS status, version, snapshot_version, events_applied
  FROM es.es_fold_state('fold-1', 'order_plpgsql(jsonb,jsonb)', '{"items": {}}');

-- time travel by version: 0 folds nothing, past the end folds everything
SELECT v, es.es_fold('fold-1', 'order_row(jsonb,es.events)', '{}', v) AS state
  FROM unnest(ARRAY[0, 1, 2, 3, 5, 6, 1000]) AS v;

-- time travel by time: the events recorded at or before as_of (a batch
-- shares one recorded_at, so a batch is never split)
CREATE TEMP TABLE batch_times AS
  SELECT version, recorded_at FROM es.events WHERE stream_id = 'fold-1';
SELECT count(DISTINCT recorded_at) AS batches FROM batch_times;
SELECT es.es_fold('fold-1', 'order_row(jsonb,es.events)', '{}',
                  as_of => (SELECT recorded_at FROM batch_times WHERE version = 1) - interval '1 microsecond') AS before_first;
SELECT es.es_fold('fold-1', 'order_row(jsonb,es.events)', '{}',
                  as_of => (SELECT recorded_at FROM batch_times WHERE version = 1)) AS first_batch;
SELECT es.es_fold('fold-1', 'order_row(jsonb,es.events)', '{}',
                  as_of => (SELECT recorded_at FROM batch_times WHERE version = 3)) AS two_batches;
SELECT es.es_fold('fold-1', 'order_row(jsonb,es.events)', '{}', as_of => 'infinity') AS all_events;
-- both bounds: the stricter one wins
SELECT es.es_fold('fold-1', 'order_row(jsonb,es.events)', '{}', 3,
                  (SELECT recorded_at FROM batch_times WHERE version = 5)) AS up_to_3;
SELECT es.es_fold('fold-1', 'order_row(jsonb,es.events)', '{}', 5,
                  (SELECT recorded_at FROM batch_times WHERE version = 1)) AS as_of_first;
SELECT version, events_applied
  FROM es.es_fold_state('fold-1', 'order_row(jsonb,es.events)', '{}',
                        as_of => (SELECT recorded_at FROM batch_times WHERE version = 3));

-- es_fold_agg: the same state, for many streams in one query
SELECT e.stream_id, es.es_fold_agg('order_plpgsql(jsonb,jsonb)', '{"items": {}}', e ORDER BY e.version)
  FROM es.events AS e WHERE e.stream_id IN ('fold-1', 'fold-2')
 GROUP BY e.stream_id ORDER BY e.stream_id;
SELECT (SELECT es.es_fold_agg('order_sql(jsonb,jsonb)', '{"items": {}}', e ORDER BY e.version)
          FROM es.events AS e WHERE e.stream_id = 'fold-1')
     = es.es_fold('fold-1', 'order_sql(jsonb,jsonb)', '{"items": {}}') AS agg_equals_fold;
SELECT es.es_fold_agg('order_row(jsonb,es.events)', '{}', e ORDER BY e.version)
  FROM es.events AS e WHERE e.stream_id = 'fold-1';
-- as a window function: the state after each event
SELECT e.version, es.es_fold_agg('order_row(jsonb,es.events)', '{}', e)
         OVER (ORDER BY e.version) ->> 'types' AS types_so_far
  FROM es.events AS e WHERE e.stream_id = 'fold-1' ORDER BY e.version;
-- a stream without events (outer join): the initial state
SELECT s.id, es.es_fold_agg('order_row(jsonb,es.events)', '{"none": true}', e ORDER BY e.version)
  FROM (VALUES ('fold-2'), ('fold-none')) AS s(id)
  LEFT JOIN es.events AS e ON e.stream_id = s.id
 GROUP BY s.id ORDER BY s.id;
-- no rows at all: NULL
SELECT es.es_fold_agg('order_row(jsonb,es.events)', '{}', e) FROM es.events AS e WHERE false;
-- rows of one stream out of version order are refused
SELECT try($$SELECT es.es_fold_agg('order_row(jsonb,es.events)', '{}', e ORDER BY e.version DESC)
              FROM es.events AS e WHERE e.stream_id = 'fold-1'$$);
SELECT try($$SELECT es.es_fold_agg(r, '{}', e ORDER BY e.version)
              FROM es.events AS e,
                   LATERAL (SELECT CASE WHEN e.version = 1 THEN 'order_row(jsonb,es.events)'::regprocedure
                                        ELSE 'order_sql(jsonb,jsonb)'::regprocedure END) AS x(r)
             WHERE e.stream_id = 'fold-1'$$);
SELECT try($$SELECT es.es_fold_agg(NULL, '{}', e) FROM es.events AS e WHERE e.stream_id = 'fold-1'$$);
SELECT try($$SELECT es.es_fold_agg('order_sql(jsonb,jsonb)', NULL, e) FROM es.events AS e WHERE e.stream_id = 'fold-1'$$);

-- reducer checks: each a clear error before any event is read
CREATE FUNCTION bad_one_arg(state jsonb) RETURNS jsonb LANGUAGE sql AS 'SELECT state';
CREATE FUNCTION bad_arg_type(state jsonb, event text) RETURNS jsonb LANGUAGE sql AS 'SELECT state';
CREATE FUNCTION bad_state_type(state json, event jsonb) RETURNS jsonb LANGUAGE sql AS 'SELECT event';
CREATE FUNCTION bad_return(state jsonb, event jsonb) RETURNS json LANGUAGE sql AS 'SELECT state::json';
CREATE FUNCTION bad_setof(state jsonb, event jsonb) RETURNS SETOF jsonb LANGUAGE sql AS 'SELECT state';
CREATE PROCEDURE bad_proc(state jsonb, event jsonb) LANGUAGE sql AS 'SELECT 1';
CREATE AGGREGATE bad_agg(jsonb) (SFUNC = jsonb_concat, STYPE = jsonb);
CREATE FUNCTION bad_raises(state jsonb, event jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
BEGIN
  IF (event->>'version')::int = 3 THEN
    RAISE EXCEPTION 'cannot apply %', event->>'type' USING ERRCODE = 'P0001', DETAIL = 'Reducer detail.';
  END IF;
  RETURN state;
END $$;
CREATE FUNCTION bad_null(state jsonb, event jsonb) RETURNS jsonb LANGUAGE sql AS $$
  SELECT CASE WHEN event->>'type' = 'ItemRemoved' THEN NULL ELSE state END
$$;
SELECT try($$SELECT es.es_fold('fold-1', 'bad_one_arg(jsonb)', '{}')$$);
SELECT try($$SELECT es.es_fold('fold-1', 'bad_arg_type(jsonb,text)', '{}')$$);
SELECT try($$SELECT es.es_fold('fold-1', 'bad_state_type(json,jsonb)', '{}')$$);
SELECT try($$SELECT es.es_fold('fold-1', 'bad_return(jsonb,jsonb)', '{}')$$);
SELECT try($$SELECT es.es_fold('fold-1', 'bad_setof(jsonb,jsonb)', '{}')$$);
SELECT try($$SELECT es.es_fold('fold-1', 'bad_proc(jsonb,jsonb)', '{}')$$);
SELECT try($$SELECT es.es_fold('fold-1', 'bad_agg(jsonb)', '{}')$$);
SELECT try($$SELECT es.es_fold('fold-1', 'row_number()', '{}')$$);
SELECT try($$SELECT es.es_fold('fold-1', 'jsonb_concat(jsonb,jsonb)', '{}')$$) AS builtin_ok;
SELECT try($$SELECT es.es_fold('fold-1', 4294967295::oid::regprocedure, '{}')$$);
SELECT try($$SELECT es.es_fold_agg('bad_setof(jsonb,jsonb)', '{}', e) FROM es.events AS e$$);
SELECT try($$SELECT es.es_fold_state('fold-1', 'bad_return(jsonb,jsonb)', '{}')$$);
-- a reducer that raises aborts the fold with its error, and the context
-- names the stream and the version
\set VERBOSITY default
SELECT es.es_fold('fold-1', 'bad_raises(jsonb,jsonb)', '{}');
SELECT es.es_fold_agg('bad_raises(jsonb,jsonb)', '{}', e ORDER BY e.version)
  FROM es.events AS e WHERE e.stream_id = 'fold-1';
-- a reducer returning SQL NULL
SELECT es.es_fold('fold-1', 'bad_null(jsonb,jsonb)', '{}');
SELECT es.es_fold('fold-1', 'bad_null(jsonb,jsonb)', '{}', 3) AS before_the_null;

-- bad arguments
SELECT try($$SELECT es.es_fold(NULL, 'order_sql(jsonb,jsonb)', '{}')$$);
SELECT try($$SELECT es.es_fold('fold-1', NULL, '{}')$$);
SELECT try($$SELECT es.es_fold('fold-1', 'order_sql(jsonb,jsonb)', NULL)$$);
SELECT try($$SELECT es.es_fold('fold-1', 'order_sql(jsonb,jsonb)', '{}', -1)$$);
SELECT try($$SELECT es.es_fold('fold-1', 'no_such_reducer(jsonb,jsonb)', '{}')$$);
SELECT try($$SELECT es.es_fold_state(NULL, 'order_sql(jsonb,jsonb)', '{}')$$);

-- interruptible: statement_timeout stops a long fold
CREATE FUNCTION slow_reducer(state jsonb, event jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
BEGIN
  PERFORM pg_sleep(0.05);
  RETURN state;
END $$;
SELECT version FROM es.es_append('fold-slow', 0,
  (SELECT jsonb_agg(jsonb_build_object('type', 'Tick', 'data', i)) FROM generate_series(1, 100) i));
-- (terse: the context names the version reached, which depends on timing)
SET statement_timeout = '300ms';
\set VERBOSITY terse
SELECT es.es_fold('fold-slow', 'slow_reducer(jsonb,jsonb)', '{}');
\set VERBOSITY default
RESET statement_timeout;

-- privileges: readers fold; the reducer needs EXECUTE and es.events needs
-- SELECT; the reducer is checked first
CREATE ROLE regress_fold_reader IN ROLE es_reader;
CREATE ROLE regress_fold_nobody;
GRANT USAGE ON SCHEMA es TO regress_fold_nobody;
GRANT EXECUTE ON FUNCTION es.es_fold(text, regprocedure, jsonb, bigint, timestamptz) TO regress_fold_nobody;
CREATE FUNCTION private_reducer(state jsonb, event jsonb) RETURNS jsonb LANGUAGE sql AS 'SELECT state';
REVOKE EXECUTE ON FUNCTION private_reducer(jsonb, jsonb) FROM PUBLIC;
SET ROLE regress_fold_reader;
SELECT es.es_fold('fold-1', 'order_row(jsonb,es.events)', '{}') ->> 'version' AS reader_folds;
SELECT try($$SELECT es.es_fold('fold-1', 'private_reducer(jsonb,jsonb)', '{}')$$);
SELECT try($$SELECT es.es_fold_agg('private_reducer(jsonb,jsonb)', '{}', e) FROM es.events AS e$$);
RESET ROLE;
SET ROLE regress_fold_nobody;
SELECT try($$SELECT es.es_fold('fold-1', 'bad_return(jsonb,jsonb)', '{}')$$) AS checked_first;
SELECT try($$SELECT es.es_fold('fold-1', 'order_sql(jsonb,jsonb)', '{}')$$) AS then_the_table;
SELECT try($$SELECT es.es_fold_state('fold-1', 'order_sql(jsonb,jsonb)', '{}')$$) AS no_execute;
RESET ROLE;

-- row level security on es.events applies to the fold
ALTER TABLE es.events ENABLE ROW LEVEL SECURITY;
CREATE POLICY regress_fold_hide ON es.events FOR SELECT TO regress_fold_reader
  USING (event_type <> 'ItemRemoved');
SET ROLE regress_fold_reader;
SELECT es.es_fold('fold-1', 'order_row(jsonb,es.events)', '{}') AS without_removed;
RESET ROLE;
DROP POLICY regress_fold_hide ON es.events;
ALTER TABLE es.events DISABLE ROW LEVEL SECURITY;

-- a hostile search_path changes nothing
CREATE SCHEMA evil_fold;
CREATE FUNCTION evil_fold.int8_gt(bigint, bigint) RETURNS boolean LANGUAGE sql IMMUTABLE AS 'SELECT true';
CREATE OPERATOR evil_fold.> (LEFTARG = bigint, RIGHTARG = bigint, PROCEDURE = evil_fold.int8_gt);
CREATE FUNCTION evil_fold.text_eq(text, text) RETURNS boolean LANGUAGE sql IMMUTABLE AS 'SELECT true';
CREATE OPERATOR evil_fold.= (LEFTARG = text, RIGHTARG = text, PROCEDURE = evil_fold.text_eq);
CREATE TABLE evil_fold.events (LIKE es.events);
SET search_path = evil_fold, public, es, pg_catalog;
SELECT es_fold('fold-2', 'order_row(jsonb,es.events)', '{}') AS under_evil_path;
SELECT es_fold_agg('order_row(jsonb,es.events)', '{}', e ORDER BY e.version)
  FROM es.events AS e WHERE e.stream_id OPERATOR(pg_catalog.=) 'fold-2';
RESET search_path;
DROP SCHEMA evil_fold CASCADE;

DROP ROLE regress_fold_reader;
REVOKE ALL ON SCHEMA es FROM regress_fold_nobody;
REVOKE ALL ON FUNCTION es.es_fold(text, regprocedure, jsonb, bigint, timestamptz) FROM regress_fold_nobody;
DROP ROLE regress_fold_nobody;
RESET es.snapshot_every;

-- es.events values built by the caller are checked (found by the fuzz
-- suite: these crashed the server)
CREATE FUNCTION keep_state(s jsonb, e jsonb) RETURNS jsonb LANGUAGE sql AS 'SELECT s';
SELECT try($$SELECT es.es_fold_agg('-'::regprocedure, '{}', e) FROM es.events e$$);
CREATE FUNCTION up_same(d jsonb) RETURNS jsonb LANGUAGE sql AS 'SELECT d';
SELECT es.es_register_upcaster('NulUp', 1, 'up_same(jsonb)');
SELECT try($$SELECT es.es_upcast(ROW(1, 'nul-1', 1, gen_random_uuid(), 'NulUp', 1, NULL, NULL, now(), 'nul', 0, '1', NULL, NULL)::es.events)$$);
SELECT es.es_unregister_upcaster('NulUp', 1);
DROP FUNCTION up_same(jsonb);
SELECT try($$SELECT es.es_fold_agg('keep_state(jsonb,jsonb)', '{}', ROW(NULL, NULL, 1, NULL, 'A', 1, '{}', NULL, NULL, NULL, NULL, NULL, NULL, NULL)::es.events)$$);
DROP FUNCTION keep_state(jsonb, jsonb);
