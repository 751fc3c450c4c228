-- bench/growth_read.sql — growth measurement: es_read_stream of a random
-- 100-event stream grow-1 .. grow-N.
\set sid random(1, :streams)
SELECT * FROM es.es_read_stream('grow-' || :sid);
