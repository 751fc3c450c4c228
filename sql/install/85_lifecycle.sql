/*
 * ========================================================================
 * sql/install/85_lifecycle.sql — the data lifecycle (issue 15): archive,
 * erasure and retention (src/lifecycle.c, src/retention.c)
 * ========================================================================
 *
 * Every table here is guarded like es.events: only the functions below
 * write it.  The DDL can be re-run: the 0.1.0 -> 0.2.0 upgrade script holds
 * the same.
 */

/*
 * Archived events: es_archive_stream moves a stream's events here out of
 * es.events (so the log, category and query reads, and the indexes of the
 * hot table, no longer hold them); es_read_stream and es_fold still find
 * them; es_unarchive_stream moves them back with their original cursor.
 * Same columns, in the same order, as es.events (category is a plain column
 * here).  Only the primary key: the stream's events are read in version order.
 */
CREATE TABLE IF NOT EXISTS @extschema@.archived_events (
	global_position	bigint NOT NULL,
	stream_id		text NOT NULL,
	version			bigint NOT NULL,
	event_id		uuid NOT NULL,
	event_type		text NOT NULL,
	schema_version	integer NOT NULL,
	data			jsonb NOT NULL,
	metadata		jsonb,
	recorded_at		timestamptz NOT NULL,
	category		text NOT NULL,
	era				integer NOT NULL,
	tx_id			xid8 NOT NULL,
	tags			text[],
	hash			bytea,
	CONSTRAINT archived_events_pkey PRIMARY KEY (stream_id, version)
);
COMMENT ON TABLE @extschema@.archived_events IS
	'es_ext archived events: the events of archived streams, moved out of es.events by es_archive_stream (written only by es_archive_stream, es_unarchive_stream and es_erase_stream)';
CREATE OR REPLACE TRIGGER es_guard_write BEFORE INSERT OR UPDATE OR DELETE ON @extschema@.archived_events
	FOR EACH STATEMENT EXECUTE FUNCTION @extschema@.es_guard();
CREATE OR REPLACE TRIGGER es_guard_truncate BEFORE TRUNCATE ON @extschema@.archived_events
	FOR EACH STATEMENT EXECUTE FUNCTION @extschema@.es_guard();
SELECT pg_catalog.pg_extension_config_dump('@extschema@.archived_events', '');
REVOKE ALL ON TABLE @extschema@.archived_events FROM PUBLIC;
GRANT SELECT ON @extschema@.archived_events TO es_reader;
GRANT INSERT, DELETE ON @extschema@.archived_events TO es_admin;
GRANT DELETE ON @extschema@.archived_events TO es_eraser;

/*
 * Erasures: the audit of es_erase_stream, one row per erased stream.
 */
CREATE TABLE IF NOT EXISTS @extschema@.erasures (
	stream_id			text NOT NULL,
	erased_at			timestamptz NOT NULL,
	erased_by			name NOT NULL,
	erased_as			name NOT NULL,
	reason				text NOT NULL,
	first_version		bigint NOT NULL,
	last_version		bigint NOT NULL,
	events				bigint NOT NULL,
	head_hash			bytea,
	tombstone_position	bigint NOT NULL,
	CONSTRAINT erasures_pkey PRIMARY KEY (stream_id)
);
COMMENT ON TABLE @extschema@.erasures IS
	'es_ext erasure audit: who erased which stream, when, why, and what was removed (written only by es_erase_stream)';
COMMENT ON COLUMN @extschema@.erasures.erased_by IS 'session_user of the erasing session';
COMMENT ON COLUMN @extschema@.erasures.erased_as IS 'current_user of the erasure (the role holding es_eraser)';
COMMENT ON COLUMN @extschema@.erasures.first_version IS 'lowest version the stream still stored before the erasure';
COMMENT ON COLUMN @extschema@.erasures.last_version IS 'version of the stream''s head before the erasure (the tombstone is last_version + 1)';
COMMENT ON COLUMN @extschema@.erasures.events IS 'events removed (from es.events and es.archived_events)';
COMMENT ON COLUMN @extschema@.erasures.head_hash IS 'chain hash of the head before the erasure: the stream''s base_hash, from which the tombstone is chained';
CREATE OR REPLACE TRIGGER es_guard_write BEFORE INSERT OR UPDATE OR DELETE ON @extschema@.erasures
	FOR EACH STATEMENT EXECUTE FUNCTION @extschema@.es_guard();
CREATE OR REPLACE TRIGGER es_guard_truncate BEFORE TRUNCATE ON @extschema@.erasures
	FOR EACH STATEMENT EXECUTE FUNCTION @extschema@.es_guard();
SELECT pg_catalog.pg_extension_config_dump('@extschema@.erasures', '');
REVOKE ALL ON TABLE @extschema@.erasures FROM PUBLIC;
GRANT SELECT ON @extschema@.erasures TO es_admin, es_eraser;
GRANT INSERT ON @extschema@.erasures TO es_eraser;

/*
 * Retention policies: per category or per stream (a stream's own policy
 * wins over its category's), a maximum age and/or a maximum count of the
 * events a stream keeps.  Written only by es_set_retention.
 */
CREATE TABLE IF NOT EXISTS @extschema@.retention_policies (
	category	text,
	stream_id	text,
	max_age		interval,
	max_count	bigint,
	updated_at	timestamptz NOT NULL DEFAULT pg_catalog.now(),
	CONSTRAINT retention_policies_key UNIQUE NULLS NOT DISTINCT (category, stream_id),
	CONSTRAINT retention_policies_target_check
		CHECK (pg_catalog.num_nonnulls(category, stream_id) OPERATOR(pg_catalog.=) 1),
	CONSTRAINT retention_policies_limit_check
		CHECK (pg_catalog.num_nonnulls(max_age, max_count) OPERATOR(pg_catalog.>=) 1
			   AND max_age OPERATOR(pg_catalog.>) '0'::interval
			   AND max_count OPERATOR(pg_catalog.>=) 1)
);
COMMENT ON TABLE @extschema@.retention_policies IS
	'es_ext retention policies: the maximum age and/or count of the events of a category''s or a stream''s streams (written only by es_set_retention; applied by es_apply_retention)';
CREATE OR REPLACE TRIGGER es_guard_write BEFORE INSERT OR UPDATE OR DELETE ON @extschema@.retention_policies
	FOR EACH STATEMENT EXECUTE FUNCTION @extschema@.es_guard();
CREATE OR REPLACE TRIGGER es_guard_truncate BEFORE TRUNCATE ON @extschema@.retention_policies
	FOR EACH STATEMENT EXECUTE FUNCTION @extschema@.es_guard();
SELECT pg_catalog.pg_extension_config_dump('@extschema@.retention_policies', '');
REVOKE ALL ON TABLE @extschema@.retention_policies FROM PUBLIC;
GRANT SELECT ON @extschema@.retention_policies TO es_reader;
GRANT INSERT, UPDATE, DELETE ON @extschema@.retention_policies TO es_admin;
-- es_apply_retention deletes the events it removes (es_writer deletes snapshots)
GRANT DELETE ON @extschema@.events TO es_admin;
/*
 * es_erase_stream deletes from exactly these tables (es_eraser is an
 * es_writer, which deletes snapshots): the guards refuse any other DELETE
 */
GRANT DELETE ON @extschema@.events, @extschema@.outbox, @extschema@.outbox_deliveries,
	@extschema@.projection_dead_letters TO es_eraser;
GRANT SELECT, DELETE ON @extschema@.outbox_dead TO es_eraser;

/* the rows of these tables come back from a dump (src/dump.c) */
CREATE OR REPLACE TRIGGER es_restored AFTER INSERT ON @extschema@.archived_events
	FOR EACH STATEMENT EXECUTE FUNCTION @extschema@.es_restored();
CREATE OR REPLACE TRIGGER es_restored AFTER INSERT ON @extschema@.erasures
	FOR EACH STATEMENT EXECUTE FUNCTION @extschema@.es_restored();
CREATE OR REPLACE TRIGGER es_restored AFTER INSERT ON @extschema@.retention_policies
	FOR EACH STATEMENT EXECUTE FUNCTION @extschema@.es_restored();

/* Archive */
CREATE OR REPLACE FUNCTION @extschema@.es_archive_stream(stream text)
RETURNS bigint
AS 'MODULE_PATHNAME', 'es_archive_stream'
LANGUAGE C VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE;
COMMENT ON FUNCTION @extschema@.es_archive_stream(text) IS
	'archives a stream: it becomes read-only and its events move to es.archived_events, out of the log and category reads (es_read_stream and es_fold still read them); returns the number of events moved';
REVOKE ALL ON FUNCTION @extschema@.es_archive_stream(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@.es_archive_stream(text) TO es_admin;

CREATE OR REPLACE FUNCTION @extschema@.es_unarchive_stream(stream text)
RETURNS bigint
AS 'MODULE_PATHNAME', 'es_unarchive_stream'
LANGUAGE C VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE;
COMMENT ON FUNCTION @extschema@.es_unarchive_stream(text) IS
	'unarchives a stream: its events move back into es.events at their original log cursor (subscribers past it do not see them again) and it accepts appends again; returns the number of events moved';
REVOKE ALL ON FUNCTION @extschema@.es_unarchive_stream(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@.es_unarchive_stream(text) TO es_admin;

/* Erasure */
CREATE OR REPLACE FUNCTION @extschema@.es_erase_stream(stream text, reason text)
RETURNS @extschema@.erasures
AS 'MODULE_PATHNAME', 'es_erase_stream'
LANGUAGE C VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE;
COMMENT ON FUNCTION @extschema@.es_erase_stream(text, text) IS
	'erases a stream (the right to be forgotten): removes its events and every copy es_ext keeps, appends the tombstone es.stream_erased, records the erasure in es.erasures; the stream can never be appended to again';
REVOKE ALL ON FUNCTION @extschema@.es_erase_stream(text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@.es_erase_stream(text, text) TO es_eraser;

/* Retention */
CREATE OR REPLACE FUNCTION @extschema@.es_set_retention(category text, stream text,
														max_age interval, max_count bigint)
RETURNS void
AS 'MODULE_PATHNAME', 'es_set_retention'
LANGUAGE C VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE;
COMMENT ON FUNCTION @extschema@.es_set_retention(text, text, interval, bigint) IS
	'sets the retention policy of a category or of a stream (exactly one of them): the maximum age and/or count of its events; both NULL removes the policy';
REVOKE ALL ON FUNCTION @extschema@.es_set_retention(text, text, interval, bigint) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@.es_set_retention(text, text, interval, bigint) TO es_admin;

CREATE OR REPLACE FUNCTION @extschema@.es_apply_retention(batch_size integer DEFAULT 1000,
														  OUT streams bigint, OUT events bigint,
														  OUT snapshots bigint, OUT more boolean)
RETURNS record
AS 'MODULE_PATHNAME', 'es_apply_retention'
LANGUAGE C VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE;
COMMENT ON FUNCTION @extschema@.es_apply_retention(integer) IS
	'applies the retention policies: removes at most batch_size of the oldest events beyond the policies (never a stream''s last event), raising first_version; more: call again';
REVOKE ALL ON FUNCTION @extschema@.es_apply_retention(integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@.es_apply_retention(integer) TO es_admin;
