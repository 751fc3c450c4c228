-- search_path_audit: a hostile search_path changes nothing, for every entry
-- point (sql/search_path.sql covers the append and read core; this covers
-- the rest: folds, snapshots, upcasters, projections and their rebuild,
-- the outbox).
--
-- Schema "evil", first in the path, shadows every pg_catalog function and
-- aggregate the extension uses (same names and argument types), the
-- operators on the types it compares, and its tables; pg_temp shadows the
-- tables too.  Each evil function raises a WARNING when called, so a call
-- from anywhere in the extension shows up in this file's output.  This is a
-- fresh session: the extension's statements are first prepared under the
-- hostile path.

CREATE SCHEMA evil;
DO $$
DECLARE
	f	record;
BEGIN
	-- functions
	FOR f IN
		SELECT p.proname, pg_get_function_identity_arguments(p.oid) AS args,
			   pg_get_function_result(p.oid) AS result
		  FROM pg_proc AS p
		 WHERE p.pronamespace = 'pg_catalog'::regnamespace AND p.prokind = 'f' AND NOT p.proretset
		   AND p.proname IN ('unnest', 'octet_length', 'clock_timestamp', 'now', 'hashtextextended',
							 'format', 'split_part', 'age', 'power', 'gen_random_uuid', 'array_length',
							 'jsonb_build_object', 'jsonb_build_array', 'jsonb_array_length', 'to_jsonb',
							 'lower', 'upper', 'length', 'left', 'md5', 'sha256', 'encode', 'coalesce',
							 'set_config', 'current_setting', 'pg_notify', 'pg_current_xact_id', 'hashtext',
							 'array_position', 'textlen', 'jsonb_typeof', 'jsonb_object_field_text',
							 'jsonb_exists', 'to_regprocedure', 'pg_get_functiondef', 'regprocedurein',
							 'pg_backend_pid', 'statement_timestamp', 'transaction_timestamp', 'random')
		   AND NOT EXISTS (SELECT FROM unnest(p.proargtypes::oid[]) AS t
							WHERE t IN ('internal'::regtype, '"any"'::regtype, 'cstring'::regtype))
		   AND p.prorettype NOT IN ('internal'::regtype, 'cstring'::regtype, 'void'::regtype)
	LOOP
		EXECUTE format('CREATE FUNCTION evil.%I(%s) RETURNS %s LANGUAGE plpgsql AS $f$BEGIN RAISE WARNING %L; RETURN NULL; END$f$',
					   f.proname, f.args, f.result, 'evil function ' || f.proname || ' called');
	END LOOP;
	-- operators on the types the extension compares
	FOR f IN
		SELECT o.oprname, format_type(o.oprleft, NULL) AS l, format_type(o.oprright, NULL) AS r,
			   format_type(o.oprresult, NULL) AS res, row_number() OVER () AS n
		  FROM pg_operator AS o
		 WHERE o.oprnamespace = 'pg_catalog'::regnamespace AND o.oprkind = 'b'
		   AND o.oprname IN ('=', '<>', '<', '<=', '>', '>=', '+', '-', '*', '||', '->>', '->', '?', '@>', '#>>')
		   AND o.oprleft IN ('text'::regtype, 'bigint'::regtype, 'integer'::regtype, 'jsonb'::regtype,
							 'timestamptz'::regtype, 'interval'::regtype, 'uuid'::regtype, 'xid8'::regtype,
							 'boolean'::regtype, 'name'::regtype, 'bytea'::regtype, 'double precision'::regtype)
		   AND o.oprright IN ('text'::regtype, 'bigint'::regtype, 'integer'::regtype, 'jsonb'::regtype,
							  'timestamptz'::regtype, 'interval'::regtype, 'uuid'::regtype, 'xid8'::regtype,
							  'boolean'::regtype, 'name'::regtype, 'bytea'::regtype, 'double precision'::regtype,
							  'text[]'::regtype)
	LOOP
		EXECUTE format('CREATE FUNCTION evil.op_%s(%s, %s) RETURNS %s LANGUAGE plpgsql AS $f$BEGIN RAISE WARNING %L; RETURN NULL; END$f$',
					   f.n, f.l, f.r, f.res, 'evil operator ' || f.l || ' ' || f.oprname || ' ' || f.r || ' called');
		EXECUTE format('CREATE OPERATOR evil.%s (LEFTARG = %s, RIGHTARG = %s, FUNCTION = evil.op_%s)',
					   f.oprname, f.l, f.r, f.n);
	END LOOP;
END
$$;
-- aggregates
CREATE FUNCTION evil.agg_warn(bigint, anyelement) RETURNS bigint LANGUAGE plpgsql AS
	$$BEGIN RAISE WARNING 'evil aggregate called'; RETURN NULL; END$$;
CREATE FUNCTION evil.agg_warn0(bigint) RETURNS bigint LANGUAGE plpgsql AS
	$$BEGIN RAISE WARNING 'evil aggregate called'; RETURN NULL; END$$;
CREATE FUNCTION evil.agg_warn_bool(boolean, boolean) RETURNS boolean LANGUAGE plpgsql AS
	$$BEGIN RAISE WARNING 'evil aggregate called'; RETURN NULL; END$$;
CREATE AGGREGATE evil.count(*) (SFUNC = evil.agg_warn0, STYPE = bigint);
CREATE AGGREGATE evil.min(bigint) (SFUNC = evil.agg_warn, STYPE = bigint);
CREATE AGGREGATE evil.max(bigint) (SFUNC = evil.agg_warn, STYPE = bigint);
CREATE AGGREGATE evil.sum(bigint) (SFUNC = evil.agg_warn, STYPE = bigint);
CREATE AGGREGATE evil.bool_and(boolean) (SFUNC = evil.agg_warn_bool, STYPE = boolean);
-- tables
CREATE TABLE evil.events (LIKE es.events);
CREATE TABLE evil.streams (LIKE es.streams);
CREATE TABLE evil.config (LIKE es.config);
CREATE TABLE evil.outbox (LIKE es.outbox);
CREATE TABLE evil.outbox_routes (LIKE es.outbox_routes);
CREATE TABLE evil.outbox_groups (LIKE es.outbox_groups);
CREATE TABLE evil.outbox_deliveries (LIKE es.outbox_deliveries);
CREATE TABLE evil.outbox_dead (LIKE es.outbox_dead);
CREATE TABLE evil.snapshots (LIKE es.snapshots);
CREATE TABLE evil.upcasters (LIKE es.upcasters);
CREATE TABLE evil.projection_status (LIKE es.projection_status);
CREATE TABLE evil.checkpoints (LIKE es.checkpoints);
CREATE TEMP TABLE events (LIKE es.events);
CREATE TEMP TABLE snapshots (LIKE es.snapshots);
CREATE TEMP TABLE outbox_deliveries (LIKE es.outbox_deliveries);
SELECT count(*) > 100 AS evil_functions, (SELECT count(*) > 50 FROM pg_operator WHERE oprnamespace = 'evil'::regnamespace) AS evil_operators
  FROM pg_proc WHERE pronamespace = 'evil'::regnamespace;

-- the user's own code: a reducer, an upcaster, a projection (they pin their
-- own search_path; what matters here is the extension's code)
CREATE FUNCTION public.spa_count(state jsonb, e jsonb) RETURNS jsonb
LANGUAGE sql SET search_path = pg_catalog AS $$
	SELECT jsonb_build_object('n', (state->>'n')::int + 1, 'sum', (state->>'sum')::int + (e->'data'->>'k')::int)
$$;
CREATE FUNCTION public.spa_up(data jsonb) RETURNS jsonb
LANGUAGE sql SET search_path = pg_catalog AS $$
	SELECT jsonb_build_object('k', (data->>'k')::int * 10)
$$;
CREATE TABLE public.spa_proj (stream_id text, version bigint, k int);
CREATE FUNCTION public.spa_on_event(e es.events) RETURNS void
LANGUAGE sql SET search_path = pg_catalog AS $$
	INSERT INTO public.spa_proj VALUES (e.stream_id, e.version, (e.data->>'k')::int)
$$;
CREATE TRIGGER spa_proj AFTER INSERT ON es.events FOR EACH ROW
	WHEN (NEW.category OPERATOR(pg_catalog.=) 'spa')
	EXECUTE FUNCTION es.es_project('*', 'public.spa_on_event');

-- runs sql under the hostile search_path and returns "ok" or the error's
-- SQLSTATE, message, constraint and detail (like public.try, which would
-- itself meet the evil operators); its own expressions run under a safe path
CREATE FUNCTION public.spa_try(sql text) RETURNS text
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
	st text;
	msg text;
	con text;
	det text;
BEGIN
	PERFORM pg_catalog.set_config('search_path', 'evil, pg_temp, public, es, pg_catalog', true);
	EXECUTE sql;
	PERFORM pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true);
	RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
	PERFORM pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true);
	GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE, msg = MESSAGE_TEXT,
		con = CONSTRAINT_NAME, det = PG_EXCEPTION_DETAIL;
	RETURN st || ': ' || msg || ' [' || con || ']' || E'\n' || det;
END
$$;

SET search_path = evil, pg_temp, public, es, pg_catalog;
SET client_min_messages = warning;

-- the hostile objects are really in effect for unqualified SQL
SELECT 'a'::text = 'b'::text AS evil_eq;

-- the outbox: a route, a group
SELECT es_outbox_route('spa');
SELECT es_outbox_create_group('spa_g', max_attempts => 2) IS NOT NULL AS group_created;

-- appends (through the projection and the outbox)
SELECT version, cardinality(positions) FROM es_append('spa-1', 0,
	'[{"type": "A", "data": {"k": 1}, "metadata": {"correlation_id": "spa-c"}},
	  {"type": "B", "data": {"k": 2}, "schema_version": 1}]');
SELECT version FROM es_append('spa-1', 2, '[{"type": "A", "data": {"k": 3}, "id": "5a5a5a5a-5a5a-4a5a-8a5a-5a5a5a5a5a5a"}]');
SELECT version FROM es_append('spa-1', 2, '[{"type": "A", "data": {"k": 3}, "id": "5a5a5a5a-5a5a-4a5a-8a5a-5a5a5a5a5a5a"}]');
SELECT version FROM es_append('spa-2', NULL, '[{"type": "A", "data": {"k": 4}}]');
-- a conflict: 40001 es_expected_version
SELECT public.spa_try($$SELECT es_append('spa-1', 1, '[{"type": "A", "data": {"k": 9}}]')$$);

-- reads
SELECT es_stream_version('spa-1');
SELECT version, event_type, data FROM es_read_stream('spa-1');
SELECT version FROM es_read_stream('spa-1', 3, 1, 'backward');
SELECT stream_id, version FROM es_read_all(NULL, 100, 'spa');
SELECT stream_id, version FROM es_read_all(NULL, 100, 'spa', ARRAY['B']);
SELECT stream_id, version FROM es_events_by_correlation('spa-c');
SELECT es_log_horizon() IS NOT NULL AS horizon;

-- checkpoints of a global-log subscriber, its lag
SELECT es_checkpoint_save('spa_sub', NULL);
SELECT es_checkpoint_save('spa_sub', (SELECT r.log_cursor FROM es_read_all(NULL, 1, 'spa') AS r));
SELECT (es_checkpoint('spa_sub')).global_position IS NOT NULL AS saved;
SELECT events_behind, events_held_back FROM es_cursor_lag(es_checkpoint('spa_sub'));
SELECT name, events_behind, events_held_back FROM es.subscriptions WHERE name OPERATOR(pg_catalog.=) 'spa_sub';
SELECT es_checkpoint_drop('spa_sub');

-- folds and snapshots
SELECT es_fold('spa-1', 'public.spa_count(jsonb,jsonb)', '{"n": 0, "sum": 0}');
SELECT state, version, snapshot_version, events_applied
  FROM es_fold_state('spa-1', 'public.spa_count(jsonb,jsonb)', '{"n": 0, "sum": 0}', up_to_version => 2);
SELECT es_snapshot_save('spa-1', 'public.spa_count(jsonb,jsonb)', '{"n": 0, "sum": 0}');
SELECT state, snapshot_version, events_applied
  FROM es_fold_state('spa-1', 'public.spa_count(jsonb,jsonb)', '{"n": 0, "sum": 0}');

-- upcasters: every read raises type A from version 1
SELECT es_register_upcaster('A', 1, 'public.spa_up(jsonb)');
SELECT version, schema_version, data FROM es_read_stream('spa-1');
SELECT stream_id, version, data FROM es_read_all(NULL, 100, 'spa');
SELECT es_fold('spa-1', 'public.spa_count(jsonb,jsonb)', '{"n": 0, "sum": 0}');
SELECT (es_upcast(e)).data FROM es.events AS e WHERE e.stream_id OPERATOR(pg_catalog.=) 'spa-2';
SELECT es_unregister_upcaster('A', 1);
SELECT es_snapshot_delete('spa-1');

-- the outbox consumer side
SELECT stream_id, version, event_type, attempts FROM es_outbox_claim('spa_g', 2, '1 minute');
SELECT es_outbox_nack('spa_g', (SELECT lease FROM es.outbox_deliveries AS d WHERE d.lease IS NOT NULL LIMIT 1),
					  (SELECT array_agg(position) FROM es.outbox_deliveries AS d WHERE d.lease IS NOT NULL), 'x', '0');
SELECT stream_id, version, attempts FROM es_outbox_claim('spa_g', 10, '1 minute');
SELECT es_outbox_ack('spa_g', (SELECT lease FROM es.outbox_deliveries AS d WHERE d.lease IS NOT NULL LIMIT 1),
					 (SELECT array_agg(position) FROM es.outbox_deliveries AS d WHERE d.lease IS NOT NULL));
SELECT es_outbox_replay('spa_g'), es_outbox_discard('spa_g');
SELECT consumer_group, undelivered, dead FROM es.outbox_status WHERE consumer_group OPERATOR(pg_catalog.=) 'spa_g';
SELECT es_outbox_cleanup('1 hour') AS cleaned_up;
SELECT es_outbox_drop_group('spa_g');
SELECT es_outbox_unroute('spa');

-- projections: a replay, and a rebuild (a procedure, which cannot pin its
-- search_path: every name in it is qualified)
CALL es_rebuild_projection('spa_proj', 'TRUNCATE public.spa_proj', 500);
SELECT projection, state, remaining, eta FROM es.projection_progress WHERE projection OPERATOR(pg_catalog.=) 'spa_proj';

RESET client_min_messages;
RESET search_path;

-- what happened, read with a normal search_path: the appends, the read
-- model rebuilt, the outbox rows
SELECT stream_id, version, event_type, data, recorded_at > now() - interval '1 hour' AS real_time
  FROM es.events WHERE stream_id LIKE 'spa-%' ORDER BY 1, 2;
SELECT stream_id, version FROM es.streams WHERE stream_id LIKE 'spa-%' ORDER BY 1;
SELECT * FROM public.spa_proj ORDER BY 1, 2;
SELECT projection, state, replayed > 0 AS replayed FROM es.projection_status WHERE projection = 'spa_proj';
SELECT aggregateid, stream_version, type FROM es.outbox WHERE aggregatetype = 'spa' ORDER BY position;
SELECT count(*) AS groups_left FROM es.outbox_groups WHERE name = 'spa_g';
-- the look-alike tables got nothing
SELECT (SELECT count(*) FROM evil.events) + (SELECT count(*) FROM evil.streams)
	 + (SELECT count(*) FROM evil.outbox) + (SELECT count(*) FROM evil.outbox_deliveries)
	 + (SELECT count(*) FROM evil.outbox_groups) + (SELECT count(*) FROM evil.outbox_routes)
	 + (SELECT count(*) FROM evil.snapshots) + (SELECT count(*) FROM evil.upcasters)
	 + (SELECT count(*) FROM evil.projection_status) + (SELECT count(*) FROM evil.config)
	 + (SELECT count(*) FROM evil.checkpoints)
	 + (SELECT count(*) FROM pg_temp.events) + (SELECT count(*) FROM pg_temp.snapshots)
	 + (SELECT count(*) FROM pg_temp.outbox_deliveries) AS rows_in_look_alikes;

SET client_min_messages = warning;
DROP TRIGGER spa_proj ON es.events;
DROP TABLE public.spa_proj;
DROP FUNCTION public.spa_on_event(es.events), public.spa_count(jsonb, jsonb), public.spa_up(jsonb),
	public.spa_try(text);
DROP SCHEMA evil CASCADE;
RESET client_min_messages;
