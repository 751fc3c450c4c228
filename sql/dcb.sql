-- dcb: consistency across streams (Dynamic Consistency Boundary) — tags on
-- events, es_read_query, and es_append with a condition; every bad input
-- (SQLSTATE asserted, nothing written); privileges.
-- (Last in the schedule: "{}" reads every event of the store, so the output
-- compares with es_read_all instead of printing counts; every other query
-- uses types and tags of its own, "Dcb…" and "dcb:…".)

-- dcb_try(sql): as try(), with the log cursors in the text masked (they
-- hold transaction ids) and the first line of the error context when it
-- names an event of the batch or an item of a query
CREATE FUNCTION dcb_try(sql text) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
	st text;
	msg text;
	con text;
	det text;
	ctx text;
BEGIN
	EXECUTE sql;
	RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
	GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE, msg = MESSAGE_TEXT,
		con = CONSTRAINT_NAME, det = PG_EXCEPTION_DETAIL, ctx = PG_EXCEPTION_CONTEXT;
	ctx := split_part(ctx, E'\n', 1);
	RETURN regexp_replace(st || ': ' || msg
		|| CASE WHEN con <> '' THEN ' [' || con || ']' ELSE '' END
		|| CASE WHEN det <> '' THEN E'\n' || det ELSE '' END
		|| CASE WHEN ctx LIKE 'event %' OR ctx LIKE 'item %' THEN E'\n(' || ctx || ')' ELSE '' END,
		'\(\d+,\d+,\d+\)', '(cursor)', 'g');
END
$$;

-- dcb_read(query, after, max_count): the events es_read_query returns, as
-- stream:version in the order returned
CREATE FUNCTION dcb_read(q jsonb, after es.log_cursor DEFAULT NULL, n integer DEFAULT NULL)
RETURNS text
LANGUAGE sql AS $$
	SELECT coalesce(string_agg(r.stream_id || ':' || r.version, ' ' ORDER BY r.ordinality), '(none)')
	  FROM es.es_read_query(q, after, n) WITH ORDINALITY AS r
$$;

-- positions to continue from, by name: the log cursor of the last event a
-- read returned (NULL when it returned none), as a condition refers to it
CREATE TEMP TABLE marks (name text PRIMARY KEY, c es.log_cursor);
CREATE FUNCTION mark(name text, q jsonb) RETURNS boolean
LANGUAGE sql AS $$
	INSERT INTO marks
	SELECT name, (SELECT r.log_cursor FROM es.es_read_query(q) WITH ORDINALITY AS r
				   ORDER BY r.ordinality DESC LIMIT 1)
	ON CONFLICT (name) DO UPDATE SET c = excluded.c
	RETURNING c IS NOT NULL
$$;
CREATE FUNCTION pos(name text) RETURNS es.log_cursor
LANGUAGE sql AS $$ SELECT c FROM marks WHERE marks.name = pos.name $$;

---------------------------------------------------------------------------
-- tags on events
---------------------------------------------------------------------------

-- the column and its index
SELECT attname, format_type(atttypid, atttypmod), attnotnull FROM pg_attribute
 WHERE attrelid = 'es.events'::regclass AND attname = 'tags';
SELECT attname FROM pg_attribute -- tags, then the chain hash of issue 15
 WHERE attrelid = 'es.events'::regclass AND attnum > 0 AND NOT attisdropped
 ORDER BY attnum DESC LIMIT 1;
SELECT indexdef FROM pg_indexes WHERE schemaname = 'es' AND indexname = 'events_tags_idx';

-- tags are stored as given (in the order given, not sorted); absent, null
-- and [] are stored as NULL
SELECT version FROM es.es_append('dcbtag-1', 0,
  '[{"type": "DcbTagged", "data": {}, "tags": ["dcb:tag:c1", "dcb:tag:s1"]},
    {"type": "DcbTagged", "data": {}, "tags": ["dcb:z", "dcb:a", "dcb:m"]},
    {"type": "DcbTagged", "data": {}},
    {"type": "DcbTagged", "data": {}, "tags": []},
    {"type": "DcbTagged", "data": {}, "tags": null},
    {"type": "DcbTagged", "data": {}, "tags": ["dcb:A", "dcb:a", "dcb:ä", "dcb:a b", "dcb:{x}"]}]');
SELECT version, tags, tags IS NULL AS no_tags FROM es.events WHERE stream_id = 'dcbtag-1' ORDER BY version;

-- es_read_stream returns them (its rows are es.events); es_read_all has no
-- tags column
SELECT version, tags FROM es.es_read_stream('dcbtag-1');
SELECT 'tags' = ANY (proargnames) AS read_all_has_tags FROM pg_proc
 WHERE oid = 'es.es_read_all(es.log_cursor, integer, text, text[])'::regprocedure;

-- the limits: 32 tags of an event, 1024 bytes a tag (bytes, not characters)
SELECT version FROM es.es_append('dcbtag-2', 0, jsonb_build_array(
  jsonb_build_object('type', 'DcbTagged', 'data', '{}'::jsonb,
    'tags', (SELECT jsonb_agg('dcb:t' || i) FROM generate_series(1, 32) i)),
  jsonb_build_object('type', 'DcbTagged', 'data', '{}'::jsonb,
    'tags', jsonb_build_array(repeat('x', 1024), repeat('é', 512)))));
SELECT version, cardinality(tags) AS n, (SELECT max(octet_length(t)) FROM unnest(tags) t) AS longest
  FROM es.events WHERE stream_id = 'dcbtag-2' ORDER BY version;

-- an idempotent retry resends the same tags: it returns the original result
-- and writes nothing; other tags (or none) are not a retry (42710)
SELECT version FROM es.es_append('dcbtag-3', 0,
  '[{"id": "dcb00000-0000-4000-8000-000000000001", "type": "DcbTagged", "data": {}, "tags": ["dcb:r1", "dcb:r2"]}]');
SELECT store_mark();
SELECT version FROM es.es_append('dcbtag-3', 0,
  '[{"id": "dcb00000-0000-4000-8000-000000000001", "type": "DcbTagged", "data": {}, "tags": ["dcb:r1", "dcb:r2"]}]');
SELECT dcb_try($$SELECT es.es_append('dcbtag-3', 0,
  '[{"id": "dcb00000-0000-4000-8000-000000000001", "type": "DcbTagged", "data": {}, "tags": ["dcb:r1"]}]')$$);
SELECT dcb_try($$SELECT es.es_append('dcbtag-3', 0,
  '[{"id": "dcb00000-0000-4000-8000-000000000001", "type": "DcbTagged", "data": {}, "tags": ["dcb:r2", "dcb:r1"]}]')$$);
SELECT dcb_try($$SELECT es.es_append('dcbtag-3', 0,
  '[{"id": "dcb00000-0000-4000-8000-000000000001", "type": "DcbTagged", "data": {}}]')$$);
SELECT * FROM store_counts();

-- bad tags: 22023 (not an array, not a string, empty, duplicate) or 54000
-- (too many, too long); the context names the event; nothing is written
CREATE TEMP TABLE bad_tags (n serial, what text, tags jsonb);
INSERT INTO bad_tags (what, tags) VALUES
  ('a string', '"dcb:t"'),
  ('an object', '{"dcb:t": true}'),
  ('a number', '1'),
  ('a tag that is a number', '[1]'),
  ('a tag that is null', '["dcb:t", null]'),
  ('a tag that is an array', '[["dcb:t"]]'),
  ('an empty tag', '["dcb:t", ""]'),
  ('a duplicate tag', '["dcb:t", "dcb:u", "dcb:t"]'),
  ('33 tags', (SELECT jsonb_agg('dcb:t' || i) FROM generate_series(1, 33) i)),
  ('a tag of 1025 bytes', jsonb_build_array(repeat('x', 1025))),
  ('a tag of 513 two-byte characters', jsonb_build_array(repeat('é', 513)));
SELECT store_mark();
SELECT n, what, dcb_try(format('SELECT es.es_append(%L, NULL, %L)', 'dcbtag-bad',
         jsonb_build_array(jsonb_build_object('type', 'DcbTagged', 'data', '{}'::jsonb),
                           jsonb_build_object('type', 'DcbTagged', 'data', '{}'::jsonb, 'tags', tags)))) AS result
  FROM bad_tags ORDER BY n;
-- the same in a conditional append
SELECT n, what, dcb_try(format('SELECT es.es_append(%L, NULL, %L, %L)', 'dcbtag-bad',
         jsonb_build_array(jsonb_build_object('type', 'DcbTagged', 'data', '{}'::jsonb, 'tags', tags)),
         '[{"tags": ["dcb:t"]}]')) AS result
  FROM bad_tags ORDER BY n;
SELECT * FROM store_counts();
SELECT es.es_stream_version('dcbtag-bad');

---------------------------------------------------------------------------
-- es_read_query: items OR'ed; types OR'ed and tags AND'ed within an item
---------------------------------------------------------------------------

-- one append per event: the log order is the order of these appends
SELECT version FROM es.es_append('dcbq-1', 0, '[{"type": "DcbQA", "data": {"n": 1}, "tags": ["dcb:q:t1"]}]');
SELECT version FROM es.es_append('dcbq-1', 1, '[{"type": "DcbQB", "data": {"n": 2}, "tags": ["dcb:q:t1", "dcb:q:t2"]}]');
SELECT version FROM es.es_append('dcbq-2', 0, '[{"type": "DcbQC", "data": {"n": 3}, "tags": ["dcb:q:t2"]}]');
SELECT version FROM es.es_append('dcbq-2', 1, '[{"type": "DcbQA", "data": {"n": 4}, "tags": ["dcb:q:t2", "dcb:q:t3"]}]');
SELECT version FROM es.es_append('dcbq-3', 0, '[{"type": "DcbQB", "data": {"n": 5}}]');
SELECT version FROM es.es_append('dcbq-3', 1, '[{"type": "DcbQC", "data": {"n": 6}, "tags": ["dcb:q:t3", "dcb:q:t2", "dcb:q:t1"]}]');

-- the rows: tags returned as stored, data, the cursor
SELECT stream_id, version, event_type, tags, data,
       (log_cursor).global_position = global_position AS position_in_cursor
  FROM es.es_read_query('[{"types": ["DcbQA", "DcbQB", "DcbQC"]}]');

-- one type; types OR'ed
SELECT dcb_read('[{"types": ["DcbQA"]}]');
SELECT dcb_read('[{"types": ["DcbQA", "DcbQB"]}]');
-- one tag; tags AND'ed
SELECT dcb_read('[{"tags": ["dcb:q:t1"]}]');
SELECT dcb_read('[{"tags": ["dcb:q:t1", "dcb:q:t2"]}]');
SELECT dcb_read('[{"tags": ["dcb:q:t2", "dcb:q:t1", "dcb:q:t3"]}]');
-- types and tags in one item: both must hold
SELECT dcb_read('[{"types": ["DcbQA"], "tags": ["dcb:q:t2"]}]');
SELECT dcb_read('[{"types": ["DcbQA", "DcbQC"], "tags": ["dcb:q:t2"]}]');
-- items OR'ed, in log order, an event matching two items returned once
SELECT dcb_read('[{"types": ["DcbQB"], "tags": ["dcb:q:t1"]}, {"tags": ["dcb:q:t3"]}]');
SELECT dcb_read('[{"tags": ["dcb:q:t1"]}, {"tags": ["dcb:q:t2"]}]');
SELECT dcb_read('[{"tags": ["dcb:q:t3"]}, {"types": ["DcbQA"]}]');
-- the object form {"items": [...]} is the same query
SELECT dcb_read('{"items": [{"tags": ["dcb:q:t3"]}, {"types": ["DcbQA"]}]}');
-- [] or null types or tags: no restriction
SELECT dcb_read('[{"types": ["DcbQA"], "tags": []}]');
SELECT dcb_read('[{"types": [], "tags": ["dcb:q:t3"]}]');
SELECT dcb_read('[{"types": ["DcbQA"], "tags": null}]');
SELECT dcb_read('[{"types": null, "tags": ["dcb:q:t3"]}]');
-- nothing matches
SELECT dcb_read('[{"types": ["DcbQNone"]}]');
SELECT dcb_read('[{"tags": ["dcb:q:none"]}]');
SELECT dcb_read('[{"types": ["DcbQB"], "tags": ["dcb:q:t3"]}]');
-- tags are compared exactly (case, no prefix match)
SELECT dcb_read('[{"tags": ["DCB:Q:T1"]}]');
SELECT dcb_read('[{"tags": ["dcb:q:t"]}]');

-- rows, data and order are those of es_read_all with the same filter (data
-- upcast alike); an item {} (or with [] types and tags) matches every event
SELECT (SELECT array_agg(ROW(global_position, stream_id, version, event_id, event_type, data,
                             metadata, recorded_at, log_cursor, horizon) ORDER BY ordinality)
          FROM es.es_read_query('[{"types": ["DcbQA", "DcbQB"]}]') WITH ORDINALITY) =
       (SELECT array_agg(ROW(global_position, stream_id, version, event_id, event_type, data,
                             metadata, recorded_at, log_cursor, horizon) ORDER BY ordinality)
          FROM es.es_read_all(NULL, 1000000, NULL, ARRAY['DcbQA', 'DcbQB']) WITH ORDINALITY) AS same_as_read_all;
SELECT (SELECT array_agg(event_id ORDER BY ordinality) FROM es.es_read_query('[{}]') WITH ORDINALITY) =
       (SELECT array_agg(event_id ORDER BY ordinality) FROM es.es_read_all(NULL, 1000000) WITH ORDINALITY)
       AS all_events,
       (SELECT count(*) FROM es.es_read_query('[{}]')) = (SELECT count(*) FROM es.events) AS every_event;
SELECT (SELECT count(*) FROM es.es_read_query('[{"types": [], "tags": []}]')) =
       (SELECT count(*) FROM es.events) AS empty_arrays_match_all,
       (SELECT count(*) FROM es.es_read_query('{"items": [{"tags": ["dcb:q:none"]}, {}]}')) =
       (SELECT count(*) FROM es.events) AS one_item_matches_all;
-- log order: the cursors strictly increase
SELECT bool_and(prev < log_cursor) AS strictly_increasing FROM (
  SELECT log_cursor, lag(log_cursor) OVER (ORDER BY ordinality) AS prev
    FROM es.es_read_query('[{}]') WITH ORDINALITY) t
 WHERE prev IS NOT NULL;

-- after: only events after the cursor
SELECT mark('q-t1-first', '[{"types": ["DcbQA"], "tags": ["dcb:q:t1"]}]');
SELECT dcb_read('[{"tags": ["dcb:q:t1"]}, {"tags": ["dcb:q:t2"]}]', pos('q-t1-first'));
SELECT mark('q-t3-last', '[{"tags": ["dcb:q:t3"]}]');
SELECT dcb_read('[{"tags": ["dcb:q:t1"]}, {"tags": ["dcb:q:t2"]}]', pos('q-t3-last'));
-- after NULL: from the start
SELECT dcb_read('[{"tags": ["dcb:q:t3"]}]', NULL);

-- max_count: the first n; NULL: all
SELECT dcb_read('[{"tags": ["dcb:q:t1"]}, {"tags": ["dcb:q:t2"]}]', NULL, 2);
SELECT dcb_read('[{"tags": ["dcb:q:t1"]}, {"tags": ["dcb:q:t2"]}]', NULL, 1);
SELECT dcb_read('[{"tags": ["dcb:q:t1"]}, {"tags": ["dcb:q:t2"]}]', NULL, NULL);
SELECT dcb_read('[{"tags": ["dcb:q:t1"]}, {"tags": ["dcb:q:t2"]}]', pos('q-t1-first'), 2);

-- paging with the cursor of the last row sees every event once
CREATE TEMP TABLE pages (page int, stream_id text, version bigint);
DO $$
DECLARE
	cur es.log_cursor;
	last es.log_cursor;
	page int := 0;
	r record;
BEGIN
	LOOP
		page := page + 1;
		last := NULL;
		FOR r IN SELECT * FROM es.es_read_query('[{"tags": ["dcb:q:t1"]}, {"tags": ["dcb:q:t2"]}]', cur, 2) LOOP
			INSERT INTO pages VALUES (page, r.stream_id, r.version);
			last := r.log_cursor;
		END LOOP;
		EXIT WHEN last IS NULL;
		cur := last;
	END LOOP;
END
$$;
SELECT page, string_agg(stream_id || ':' || version, ' ' ORDER BY stream_id, version) FROM pages GROUP BY page ORDER BY page;

-- named arguments and defaults
SELECT count(*) FROM es.es_read_query(query => '[{"tags": ["dcb:q:t1"]}]', max_count => 1);

-- gap-safe: the caller's own uncommitted events are not returned (the table
-- shows them); after the commit they are
BEGIN;
SELECT version FROM es.es_append('dcbq-4', 0, '[{"type": "DcbQA", "data": {"n": 7}, "tags": ["dcb:q:t1"]}]');
SELECT dcb_read('[{"tags": ["dcb:q:t1"]}]');
SELECT count(*) AS in_table FROM es.events WHERE stream_id = 'dcbq-4';
COMMIT;
SELECT dcb_read('[{"tags": ["dcb:q:t1"]}]');

-- the horizon column: the horizon of the read's snapshot, above every
-- returned transaction
SELECT count(DISTINCT horizon) AS horizons, bool_and((log_cursor).tx_id < horizon) AS below_horizon
  FROM es.es_read_query('[{}]');
BEGIN ISOLATION LEVEL REPEATABLE READ;
SELECT bool_and(horizon = es.es_log_horizon()) AS horizon_is_log_horizon
  FROM es.es_read_query('[{"tags": ["dcb:q:t1"]}]');
COMMIT;

---------------------------------------------------------------------------
-- conditional append: fail if an event matching the query was committed
-- after the position
---------------------------------------------------------------------------

-- a course that takes at most two students: the decision reads the course's
-- events; the append is conditional on nothing new matching that read
SELECT mark('c1', '[{"tags": ["dcb:course:c1"]}]');
-- nothing read (position NULL): no matching event may exist, and none does
SELECT version FROM es.es_append('dcbcourse-c1', 0,
  '[{"type": "DcbCourseDefined", "data": {"capacity": 2}, "tags": ["dcb:course:c1"]}]',
  '[{"tags": ["dcb:course:c1"]}]', pos('c1'));
-- the same decision again, from the same empty read: 40001, constraint
-- es_append_condition; nothing written
SELECT store_mark();
SELECT dcb_try($$SELECT es.es_append('dcbcourse-c1x', 0,
  '[{"type": "DcbCourseDefined", "data": {"capacity": 5}, "tags": ["dcb:course:c1"]}]',
  '[{"tags": ["dcb:course:c1"]}]', pos('c1'))$$);
SELECT * FROM store_counts();
SELECT es.es_stream_version('dcbcourse-c1x');
-- what a client's error handler sees
DO $$
DECLARE
	st text;
	con text;
	msg text;
BEGIN
	PERFORM es.es_append('dcbcourse-c1x', 0,
		'[{"type": "DcbCourseDefined", "data": {"capacity": 5}, "tags": ["dcb:course:c1"]}]',
		'[{"tags": ["dcb:course:c1"]}]', NULL);
EXCEPTION WHEN serialization_failure THEN
	GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE, con = CONSTRAINT_NAME, msg = MESSAGE_TEXT;
	RAISE NOTICE 'SQLSTATE %, constraint %: %', st, con, msg;
END
$$;

-- a read, then an append with its position: nothing matched since: ok
SELECT mark('c1', '[{"tags": ["dcb:course:c1"]}]');
SELECT version FROM es.es_append('dcbstudent-s1', NULL,
  '[{"type": "DcbStudentSubscribed", "data": {}, "tags": ["dcb:course:c1", "dcb:student:s1"]}]',
  '[{"tags": ["dcb:course:c1"]}]', pos('c1'));
-- a second decision from the same (now stale) position: s1's subscription
-- matched after it: refused, nothing written
SELECT store_mark();
SELECT dcb_try($$SELECT es.es_append('dcbstudent-s2', NULL,
  '[{"type": "DcbStudentSubscribed", "data": {}, "tags": ["dcb:course:c1", "dcb:student:s2"]}]',
  '[{"tags": ["dcb:course:c1"]}]', pos('c1'))$$);
SELECT * FROM store_counts();
-- read again: the new position is past s1's event: ok
SELECT mark('c1', '[{"tags": ["dcb:course:c1"]}]');
SELECT version FROM es.es_append('dcbstudent-s2', NULL,
  '[{"type": "DcbStudentSubscribed", "data": {}, "tags": ["dcb:course:c1", "dcb:student:s2"]}]',
  '[{"tags": ["dcb:course:c1"]}]', pos('c1'));
-- events that do not match the condition do not conflict: another course,
-- another type, a tag set missing one of the item's tags
SELECT mark('c1', '[{"types": ["DcbStudentSubscribed", "DcbCourseDefined"], "tags": ["dcb:course:c1"]}]');
SELECT version FROM es.es_append('dcbcourse-c2', 0,
  '[{"type": "DcbCourseDefined", "data": {"capacity": 1}, "tags": ["dcb:course:c2"]}]', NULL);
SELECT version FROM es.es_append('dcbstudent-s1', NULL,
  '[{"type": "DcbStudentRenamed", "data": {}, "tags": ["dcb:student:s1"]}]', NULL);
SELECT version FROM es.es_append('dcbstudent-s3', NULL,
  '[{"type": "DcbStudentSubscribed", "data": {}, "tags": ["dcb:course:c1", "dcb:student:s3"]}]',
  '[{"types": ["DcbStudentSubscribed", "DcbCourseDefined"], "tags": ["dcb:course:c1"]}]', pos('c1'));
SELECT dcb_read('[{"tags": ["dcb:course:c1"]}]');

-- after NULL: any matching event at all conflicts, however old
SELECT dcb_try($$SELECT es.es_append('dcbcourse-c2', NULL,
  '[{"type": "DcbCourseDefined", "data": {"capacity": 3}, "tags": ["dcb:course:c2"]}]',
  '[{"types": ["DcbCourseDefined"], "tags": ["dcb:course:c2"]}]', NULL)$$);
-- ... and a condition matching no event at all passes
SELECT version FROM es.es_append('dcbcourse-c3', 0,
  '[{"type": "DcbCourseDefined", "data": {"capacity": 3}, "tags": ["dcb:course:c3"]}]',
  '[{"types": ["DcbCourseDefined"], "tags": ["dcb:course:c3"]}]', NULL);

-- tags AND'ed within a condition item: s9 never subscribed to c1
SELECT version FROM es.es_append('dcbstudent-s9', NULL,
  '[{"type": "DcbStudentSubscribed", "data": {}, "tags": ["dcb:course:c2", "dcb:student:s9"]}]',
  '[{"tags": ["dcb:course:c1", "dcb:student:s9"]}]', NULL);
SELECT dcb_try($$SELECT es.es_append('dcbstudent-s1', NULL,
  '[{"type": "DcbStudentSubscribed", "data": {}, "tags": ["dcb:course:c2", "dcb:student:s1"]}]',
  '[{"tags": ["dcb:student:s1", "dcb:course:c1"]}]', NULL)$$);
-- items OR'ed: the second item matches (the detail names it)
SELECT dcb_try($$SELECT es.es_append('dcbstudent-s1', NULL,
  '[{"type": "DcbStudentSubscribed", "data": {}, "tags": ["dcb:course:c2", "dcb:student:s1"]}]',
  '{"items": [{"tags": ["dcb:course:c9"]}, {"types": ["DcbStudentRenamed"], "tags": ["dcb:student:s1"]}]}', NULL)$$);

-- type-only condition items: a singleton event (at most one DcbSystemOpened)
SELECT version FROM es.es_append('dcbsys-1', NULL,
  '[{"type": "DcbSystemOpened", "data": {}}]', '[{"types": ["DcbSystemOpened"]}]', NULL);
SELECT dcb_try($$SELECT es.es_append('dcbsys-2', NULL,
  '[{"type": "DcbSystemOpened", "data": {}, "tags": ["dcb:sys:2"]}]', '[{"types": ["DcbSystemOpened"]}]', NULL)$$);
-- a type-only item matches tagged events of the type too
SELECT dcb_try($$SELECT es.es_append('dcbsys-3', NULL,
  '[{"type": "DcbSystemOpened", "data": {}}]', '[{"types": ["DcbNoSuchType", "DcbStudentRenamed"]}]', NULL)$$);
SELECT mark('sys', '[{"types": ["DcbSystemOpened"]}]');
SELECT version FROM es.es_append('dcbsys-1', NULL,
  '[{"type": "DcbSystemClosed", "data": {}}]', '[{"types": ["DcbSystemOpened"]}]', pos('sys'));

-- expected_version and the condition together: both are checked
SELECT mark('c3', '[{"tags": ["dcb:course:c3"]}]');
SELECT store_mark();
-- condition holds, wrong expected version: es_expected_version
SELECT dcb_try($$SELECT es.es_append('dcbcourse-c3', 0,
  '[{"type": "DcbCourseRenamed", "data": {}, "tags": ["dcb:course:c3"]}]',
  '[{"tags": ["dcb:course:c3"]}]', pos('c3'))$$);
SELECT dcb_try($$SELECT es.es_append('dcbcourse-c3', 5,
  '[{"type": "DcbCourseRenamed", "data": {}, "tags": ["dcb:course:c3"]}]',
  '[{"tags": ["dcb:course:c3"]}]', pos('c3'))$$);
SELECT dcb_try($$SELECT es.es_append('dcbcourse-none', -1,
  '[{"type": "DcbCourseRenamed", "data": {}, "tags": ["dcb:course:c3"]}]',
  '[{"tags": ["dcb:course:c3"]}]', pos('c3'))$$);
-- right expected version, condition fails: es_append_condition
SELECT dcb_try($$SELECT es.es_append('dcbcourse-c3', 1,
  '[{"type": "DcbCourseRenamed", "data": {}, "tags": ["dcb:course:c3"]}]',
  '[{"tags": ["dcb:course:c3"]}]', NULL)$$);
SELECT * FROM store_counts();
-- both hold: appended
SELECT version FROM es.es_append('dcbcourse-c3', 1,
  '[{"type": "DcbCourseRenamed", "data": {}, "tags": ["dcb:course:c3"]}]',
  '[{"tags": ["dcb:course:c3"]}]', pos('c3'));
SELECT version FROM es.es_append('dcbcourse-c4', 0,
  '[{"type": "DcbCourseDefined", "data": {}, "tags": ["dcb:course:c4"]}]',
  '[{"tags": ["dcb:course:c4"]}]', NULL);
SELECT version FROM es.es_append('dcbcourse-c4', -1,
  '[{"type": "DcbCourseRenamed", "data": {}, "tags": ["dcb:course:c4"]}]',
  '[{"types": ["DcbCourseClosed"], "tags": ["dcb:course:c4"]}]', NULL);

-- an idempotent retry of a conditional append returns the original result
-- without checking: its own first attempt matches the condition now
SELECT version, cardinality(positions) FROM es.es_append('dcbidem-1', 0,
  '[{"id": "dcb00000-0000-4000-8000-000000000011", "type": "DcbIdem", "data": {}, "tags": ["dcb:idem"]},
    {"id": "dcb00000-0000-4000-8000-000000000012", "type": "DcbIdem", "data": {}, "tags": ["dcb:idem"]}]',
  '[{"tags": ["dcb:idem"]}]', NULL);
SELECT store_mark();
SELECT r.version,
       r.positions = ARRAY(SELECT global_position FROM es.events
                            WHERE stream_id = 'dcbidem-1' ORDER BY version) AS same_positions
  FROM es.es_append('dcbidem-1', 0,
  '[{"id": "dcb00000-0000-4000-8000-000000000011", "type": "DcbIdem", "data": {}, "tags": ["dcb:idem"]},
    {"id": "dcb00000-0000-4000-8000-000000000012", "type": "DcbIdem", "data": {}, "tags": ["dcb:idem"]}]',
  '[{"tags": ["dcb:idem"]}]', NULL) AS r;
SELECT * FROM store_counts();
-- the same ids with other tags are not a retry
SELECT dcb_try($$SELECT es.es_append('dcbidem-1', 0,
  '[{"id": "dcb00000-0000-4000-8000-000000000011", "type": "DcbIdem", "data": {}, "tags": ["dcb:idem"]},
    {"id": "dcb00000-0000-4000-8000-000000000012", "type": "DcbIdem", "data": {}, "tags": ["dcb:idem2"]}]',
  '[{"tags": ["dcb:idem"]}]', NULL)$$);
-- new ids under the same condition: a new decision, refused (the detail
-- names one of the two matching events: only the first line is shown)
SELECT split_part(dcb_try($$SELECT es.es_append('dcbidem-1', NULL,
  '[{"id": "dcb00000-0000-4000-8000-000000000013", "type": "DcbIdem", "data": {}, "tags": ["dcb:idem"]}]',
  '[{"tags": ["dcb:idem"]}]', NULL)$$), E'\n', 1);
SELECT * FROM store_counts();

-- the transaction's own events never conflict with its own conditions
-- (Marten #5280): two conditional appends under one condition and position,
-- even to two streams, even after an unconditional append of a matching event
BEGIN;
SELECT mark('self', '[{"tags": ["dcb:self"]}]');
SELECT version FROM es.es_append('dcbself-1', NULL,
  '[{"type": "DcbSelf", "data": {}, "tags": ["dcb:self"]}]', '[{"tags": ["dcb:self"]}]', pos('self'));
SELECT version FROM es.es_append('dcbself-1', NULL,
  '[{"type": "DcbSelf", "data": {}, "tags": ["dcb:self"]}]', '[{"tags": ["dcb:self"]}]', pos('self'));
SELECT version FROM es.es_append('dcbself-2', NULL,
  '[{"type": "DcbSelf", "data": {}, "tags": ["dcb:self"]}]', NULL);
SELECT version FROM es.es_append('dcbself-3', NULL,
  '[{"type": "DcbSelf", "data": {}, "tags": ["dcb:self"]}]', '[{"types": ["DcbSelf"]}]', pos('self'));
-- (a read in the transaction does not see them: gap-safe)
SELECT dcb_read('[{"tags": ["dcb:self"]}]');
-- a savepoint's events are the transaction's too
SAVEPOINT sp;
SELECT version FROM es.es_append('dcbself-4', NULL,
  '[{"type": "DcbSelf", "data": {}, "tags": ["dcb:self"]}]', '[{"tags": ["dcb:self"]}]', NULL);
RELEASE SAVEPOINT sp;
SELECT version FROM es.es_append('dcbself-4', NULL,
  '[{"type": "DcbSelf", "data": {}, "tags": ["dcb:self"]}]', '[{"tags": ["dcb:self"]}]', NULL);
COMMIT;
SELECT dcb_read('[{"tags": ["dcb:self"]}]');
-- once committed they conflict with another transaction's condition (any
-- of them may be named in the detail: only the first line is shown)
SELECT split_part(dcb_try($$SELECT es.es_append('dcbself-5', NULL,
  '[{"type": "DcbSelf", "data": {}, "tags": ["dcb:self"]}]', '[{"tags": ["dcb:self"]}]', NULL)$$), E'\n', 1);

-- NULL condition: an unconditional append (the 3-argument form); the empty
-- batch is refused as before
SELECT version FROM es.es_append('dcbplain-1', 0, '[{"type": "DcbPlain", "data": {}, "tags": ["dcb:course:c1"]}]', NULL);
SELECT version FROM es.es_append('dcbplain-1', 1, '[{"type": "DcbPlain", "data": {}}]', NULL, NULL);
SELECT dcb_try($$SELECT es.es_append('dcbplain-1', NULL, '[]', '[{"tags": ["dcb:plain"]}]')$$);

---------------------------------------------------------------------------
-- bad input: SQLSTATE asserted, nothing written
---------------------------------------------------------------------------

-- a condition may not match every event: an item {} (or with [] types and
-- tags) is refused (22023), alone or next to other items
SELECT store_mark();
SELECT dcb_try($$SELECT es.es_append('dcbbad-1', NULL, '[{"type": "DcbBad", "data": {}}]', '[{}]')$$);
SELECT dcb_try($$SELECT es.es_append('dcbbad-1', NULL, '[{"type": "DcbBad", "data": {}}]', '{"items": [{}]}')$$);
SELECT dcb_try($$SELECT es.es_append('dcbbad-1', NULL, '[{"type": "DcbBad", "data": {}}]', '[{"types": [], "tags": []}]')$$);
SELECT dcb_try($$SELECT es.es_append('dcbbad-1', NULL, '[{"type": "DcbBad", "data": {}}]', '[{"tags": ["dcb:bad"]}, {}]')$$);
SELECT dcb_try($$SELECT es.es_append('dcbbad-1', NULL, '[{"type": "DcbBad", "data": {}}]', '[{"types": null, "tags": null}]')$$);
-- after without a condition: refused (22023)
SELECT dcb_try($$SELECT es.es_append('dcbbad-1', NULL, '[{"type": "DcbBad", "data": {}}]', NULL, pos('c1'))$$);
-- a position no read returned: beyond the end of the log, in the current
-- era or a later one (22023), or with null fields (22004)
SELECT dcb_try($$SELECT es.es_append('dcbbad-1', NULL, '[{"type": "DcbBad", "data": {}}]',
  '[{"tags": ["dcb:bad"]}]', ROW((SELECT era FROM es.config), '999999999999'::xid8, 1)::es.log_cursor)$$);
SELECT dcb_try($$SELECT es.es_append('dcbbad-1', NULL, '[{"type": "DcbBad", "data": {}}]',
  '[{"tags": ["dcb:bad"]}]', ROW((SELECT era FROM es.config) + 1, '1'::xid8, 1)::es.log_cursor)$$);
SELECT dcb_try($$SELECT es.es_append('dcbbad-1', NULL, '[{"type": "DcbBad", "data": {}}]',
  '[{"tags": ["dcb:bad"]}]', ROW(0, NULL, 1)::es.log_cursor)$$);
SELECT dcb_try($$SELECT count(*) FROM es.es_read_query('[{"tags": ["dcb:q:t1"]}]', ROW(NULL, NULL, NULL)::es.log_cursor)$$);
-- max_count below 1 (22023)
SELECT dcb_try($$SELECT count(*) FROM es.es_read_query('[{"tags": ["dcb:q:t1"]}]', NULL, 0)$$);
SELECT dcb_try($$SELECT count(*) FROM es.es_read_query('[{"tags": ["dcb:q:t1"]}]', NULL, -1)$$);
-- a NULL query
SELECT dcb_try($$SELECT count(*) FROM es.es_read_query(NULL)$$);
SELECT * FROM store_counts();

-- malformed queries: each refused by es_read_query and by a conditional
-- append alike — 22023 for a wrong shape, 54000 past a limit
CREATE TEMP TABLE bad_queries (n serial, what text, q jsonb);
INSERT INTO bad_queries (what, q) VALUES
  ('a string', '"dcb:t"'),
  ('a number', '1'),
  ('JSON null', 'null'),
  ('true', 'true'),
  ('an empty array', '[]'),
  ('an object without items', '{}'),
  ('an object with an unknown key', '{"types": ["DcbA"]}'),
  ('items and an unknown key', '{"items": [{"types": ["DcbA"]}], "after": 1}'),
  ('items an object', '{"items": {"types": ["DcbA"]}}'),
  ('items null', '{"items": null}'),
  ('items empty', '{"items": []}'),
  ('an item that is a string', '["DcbA"]'),
  ('an item that is an array', '[["DcbA"]]'),
  ('an item that is null', '[{"types": ["DcbA"]}, null]'),
  ('an unknown key in an item', '[{"type": ["DcbA"]}]'),
  ('a known and an unknown key', '[{"types": ["DcbA"], "tag": ["dcb:t"]}]'),
  ('types a string', '[{"types": "DcbA"}]'),
  ('types an object', '[{"types": {"DcbA": true}}]'),
  ('a type that is a number', '[{"types": [1]}]'),
  ('a type that is null', '[{"types": ["DcbA", null]}]'),
  ('an empty type', '[{"types": ["DcbA", ""]}]'),
  ('tags a string', '[{"tags": "dcb:t"}]'),
  ('a tag that is a number', '[{"tags": [1]}]'),
  ('a tag that is an object', '[{"tags": [{"dcb": "t"}]}]'),
  ('an empty tag', '[{"tags": ["dcb:t", ""]}]'),
  ('33 items', (SELECT jsonb_agg(jsonb_build_object('tags', jsonb_build_array('dcb:t' || i))) FROM generate_series(1, 33) i)),
  ('65 types', jsonb_build_array(jsonb_build_object('types', (SELECT jsonb_agg('DcbT' || i) FROM generate_series(1, 65) i)))),
  ('33 tags', jsonb_build_array(jsonb_build_object('tags', (SELECT jsonb_agg('dcb:t' || i) FROM generate_series(1, 33) i)))),
  ('a type of 1025 bytes', jsonb_build_array(jsonb_build_object('types', jsonb_build_array(repeat('T', 1025))))),
  ('a tag of 1025 bytes', jsonb_build_array(jsonb_build_object('tags', jsonb_build_array(repeat('t', 1025))))),
  ('a tag of 513 two-byte characters', jsonb_build_array(jsonb_build_object('tags', jsonb_build_array(repeat('é', 513)))));
SELECT n, what, dcb_try(format('SELECT count(*) FROM es.es_read_query(%L)', q)) AS read_query
  FROM bad_queries ORDER BY n;
SELECT n, what, dcb_try(format('SELECT es.es_append(%L, NULL, %L, %L)', 'dcbbad-1',
         '[{"type": "DcbBad", "data": {}, "tags": ["dcb:t"]}]', q)) AS conditional_append
  FROM bad_queries ORDER BY n;
SELECT * FROM store_counts();
SELECT es.es_stream_version('dcbbad-1');

-- the limits themselves are accepted: 32 items, 64 types, 32 tags, 1024 bytes
SELECT dcb_read((SELECT jsonb_agg(jsonb_build_object('tags', jsonb_build_array('dcb:t' || i))) FROM generate_series(1, 32) i));
SELECT dcb_read(jsonb_build_array(jsonb_build_object('types', (SELECT jsonb_agg('DcbT' || i) FROM generate_series(1, 64) i))));
SELECT dcb_read(jsonb_build_array(jsonb_build_object('tags', (SELECT jsonb_agg('dcb:t' || i) FROM generate_series(1, 32) i))));
SELECT dcb_read(jsonb_build_array(jsonb_build_object('types', jsonb_build_array(repeat('T', 1024)),
                                                     'tags', jsonb_build_array(repeat('é', 512)))));
SELECT version FROM es.es_append('dcblimit-1', 0, '[{"type": "DcbLimit", "data": {}, "tags": ["dcb:limit"]}]',
  (SELECT jsonb_agg(jsonb_build_object('types', (SELECT jsonb_agg('DcbT' || j || '-' || i) FROM generate_series(1, 64) j),
                                       'tags', (SELECT jsonb_agg('dcb:t' || j || '-' || i) FROM generate_series(1, 32) j)))
     FROM generate_series(1, 32) i), NULL);
-- (32 tags AND'ed: the stored event carries only the last of them, so the
-- condition holds)
SELECT version FROM es.es_append('dcblimit-1', 1, '[{"type": "DcbLimit", "data": {}, "tags": ["dcb:limit"]}]',
  jsonb_build_array(jsonb_build_object('tags', (SELECT jsonb_agg('dcb:t' || i) FROM generate_series(1, 31) i) || '["dcb:limit"]')),
  NULL);

---------------------------------------------------------------------------
-- privileges: es_reader reads by query but cannot append; es_writer can
-- append conditionally
---------------------------------------------------------------------------
CREATE ROLE regress_dcb_reader IN ROLE es_reader;
CREATE ROLE regress_dcb_writer IN ROLE es_writer;
CREATE ROLE regress_dcb_nobody;
SELECT p.oid::regprocedure, has_function_privilege('regress_dcb_reader', p.oid, 'EXECUTE') AS reader,
       has_function_privilege('regress_dcb_writer', p.oid, 'EXECUTE') AS writer,
       has_function_privilege('regress_dcb_nobody', p.oid, 'EXECUTE') AS nobody, p.prosecdef
  FROM pg_proc p
 WHERE p.pronamespace = 'es'::regnamespace AND p.proname IN ('es_read_query', 'es_append')
 ORDER BY p.oid::regprocedure::text;
SET ROLE regress_dcb_reader;
SELECT dcb_read('[{"tags": ["dcb:q:t3"]}]');
SELECT dcb_try($$SELECT es.es_append('dcbpriv-1', NULL, '[{"type": "DcbPriv", "data": {}, "tags": ["dcb:priv"]}]',
  '[{"tags": ["dcb:priv"]}]', NULL)$$);
RESET ROLE;
SET ROLE regress_dcb_nobody;
SELECT dcb_try($$SELECT count(*) FROM es.es_read_query('[{"tags": ["dcb:q:t3"]}]')$$);
RESET ROLE;
SET ROLE regress_dcb_writer;
SELECT dcb_read('[{"tags": ["dcb:q:t3"]}]');
SELECT version FROM es.es_append('dcbpriv-1', NULL, '[{"type": "DcbPriv", "data": {}, "tags": ["dcb:priv"]}]',
  '[{"tags": ["dcb:priv"]}]', NULL);
SELECT dcb_try($$SELECT es.es_append('dcbpriv-2', NULL, '[{"type": "DcbPriv", "data": {}, "tags": ["dcb:priv"]}]',
  '[{"tags": ["dcb:priv"]}]', NULL)$$);
RESET ROLE;

-- row level security: a condition sees what the caller's role can see; an
-- event hidden from the caller does not conflict, a visible one does
CREATE ROLE regress_dcb_t1 IN ROLE es_writer;
CREATE ROLE regress_dcb_t2 IN ROLE es_writer;
ALTER TABLE es.events ENABLE ROW LEVEL SECURITY;
CREATE POLICY regress_dcb_tenant ON es.events FOR SELECT TO es_reader
  USING (metadata ->> 'tenant' = current_user);
CREATE POLICY regress_dcb_insert ON es.events FOR INSERT TO es_writer WITH CHECK (true);
SET ROLE regress_dcb_t1;
SELECT version FROM es.es_append('dcbrls-1', NULL,
  '[{"type": "DcbUserRegistered", "data": {}, "metadata": {"tenant": "regress_dcb_t1"}, "tags": ["dcb:user:ann"]}]',
  '[{"tags": ["dcb:user:ann"]}]', NULL);
SET ROLE regress_dcb_t2;
SELECT dcb_read('[{"tags": ["dcb:user:ann"]}]');
SELECT version FROM es.es_append('dcbrls-2', NULL,
  '[{"type": "DcbUserRegistered", "data": {}, "metadata": {"tenant": "regress_dcb_t2"}, "tags": ["dcb:user:ann"]}]',
  '[{"tags": ["dcb:user:ann"]}]', NULL);
SET ROLE regress_dcb_t1;
SELECT dcb_read('[{"tags": ["dcb:user:ann"]}]');
SELECT dcb_try($$SELECT es.es_append('dcbrls-3', NULL,
  '[{"type": "DcbUserRegistered", "data": {}, "metadata": {"tenant": "regress_dcb_t1"}, "tags": ["dcb:user:ann"]}]',
  '[{"tags": ["dcb:user:ann"]}]', NULL)$$);
RESET ROLE;
DROP POLICY regress_dcb_tenant ON es.events;
DROP POLICY regress_dcb_insert ON es.events;
ALTER TABLE es.events DISABLE ROW LEVEL SECURITY;
SELECT stream_id, version, metadata ->> 'tenant' AS tenant FROM es.events WHERE stream_id LIKE 'dcbrls-%' ORDER BY 1;

DROP ROLE regress_dcb_reader, regress_dcb_writer, regress_dcb_nobody, regress_dcb_t1, regress_dcb_t2;
