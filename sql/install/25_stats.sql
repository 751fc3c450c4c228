
/*
 * ========================================================================
 * sql/install/25_stats.sql — statistics (src/stats.c): counters kept in
 * shared memory when es_ext is in shared_preload_libraries
 * ========================================================================
 */
CREATE FUNCTION @extschema@.es_stats_counters(kind text,
											  OUT dbid oid,
											  OUT name text,
											  OUT enabled boolean,
											  OUT appends bigint,
											  OUT events bigint,
											  OUT data_bytes bigint,
											  OUT conflicts bigint,
											  OUT idempotent_replays bigint,
											  OUT refused_batches bigint,
											  OUT mean_append_time double precision,
											  OUT p50_append_time double precision,
											  OUT p99_append_time double precision,
											  OUT max_append_time double precision,
											  OUT stream_reads bigint,
											  OUT log_reads bigint,
											  OUT folds bigint,
											  OUT snapshot_hits bigint,
											  OUT outbox_claimed bigint,
											  OUT outbox_acked bigint,
											  OUT outbox_nacked bigint,
											  OUT outbox_dead bigint,
											  OUT stats_reset timestamptz,
											  OUT untracked bigint)
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'es_stats_counters'
LANGUAGE C VOLATILE STRICT PARALLEL RESTRICTED;
COMMENT ON FUNCTION @extschema@.es_stats_counters(text) IS
	'the statistics counters of one kind (database, category or group), as the views es.stats, es.category_stats and es.outbox_status show them';
REVOKE ALL ON FUNCTION @extschema@.es_stats_counters(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@.es_stats_counters(text) TO es_reader, pg_monitor;

CREATE FUNCTION @extschema@.es_stats_reset()
RETURNS timestamptz
AS 'MODULE_PATHNAME', 'es_stats_reset'
LANGUAGE C VOLATILE STRICT PARALLEL UNSAFE;
COMMENT ON FUNCTION @extschema@.es_stats_reset() IS
	'zeroes the es_ext statistics of this database (its own, its categories'' and its consumer groups''); returns the time of the reset';
REVOKE ALL ON FUNCTION @extschema@.es_stats_reset() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@.es_stats_reset() TO es_admin;

CREATE VIEW @extschema@.stats AS
	SELECT s.dbid,
		   d.datname,
		   s.enabled,
		   s.appends,
		   s.events,
		   s.data_bytes,
		   s.conflicts,
		   s.idempotent_replays,
		   s.refused_batches,
		   s.mean_append_time,
		   s.p50_append_time,
		   s.p99_append_time,
		   s.max_append_time,
		   s.stream_reads,
		   s.log_reads,
		   s.folds,
		   s.snapshot_hits,
		   s.outbox_claimed,
		   s.outbox_acked,
		   s.outbox_nacked,
		   s.outbox_dead,
		   s.untracked,
		   s.stats_reset
	  FROM @extschema@.es_stats_counters('database') AS s
	  JOIN pg_catalog.pg_database AS d ON d.oid OPERATOR(pg_catalog.=) s.dbid;
COMMENT ON VIEW @extschema@.stats IS
	'es_ext statistics per database (enabled = false, counters NULL: es_ext is not in shared_preload_libraries)';
REVOKE ALL ON TABLE @extschema@.stats FROM PUBLIC;
GRANT SELECT ON @extschema@.stats TO es_reader, pg_monitor;

CREATE VIEW @extschema@.category_stats AS
	SELECT s.name AS category,
		   s.enabled,
		   s.appends,
		   s.events,
		   s.data_bytes,
		   s.conflicts,
		   s.idempotent_replays,
		   s.refused_batches,
		   s.mean_append_time,
		   s.p50_append_time,
		   s.p99_append_time,
		   s.max_append_time,
		   s.stream_reads,
		   s.log_reads,
		   s.folds,
		   s.snapshot_hits,
		   s.stats_reset
	  FROM @extschema@.es_stats_counters('category') AS s;
COMMENT ON VIEW @extschema@.category_stats IS
	'es_ext statistics per stream category of this database (enabled = false, counters NULL: es_ext is not in shared_preload_libraries)';
REVOKE ALL ON TABLE @extschema@.category_stats FROM PUBLIC;
GRANT SELECT ON @extschema@.category_stats TO es_reader, pg_monitor;
