-- chain_attack: the hash chain of issue 15 (es.events.hash) checked by an
-- independent reference verifier in plain SQL (test/sql/chain_reference.sql,
-- no es_ext code) after appends of every shape: one event and batches, with
-- and without tags and metadata, unicode, numbers jsonb keeps as written,
-- keys needing escapes, TOASTed and compressed data; idempotent replays;
-- savepoints rolled back; aborted transactions; a conditional append; a
-- predecessor hidden by row level security; and the refusals of an archived
-- or erased stream whatever the expected version.
\set ECHO none
\set QUIET on
\i test/sql/chain_reference.sql
\set QUIET off
\set ECHO all
SET timezone = 'UTC';

-- the reference verifier against known answers computed outside PostgreSQL
-- (Python's hashlib and struct from the documented canonical form)
SELECT encode(chain_ref.event_hash(sha256('prev'), ROW(NULL, 'kat-1', 3,
         '01890a5d-ac96-774b-bcce-b302099a8057', 'Tést', 2, '{"a": [1, 2.50, "x\"y"], "b": null}',
         NULL, '2026-01-02 03:04:05.678901+00', NULL, 0, '0', '{t:1,ü}', NULL)::es.events), 'hex')
       = '77dfa4622d2a98837425b1e17887be32730f13fb78183e75b57b8111cc767b6e' AS known_answer_1;
SELECT encode(chain_ref.event_hash(NULL, ROW(NULL, 'kat-1', 1,
         '01890a5d-ac96-774b-bcce-b302099a8057', 'A', 1, '{}',
         '{"m":1}', '2026-01-02 03:04:05.678901+00', NULL, 0, '0', NULL, NULL)::es.events), 'hex')
       = 'b0dad297b7c38b910554b96a3335a15f8c05ae6b99c890f8fe6af768a20054d2' AS known_answer_2;

-- appends of every shape
SELECT version FROM es.es_append('ca-1', 0, '[{"type": "A", "data": {}}]');
SELECT version FROM es.es_append('ca-1', 1, '[
  {"type": "B", "data": {"x": 1.0, "y": 1.00, "z": 1e100, "w": -0.0, "t": 1e-300,
                         "big": 123456789012345678901234567890.123456789,
                         "esc\"ape\\d\n": "é\u00e9\u0001\"\\\n\t", "": ""},
   "metadata": {"m": [1, 2, {"k": null}], "": {}}, "tags": ["t:1", "ü", "a\"b", " "]},
  {"type": "C", "data": [1, 2, 3], "tags": []},
  {"type": "D", "data": "str", "schema_version": 7},
  {"type": "Ünïcødé 日本", "data": {"日本": "語", "emoji": "\ud83d\ude00"}, "metadata": {}},
  {"type": "E", "data": null},
  {"type": "F", "data": false, "metadata": null}]');
SELECT version FROM es.es_append('ca-ü日本-1', NULL, '[{"type": "U", "data": {"k": "日本語"}, "tags": ["日本"]}]');
-- TOASTed and compressed: data and metadata far above 2 kB
SELECT version FROM es.es_append('ca-big', NULL, jsonb_build_array(jsonb_build_object(
  'type', 'Big', 'data', jsonb_build_object('s', repeat('abcdefgh', 5000)),
  'metadata', jsonb_build_object('r', (SELECT jsonb_agg(md5(i::text)) FROM generate_series(1, 2000) AS i)))));
SELECT pg_column_compression(data) IS NOT NULL AS data_compressed, pg_column_size(metadata) > 2000 AS metadata_toasted
  FROM es.events WHERE stream_id = 'ca-big';
-- a batch of 100, with the next one chaining to its last event
SELECT version FROM es.es_append('ca-batch', 0, (SELECT jsonb_agg(jsonb_build_object(
  'type', 'E' || i, 'data', jsonb_build_object('i', i, 'f', i / 3.0), 'tags', jsonb_build_array('n:' || i % 3)))
  FROM generate_series(1, 100) AS i));
SELECT version FROM es.es_append('ca-batch', 100, '[{"type": "After", "data": {}}]');
SELECT count(*) AS events, count(hash) AS hashed, count(DISTINCT hash) AS distinct_hashes,
       bool_and(octet_length(hash) = 32) AS all_sha256
  FROM es.events WHERE stream_id LIKE 'ca-%';
SELECT * FROM chain_ref.problems('ca-%');

-- idempotent replays change no hash and add no event
CREATE TEMP TABLE ca_before AS SELECT stream_id, version, hash FROM es.events WHERE stream_id LIKE 'ca-id%';
SELECT version FROM es.es_append('ca-id', NULL, '[
  {"id": "aaaaaaaa-0000-4000-8000-000000000001", "type": "A", "data": {"a": 1.0}},
  {"id": "aaaaaaaa-0000-4000-8000-000000000002", "type": "B", "data": {"a": 1.00}, "tags": ["x"]}]');
CREATE TEMP TABLE ca_first AS SELECT stream_id, version, hash FROM es.events WHERE stream_id = 'ca-id';
SELECT version FROM es.es_append('ca-id', NULL, '[
  {"id": "aaaaaaaa-0000-4000-8000-000000000001", "type": "A", "data": {"a": 1.0}},
  {"id": "aaaaaaaa-0000-4000-8000-000000000002", "type": "B", "data": {"a": 1.00}, "tags": ["x"]}]');
SELECT version FROM es.es_append('ca-id', 0, '[
  {"id": "aaaaaaaa-0000-4000-8000-000000000001", "type": "A", "data": {"a": 1.0}},
  {"id": "aaaaaaaa-0000-4000-8000-000000000002", "type": "B", "data": {"a": 1.00}, "tags": ["x"]}]');
SELECT version FROM es.es_append('ca-id', 2, '[
  {"id": "aaaaaaaa-0000-4000-8000-000000000002", "type": "B", "data": {"a": 1.00}, "tags": ["x"]}]');
SELECT (SELECT count(*) FROM es.events WHERE stream_id = 'ca-id') AS events,
       (SELECT count(*) FROM ca_first f JOIN es.events e USING (stream_id, version) WHERE e.hash = f.hash) AS same_hashes;

-- savepoints rolled back, then appended again: the chain follows what
-- committed, not what was rolled back
BEGIN;
SELECT version FROM es.es_append('ca-sp', 0, '[{"type": "Kept", "data": 1}]');
SAVEPOINT a;
SELECT version FROM es.es_append('ca-sp', 1, '[{"type": "Gone", "data": 2}, {"type": "Gone", "data": 3}]');
ROLLBACK TO SAVEPOINT a;
SELECT version FROM es.es_append('ca-sp', 1, '[{"type": "Kept", "data": 4}]');
SAVEPOINT b;
SELECT version FROM es.es_append('ca-sp', 2, '[{"type": "Kept", "data": 5}]');
RELEASE SAVEPOINT b;
SAVEPOINT c;
SELECT version FROM es.es_append('ca-sp2', 0, '[{"type": "Gone", "data": 6}]');
ROLLBACK TO SAVEPOINT c;
SELECT version FROM es.es_append('ca-sp2', 0, '[{"type": "Kept", "data": 7}]');
COMMIT;
-- an aborted transaction, then the same versions again
BEGIN;
SELECT version FROM es.es_append('ca-sp', 3, '[{"type": "Gone", "data": 8}]');
SELECT version FROM es.es_append('ca-ab', 0, '[{"type": "Gone", "data": 9}]');
ROLLBACK;
SELECT version FROM es.es_append('ca-sp', 3, '[{"type": "Kept", "data": 10}]');
SELECT version FROM es.es_append('ca-ab', 0, '[{"type": "Kept", "data": 11}]');
-- an error after the append inside a subtransaction (PL/pgSQL exception block)
DO $$
BEGIN
	PERFORM es.es_append('ca-sp', 4, '[{"type": "Gone", "data": 12}]');
	PERFORM 1 / 0;
EXCEPTION WHEN division_by_zero THEN
	PERFORM es.es_append('ca-sp', 4, '[{"type": "Kept", "data": 13}]');
END
$$;
SELECT stream_id, version, event_type, data FROM es.events WHERE stream_id IN ('ca-sp', 'ca-sp2', 'ca-ab') ORDER BY 1, 2;
SELECT * FROM chain_ref.problems('ca-%');

-- a conditional append (DCB) chains like any other
SELECT version FROM es.es_append('ca-dcb', NULL, '[{"type": "T", "data": 1, "tags": ["ca:1"]}]',
                                 '[{"tags": ["ca:none"]}]');
SELECT version FROM es.es_append('ca-dcb', 1, '[{"type": "T", "data": 2, "tags": ["ca:1"]}]',
                                 '[{"tags": ["ca:none"]}]');
SELECT regexp_replace(try($$SELECT es.es_append('ca-dcb', NULL, '[{"type": "T", "data": 3}]', '[{"tags": ["ca:1"]}]')$$),
                      'log cursor \([0-9,]+\)', 'log cursor C') AS refused;
SELECT * FROM chain_ref.problems('ca-%');

-- row level security hides the predecessor from the appender: the chain
-- still reads it (a blind append would chain from the wrong event, or from
-- zeros)
CREATE ROLE regress_ca_w IN ROLE es_writer;
ALTER TABLE es.events ENABLE ROW LEVEL SECURITY;
CREATE POLICY regress_ca_sel ON es.events FOR SELECT TO regress_ca_w
  USING (metadata ->> 'tenant' = current_user);
CREATE POLICY regress_ca_ins ON es.events FOR INSERT TO regress_ca_w WITH CHECK (true);
SELECT version FROM es.es_append('ca-rls', 0, '[{"type": "Hidden", "data": 1}, {"type": "Hidden", "data": 2}]');
SET ROLE regress_ca_w;
SELECT count(*) AS w_sees FROM es.events WHERE stream_id = 'ca-rls';
SELECT version FROM es.es_append('ca-rls', NULL, '[{"type": "Mine", "data": 3, "metadata": {"tenant": "regress_ca_w"}}]');
SELECT version FROM es.es_append('ca-rls', 3, '[{"type": "Mine", "data": 4, "metadata": {"tenant": "regress_ca_w"}},
                                                {"type": "Mine", "data": 5, "metadata": {"tenant": "regress_ca_w"}}]');
RESET ROLE;
SELECT version FROM es.es_append('ca-rls', 5, '[{"type": "Hidden", "data": 6}]');
DROP POLICY regress_ca_sel ON es.events;
DROP POLICY regress_ca_ins ON es.events;
ALTER TABLE es.events DISABLE ROW LEVEL SECURITY;
DROP ROLE regress_ca_w;
SELECT * FROM chain_ref.problems('ca-%');

-- archived and erased streams refuse every append (55000), whatever the
-- expected version; erased wins over archived.  The state is set by a
-- superuser past the guard trigger (the lifecycle functions are another
-- slice's).
SELECT version FROM es.es_append('ca-er', 0, '[{"type": "A", "data": 1}]');
SELECT version FROM es.es_append('ca-ar', 0, '[{"type": "A", "data": 1}]');
SET session_replication_role = replica;
UPDATE es.streams SET erased_at = now() WHERE stream_id = 'ca-er';
UPDATE es.streams SET archived_at = now() WHERE stream_id = 'ca-ar';
RESET session_replication_role;
SELECT store_mark();
SELECT e AS expected, try(format('SELECT es.es_append(%L, %s, %L)', 'ca-er', coalesce(e::text, 'NULL'),
                                 '[{"type": "B", "data": 2}]')) AS erased,
       try(format('SELECT es.es_append(%L, %s, %L)', 'ca-ar', coalesce(e::text, 'NULL'),
                  '[{"type": "B", "data": 2}]')) AS archived
  FROM (VALUES (0::bigint), (-1), (1), (2), (NULL)) AS v(e);
-- with given ids: a replay of the stored event, and a new one
SELECT try($$SELECT es.es_append('ca-er', NULL, '[{"id": "aaaaaaaa-0000-4000-8000-0000000000e1", "type": "B", "data": 2}]')$$);
SELECT try($$SELECT es.es_append('ca-er', 1, '[{"type": "B", "data": 2}]', '[{"tags": ["ca:none"]}]')$$);
SET session_replication_role = replica;
UPDATE es.streams SET archived_at = now() WHERE stream_id = 'ca-er';
RESET session_replication_role;
SELECT try($$SELECT es.es_append('ca-er', 1, '[{"type": "B", "data": 2}]')$$);
SELECT try($$SELECT es.es_append('ca-er', 0, '[{"type": "B", "data": 2}]')$$);
SELECT * FROM store_counts();
-- unarchived, the stream takes appends again and the chain goes on
SET session_replication_role = replica;
UPDATE es.streams SET archived_at = NULL WHERE stream_id = 'ca-ar';
RESET session_replication_role;
SELECT version FROM es.es_append('ca-ar', 1, '[{"type": "B", "data": 2}]');
-- the erased state was set by hand (no tombstone): es_verify reports it
-- ('erasure mismatch'); put the stream back as it was
SELECT version, problem FROM es.es_verify('ca-er');
SET session_replication_role = replica;
UPDATE es.streams SET erased_at = NULL, archived_at = NULL WHERE stream_id = 'ca-er';
RESET session_replication_role;
SELECT count(*) AS problems FROM es.es_verify('ca-er');

-- a stream whose oldest events are gone (what retention and erasure leave:
-- first_version raised, base_hash the hash of the event before it), set up
-- by a superuser past the guards: appends chain from the stored event
-- before them, or from base_hash when no event is left
SELECT version FROM es.es_append('ca-ret', 0, '[{"type": "A", "data": 1}, {"type": "A", "data": 2}, {"type": "A", "data": 3}]');
SET session_replication_role = replica;
UPDATE es.streams SET first_version = 3,
       base_hash = (SELECT hash FROM es.events WHERE stream_id = 'ca-ret' AND version = 2)
 WHERE stream_id = 'ca-ret';
DELETE FROM es.events WHERE stream_id = 'ca-ret' AND version < 3;
RESET session_replication_role;
SELECT version FROM es.es_append('ca-ret', 3, '[{"type": "B", "data": 4}]');
SELECT * FROM chain_ref.problems('ca-ret');
SET session_replication_role = replica;
UPDATE es.streams SET first_version = 5,
       base_hash = (SELECT hash FROM es.events WHERE stream_id = 'ca-ret' AND version = 4)
 WHERE stream_id = 'ca-ret';
DELETE FROM es.events WHERE stream_id = 'ca-ret';
RESET session_replication_role;
SELECT version FROM es.es_append('ca-ret', 4, '[{"type": "C", "data": 5}, {"type": "C", "data": 6}]');
SELECT s.first_version, s.version, e.version AS event_version,
       e.hash = chain_ref.event_hash(s.base_hash, e) AS chained_from_base_hash
  FROM es.streams AS s JOIN es.events AS e USING (stream_id) WHERE stream_id = 'ca-ret' ORDER BY e.version;
SELECT * FROM chain_ref.problems('ca-ret');
-- a damaged base hash, or a missing or hashless predecessor, refuses the
-- append (XX001): it would extend a broken chain
SET session_replication_role = replica;
UPDATE es.streams SET first_version = 7, base_hash = '\x0102' WHERE stream_id = 'ca-ret';
RESET session_replication_role;
SELECT try($$SELECT es.es_append('ca-ret', 6, '[{"type": "D", "data": 7}]')$$);
SET session_replication_role = replica;
UPDATE es.streams SET first_version = 5, base_hash = NULL WHERE stream_id = 'ca-ret';
UPDATE es.events SET hash = NULL WHERE stream_id = 'ca-ret' AND version = 6;
RESET session_replication_role;
SELECT try($$SELECT es.es_append('ca-ret', 6, '[{"type": "D", "data": 7}]')$$);
SET session_replication_role = replica;
UPDATE es.events SET hash = '\x00' WHERE stream_id = 'ca-ret' AND version = 6;
RESET session_replication_role;
SELECT try($$SELECT es.es_append('ca-ret', 6, '[{"type": "D", "data": 7}]')$$);
SET session_replication_role = replica;
DELETE FROM es.events WHERE stream_id = 'ca-ret' AND version = 6;
RESET session_replication_role;
SELECT try($$SELECT es.es_append('ca-ret', 6, '[{"type": "D", "data": 7}]')$$);
SELECT stream_id, version, regexp_replace(problem, '[0-9a-f]{64}', 'H', 'g') AS problem FROM chain_ref.problems('ca-ret');
-- remove the damaged stream: the store must verify for the tests after this one
SET session_replication_role = replica;
DELETE FROM es.events WHERE stream_id = 'ca-ret';
DELETE FROM es.streams WHERE stream_id = 'ca-ret';
RESET session_replication_role;

-- every chain of this file verifies; then the reference verifier catches
-- an edit, a deletion, an insertion, a reordering and a removed hash
SELECT * FROM chain_ref.problems('ca-%');
BEGIN;
SET LOCAL session_replication_role = replica;
UPDATE es.events SET data = '{"x": 1.00}' WHERE stream_id = 'ca-1' AND version = 2;
UPDATE es.events SET hash = NULL WHERE stream_id = 'ca-1' AND version = 5;
DELETE FROM es.events WHERE stream_id = 'ca-batch' AND version = 50;
DELETE FROM es.events WHERE stream_id = 'ca-batch' AND version = 101;
UPDATE es.events SET version = -version WHERE stream_id = 'ca-sp' AND version IN (2, 3);
UPDATE es.events SET version = 5 + version WHERE stream_id = 'ca-sp' AND version IN (-2, -3);
INSERT INTO es.events (stream_id, version, event_id, event_type, data, recorded_at, era, tx_id, hash)
  SELECT 'ca-ab', 2, gen_random_uuid(), 'Forged', '{}', now(), 0, '1', hash FROM es.events WHERE stream_id = 'ca-ab' AND version = 1;
SELECT stream_id, version, regexp_replace(problem, '[0-9a-f]{64}', 'H', 'g') AS problem FROM chain_ref.problems('ca-%');
ROLLBACK;
DROP SCHEMA chain_ref CASCADE;
