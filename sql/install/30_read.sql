
/*
 * ========================================================================
 * sql/install/30_read.sql — the read side: one stream, the gap-safe global
 * log and its horizon, correlation and causation
 * ========================================================================
 */
CREATE FUNCTION @extschema@.es_read_stream(stream text,
										   from_version bigint DEFAULT NULL,
										   max_count bigint DEFAULT NULL,
										   direction text DEFAULT 'forward')
RETURNS SETOF @extschema@.events
AS 'MODULE_PATHNAME', 'es_read_stream'
LANGUAGE C STABLE CALLED ON NULL INPUT PARALLEL RESTRICTED;
COMMENT ON FUNCTION @extschema@.es_read_stream(text, bigint, bigint, text) IS
	'events of one stream in version order, forward from from_version (default 1) or backward from it (default: the last)';
REVOKE ALL ON FUNCTION @extschema@.es_read_stream(text, bigint, bigint, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@.es_read_stream(text, bigint, bigint, text) TO es_reader;

CREATE FUNCTION @extschema@.es_stream_version(stream text)
RETURNS bigint
AS 'MODULE_PATHNAME', 'es_stream_version'
LANGUAGE C STABLE STRICT PARALLEL RESTRICTED;
COMMENT ON FUNCTION @extschema@.es_stream_version(text) IS
	'current version of a stream; 0 when it does not exist';
REVOKE ALL ON FUNCTION @extschema@.es_stream_version(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@.es_stream_version(text) TO es_reader;

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
REVOKE ALL ON FUNCTION @extschema@.es_read_all(@extschema@.log_cursor, integer, text, text[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@.es_read_all(@extschema@.log_cursor, integer, text, text[]) TO es_reader;

CREATE FUNCTION @extschema@.es_read_query(query jsonb,
										  after @extschema@.log_cursor DEFAULT NULL,
										  max_count integer DEFAULT NULL)
RETURNS TABLE (global_position bigint,
			   stream_id text,
			   version bigint,
			   event_id uuid,
			   event_type text,
			   tags text[],
			   data jsonb,
			   metadata jsonb,
			   recorded_at timestamptz,
			   log_cursor @extschema@.log_cursor,
			   horizon xid8)
AS 'MODULE_PATHNAME', 'es_read_query'
LANGUAGE C STABLE CALLED ON NULL INPUT PARALLEL RESTRICTED;
COMMENT ON FUNCTION @extschema@.es_read_query(jsonb, @extschema@.log_cursor, integer) IS
	'the events matching a query of event types and tags, after a cursor, in log order, gap-safe like es_read_all; the last row''s log_cursor is the position of a conditional append';
REVOKE ALL ON FUNCTION @extschema@.es_read_query(jsonb, @extschema@.log_cursor, integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@.es_read_query(jsonb, @extschema@.log_cursor, integer) TO es_reader;

/*
 * The greatest of log cursors, for the position of a conditional append:
 * SELECT es.max(log_cursor) FROM es.es_read_query(...).  Cursors compare as
 * rows (era, tx_id, global_position).
 */
CREATE FUNCTION @extschema@.log_cursor_larger(a @extschema@.log_cursor, b @extschema@.log_cursor)
RETURNS @extschema@.log_cursor
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$SELECT CASE WHEN a OPERATOR(pg_catalog.>=) b THEN a ELSE b END$$;
COMMENT ON FUNCTION @extschema@.log_cursor_larger(@extschema@.log_cursor, @extschema@.log_cursor) IS
	'the greater of two log cursors (the state function of es.max(es.log_cursor))';
CREATE AGGREGATE @extschema@.max(@extschema@.log_cursor) (
	SFUNC = @extschema@.log_cursor_larger,
	STYPE = @extschema@.log_cursor,
	COMBINEFUNC = @extschema@.log_cursor_larger,
	PARALLEL = SAFE
);
COMMENT ON AGGREGATE @extschema@.max(@extschema@.log_cursor) IS
	'the greatest log cursor: the position a conditional append refers to after an es_read_query';
REVOKE ALL ON FUNCTION @extschema@.log_cursor_larger(@extschema@.log_cursor, @extschema@.log_cursor) FROM PUBLIC;
REVOKE ALL ON FUNCTION @extschema@.max(@extschema@.log_cursor) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@.log_cursor_larger(@extschema@.log_cursor, @extschema@.log_cursor) TO es_reader;
GRANT EXECUTE ON FUNCTION @extschema@.max(@extschema@.log_cursor) TO es_reader;

CREATE FUNCTION @extschema@.es_log_horizon()
RETURNS xid8
AS 'MODULE_PATHNAME', 'es_log_horizon'
LANGUAGE C STABLE STRICT PARALLEL RESTRICTED;
COMMENT ON FUNCTION @extschema@.es_log_horizon() IS
	'the global log horizon of the current snapshot: es_read_all returns only events of transactions below it';
REVOKE ALL ON FUNCTION @extschema@.es_log_horizon() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@.es_log_horizon() TO es_reader;

/*
 * How far a cursor is behind: events readable now, events held back by the
 * horizon, and the time since the first of them was appended.  es.subscriptions
 * (35_checkpoint.sql) and es.projection_progress (40_projection.sql) use it.
 */
CREATE FUNCTION @extschema@.es_cursor_lag(after @extschema@.log_cursor,
										  OUT events_behind bigint,
										  OUT events_held_back bigint,
										  OUT lag interval)
RETURNS record
AS 'MODULE_PATHNAME', 'es_cursor_lag'
LANGUAGE C STABLE CALLED ON NULL INPUT PARALLEL RESTRICTED;
COMMENT ON FUNCTION @extschema@.es_cursor_lag(@extschema@.log_cursor) IS
	'how far a global log cursor (NULL: the start) is behind: events es_read_all would return now, committed events held back by the horizon, and the time since the first of them was appended';
REVOKE ALL ON FUNCTION @extschema@.es_cursor_lag(@extschema@.log_cursor) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@.es_cursor_lag(@extschema@.log_cursor) TO es_reader;

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
REVOKE ALL ON TABLE @extschema@.horizon_holders FROM PUBLIC;
GRANT SELECT ON @extschema@.horizon_holders TO es_admin, pg_monitor;

/*
 * Correlation and causation: metadata keys "correlation_id" and
 * "causation_id".  These functions use the optional indexes
 * events_correlation_idx and events_causation_idx when the deployment has
 * created them (README), and scan es.events when it has not.
 */
CREATE FUNCTION @extschema@.es_events_by_correlation(correlation_id text)
RETURNS SETOF @extschema@.events
LANGUAGE plpgsql STABLE STRICT PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
	RETURN QUERY
	SELECT e.* FROM @extschema@.events AS e
	 WHERE e.metadata OPERATOR(pg_catalog.?) 'correlation_id'
	   AND (e.metadata OPERATOR(pg_catalog.->>) 'correlation_id') OPERATOR(pg_catalog.=) $1
	 ORDER BY e.era, e.tx_id, e.global_position;
END
$fn$;
COMMENT ON FUNCTION @extschema@.es_events_by_correlation(text) IS
	'events whose metadata has the given "correlation_id", in log order';
REVOKE ALL ON FUNCTION @extschema@.es_events_by_correlation(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@.es_events_by_correlation(text) TO es_reader;

CREATE FUNCTION @extschema@.es_events_by_causation(causation_id text)
RETURNS SETOF @extschema@.events
LANGUAGE plpgsql STABLE STRICT PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
	RETURN QUERY
	SELECT e.* FROM @extschema@.events AS e
	 WHERE e.metadata OPERATOR(pg_catalog.?) 'causation_id'
	   AND (e.metadata OPERATOR(pg_catalog.->>) 'causation_id') OPERATOR(pg_catalog.=) $1
	 ORDER BY e.era, e.tx_id, e.global_position;
END
$fn$;
COMMENT ON FUNCTION @extschema@.es_events_by_causation(text) IS
	'events whose metadata has the given "causation_id", in log order';
REVOKE ALL ON FUNCTION @extschema@.es_events_by_causation(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@.es_events_by_causation(text) TO es_reader;
