-- verify_tamper: a superuser disables the guard triggers and changes the
-- store; es_verify and es_verify_all report the first damaged version of
-- each stream with the right kind, and es_verify_heads catches a chain
-- recomputed after the change against an earlier export of the heads

-- tam_hash(prev, e): the chain hash of event e after prev, computed in SQL
-- from the documented canonical form: what a superuser who knows the
-- algorithm can forge
CREATE FUNCTION tam_field(t text) RETURNS bytea LANGUAGE sql IMMUTABLE AS $$
	SELECT CASE WHEN t IS NULL THEN '\xffffffff'::bytea
				ELSE int4send(octet_length(convert_to(t, 'UTF8'))) || convert_to(t, 'UTF8') END
$$;
CREATE FUNCTION tam_hash(prev bytea, e es.events) RETURNS bytea LANGUAGE sql AS $$
	SELECT sha256('es_ext chain 1'::bytea || prev || tam_field(e.stream_id)
		|| int4send(8) || int8send(e.version) || int4send(16) || uuid_send(e.event_id)
		|| tam_field(e.event_type) || int4send(4) || int4send(e.schema_version)
		|| tam_field(e.data::text) || tam_field(e.metadata::text)
		|| CASE WHEN e.tags IS NULL THEN '\xffffffff'::bytea
				ELSE int4send(cardinality(e.tags))
					 || (SELECT string_agg(tam_field(t), ''::bytea ORDER BY o) FROM unnest(e.tags) WITH ORDINALITY AS u(t, o)) END
		|| int4send(8) || int8send((extract(epoch FROM e.recorded_at - '2000-01-01 00:00:00+00') * 1000000)::bigint))
$$;

-- one stream of 5 events per kind of tampering
SELECT count(es.es_append(s, 0,
		(SELECT jsonb_agg(jsonb_build_object('type', 'T' || i, 'data', jsonb_build_object('i', i),
											 'metadata', jsonb_build_object('m', i), 'tags', jsonb_build_array('t' || i))
						  ORDER BY i)
		   FROM generate_series(1, 5) AS i)))
  FROM unnest(ARRAY['tam_data-1', 'tam_meta-1', 'tam_type-1', 'tam_tags-1', 'tam_time-1', 'tam_schema-1',
					'tam_id-1', 'tam_delete-1', 'tam_delete_last-1', 'tam_forge_end-1', 'tam_forge_mid-1',
					'tam_forge_chained-1', 'tam_swap-1', 'tam_swap_next-1', 'tam_hash-1', 'tam_nohash-1',
					'tam_version_up-1', 'tam_version_down-1', 'tam_no_row-1', 'tam_rewrite-1',
					'tam_retained-1', 'tam_retained_bad-1', 'tam_first_up-1', 'tam_clean-1']) AS s;
-- the SQL form of the hash is the stored one
SELECT bool_and(e.hash = tam_hash(coalesce((SELECT p.hash FROM es.events AS p
											  WHERE p.stream_id = e.stream_id AND p.version = e.version - 1),
											 decode(repeat('00', 32), 'hex')), e)) AS sql_hash_matches
  FROM es.events AS e WHERE e.stream_id LIKE 'tam\_%';
SELECT count(*) AS problems FROM es.es_verify_all() WHERE stream_id LIKE 'tam\_%';
-- the auditor's export before the tampering
CREATE TABLE tam_export AS SELECT jsonb_agg(h) AS heads, es.es_digest() AS digest FROM es.es_heads() AS h;

-- the guards refuse; a superuser turns them off
SELECT try($$UPDATE es.events SET data = '{}' WHERE stream_id = 'tam_data-1'$$);
ALTER TABLE es.events DISABLE TRIGGER es_guard_write;
ALTER TABLE es.streams DISABLE TRIGGER es_guard_write;

-- content: data, metadata, type, tags, recorded_at, schema_version, event id
UPDATE es.events SET data = '{"i": 30}' WHERE stream_id = 'tam_data-1' AND version = 3;
UPDATE es.events SET metadata = NULL WHERE stream_id = 'tam_meta-1' AND version = 2;
UPDATE es.events SET event_type = 'T9' WHERE stream_id = 'tam_type-1' AND version = 4;
UPDATE es.events SET tags = '{t3,extra}' WHERE stream_id = 'tam_tags-1' AND version = 3;
UPDATE es.events SET recorded_at = recorded_at - interval '1 day' WHERE stream_id = 'tam_time-1' AND version = 1;
UPDATE es.events SET schema_version = 2 WHERE stream_id = 'tam_schema-1' AND version = 5;
UPDATE es.events SET event_id = gen_random_uuid() WHERE stream_id = 'tam_id-1' AND version = 2;
-- presence: a deleted event, the deleted last event
DELETE FROM es.events WHERE stream_id = 'tam_delete-1' AND version = 3;
DELETE FROM es.events WHERE stream_id = 'tam_delete_last-1' AND version = 5;
-- forged events: after the head; in the middle (the later versions moved
-- up); in the middle with a hash computed for its place
INSERT INTO es.events (stream_id, version, event_id, event_type, data, recorded_at, era, tx_id, hash)
VALUES ('tam_forge_end-1', 6, gen_random_uuid(), 'Forged', '{}', now(), 0, '1', sha256('forged'));
UPDATE es.events SET version = -version WHERE stream_id IN ('tam_forge_mid-1', 'tam_forge_chained-1') AND version >= 3;
UPDATE es.events SET version = 1 - version WHERE stream_id IN ('tam_forge_mid-1', 'tam_forge_chained-1') AND version < 0;
INSERT INTO es.events (stream_id, version, event_id, event_type, data, recorded_at, era, tx_id, hash)
VALUES ('tam_forge_mid-1', 3, gen_random_uuid(), 'Forged', '{}', now(), 0, '1', sha256('forged'));
INSERT INTO es.events (stream_id, version, event_id, event_type, data, recorded_at, era, tx_id)
VALUES ('tam_forge_chained-1', 3, 'f0000000-0000-4000-8000-000000000003', 'Forged', '{}', now(), 0, '1');
UPDATE es.events AS e SET hash = tam_hash((SELECT p.hash FROM es.events AS p WHERE p.stream_id = e.stream_id AND p.version = 2), e)
 WHERE e.stream_id = 'tam_forge_chained-1' AND e.version = 3;
-- order: versions 2 and 4 exchanged, 2 and 3 exchanged
UPDATE es.events SET version = -version WHERE stream_id = 'tam_swap-1' AND version IN (2, 4);
UPDATE es.events SET version = CASE version WHEN -2 THEN 4 ELSE 2 END WHERE stream_id = 'tam_swap-1' AND version < 0;
UPDATE es.events SET version = -version WHERE stream_id = 'tam_swap_next-1' AND version IN (2, 3);
UPDATE es.events SET version = CASE version WHEN -2 THEN 3 ELSE 2 END WHERE stream_id = 'tam_swap_next-1' AND version < 0;
-- the hash itself: changed, removed
UPDATE es.events SET hash = sha256('x') WHERE stream_id = 'tam_hash-1' AND version = 2;
UPDATE es.events SET hash = NULL WHERE stream_id = 'tam_nohash-1' AND version = 2;
-- the stream row: version raised, lowered, row deleted
UPDATE es.streams SET version = 7 WHERE stream_id = 'tam_version_up-1';
UPDATE es.streams SET version = 3 WHERE stream_id = 'tam_version_down-1';
DELETE FROM es.streams WHERE stream_id = 'tam_no_row-1';
-- version 2 changed and every hash from it recomputed: the chain verifies
UPDATE es.events SET data = '{"i": 20}' WHERE stream_id = 'tam_rewrite-1' AND version = 2;
DO $$
DECLARE
	r es.events;
	prev bytea;
BEGIN
	SELECT hash INTO prev FROM es.events WHERE stream_id = 'tam_rewrite-1' AND version = 1;
	FOR r IN SELECT * FROM es.events WHERE stream_id = 'tam_rewrite-1' AND version >= 2 ORDER BY version LOOP
		prev := tam_hash(prev, r);
		UPDATE es.events SET hash = prev WHERE stream_id = r.stream_id AND version = r.version;
	END LOOP;
END
$$;
-- the shape retention leaves (versions 1-2 removed, first_version 3 and
-- base_hash = h(2)) verifies; with a wrong base hash it does not; a first
-- version raised over stored events does not either
UPDATE es.streams AS s SET first_version = 3,
	   base_hash = (SELECT e.hash FROM es.events AS e WHERE e.stream_id = s.stream_id AND e.version = 2)
 WHERE s.stream_id IN ('tam_retained-1', 'tam_retained_bad-1');
DELETE FROM es.events WHERE stream_id IN ('tam_retained-1', 'tam_retained_bad-1') AND version <= 2;
UPDATE es.streams SET base_hash = sha256('base') WHERE stream_id = 'tam_retained_bad-1';
UPDATE es.streams SET first_version = 2 WHERE stream_id = 'tam_first_up-1';

ALTER TABLE es.events ENABLE TRIGGER es_guard_write;
ALTER TABLE es.streams ENABLE TRIGGER es_guard_write;

-- every stream but the clean, the rewritten and the retained one is
-- reported, once, at its first damaged version
SELECT stream_id, version, problem, expected_hash IS NOT NULL AS has_expected,
	   stored_hash IS NOT NULL AS has_stored, detail
  FROM es.es_verify_all() WHERE stream_id LIKE 'tam\_%';
-- es_verify says the same for one stream
SELECT stream_id, version, problem FROM es.es_verify('tam_swap-1');
SELECT stream_id, version, problem FROM es.es_verify('tam_no_row-1');
SELECT * FROM es.es_verify('tam_rewrite-1');
SELECT * FROM es.es_verify('tam_clean-1');
-- the expected and stored hashes of a changed event
SELECT v.stored_hash = e.hash AS stored_is_the_row, v.expected_hash = tam_hash(p.hash, e) AS expected_is_recomputed
  FROM es.es_verify('tam_data-1') AS v
  JOIN es.events AS e ON e.stream_id = v.stream_id AND e.version = v.version
  JOIN es.events AS p ON p.stream_id = v.stream_id AND p.version = v.version - 1;

-- against the earlier export: the recomputed chain is caught (its head
-- hash changed), and so are the streams whose heads moved or went
SELECT stream_id, version, problem, detail
  FROM es.es_verify_heads((SELECT heads FROM tam_export)) WHERE stream_id LIKE 'tam\_%';
SELECT es.es_digest() <> digest AS digest_changed, es.es_digest(heads) = digest AS export_intact FROM tam_export;

-- an append to a damaged stream is refused when its predecessor's hash is
-- gone (es_append), and so is an import
SELECT try($$SELECT es.es_append('tam_delete_last-1', NULL, '[{"type": "X", "data": {}}]')$$);
CREATE TEMP TABLE tam_staging (LIKE es.import_event);
INSERT INTO tam_staging (stream_id, event_type, data) VALUES ('tam_delete_last-1', 'X', '{}');
SELECT try($$SELECT es.es_import('tam_staging')$$);

-- the damaged streams go, so that the store verifies again for what follows
ALTER TABLE es.events DISABLE TRIGGER es_guard_write;
ALTER TABLE es.streams DISABLE TRIGGER es_guard_write;
DELETE FROM es.events WHERE stream_id LIKE 'tam\_%';
DELETE FROM es.streams WHERE stream_id LIKE 'tam\_%';
ALTER TABLE es.events ENABLE TRIGGER es_guard_write;
ALTER TABLE es.streams ENABLE TRIGGER es_guard_write;
SELECT count(*) AS problems FROM es.es_verify_all();
DROP TABLE tam_export;
