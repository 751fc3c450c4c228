/* sql/es_ext--0.1.0.sql — base install script of es_ext 0.1.0 */

-- complain if script is sourced in psql, rather than via CREATE EXTENSION
\echo Use "CREATE EXTENSION es_ext" to load this file. \quit

/*
 * Roles.  Roles are cluster-wide, so they may already exist (another database
 * of the cluster installed the extension first).  They are created NOLOGIN:
 * grant them to login roles.
 *
 *   es_reader  reads streams and the global log
 *   es_writer  es_reader + appends
 *   es_admin   es_writer + administration (horizon holders, future admin paths)
 */
DO $roles$
BEGIN
	IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname OPERATOR(pg_catalog.=) 'es_reader') THEN
		CREATE ROLE es_reader NOLOGIN;
	END IF;
	IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname OPERATOR(pg_catalog.=) 'es_writer') THEN
		CREATE ROLE es_writer NOLOGIN;
	END IF;
	IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname OPERATOR(pg_catalog.=) 'es_admin') THEN
		CREATE ROLE es_admin NOLOGIN;
	END IF;
END
$roles$;
GRANT es_reader TO es_writer;
GRANT es_writer TO es_admin;

REVOKE ALL ON SCHEMA @extschema@ FROM PUBLIC;
GRANT USAGE ON SCHEMA @extschema@ TO es_reader;

/*
 * Log configuration: one row.  "era" is the leading part of the global log
 * cursor.  Transaction ids restart when the events are restored into another
 * cluster (logical dump/restore, pg_upgrade), so the first append in a cluster
 * whose system identifier differs from the stored one advances the era: the
 * restored history then sorts before everything appended afterwards.
 */
CREATE TABLE @extschema@.config (
	singleton			boolean PRIMARY KEY DEFAULT true CHECK (singleton),
	era					integer NOT NULL DEFAULT 0 CHECK (era >= 0),
	system_identifier	bigint NOT NULL
);
INSERT INTO @extschema@.config (era, system_identifier)
	SELECT 0, s.system_identifier FROM pg_catalog.pg_control_system() AS s;
COMMENT ON TABLE @extschema@.config IS
	'es_ext log configuration (one row): current era of the global log and the system identifier it belongs to';

/*
 * Streams: one row per stream, holding its current version.  Appends lock and
 * advance this row; the low fillfactor keeps that update HOT.
 */
CREATE TABLE @extschema@.streams (
	stream_id	text NOT NULL,
	version		bigint NOT NULL CHECK (version >= 0),
	category	text NOT NULL GENERATED ALWAYS AS (pg_catalog.split_part(stream_id, '-', 1)) STORED,
	created_at	timestamptz NOT NULL DEFAULT pg_catalog.now(),
	updated_at	timestamptz NOT NULL DEFAULT pg_catalog.now(),
	log_tx_id	xid8 NOT NULL,
	metadata	jsonb,
	CONSTRAINT streams_pkey PRIMARY KEY (stream_id)
) WITH (fillfactor = 50);
CREATE INDEX streams_category_idx ON @extschema@.streams (category, stream_id);
COMMENT ON TABLE @extschema@.streams IS
	'es_ext streams: current version of every stream (written only by es_append)';

/*
 * Events: the immutable log.  global_position comes from an identity
 * sequence; the global read orders by (era, tx_id, global_position) and never
 * by position alone (a position is taken at insert but becomes visible at
 * commit).  No unique index on global_position alone: every unique key
 * includes stream_id, so the table can be distributed by stream.
 */
CREATE TABLE @extschema@.events (
	global_position	bigint GENERATED ALWAYS AS IDENTITY,
	stream_id		text NOT NULL,
	version			bigint NOT NULL CHECK (version >= 1),
	event_id		uuid NOT NULL,
	event_type		text NOT NULL,
	schema_version	integer NOT NULL DEFAULT 1 CHECK (schema_version >= 1),
	data			jsonb NOT NULL,
	metadata		jsonb,
	recorded_at		timestamptz NOT NULL,
	category		text NOT NULL GENERATED ALWAYS AS (pg_catalog.split_part(stream_id, '-', 1)) STORED,
	era				integer NOT NULL,
	tx_id			xid8 NOT NULL,
	CONSTRAINT events_pkey PRIMARY KEY (stream_id, version),
	CONSTRAINT events_stream_event_id_key UNIQUE (stream_id, event_id)
);
CREATE INDEX events_log_idx ON @extschema@.events (era, tx_id, global_position);
CREATE INDEX events_category_log_idx ON @extschema@.events (category, era, tx_id, global_position);
CREATE INDEX events_type_log_idx ON @extschema@.events (event_type, era, tx_id, global_position);
CREATE INDEX events_correlation_idx ON @extschema@.events ((metadata OPERATOR(pg_catalog.->>) 'correlation_id'))
	WHERE metadata OPERATOR(pg_catalog.?) 'correlation_id';
CREATE INDEX events_causation_idx ON @extschema@.events ((metadata OPERATOR(pg_catalog.->>) 'causation_id'))
	WHERE metadata OPERATOR(pg_catalog.?) 'causation_id';

COMMENT ON TABLE @extschema@.events IS
	'es_ext event log (append-only: written only by es_append)';
COMMENT ON COLUMN @extschema@.events.global_position IS 'position in the log, unique, gaps possible; never order the log by it alone';
COMMENT ON COLUMN @extschema@.events.version IS 'version of the event in its stream, 1-based and contiguous';
COMMENT ON COLUMN @extschema@.events.event_id IS 'event id given by the caller (idempotency key within the stream) or generated';
COMMENT ON COLUMN @extschema@.events.schema_version IS 'version of the shape of data for this event type, as given by the writer (default 1); upcasters raise old versions on read';
COMMENT ON COLUMN @extschema@.events.recorded_at IS 'server time of the append, non-decreasing within a stream';
COMMENT ON COLUMN @extschema@.events.category IS 'stream category: the stream id up to its first "-"';
COMMENT ON COLUMN @extschema@.events.era IS 'leading part of the global log cursor; advanced after a restore into another cluster';
COMMENT ON COLUMN @extschema@.events.tx_id IS 'orders the global log: the top-level transaction id of the append, raised to the stream''s previous tx_id when that is newer';
COMMENT ON COLUMN @extschema@.streams.log_tx_id IS 'tx_id of the stream''s last append; the next append orders its events at or after it';

SELECT pg_catalog.pg_extension_config_dump('@extschema@.events', '');
SELECT pg_catalog.pg_extension_config_dump('@extschema@.streams', '');
SELECT pg_catalog.pg_extension_config_dump('@extschema@.config', '');

/* Composite types */
CREATE TYPE @extschema@.append_result AS (
	version		bigint,
	positions	bigint[]
);
COMMENT ON TYPE @extschema@.append_result IS
	'result of es_append: the stream version after the append and the global positions of the batch, in batch order';

CREATE TYPE @extschema@.log_cursor AS (
	era				integer,
	tx_id			xid8,
	global_position	bigint
);
COMMENT ON TYPE @extschema@.log_cursor IS
	'position in the global log: (era, tx_id, global_position); compare as a row';

/*
 * Guard triggers: events and streams are written only by es_append.  The
 * trigger function lets exactly one statement through after es_append asked
 * for it, and refuses every other INSERT, UPDATE, DELETE and TRUNCATE.
 */
CREATE FUNCTION @extschema@.es_guard()
RETURNS trigger
AS 'MODULE_PATHNAME', 'es_guard'
LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION @extschema@.es_guard() IS
	'trigger: refuses writes to es_ext tables that do not come from es_append';

CREATE TRIGGER es_guard_write BEFORE INSERT OR UPDATE OR DELETE ON @extschema@.events
	FOR EACH STATEMENT EXECUTE FUNCTION @extschema@.es_guard();
CREATE TRIGGER es_guard_truncate BEFORE TRUNCATE ON @extschema@.events
	FOR EACH STATEMENT EXECUTE FUNCTION @extschema@.es_guard();
CREATE TRIGGER es_guard_write BEFORE INSERT OR UPDATE OR DELETE ON @extschema@.streams
	FOR EACH STATEMENT EXECUTE FUNCTION @extschema@.es_guard();
CREATE TRIGGER es_guard_truncate BEFORE TRUNCATE ON @extschema@.streams
	FOR EACH STATEMENT EXECUTE FUNCTION @extschema@.es_guard();
CREATE TRIGGER es_guard_write BEFORE INSERT OR UPDATE OR DELETE ON @extschema@.config
	FOR EACH STATEMENT EXECUTE FUNCTION @extschema@.es_guard();
CREATE TRIGGER es_guard_truncate BEFORE TRUNCATE ON @extschema@.config
	FOR EACH STATEMENT EXECUTE FUNCTION @extschema@.es_guard();

/* Write model */
CREATE FUNCTION @extschema@.es_append(stream text, expected_version bigint, events jsonb)
RETURNS @extschema@.append_result
AS 'MODULE_PATHNAME', 'es_append'
LANGUAGE C VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE;
COMMENT ON FUNCTION @extschema@.es_append(text, bigint, jsonb) IS
	'appends a batch of events to a stream atomically; expected_version: NULL any, -1 stream exists, 0 no stream, N exact';

/* Read side */
CREATE FUNCTION @extschema@.es_read_stream(stream text,
										   from_version bigint DEFAULT NULL,
										   max_count bigint DEFAULT NULL,
										   direction text DEFAULT 'forward')
RETURNS SETOF @extschema@.events
AS 'MODULE_PATHNAME', 'es_read_stream'
LANGUAGE C STABLE CALLED ON NULL INPUT PARALLEL RESTRICTED;
COMMENT ON FUNCTION @extschema@.es_read_stream(text, bigint, bigint, text) IS
	'events of one stream in version order, forward from from_version (default 1) or backward from it (default: the last)';

CREATE FUNCTION @extschema@.es_stream_version(stream text)
RETURNS bigint
LANGUAGE sql STABLE STRICT PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
RETURN COALESCE((SELECT s.version FROM @extschema@.streams AS s
							WHERE s.stream_id OPERATOR(pg_catalog.=) stream), 0::bigint);
COMMENT ON FUNCTION @extschema@.es_stream_version(text) IS
	'current version of a stream; 0 when it does not exist';

CREATE FUNCTION @extschema@.es_read_all(after @extschema@.log_cursor DEFAULT NULL,
										max_count integer DEFAULT 1000,
										category text DEFAULT NULL,
										event_types text[] DEFAULT NULL)
RETURNS TABLE (global_position bigint,
			   stream_id text,
			   version bigint,
			   event_id uuid,
			   event_type text,
			   data jsonb,
			   metadata jsonb,
			   recorded_at timestamptz,
			   log_cursor @extschema@.log_cursor,
			   horizon xid8)
AS 'MODULE_PATHNAME', 'es_read_all'
LANGUAGE C STABLE CALLED ON NULL INPUT PARALLEL RESTRICTED;
COMMENT ON FUNCTION @extschema@.es_read_all(@extschema@.log_cursor, integer, text, text[]) IS
	'the global log after a cursor, in cursor order, up to the snapshot horizon: never skips an event that commits late';

CREATE FUNCTION @extschema@.es_log_horizon()
RETURNS xid8
AS 'MODULE_PATHNAME', 'es_log_horizon'
LANGUAGE C STABLE STRICT PARALLEL RESTRICTED;
COMMENT ON FUNCTION @extschema@.es_log_horizon() IS
	'the global log horizon of the current snapshot: es_read_all returns only events of transactions below it';

/*
 * Who holds the horizon back: every transaction that has an xid, oldest
 * first.  Readers wait for the oldest one to finish.
 */
CREATE VIEW @extschema@.horizon_holders AS
	SELECT a.pid,
		   a.backend_xid AS xid,
		   pg_catalog.age(a.backend_xid) AS xid_age,
		   pg_catalog.now() OPERATOR(pg_catalog.-) a.xact_start AS xact_age,
		   a.state,
		   a.usename AS owner,
		   a.application_name,
		   NULL::text AS prepared_gid,
		   a.query
	  FROM pg_catalog.pg_stat_activity AS a
	 WHERE a.backend_xid IS NOT NULL
	UNION ALL
	SELECT NULL::integer,
		   p.transaction,
		   pg_catalog.age(p.transaction),
		   pg_catalog.now() OPERATOR(pg_catalog.-) p.prepared,
		   'prepared',
		   p.owner,
		   NULL::text,
		   p.gid,
		   NULL::text
	  FROM pg_catalog.pg_prepared_xacts AS p
	 ORDER BY xid_age DESC;
COMMENT ON VIEW @extschema@.horizon_holders IS
	'transactions holding the global log horizon back (they own an xid), oldest first';

/*
 * Correlation and causation: metadata keys "correlation_id" and
 * "causation_id" are indexed; these functions use those indexes.
 */
CREATE FUNCTION @extschema@.es_events_by_correlation(correlation_id text)
RETURNS SETOF @extschema@.events
LANGUAGE sql STABLE STRICT PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
	SELECT e.* FROM @extschema@.events AS e
	 WHERE e.metadata OPERATOR(pg_catalog.?) 'correlation_id'
	   AND (e.metadata OPERATOR(pg_catalog.->>) 'correlation_id') OPERATOR(pg_catalog.=) es_events_by_correlation.correlation_id
	 ORDER BY e.era, e.tx_id, e.global_position;
END;
COMMENT ON FUNCTION @extschema@.es_events_by_correlation(text) IS
	'events whose metadata has the given "correlation_id", in log order';

CREATE FUNCTION @extschema@.es_events_by_causation(causation_id text)
RETURNS SETOF @extschema@.events
LANGUAGE sql STABLE STRICT PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
	SELECT e.* FROM @extschema@.events AS e
	 WHERE e.metadata OPERATOR(pg_catalog.?) 'causation_id'
	   AND (e.metadata OPERATOR(pg_catalog.->>) 'causation_id') OPERATOR(pg_catalog.=) es_events_by_causation.causation_id
	 ORDER BY e.era, e.tx_id, e.global_position;
END;
COMMENT ON FUNCTION @extschema@.es_events_by_causation(text) IS
	'events whose metadata has the given "causation_id", in log order';

/*
 * Projections: AFTER INSERT triggers on es.events, created with CREATE
 * TRIGGER.  es_project is an optional dispatching trigger function;
 * es_rebuild_projection replays history through a projection's trigger.
 */
CREATE FUNCTION @extschema@.es_project()
RETURNS trigger
AS 'MODULE_PATHNAME', 'es_project'
LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION @extschema@.es_project() IS
	'projection trigger: calls handler(es.events) functions by event type; arguments: handler, or pairs of event type and handler';

CREATE FUNCTION @extschema@.es_projection_replay(projection name,
												 after @extschema@.log_cursor,
												 max_count integer,
												 to_head boolean)
RETURNS TABLE (replayed integer, last_cursor @extschema@.log_cursor)
AS 'MODULE_PATHNAME', 'es_projection_replay'
LANGUAGE C VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE;
COMMENT ON FUNCTION @extschema@.es_projection_replay(name, @extschema@.log_cursor, integer, boolean) IS
	'replays events after a cursor through a projection trigger on es.events (the engine of es_rebuild_projection)';

CREATE TABLE @extschema@.projection_status (
	projection	name NOT NULL,
	state		text NOT NULL CHECK (state IN ('rebuilding', 'live')),
	started_at	timestamptz NOT NULL,
	finished_at	timestamptz,
	replayed	bigint NOT NULL DEFAULT 0,
	last_cursor	@extschema@.log_cursor,
	updated_at	timestamptz NOT NULL,
	CONSTRAINT projection_status_pkey PRIMARY KEY (projection)
);
COMMENT ON TABLE @extschema@.projection_status IS
	'progress of projection rebuilds: state, events replayed so far, cursor reached';
SELECT pg_catalog.pg_extension_config_dump('@extschema@.projection_status', '');

/*
 * es_rebuild_projection: empty a projection's read model and replay the whole
 * log through its trigger.
 *
 *  1. Pause the trigger (ALTER TABLE ... DISABLE TRIGGER) and run the reset
 *     statement, in one short transaction.
 *  2. Replay the log in batches below the horizon, committing after each
 *     batch (progress in es.projection_status and a NOTICE).  Appenders go on;
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
	IF NOT EXISTS (SELECT FROM pg_catalog.pg_trigger AS t
					WHERE t.tgrelid OPERATOR(pg_catalog.=) '@extschema@.events'::pg_catalog.regclass
					  AND t.tgname OPERATOR(pg_catalog.=) projection
					  AND NOT t.tgisinternal) THEN
		RAISE EXCEPTION 'trigger "%" for table "es.events" does not exist', projection
			USING ERRCODE = 'undefined_object',
				  HINT = 'Create the projection with CREATE TRIGGER ... AFTER INSERT ON es.events.';
	END IF;

	SELECT s.state, s.replayed, s.last_cursor INTO prior
	  FROM @extschema@.projection_status AS s
	 WHERE s.projection OPERATOR(pg_catalog.=) es_rebuild_projection.projection;

	IF resume AND prior.state OPERATOR(pg_catalog.=) 'rebuilding' THEN
		cur := prior.last_cursor;
		total := prior.replayed;
		RAISE NOTICE 'projection "%": resuming an interrupted rebuild after % events', projection, total;
	ELSE
		EXECUTE pg_catalog.format('ALTER TABLE @extschema@.events DISABLE TRIGGER %I', projection);
		IF reset IS NOT NULL THEN
			EXECUTE reset;
		END IF;
		INSERT INTO @extschema@.projection_status AS s
			(projection, state, started_at, finished_at, replayed, last_cursor, updated_at)
		VALUES (projection, 'rebuilding', pg_catalog.clock_timestamp(), NULL, 0, NULL,
				pg_catalog.clock_timestamp())
		ON CONFLICT ON CONSTRAINT projection_status_pkey DO UPDATE
			SET state = 'rebuilding', started_at = excluded.started_at, finished_at = NULL,
				replayed = 0, last_cursor = NULL, updated_at = excluded.updated_at;
	END IF;
	COMMIT;

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
		RAISE NOTICE 'projection "%": % events replayed', projection, total;
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

/*
 * Privileges.  Nothing for PUBLIC.  The functions run as the caller (no
 * SECURITY DEFINER), so writers hold INSERT/UPDATE on the tables; the guard
 * triggers refuse any write that does not come from es_append.
 */
REVOKE ALL ON ALL TABLES IN SCHEMA @extschema@ FROM PUBLIC;
REVOKE ALL ON ALL SEQUENCES IN SCHEMA @extschema@ FROM PUBLIC;
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA @extschema@ FROM PUBLIC;
REVOKE ALL ON ALL PROCEDURES IN SCHEMA @extschema@ FROM PUBLIC;
REVOKE ALL ON TYPE @extschema@.append_result, @extschema@.log_cursor FROM PUBLIC;

GRANT USAGE ON TYPE @extschema@.append_result, @extschema@.log_cursor TO es_reader;
GRANT SELECT ON @extschema@.events, @extschema@.streams, @extschema@.config TO es_reader;
GRANT EXECUTE ON FUNCTION
	@extschema@.es_read_stream(text, bigint, bigint, text),
	@extschema@.es_stream_version(text),
	@extschema@.es_read_all(@extschema@.log_cursor, integer, text, text[]),
	@extschema@.es_log_horizon(),
	@extschema@.es_events_by_correlation(text),
	@extschema@.es_events_by_causation(text)
	TO es_reader;

GRANT INSERT ON @extschema@.events TO es_writer;
GRANT INSERT, UPDATE ON @extschema@.streams TO es_writer;
GRANT UPDATE ON @extschema@.config TO es_writer;
GRANT EXECUTE ON FUNCTION @extschema@.es_append(text, bigint, jsonb) TO es_writer;

GRANT SELECT ON @extschema@.horizon_holders TO es_admin;
GRANT SELECT ON @extschema@.projection_status TO es_reader;
GRANT INSERT, UPDATE, DELETE ON @extschema@.projection_status TO es_admin;
GRANT TRIGGER ON @extschema@.events TO es_admin;
GRANT EXECUTE ON FUNCTION @extschema@.es_project() TO es_admin;
GRANT EXECUTE ON FUNCTION
	@extschema@.es_projection_replay(name, @extschema@.log_cursor, integer, boolean) TO es_admin;
GRANT EXECUTE ON PROCEDURE @extschema@.es_rebuild_projection(name, text, integer, boolean) TO es_admin;
