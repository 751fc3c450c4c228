
/*
 * ========================================================================
 * sql/install/35_checkpoint.sql — checkpoints of global-log subscribers
 * and how far each one lags (src/checkpoint.c)
 * ========================================================================
 *
 * A subscriber of es_read_all keeps its cursor on the server under a name:
 * es_checkpoint_save writes it in the caller's transaction (atomically with
 * the subscriber's read model), es_checkpoint reads it back, and the view
 * es.subscriptions shows each one's lag.  Privileges: readers see the
 * checkpoints; consumers (and admins) save and drop them, each only its own
 * role's (admins any).  The DDL can be re-run: the 0.1.0 -> 0.2.0 upgrade
 * script holds the same.
 */
CREATE TABLE IF NOT EXISTS @extschema@.checkpoints (
	name		text NOT NULL CHECK (pg_catalog.octet_length(name) OPERATOR(pg_catalog.>=) 1
									 AND pg_catalog.octet_length(name) OPERATOR(pg_catalog.<=) 63),
	cursor		@extschema@.log_cursor,
	owner		regrole NOT NULL,
	created_at	timestamptz NOT NULL,
	saved_at	timestamptz NOT NULL,
	CONSTRAINT checkpoints_pkey PRIMARY KEY (name)
);
COMMENT ON TABLE @extschema@.checkpoints IS
	'es_ext checkpoints: the global log cursor of each named subscriber (written only by es_checkpoint_save and es_checkpoint_drop)';
COMMENT ON COLUMN @extschema@.checkpoints.name IS 'the subscriber''s name, 1 to 63 bytes';
COMMENT ON COLUMN @extschema@.checkpoints.cursor IS 'the log_cursor of the last event the subscriber processed; NULL: read from the start';
COMMENT ON COLUMN @extschema@.checkpoints.owner IS 'the role that created the checkpoint: only its members and es_admin may save or drop it';
COMMENT ON COLUMN @extschema@.checkpoints.created_at IS 'when the checkpoint was first saved';
COMMENT ON COLUMN @extschema@.checkpoints.saved_at IS 'when the cursor was last saved (the time of the call; it counts once the transaction commits)';
CREATE OR REPLACE TRIGGER es_guard_write BEFORE INSERT OR UPDATE OR DELETE ON @extschema@.checkpoints
	FOR EACH STATEMENT EXECUTE FUNCTION @extschema@.es_guard();
CREATE OR REPLACE TRIGGER es_guard_truncate BEFORE TRUNCATE ON @extschema@.checkpoints
	FOR EACH STATEMENT EXECUTE FUNCTION @extschema@.es_guard();
SELECT pg_catalog.pg_extension_config_dump('@extschema@.checkpoints', '');
REVOKE ALL ON TABLE @extschema@.checkpoints FROM PUBLIC;
GRANT SELECT ON @extschema@.checkpoints TO es_reader;
-- the functions run as their caller; the guard lets only them write
GRANT INSERT, UPDATE, DELETE ON @extschema@.checkpoints TO es_consumer, es_admin;

CREATE OR REPLACE FUNCTION @extschema@.es_checkpoint_save(name text, cursor @extschema@.log_cursor)
RETURNS void
AS 'MODULE_PATHNAME', 'es_checkpoint_save'
LANGUAGE C VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE;
COMMENT ON FUNCTION @extschema@.es_checkpoint_save(text, @extschema@.log_cursor) IS
	'saves a subscriber''s global log cursor under a name, in the caller''s transaction; NULL: from the start; moving it back replays';
REVOKE ALL ON FUNCTION @extschema@.es_checkpoint_save(text, @extschema@.log_cursor) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@.es_checkpoint_save(text, @extschema@.log_cursor) TO es_consumer, es_admin;

CREATE OR REPLACE FUNCTION @extschema@.es_checkpoint(name text)
RETURNS @extschema@.log_cursor
AS 'MODULE_PATHNAME', 'es_checkpoint'
LANGUAGE C STABLE STRICT PARALLEL RESTRICTED;
COMMENT ON FUNCTION @extschema@.es_checkpoint(text) IS
	'the cursor saved under a name; NULL when there is no such checkpoint, so es_read_all(es_checkpoint(name)) starts from the beginning';
REVOKE ALL ON FUNCTION @extschema@.es_checkpoint(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@.es_checkpoint(text) TO es_reader;

CREATE OR REPLACE FUNCTION @extschema@.es_checkpoint_drop(name text)
RETURNS boolean
AS 'MODULE_PATHNAME', 'es_checkpoint_drop'
LANGUAGE C VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE;
COMMENT ON FUNCTION @extschema@.es_checkpoint_drop(text) IS
	'drops a checkpoint; false when it does not exist';
REVOKE ALL ON FUNCTION @extschema@.es_checkpoint_drop(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@.es_checkpoint_drop(text) TO es_consumer, es_admin;

/*
 * One row per checkpoint with its lag (es_cursor_lag: index range scans of
 * the events after the cursor, never the whole log) and, when events wait
 * behind the horizon, the oldest transaction holding it back (the first row
 * of es.horizon_holders).  pg_stat_activity shows the start of another
 * role's transaction only to members of that role and of pg_read_all_stats:
 * holder_xact_age is NULL for the others.
 */
CREATE OR REPLACE VIEW @extschema@.subscriptions AS
	SELECT c.name,
		   c.owner,
		   c.cursor,
		   (c.cursor).global_position AS "position",
		   c.saved_at,
		   l.events_behind,
		   l.events_held_back,
		   l.lag,
		   h.pid AS holder_pid,
		   h.xid_age AS holder_xid_age,
		   h.xact_age AS holder_xact_age,
		   h.prepared_gid AS holder_prepared_gid
	  FROM @extschema@.checkpoints AS c
	 CROSS JOIN LATERAL @extschema@.es_cursor_lag(c.cursor) AS l
	  LEFT JOIN (SELECT o.pid, o.xid_age, o.xact_age, o.prepared_gid
				   FROM @extschema@.horizon_holders AS o
				  ORDER BY o.xid_age DESC
				  LIMIT 1) AS h
		ON l.events_held_back OPERATOR(pg_catalog.>) 0;
COMMENT ON VIEW @extschema@.subscriptions IS
	'one row per checkpoint: its cursor, the events readable after it, those held back by the horizon, its lag in time, and the oldest transaction holding the horizon back';
COMMENT ON COLUMN @extschema@.subscriptions."position" IS 'the global_position of the checkpoint''s cursor';
COMMENT ON COLUMN @extschema@.subscriptions.events_behind IS 'events after the cursor that es_read_all returns now';
COMMENT ON COLUMN @extschema@.subscriptions.events_held_back IS 'committed events after the cursor at or above the horizon: returned once older transactions end';
COMMENT ON COLUMN @extschema@.subscriptions.lag IS 'now() minus the recorded_at of the first event after the cursor; 0 when there is none';
COMMENT ON COLUMN @extschema@.subscriptions.holder_pid IS 'when events are held back: the process of the oldest transaction holding the horizon (NULL for a prepared transaction)';
COMMENT ON COLUMN @extschema@.subscriptions.holder_xid_age IS 'when events are held back: the age of that transaction''s id';
COMMENT ON COLUMN @extschema@.subscriptions.holder_xact_age IS 'when events are held back: how long that transaction has run (NULL when pg_stat_activity hides it from the reader)';
COMMENT ON COLUMN @extschema@.subscriptions.holder_prepared_gid IS 'when events are held back by a prepared transaction: its gid';
REVOKE ALL ON TABLE @extschema@.subscriptions FROM PUBLIC;
GRANT SELECT ON @extschema@.subscriptions TO es_reader;
