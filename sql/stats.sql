-- stats: the statistics views on a server where es_ext is NOT in
-- shared_preload_libraries (the pg_regress server): the views exist, say
-- the counters are off (enabled = false, counters NULL, never zeros), and
-- the functions refuse clearly.  The counters themselves, on a preloaded
-- server, are tested by test/t/052_stats.pl.

-- es.stats: one row for this database, enabled = false, counters NULL
SELECT datname = current_database() AS this_database, enabled,
	   appends, events, conflicts, idempotent_replays, refused_batches,
	   p50_append_time, p99_append_time, stream_reads, folds, stats_reset
  FROM es.stats;
SELECT count(*) AS rows FROM es.stats;

-- an append and a read do not make counters appear
SELECT (es.es_append('statsx-1', NULL, '[{"type": "A", "data": {}}]')).version;
SELECT count(*) FROM es.es_read_stream('statsx-1');
SELECT enabled, appends IS NULL AS appends_null FROM es.stats;

-- es.category_stats: one row saying so, no category
SELECT category, enabled, appends, events, stats_reset FROM es.category_stats;

-- es.outbox_status: the age is an interval; throughput is NULL (counters off)
SELECT es.es_outbox_create_group('regress_stats_g') > 0 AS created;
SELECT pg_typeof(oldest_undelivered_age) AS age_type,
	   claimed_since_reset, delivered_since_reset, delivered_per_second, stats_reset
  FROM es.outbox_status WHERE consumer_group = 'regress_stats_g';
SELECT es.es_outbox_drop_group('regress_stats_g') >= 0 AS dropped;

-- errors: reset without preload, unknown kind, NULL kind (STRICT: no row)
SELECT try($$SELECT es.es_stats_reset()$$);
SELECT try($$SELECT * FROM es.es_stats_counters('bogus')$$);
SELECT count(*) AS null_kind_rows FROM es.es_stats_counters(NULL);

-- settings: es.track_stats is superuser-only; es.stats_max_categories
-- exists only when es_ext is preloaded (it sizes shared memory)
SHOW es.track_stats;
SELECT try($$SHOW es.stats_max_categories$$);
CREATE ROLE regress_stats_user;
GRANT es_reader TO regress_stats_user;
SET ROLE regress_stats_user;
SELECT try($$SET es.track_stats = off$$);
-- a reader sees the views
SELECT enabled FROM es.stats;
SELECT enabled FROM es.category_stats;
-- but cannot reset
SELECT try($$SELECT es.es_stats_reset()$$);
RESET ROLE;
DROP ROLE regress_stats_user;
