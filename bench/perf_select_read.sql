-- bench/perf_select_read.sql — bench/perf_run: the plain SELECT of the same
-- 100 rows of es.events as perf_es_read.sql, in version order (primary key).
\set sid random(1, 100)
SELECT * FROM es.events WHERE stream_id = 'read-' || :sid ORDER BY version;
