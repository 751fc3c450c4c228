
/*
 * ========================================================================
 * sql/install/40_projection.sql — projections and their rebuild
 * ========================================================================
 *
 * Projections: AFTER INSERT triggers on es.events, created with CREATE
 * TRIGGER (es_admin holds TRIGGER on es.events, see 20_core.sql).
 * es_project is an optional dispatching trigger function;
 * es_rebuild_projection replays history through a projection's trigger.
 */
CREATE FUNCTION @extschema@.es_project()
RETURNS trigger
AS 'MODULE_PATHNAME', 'es_project'
LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION @extschema@.es_project() IS
	'projection trigger: calls handler(es.events) functions by event type; arguments: handler, or pairs of event type and handler';
REVOKE ALL ON FUNCTION @extschema@.es_project() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@.es_project() TO es_admin;

CREATE FUNCTION @extschema@.es_projection_replay(projection name,
												 after @extschema@.log_cursor,
												 max_count integer,
												 to_head boolean)
RETURNS TABLE (replayed integer, last_cursor @extschema@.log_cursor)
AS 'MODULE_PATHNAME', 'es_projection_replay'
LANGUAGE C VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE;
COMMENT ON FUNCTION @extschema@.es_projection_replay(name, @extschema@.log_cursor, integer, boolean) IS
	'replays events after a cursor through a projection trigger on es.events (the engine of es_rebuild_projection)';
REVOKE ALL ON FUNCTION @extschema@.es_projection_replay(name, @extschema@.log_cursor, integer, boolean) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@.es_projection_replay(name, @extschema@.log_cursor, integer, boolean) TO es_admin;

CREATE TABLE @extschema@.projection_status (
	projection	name NOT NULL,
	state		text NOT NULL CHECK (state IN ('rebuilding', 'live')),
	started_at	timestamptz NOT NULL,
	finished_at	timestamptz,
	replayed	bigint NOT NULL DEFAULT 0,
	last_cursor	@extschema@.log_cursor,
	updated_at	timestamptz NOT NULL,
	run_started_at	timestamptz,
	run_replayed_from bigint NOT NULL DEFAULT 0,
	CONSTRAINT projection_status_pkey PRIMARY KEY (projection)
);
COMMENT ON COLUMN @extschema@.projection_status.run_started_at IS 'when the rebuild was last resumed, its current run started (NULL: not resumed, the run started at started_at)';
COMMENT ON COLUMN @extschema@.projection_status.run_replayed_from IS 'events replayed before the current run (0, or the count at the last resumption)';
COMMENT ON TABLE @extschema@.projection_status IS
	'progress of projection rebuilds: state, events replayed so far, cursor reached';
SELECT pg_catalog.pg_extension_config_dump('@extschema@.projection_status', '');
REVOKE ALL ON TABLE @extschema@.projection_status FROM PUBLIC;
GRANT SELECT ON @extschema@.projection_status TO es_reader;
GRANT INSERT, UPDATE, DELETE ON @extschema@.projection_status TO es_admin;

/*
 * es_rebuild_projection: empty a projection's read model and replay the whole
 * log through its trigger.
 *
 *  1. Pause the trigger (ALTER TABLE ... DISABLE TRIGGER) and run the reset
 *     statement, in one short transaction.
 *  2. Replay the log in batches below the horizon, committing after each
 *     batch (progress in es.projection_status, shown by the view
 *     es.projection_progress; one NOTICE at the start, one at the end).  Appenders go on;
 *     their events are replayed too, in log order.
 *  3. Lock out appenders (SHARE ROW EXCLUSIVE on es.events) only to replay the
 *     last events and re-enable the trigger, then commit.
 *
 * An interrupted rebuild leaves the trigger paused and the status
 * 'rebuilding'; calling the procedure again resumes from the last committed
 * batch (resume => false starts over).  It must be CALLed outside a
 * transaction block, and (because of ALTER TABLE) by the owner of es.events.
 * It has no SET clause (a procedure with one cannot commit), so every name
 * in it is schema-qualified.
 */
CREATE PROCEDURE @extschema@.es_rebuild_projection(projection name,
												   reset text,
												   batch_size integer DEFAULT 1000,
												   resume boolean DEFAULT true)
LANGUAGE plpgsql
AS $proc$
DECLARE
	trig		record;
	prior		record;
	step		record;
	n			integer;
	cur			@extschema@.log_cursor;
	total		bigint := 0;
BEGIN
	IF projection IS NULL THEN
		RAISE EXCEPTION 'projection cannot be null' USING ERRCODE = 'null_value_not_allowed';
	END IF;
	IF batch_size IS NULL OR batch_size OPERATOR(pg_catalog.<) 1 THEN
		RAISE EXCEPTION 'batch_size must be greater than zero' USING ERRCODE = 'invalid_parameter_value';
	END IF;
	-- checked before anything is paused: only a user's AFTER INSERT trigger
	SELECT t.tgtype::pg_catalog.int4 AS tgtype, t.tgfoid INTO trig
	  FROM pg_catalog.pg_trigger AS t
	 WHERE t.tgrelid OPERATOR(pg_catalog.=) '@extschema@.events'::pg_catalog.regclass
	   AND t.tgname OPERATOR(pg_catalog.=) projection
	   AND NOT t.tgisinternal;
	IF NOT FOUND THEN
		RAISE EXCEPTION 'trigger "%" for table "es.events" does not exist', projection
			USING ERRCODE = 'undefined_object',
				  HINT = 'Create the projection with CREATE TRIGGER ... AFTER INSERT ON es.events.';
	END IF;
	-- pg_trigger.tgtype: 2 = BEFORE, 4 = INSERT, 64 = INSTEAD OF
	IF (trig.tgtype OPERATOR(pg_catalog.&) 4) OPERATOR(pg_catalog.=) 0
	   OR (trig.tgtype OPERATOR(pg_catalog.&) 66) OPERATOR(pg_catalog.<>) 0 THEN
		RAISE EXCEPTION 'trigger "%" on table "es.events" is not an AFTER INSERT trigger', projection
			USING ERRCODE = 'wrong_object_type',
				  HINT = 'A projection is an AFTER INSERT trigger on es.events.';
	END IF;
	IF trig.tgfoid OPERATOR(pg_catalog.<>) '@extschema@.es_project()'::pg_catalog.regprocedure
	   AND EXISTS (SELECT FROM pg_catalog.pg_depend AS d
				   WHERE d.classid OPERATOR(pg_catalog.=) 'pg_catalog.pg_proc'::pg_catalog.regclass
					 AND d.objid OPERATOR(pg_catalog.=) trig.tgfoid
					 AND d.refclassid OPERATOR(pg_catalog.=) 'pg_catalog.pg_extension'::pg_catalog.regclass
					 AND d.deptype OPERATOR(pg_catalog.=) 'e') THEN
		RAISE EXCEPTION 'trigger "%" on table "es.events" belongs to es_ext, not to a projection', projection
			USING ERRCODE = 'wrong_object_type';
	END IF;

	SELECT s.state, s.replayed, s.last_cursor INTO prior
	  FROM @extschema@.projection_status AS s
	 WHERE s.projection OPERATOR(pg_catalog.=) es_rebuild_projection.projection;

	IF resume AND prior.state OPERATOR(pg_catalog.=) 'rebuilding' THEN
		cur := prior.last_cursor;
		total := prior.replayed;
		-- the rate of this run counts from now: the pause is not replay time
		UPDATE @extschema@.projection_status AS s
		   SET run_started_at = pg_catalog.clock_timestamp(), run_replayed_from = total
		 WHERE s.projection OPERATOR(pg_catalog.=) es_rebuild_projection.projection;
	ELSE
		EXECUTE pg_catalog.format('ALTER TABLE @extschema@.events DISABLE TRIGGER %I', projection);
		IF reset IS NOT NULL THEN
			EXECUTE reset;
		END IF;
		INSERT INTO @extschema@.projection_status AS s
			(projection, state, started_at, finished_at, replayed, last_cursor, updated_at,
			 run_started_at, run_replayed_from)
		VALUES (projection, 'rebuilding', pg_catalog.clock_timestamp(), NULL, 0, NULL,
				pg_catalog.clock_timestamp(), NULL, 0)
		ON CONFLICT ON CONSTRAINT projection_status_pkey DO UPDATE
			SET state = 'rebuilding', started_at = excluded.started_at, finished_at = NULL,
				replayed = 0, last_cursor = NULL, updated_at = excluded.updated_at,
				run_started_at = NULL, run_replayed_from = 0;
	END IF;
	COMMIT;
	IF resume AND prior.state OPERATOR(pg_catalog.=) 'rebuilding' THEN
		RAISE NOTICE 'projection "%": resuming an interrupted rebuild after % events', projection, total
			USING HINT = 'Progress is shown in the view es.projection_progress.';
	ELSE
		RAISE NOTICE 'projection "%": rebuilding', projection
			USING HINT = 'Progress is shown in the view es.projection_progress.';
	END IF;

	-- history, in committed batches, while appends go on
	LOOP
		SELECT r.replayed, r.last_cursor INTO step
		  FROM @extschema@.es_projection_replay(projection, cur, batch_size, false) AS r;
		n := step.replayed;
		cur := step.last_cursor;
		total := total OPERATOR(pg_catalog.+) n;
		UPDATE @extschema@.projection_status AS s
		   SET replayed = total, last_cursor = cur, updated_at = pg_catalog.clock_timestamp()
		 WHERE s.projection OPERATOR(pg_catalog.=) es_rebuild_projection.projection;
		COMMIT;
		EXIT WHEN n OPERATOR(pg_catalog.<) batch_size;
	END LOOP;

	-- the tail, with appenders held off, then back to inline projection
	LOCK TABLE @extschema@.events IN SHARE ROW EXCLUSIVE MODE;
	LOOP
		SELECT r.replayed, r.last_cursor INTO step
		  FROM @extschema@.es_projection_replay(projection, cur, batch_size, true) AS r;
		n := step.replayed;
		cur := step.last_cursor;
		total := total OPERATOR(pg_catalog.+) n;
		EXIT WHEN n OPERATOR(pg_catalog.<) batch_size;
	END LOOP;
	EXECUTE pg_catalog.format('ALTER TABLE @extschema@.events ENABLE TRIGGER %I', projection);
	UPDATE @extschema@.projection_status AS s
	   SET state = 'live', replayed = total, last_cursor = cur,
		   finished_at = pg_catalog.clock_timestamp(), updated_at = pg_catalog.clock_timestamp()
	 WHERE s.projection OPERATOR(pg_catalog.=) es_rebuild_projection.projection;
	COMMIT;
	RAISE NOTICE 'projection "%" rebuilt: % events replayed', projection, total;
END
$proc$;
COMMENT ON PROCEDURE @extschema@.es_rebuild_projection(name, text, integer, boolean) IS
	'empties a projection''s read model (reset statement) and replays the whole log through its trigger, in committed batches';
REVOKE ALL ON PROCEDURE @extschema@.es_rebuild_projection(name, text, integer, boolean) FROM PUBLIC;
GRANT EXECUTE ON PROCEDURE @extschema@.es_rebuild_projection(name, text, integer, boolean) TO es_admin;

/*
 * Rebuild progress, readable while a rebuild runs (each batch commits its
 * row of es.projection_status): what is left to replay is counted after the
 * last committed cursor (es_cursor_lag: an index range scan of the events
 * left, never the whole log), the rate from the start of the rebuild to its
 * last committed batch.  A rebuild that was interrupted keeps the state
 * 'rebuilding' with an updated_at that no longer moves.
 */
CREATE OR REPLACE VIEW @extschema@.projection_progress AS
	SELECT s.projection,
		   s.state,
		   s.started_at,
		   s.updated_at,
		   s.replayed,
		   r.remaining,
		   s.replayed OPERATOR(pg_catalog.+) r.remaining AS total,
		   t.events_per_second,
		   CASE WHEN s.state OPERATOR(pg_catalog.=) 'live' THEN '0'::interval
				WHEN t.events_per_second OPERATOR(pg_catalog.>) 0
				THEN pg_catalog.make_interval(secs => (r.remaining OPERATOR(pg_catalog./) t.events_per_second)::double precision)
		   END AS eta,
		   s.finished_at
	  FROM @extschema@.projection_status AS s
	 CROSS JOIN LATERAL
		   (SELECT CASE WHEN s.state OPERATOR(pg_catalog.=) 'live' THEN 0::bigint
						ELSE (SELECT l.events_behind OPERATOR(pg_catalog.+) l.events_held_back
								FROM @extschema@.es_cursor_lag(s.last_cursor) AS l)
				   END AS remaining) AS r
	 CROSS JOIN LATERAL
		   (SELECT pg_catalog.round((s.replayed OPERATOR(pg_catalog.-) s.run_replayed_from)::numeric
									OPERATOR(pg_catalog./)
									NULLIF(EXTRACT(epoch FROM
										CASE WHEN s.state OPERATOR(pg_catalog.=) 'live'
											 THEN COALESCE(s.finished_at, s.updated_at) ELSE s.updated_at END
										OPERATOR(pg_catalog.-) COALESCE(s.run_started_at, s.started_at)), 0),
									1) AS events_per_second) AS t;
COMMENT ON VIEW @extschema@.projection_progress IS
	'progress of projection rebuilds: events replayed, events left, rate and estimated time left (readable while a rebuild runs)';
COMMENT ON COLUMN @extschema@.projection_progress.remaining IS 'events still to replay after the last committed batch; 0 when live';
COMMENT ON COLUMN @extschema@.projection_progress.total IS 'replayed + remaining';
COMMENT ON COLUMN @extschema@.projection_progress.events_per_second IS 'events replayed per second by the current run (from its start, or its resumption, to the last committed batch or the end)';
COMMENT ON COLUMN @extschema@.projection_progress.eta IS 'estimated time left at that rate; 0 when live, NULL before the first batch';
REVOKE ALL ON TABLE @extschema@.projection_progress FROM PUBLIC;
GRANT SELECT ON @extschema@.projection_progress TO es_reader;
