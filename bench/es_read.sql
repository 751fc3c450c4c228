-- bench/es_read.sql — es_ext: es_read_stream of a 100-event stream.
\set sid random(1, :streams)
SELECT * FROM es.es_read_stream('read-' || :sid);
