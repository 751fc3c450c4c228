-- lifecycle_adversary: attacks on erasure from a user's side.  The
-- tombstone's event type is reserved: a forged tombstone (appended or
-- imported into a live stream) would make a read model or consumer that
-- erases its rows on es.stream_erased drop a customer's data, and make a
-- live stream look erased.  Only es_erase_stream writes it.

SELECT (es.es_append('lca-1', 0, '[{"type":"a","data":{}}]')).version;
SELECT try($$SELECT es.es_append('lca-1', NULL, '[{"type":"es.stream_erased","data":{"events":1}}]')$$);
SELECT try($$SELECT es.es_append('lca-2', 0, '[{"type":"a","data":{}},{"type":"es.stream_erased","data":{}}]')$$);
-- other types of the es. prefix and lookalikes stay the user's
SELECT (es.es_append('lca-1', NULL, '[{"type":"es.stream_erased2","data":{}},{"type":"ES.STREAM_ERASED","data":{}}]')).version;

-- es_import refuses it too
CREATE TEMP TABLE lca_src (LIKE es.import_event);
INSERT INTO lca_src (stream_id, version, event_id, event_type, schema_version, data, metadata, recorded_at)
VALUES ('lca-3', 1, gen_random_uuid(), 'a', 1, '{}', NULL, now()),
       ('lca-3', 2, gen_random_uuid(), 'es.stream_erased', 1, '{"events": 1}', NULL, now());
SELECT try($$SELECT es.es_import('lca_src')$$);
SELECT count(*) AS lca3_events FROM es.events WHERE stream_id = 'lca-3';

-- the real tombstone is still written, and the chain verifies
SELECT events FROM es.es_erase_stream('lca-1', 'adversary');
SELECT version, event_type FROM es.events WHERE stream_id = 'lca-1' ORDER BY version;
-- an import cannot recreate the erased stream either
DELETE FROM lca_src;
INSERT INTO lca_src (stream_id, version, event_id, event_type, schema_version, data, metadata, recorded_at)
VALUES ('lca-1', 1, gen_random_uuid(), 'a', 1, '{}', NULL, now());
SELECT try($$SELECT es.es_import('lca_src')$$);
SELECT version, event_type FROM es.events WHERE stream_id = 'lca-1' ORDER BY version;
SELECT count(*) AS problems FROM es.es_verify_all();

-- an outbox consumer holds a lease on the stream's deliveries when the
-- stream is erased: its ack and nack find nothing (no error, nothing comes
-- back), and the next claim gets only the tombstone
SELECT es.es_outbox_route('lcb');
SELECT es.es_outbox_create_group('regress_lca') IS NOT NULL AS created;
SELECT (es.es_append('lcb-1', 0, '[{"type":"a","data":{"n":1}},{"type":"b","data":{"n":2}}]')).version;
CREATE TEMP TABLE lca_claim AS SELECT * FROM es.es_outbox_claim('regress_lca', 10, '1 minute');
SELECT stream_id, version FROM lca_claim ORDER BY version;
SELECT events FROM es.es_erase_stream('lcb-1', 'erased under a lease');
SELECT es.es_outbox_ack('regress_lca', (SELECT lease FROM lca_claim LIMIT 1), (SELECT array_agg(position) FROM lca_claim)) AS acked;
SELECT es.es_outbox_nack('regress_lca', (SELECT lease FROM lca_claim LIMIT 1), (SELECT array_agg(position) FROM lca_claim), 'late') AS nacked;
SELECT stream_id, version, event_type FROM es.es_outbox_claim('regress_lca', 10, '1 minute');
SELECT count(*) AS outbox_rows_of_lcb1 FROM es.outbox WHERE aggregateid = 'lcb-1' AND type <> 'es.stream_erased';

-- a retention policy whose max_age reaches before 4713 BC made every
-- es_apply_retention fail (22008: now() - max_age), for all policies: refused
SELECT try($$SELECT es.es_set_retention('lca', NULL, '178000000 years', NULL)$$);
SELECT try($$SELECT es.es_set_retention('lca', NULL, '2147483647 days 2147483647 months', NULL)$$);
SELECT try($$SELECT es.es_set_retention(NULL, 'lca-2', '1000 years 1 day', NULL)$$);
SELECT es.es_set_retention('lca', NULL, '1000 years', NULL);
SELECT streams FROM es.es_apply_retention(1000);
SELECT es.es_set_retention('lca', NULL, NULL, NULL);
