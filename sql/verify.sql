-- verify: the hash chain of every stream (es_verify, es_verify_all), the
-- stream heads (es_heads, es_digest, es_verify_heads), and the chains that
-- es_import writes

-- every stream the earlier test files appended, imported, folded,
-- projected or restored has a chain that verifies
SELECT count(*) AS problems FROM es.es_verify_all();
SELECT count(*) > 0 AS has_streams, bool_and(e.hash IS NOT NULL AND length(e.hash) = 32) AS all_hashed
  FROM es.events AS e;

-- a new stream verifies; its chain starts from 32 zero bytes
SELECT (es.es_append('ver_a-1', 0, '[{"type": "A", "data": {"i": 1}}, {"type": "B", "data": {"i": 2}, "metadata": {"m": 1}, "tags": ["t1", "t2"]}]')).version;
SELECT * FROM es.es_verify('ver_a-1');
SELECT version, length(hash), hash <> '\x'::bytea FROM es.events WHERE stream_id = 'ver_a-1' ORDER BY version;
-- the hashes are those of the documented canonical form: recomputed here in
-- SQL, sha256("es_ext chain 1" || prev || fields), for the first event
SELECT e.hash = sha256('es_ext chain 1'::bytea || decode(repeat('00', 32), 'hex')
		|| int4send(length(convert_to(e.stream_id, 'UTF8'))) || convert_to(e.stream_id, 'UTF8')
		|| int4send(8) || int8send(e.version)
		|| int4send(16) || uuid_send(e.event_id)
		|| int4send(length(convert_to(e.event_type, 'UTF8'))) || convert_to(e.event_type, 'UTF8')
		|| int4send(4) || int4send(e.schema_version)
		|| int4send(length(convert_to(e.data::text, 'UTF8'))) || convert_to(e.data::text, 'UTF8')
		|| '\xffffffff'::bytea
		|| '\xffffffff'::bytea
		|| int4send(8) || int8send(((extract(epoch FROM e.recorded_at - '2000-01-01 00:00:00+00') * 1000000)::bigint)))
	   AS canonical
  FROM es.events AS e WHERE e.stream_id = 'ver_a-1' AND e.version = 1;
-- appends continue the chain
SELECT (es.es_append('ver_a-1', 2, '[{"type": "C", "data": {"i": 3}}]')).version;
SELECT * FROM es.es_verify('ver_a-1');

-- a stream that does not exist has no events: it verifies (as
-- es_stream_version says 0 for it)
SELECT * FROM es.es_verify('ver_nope');
SELECT es.es_stream_version('ver_nope');

-- bad inputs
SELECT try($$SELECT * FROM es.es_verify(NULL)$$);
SELECT try($$SELECT * FROM es.es_verify_heads(NULL)$$);
SELECT try($$SELECT * FROM es.es_verify_heads('{"a": 1}')$$);
SELECT try($$SELECT es.es_digest('"x"')$$);
SELECT try($$SELECT * FROM es.es_verify_heads('[{"stream_id": "ver_a-1", "version": 1}]')$$);
SELECT try($$SELECT * FROM es.es_verify_heads('[{"stream_id": "ver_a-1", "version": 1, "head_hash": "\\x00"}]')$$);
SELECT try($$SELECT * FROM es.es_verify_heads('[{"version": 1, "head_hash": "\\x0000000000000000000000000000000000000000000000000000000000000000"}]')$$);

-- heads: one per stream, in stream_id byte order; the head hash is the
-- stored hash of the last event
SELECT h.stream_id, h.first_version, h.version,
	   h.head_hash = (SELECT e.hash FROM es.events AS e WHERE e.stream_id = h.stream_id AND e.version = h.version) AS head_is_last_hash
  FROM es.es_heads() AS h WHERE h.stream_id LIKE 'ver\_%';
SELECT count(*) = (SELECT count(*) FROM es.streams) AS every_stream FROM es.es_heads();
SELECT array_agg(stream_id ORDER BY n) = array_agg(stream_id ORDER BY stream_id COLLATE "C") AS byte_order
  FROM es.es_heads() WITH ORDINALITY AS h(stream_id, first_version, version, head_hash, n);

-- the digest: of the current heads, or of an export of them (the same);
-- it changes with any append
CREATE TEMP TABLE ver_export AS SELECT jsonb_agg(h) AS heads, es.es_digest() AS digest FROM es.es_heads() AS h;
SELECT length(digest), es.es_digest(heads) = digest AS export_digest_matches FROM ver_export;
SELECT * FROM es.es_verify_heads((SELECT heads FROM ver_export));
SELECT (es.es_append('ver_a-1', NULL, '[{"type": "D", "data": {}}]')).version;
SELECT es.es_digest() <> digest AS digest_moves, es.es_digest(heads) = digest AS export_unchanged FROM ver_export;
-- heads that moved on are still on their chains
SELECT * FROM es.es_verify_heads((SELECT heads FROM ver_export));
-- an empty export checks nothing; streams created since are not reported
SELECT * FROM es.es_verify_heads('[]');
SELECT length(es.es_digest('[]'));
-- an earlier head of a stream that does not exist, and one that is not on
-- its stream's chain (forged export entries)
SELECT stream_id, version, problem, detail FROM es.es_verify_heads(
	'[{"stream_id": "ver_ghost", "version": 1, "head_hash": "\\x0000000000000000000000000000000000000000000000000000000000000000"},
	  {"stream_id": "ver_a-1", "version": 2, "head_hash": "\\x0000000000000000000000000000000000000000000000000000000000000001"},
	  {"stream_id": "ver_a-1", "version": 9, "head_hash": "\\x0000000000000000000000000000000000000000000000000000000000000001"}]');

-- es_import chains its events as es_append does: into new streams, after
-- appended events, and es_append continues an imported chain
CREATE TEMP TABLE ver_staging (LIKE es.import_event);
INSERT INTO ver_staging VALUES
	('ver_imp-1', NULL, NULL, 'I', NULL, '{"n": 1}', NULL, '2020-01-01 00:00:00+00', NULL),
	('ver_imp-1', NULL, NULL, 'I', 2, '{"n": 2}', '{"m": true}', '2020-01-02 00:00:00+00', '{x,y}'),
	('ver_a-1', NULL, NULL, 'I', NULL, '{"n": 3}', NULL, NULL, '{}'),
	('ver_imp-1', NULL, NULL, 'I', NULL, '{"n": 4}', NULL, '2020-01-03 00:00:00+00', '[0:1]={p,q}');
SELECT streams, new_streams, events FROM es.es_import('ver_staging');
SELECT * FROM es.es_verify('ver_imp-1');
SELECT * FROM es.es_verify('ver_a-1');
SELECT version, tags FROM es.events WHERE stream_id = 'ver_imp-1' ORDER BY version;
SELECT (es.es_append('ver_imp-1', 3, '[{"type": "After", "data": {}}]')).version;
SELECT * FROM es.es_verify('ver_imp-1');
-- the same events imported into another stream get other hashes (the
-- stream id is hashed) but a chain that verifies too
SELECT count(DISTINCT hash) = count(*) AS distinct_hashes FROM es.events WHERE stream_id LIKE 'ver\_%';

-- an auditor: es_reader may verify; PUBLIC may not
CREATE ROLE regress_ver_auditor IN ROLE es_reader;
CREATE ROLE regress_ver_nobody;
SET ROLE regress_ver_auditor;
SELECT count(*) FROM es.es_verify_all();
SELECT count(*) FROM es.es_verify('ver_a-1');
SELECT count(*) > 0 FROM es.es_heads();
RESET ROLE;
SET ROLE regress_ver_nobody;
SELECT try($$SELECT * FROM es.es_verify_all()$$);
SELECT try($$SELECT * FROM es.es_heads()$$);
RESET ROLE;

-- row level security would hide events: verification refuses to run under it
ALTER TABLE es.events ENABLE ROW LEVEL SECURITY;
CREATE POLICY ver_all ON es.events FOR SELECT TO regress_ver_auditor USING (true);
SET ROLE regress_ver_auditor;
SELECT try($$SELECT * FROM es.es_verify_all()$$);
SELECT try($$SELECT * FROM es.es_verify('ver_a-1')$$);
SELECT try($$SELECT es.es_digest()$$);
RESET ROLE;
-- the owner is not subject to it
SELECT count(*) FROM es.es_verify_all();
DROP POLICY ver_all ON es.events;
ALTER TABLE es.events DISABLE ROW LEVEL SECURITY;
DROP ROLE regress_ver_auditor, regress_ver_nobody;

-- the function that computed the chains of an upgraded database is not
-- there, and its code refuses to run outside the extension's scripts
SELECT count(*) FROM pg_proc WHERE proname = 'es_rechain_internal';
CREATE FUNCTION public.ver_rechain() RETURNS bigint AS 'es_ext', 'es_rechain_internal' LANGUAGE C;
SELECT try($$SELECT public.ver_rechain()$$);
DROP FUNCTION public.ver_rechain();
