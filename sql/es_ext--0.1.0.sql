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
AS 'MODULE_PATHNAME', 'es_stream_version'
LANGUAGE C STABLE STRICT PARALLEL RESTRICTED;
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
 * ------------------------------------------------------------------------
 * Outbox (issue 5): the transactional outbox, consumer groups and their
 * wake-ups.  The privileges of this section are granted after the others,
 * below.
 *
 * es_append writes, in the appending transaction, one row into es.outbox
 * for every event a route selects (es.outbox_routes), and one delivery row
 * per consumer group into es.outbox_deliveries.  Consumers claim deliveries
 * (row locks, SKIP LOCKED, a lease), then ack or nack them; a delivery that
 * used up its attempts moves to es.outbox_dead, from where it can be
 * replayed.  Within a group, a message is claimable only when no earlier
 * message of its stream is still undelivered, so each stream is delivered
 * in version order however many workers claim.  NOTIFY es_outbox wakes the
 * consumers (src/notify.c): it carries no data.
 * ------------------------------------------------------------------------
 */
DO $roles$
BEGIN
	IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname OPERATOR(pg_catalog.=) 'es_consumer') THEN
		CREATE ROLE es_consumer NOLOGIN;
	END IF;
END
$roles$;
GRANT es_reader TO es_consumer;

/*
 * Routes: which events enter the outbox.  A NULL category or event type
 * matches any.  No route: the outbox is off and costs es_append nothing.
 * Every backend caches the routes; the statement trigger makes them reload
 * after a change (at the next command in the changing backend, at commit in
 * the others).
 */
CREATE TABLE @extschema@.outbox_routes (
	category	text CHECK (pg_catalog.octet_length(category) OPERATOR(pg_catalog.>=) 1
							AND pg_catalog.octet_length(category) OPERATOR(pg_catalog.<=) 1024),
	event_type	text CHECK (pg_catalog.octet_length(event_type) OPERATOR(pg_catalog.>=) 1
							AND pg_catalog.octet_length(event_type) OPERATOR(pg_catalog.<=) 1024),
	created_at	timestamptz NOT NULL DEFAULT pg_catalog.now(),
	CONSTRAINT outbox_routes_key UNIQUE NULLS NOT DISTINCT (category, event_type)
);
COMMENT ON TABLE @extschema@.outbox_routes IS
	'es_ext outbox routes: an event enters es.outbox when a route matches its stream category and type (NULL matches any)';
SELECT pg_catalog.pg_extension_config_dump('@extschema@.outbox_routes', '');

CREATE FUNCTION @extschema@.es_outbox_routes_changed()
RETURNS trigger
AS 'MODULE_PATHNAME', 'es_outbox_routes_changed'
LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION @extschema@.es_outbox_routes_changed() IS
	'trigger: makes every backend reload its cached outbox routes after a change to es.outbox_routes';
CREATE TRIGGER es_outbox_routes_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON @extschema@.outbox_routes
	FOR EACH STATEMENT EXECUTE FUNCTION @extschema@.es_outbox_routes_changed();

/*
 * Consumer groups.  Every group receives every message that enters the
 * outbox after it was created (fan-out), with its own delivery state.
 */
CREATE TABLE @extschema@.outbox_groups (
	group_id		integer GENERATED ALWAYS AS IDENTITY,
	name			text NOT NULL CHECK (pg_catalog.octet_length(name) OPERATOR(pg_catalog.>=) 1
										 AND pg_catalog.octet_length(name) OPERATOR(pg_catalog.<=) 63),
	max_attempts	integer NOT NULL DEFAULT 10 CHECK (max_attempts OPERATOR(pg_catalog.>=) 1),
	backoff_base	interval NOT NULL DEFAULT '1 second' CHECK (backoff_base OPERATOR(pg_catalog.>) '0'::interval),
	backoff_max		interval NOT NULL DEFAULT '5 minutes',
	created_at		timestamptz NOT NULL DEFAULT pg_catalog.now(),
	CONSTRAINT outbox_groups_pkey PRIMARY KEY (group_id),
	CONSTRAINT outbox_groups_name_key UNIQUE (name),
	CONSTRAINT outbox_groups_backoff_check CHECK (backoff_max OPERATOR(pg_catalog.>=) backoff_base)
);
COMMENT ON TABLE @extschema@.outbox_groups IS
	'es_ext consumer groups: each receives every outbox message appended after its creation';
COMMENT ON COLUMN @extschema@.outbox_groups.max_attempts IS 'deliveries of a message before it moves to the dead letters';
COMMENT ON COLUMN @extschema@.outbox_groups.backoff_base IS 'delay before the first retry of a nacked message; doubles with each attempt';
COMMENT ON COLUMN @extschema@.outbox_groups.backoff_max IS 'longest delay between retries';
SELECT pg_catalog.pg_extension_config_dump('@extschema@.outbox_groups', '');

/*
 * The outbox: one row per routed event.  The columns id, aggregatetype,
 * aggregateid, type and payload are those of Debezium's outbox event router
 * (the message id, the topic suffix, the message key -- the stream, so a
 * stream keeps its order within a Kafka partition -- the event type and the
 * message value).  Written only by es_append (the guard refuses other
 * INSERTs and every UPDATE); es_outbox_cleanup deletes delivered rows.
 */
CREATE TABLE @extschema@.outbox (
	position		bigint GENERATED ALWAYS AS IDENTITY,
	id				uuid NOT NULL,
	aggregatetype	text NOT NULL,
	aggregateid		text NOT NULL,
	type			text NOT NULL,
	payload			jsonb NOT NULL,
	metadata		jsonb,
	stream_version	bigint NOT NULL,
	schema_version	integer NOT NULL,
	global_position	bigint NOT NULL,
	created_at		timestamptz NOT NULL,
	CONSTRAINT outbox_pkey PRIMARY KEY (position)
) WITH (autovacuum_vacuum_scale_factor = 0.02, autovacuum_vacuum_threshold = 1000,
		autovacuum_vacuum_insert_scale_factor = 0.05, autovacuum_analyze_scale_factor = 0.05,
		autovacuum_vacuum_cost_delay = 0);
COMMENT ON TABLE @extschema@.outbox IS
	'es_ext transactional outbox: one row per routed event, written by es_append in the appending transaction (Debezium outbox event router columns: id, aggregatetype, aggregateid, type, payload)';
COMMENT ON COLUMN @extschema@.outbox.position IS 'order of the outbox; per stream it follows the version';
COMMENT ON COLUMN @extschema@.outbox.id IS 'the event id (Debezium: message id)';
COMMENT ON COLUMN @extschema@.outbox.aggregatetype IS 'the stream category (Debezium: routes to topic outbox.event.<aggregatetype>)';
COMMENT ON COLUMN @extschema@.outbox.aggregateid IS 'the stream id (Debezium: message key)';
COMMENT ON COLUMN @extschema@.outbox.type IS 'the event type';
COMMENT ON COLUMN @extschema@.outbox.payload IS 'the event data as appended (not upcast)';
COMMENT ON COLUMN @extschema@.outbox.created_at IS 'recorded_at of the event';
SELECT pg_catalog.pg_extension_config_dump('@extschema@.outbox', '');

CREATE TRIGGER es_guard_write BEFORE INSERT OR UPDATE ON @extschema@.outbox
	FOR EACH STATEMENT EXECUTE FUNCTION @extschema@.es_guard();

/*
 * Deliveries: one narrow row per (group, undelivered message).  visible_at
 * is when the row may be claimed: at once for a new message, after the
 * backoff for a nacked one, when the lease ends for a claimed one.  An ack
 * deletes the row.  stream_key is a hash of the stream id: messages of one
 * stream share it (two streams that share it are merely ordered together).
 * Rows churn, hence the low fillfactor (claims are HOT updates) and the
 * eager per-table autovacuum.
 */
CREATE TABLE @extschema@.outbox_deliveries (
	group_id	integer NOT NULL,
	position	bigint NOT NULL,
	stream_key	bigint NOT NULL,
	visible_at	timestamptz NOT NULL,
	attempts	integer NOT NULL DEFAULT 0,
	lease		uuid,
	last_error	text,
	CONSTRAINT outbox_deliveries_pkey PRIMARY KEY (group_id, position)
) WITH (fillfactor = 70, autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 2000,
		autovacuum_vacuum_insert_scale_factor = 0, autovacuum_vacuum_insert_threshold = 10000,
		autovacuum_analyze_scale_factor = 0.05, autovacuum_vacuum_cost_delay = 0);
CREATE INDEX outbox_deliveries_stream_idx ON @extschema@.outbox_deliveries (group_id, stream_key, position);
/*
 * No statistics on group_id: its distribution changes faster than ANALYZE
 * runs (a group created after the last ANALYZE would be estimated at no
 * rows, and the claim planned as if the queue were empty); without them
 * the planner assumes a modest share of the table per group and keeps to
 * the indexes.
 */
ALTER TABLE @extschema@.outbox_deliveries ALTER COLUMN group_id SET STATISTICS 0;
COMMENT ON TABLE @extschema@.outbox_deliveries IS
	'es_ext outbox deliveries: one row per consumer group and undelivered message (deleted by the ack)';
COMMENT ON COLUMN @extschema@.outbox_deliveries.stream_key IS 'hashtextextended(stream id, 0): orders a stream''s messages';
COMMENT ON COLUMN @extschema@.outbox_deliveries.visible_at IS 'when the message may be claimed (new: at once; nacked: after the backoff; claimed: when the lease ends)';
COMMENT ON COLUMN @extschema@.outbox_deliveries.attempts IS 'how many times the message was claimed';
COMMENT ON COLUMN @extschema@.outbox_deliveries.lease IS 'lease of the last claim; ack and nack must present it';
SELECT pg_catalog.pg_extension_config_dump('@extschema@.outbox_deliveries', '');

/* Dead letters: deliveries that used up their attempts. */
CREATE TABLE @extschema@.outbox_dead (
	group_id	integer NOT NULL,
	position	bigint NOT NULL,
	stream_key	bigint NOT NULL,
	attempts	integer NOT NULL,
	last_error	text,
	dead_at		timestamptz NOT NULL,
	CONSTRAINT outbox_dead_pkey PRIMARY KEY (group_id, position)
);
CREATE INDEX outbox_dead_position_idx ON @extschema@.outbox_dead (position);
COMMENT ON TABLE @extschema@.outbox_dead IS
	'es_ext outbox dead letters: deliveries that used up their attempts (see es.outbox_dead_letters; es_outbox_replay, es_outbox_discard)';
SELECT pg_catalog.pg_extension_config_dump('@extschema@.outbox_dead', '');

CREATE VIEW @extschema@.outbox_dead_letters AS
	SELECT g.name AS consumer_group,
		   z.position,
		   o.id AS event_id,
		   o.aggregateid AS stream_id,
		   o.stream_version AS version,
		   o.type AS event_type,
		   z.attempts,
		   z.last_error,
		   z.dead_at,
		   o.payload AS data,
		   o.metadata
	  FROM @extschema@.outbox_dead AS z
	  JOIN @extschema@.outbox_groups AS g ON g.group_id OPERATOR(pg_catalog.=) z.group_id
	  JOIN @extschema@.outbox AS o ON o.position OPERATOR(pg_catalog.=) z.position;
COMMENT ON VIEW @extschema@.outbox_dead_letters IS
	'outbox messages that a consumer group gave up on, with their event, attempts and last error';

CREATE VIEW @extschema@.outbox_status AS
	SELECT g.name AS consumer_group,
		   s.undelivered,
		   s.in_flight,
		   s.retrying,
		   (SELECT pg_catalog.count(*) FROM @extschema@.outbox_dead AS z
			 WHERE z.group_id OPERATOR(pg_catalog.=) g.group_id) AS dead,
		   (SELECT o.created_at
			  FROM @extschema@.outbox_deliveries AS d
			  JOIN @extschema@.outbox AS o ON o.position OPERATOR(pg_catalog.=) d.position
			 WHERE d.group_id OPERATOR(pg_catalog.=) g.group_id
			 ORDER BY d.position LIMIT 1) AS oldest_undelivered_at
	  FROM @extschema@.outbox_groups AS g
	 CROSS JOIN LATERAL (
		SELECT pg_catalog.count(*) AS undelivered,
			   pg_catalog.count(*) FILTER (WHERE d.lease IS NOT NULL
										   AND d.visible_at OPERATOR(pg_catalog.>) pg_catalog.now()) AS in_flight,
			   pg_catalog.count(*) FILTER (WHERE d.lease IS NULL
										   AND d.attempts OPERATOR(pg_catalog.>) 0) AS retrying
		  FROM @extschema@.outbox_deliveries AS d
		 WHERE d.group_id OPERATOR(pg_catalog.=) g.group_id) AS s;
COMMENT ON VIEW @extschema@.outbox_status IS
	'per consumer group: undelivered messages, those claimed now, those waiting for a retry, dead letters, age of the oldest';

/* Wake-ups (src/notify.c) */
CREATE FUNCTION @extschema@.es_outbox_notify()
RETURNS void
AS 'MODULE_PATHNAME', 'es_outbox_notify'
LANGUAGE C VOLATILE STRICT PARALLEL UNSAFE;
COMMENT ON FUNCTION @extschema@.es_outbox_notify() IS
	'asks for a wake-up of the outbox consumers when this transaction commits (as es_append does), per es.notify';

CREATE FUNCTION @extschema@.es_outbox_notify_status(OUT setting text,
													OUT mode text,
													OUT preloaded boolean,
													OUT worker_pid integer,
													OUT wakeups_requested bigint,
													OUT notifications_sent bigint)
RETURNS record
AS 'MODULE_PATHNAME', 'es_outbox_notify_status'
LANGUAGE C VOLATILE STRICT PARALLEL RESTRICTED;
COMMENT ON FUNCTION @extschema@.es_outbox_notify_status() IS
	'how this session wakes outbox consumers: es.notify as set, the mode in effect, and the notify worker of this database';

/* Routes */
CREATE FUNCTION @extschema@.es_outbox_route(category text DEFAULT NULL, event_type text DEFAULT NULL)
RETURNS boolean
LANGUAGE plpgsql VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
	added	boolean;
BEGIN
	IF pg_catalog.octet_length(category) OPERATOR(pg_catalog.=) 0
	   OR pg_catalog.octet_length(event_type) OPERATOR(pg_catalog.=) 0 THEN
		RAISE EXCEPTION 'outbox route cannot have an empty category or event type'
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'Use NULL to match any category or any event type.';
	END IF;
	IF pg_catalog.octet_length(category) OPERATOR(pg_catalog.>) 1024
	   OR pg_catalog.octet_length(event_type) OPERATOR(pg_catalog.>) 1024 THEN
		RAISE EXCEPTION 'outbox route category or event type is too long'
			USING ERRCODE = 'program_limit_exceeded',
				  DETAIL = 'Categories and event types are limited to 1024 bytes.';
	END IF;
	INSERT INTO @extschema@.outbox_routes AS r (category, event_type)
	VALUES (es_outbox_route.category, es_outbox_route.event_type)
	ON CONFLICT ON CONSTRAINT outbox_routes_key DO NOTHING
	RETURNING true INTO added;
	RETURN COALESCE(added, false);
END
$fn$;
COMMENT ON FUNCTION @extschema@.es_outbox_route(text, text) IS
	'routes the events of a category and/or an event type (NULL: any) into the outbox; false when the route existed';

CREATE FUNCTION @extschema@.es_outbox_unroute(category text DEFAULT NULL, event_type text DEFAULT NULL)
RETURNS boolean
LANGUAGE plpgsql VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
	DELETE FROM @extschema@.outbox_routes AS r
	 WHERE r.category IS NOT DISTINCT FROM es_outbox_unroute.category
	   AND r.event_type IS NOT DISTINCT FROM es_outbox_unroute.event_type;
	RETURN FOUND;
END
$fn$;
COMMENT ON FUNCTION @extschema@.es_outbox_unroute(text, text) IS
	'removes an outbox route; false when there was none';

/* Groups */
CREATE FUNCTION @extschema@.es_outbox_create_group(consumer_group text,
												   max_attempts integer DEFAULT 10,
												   backoff_base interval DEFAULT '1 second',
												   backoff_max interval DEFAULT '5 minutes',
												   backfill boolean DEFAULT false)
RETURNS integer
LANGUAGE plpgsql VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
	gid		integer;
	n		bigint;
BEGIN
	IF consumer_group IS NULL THEN
		RAISE EXCEPTION 'consumer group cannot be null' USING ERRCODE = 'null_value_not_allowed';
	END IF;
	IF max_attempts IS NULL OR backoff_base IS NULL OR backoff_max IS NULL OR backfill IS NULL THEN
		RAISE EXCEPTION 'max_attempts, backoff_base, backoff_max and backfill cannot be null'
			USING ERRCODE = 'null_value_not_allowed';
	END IF;
	IF pg_catalog.octet_length(consumer_group) OPERATOR(pg_catalog.=) 0 THEN
		RAISE EXCEPTION 'consumer group name cannot be empty' USING ERRCODE = 'invalid_parameter_value';
	END IF;
	IF pg_catalog.octet_length(consumer_group) OPERATOR(pg_catalog.>) 63 THEN
		RAISE EXCEPTION 'consumer group name is too long'
			USING ERRCODE = 'program_limit_exceeded',
				  DETAIL = 'Consumer group names are limited to 63 bytes.';
	END IF;
	IF max_attempts OPERATOR(pg_catalog.<) 1 THEN
		RAISE EXCEPTION 'max_attempts must be at least 1' USING ERRCODE = 'invalid_parameter_value';
	END IF;
	IF backoff_base OPERATOR(pg_catalog.<=) '0'::interval THEN
		RAISE EXCEPTION 'backoff_base must be positive' USING ERRCODE = 'invalid_parameter_value';
	END IF;
	IF backoff_max OPERATOR(pg_catalog.<) backoff_base THEN
		RAISE EXCEPTION 'backoff_max cannot be less than backoff_base' USING ERRCODE = 'invalid_parameter_value';
	END IF;

	/*
	 * Wait for the appends that are writing to the outbox and hold new ones
	 * back until this transaction ends: every message is then either in the
	 * backfill or delivered to the new group by its append.
	 */
	LOCK TABLE @extschema@.outbox IN SHARE MODE;

	INSERT INTO @extschema@.outbox_groups AS g (name, max_attempts, backoff_base, backoff_max)
	VALUES (consumer_group, es_outbox_create_group.max_attempts,
			es_outbox_create_group.backoff_base, es_outbox_create_group.backoff_max)
	ON CONFLICT ON CONSTRAINT outbox_groups_name_key DO NOTHING
	RETURNING g.group_id INTO gid;
	IF gid IS NULL THEN
		RAISE EXCEPTION 'consumer group "%" already exists', consumer_group
			USING ERRCODE = 'duplicate_object';
	END IF;

	IF backfill THEN
		INSERT INTO @extschema@.outbox_deliveries AS d (group_id, position, stream_key, visible_at)
		SELECT gid, o.position, pg_catalog.hashtextextended(o.aggregateid, 0), pg_catalog.clock_timestamp()
		  FROM @extschema@.outbox AS o
		 ORDER BY o.position;
		GET DIAGNOSTICS n = ROW_COUNT;
		IF n OPERATOR(pg_catalog.>) 0 THEN
			PERFORM @extschema@.es_outbox_notify();
		END IF;
	END IF;
	RETURN gid;
END
$fn$;
COMMENT ON FUNCTION @extschema@.es_outbox_create_group(text, integer, interval, interval, boolean) IS
	'creates a consumer group; it receives every outbox message appended from now on (backfill: also those already in the outbox); returns its id';

CREATE FUNCTION @extschema@.es_outbox_drop_group(consumer_group text)
RETURNS bigint
LANGUAGE plpgsql VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
	gid		integer;
	n		bigint;
	m		bigint;
BEGIN
	IF consumer_group IS NULL THEN
		RAISE EXCEPTION 'consumer group cannot be null' USING ERRCODE = 'null_value_not_allowed';
	END IF;
	/* no append may add deliveries for the group while it goes */
	LOCK TABLE @extschema@.outbox IN SHARE MODE;
	DELETE FROM @extschema@.outbox_groups AS g
	 WHERE g.name OPERATOR(pg_catalog.=) consumer_group
	RETURNING g.group_id INTO gid;
	IF gid IS NULL THEN
		RAISE EXCEPTION 'consumer group "%" does not exist', consumer_group
			USING ERRCODE = 'undefined_object';
	END IF;
	DELETE FROM @extschema@.outbox_deliveries AS d WHERE d.group_id OPERATOR(pg_catalog.=) gid;
	GET DIAGNOSTICS n = ROW_COUNT;
	DELETE FROM @extschema@.outbox_dead AS z WHERE z.group_id OPERATOR(pg_catalog.=) gid;
	GET DIAGNOSTICS m = ROW_COUNT;
	RETURN n OPERATOR(pg_catalog.+) m;
END
$fn$;
COMMENT ON FUNCTION @extschema@.es_outbox_drop_group(text) IS
	'drops a consumer group with its undelivered messages and dead letters; returns how many it dropped';

/*
 * es_outbox_claim: lease up to max_count messages of a group.
 *
 *  1. Heads: messages that are visible (new, retry due, or lease expired),
 *     not locked by another claim (SKIP LOCKED), and have no earlier
 *     undelivered message in their stream.  Only the first scan_window
 *     visible messages are examined, in order, stopping at max_count
 *     heads: a long backlog of one busy stream costs a bounded scan (the
 *     queue is FIFO per group).
 *  2. A head whose lease expired after its last attempt goes to the dead
 *     letters instead.
 *  3. The visible messages that follow a head in its stream are taken with
 *     it, in order (a run), up to max_count in all: only the holder of a
 *     stream's head can take them, as any other claim sees the head as
 *     undelivered.
 *  4. All of them get the lease, one more attempt, and visible_at at the
 *     end of the lease; they are returned in outbox order, which is version
 *     order within each stream.
 */
CREATE FUNCTION @extschema@.es_outbox_claim(consumer_group text,
											max_count integer DEFAULT 100,
											lease_time interval DEFAULT '30 seconds')
RETURNS TABLE (lease uuid,
			   "position" bigint,
			   attempts integer,
			   event_id uuid,
			   stream_id text,
			   version bigint,
			   event_type text,
			   schema_version integer,
			   data jsonb,
			   metadata jsonb,
			   global_position bigint,
			   recorded_at timestamptz)
LANGUAGE plpgsql VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE ROWS 100
SET search_path = pg_catalog, pg_temp
AS $fn$
#variable_conflict use_column
DECLARE
	grp			@extschema@.outbox_groups;
	ts			timestamptz := pg_catalog.clock_timestamp();
	tok			uuid := pg_catalog.gen_random_uuid();
	scan_window	integer;
	head_pos	bigint[];
	head_key	bigint[];
	spent_pos	bigint[];
	more_pos	bigint[];
	n			integer;
BEGIN
	IF consumer_group IS NULL THEN
		RAISE EXCEPTION 'consumer group cannot be null' USING ERRCODE = 'null_value_not_allowed';
	END IF;
	IF max_count IS NULL OR lease_time IS NULL THEN
		RAISE EXCEPTION 'max_count and lease_time cannot be null' USING ERRCODE = 'null_value_not_allowed';
	END IF;
	IF max_count OPERATOR(pg_catalog.<) 1 OR max_count OPERATOR(pg_catalog.>) 10000 THEN
		RAISE EXCEPTION 'max_count must be between 1 and 10000'
			USING ERRCODE = 'invalid_parameter_value',
				  DETAIL = pg_catalog.format('Got %s.', max_count);
	END IF;
	IF lease_time OPERATOR(pg_catalog.<=) '0'::interval THEN
		RAISE EXCEPTION 'lease_time must be positive' USING ERRCODE = 'invalid_parameter_value';
	END IF;
	SELECT g.* INTO grp FROM @extschema@.outbox_groups AS g
	 WHERE g.name OPERATOR(pg_catalog.=) consumer_group;
	IF NOT FOUND THEN
		RAISE EXCEPTION 'consumer group "%" does not exist', consumer_group
			USING ERRCODE = 'undefined_object',
				  HINT = 'Create it with es.es_outbox_create_group().';
	END IF;
	scan_window := GREATEST(max_count OPERATOR(pg_catalog.*) 4, 1000);

	-- 1, 2: the heads, locked
	SELECT pg_catalog.array_agg(h.pos ORDER BY h.pos) FILTER (WHERE NOT h.spent),
		   pg_catalog.array_agg(h.skey ORDER BY h.pos) FILTER (WHERE NOT h.spent),
		   pg_catalog.array_agg(h.pos) FILTER (WHERE h.spent)
	  INTO head_pos, head_key, spent_pos
	  FROM (SELECT d.position AS pos,
				   d.stream_key AS skey,
				   (d.lease IS NOT NULL AND d.attempts OPERATOR(pg_catalog.>=) grp.max_attempts) AS spent
			  FROM (SELECT c.position FROM @extschema@.outbox_deliveries AS c
					 WHERE c.group_id OPERATOR(pg_catalog.=) grp.group_id
					   AND c.visible_at OPERATOR(pg_catalog.<=) ts
					 ORDER BY c.position
					 LIMIT scan_window) AS w
			  JOIN @extschema@.outbox_deliveries AS d
				ON d.group_id OPERATOR(pg_catalog.=) grp.group_id
			   AND d.position OPERATOR(pg_catalog.=) w.position
			 WHERE d.visible_at OPERATOR(pg_catalog.<=) ts
			   AND NOT EXISTS (SELECT FROM @extschema@.outbox_deliveries AS p
								WHERE p.group_id OPERATOR(pg_catalog.=) grp.group_id
								  AND p.stream_key OPERATOR(pg_catalog.=) d.stream_key
								  AND p.position OPERATOR(pg_catalog.<) d.position)
			 ORDER BY w.position
			 LIMIT max_count
			 FOR UPDATE OF d SKIP LOCKED) AS h;

	IF spent_pos IS NOT NULL THEN
		WITH moved AS (
			DELETE FROM @extschema@.outbox_deliveries AS d
			 WHERE d.group_id OPERATOR(pg_catalog.=) grp.group_id
			   AND d.position OPERATOR(pg_catalog.=) ANY (spent_pos)
			RETURNING d.group_id, d.position, d.stream_key, d.attempts, d.last_error)
		INSERT INTO @extschema@.outbox_dead AS z (group_id, position, stream_key, attempts, last_error, dead_at)
		SELECT m.group_id, m.position, m.stream_key, m.attempts, 'lease expired', ts
		  FROM moved AS m;
	END IF;

	n := COALESCE(pg_catalog.array_length(head_pos, 1), 0);
	IF n OPERATOR(pg_catalog.=) 0 THEN
		RETURN;
	END IF;

	-- 3: the runs that follow the heads
	IF n OPERATOR(pg_catalog.<) max_count THEN
		SELECT pg_catalog.array_agg(r.pos ORDER BY r.pos) INTO more_pos
		  FROM (SELECT f.pos
				  FROM (SELECT x.position AS pos,
							   pg_catalog.bool_and(x.ready)
								 OVER (PARTITION BY h.skey ORDER BY x.position) AS ok
						  FROM ROWS FROM (pg_catalog.unnest(head_key), pg_catalog.unnest(head_pos)) AS h(skey, pos)
						 CROSS JOIN LATERAL (
							SELECT d.position,
								   d.visible_at OPERATOR(pg_catalog.<=) ts
								   AND NOT (d.lease IS NOT NULL
											AND d.attempts OPERATOR(pg_catalog.>=) grp.max_attempts) AS ready
							  FROM @extschema@.outbox_deliveries AS d
							 WHERE d.group_id OPERATOR(pg_catalog.=) grp.group_id
							   AND d.stream_key OPERATOR(pg_catalog.=) h.skey
							   AND d.position OPERATOR(pg_catalog.>) h.pos
							 ORDER BY d.position
							 LIMIT max_count OPERATOR(pg_catalog.-) n) AS x) AS f
				 WHERE f.ok
				 ORDER BY f.pos
				 LIMIT max_count OPERATOR(pg_catalog.-) n) AS r;
	END IF;

	-- 4: lease them and return them
	RETURN QUERY
	WITH leased AS (
		UPDATE @extschema@.outbox_deliveries AS d
		   SET visible_at = ts OPERATOR(pg_catalog.+) lease_time,
			   attempts = d.attempts OPERATOR(pg_catalog.+) 1,
			   lease = tok
		 WHERE d.group_id OPERATOR(pg_catalog.=) grp.group_id
		   AND d.position OPERATOR(pg_catalog.=) ANY (head_pos OPERATOR(pg_catalog.||) COALESCE(more_pos, '{}'::bigint[]))
		RETURNING d.position, d.attempts)
	SELECT tok, l.position, l.attempts, o.id, o.aggregateid, o.stream_version, o.type,
		   o.schema_version, o.payload, o.metadata, o.global_position, o.created_at
	  FROM leased AS l
	  JOIN @extschema@.outbox AS o ON o.position OPERATOR(pg_catalog.=) l.position
	 ORDER BY l.position;
END
$fn$;
COMMENT ON FUNCTION @extschema@.es_outbox_claim(text, integer, interval) IS
	'leases up to max_count undelivered messages of a consumer group for lease_time, in order per stream; returns them with their lease';

CREATE FUNCTION @extschema@.es_outbox_ack(consumer_group text, lease uuid, positions bigint[])
RETURNS bigint
LANGUAGE plpgsql VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $fn$
#variable_conflict use_column
DECLARE
	gid		integer;
	n		bigint;
BEGIN
	IF consumer_group IS NULL OR es_outbox_ack.lease IS NULL OR positions IS NULL THEN
		RAISE EXCEPTION 'consumer group, lease and positions cannot be null'
			USING ERRCODE = 'null_value_not_allowed';
	END IF;
	SELECT g.group_id INTO gid FROM @extschema@.outbox_groups AS g
	 WHERE g.name OPERATOR(pg_catalog.=) consumer_group;
	IF NOT FOUND THEN
		RAISE EXCEPTION 'consumer group "%" does not exist', consumer_group
			USING ERRCODE = 'undefined_object';
	END IF;
	DELETE FROM @extschema@.outbox_deliveries AS d
	 WHERE d.group_id OPERATOR(pg_catalog.=) gid
	   AND d.position OPERATOR(pg_catalog.=) ANY (positions)
	   AND d.lease OPERATOR(pg_catalog.=) es_outbox_ack.lease;
	GET DIAGNOSTICS n = ROW_COUNT;
	RETURN n;
END
$fn$;
COMMENT ON FUNCTION @extschema@.es_outbox_ack(text, uuid, bigint[]) IS
	'marks claimed messages delivered (deletes their deliveries); returns how many still held that lease';

CREATE FUNCTION @extschema@.es_outbox_nack(consumer_group text,
										   lease uuid,
										   positions bigint[],
										   reason text DEFAULT NULL,
										   retry_after interval DEFAULT NULL)
RETURNS bigint
LANGUAGE plpgsql VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $fn$
#variable_conflict use_column
DECLARE
	grp		@extschema@.outbox_groups;
	ts		timestamptz := pg_catalog.clock_timestamp();
	n_dead	bigint;
	n_retry	bigint;
BEGIN
	IF consumer_group IS NULL OR es_outbox_nack.lease IS NULL OR positions IS NULL THEN
		RAISE EXCEPTION 'consumer group, lease and positions cannot be null'
			USING ERRCODE = 'null_value_not_allowed',
				  HINT = 'Only reason and retry_after may be NULL.';
	END IF;
	IF retry_after OPERATOR(pg_catalog.<) '0'::interval THEN
		RAISE EXCEPTION 'retry_after cannot be negative' USING ERRCODE = 'invalid_parameter_value';
	END IF;
	SELECT g.* INTO grp FROM @extschema@.outbox_groups AS g
	 WHERE g.name OPERATOR(pg_catalog.=) consumer_group;
	IF NOT FOUND THEN
		RAISE EXCEPTION 'consumer group "%" does not exist', consumer_group
			USING ERRCODE = 'undefined_object';
	END IF;

	-- attempts used up: to the dead letters
	WITH moved AS (
		DELETE FROM @extschema@.outbox_deliveries AS d
		 WHERE d.group_id OPERATOR(pg_catalog.=) grp.group_id
		   AND d.position OPERATOR(pg_catalog.=) ANY (positions)
		   AND d.lease OPERATOR(pg_catalog.=) es_outbox_nack.lease
		   AND d.attempts OPERATOR(pg_catalog.>=) grp.max_attempts
		RETURNING d.group_id, d.position, d.stream_key, d.attempts, d.last_error)
	INSERT INTO @extschema@.outbox_dead AS z (group_id, position, stream_key, attempts, last_error, dead_at)
	SELECT m.group_id, m.position, m.stream_key, m.attempts, COALESCE(reason, m.last_error, 'nacked'), ts
	  FROM moved AS m;
	GET DIAGNOSTICS n_dead = ROW_COUNT;

	-- the others: again after the backoff (base * 2^(attempts - 1), at most max)
	UPDATE @extschema@.outbox_deliveries AS d
	   SET visible_at = ts OPERATOR(pg_catalog.+)
			   COALESCE(retry_after,
						LEAST(grp.backoff_base OPERATOR(pg_catalog.*)
								pg_catalog.power(2::double precision,
												 LEAST(d.attempts OPERATOR(pg_catalog.-) 1, 30)::double precision),
							  grp.backoff_max)),
		   lease = NULL,
		   last_error = COALESCE(reason, d.last_error)
	 WHERE d.group_id OPERATOR(pg_catalog.=) grp.group_id
	   AND d.position OPERATOR(pg_catalog.=) ANY (positions)
	   AND d.lease OPERATOR(pg_catalog.=) es_outbox_nack.lease;
	GET DIAGNOSTICS n_retry = ROW_COUNT;
	RETURN n_dead OPERATOR(pg_catalog.+) n_retry;
END
$fn$;
COMMENT ON FUNCTION @extschema@.es_outbox_nack(text, uuid, bigint[], text, interval) IS
	'gives claimed messages back: retried after retry_after or the group''s backoff, or moved to the dead letters after max_attempts; returns how many still held that lease';

CREATE FUNCTION @extschema@.es_outbox_replay(consumer_group text, positions bigint[] DEFAULT NULL)
RETURNS bigint
LANGUAGE plpgsql VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
	gid		integer;
	n		bigint;
BEGIN
	IF consumer_group IS NULL THEN
		RAISE EXCEPTION 'consumer group cannot be null' USING ERRCODE = 'null_value_not_allowed';
	END IF;
	SELECT g.group_id INTO gid FROM @extschema@.outbox_groups AS g
	 WHERE g.name OPERATOR(pg_catalog.=) consumer_group;
	IF NOT FOUND THEN
		RAISE EXCEPTION 'consumer group "%" does not exist', consumer_group
			USING ERRCODE = 'undefined_object';
	END IF;
	WITH moved AS (
		DELETE FROM @extschema@.outbox_dead AS z
		 WHERE z.group_id OPERATOR(pg_catalog.=) gid
		   AND (positions IS NULL OR z.position OPERATOR(pg_catalog.=) ANY (positions))
		RETURNING z.group_id, z.position, z.stream_key, z.last_error)
	INSERT INTO @extschema@.outbox_deliveries AS d
		(group_id, position, stream_key, visible_at, attempts, lease, last_error)
	SELECT m.group_id, m.position, m.stream_key, pg_catalog.clock_timestamp(), 0, NULL, m.last_error
	  FROM moved AS m;
	GET DIAGNOSTICS n = ROW_COUNT;
	IF n OPERATOR(pg_catalog.>) 0 THEN
		PERFORM @extschema@.es_outbox_notify();
	END IF;
	RETURN n;
END
$fn$;
COMMENT ON FUNCTION @extschema@.es_outbox_replay(text, bigint[]) IS
	'puts dead letters of a group (all, or those at the given positions) back to delivery with fresh attempts; returns how many';

CREATE FUNCTION @extschema@.es_outbox_discard(consumer_group text, positions bigint[] DEFAULT NULL)
RETURNS bigint
LANGUAGE plpgsql VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
	gid		integer;
	n		bigint;
BEGIN
	IF consumer_group IS NULL THEN
		RAISE EXCEPTION 'consumer group cannot be null' USING ERRCODE = 'null_value_not_allowed';
	END IF;
	SELECT g.group_id INTO gid FROM @extschema@.outbox_groups AS g
	 WHERE g.name OPERATOR(pg_catalog.=) consumer_group;
	IF NOT FOUND THEN
		RAISE EXCEPTION 'consumer group "%" does not exist', consumer_group
			USING ERRCODE = 'undefined_object';
	END IF;
	DELETE FROM @extschema@.outbox_dead AS z
	 WHERE z.group_id OPERATOR(pg_catalog.=) gid
	   AND (positions IS NULL OR z.position OPERATOR(pg_catalog.=) ANY (positions));
	GET DIAGNOSTICS n = ROW_COUNT;
	RETURN n;
END
$fn$;
COMMENT ON FUNCTION @extschema@.es_outbox_discard(text, bigint[]) IS
	'deletes dead letters of a group (all, or those at the given positions); returns how many';

/*
 * es_outbox_cleanup: delete outbox rows that every group has delivered,
 * older than retention, except those a dead letter refers to.  A row is
 * delivered to every group when its position is below each group's oldest
 * undelivered one (an outbox row and its deliveries become visible in the
 * same commit).
 */
CREATE FUNCTION @extschema@.es_outbox_cleanup(retention interval DEFAULT '0', max_rows integer DEFAULT 10000)
RETURNS bigint
LANGUAGE plpgsql VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
	bound	bigint;
	n		bigint;
BEGIN
	IF retention IS NULL OR max_rows IS NULL THEN
		RAISE EXCEPTION 'retention and max_rows cannot be null' USING ERRCODE = 'null_value_not_allowed';
	END IF;
	IF retention OPERATOR(pg_catalog.<) '0'::interval THEN
		RAISE EXCEPTION 'retention cannot be negative' USING ERRCODE = 'invalid_parameter_value';
	END IF;
	IF max_rows OPERATOR(pg_catalog.<) 1 THEN
		RAISE EXCEPTION 'max_rows must be positive' USING ERRCODE = 'invalid_parameter_value';
	END IF;
	SELECT pg_catalog.min(m.position) INTO bound
	  FROM @extschema@.outbox_groups AS g
	 CROSS JOIN LATERAL (SELECT d.position FROM @extschema@.outbox_deliveries AS d
						  WHERE d.group_id OPERATOR(pg_catalog.=) g.group_id
						  ORDER BY d.position LIMIT 1) AS m;
	DELETE FROM @extschema@.outbox AS o
	 WHERE o.position OPERATOR(pg_catalog.=) ANY (ARRAY(
			SELECT x.position FROM @extschema@.outbox AS x
			 WHERE (bound IS NULL OR x.position OPERATOR(pg_catalog.<) bound)
			   AND x.created_at OPERATOR(pg_catalog.<) (pg_catalog.clock_timestamp() OPERATOR(pg_catalog.-) retention)
			   AND NOT EXISTS (SELECT FROM @extschema@.outbox_dead AS z
								WHERE z.position OPERATOR(pg_catalog.=) x.position)
			 ORDER BY x.position
			 LIMIT max_rows));
	GET DIAGNOSTICS n = ROW_COUNT;
	RETURN n;
END
$fn$;
COMMENT ON FUNCTION @extschema@.es_outbox_cleanup(interval, integer) IS
	'deletes up to max_rows outbox rows older than retention that every consumer group has delivered (dead letters keep theirs); returns how many';

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

/*
 * Outbox (issue 5).  es_admin configures routes and groups; consumers
 * (es_consumer, and es_admin) claim, ack, nack, replay and clean up; writers
 * write the outbox only through es_append (the guard refuses the rest).
 */
GRANT SELECT ON @extschema@.outbox, @extschema@.outbox_routes, @extschema@.outbox_groups TO es_reader;
GRANT EXECUTE ON FUNCTION @extschema@.es_outbox_notify_status() TO es_reader;
GRANT INSERT ON @extschema@.outbox, @extschema@.outbox_deliveries TO es_writer;
GRANT SELECT, INSERT, UPDATE, DELETE ON @extschema@.outbox_deliveries, @extschema@.outbox_dead TO es_consumer, es_admin;
GRANT DELETE ON @extschema@.outbox TO es_consumer, es_admin;
GRANT SELECT ON @extschema@.outbox_dead_letters, @extschema@.outbox_status TO es_consumer, es_admin;
GRANT EXECUTE ON FUNCTION
	@extschema@.es_outbox_notify(),
	@extschema@.es_outbox_claim(text, integer, interval),
	@extschema@.es_outbox_ack(text, uuid, bigint[]),
	@extschema@.es_outbox_nack(text, uuid, bigint[], text, interval),
	@extschema@.es_outbox_replay(text, bigint[]),
	@extschema@.es_outbox_discard(text, bigint[]),
	@extschema@.es_outbox_cleanup(interval, integer)
	TO es_consumer, es_admin;
GRANT INSERT, UPDATE, DELETE, TRUNCATE ON @extschema@.outbox_routes, @extschema@.outbox_groups TO es_admin;
GRANT EXECUTE ON FUNCTION
	@extschema@.es_outbox_route(text, text),
	@extschema@.es_outbox_unroute(text, text),
	@extschema@.es_outbox_create_group(text, integer, interval, interval, boolean),
	@extschema@.es_outbox_drop_group(text)
	TO es_admin;

/*
 * ------------------------------------------------------------------------
 * Folding, snapshots and upcasting (issue 3).  Everything of this section,
 * including its privileges, is here; it runs after the sections above.
 * ------------------------------------------------------------------------
 */

/*
 * Upcasters: (event_type, from_version) -> the function that turns the data
 * of that version into the next one.  fn is the function's schema-qualified
 * signature as text (read it with fn::regprocedure), not a regprocedure:
 * pg_upgrade refuses reg* columns other than regclass/regrole/regtype, and
 * OIDs do not survive dump/restore.  Readers cache the registry per backend;
 * the statement trigger below tells every backend to reload it at commit.
 */
CREATE TABLE @extschema@.upcasters (
	event_type		text NOT NULL
		CHECK (pg_catalog.octet_length(event_type) OPERATOR(pg_catalog.>=) 1
			   AND pg_catalog.octet_length(event_type) OPERATOR(pg_catalog.<=) 1024),
	from_version	integer NOT NULL CHECK (from_version OPERATOR(pg_catalog.>=) 1),
	fn				text NOT NULL,
	created_at		timestamptz NOT NULL DEFAULT pg_catalog.now(),
	CONSTRAINT upcasters_pkey PRIMARY KEY (event_type, from_version)
);
COMMENT ON TABLE @extschema@.upcasters IS
	'es_ext upcasters: the function that raises the data of event_type from schema version from_version to the next, applied on every read';
COMMENT ON COLUMN @extschema@.upcasters.fn IS
	'schema-qualified signature of the upcaster function (cast it with ::regprocedure)';
SELECT pg_catalog.pg_extension_config_dump('@extschema@.upcasters', '');

CREATE FUNCTION @extschema@.es_upcasters_changed()
RETURNS trigger
AS 'MODULE_PATHNAME', 'es_upcasters_changed'
LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION @extschema@.es_upcasters_changed() IS
	'trigger: makes every backend reload its cached upcaster registry after a change to es.upcasters';
CREATE TRIGGER es_upcasters_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON @extschema@.upcasters
	FOR EACH STATEMENT EXECUTE FUNCTION @extschema@.es_upcasters_changed();

CREATE FUNCTION @extschema@.es_register_upcaster(event_type text, from_version integer, fn regprocedure)
RETURNS void
AS 'MODULE_PATHNAME', 'es_register_upcaster'
LANGUAGE C VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE;
COMMENT ON FUNCTION @extschema@.es_register_upcaster(text, integer, regprocedure) IS
	'registers (or replaces) the upcaster of an event type from a schema version to the next; fn is (data jsonb) or (data jsonb, event jsonb) returning jsonb';

CREATE FUNCTION @extschema@.es_unregister_upcaster(event_type text, from_version integer)
RETURNS boolean
AS 'MODULE_PATHNAME', 'es_unregister_upcaster'
LANGUAGE C VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE;
COMMENT ON FUNCTION @extschema@.es_unregister_upcaster(text, integer) IS
	'removes an upcaster; false when none was registered';

CREATE FUNCTION @extschema@.es_upcast(event @extschema@.events)
RETURNS @extschema@.events
AS 'MODULE_PATHNAME', 'es_upcast'
LANGUAGE C STABLE STRICT PARALLEL RESTRICTED;
COMMENT ON FUNCTION @extschema@.es_upcast(@extschema@.events) IS
	'an event row with its data upcast to the newest registered schema version (for rows read from es.events directly)';

/*
 * Snapshots: the folded state of (stream, reducer, initial state) at a
 * version, a cache that es_fold starts from.  reducer is the reducer's
 * schema-qualified signature; fingerprint hashes its definition and the
 * upcaster registry, initial_hash the initial state.  A snapshot is used
 * only when all of them match, so a changed reducer or registry, or another
 * initial state, never sees a stale one; deleting snapshots changes no
 * result.
 */
CREATE TABLE @extschema@.snapshots (
	stream_id		text NOT NULL,
	reducer			text NOT NULL,
	initial_hash	bytea NOT NULL,
	fingerprint		bytea NOT NULL,
	version			bigint NOT NULL CHECK (version OPERATOR(pg_catalog.>=) 1),
	state			jsonb NOT NULL,
	automatic		boolean NOT NULL DEFAULT false,
	created_at		timestamptz NOT NULL DEFAULT pg_catalog.now(),
	CONSTRAINT snapshots_pkey PRIMARY KEY (stream_id, reducer, initial_hash, fingerprint, version)
);
COMMENT ON TABLE @extschema@.snapshots IS
	'es_ext snapshots: folded states that es_fold starts from (a cache: deleting rows changes no result)';
COMMENT ON COLUMN @extschema@.snapshots.reducer IS 'schema-qualified signature of the reducer (cast it with ::regprocedure)';
COMMENT ON COLUMN @extschema@.snapshots.initial_hash IS 'SHA-256 of the initial state''s text';
COMMENT ON COLUMN @extschema@.snapshots.fingerprint IS 'SHA-256 of the reducer''s definition and of the upcaster registry';
COMMENT ON COLUMN @extschema@.snapshots.version IS 'stream version the state is at';
COMMENT ON COLUMN @extschema@.snapshots.automatic IS 'written by es_fold (replaced by newer automatic ones) rather than by es_snapshot_save';
SELECT pg_catalog.pg_extension_config_dump('@extschema@.snapshots', '');

CREATE TYPE @extschema@.fold_state AS (
	state				jsonb,
	version				bigint,
	snapshot_version	bigint,
	events_applied		bigint
);
COMMENT ON TYPE @extschema@.fold_state IS
	'result of es_fold_state: the state, the stream version it is at, the snapshot it started from (NULL: none) and the number of events applied';

/*
 * es_fold may write an automatic snapshot, hence VOLATILE (and PARALLEL
 * UNSAFE); it reads under the caller's snapshot all the same.
 */
CREATE FUNCTION @extschema@.es_fold(stream text,
									reducer regprocedure,
									initial jsonb,
									up_to_version bigint DEFAULT NULL,
									as_of timestamptz DEFAULT NULL)
RETURNS jsonb
AS 'MODULE_PATHNAME', 'es_fold'
LANGUAGE C VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE;
COMMENT ON FUNCTION @extschema@.es_fold(text, regprocedure, jsonb, bigint, timestamptz) IS
	'the state after folding the stream''s events (up to a version or a time) through reducer(state jsonb, event jsonb or es.events) returning jsonb';

CREATE FUNCTION @extschema@.es_fold_state(stream text,
										  reducer regprocedure,
										  initial jsonb,
										  up_to_version bigint DEFAULT NULL,
										  as_of timestamptz DEFAULT NULL)
RETURNS @extschema@.fold_state
AS 'MODULE_PATHNAME', 'es_fold_state'
LANGUAGE C VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE;
COMMENT ON FUNCTION @extschema@.es_fold_state(text, regprocedure, jsonb, bigint, timestamptz) IS
	'es_fold with the version the state is at, the snapshot it started from and the number of events applied';

CREATE FUNCTION @extschema@.es_snapshot_save(stream text,
											 reducer regprocedure,
											 initial jsonb,
											 version bigint DEFAULT NULL)
RETURNS bigint
AS 'MODULE_PATHNAME', 'es_snapshot_save'
LANGUAGE C VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE;
COMMENT ON FUNCTION @extschema@.es_snapshot_save(text, regprocedure, jsonb, bigint) IS
	'folds the stream up to version (default: its last) and stores the state as a snapshot; returns its version';

CREATE FUNCTION @extschema@.es_snapshot_delete(stream text, reducer regprocedure DEFAULT NULL)
RETURNS bigint
AS 'MODULE_PATHNAME', 'es_snapshot_delete'
LANGUAGE C VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE;
COMMENT ON FUNCTION @extschema@.es_snapshot_delete(text, regprocedure) IS
	'deletes the snapshots of a stream (NULL: every stream), of one reducer or of all; returns how many';

/*
 * The fold as an aggregate, for ad-hoc queries over many streams:
 *   es_fold_agg(reducer, initial, e ORDER BY e.version) ... GROUP BY e.stream_id
 * No snapshots; events are upcast.
 */
CREATE FUNCTION @extschema@.es_fold_agg_step(internal, regprocedure, jsonb, @extschema@.events)
RETURNS internal
AS 'MODULE_PATHNAME', 'es_fold_agg_step'
LANGUAGE C VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE;
COMMENT ON FUNCTION @extschema@.es_fold_agg_step(internal, regprocedure, jsonb, @extschema@.events) IS
	'transition function of es_fold_agg';

CREATE FUNCTION @extschema@.es_fold_agg_final(internal)
RETURNS jsonb
AS 'MODULE_PATHNAME', 'es_fold_agg_final'
LANGUAGE C VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE;
COMMENT ON FUNCTION @extschema@.es_fold_agg_final(internal) IS
	'final function of es_fold_agg';

CREATE AGGREGATE @extschema@.es_fold_agg(reducer regprocedure, initial jsonb, event @extschema@.events) (
	SFUNC = @extschema@.es_fold_agg_step,
	STYPE = internal,
	FINALFUNC = @extschema@.es_fold_agg_final,
	PARALLEL = UNSAFE
);
COMMENT ON AGGREGATE @extschema@.es_fold_agg(regprocedure, jsonb, @extschema@.events) IS
	'folds the aggregated events through a reducer (order them: es_fold_agg(r, initial, e ORDER BY e.version)); no snapshots';

/*
 * Privileges of this section.  Readers fold and read snapshots and the
 * upcaster registry; writers (who may append events anyway) also write
 * snapshots -- explicitly, or automatically through es_fold; only admins
 * change the upcaster registry, since it changes what every reader sees.
 */
REVOKE ALL ON TABLE @extschema@.upcasters, @extschema@.snapshots FROM PUBLIC;
REVOKE ALL ON FUNCTION
	@extschema@.es_upcasters_changed(),
	@extschema@.es_register_upcaster(text, integer, regprocedure),
	@extschema@.es_unregister_upcaster(text, integer),
	@extschema@.es_upcast(@extschema@.events),
	@extschema@.es_fold(text, regprocedure, jsonb, bigint, timestamptz),
	@extschema@.es_fold_state(text, regprocedure, jsonb, bigint, timestamptz),
	@extschema@.es_snapshot_save(text, regprocedure, jsonb, bigint),
	@extschema@.es_snapshot_delete(text, regprocedure),
	@extschema@.es_fold_agg_step(internal, regprocedure, jsonb, @extschema@.events),
	@extschema@.es_fold_agg_final(internal),
	@extschema@.es_fold_agg(regprocedure, jsonb, @extschema@.events)
	FROM PUBLIC;
REVOKE ALL ON TYPE @extschema@.fold_state FROM PUBLIC;

GRANT USAGE ON TYPE @extschema@.fold_state TO es_reader;
GRANT SELECT ON @extschema@.upcasters, @extschema@.snapshots TO es_reader;
GRANT EXECUTE ON FUNCTION
	@extschema@.es_upcast(@extschema@.events),
	@extschema@.es_fold(text, regprocedure, jsonb, bigint, timestamptz),
	@extschema@.es_fold_state(text, regprocedure, jsonb, bigint, timestamptz),
	@extschema@.es_fold_agg(regprocedure, jsonb, @extschema@.events)
	TO es_reader;

GRANT INSERT, UPDATE, DELETE ON @extschema@.snapshots TO es_writer;
GRANT EXECUTE ON FUNCTION
	@extschema@.es_snapshot_save(text, regprocedure, jsonb, bigint),
	@extschema@.es_snapshot_delete(text, regprocedure)
	TO es_writer;

GRANT INSERT, UPDATE, DELETE, TRUNCATE ON @extschema@.upcasters TO es_admin;
GRANT EXECUTE ON FUNCTION
	@extschema@.es_register_upcaster(text, integer, regprocedure),
	@extschema@.es_unregister_upcaster(text, integer)
	TO es_admin;
