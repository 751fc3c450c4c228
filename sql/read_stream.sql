-- read_stream: es_read_stream and es_stream_version

SELECT version FROM es.es_append('rs-1', 0,
  (SELECT jsonb_agg(jsonb_build_object('type', 'E' || i, 'data', jsonb_build_object('i', i))) FROM generate_series(1, 10) i));

-- forward from the start (the default)
SELECT stream_id, version, event_type, data FROM es.es_read_stream('rs-1');

-- forward from a version, with a limit
SELECT version FROM es.es_read_stream('rs-1', 4, 3);
SELECT version FROM es.es_read_stream('rs-1', from_version => 9);
SELECT version FROM es.es_read_stream('rs-1', 11);

-- backward: from the end by default, or from a version
SELECT version FROM es.es_read_stream('rs-1', NULL, 3, 'backward');
SELECT version FROM es.es_read_stream('rs-1', 5, NULL, 'backward');
SELECT version FROM es.es_read_stream('rs-1', direction => 'BACKWARD', max_count => 2);

-- max_count 0 reads nothing
SELECT count(*) FROM es.es_read_stream('rs-1', 1, 0);

-- every column, with its type: jsonb stays jsonb, timestamps are timestamptz
SELECT pg_typeof(global_position) AS gp, pg_typeof(stream_id) AS s, pg_typeof(version) AS v,
       pg_typeof(event_id) AS id, pg_typeof(event_type) AS t, pg_typeof(data) AS d,
       pg_typeof(metadata) AS m, pg_typeof(recorded_at) AS r, pg_typeof(tx_id) AS x
  FROM es.es_read_stream('rs-1', 1, 1);
SELECT (SELECT array_agg(e ORDER BY version) FROM es.es_read_stream('rs-1') e)
     = (SELECT array_agg(e ORDER BY version) FROM es.events e WHERE stream_id = 'rs-1') AS same_rows;

-- a stream that does not exist reads as empty, version 0
SELECT count(*) FROM es.es_read_stream('rs-none');
SELECT es.es_stream_version('rs-none'), es.es_stream_version('rs-1'), es.es_stream_version(NULL);

-- recorded_at never goes backwards within a stream
SELECT version FROM es.es_append('rs-1', 10, '[{"type": "Late", "data": {}}]');
SELECT bool_and(recorded_at >= prev) AS non_decreasing FROM (
  SELECT recorded_at, lag(recorded_at) OVER (ORDER BY version) AS prev FROM es.es_read_stream('rs-1')) t
 WHERE prev IS NOT NULL;

-- bad arguments
SELECT try($$SELECT * FROM es.es_read_stream(NULL)$$);
SELECT try($$SELECT * FROM es.es_read_stream('rs-1', 0)$$);
SELECT try($$SELECT * FROM es.es_read_stream('rs-1', -5)$$);
SELECT try($$SELECT * FROM es.es_read_stream('rs-1', 1, -1)$$);
SELECT try($$SELECT * FROM es.es_read_stream('rs-1', 1, 10, 'sideways')$$);
SELECT try($$SELECT * FROM es.es_read_stream('rs-1', 1, 10, NULL)$$);

-- events stored out of line (TOAST) read back whole, in both directions,
-- through the direct index scan and through SQL when row level security
-- applies (the two read paths return the same rows)
SELECT version FROM es.es_append('rs-big', 0,
  (SELECT jsonb_agg(jsonb_build_object('type', 'Big', 'data',
     jsonb_build_object('i', i, 'blob', (SELECT string_agg(md5(i::text || ':' || j::text), '') FROM generate_series(1, 200) j))))
     FROM generate_series(1, 3) i));
SELECT pg_relation_size(c.reltoastrelid) > 0 AS stored_out_of_line
  FROM pg_class AS c WHERE c.oid = 'es.events'::regclass;
SELECT version, length(data->>'blob') AS blob, md5(data::text) = md5((SELECT e.data FROM es.events e WHERE e.stream_id = 'rs-big' AND e.version = r.version)::text) AS same
  FROM es.es_read_stream('rs-big') r;
SELECT version, length(data->>'blob') AS blob FROM es.es_read_stream('rs-big', NULL, 2, 'backward');
ALTER TABLE es.events ENABLE ROW LEVEL SECURITY;
CREATE POLICY rs_all ON es.events USING (true);
CREATE ROLE regress_rs_reader IN ROLE es_reader;
SET ROLE regress_rs_reader;
SELECT (SELECT array_agg(e ORDER BY version) FROM es.es_read_stream('rs-big') e)
     = (SELECT array_agg(e ORDER BY version) FROM es.events e WHERE stream_id = 'rs-big') AS same_rows_under_rls;
SELECT version FROM es.es_read_stream('rs-1', 9, 2);
SELECT version FROM es.es_read_stream('rs-1', 3, 2, 'backward');
RESET ROLE;
DROP POLICY rs_all ON es.events;
ALTER TABLE es.events DISABLE ROW LEVEL SECURITY;
DROP ROLE regress_rs_reader;

-- rows stored before a column was added read with the column's default
ALTER TABLE es.events ADD COLUMN rs_added integer NOT NULL DEFAULT 42;
SELECT version, rs_added FROM es.es_read_stream('rs-1', 1, 2);
SELECT version, rs_added, length(data->>'blob') AS blob FROM es.es_read_stream('rs-big', 3);
ALTER TABLE es.events DROP COLUMN rs_added;
SELECT (SELECT array_agg(e ORDER BY version) FROM es.es_read_stream('rs-1') e)
     = (SELECT array_agg(e ORDER BY version) FROM es.events e WHERE stream_id = 'rs-1') AS same_rows_after_drop;

-- an upcaster applies on both read paths: to rows copied as stored and to
-- rows whose data is out of line
CREATE FUNCTION rs_big_v1_v2(data jsonb) RETURNS jsonb LANGUAGE sql IMMUTABLE
  AS $$ SELECT data || '{"upcast": true}' $$;
SELECT es.es_register_upcaster('Big', 1, 'rs_big_v1_v2(jsonb)');
SELECT version FROM es.es_append('rs-big', 3, '[{"type": "Big", "data": {"i": 4}}]');
SELECT version, schema_version, data->>'upcast' AS upcast, length(data->>'blob') AS blob
  FROM es.es_read_stream('rs-big');
SELECT version, schema_version, data->>'upcast' AS upcast FROM es.es_read_stream('rs-big', NULL, 2, 'backward');
SELECT es.es_unregister_upcaster('Big', 1);
DROP FUNCTION rs_big_v1_v2(jsonb);
