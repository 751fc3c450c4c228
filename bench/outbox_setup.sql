-- bench/outbox_setup.sql — setup of bench/outbox_run: the extension and
-- :streams streams of one event each (the measured appends then go to
-- existing streams)
CREATE EXTENSION es_ext;
SELECT count(es.es_append('bench-' || i, 0, '[{"type": "Created", "data": {}}]'))
  FROM generate_series(1, :streams) AS i;
VACUUM ANALYZE;
