-- bench/dcb_setup.sql — bench/dcb_run: the data of the read workloads.
-- :courses courses of :per_course events each, tagged course:rq<k> and
-- stored in category rq<k> (streams rq<k>-<round>), appended in rounds of
-- batches of 10 so that a course's events are spread over the log as in a
-- real one: es_read_query of the tag and es_read_all of the category
-- return the same events.  Variables: -v courses=N -v per_course=M.
SET synchronous_commit = off;
SELECT es.es_append('rq' || k || '-' || r, NULL,
		(SELECT jsonb_agg(jsonb_build_object(
				'type', 'Enrolled',
				'data', jsonb_build_object('course', k, 'i', i),
				'tags', jsonb_build_array('course:rq' || k, 'student:s' || (r * 10 + i))))
		   FROM generate_series(1, 10) AS i))
  FROM generate_series(1, :per_course / 10) AS r, generate_series(1, :courses) AS k
 ORDER BY r, k;
VACUUM ANALYZE es.events;
