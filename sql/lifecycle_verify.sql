--
-- lifecycle_verify: erasure, retention, archive, unarchive and a forgotten
-- data subject leave every hash chain verifiable (issue 15); tampering with
-- what they leave behind (a tombstone, an archived event, a stream's base
-- hash, a retained stream's events) is caught.  Runs last: it restores what
-- it tampers with, and the whole store verifies at the end.
--
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS pgcrypto;

SELECT (es.es_append('lv-erase-1', 0, '[{"type": "A", "data": {"i": 1}}, {"type": "B", "data": {"i": 2}}]')).version;
SELECT (es.es_append('lv-ret-1', 0, (SELECT jsonb_agg(jsonb_build_object('type', 'T', 'data', jsonb_build_object('i', i)) ORDER BY i)
									  FROM generate_series(1, 10) AS i))).version;
SELECT (es.es_append('lv-arch-1', 0, '[{"type": "A", "data": {}}, {"type": "B", "data": {}}]')).version;
SELECT (es.es_append('lv-pii-1', 0, '[{"type": "Registered", "data": {"email": "ann@example.com", "n": 1},
									  "personal": {"subject": "lv-subject-1", "fields": ["email"]}}]')).version;

-- the heads an auditor exported before anything happened
CREATE TEMP TABLE lv_export AS
SELECT jsonb_agg(h ORDER BY h.stream_id) AS heads FROM es.es_heads() AS h WHERE h.stream_id LIKE 'lv-%';

-- erase, retain, archive, forget
SELECT events, first_version, last_version FROM es.es_erase_stream('lv-erase-1', 'lifecycle_verify');
SELECT es.es_set_retention(NULL, 'lv-ret-1', NULL, 3);
SELECT count(*) > 0 AS applied FROM es.es_apply_retention(1000000);
SELECT es.es_set_retention(NULL, 'lv-ret-1', NULL, NULL);
SELECT es.es_archive_stream('lv-arch-1');
SELECT es.es_forget_subject('lv-subject-1');

SELECT stream_id, first_version, version, base_hash IS NOT NULL AS has_base, archived_at IS NOT NULL AS archived,
	   erased_at IS NOT NULL AS erased
  FROM es.streams WHERE stream_id LIKE 'lv-%' ORDER BY 1;
SELECT stream_id, version, event_type FROM es.events WHERE stream_id = 'lv-erase-1';
SELECT version FROM es.es_read_stream('lv-ret-1');
SELECT data FROM es.es_read_stream('lv-pii-1');

-- every chain verifies: per stream, the whole store, and against the export
SELECT s.stream_id, count(v.*) AS problems
  FROM es.streams AS s LEFT JOIN LATERAL es.es_verify(s.stream_id) AS v ON true
 WHERE s.stream_id LIKE 'lv-%' GROUP BY 1 ORDER BY 1;
SELECT count(*) AS problems_in_store FROM es.es_verify_all();
SELECT stream_id, problem FROM es.es_verify_heads((SELECT heads FROM lv_export)) ORDER BY 1;

-- unarchive: still verifies
SELECT es.es_unarchive_stream('lv-arch-1');
SELECT count(*) AS problems FROM es.es_verify('lv-arch-1');

-- tampering with what the lifecycle left behind is caught
CREATE TEMP TABLE lv_saved AS SELECT * FROM es.events WHERE stream_id IN ('lv-erase-1', 'lv-ret-1');
ALTER TABLE es.events DISABLE TRIGGER es_guard_write;
ALTER TABLE es.streams DISABLE TRIGGER es_guard_write;
-- the tombstone claims fewer erased events
UPDATE es.events SET data = jsonb_set(data, '{events}', '1') WHERE stream_id = 'lv-erase-1';
SELECT version, problem FROM es.es_verify('lv-erase-1');
UPDATE es.events AS e SET data = s.data FROM lv_saved AS s WHERE e.stream_id = s.stream_id AND e.version = s.version;
-- a retained stream's base hash replaced
CREATE TEMP TABLE lv_base AS SELECT stream_id, base_hash FROM es.streams WHERE stream_id = 'lv-ret-1';
UPDATE es.streams SET base_hash = sha256('forged') WHERE stream_id = 'lv-ret-1';
SELECT version, problem FROM es.es_verify('lv-ret-1');
UPDATE es.streams AS s SET base_hash = b.base_hash FROM lv_base AS b WHERE s.stream_id = b.stream_id;
-- an event forged back under a retained stream's first version
INSERT INTO es.events (stream_id, version, event_id, event_type, data, recorded_at, era, tx_id, hash)
SELECT 'lv-ret-1', 7, gen_random_uuid(), 'T', '{"i": 7}', now(), 0, '1', sha256('x')
 WHERE (SELECT first_version FROM es.streams WHERE stream_id = 'lv-ret-1') = 8;
SELECT version, problem FROM es.es_verify('lv-ret-1');
DELETE FROM es.events WHERE stream_id = 'lv-ret-1' AND version = 7;
-- the tombstone deleted
DELETE FROM es.events WHERE stream_id = 'lv-erase-1';
SELECT version, problem FROM es.es_verify('lv-erase-1');
INSERT INTO es.events (global_position, stream_id, version, event_id, event_type, schema_version, data, metadata,
					   recorded_at, era, tx_id, tags, hash) OVERRIDING SYSTEM VALUE
SELECT global_position, stream_id, version, event_id, event_type, schema_version, data, metadata, recorded_at,
	   era, tx_id, tags, hash
  FROM lv_saved WHERE stream_id = 'lv-erase-1';
-- an erasure undone: the stream row no longer marked erased ...
CREATE TEMP TABLE lv_erased AS SELECT erased_at FROM es.streams WHERE stream_id = 'lv-erase-1';
UPDATE es.streams SET erased_at = NULL WHERE stream_id = 'lv-erase-1';
SELECT version, problem, detail FROM es.es_verify('lv-erase-1');
-- ... which lets an append in after the tombstone
SELECT (es.es_append('lv-erase-1', NULL, '[{"type": "Back", "data": {}}]')).version;
SELECT version, problem, detail FROM es.es_verify('lv-erase-1');
DELETE FROM es.events WHERE stream_id = 'lv-erase-1' AND version = 4;
UPDATE es.streams SET erased_at = (SELECT erased_at FROM lv_erased), version = 3 WHERE stream_id = 'lv-erase-1';
-- a live stream marked erased
UPDATE es.streams SET erased_at = now() WHERE stream_id = 'lv-pii-1';
SELECT version, problem, detail FROM es.es_verify('lv-pii-1');
UPDATE es.streams SET erased_at = NULL WHERE stream_id = 'lv-pii-1';
ALTER TABLE es.events ENABLE TRIGGER es_guard_write;
ALTER TABLE es.streams ENABLE TRIGGER es_guard_write;

-- after the repairs the whole store verifies again
SELECT count(*) AS problems_in_store FROM es.es_verify_all();
RESET client_min_messages;
