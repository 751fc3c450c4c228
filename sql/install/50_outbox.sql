
/*
 * ========================================================================
 * sql/install/50_outbox.sql — the transactional outbox, consumer groups
 * and their wake-ups
 * ========================================================================
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
 *
 * Privileges: es_admin configures routes and groups; consumers (es_consumer,
 * and es_admin) claim, ack, nack, replay and clean up; writers write the
 * outbox only through es_append (the guard refuses the rest).
 */

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
REVOKE ALL ON TABLE @extschema@.outbox_routes FROM PUBLIC;
GRANT SELECT ON @extschema@.outbox_routes TO es_reader;
GRANT INSERT, UPDATE, DELETE, TRUNCATE ON @extschema@.outbox_routes TO es_admin;

CREATE FUNCTION @extschema@.es_outbox_routes_changed()
RETURNS trigger
AS 'MODULE_PATHNAME', 'es_outbox_routes_changed'
LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION @extschema@.es_outbox_routes_changed() IS
	'trigger: makes every backend reload its cached outbox routes after a change to es.outbox_routes';
REVOKE ALL ON FUNCTION @extschema@.es_outbox_routes_changed() FROM PUBLIC;
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
REVOKE ALL ON TABLE @extschema@.outbox_groups FROM PUBLIC;
REVOKE ALL ON SEQUENCE @extschema@.outbox_groups_group_id_seq FROM PUBLIC;
GRANT SELECT ON @extschema@.outbox_groups TO es_reader;
GRANT INSERT, UPDATE, DELETE, TRUNCATE ON @extschema@.outbox_groups TO es_admin;

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
REVOKE ALL ON TABLE @extschema@.outbox FROM PUBLIC;
REVOKE ALL ON SEQUENCE @extschema@.outbox_position_seq FROM PUBLIC;
GRANT SELECT ON @extschema@.outbox TO es_reader;
GRANT INSERT ON @extschema@.outbox TO es_writer;
GRANT DELETE ON @extschema@.outbox TO es_consumer, es_admin;

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
REVOKE ALL ON TABLE @extschema@.outbox_deliveries FROM PUBLIC;
GRANT INSERT ON @extschema@.outbox_deliveries TO es_writer;
GRANT SELECT, INSERT, UPDATE, DELETE ON @extschema@.outbox_deliveries TO es_consumer, es_admin;

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
REVOKE ALL ON TABLE @extschema@.outbox_dead FROM PUBLIC;
GRANT SELECT, INSERT, UPDATE, DELETE ON @extschema@.outbox_dead TO es_consumer, es_admin;

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
REVOKE ALL ON TABLE @extschema@.outbox_dead_letters FROM PUBLIC;
GRANT SELECT ON @extschema@.outbox_dead_letters TO es_consumer, es_admin;

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
REVOKE ALL ON TABLE @extschema@.outbox_status FROM PUBLIC;
GRANT SELECT ON @extschema@.outbox_status TO es_consumer, es_admin;

/* Wake-ups (src/notify.c) */
CREATE FUNCTION @extschema@.es_outbox_notify()
RETURNS void
AS 'MODULE_PATHNAME', 'es_outbox_notify'
LANGUAGE C VOLATILE STRICT PARALLEL UNSAFE;
COMMENT ON FUNCTION @extschema@.es_outbox_notify() IS
	'asks for a wake-up of the outbox consumers when this transaction commits (as es_append does), per es.notify';
REVOKE ALL ON FUNCTION @extschema@.es_outbox_notify() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@.es_outbox_notify() TO es_consumer, es_admin;

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
REVOKE ALL ON FUNCTION @extschema@.es_outbox_notify_status() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@.es_outbox_notify_status() TO es_reader;

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
REVOKE ALL ON FUNCTION @extschema@.es_outbox_route(text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@.es_outbox_route(text, text) TO es_admin;

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
REVOKE ALL ON FUNCTION @extschema@.es_outbox_unroute(text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@.es_outbox_unroute(text, text) TO es_admin;

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
REVOKE ALL ON FUNCTION @extschema@.es_outbox_create_group(text, integer, interval, interval, boolean) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@.es_outbox_create_group(text, integer, interval, interval, boolean) TO es_admin;

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
REVOKE ALL ON FUNCTION @extschema@.es_outbox_drop_group(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@.es_outbox_drop_group(text) TO es_admin;

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
REVOKE ALL ON FUNCTION @extschema@.es_outbox_claim(text, integer, interval) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@.es_outbox_claim(text, integer, interval) TO es_consumer, es_admin;

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
REVOKE ALL ON FUNCTION @extschema@.es_outbox_ack(text, uuid, bigint[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@.es_outbox_ack(text, uuid, bigint[]) TO es_consumer, es_admin;

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
REVOKE ALL ON FUNCTION @extschema@.es_outbox_nack(text, uuid, bigint[], text, interval) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@.es_outbox_nack(text, uuid, bigint[], text, interval) TO es_consumer, es_admin;

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
REVOKE ALL ON FUNCTION @extschema@.es_outbox_replay(text, bigint[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@.es_outbox_replay(text, bigint[]) TO es_consumer, es_admin;

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
REVOKE ALL ON FUNCTION @extschema@.es_outbox_discard(text, bigint[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@.es_outbox_discard(text, bigint[]) TO es_consumer, es_admin;

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
REVOKE ALL ON FUNCTION @extschema@.es_outbox_cleanup(interval, integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@.es_outbox_cleanup(interval, integer) TO es_consumer, es_admin;
