-- bench/dcb_append.sql — bench/dcb_run: ONE Enrolled event, tagged
-- course:<k> and student:s<sid>, appended to the student's stream, in the
-- three forms bench/dcb_run compares (pgbench variables, -D):
--   read=0 cond=0  the unconditional append (es_append with condition NULL);
--   read=1 cond=0  the read below, then the unconditional append;
--   read=1 cond=1  the decision cycle of a Dynamic Consistency Boundary: read
--                  the course's Enrolled events with es_read_query, then
--                  append on the condition that no event matching the same
--                  query appeared after the last log_cursor read (NULL when
--                  none).  Two statements, two autocommit transactions, one
--                  pgbench "transaction": a refusal (40001,
--                  es_append_condition) makes pgbench (--max-tries > 1)
--                  re-run both.
-- streams=N: each client its own N courses (disjoint tags; the whole course
-- is read).  streams=-H: every client on the one tag course:-H, reading only
-- what is new since its own last read (aft=none at the start; pgbench keeps a
-- client's variables between runs and restores them for a retry).  pgbench
-- -M prepared turns every :name into a parameter, inside quotes too: no
-- literal here has a colon followed by a letter.
\if :streams < 0
\set k :streams
\else
\set k :client_id * :streams + random(1, :streams)
\endif
\set sid random(1, 100000)
\if :read
SELECT COALESCE((SELECT r.log_cursor::text
				   FROM es.es_read_query(jsonb_build_array(jsonb_build_object(
							'types', jsonb_build_array('Enrolled'),
							'tags', jsonb_build_array('course:' || :k::bigint))),
						CASE WHEN :streams::integer < 0 THEN NULLIF(:aft::text, 'none')::es.log_cursor END) AS r
				  ORDER BY r.log_cursor DESC LIMIT 1),
				CASE WHEN :streams::integer < 0 THEN :aft::text END, 'none') AS aft \gset
\endif
SELECT es.es_append('student-' || :sid::integer, NULL,
		jsonb_build_array(jsonb_build_object(
			'type', 'Enrolled',
			'data', jsonb_build_object('course', :k::bigint, 'student', :sid::integer),
			'tags', jsonb_build_array('course:' || :k::bigint, 'student:' || 's' || :sid::integer))),
		CASE WHEN :cond::integer = 1 THEN jsonb_build_array(jsonb_build_object(
			'types', jsonb_build_array('Enrolled'),
			'tags', jsonb_build_array('course:' || :k::bigint))) END,
		CASE WHEN :cond::integer = 1 THEN NULLIF(:aft::text, 'none')::es.log_cursor END);
