
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
 * outbox only through es_append.  The functions run as their caller, so the
 * roles keep the table privileges that the functions' statements need; the
 * guard triggers (es_guard, src/guard.c) refuse every write to the outbox
 * tables that does not come from es_append or an es_outbox_* function
 * (src/outbox.c, src/outbox_api.c): INSERT, UPDATE, DELETE, TRUNCATE, COPY
 * and MERGE, whoever runs them, except the COPY of a restore by the owner.
 *
 * Locking (src/outbox_api.c): es.outbox orders the appends and the cleanup
 * (ROW EXCLUSIVE) against the creation and removal of groups (SHARE); each
 * of them reads the groups and deliveries with a snapshot taken after that
 * lock, at every isolation level.
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
GRANT INSERT, DELETE ON @extschema@.outbox_routes TO es_admin;

CREATE FUNCTION @extschema@.es_outbox_routes_changed()
RETURNS trigger
AS 'MODULE_PATHNAME', 'es_outbox_routes_changed'
LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION @extschema@.es_outbox_routes_changed() IS
	'trigger: makes every backend reload its cached outbox routes after a change to es.outbox_routes';
REVOKE ALL ON FUNCTION @extschema@.es_outbox_routes_changed() FROM PUBLIC;
CREATE TRIGGER es_outbox_routes_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON @extschema@.outbox_routes
	FOR EACH STATEMENT EXECUTE FUNCTION @extschema@.es_outbox_routes_changed();
CREATE TRIGGER es_guard_write BEFORE INSERT OR UPDATE OR DELETE ON @extschema@.outbox_routes
	FOR EACH STATEMENT EXECUTE FUNCTION @extschema@.es_guard();
CREATE TRIGGER es_guard_truncate BEFORE TRUNCATE ON @extschema@.outbox_routes
	FOR EACH STATEMENT EXECUTE FUNCTION @extschema@.es_guard();

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
GRANT INSERT, DELETE ON @extschema@.outbox_groups TO es_admin;
CREATE TRIGGER es_guard_write BEFORE INSERT OR UPDATE OR DELETE ON @extschema@.outbox_groups
	FOR EACH STATEMENT EXECUTE FUNCTION @extschema@.es_guard();
CREATE TRIGGER es_guard_truncate BEFORE TRUNCATE ON @extschema@.outbox_groups
	FOR EACH STATEMENT EXECUTE FUNCTION @extschema@.es_guard();

/*
 * The outbox: one row per routed event.  The columns id, aggregatetype,
 * aggregateid, type and payload are those of Debezium's outbox event router
 * (the message id, the topic suffix, the message key -- the stream, so a
 * stream keeps its order within a Kafka partition -- the event type and the
 * message value).  Written only by es_append; es_outbox_cleanup deletes
 * delivered rows (the guard refuses every other write).
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

CREATE TRIGGER es_guard_write BEFORE INSERT OR UPDATE OR DELETE ON @extschema@.outbox
	FOR EACH STATEMENT EXECUTE FUNCTION @extschema@.es_guard();
CREATE TRIGGER es_guard_truncate BEFORE TRUNCATE ON @extschema@.outbox
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
-- es_wait_for_group (src/wait.c) runs as its caller, a reader: which messages are undelivered
GRANT SELECT (group_id, position) ON @extschema@.outbox_deliveries TO es_reader;
CREATE TRIGGER es_guard_write BEFORE INSERT OR UPDATE OR DELETE ON @extschema@.outbox_deliveries
	FOR EACH STATEMENT EXECUTE FUNCTION @extschema@.es_guard();
CREATE TRIGGER es_guard_truncate BEFORE TRUNCATE ON @extschema@.outbox_deliveries
	FOR EACH STATEMENT EXECUTE FUNCTION @extschema@.es_guard();

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
GRANT SELECT, INSERT, DELETE ON @extschema@.outbox_dead TO es_consumer, es_admin;
CREATE TRIGGER es_guard_write BEFORE INSERT OR UPDATE OR DELETE ON @extschema@.outbox_dead
	FOR EACH STATEMENT EXECUTE FUNCTION @extschema@.es_guard();
CREATE TRIGGER es_guard_truncate BEFORE TRUNCATE ON @extschema@.outbox_dead
	FOR EACH STATEMENT EXECUTE FUNCTION @extschema@.es_guard();

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
/*
 * security_invoker: the tables' row level security (es_enable_tenancy) runs
 * as the reader, not as this view's owner (who bypasses it): otherwise every
 * tenant's rows would show through the view (test tenancy_views)
 */
ALTER VIEW @extschema@.outbox_dead_letters SET (security_invoker = true);

CREATE VIEW @extschema@.outbox_status AS
	SELECT g.name AS consumer_group,
		   s.undelivered,
		   s.in_flight,
		   s.retrying,
		   (SELECT pg_catalog.count(*) FROM @extschema@.outbox_dead AS z
			 WHERE z.group_id OPERATOR(pg_catalog.=) g.group_id) AS dead,
		   f.created_at AS oldest_undelivered_at,
		   pg_catalog.now() OPERATOR(pg_catalog.-) f.created_at AS oldest_undelivered_age,
		   c.outbox_claimed AS claimed_since_reset,
		   c.outbox_acked AS delivered_since_reset,
		   c.outbox_acked::pg_catalog.float8 OPERATOR(pg_catalog./)
		   NULLIF(pg_catalog.date_part('epoch', pg_catalog.now() OPERATOR(pg_catalog.-) c.stats_reset), 0)
		   AS delivered_per_second,
		   c.stats_reset
	  FROM @extschema@.outbox_groups AS g
	 CROSS JOIN LATERAL (
		SELECT pg_catalog.count(*) AS undelivered,
			   pg_catalog.count(*) FILTER (WHERE d.lease IS NOT NULL
										   AND d.visible_at OPERATOR(pg_catalog.>) pg_catalog.now()) AS in_flight,
			   pg_catalog.count(*) FILTER (WHERE d.lease IS NULL
										   AND d.attempts OPERATOR(pg_catalog.>) 0) AS retrying
		  FROM @extschema@.outbox_deliveries AS d
		 WHERE d.group_id OPERATOR(pg_catalog.=) g.group_id) AS s
	  LEFT JOIN LATERAL (
		SELECT o.created_at
		  FROM @extschema@.outbox_deliveries AS d
		  JOIN @extschema@.outbox AS o ON o.position OPERATOR(pg_catalog.=) d.position
		 WHERE d.group_id OPERATOR(pg_catalog.=) g.group_id
		 ORDER BY d.position LIMIT 1) AS f ON true
	  LEFT JOIN @extschema@.es_stats_counters('group') AS c ON c.name OPERATOR(pg_catalog.=) g.name;
COMMENT ON VIEW @extschema@.outbox_status IS
	'per consumer group: undelivered messages, those claimed now, those waiting for a retry, dead letters, age of the oldest, throughput since the statistics were reset';
REVOKE ALL ON TABLE @extschema@.outbox_status FROM PUBLIC;
GRANT SELECT ON @extschema@.outbox_status TO es_consumer, es_admin, pg_monitor;

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
AS 'MODULE_PATHNAME', 'es_outbox_route'
LANGUAGE C VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION @extschema@.es_outbox_route(text, text) IS
	'routes the events of a category and/or an event type (NULL: any) into the outbox; false when the route existed';
REVOKE ALL ON FUNCTION @extschema@.es_outbox_route(text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@.es_outbox_route(text, text) TO es_admin;

CREATE FUNCTION @extschema@.es_outbox_unroute(category text DEFAULT NULL, event_type text DEFAULT NULL)
RETURNS boolean
AS 'MODULE_PATHNAME', 'es_outbox_unroute'
LANGUAGE C VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION @extschema@.es_outbox_unroute(text, text) IS
	'removes an outbox route; false when there was none';
REVOKE ALL ON FUNCTION @extschema@.es_outbox_unroute(text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@.es_outbox_unroute(text, text) TO es_admin;

/*
 * Groups (src/outbox_api.c).  Creating and dropping a group take SHARE on
 * es.outbox, which waits for the appends and cleanups writing it and holds
 * new ones back, and write with a snapshot taken after that lock; an
 * append reads the groups the same way under its ROW EXCLUSIVE lock.  So
 * every message committed after es_outbox_create_group returned reaches
 * the group, and, with backfill, every message committed before it
 * returned is in the backfill, whatever the isolation level of either
 * transaction.
 */
CREATE FUNCTION @extschema@.es_outbox_create_group(consumer_group text,
												   max_attempts integer DEFAULT 10,
												   backoff_base interval DEFAULT '1 second',
												   backoff_max interval DEFAULT '5 minutes',
												   backfill boolean DEFAULT false)
RETURNS integer
AS 'MODULE_PATHNAME', 'es_outbox_create_group'
LANGUAGE C VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION @extschema@.es_outbox_create_group(text, integer, interval, interval, boolean) IS
	'creates a consumer group; it receives every outbox message appended from now on (backfill: also those already in the outbox); returns its id';
REVOKE ALL ON FUNCTION @extschema@.es_outbox_create_group(text, integer, interval, interval, boolean) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@.es_outbox_create_group(text, integer, interval, interval, boolean) TO es_admin;

CREATE FUNCTION @extschema@.es_outbox_alter_group(consumer_group text,
												  max_attempts integer DEFAULT NULL,
												  backoff_base interval DEFAULT NULL,
												  backoff_max interval DEFAULT NULL)
RETURNS void
AS 'MODULE_PATHNAME', 'es_outbox_alter_group'
LANGUAGE C VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION @extschema@.es_outbox_alter_group(text, integer, interval, interval) IS
	'changes the retry settings of a consumer group (NULL: unchanged)';
REVOKE ALL ON FUNCTION @extschema@.es_outbox_alter_group(text, integer, interval, interval) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@.es_outbox_alter_group(text, integer, interval, interval) TO es_admin;

CREATE FUNCTION @extschema@.es_outbox_drop_group(consumer_group text)
RETURNS bigint
AS 'MODULE_PATHNAME', 'es_outbox_drop_group'
LANGUAGE C VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp;
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
 * (src/outbox_api.c: one saved plan per step.)
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
AS 'MODULE_PATHNAME', 'es_outbox_claim'
LANGUAGE C VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE ROWS 100
SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION @extschema@.es_outbox_claim(text, integer, interval) IS
	'leases up to max_count undelivered messages of a consumer group for lease_time, in order per stream; returns them with their lease';
REVOKE ALL ON FUNCTION @extschema@.es_outbox_claim(text, integer, interval) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@.es_outbox_claim(text, integer, interval) TO es_consumer, es_admin;

CREATE FUNCTION @extschema@.es_outbox_ack(consumer_group text, lease uuid, positions bigint[])
RETURNS bigint
AS 'MODULE_PATHNAME', 'es_outbox_ack'
LANGUAGE C VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp;
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
AS 'MODULE_PATHNAME', 'es_outbox_nack'
LANGUAGE C VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION @extschema@.es_outbox_nack(text, uuid, bigint[], text, interval) IS
	'gives claimed messages back: retried after retry_after or the group''s backoff, or moved to the dead letters after max_attempts; returns how many still held that lease';
REVOKE ALL ON FUNCTION @extschema@.es_outbox_nack(text, uuid, bigint[], text, interval) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@.es_outbox_nack(text, uuid, bigint[], text, interval) TO es_consumer, es_admin;

CREATE FUNCTION @extschema@.es_outbox_replay(consumer_group text, positions bigint[] DEFAULT NULL)
RETURNS bigint
AS 'MODULE_PATHNAME', 'es_outbox_replay'
LANGUAGE C VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION @extschema@.es_outbox_replay(text, bigint[]) IS
	'puts dead letters of a group (all, or those at the given positions) back to delivery with fresh attempts; returns how many';
REVOKE ALL ON FUNCTION @extschema@.es_outbox_replay(text, bigint[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@.es_outbox_replay(text, bigint[]) TO es_consumer, es_admin;

CREATE FUNCTION @extschema@.es_outbox_discard(consumer_group text, positions bigint[] DEFAULT NULL)
RETURNS bigint
AS 'MODULE_PATHNAME', 'es_outbox_discard'
LANGUAGE C VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION @extschema@.es_outbox_discard(text, bigint[]) IS
	'deletes dead letters of a group (all, or those at the given positions); returns how many';
REVOKE ALL ON FUNCTION @extschema@.es_outbox_discard(text, bigint[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@.es_outbox_discard(text, bigint[]) TO es_consumer, es_admin;

/*
 * es_outbox_cleanup: delete outbox rows that every group has delivered,
 * older than retention, except those a dead letter refers to.  A row is
 * delivered to every group when its position is below each group's oldest
 * undelivered one.  The bound and the delete are one statement (one
 * snapshot: an outbox row and its deliveries become visible in the same
 * commit, so a row that commits late is not seen, and not deleted), run
 * under ROW EXCLUSIVE on es.outbox with a snapshot taken after it (a group
 * being created with backfill is waited for and seen, at every isolation
 * level).  The reasoning is in the header of es_outbox_cleanup in
 * src/outbox_api.c.
 */
CREATE FUNCTION @extschema@.es_outbox_cleanup(retention interval DEFAULT '0', max_rows integer DEFAULT 10000)
RETURNS bigint
AS 'MODULE_PATHNAME', 'es_outbox_cleanup'
LANGUAGE C VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION @extschema@.es_outbox_cleanup(interval, integer) IS
	'deletes up to max_rows outbox rows older than retention that every consumer group has delivered (dead letters keep theirs); returns how many';
REVOKE ALL ON FUNCTION @extschema@.es_outbox_cleanup(interval, integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@.es_outbox_cleanup(interval, integer) TO es_consumer, es_admin;
