-- bench/dcb_all_read.sql — bench/dcb_run: es_read_all of one course's
-- category (rq1 .. rq:streams, bench/dcb_setup.sql): the same :batch events
-- as bench/dcb_query_read.sql.
\set k random(1, :streams)
SELECT * FROM es.es_read_all(NULL, :batch, 'rq' || :k);
