-- citus_single: the Citus functions (sql/install/95_citus.sql) on a single
-- node, without Citus: es.distribute() and es_node_ranges() refuse,
-- es_read_log reads the local log as the one node log (node 0)

--
-- es.distribute(): the shard count first (22023), then Citus (55000)
--
SELECT try('SELECT es.distribute(0)');
SELECT try('SELECT es.distribute(NULL)');
SELECT try('SELECT es.distribute(-1)');
SELECT try('SELECT es.distribute(64001)');
SELECT try('SELECT es.distribute()');
SELECT try('SELECT es.distribute(8)');
SELECT try('SELECT es.distribute(64000)');
-- es_node_ranges: there is no Citus group id without Citus
SELECT try('SELECT es.es_node_ranges()');
-- neither is for a role of the extension, es_admin included: only a
-- superuser may run them (EXECUTE is granted to nobody)
CREATE ROLE regress_cs_admin IN ROLE es_admin;
CREATE ROLE regress_cs_nobody;
CREATE ROLE regress_cs_reader IN ROLE es_reader;
SET ROLE regress_cs_admin;
SELECT try('SELECT es.distribute(8)');
SELECT try('SELECT es.distribute(0)');
SELECT try('SELECT es.es_node_ranges()');
RESET ROLE;
-- with EXECUTE granted all the same, a non-superuser is refused by the
-- function, after the checks of the shard count and of Citus
GRANT EXECUTE ON FUNCTION es.distribute(integer) TO regress_cs_admin;
SET ROLE regress_cs_admin;
SELECT try('SELECT es.distribute(0)');
SELECT try('SELECT es.distribute(8)');
RESET ROLE;
REVOKE EXECUTE ON FUNCTION es.distribute(integer) FROM regress_cs_admin;
-- nothing was distributed, the sequences keep their range
SELECT count(*) AS distributed FROM pg_extension WHERE extname = 'citus';
SELECT min_value, max_value FROM pg_sequences
 WHERE schemaname = 'es' AND sequencename IN ('events_global_position_seq', 'outbox_position_seq')
 ORDER BY sequencename;

--
-- es_read_log: the local log is node 0's, read like es_read_all
--
SELECT version FROM es.es_append('cs-1', 0, '[{"type": "Opened", "data": 1}, {"type": "Noted", "data": 2}]');
SELECT version FROM es.es_append('cs-2', 0, '[{"type": "Opened", "data": 3}]');
SELECT version FROM es.es_append('cs-1', 2, '[{"type": "Closed", "data": 4}]');
SELECT version FROM es.es_append('ct-1', 0, '[{"type": "Opened", "data": 5}]');
SELECT version FROM es.es_append('cs-3', 0, '[{"type": "Noted", "data": 6}, {"type": "Noted", "data": 7}]');

-- one category: node 0, the cursors of a row are its log_cursor alone
SELECT stream_id, version, event_type, data, node,
	   (log_cursor).global_position = global_position AS position_in_cursor,
	   cursors = ARRAY[log_cursor] AS cursors_of_the_row
  FROM es.es_read_log(NULL, 100, 'cs');

-- the whole log: the events of es_read_all, in its order, as it returns them
SELECT (SELECT array_agg(ROW(r.global_position, r.stream_id, r.version, r.event_id, r.event_type,
							 r.data, r.metadata, r.recorded_at, r.log_cursor))
		  FROM es.es_read_log(NULL, 100000) AS r)
	   = (SELECT array_agg(ROW(a.global_position, a.stream_id, a.version, a.event_id, a.event_type,
							   a.data, a.metadata, a.recorded_at, a.log_cursor))
			FROM es.es_read_all(NULL, 100000) AS a) AS same_as_es_read_all,
	   (SELECT count(*) FROM es.es_read_log(NULL, 100000)) = (SELECT count(*) FROM es.events) AS every_event,
	   (SELECT bool_and(node = 0) FROM es.es_read_log(NULL, 100000)) AS all_node_0;
-- filtered by category and event types, from a cursor: es_read_all's too
SELECT (SELECT array_agg(r.global_position) FROM es.es_read_log(NULL, 1000, 'cs', ARRAY['Noted', 'Closed']) AS r)
	   = (SELECT array_agg(a.global_position) FROM es.es_read_all(NULL, 1000, 'cs', ARRAY['Noted', 'Closed']) AS a)
		 AS same_filtered,
	   (SELECT array_agg(r.global_position)
		  FROM es.es_read_log((SELECT r.cursors FROM es.es_read_log(NULL, 2, 'cs') AS r OFFSET 1), 1000, 'cs') AS r)
	   = (SELECT array_agg(a.global_position)
			FROM es.es_read_all((SELECT a.log_cursor FROM es.es_read_all(NULL, 2, 'cs') AS a OFFSET 1), 1000, 'cs') AS a)
		 AS same_from_a_cursor;
SELECT stream_id, version, event_type FROM es.es_read_log(NULL, 1000, 'cs', ARRAY['Noted', 'Closed']);

-- page by page with the cursors of the last row: every event once, in order
CREATE FUNCTION pg_temp.log_pages(cat text, size integer)
RETURNS TABLE (n integer, page integer, global_position bigint, stream_id text, version bigint)
LANGUAGE plpgsql AS $$
DECLARE
	cur es.log_cursor[];
	last es.log_cursor[];
	r record;
BEGIN
	n := 0;
	page := 0;
	LOOP
		page := page + 1;
		last := NULL;
		FOR r IN SELECT * FROM es.es_read_log(cur, size, cat) LOOP
			n := n + 1;
			global_position := r.global_position;
			stream_id := r.stream_id;
			version := r.version;
			RETURN NEXT;
			last := r.cursors;
		END LOOP;
		EXIT WHEN last IS NULL;
		cur := last;
	END LOOP;
END
$$;
SELECT page, stream_id, version FROM pg_temp.log_pages('cs', 2) ORDER BY n;
-- the whole log, 3 events a page
SELECT (SELECT array_agg(p.global_position ORDER BY p.n) FROM pg_temp.log_pages(NULL, 3) AS p)
	   = (SELECT array_agg(a.global_position) FROM es.es_read_all(NULL, 100000) AS a) AS pages_read_every_event_once,
	   (SELECT max(c) FROM (SELECT count(*) AS c FROM pg_temp.log_pages(NULL, 3) GROUP BY page) AS p) AS page_size;
-- after the last event: nothing
SELECT count(*) AS after_the_end
  FROM es.es_read_log((SELECT r.cursors FROM es.es_read_log(NULL, 100000) AS r
					   ORDER BY r.log_cursor DESC LIMIT 1), 10);

-- a cursor of another node's log is kept in the cursors, and does not move
-- node 0's: here there is no such log, nothing comes of it
SELECT stream_id, version, cursors[1] AS other_node, cursors[2] = log_cursor AS node_0_second
  FROM es.es_read_log('{"(0,5,281474976710657)"}', 100, 'cs')
 LIMIT 2;
-- the cursors are taken in one dimension from 1, whatever the array's bounds
SELECT (SELECT array_agg(r.cursors)
		  FROM es.es_read_log('[0:0]={"(0,5,281474976710657)"}', 100, 'cs') AS r)
	   = (SELECT array_agg(r.cursors)
			FROM es.es_read_log('{"(0,5,281474976710657)"}', 100, 'cs') AS r) AS bounds_ignored;

--
-- bad input: 22023
--
SELECT try('SELECT * FROM es.es_read_log(NULL, 0)');
SELECT try('SELECT * FROM es.es_read_log(NULL, -1)');
SELECT try('SELECT * FROM es.es_read_log(NULL, NULL)');
-- the filters, checked as es_read_all checks them
SELECT try($$SELECT * FROM es.es_read_log(NULL, 10, '')$$);
SELECT try($$SELECT * FROM es.es_read_log(NULL, 10, NULL, '{}')$$);
SELECT try($$SELECT * FROM es.es_read_log(NULL, 10, NULL, '{{a},{b}}')$$);
SELECT try($$SELECT * FROM es.es_read_log(NULL, 10, NULL, ARRAY['a', NULL])$$);
-- a NULL element, a NULL field, a position below 1
SELECT try($$SELECT * FROM es.es_read_log(ARRAY[NULL]::es.log_cursor[], 10)$$);
SELECT try($$SELECT * FROM es.es_read_log('{NULL,"(0,1,1)"}', 10)$$);
SELECT try($$SELECT * FROM es.es_read_log('{"(0,,1)"}', 10)$$);
SELECT try($$SELECT * FROM es.es_read_log('{"(0,1,0)"}', 10)$$);
-- two cursors of one node (node 0 twice; node 1 twice)
SELECT try($$SELECT * FROM es.es_read_log('{"(0,1,1)","(0,2,2)"}', 10)$$);
SELECT try($$SELECT * FROM es.es_read_log('{"(0,1,281474976710657)","(0,1,1)","(0,2,281474976710658)"}', 10)$$);
-- an empty array is no cursor: from the start
SELECT count(*) = (SELECT count(*) FROM es.events) AS empty_array_from_the_start
  FROM es.es_read_log('{}', 100000);

--
-- privileges: es_reader (and the roles in it) only
--
SET ROLE regress_cs_nobody;
SELECT try('SELECT * FROM es.es_read_log(NULL, 10)');
RESET ROLE;
-- the schema alone is not enough
CREATE ROLE regress_cs_usage;
GRANT USAGE ON SCHEMA es TO regress_cs_usage;
SET ROLE regress_cs_usage;
SELECT try('SELECT * FROM es.es_read_log(NULL, 10)');
RESET ROLE;
REVOKE USAGE ON SCHEMA es FROM regress_cs_usage;
SET ROLE regress_cs_reader;
SELECT stream_id, version FROM es.es_read_log(NULL, 100, 'ct');
RESET ROLE;

DROP ROLE regress_cs_admin, regress_cs_nobody, regress_cs_usage, regress_cs_reader;
