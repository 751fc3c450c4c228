-- bench/dcb_query_read.sql — bench/dcb_run: es_read_query of one course's
-- tag (course:rq1 .. course:rq:streams, bench/dcb_setup.sql): :batch events.
\set k random(1, :streams)
SELECT * FROM es.es_read_query(jsonb_build_array(jsonb_build_object(
		'tags', jsonb_build_array('course:' || 'rq' || :k))));
