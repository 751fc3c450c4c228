-- dcb_attack: adversarial inputs to tags, queries and conditional appends
-- (issue 17).  Every malformed query, tag, cursor or NULL argument gets a
-- clear SQLSTATE and writes nothing; a transaction cannot fill the shared
-- lock table with condition keys; a condition's cursor must be a read
-- position; idempotent retries; row level security hides another tenant's
-- events from reads and conditions (but pg_locks shows the hashed keys of
-- tags being written right now: documented, not hidden).
-- Tags and types start with "dxa" (other files' events do not match).

-- the SQLSTATE, message and constraint of a statement (no detail: details
-- name log cursors, which differ from run to run; so do cursors in messages)
CREATE FUNCTION dxa_try(sql text) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
	st text;
	msg text;
	con text;
BEGIN
	EXECUTE sql;
	RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
	GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE, msg = MESSAGE_TEXT, con = CONSTRAINT_NAME;
	RETURN st || ': ' || regexp_replace(msg, '\(-?\d+,\d+,-?\d+\)', '(cursor)') || CASE WHEN con <> '' THEN ' [' || con || ']' ELSE '' END;
END;
$$;

SELECT store_mark();

-- malformed queries (es_read_query), each 22023 / 54000 / 22004
SELECT q, dxa_try(format('SELECT count(*) FROM es.es_read_query(%L)', q))
  FROM unnest(ARRAY[
	'[]', '{}', '{"items": []}', '{"items": [], "x": 1}', '{"items": {}}', '{"items": null}',
	'1', '"x"', 'null', 'true', '[null]', '[1]', '[[]]', '["dxa"]',
	'[{"tags": "dxa"}]', '[{"tags": {}}]', '[{"tags": [1]}]', '[{"tags": [null]}]',
	'[{"tags": [""]}]', '[{"tags": ["dxa","dxa"]}]', '[{"tags": [["dxa"]]}]',
	'[{"tags": [{"a": 1}]}]', '[{"types": [true]}]', '[{"Tags": ["dxa"]}]',
	'[{"tags": ["dxa"], "extra": 1}]', '[{"types": ["dxa"]}, 7]']) AS q;
SELECT dxa_try('SELECT count(*) FROM es.es_read_query(NULL)');
SELECT dxa_try($$SELECT count(*) FROM es.es_read_query(jsonb_build_array(jsonb_build_object('tags', jsonb_build_array(repeat('x', 1025)))))$$);
SELECT dxa_try($$SELECT count(*) FROM es.es_read_query(jsonb_build_array(jsonb_build_object('tags', jsonb_build_array(repeat('é', 513)))))$$);
SELECT dxa_try($$SELECT count(*) FROM es.es_read_query((SELECT jsonb_agg(jsonb_build_object('tags', jsonb_build_array('dxa' || i))) FROM generate_series(1, 33) AS i))$$);
SELECT dxa_try($$SELECT count(*) FROM es.es_read_query(jsonb_build_array(jsonb_build_object('types', (SELECT jsonb_agg('dxa' || j) FROM generate_series(1, 65) AS j))))$$);
SELECT dxa_try($$SELECT count(*) FROM es.es_read_query(jsonb_build_array(jsonb_build_object('tags', (SELECT jsonb_agg('dxa' || j) FROM generate_series(1, 33) AS j))))$$);
SELECT dxa_try($$SELECT count(*) FROM es.es_read_query('[{"tags": ["dxa"]}]', NULL, 0)$$);
SELECT dxa_try($$SELECT count(*) FROM es.es_read_query('[{"tags": ["dxa"]}]', NULL, -1)$$);
SELECT dxa_try($$SELECT count(*) FROM es.es_read_query('[{"tags": ["dxa"]}]', ROW(NULL, NULL, NULL)::es.log_cursor)$$);
SELECT dxa_try($$SELECT count(*) FROM es.es_read_query('[{"tags": ["dxa"]}]', ROW(0, NULL, 1)::es.log_cursor)$$);
-- the largest query is accepted: 32 items of 64 types (a read takes no locks)
SELECT count(*) AS largest_query
  FROM es.es_read_query((SELECT jsonb_agg(jsonb_build_object('types', (SELECT jsonb_agg('dxa' || i || '-' || j) FROM generate_series(1, 64) AS j))) FROM generate_series(1, 32) AS i));
-- JSON cannot carry NUL into a tag; odd but valid bytes are just bytes
SELECT dxa_try($$SELECT count(*) FROM es.es_read_query('[{"tags": ["dxa\u0000"]}]')$$);
SELECT dxa_try($$SELECT es.es_append('dxa-in', NULL, '[{"type": "dxaE", "data": 1, "tags": ["dxa\u0000"]}]')$$);

-- malformed tags in a batch: refused, with the event named in the context
SELECT t, dxa_try(format('SELECT es.es_append(%L, NULL, %L)', 'dxa-in',
		jsonb_build_array(jsonb_build_object('type', 'dxaE', 'data', 1), jsonb_build_object('type', 'dxaE', 'data', 1, 'tags', t::jsonb))))
  FROM unnest(ARRAY['"dxa"', '{}', '1', '[1]', '[null]', '[""]', '["dxa", "dxa"]', '[["dxa"]]']) AS t;
SELECT dxa_try($$SELECT es.es_append('dxa-in', NULL, jsonb_build_array(jsonb_build_object('type', 'dxaE', 'data', 1, 'tags', jsonb_build_array(repeat('x', 1025)))))$$);
SELECT dxa_try($$SELECT es.es_append('dxa-in', NULL, jsonb_build_array(jsonb_build_object('type', 'dxaE', 'data', 1, 'tags', (SELECT jsonb_agg('dxa' || i) FROM generate_series(1, 33) AS i))))$$);

-- malformed conditions and cursors, NULL arguments
SELECT c, dxa_try(format('SELECT es.es_append(%L, NULL, %L, %L)', 'dxa-in', '[{"type": "dxaE", "data": 1}]', c))
  FROM unnest(ARRAY['[{}]', '[{"tags": []}]', '[{"tags": null, "types": []}]', '[{"tags": ["dxa"]}, {}]',
					'[]', '{"items": [{"types": null}]}']) AS c;
SELECT dxa_try($$SELECT es.es_append('dxa-in', NULL, '[{"type": "dxaE", "data": 1}]', NULL, ROW(0, '1', 1)::es.log_cursor)$$);
SELECT dxa_try($$SELECT es.es_append('dxa-in', NULL, '[{"type": "dxaE", "data": 1}]', '[{"tags": ["dxa"]}]', ROW(NULL, '1', 1)::es.log_cursor)$$);
SELECT dxa_try($$SELECT es.es_append('dxa-in', NULL, '[{"type": "dxaE", "data": 1}]', '[{"tags": ["dxa"]}]', ROW(999, '1', 1)::es.log_cursor)$$);
SELECT dxa_try($$SELECT es.es_append('dxa-in', NULL, '[]', '[{"tags": ["dxa"]}]')$$);
SELECT dxa_try($$SELECT es.es_append(NULL, NULL, '[{"type": "dxaE", "data": 1}]', '[{"tags": ["dxa"]}]')$$);
SELECT dxa_try($$SELECT es.es_append('dxa-in', NULL, NULL, '[{"tags": ["dxa"]}]')$$);
SELECT * FROM store_counts();

-- a cursor of the transaction's own append (es_append's token) is not a
-- read position: refused, not taken as "nothing after my own events"
BEGIN;
CREATE TEMP TABLE dxa_token AS
  SELECT (es.es_append('dxa-tok', NULL, '[{"type": "dxaE", "data": 1, "tags": ["dxa:tok"]}]')).token;
SELECT dxa_try($$SELECT es.es_append('dxa-tok', NULL, '[{"type": "dxaE", "data": 2, "tags": ["dxa:tok"]}]',
	'[{"tags": ["dxa:tok"]}]', (SELECT token FROM dxa_token))$$);
ROLLBACK;

-- the lock table: a loop of conditional appends on one tag keeps one key;
-- on a new tag each, the transaction is refused past its budget (54000)
-- instead of filling the shared lock table; one condition of 2048 type keys too
BEGIN;
DO $$
BEGIN
	FOR i IN 1..300 LOOP
		PERFORM es.es_append('dxa-loop', NULL, jsonb_build_array(jsonb_build_object('type', 'dxaL', 'data', i, 'tags', jsonb_build_array('dxa:course'))),
							 '[{"tags": ["dxa:course"]}]');
	END LOOP;
END
$$;
SELECT count(*) <= 8 AS few_locks FROM pg_locks WHERE pid = pg_backend_pid() AND locktype = 'advisory';
ROLLBACK;
BEGIN;
SELECT dxa_try($q$
DO $do$
BEGIN
	FOR i IN 1..300 LOOP
		PERFORM es.es_append('dxa-loop', NULL, jsonb_build_array(jsonb_build_object('type', 'dxaL', 'data', i)),
							 jsonb_build_array(jsonb_build_object('tags', jsonb_build_array('dxa:c' || i))));
	END LOOP;
END
$do$$q$);
SELECT count(*) < 400 AS bounded FROM pg_locks WHERE pid = pg_backend_pid() AND locktype = 'advisory';
ROLLBACK;
SELECT dxa_try($$SELECT es.es_append('dxa-loop', NULL, '[{"type": "dxaL", "data": 1}]',
	(SELECT jsonb_agg(jsonb_build_object('types', (SELECT jsonb_agg('dxa' || i || '-' || j) FROM generate_series(1, 64) AS j))) FROM generate_series(1, 32) AS i))$$);
-- unconditional appends of distinct tags: the writer budget (coarse buckets)
BEGIN;
DO $$
BEGIN
	FOR i IN 1..500 LOOP
		PERFORM es.es_append('dxa-loop', NULL, jsonb_build_array(jsonb_build_object('type', 'dxaL', 'data', i, 'tags', jsonb_build_array('dxa:u' || i))));
	END LOOP;
END
$$;
SELECT count(*) <= 64 + 64 + 1 AS bounded FROM pg_locks WHERE pid = pg_backend_pid() AND locktype = 'advisory';
ROLLBACK;

-- idempotent retries: the same ids return the original result without the
-- condition (their own event matches it now); other tags are 42710
SELECT version FROM es.es_append('dxa-id', NULL,
	'[{"id": "dddddddd-0000-4000-8000-000000000001", "type": "dxaE", "data": 1, "tags": ["dxa:id", "dxa:x"]}]',
	'[{"tags": ["dxa:id"]}]');
SELECT version FROM es.es_append('dxa-id', NULL,
	'[{"id": "dddddddd-0000-4000-8000-000000000001", "type": "dxaE", "data": 1, "tags": ["dxa:id", "dxa:x"]}]',
	'[{"tags": ["dxa:id"]}]');
SELECT dxa_try($$SELECT es.es_append('dxa-id', NULL,
	'[{"id": "dddddddd-0000-4000-8000-000000000001", "type": "dxaE", "data": 1, "tags": ["dxa:x", "dxa:id"]}]',
	'[{"tags": ["dxa:id"]}]')$$);
SELECT dxa_try($$SELECT es.es_append('dxa-id', NULL,
	'[{"id": "dddddddd-0000-4000-8000-000000000001", "type": "dxaE", "data": 1}]',
	'[{"tags": ["dxa:id"]}]')$$);
-- a new id under the same condition is a conflict with the stored event
SELECT dxa_try($$SELECT es.es_append('dxa-id', NULL,
	'[{"id": "dddddddd-0000-4000-8000-000000000002", "type": "dxaE", "data": 1, "tags": ["dxa:id"]}]',
	'[{"tags": ["dxa:id"]}]')$$);
SELECT count(*) AS id_events FROM es.events WHERE stream_id = 'dxa-id';

-- row level security: two tenants by role
CREATE ROLE regress_dxa_a IN ROLE es_writer, es_reader;
CREATE ROLE regress_dxa_b IN ROLE es_writer, es_reader;
ALTER TABLE es.events ENABLE ROW LEVEL SECURITY;
CREATE POLICY regress_dxa_tenant ON es.events FOR SELECT TO es_reader
  USING (metadata ->> 'tenant' = current_user);
CREATE POLICY regress_dxa_insert ON es.events FOR INSERT TO es_writer WITH CHECK (true);
SET ROLE regress_dxa_a;
SELECT version FROM es.es_append('dxa-rls-a', NULL,
	'[{"type": "dxaSeat", "data": 1, "tags": ["dxa:seat1"], "metadata": {"tenant": "regress_dxa_a"}}]',
	'[{"tags": ["dxa:seat1"]}]');
SET ROLE regress_dxa_b;
-- B reads nothing of A's, its condition ignores A's event, and A's
-- condition ignores B's: neither can make the other's conditional append fail
SELECT count(*) AS b_sees FROM es.es_read_query('[{"tags": ["dxa:seat1"]}]');
SELECT count(*) AS b_sees FROM es.es_read_query('[{"types": ["dxaSeat"]}]');
SELECT version FROM es.es_append('dxa-rls-b', NULL,
	'[{"type": "dxaSeat", "data": 1, "tags": ["dxa:seat1"], "metadata": {"tenant": "regress_dxa_b"}}]',
	'[{"tags": ["dxa:seat1"]}]');
SET ROLE regress_dxa_a;
SELECT dxa_try($$SELECT es.es_append('dxa-rls-a', NULL,
	'[{"type": "dxaSeat", "data": 2, "tags": ["dxa:seat1"], "metadata": {"tenant": "regress_dxa_a"}}]',
	'[{"tags": ["dxa:seat1"]}]')$$);
SELECT count(*) AS a_sees FROM es.es_read_query('[{"tags": ["dxa:seat1"]}]');
-- but the keys of what A writes are in pg_locks, and hashtextextended
-- recomputes them: B (or anyone) can test a guess of A's in-flight tags
BEGIN;
SELECT version FROM es.es_append('dxa-rls-a', NULL,
	'[{"type": "dxaSecret", "data": 3, "tags": ["dxa:patient42"], "metadata": {"tenant": "regress_dxa_a"}}]');
SET LOCAL ROLE regress_dxa_b;
SELECT count(*) AS b_recognises_patient42
  FROM pg_locks AS l
 WHERE l.locktype = 'advisory' AND l.objsubid = 101
   AND ((l.classid::bigint << 32) | l.objid::bigint) = hashtextextended('dxa:patient42', x'7461670a'::int);
ROLLBACK;
RESET ROLE;
DROP POLICY regress_dxa_insert ON es.events;
DROP POLICY regress_dxa_tenant ON es.events;
ALTER TABLE es.events DISABLE ROW LEVEL SECURITY;
DROP ROLE regress_dxa_a;
DROP ROLE regress_dxa_b;

-- an old cursor (more than 1000 transaction ids ago) is checked through the
-- item's own index, a recent one through the log index: both find the
-- matching event appended after it, and only that one
SELECT version FROM es.es_append('dxa-old', NULL, '[{"type": "dxaOld", "data": 1, "tags": ["dxa:old"]}]');
SELECT es.max(log_cursor) AS dxa_old FROM es.es_read_query('[{"tags": ["dxa:old"]}]') \gset
DO $$
BEGIN
	FOR i IN 1..1010 LOOP
		PERFORM pg_catalog.pg_current_xact_id();
		COMMIT;
	END LOOP;
END
$$;
-- nothing new since: passes (tags; types; tags and types)
SELECT version FROM es.es_append('dxa-old-a', NULL, '[{"type": "dxaOther", "data": 1}]',
	'[{"tags": ["dxa:old"]}]', :'dxa_old');
SELECT version FROM es.es_append('dxa-old-a', NULL, '[{"type": "dxaOther", "data": 2}]',
	'[{"types": ["dxaOld"]}]', :'dxa_old');
SELECT version FROM es.es_append('dxa-old-a', NULL, '[{"type": "dxaOther", "data": 3}]',
	'[{"types": ["dxaOld"], "tags": ["dxa:old"]}]', :'dxa_old');
SELECT version FROM es.es_append('dxa-old', NULL, '[{"type": "dxaOld", "data": 2, "tags": ["dxa:old"]}]');
DO $$
BEGIN
	FOR i IN 1..1010 LOOP
		PERFORM pg_catalog.pg_current_xact_id();
		COMMIT;
	END LOOP;
END
$$;
-- the event appended since (now more than 1000 ids ago too) fails each form
SELECT dxa_try(format($$SELECT es.es_append('dxa-old-b', NULL, '[{"type": "dxaOther", "data": 1}]',
	'[{"tags": ["dxa:old"]}]', %L)$$, :'dxa_old'));
SELECT dxa_try(format($$SELECT es.es_append('dxa-old-b', NULL, '[{"type": "dxaOther", "data": 1}]',
	'[{"types": ["dxaOld"]}]', %L)$$, :'dxa_old'));
SELECT dxa_try(format($$SELECT es.es_append('dxa-old-b', NULL, '[{"type": "dxaOther", "data": 1}]',
	'[{"types": ["dxaOld"], "tags": ["dxa:old"]}]', %L)$$, :'dxa_old'));
SELECT es.es_stream_version('dxa-old-b') AS nothing_written;

DROP FUNCTION dxa_try(text);
