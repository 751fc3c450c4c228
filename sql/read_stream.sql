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
