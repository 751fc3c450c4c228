
/*
 * ========================================================================
 * sql/install/20_core.sql — the write model: log configuration, streams,
 * events, their composite types, the guard triggers and es_append
 * ========================================================================
 *
 * Privileges: nothing for PUBLIC.  The functions run as the caller (no
 * SECURITY DEFINER), so writers hold INSERT/UPDATE on the tables; the guard
 * triggers refuse any write that does not come from es_append.  Every object
 * has REVOKE ALL ... FROM PUBLIC and its grants beside it.
 */
REVOKE ALL ON SCHEMA @extschema@ FROM PUBLIC;
GRANT USAGE ON SCHEMA @extschema@ TO es_reader, pg_monitor;

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
REVOKE ALL ON FUNCTION @extschema@.es_guard() FROM PUBLIC;

/*
 * Log configuration: at most one row, written by the first append (not by
 * CREATE EXTENSION, so that a dump's row restores without a conflict).
 * "era" is the leading part of the global log cursor.  Transaction ids
 * restart when the events are restored into another cluster (logical
 * dump/restore, pg_upgrade), so the first append in a cluster whose system
 * identifier differs from the stored one advances the era: the restored
 * history then sorts before everything appended afterwards (src/era.c).
 */
CREATE TABLE @extschema@.config (
	singleton			boolean PRIMARY KEY DEFAULT true CHECK (singleton),
	era					integer NOT NULL DEFAULT 0 CHECK (era >= 0),
	system_identifier	bigint NOT NULL
);
COMMENT ON TABLE @extschema@.config IS
	'es_ext log configuration (at most one row, written by the first append): current era of the global log and the system identifier it belongs to';
CREATE TRIGGER es_guard_write BEFORE INSERT OR UPDATE OR DELETE ON @extschema@.config
	FOR EACH STATEMENT EXECUTE FUNCTION @extschema@.es_guard();
CREATE TRIGGER es_guard_truncate BEFORE TRUNCATE ON @extschema@.config
	FOR EACH STATEMENT EXECUTE FUNCTION @extschema@.es_guard();
SELECT pg_catalog.pg_extension_config_dump('@extschema@.config', '');
REVOKE ALL ON TABLE @extschema@.config FROM PUBLIC;
GRANT SELECT ON @extschema@.config TO es_reader;
GRANT INSERT, UPDATE ON @extschema@.config TO es_writer;

/*
 * Streams: one row per stream, holding its current version.  Appends lock and
 * advance this row; the low fillfactor keeps that update HOT.  No CHECK
 * constraint: es_append alone writes the row (version >= 0), and the
 * executor would parse the constraint again at every append.
 */
CREATE TABLE @extschema@.streams (
	stream_id	text NOT NULL,
	version		bigint NOT NULL,
	category	text NOT NULL GENERATED ALWAYS AS (pg_catalog.split_part(stream_id, '-', 1)) STORED,
	created_at	timestamptz NOT NULL DEFAULT pg_catalog.now(),
	updated_at	timestamptz NOT NULL DEFAULT pg_catalog.now(),
	log_tx_id	xid8 NOT NULL,
	metadata	jsonb,
	first_version	bigint NOT NULL DEFAULT 1,
	base_hash	bytea,
	archived_at	timestamptz,
	erased_at	timestamptz,
	outbox_node	integer,
	CONSTRAINT streams_pkey PRIMARY KEY (stream_id)
) WITH (fillfactor = 50);
CREATE INDEX streams_category_idx ON @extschema@.streams (category, stream_id);
COMMENT ON TABLE @extschema@.streams IS
	'es_ext streams: current version of every stream (written only by es_append)';
COMMENT ON COLUMN @extschema@.streams.log_tx_id IS 'tx_id of the stream''s last append; the next append orders its events at or after it';
COMMENT ON COLUMN @extschema@.streams.first_version IS 'lowest version of the stream still stored (raised by retention and erasure)';
COMMENT ON COLUMN @extschema@.streams.base_hash IS 'chain hash of version first_version - 1 (NULL: the chain starts from 32 zero bytes)';
COMMENT ON COLUMN @extschema@.streams.archived_at IS 'when the stream was archived (read-only, out of the default log reads); NULL when it is not';
COMMENT ON COLUMN @extschema@.streams.outbox_node IS 'on a distributed event store: the Citus group of the node whose outbox holds the stream''s latest messages (see es.distribute()); NULL otherwise';
COMMENT ON COLUMN @extschema@.streams.erased_at IS 'when the stream was erased (only its tombstone is left; it cannot be recreated); NULL when it was not';
CREATE TRIGGER es_guard_write BEFORE INSERT OR UPDATE OR DELETE ON @extschema@.streams
	FOR EACH STATEMENT EXECUTE FUNCTION @extschema@.es_guard();
CREATE TRIGGER es_guard_truncate BEFORE TRUNCATE ON @extschema@.streams
	FOR EACH STATEMENT EXECUTE FUNCTION @extschema@.es_guard();
SELECT pg_catalog.pg_extension_config_dump('@extschema@.streams', '');
REVOKE ALL ON TABLE @extschema@.streams FROM PUBLIC;
GRANT SELECT ON @extschema@.streams TO es_reader;
GRANT INSERT, UPDATE ON @extschema@.streams TO es_writer;

/*
 * Events: the immutable log.  global_position comes from an identity
 * sequence; the global read orders by (era, tx_id, global_position) and never
 * by position alone (a position is taken at insert but becomes visible at
 * commit).  No unique index on global_position alone: every unique key
 * includes stream_id, so the table can be distributed by stream.
 *
 * Every index costs each append a btree insert and its WAL, so es.events has
 * only the ones its guarantees need: the stream (primary key), the event id
 * (idempotent retries; not unique: es_append checks a batch's given ids
 * against its stream under the stream row lock, and the ids it generates are
 * time-ordered, so their inserts go to the rightmost leaf), the global log,
 * and the log of each category and of each event type.  Lookups by
 * correlation or causation id are served by optional indexes that a
 * deployment creates when it needs them (README, "Correlation and causation").
 * No CHECK constraint either: the executor parses each one again for every
 * statement, and es_append, the only writer, sets version (>= 1, from the
 * stream row) and schema_version (>= 1, checked in batch.c) itself.
 */
CREATE TABLE @extschema@.events (
	global_position	bigint GENERATED ALWAYS AS IDENTITY,
	stream_id		text NOT NULL,
	version			bigint NOT NULL,
	event_id		uuid NOT NULL,
	event_type		text NOT NULL,
	schema_version	integer NOT NULL DEFAULT 1,
	data			jsonb NOT NULL,
	metadata		jsonb,
	recorded_at		timestamptz NOT NULL,
	category		text NOT NULL GENERATED ALWAYS AS (pg_catalog.split_part(stream_id, '-', 1)) STORED,
	era				integer NOT NULL,
	tx_id			xid8 NOT NULL,
	tags			text[],
	hash			bytea,
	CONSTRAINT events_pkey PRIMARY KEY (stream_id, version)
);
CREATE INDEX events_event_id_idx ON @extschema@.events (event_id);
CREATE INDEX events_log_idx ON @extschema@.events (era, tx_id, global_position);
CREATE INDEX events_category_log_idx ON @extschema@.events (category, era, tx_id, global_position);
CREATE INDEX events_type_log_idx ON @extschema@.events (event_type, era, tx_id, global_position);
/*
 * Tags (issue 17): queries by tag (es_read_query, append conditions) use a
 * GIN index of the tagged events only; fastupdate is off, so a query never
 * scans a pending list and an untagged append pays nothing.
 */
CREATE INDEX events_tags_idx ON @extschema@.events USING gin (tags) WITH (fastupdate = off)
	WHERE tags IS NOT NULL;

COMMENT ON TABLE @extschema@.events IS
	'es_ext event log (append-only: written only by es_append)';
COMMENT ON COLUMN @extschema@.events.global_position IS 'position in the log, unique, gaps possible; never order the log by it alone';
COMMENT ON COLUMN @extschema@.events.version IS 'version of the event in its stream, 1-based and contiguous';
COMMENT ON COLUMN @extschema@.events.event_id IS 'event id given by the caller (idempotency key, unique within the stream) or generated (UUID version 7)';
COMMENT ON COLUMN @extschema@.events.schema_version IS 'version of the shape of data for this event type, as given by the writer (default 1); upcasters raise old versions on read';
COMMENT ON COLUMN @extschema@.events.recorded_at IS 'server time of the append, non-decreasing within a stream';
COMMENT ON COLUMN @extschema@.events.category IS 'stream category: the stream id up to its first "-"';
COMMENT ON COLUMN @extschema@.events.era IS 'leading part of the global log cursor; advanced after a restore into another cluster';
COMMENT ON COLUMN @extschema@.events.tags IS 'tags of the event (es_read_query, conditional appends), in the order given; NULL when it has none';
COMMENT ON COLUMN @extschema@.events.hash IS 'SHA-256 chaining the event to its predecessor in the stream (see es_verify)';
COMMENT ON COLUMN @extschema@.events.tx_id IS 'orders the global log: the top-level transaction id of the append, raised to the stream''s previous tx_id when that is newer';
CREATE TRIGGER es_guard_write BEFORE INSERT OR UPDATE OR DELETE ON @extschema@.events
	FOR EACH STATEMENT EXECUTE FUNCTION @extschema@.es_guard();
CREATE TRIGGER es_guard_truncate BEFORE TRUNCATE ON @extschema@.events
	FOR EACH STATEMENT EXECUTE FUNCTION @extschema@.es_guard();
SELECT pg_catalog.pg_extension_config_dump('@extschema@.events', '');
REVOKE ALL ON TABLE @extschema@.events FROM PUBLIC;
REVOKE ALL ON SEQUENCE @extschema@.events_global_position_seq FROM PUBLIC;
GRANT SELECT ON @extschema@.events TO es_reader;
GRANT INSERT ON @extschema@.events TO es_writer;
-- es_admin creates projections: AFTER INSERT triggers on es.events (40_projection.sql)
GRANT TRIGGER ON @extschema@.events TO es_admin;

/* Composite types */
CREATE TYPE @extschema@.log_cursor AS (
	era				integer,
	tx_id			xid8,
	global_position	bigint
);
COMMENT ON TYPE @extschema@.log_cursor IS
	'position in the global log: (era, tx_id, global_position); compare as a row';

CREATE TYPE @extschema@.append_result AS (
	version		bigint,
	positions	bigint[],
	token		@extschema@.log_cursor
);
COMMENT ON TYPE @extschema@.append_result IS
	'result of es_append: the stream version after the append, the global positions of the batch, in batch order, and the consistency token for es_wait_for';
COMMENT ON COLUMN @extschema@.append_result.token IS
	'the log cursor of the batch''s last event (of the stored events for an idempotent replay): a checkpoint at or past it has applied the append';

REVOKE ALL ON TYPE @extschema@.append_result, @extschema@.log_cursor FROM PUBLIC;
GRANT USAGE ON TYPE @extschema@.append_result, @extschema@.log_cursor TO es_reader;

/* Write model */
CREATE FUNCTION @extschema@.es_append(stream text, expected_version bigint, events jsonb)
RETURNS @extschema@.append_result
AS 'MODULE_PATHNAME', 'es_append_v2'
LANGUAGE C VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE;
COMMENT ON FUNCTION @extschema@.es_append(text, bigint, jsonb) IS
	'appends a batch of events to a stream atomically; expected_version: NULL any, -1 stream exists, 0 no stream, N exact';
REVOKE ALL ON FUNCTION @extschema@.es_append(text, bigint, jsonb) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@.es_append(text, bigint, jsonb) TO es_writer;

CREATE FUNCTION @extschema@.es_append(stream text, expected_version bigint, events jsonb,
									  fail_if_events_match jsonb,
									  after @extschema@.log_cursor DEFAULT NULL)
RETURNS @extschema@.append_result
AS 'MODULE_PATHNAME', 'es_append_v2'
LANGUAGE C VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE;
COMMENT ON FUNCTION @extschema@.es_append(text, bigint, jsonb, jsonb, @extschema@.log_cursor) IS
	'conditional append: es_append, failing with SQLSTATE 40001 (constraint es_append_condition) when another transaction committed an event matching the query fail_if_events_match after the cursor (NULL: at all)';
REVOKE ALL ON FUNCTION @extschema@.es_append(text, bigint, jsonb, jsonb, @extschema@.log_cursor) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@.es_append(text, bigint, jsonb, jsonb, @extschema@.log_cursor) TO es_writer;
