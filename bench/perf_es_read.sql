-- bench/perf_es_read.sql — bench/perf_run: es_read_stream of a 100-event
-- stream (read-1 .. read-100).  Rows/s = tps x 100.
\set sid random(1, 100)
SELECT * FROM es.es_read_stream('read-' || :sid);
