-- bench/es_fold_100.sql — es_fold of a 100-event stream with the PL/pgSQL
-- reducer bench_reducer (peers_setup.sql).
\set sid random(1, :streams)
SELECT es.es_fold('read-' || :sid, 'bench_reducer(jsonb,jsonb)', '{"count": 0, "total": 0}');
