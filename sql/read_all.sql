-- read_all: the global log for subscribers (es_read_all, es_log_horizon)

SELECT version FROM es.es_append('ra-1', 0, '[{"type": "Opened", "data": 1}, {"type": "Noted", "data": 2}]');
SELECT version FROM es.es_append('ra-2', 0, '[{"type": "Opened", "data": 3}]');
SELECT version FROM es.es_append('ra-1', 2, '[{"type": "Closed", "data": 4}]');
SELECT version FROM es.es_append('rb-1', 0, '[{"type": "Opened", "data": 5}]');

-- one category, from the start, in log order (transaction order)
SELECT stream_id, version, event_type, data FROM es.es_read_all(NULL, 100, 'ra');

-- the cursor is (era, tx_id, global_position) of the row; events of one
-- append share its transaction id
SELECT count(DISTINCT (log_cursor).tx_id) AS transactions, count(*) AS events,
       bool_and((log_cursor).global_position = global_position) AS position_in_cursor,
       bool_and((log_cursor).tx_id < horizon) AS below_horizon
  FROM es.es_read_all(NULL, 100, 'ra');

-- reading page by page with the cursor of the last row sees every event once
CREATE TEMP TABLE pages (page int, stream_id text, version bigint);
DO $$
DECLARE
	cur es.log_cursor;
	last es.log_cursor;
	page int := 0;
	r record;
BEGIN
	LOOP
		page := page + 1;
		last := NULL;
		FOR r IN SELECT * FROM es.es_read_all(cur, 2, 'ra') LOOP
			INSERT INTO pages VALUES (page, r.stream_id, r.version);
			last := r.log_cursor;
		END LOOP;
		EXIT WHEN last IS NULL;
		cur := last;
	END LOOP;
END
$$;
SELECT page, stream_id, version FROM pages ORDER BY page, stream_id, version;

-- the cursor survives a round trip through text
SELECT count(*) FROM es.es_read_all(
  (SELECT log_cursor::text FROM es.es_read_all(NULL, 1, 'ra'))::es.log_cursor, 100, 'ra');

-- filter by event types, alone and with a category
SELECT stream_id, version, event_type FROM es.es_read_all(NULL, 100, 'ra', ARRAY['Opened', 'Closed']);
SELECT stream_id, version, event_type FROM es.es_read_all(NULL, 100, NULL, ARRAY['Closed'])
 WHERE stream_id LIKE 'r%';

-- without filters: every committed event, in cursor order
SELECT (SELECT count(*) FROM es.es_read_all(NULL, 1000000)) = (SELECT count(*) FROM es.events) AS all_events;
SELECT bool_and(prev < log_cursor) AS strictly_increasing FROM (
  SELECT log_cursor, lag(log_cursor) OVER () AS prev FROM es.es_read_all(NULL, 1000000)) t
 WHERE prev IS NOT NULL;

-- an open transaction's own appends are not returned to itself
BEGIN;
SELECT version FROM es.es_append('ra-3', 0, '[{"type": "Opened", "data": 6}]');
SELECT count(*) FROM es.es_read_all(NULL, 100, 'ra') WHERE stream_id = 'ra-3';
SELECT es.es_log_horizon() <= pg_current_xact_id() AS horizon_at_own_xid;
COMMIT;
SELECT count(*) FROM es.es_read_all(NULL, 100, 'ra') WHERE stream_id = 'ra-3';

-- the horizon moves past committed transactions
SELECT es.es_log_horizon() > (SELECT max(tx_id) FROM es.events) AS horizon_past_all;

-- who holds the horizon back (this session holds an xid only inside a write)
BEGIN;
SELECT pg_current_xact_id() IS NOT NULL AS has_xid;
SELECT count(*) AS me FROM es.horizon_holders WHERE pid = pg_backend_pid();
COMMIT;
SELECT count(*) AS me FROM es.horizon_holders WHERE pid = pg_backend_pid();

-- the filters are served by indexes (the query es_read_all runs)
SET enable_seqscan = off;
EXPLAIN (COSTS OFF)
SELECT e.global_position FROM es.events AS e
 WHERE (e.era, e.tx_id, e.global_position) > (0, '0'::xid8, 0::bigint)
   AND (e.era, e.tx_id) < (1, '0'::xid8)
   AND e.category = 'ra'
 ORDER BY e.era, e.tx_id, e.global_position LIMIT 10;
EXPLAIN (COSTS OFF)
SELECT e.global_position FROM es.events AS e
 WHERE (e.era, e.tx_id, e.global_position) > (0, '0'::xid8, 0::bigint)
   AND (e.era, e.tx_id) < (1, '0'::xid8)
 ORDER BY e.era, e.tx_id, e.global_position LIMIT 10;
RESET enable_seqscan;

-- bad arguments
SELECT try($$SELECT * FROM es.es_read_all(NULL, 0)$$);
SELECT try($$SELECT * FROM es.es_read_all(NULL, -1)$$);
SELECT try($$SELECT * FROM es.es_read_all(NULL, NULL)$$);
SELECT try($$SELECT * FROM es.es_read_all(ROW(0, NULL, 1)::es.log_cursor)$$);
SELECT try($$SELECT * FROM es.es_read_all(NULL, 10, '')$$);
SELECT try($$SELECT * FROM es.es_read_all(NULL, 10, NULL, '{}')$$);
SELECT try($$SELECT * FROM es.es_read_all(NULL, 10, NULL, ARRAY['A', NULL])$$);
SELECT try($$SELECT * FROM es.es_read_all('(zero,1,1)')$$);

-- a database restored into another cluster: es.config still names the
-- cluster it came from (a restore writes it with triggers off, as simulated
-- here).  Readers treat the restored history as final, and the first append
-- starts a new era, so what is appended from now on sorts after it even
-- though transaction ids restarted.
SET session_replication_role = replica;
UPDATE es.config SET system_identifier = system_identifier + 1;
RESET session_replication_role;
\c
SELECT (SELECT count(*) FROM es.es_read_all(NULL, 1000000)) = (SELECT count(*) FROM es.events) AS all_final;
SELECT version FROM es.es_append('ra-era', 0, '[{"type": "AfterRestore", "data": {}}]');
SELECT era, system_identifier = (SELECT system_identifier FROM pg_control_system()) AS this_cluster FROM es.config;
SELECT era FROM es.events WHERE stream_id = 'ra-era';
SELECT stream_id, (log_cursor).era FROM es.es_read_all(NULL, 1000000) ORDER BY log_cursor DESC LIMIT 1;
SELECT version FROM es.es_append('ra-era', 1, '[{"type": "Again", "data": {}}]');
SELECT version, era FROM es.events WHERE stream_id = 'ra-era' ORDER BY version;
