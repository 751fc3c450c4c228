-- append_ids: event ids.  Generated ids are UUID version 7 (time-ordered);
-- the event id index is not unique, so es_append itself keeps given ids
-- unique within a stream: looked up before the stream row lock (a retry)
-- and under it (test/specs/append_ids.spec races two sessions).
-- (Last in the schedule: it adds events, and plans of earlier tests depend
-- on the size of es.events.)

-- generated ids increase: within a batch and from one batch to the next
SELECT count(*) FROM es.es_append('ids-gen', 0,
  (SELECT jsonb_agg(jsonb_build_object('type', 'A', 'data', i)) FROM generate_series(1, 50) AS i));
SELECT count(*) FROM es.es_append('ids-gen', 50, '[{"type": "A", "data": 51}]');
SELECT count(*) AS ids, count(DISTINCT event_id) AS distinct_ids,
       bool_and(substr(event_id::text, 15, 1) = '7') AS all_v7,
       bool_and(event_id < next_id OR next_id IS NULL) AS increasing,
       bool_and(abs(extract(epoch FROM recorded_at) * 1000 -
                    ('x' || replace(substr(event_id::text, 1, 13), '-', ''))::bit(48)::bigint) < 60000)
         AS time_in_id
  FROM (SELECT event_id, recorded_at, lead(event_id) OVER (ORDER BY version) AS next_id
          FROM es.events WHERE stream_id = 'ids-gen') AS t;
-- a generated id given back by a caller is an id like any other: the same
-- event again is a retry (the original result), another event is refused
SELECT r.version FROM es.es_append('ids-gen', NULL,
  (SELECT jsonb_build_array(jsonb_build_object('type', 'A', 'data', 51, 'id', e.event_id))
     FROM es.events AS e WHERE e.stream_id = 'ids-gen' AND e.version = 51)) AS r;
SELECT regexp_replace(try(format($$SELECT es.es_append('ids-gen', NULL, '[{"type": "A", "data": 52, "id": "%s"}]')$$,
                  (SELECT event_id FROM es.events WHERE stream_id = 'ids-gen' AND version = 7))),
                      '[0-9a-f-]{36}', '<id>');
SELECT es.es_stream_version('ids-gen');

-- correlation and causation lookups scan es.events (append.sql) ...
-- ... until the deployment creates the optional indexes the README documents
CREATE INDEX events_correlation_idx ON es.events ((metadata ->> 'correlation_id'))
  WHERE metadata ? 'correlation_id';
CREATE INDEX events_causation_idx ON es.events ((metadata ->> 'causation_id'))
  WHERE metadata ? 'causation_id';
SET enable_seqscan = off;
EXPLAIN (COSTS OFF) SELECT * FROM es.events
 WHERE metadata ? 'correlation_id' AND metadata ->> 'correlation_id' = 'corr-1';
EXPLAIN (COSTS OFF) SELECT * FROM es.events
 WHERE metadata ? 'causation_id' AND metadata ->> 'causation_id' = 'cmd-1';
SELECT stream_id, version FROM es.es_events_by_correlation('corr-1');
SELECT stream_id, version FROM es.es_events_by_causation('cmd-1');
RESET enable_seqscan;
DROP INDEX es.events_correlation_idx, es.events_causation_idx;

-- the index set of es.events: the stream, the event id (not unique), the
-- log, the category log and the event type log; no correlation or
-- causation index unless the deployment creates it
SELECT indexname, indexdef ~ 'UNIQUE' AS is_unique FROM pg_indexes
 WHERE schemaname = 'es' AND tablename = 'events' ORDER BY 1;

-- a given id that is already in the stream, with other events in the batch
-- around it: a partial overlap, refused and nothing written
SELECT regexp_replace(try(format($$SELECT es.es_append('ids-gen', 51, '[{"type": "N", "data": 1}, {"type": "A", "data": 3, "id": "%s"}]')$$,
                  (SELECT event_id FROM es.events WHERE stream_id = 'ids-gen' AND version = 3))),
                      '[0-9a-f-]{36}', '<id>');
SELECT es.es_stream_version('ids-gen'), (SELECT count(*) FROM es.events WHERE stream_id = 'ids-gen') AS events;

-- the same id in two streams: two events (ids are unique within a stream)
SELECT (es.es_append('ids-a', 0, '[{"type": "A", "data": 1, "id": "bbbbbbbb-0000-4000-8000-000000000001"}]')).version,
       (es.es_append('ids-b', 0, '[{"type": "A", "data": 1, "id": "bbbbbbbb-0000-4000-8000-000000000001"}]')).version;
