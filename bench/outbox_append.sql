-- bench/outbox_append.sql — one event, any version, to a random stream of
-- category "bench" (routed to the outbox or not); pgbench -D streams=N
\set s random(1, :streams)
SELECT es.es_append('bench-' || :s, NULL, '[{"type": "Ticked", "data": {"n": 1, "by": "pgbench"}}]');
