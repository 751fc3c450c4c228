-- bench/projection_append.sql — one es_append of :n events to a random
-- stream of category "pj" (run by bench/projection_run with -D n=1 or 10)
\set s random(1, 10000)
SELECT es.es_append('pj-' || :s, NULL,
       (SELECT jsonb_agg(jsonb_build_object('type', 'Added', 'data', jsonb_build_object('n', i)))
          FROM generate_series(1, :n) AS i));
