-- bench/client_fold_100.sql — client-side fold: fetch the 100 events
-- (version, type, data) for the client to reduce.  pgbench only fetches, so
-- this is a lower bound of the client's cost (no reducer time counted).
\set sid random(1, :streams)
SELECT version, event_type, data FROM es.es_read_stream('read-' || :sid);
