
/*
 * ========================================================================
 * sql/install/45_async.sql — asynchronous projections (src/async.c)
 * ========================================================================
 *
 * An asynchronous projection is the same AFTER INSERT trigger on es.events
 * as an inline one (row trigger, es_project dispatch, or statement trigger
 * over a transition table), kept disabled so that appends never fire it.
 * es_projection_apply replays the log through it in batches, below the
 * horizon, and writes its checkpoint in the same transaction as the read
 * model: every event affects the read model exactly once.  The background
 * workers (when preloaded) and the procedure es_run_projections (from a
 * client or pg_cron) both run that function.  The tables are guarded: only
 * the functions below write them.  The DDL can be re-run: the 0.1.0 ->
 * 0.2.0 upgrade script holds the same.
 */
CREATE TABLE IF NOT EXISTS @extschema@.async_projections (
	projection		name NOT NULL,
	owner			regrole NOT NULL,
	state			text NOT NULL CHECK (state IN ('running', 'paused', 'failed')),
	batch_size		integer NOT NULL CHECK (batch_size BETWEEN 1 AND 100000),
	categories		text[],
	event_types		text[],
	on_error		text NOT NULL CHECK (on_error IN ('stop', 'park')),
	max_retries		integer NOT NULL CHECK (max_retries BETWEEN 0 AND 1000),
	checkpoint		@extschema@.log_cursor,
	applied			bigint NOT NULL DEFAULT 0,
	last_applied_at	timestamptz,
	isolate_until	@extschema@.log_cursor,
	attempts		integer NOT NULL DEFAULT 0,
	retry_at		timestamptz,
	last_error		text,
	last_error_sqlstate text,
	last_error_at	timestamptz,
	last_error_position bigint,
	created_at		timestamptz NOT NULL,
	CONSTRAINT async_projections_pkey PRIMARY KEY (projection)
);
COMMENT ON TABLE @extschema@.async_projections IS
	'es_ext asynchronous projections: settings and checkpoint of each (written only by the es_projection_* functions)';
COMMENT ON COLUMN @extschema@.async_projections.projection IS 'the name of the projection''s AFTER INSERT trigger on es.events, kept disabled';
COMMENT ON COLUMN @extschema@.async_projections.owner IS 'the role that declared the projection: the background worker applies it as this role';
COMMENT ON COLUMN @extschema@.async_projections.state IS 'running, paused (es_projection_pause) or failed (stopped on an event that kept failing)';
COMMENT ON COLUMN @extschema@.async_projections.categories IS 'only events of these stream categories (NULL: all)';
COMMENT ON COLUMN @extschema@.async_projections.event_types IS 'only events of these types (NULL: all)';
COMMENT ON COLUMN @extschema@.async_projections.on_error IS 'after max_retries failed attempts on one event: stop (state failed) or park it in es.projection_dead_letters and go on';
COMMENT ON COLUMN @extschema@.async_projections.checkpoint IS 'every event at or before this log cursor has been applied, parked or filtered out (NULL: none yet); written with the read model';
COMMENT ON COLUMN @extschema@.async_projections.isolate_until IS 'a batch failed: its events are applied one at a time up to this cursor, its last, so that the failing one is found (NULL: whole batches)';
COMMENT ON COLUMN @extschema@.async_projections.attempts IS 'failed attempts on the current event (one at a time)';
COMMENT ON COLUMN @extschema@.async_projections.retry_at IS 'no attempt before this time (backoff after a failure)';
COMMENT ON COLUMN @extschema@.async_projections.last_error_position IS 'global_position of the event of the last failure, when known';
CREATE OR REPLACE TRIGGER es_guard_write BEFORE INSERT OR UPDATE OR DELETE ON @extschema@.async_projections
	FOR EACH STATEMENT EXECUTE FUNCTION @extschema@.es_guard();
CREATE OR REPLACE TRIGGER es_guard_truncate BEFORE TRUNCATE ON @extschema@.async_projections
	FOR EACH STATEMENT EXECUTE FUNCTION @extschema@.es_guard();
SELECT pg_catalog.pg_extension_config_dump('@extschema@.async_projections', '');
REVOKE ALL ON TABLE @extschema@.async_projections FROM PUBLIC;
GRANT SELECT ON @extschema@.async_projections TO es_reader;
-- the functions run as their caller; the guard lets only them write
GRANT INSERT, UPDATE, DELETE ON @extschema@.async_projections TO es_admin;

CREATE TABLE IF NOT EXISTS @extschema@.projection_dead_letters (
	projection		name NOT NULL,
	global_position	bigint NOT NULL,
	log_cursor		@extschema@.log_cursor NOT NULL,
	stream_id		text NOT NULL,
	version			bigint NOT NULL,
	event_type		text NOT NULL,
	error			text,
	sqlstate		text,
	attempts		integer NOT NULL,
	parked_at		timestamptz NOT NULL,
	CONSTRAINT projection_dead_letters_pkey PRIMARY KEY (projection, global_position)
);
COMMENT ON TABLE @extschema@.projection_dead_letters IS
	'events an asynchronous projection parked after they kept failing (on_error = park); es_projection_retry_dead applies them again';
CREATE OR REPLACE TRIGGER es_guard_write BEFORE INSERT OR UPDATE OR DELETE ON @extschema@.projection_dead_letters
	FOR EACH STATEMENT EXECUTE FUNCTION @extschema@.es_guard();
CREATE OR REPLACE TRIGGER es_guard_truncate BEFORE TRUNCATE ON @extschema@.projection_dead_letters
	FOR EACH STATEMENT EXECUTE FUNCTION @extschema@.es_guard();
SELECT pg_catalog.pg_extension_config_dump('@extschema@.projection_dead_letters', '');
REVOKE ALL ON TABLE @extschema@.projection_dead_letters FROM PUBLIC;
GRANT SELECT ON @extschema@.projection_dead_letters TO es_reader;
GRANT INSERT, UPDATE, DELETE ON @extschema@.projection_dead_letters TO es_admin;

CREATE OR REPLACE FUNCTION @extschema@.es_create_async_projection(projection name,
																  batch_size integer DEFAULT 100,
																  categories text[] DEFAULT NULL,
																  event_types text[] DEFAULT NULL,
																  on_error text DEFAULT 'stop',
																  max_retries integer DEFAULT 3,
																  from_start boolean DEFAULT NULL)
RETURNS void
AS 'MODULE_PATHNAME', 'es_create_async_projection'
LANGUAGE C VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE;
COMMENT ON FUNCTION @extschema@.es_create_async_projection(name, integer, text[], text[], text, integer, boolean) IS
	'makes the projection trigger of that name asynchronous: disabled, and applied by es_projection_apply from the beginning of the log (a trigger created in this transaction or disabled) or after the last event it applied inline; from_start overrides that choice';
REVOKE ALL ON FUNCTION @extschema@.es_create_async_projection(name, integer, text[], text[], text, integer, boolean) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@.es_create_async_projection(name, integer, text[], text[], text, integer, boolean) TO es_admin;

CREATE OR REPLACE FUNCTION @extschema@.es_projection_apply(projection name)
RETURNS integer
AS 'MODULE_PATHNAME', 'es_projection_apply'
LANGUAGE C VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE;
COMMENT ON FUNCTION @extschema@.es_projection_apply(name) IS
	'applies the next batch of an asynchronous projection and its checkpoint in the caller''s transaction; returns the events applied (0: caught up, or not runnable now)';
REVOKE ALL ON FUNCTION @extschema@.es_projection_apply(name) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@.es_projection_apply(name) TO es_admin;

CREATE OR REPLACE FUNCTION @extschema@.es_projection_failed(projection name, message text, sqlstate text)
RETURNS text
AS 'MODULE_PATHNAME', 'es_projection_failed'
LANGUAGE C VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE;
COMMENT ON FUNCTION @extschema@.es_projection_failed(name, text, text) IS
	'records that es_projection_apply failed (call it after that transaction rolled back); returns retry, parked or failed';
REVOKE ALL ON FUNCTION @extschema@.es_projection_failed(name, text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@.es_projection_failed(name, text, text) TO es_admin;

CREATE OR REPLACE FUNCTION @extschema@.es_projection_pause(projection name)
RETURNS void
AS 'MODULE_PATHNAME', 'es_projection_pause'
LANGUAGE C VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE;
COMMENT ON FUNCTION @extschema@.es_projection_pause(name) IS
	'pauses an asynchronous projection (waits for a batch being applied)';
REVOKE ALL ON FUNCTION @extschema@.es_projection_pause(name) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@.es_projection_pause(name) TO es_admin;

CREATE OR REPLACE FUNCTION @extschema@.es_projection_resume(projection name)
RETURNS void
AS 'MODULE_PATHNAME', 'es_projection_resume'
LANGUAGE C VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE;
COMMENT ON FUNCTION @extschema@.es_projection_resume(name) IS
	'resumes a paused or failed asynchronous projection (a failed one retries its failing event at once)';
REVOKE ALL ON FUNCTION @extschema@.es_projection_resume(name) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@.es_projection_resume(name) TO es_admin;

CREATE OR REPLACE FUNCTION @extschema@.es_projection_reset(projection name, reset text)
RETURNS void
AS 'MODULE_PATHNAME', 'es_projection_reset'
LANGUAGE C VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE;
COMMENT ON FUNCTION @extschema@.es_projection_reset(name, text) IS
	'runs the reset statement (emptying the read model) and moves the asynchronous projection back to the beginning of the log, in one transaction; its dead letters are dropped';
REVOKE ALL ON FUNCTION @extschema@.es_projection_reset(name, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@.es_projection_reset(name, text) TO es_admin;

CREATE OR REPLACE FUNCTION @extschema@.es_projection_retry_dead(projection name, global_position bigint DEFAULT NULL)
RETURNS integer
AS 'MODULE_PATHNAME', 'es_projection_retry_dead'
LANGUAGE C VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE;
COMMENT ON FUNCTION @extschema@.es_projection_retry_dead(name, bigint) IS
	'applies parked events of a projection again, in log order, in the caller''s transaction, and removes them from its dead letters (NULL: all); returns how many';
REVOKE ALL ON FUNCTION @extschema@.es_projection_retry_dead(name, bigint) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@.es_projection_retry_dead(name, bigint) TO es_admin;

CREATE OR REPLACE FUNCTION @extschema@.es_projection_discard_dead(projection name, global_position bigint DEFAULT NULL)
RETURNS integer
AS 'MODULE_PATHNAME', 'es_projection_discard_dead'
LANGUAGE C VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE;
COMMENT ON FUNCTION @extschema@.es_projection_discard_dead(name, bigint) IS
	'removes parked events of a projection without applying them (NULL: all); returns how many';
REVOKE ALL ON FUNCTION @extschema@.es_projection_discard_dead(name, bigint) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@.es_projection_discard_dead(name, bigint) TO es_admin;

CREATE OR REPLACE FUNCTION @extschema@.es_projection_make_inline(projection name)
RETURNS integer
AS 'MODULE_PATHNAME', 'es_projection_make_inline'
LANGUAGE C VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE;
COMMENT ON FUNCTION @extschema@.es_projection_make_inline(name) IS
	'turns an asynchronous projection into an inline one: holds appenders off, applies the events after its checkpoint, enables its trigger; returns the events applied';
REVOKE ALL ON FUNCTION @extschema@.es_projection_make_inline(name) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@.es_projection_make_inline(name) TO es_admin;

CREATE OR REPLACE FUNCTION @extschema@.es_drop_projection(projection name)
RETURNS void
AS 'MODULE_PATHNAME', 'es_drop_projection'
LANGUAGE C VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE;
COMMENT ON FUNCTION @extschema@.es_drop_projection(name) IS
	'drops a projection, inline or asynchronous: its trigger on es.events, its settings, checkpoint, dead letters and rebuild status (not its read model)';
REVOKE ALL ON FUNCTION @extschema@.es_drop_projection(name) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@.es_drop_projection(name) TO es_admin;

/*
 * es_run_projections: the loop of the background worker, for a client or
 * pg_cron (no preload needed).  Applies batches of every running
 * asynchronous projection (or of the one named) whose retry is due,
 * committing after each, until all are caught up or max_batches batches
 * were applied; a failing batch is rolled back and recorded by
 * es_projection_failed in its own transaction.  Must be CALLed outside a
 * transaction block.  No SET clause (a procedure with one cannot commit):
 * every name is schema-qualified.
 */
CREATE OR REPLACE PROCEDURE @extschema@.es_run_projections(projection name DEFAULT NULL,
														   max_batches integer DEFAULT NULL,
														   INOUT applied bigint DEFAULT NULL,
														   INOUT failures integer DEFAULT NULL)
LANGUAGE plpgsql
AS $proc$
DECLARE
	p			name;
	n			integer;
	batches		bigint := 0;
	progress	boolean;
	msg			text;
	code		text;
	outcome		text;
BEGIN
	-- refused like every writing function of es_ext (es_projection_apply would be)
	IF pg_catalog.pg_is_in_recovery() THEN
		RAISE EXCEPTION 'cannot execute es_run_projections() during recovery'
			USING ERRCODE = 'read_only_sql_transaction';
	END IF;
	IF pg_catalog.current_setting('transaction_read_only')::boolean THEN
		RAISE EXCEPTION 'cannot execute es_run_projections() in a read-only transaction'
			USING ERRCODE = 'read_only_sql_transaction';
	END IF;
	IF max_batches IS NOT NULL AND max_batches OPERATOR(pg_catalog.<) 1 THEN
		RAISE EXCEPTION 'max_batches must be greater than zero' USING ERRCODE = 'invalid_parameter_value';
	END IF;
	IF projection IS NOT NULL AND NOT EXISTS
		(SELECT FROM @extschema@.async_projections AS a
		  WHERE a.projection OPERATOR(pg_catalog.=) es_run_projections.projection) THEN
		RAISE EXCEPTION 'asynchronous projection "%" does not exist', projection
			USING ERRCODE = 'undefined_object';
	END IF;
	applied := 0;
	failures := 0;
	COMMIT;
	LOOP
		progress := false;
		FOR p IN SELECT a.projection FROM @extschema@.async_projections AS a
				  WHERE a.state OPERATOR(pg_catalog.=) 'running'
					AND (a.retry_at IS NULL OR a.retry_at OPERATOR(pg_catalog.<=) pg_catalog.clock_timestamp())
					AND (es_run_projections.projection IS NULL
						 OR a.projection OPERATOR(pg_catalog.=) es_run_projections.projection)
				  ORDER BY a.projection
		LOOP
			EXIT WHEN max_batches IS NOT NULL AND batches OPERATOR(pg_catalog.>=) max_batches;
			msg := NULL;
			BEGIN
				n := @extschema@.es_projection_apply(p);
			EXCEPTION WHEN OTHERS THEN
				GET STACKED DIAGNOSTICS msg = MESSAGE_TEXT, code = RETURNED_SQLSTATE;
				n := 0;
			END;
			COMMIT;
			batches := batches OPERATOR(pg_catalog.+) 1;
			IF msg IS NOT NULL THEN
				outcome := @extschema@.es_projection_failed(p, msg, code);
				COMMIT;
				failures := failures OPERATOR(pg_catalog.+) 1;
				RAISE WARNING 'projection "%" failed: %', p, msg
					USING DETAIL = pg_catalog.format('SQLSTATE %s; outcome: %s.', code, outcome);
				-- parked: go on with the next event; retry: again if already due
				-- (the first failure of a batch retries its events one by one at once)
				progress := progress OR outcome OPERATOR(pg_catalog.<>) 'failed';
			ELSIF n OPERATOR(pg_catalog.>) 0 THEN
				applied := applied OPERATOR(pg_catalog.+) n;
				progress := true;
			END IF;
		END LOOP;
		EXIT WHEN NOT progress;
		EXIT WHEN max_batches IS NOT NULL AND batches OPERATOR(pg_catalog.>=) max_batches;
	END LOOP;
END
$proc$;
COMMENT ON PROCEDURE @extschema@.es_run_projections(name, integer, bigint, integer) IS
	'applies asynchronous projections from a client or pg_cron, committing after each batch, until caught up or max_batches; returns the events applied and the failures';
REVOKE ALL ON PROCEDURE @extschema@.es_run_projections(name, integer, bigint, integer) FROM PUBLIC;
GRANT EXECUTE ON PROCEDURE @extschema@.es_run_projections(name, integer, bigint, integer) TO es_admin;

/*
 * Every projection, inline or asynchronous, with its state and lag: the
 * user AFTER INSERT triggers of es.events (es_ext's own excluded), their
 * asynchronous settings and checkpoint, their rebuild and their dead
 * letters.  events_behind and lag count the log after the checkpoint,
 * before the projection's filter (es_cursor_lag: index range scans).
 */
CREATE OR REPLACE VIEW @extschema@.projections AS
	SELECT t.tgname AS projection,
		   CASE WHEN a.projection IS NOT NULL THEN 'async' ELSE 'inline' END AS mode,
		   CASE WHEN s.state OPERATOR(pg_catalog.=) 'rebuilding' THEN 'rebuilding'
				WHEN a.projection IS NOT NULL THEN
					CASE WHEN a.state OPERATOR(pg_catalog.=) 'running' AND a.attempts OPERATOR(pg_catalog.>) 0
						 THEN 'retrying' ELSE a.state END
				WHEN t.tgenabled OPERATOR(pg_catalog.=) 'D' THEN 'disabled'
				ELSE 'live' END AS state,
		   t.tgfoid::pg_catalog.regproc AS function,
		   a.batch_size,
		   a.categories,
		   a.event_types,
		   a.on_error,
		   a.checkpoint,
		   CASE WHEN a.projection IS NULL THEN CASE WHEN t.tgenabled OPERATOR(pg_catalog.<>) 'D' THEN 0::bigint END
				ELSE l.events_behind OPERATOR(pg_catalog.+) l.events_held_back END AS events_behind,
		   CASE WHEN a.projection IS NULL THEN CASE WHEN t.tgenabled OPERATOR(pg_catalog.<>) 'D' THEN '0'::interval END
				ELSE COALESCE(l.lag, '0'::interval) END AS lag,
		   a.applied,
		   a.last_applied_at,
		   a.attempts,
		   a.retry_at,
		   a.last_error,
		   a.last_error_sqlstate,
		   a.last_error_at,
		   a.last_error_position,
		   COALESCE(d.dead_letters, 0) AS dead_letters,
		   a.owner
	  FROM pg_catalog.pg_trigger AS t
	  LEFT JOIN @extschema@.async_projections AS a ON a.projection OPERATOR(pg_catalog.=) t.tgname
	  LEFT JOIN @extschema@.projection_status AS s ON s.projection OPERATOR(pg_catalog.=) t.tgname
	  LEFT JOIN LATERAL (SELECT pg_catalog.count(*) AS dead_letters
						   FROM @extschema@.projection_dead_letters AS x
						  WHERE x.projection OPERATOR(pg_catalog.=) t.tgname) AS d ON true
	  LEFT JOIN LATERAL @extschema@.es_cursor_lag(a.checkpoint) AS l ON a.projection IS NOT NULL
	 WHERE t.tgrelid OPERATOR(pg_catalog.=) '@extschema@.events'::pg_catalog.regclass
	   AND NOT t.tgisinternal
	   AND (t.tgtype::integer OPERATOR(pg_catalog.&) 4) OPERATOR(pg_catalog.<>) 0
	   AND (t.tgtype::integer OPERATOR(pg_catalog.&) 66) OPERATOR(pg_catalog.=) 0
	   AND (t.tgfoid OPERATOR(pg_catalog.=) '@extschema@.es_project()'::pg_catalog.regprocedure
			OR NOT EXISTS (SELECT FROM pg_catalog.pg_depend AS dep
							WHERE dep.classid OPERATOR(pg_catalog.=) 'pg_catalog.pg_proc'::pg_catalog.regclass
							  AND dep.objid OPERATOR(pg_catalog.=) t.tgfoid
							  AND dep.refclassid OPERATOR(pg_catalog.=) 'pg_catalog.pg_extension'::pg_catalog.regclass
							  AND dep.deptype OPERATOR(pg_catalog.=) 'e'));
COMMENT ON VIEW @extschema@.projections IS
	'every projection (AFTER INSERT trigger on es.events), inline or asynchronous: state, checkpoint, events and time behind, last error, dead letters';
COMMENT ON COLUMN @extschema@.projections.state IS 'inline: live, disabled or rebuilding; async: running, retrying, paused, failed or rebuilding';
COMMENT ON COLUMN @extschema@.projections.events_behind IS 'async: events of the log after its checkpoint, before its filter (0 when caught up); inline: 0 (NULL when disabled)';
COMMENT ON COLUMN @extschema@.projections.lag IS 'async: time since the first event after its checkpoint was appended (0 when caught up)';
REVOKE ALL ON TABLE @extschema@.projections FROM PUBLIC;
GRANT SELECT ON @extschema@.projections TO es_reader;
/*
 * security_invoker: the tables' row level security (es_enable_tenancy) runs
 * as the reader, not as this view's owner (who bypasses it): otherwise every
 * tenant's rows would show through the view (test tenancy_views)
 */
ALTER VIEW @extschema@.projections SET (security_invoker = true);
