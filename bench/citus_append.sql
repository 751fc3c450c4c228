-- bench/citus_append.sql — bench/citus_run: append ONE event to a random
-- one of 1001 streams ('s-0' … 's-1000'), expected version NULL ("any").
-- The stream id is built from a pgbench variable, not from random() in SQL:
-- Citus delegates a call to the node of its stream only when the stream
-- argument is a constant or a parameter, and a volatile expression is not
-- routed (es_append then runs on the coordinator and is refused there).
\set n random(0, 1000)
SELECT es.es_append('s-' || :n, NULL, '[{"type":"t","data":{"n":1}}]');
