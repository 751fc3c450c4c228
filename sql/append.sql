-- append: es_append, every expected-version form, idempotent retries,
-- metadata, and every bad input (SQLSTATE asserted, nothing written)

-- a new stream with expected version 0 (the stream must not exist)
SELECT store_mark();

SELECT version, cardinality(positions) AS n
  FROM es.es_append('acct-1', 0, '[{"type": "Opened", "data": {"owner": "ann"}},
                                    {"type": "Deposited", "data": {"amount": 10}}]');
SELECT es.es_stream_version('acct-1');
SELECT version, event_type, data, metadata FROM es.events WHERE stream_id = 'acct-1' ORDER BY version;

-- positions are returned in batch order and match the stored rows
CREATE TEMP TABLE r2 AS
SELECT * FROM es.es_append('acct-2', NULL, '[{"type": "A", "data": 1}, {"type": "B", "data": 2},
                                             {"type": "C", "data": 3}]');
SELECT version, positions = ARRAY(SELECT global_position FROM es.events
                                   WHERE stream_id = 'acct-2' ORDER BY version) AS positions_match
  FROM r2;

-- versions start at 1 and are contiguous
SELECT array_agg(version ORDER BY version) FROM es.events WHERE stream_id = 'acct-2';

-- exact expected version
SELECT version FROM es.es_append('acct-1', 2, '[{"type": "Withdrawn", "data": {"amount": 3}}]');

-- stale exact version: 40001 with constraint es_expected_version, nothing written
SELECT * FROM store_counts();
SELECT try($$SELECT es.es_append('acct-1', 2, '[{"type": "Withdrawn", "data": {}}]')$$);
SELECT * FROM store_counts();

-- expected version ahead of the stream
SELECT try($$SELECT es.es_append('acct-1', 7, '[{"type": "Withdrawn", "data": {}}]')$$);

-- 0 on an existing stream: conflict
SELECT try($$SELECT es.es_append('acct-1', 0, '[{"type": "Opened", "data": {}}]')$$);

-- exact version on a stream that does not exist: conflict, actual version 0
SELECT try($$SELECT es.es_append('acct-none', 3, '[{"type": "X", "data": {}}]')$$);

-- -1: the stream must exist
SELECT version FROM es.es_append('acct-1', -1, '[{"type": "Deposited", "data": {"amount": 5}}]');
SELECT try($$SELECT es.es_append('acct-missing', -1, '[{"type": "X", "data": {}}]')$$);
SELECT es.es_stream_version('acct-missing');

-- NULL: any version, on a new and on an existing stream
SELECT version FROM es.es_append('acct-3', NULL, '[{"type": "Opened", "data": {}}]');
SELECT version FROM es.es_append('acct-3', NULL, '[{"type": "Deposited", "data": {}}]');

-- es.streams agrees with the events
SELECT s.stream_id, s.version, s.category, (SELECT max(version) FROM es.events e WHERE e.stream_id = s.stream_id) AS max_event
  FROM es.streams s WHERE s.stream_id LIKE 'acct-%' ORDER BY 1;

-- stream ids without "-" are their own category
SELECT version FROM es.es_append('singleton', NULL, '[{"type": "X", "data": {}}]');
SELECT category FROM es.events WHERE stream_id = 'singleton';

-- metadata is kept as given; absent metadata is NULL; recorded_at is set by the server
SELECT version FROM es.es_append('acct-4', 0,
  '[{"type": "Opened", "data": {}, "metadata": {"correlation_id": "corr-1", "causation_id": "cmd-1", "user": "ann", "n": [1, 2]}},
    {"type": "Deposited", "data": {}, "metadata": {"correlation_id": "corr-1", "causation_id": "evt-1"}},
    {"type": "Noted", "data": {}}]');
SELECT version, metadata, recorded_at IS NOT NULL AS has_time,
       recorded_at <= clock_timestamp() AS in_past
  FROM es.events WHERE stream_id = 'acct-4' ORDER BY version;

-- correlation and causation ids are queryable: a fresh install has no index
-- for them (the lookups scan es.events) ...
SELECT stream_id, version FROM es.es_events_by_correlation('corr-1');
SELECT stream_id, version FROM es.es_events_by_causation('cmd-1');
SELECT count(*) AS lookup_indexes FROM pg_indexes
 WHERE schemaname = 'es' AND indexname IN ('events_correlation_idx', 'events_causation_idx');
-- (append_ids creates the optional indexes: last in the schedule, since
-- CREATE INDEX updates the statistics that later tests' plans depend on)

-- event ids: given ids are stored; missing ids are generated (version 7,
-- time-ordered: a backend's ids increase)
SELECT version FROM es.es_append('acct-5', 0,
  '[{"type": "A", "data": {}, "id": "11111111-1111-4111-8111-111111111111"},
    {"type": "B", "data": {}}]');
SELECT version, event_id = '11111111-1111-4111-8111-111111111111' AS given,
       substr(event_id::text, 15, 1) AS uuid_version
  FROM es.events WHERE stream_id = 'acct-5' ORDER BY version;

-- idempotent retry: the same batch with the same ids returns the original
-- result and writes nothing, whatever the expected version says now
SELECT version, cardinality(positions) FROM es.es_append('acct-6', 0,
  '[{"type": "A", "data": 1, "id": "22222222-2222-4222-8222-222222222221"},
    {"type": "B", "data": 2, "id": "22222222-2222-4222-8222-222222222222"}]');
SELECT version FROM es.es_append('acct-6', 2, '[{"type": "C", "data": 3}]');
SELECT * FROM store_counts();
SELECT r.version,
       r.positions = ARRAY(SELECT global_position FROM es.events
                            WHERE stream_id = 'acct-6' AND version <= 2 ORDER BY version) AS same_positions
  FROM es.es_append('acct-6', 0,
  '[{"type": "A", "data": 1, "id": "22222222-2222-4222-8222-222222222221"},
    {"type": "B", "data": 2, "id": "22222222-2222-4222-8222-222222222222"}]') AS r;
SELECT * FROM store_counts();
SELECT es.es_stream_version('acct-6');

-- the same ids in another stream are new events there
SELECT version FROM es.es_append('acct-7', 0,
  '[{"type": "A", "data": 1, "id": "22222222-2222-4222-8222-222222222221"}]');

-- a batch that only partly overlaps is refused (42710), nothing written
SELECT * FROM store_counts();
SELECT try($$SELECT es.es_append('acct-6', NULL,
  '[{"type": "B", "data": 2, "id": "22222222-2222-4222-8222-222222222222"},
    {"type": "D", "data": 4, "id": "22222222-2222-4222-8222-222222222229"}]')$$);
SELECT try($$SELECT es.es_append('acct-6', NULL,
  '[{"type": "A", "data": 1, "id": "22222222-2222-4222-8222-222222222221"},
    {"type": "B", "data": 2}]')$$);
-- same ids in another order
SELECT try($$SELECT es.es_append('acct-6', NULL,
  '[{"type": "B", "data": 2, "id": "22222222-2222-4222-8222-222222222222"},
    {"type": "A", "data": 1, "id": "22222222-2222-4222-8222-222222222221"}]')$$);
SELECT * FROM store_counts();

-- a "retry" whose ids match but whose events differ is not a retry: refused
-- (42710), nothing written; the detail names the event and what differs
SELECT version FROM es.es_append('acct-11', 0,
  '[{"type": "A", "data": {"n": 1, "s": "x"}, "id": "44444444-4444-4444-8444-444444444441"},
    {"type": "B", "data": [1, 2], "metadata": {"user": "ann"}, "schema_version": 2,
     "id": "44444444-4444-4444-8444-444444444442"}]');
SELECT * FROM store_counts();
-- other data
SELECT try($$SELECT es.es_append('acct-11', NULL,
  '[{"type": "A", "data": {"n": 2, "s": "x"}, "id": "44444444-4444-4444-8444-444444444441"},
    {"type": "B", "data": [1, 2], "metadata": {"user": "ann"}, "schema_version": 2,
     "id": "44444444-4444-4444-8444-444444444442"}]')$$);
-- other type
SELECT try($$SELECT es.es_append('acct-11', NULL,
  '[{"type": "A", "data": {"n": 1, "s": "x"}, "id": "44444444-4444-4444-8444-444444444441"},
    {"type": "C", "data": [1, 2], "metadata": {"user": "ann"}, "schema_version": 2,
     "id": "44444444-4444-4444-8444-444444444442"}]')$$);
-- other metadata, metadata left out, metadata added
SELECT try($$SELECT es.es_append('acct-11', NULL,
  '[{"type": "A", "data": {"n": 1, "s": "x"}, "id": "44444444-4444-4444-8444-444444444441"},
    {"type": "B", "data": [1, 2], "metadata": {"user": "bob"}, "schema_version": 2,
     "id": "44444444-4444-4444-8444-444444444442"}]')$$);
SELECT try($$SELECT es.es_append('acct-11', NULL,
  '[{"type": "A", "data": {"n": 1, "s": "x"}, "id": "44444444-4444-4444-8444-444444444441"},
    {"type": "B", "data": [1, 2], "schema_version": 2,
     "id": "44444444-4444-4444-8444-444444444442"}]')$$);
SELECT try($$SELECT es.es_append('acct-11', NULL,
  '[{"type": "A", "data": {"n": 1, "s": "x"}, "metadata": {}, "id": "44444444-4444-4444-8444-444444444441"},
    {"type": "B", "data": [1, 2], "metadata": {"user": "ann"}, "schema_version": 2,
     "id": "44444444-4444-4444-8444-444444444442"}]')$$);
-- other schema_version (left out means 1)
SELECT try($$SELECT es.es_append('acct-11', NULL,
  '[{"type": "A", "data": {"n": 1, "s": "x"}, "id": "44444444-4444-4444-8444-444444444441"},
    {"type": "B", "data": [1, 2], "metadata": {"user": "ann"},
     "id": "44444444-4444-4444-8444-444444444442"}]')$$);
-- a single-event retry
SELECT try($$SELECT es.es_append('acct-11', NULL,
  '[{"type": "A", "data": {"n": 1, "s": "y"}, "id": "44444444-4444-4444-8444-444444444441"}]')$$);
SELECT * FROM store_counts();
SELECT es.es_stream_version('acct-11');
-- equal JSON is equal however it is written: key order, number spelling,
-- "metadata": null for no metadata, "schema_version": 1 for the default
SELECT version, cardinality(positions) FROM es.es_append('acct-11', NULL,
  '[{"type": "A", "data": {"s": "x", "n": 1.0}, "metadata": null, "schema_version": 1,
     "id": "44444444-4444-4444-8444-444444444441"},
    {"type": "B", "data": [1, 2.00], "metadata": {"user": "ann"}, "schema_version": 2.0,
     "id": "44444444-4444-4444-8444-444444444442"}]');
SELECT * FROM store_counts();

-- schema_version: the shape version of data, default 1
SELECT version FROM es.es_append('acct-10', 0,
  '[{"type": "A", "data": {}, "schema_version": 3}, {"type": "B", "data": {}}]');
SELECT version, schema_version FROM es.events WHERE stream_id = 'acct-10' ORDER BY version;

-- bad input: each gets its own SQLSTATE and writes nothing
SELECT * FROM store_counts();
SELECT try($$SELECT es.es_append(NULL, NULL, '[{"type": "A", "data": {}}]')$$);
SELECT try($$SELECT es.es_append('', NULL, '[{"type": "A", "data": {}}]')$$);
SELECT try($$SELECT es.es_append('bad-1', NULL, NULL)$$);
SELECT try($$SELECT es.es_append('bad-1', NULL, '{"type": "A", "data": {}}')$$);
SELECT try($$SELECT es.es_append('bad-1', NULL, '"A"')$$);
SELECT try($$SELECT es.es_append('bad-1', NULL, '[]')$$);
SELECT try($$SELECT es.es_append('bad-1', NULL, '[{"data": {}}]')$$);
SELECT try($$SELECT es.es_append('bad-1', NULL, '[{"type": "A"}]')$$);
SELECT try($$SELECT es.es_append('bad-1', NULL, '[{"type": "A", "data": {}}, 42]')$$);
SELECT try($$SELECT es.es_append('bad-1', NULL, '[{"type": "A", "data": {}}, [1]]')$$);
SELECT try($$SELECT es.es_append('bad-1', NULL, '[{"type": 7, "data": {}}]')$$);
SELECT try($$SELECT es.es_append('bad-1', NULL, '[{"type": "", "data": {}}]')$$);
SELECT try($$SELECT es.es_append('bad-1', NULL, '[{"type": "A", "data": {}, "id": "not-a-uuid"}]')$$);
SELECT try($$SELECT es.es_append('bad-1', NULL, '[{"type": "A", "data": {}, "id": 12}]')$$);
SELECT try($$SELECT es.es_append('bad-1', NULL,
  '[{"type": "A", "data": {}, "id": "33333333-3333-4333-8333-333333333333"},
    {"type": "B", "data": {}, "id": "33333333-3333-4333-8333-333333333333"}]')$$);
SELECT try($$SELECT es.es_append('bad-1', NULL, '[{"type": "A", "data": {}, "metadata": [1]}]')$$);
SELECT try($$SELECT es.es_append('bad-1', NULL, '[{"type": "A", "data": {}, "metadata": {"correlation_id": 5}}]')$$);
SELECT try($$SELECT es.es_append('bad-1', NULL, '[{"type": "A", "data": {}, "metdata": {}}]')$$);
SELECT try($$SELECT es.es_append('bad-1', NULL, '[{"type": "A", "data": {}, "schema_version": 0}]')$$);
SELECT try($$SELECT es.es_append('bad-1', NULL, '[{"type": "A", "data": {}, "schema_version": 1.5}]')$$);
SELECT try($$SELECT es.es_append('bad-1', NULL, '[{"type": "A", "data": {}, "schema_version": "2"}]')$$);
SELECT try($$SELECT es.es_append('bad-1', NULL, '[{"type": "A", "data": {}, "schema_version": 1e12}]')$$);
SELECT try($$SELECT es.es_append('bad-1', -2, '[{"type": "A", "data": {}}]')$$);
SELECT try($$SELECT es.es_append('bad-1', -9223372036854775808, '[{"type": "A", "data": {}}]')$$);
-- a bad event after good ones: the whole batch is refused
SELECT try($$SELECT es.es_append('bad-1', NULL, '[{"type": "A", "data": {}}, {"type": "B", "data": {}}, {"type": "C"}]')$$);
SELECT * FROM store_counts();
SELECT es.es_stream_version('bad-1');

-- the error names the event that is wrong
\set VERBOSITY default
\set SHOW_CONTEXT always
SELECT es.es_append('bad-1', NULL, '[{"type": "A", "data": {}}, {"type": "B", "data": {}}, {"type": "C"}]');
\set SHOW_CONTEXT errors

-- a conflict inside a larger transaction rolls back only with it
BEGIN;
SELECT version FROM es.es_append('acct-8', 0, '[{"type": "A", "data": {}}]');
SAVEPOINT s;
SELECT try($$SELECT es.es_append('acct-8', 0, '[{"type": "A", "data": {}}]')$$);
ROLLBACK TO s;
SELECT version FROM es.es_append('acct-8', 1, '[{"type": "B", "data": {}}]');
COMMIT;
SELECT es.es_stream_version('acct-8');

-- an append rolled back with its transaction leaves nothing
BEGIN;
SELECT version FROM es.es_append('acct-9', 0, '[{"type": "A", "data": {}}]');
ROLLBACK;
SELECT es.es_stream_version('acct-9'), (SELECT count(*) FROM es.events WHERE stream_id = 'acct-9');
