-- chain_import: es_import chains what it imports (issue 15), checked by the
-- independent reference verifier (test/sql/chain_reference.sql): a new
-- stream, a stream that already holds appended events, back-dated
-- recorded_at, tags and metadata; appends after an import chain on.
-- (Fails until es_import computes the chain: the CHAIN slice.)
\set ECHO none
\set QUIET on
\i test/sql/chain_reference.sql
\set QUIET off
\set ECHO all
SELECT version FROM es.es_append('cimp-2', 0, '[{"type": "Appended", "data": 1}]');
CREATE TEMP TABLE staging (LIKE es.import_event);
INSERT INTO staging VALUES
  ('cimp-1', 1, NULL, 'I', 1, '{"a": 1.0}', NULL, '2020-01-01 00:00:00+00', NULL),
  ('cimp-1', 2, 'aaaaaaaa-0000-4000-8000-0000000000c1', 'I', 3, '{"a": 2.00}', '{"m": "ü"}', '2020-01-02 00:00:00+00', '{x,y}'),
  ('cimp-2', 2, NULL, 'Imported', 1, '{"b": 1}', NULL, NULL, NULL),
  ('cimp-2', 3, NULL, 'Imported', 1, '{"b": 2}', NULL, NULL, '{z}');
SELECT streams, new_streams, events FROM es.es_import('staging');
SELECT stream_id, version, event_type, octet_length(hash) AS hash_bytes FROM es.events
 WHERE stream_id LIKE 'cimp-%' ORDER BY 1, 2;
SELECT * FROM chain_ref.problems('cimp-%');
SELECT version FROM es.es_append('cimp-1', 2, '[{"type": "After", "data": {}}]');
SELECT version FROM es.es_append('cimp-2', 3, '[{"type": "After", "data": {}}]');
SELECT * FROM chain_ref.problems('cimp-%');
-- every chain of the whole store, after every earlier test of the schedule
SELECT count(*) AS problems_in_store FROM chain_ref.problems();
DROP SCHEMA chain_ref CASCADE;
