-- bench/plpgsql_fold_100.sql — the same fold as a PL/pgSQL loop over
-- es_read_stream calling the same reducer (bench_loop, peers_setup.sql).
\set sid random(1, :streams)
SELECT bench_loop('read-' || :sid);
