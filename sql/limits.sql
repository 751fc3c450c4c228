-- limits: configurable batch and event size limits, long names

SELECT store_mark();

-- the settings exist once the library is loaded (first use, or preloading)
LOAD 'es_ext';
SHOW es.max_batch_events;
SHOW es.max_batch_size;
SHOW es.max_event_size;

SELECT * FROM store_counts();

-- too many events in one batch: 54000
SET es.max_batch_events = 2;
SELECT try($$SELECT es.es_append('lim-1', NULL, '[{"type": "A", "data": 1}, {"type": "B", "data": 2}, {"type": "C", "data": 3}]')$$);
SELECT version FROM es.es_append('lim-1', NULL, '[{"type": "A", "data": 1}, {"type": "B", "data": 2}]');
RESET es.max_batch_events;

-- an event over the size limit: 54000
SET es.max_event_size = 100;
SELECT try(format($$SELECT es.es_append('lim-1', NULL, '[{"type": "A", "data": "%s"}]')$$, repeat('x', 200)));
SELECT version FROM es.es_append('lim-1', NULL, '[{"type": "A", "data": "small"}]');
RESET es.max_event_size;

-- a batch over the size limit: 54000
SET es.max_batch_size = '1kB';
SELECT try(format($$SELECT es.es_append('lim-1', NULL, '%s')$$,
  (SELECT jsonb_agg(jsonb_build_object('type', 'A', 'data', repeat('y', 100))) FROM generate_series(1, 20))));
RESET es.max_batch_size;

-- the limits are for superusers to set, within a range
SET es.max_batch_events = 0;
SET es.max_event_size = 10;
CREATE ROLE regress_es_limits;
SET ROLE regress_es_limits;
SET es.max_batch_events = 1000000;
RESET ROLE;
DROP ROLE regress_es_limits;

-- stream ids and event types are indexed: at most 1024 bytes (54000)
SELECT try(format($$SELECT es.es_append('%s', NULL, '[{"type": "A", "data": {}}]')$$, repeat('s', 1025)));
SELECT try(format($$SELECT es.es_append('lim-2', NULL, '[{"type": "%s", "data": {}}]')$$, repeat('t', 1025)));
SELECT version FROM es.es_append(repeat('s', 1024), NULL, format('[{"type": "%s", "data": {}}]', repeat('t', 1024))::jsonb);

-- odd but valid input: unicode names, deep and scalar payloads
SELECT version FROM es.es_append('lim-ünï-😀', NULL, '[{"type": "Tëst", "data": null}, {"type": "B", "data": [[[[1]]]]}, {"type": "C", "data": "s"}]');
SELECT stream_id, category, version, event_type, data FROM es.events WHERE stream_id = 'lim-ünï-😀' ORDER BY version;

-- the default limits accept a batch of 1000 events
SELECT version FROM es.es_append('lim-3', 0,
  (SELECT jsonb_agg(jsonb_build_object('type', 'N', 'data', jsonb_build_object('i', i))) FROM generate_series(1, 1000) i));
SELECT count(*), min(version), max(version), count(DISTINCT version) FROM es.events WHERE stream_id = 'lim-3';
SELECT bool_and((data ->> 'i')::int = version) AS batch_order_kept FROM es.events WHERE stream_id = 'lim-3';

SELECT * FROM store_counts();
