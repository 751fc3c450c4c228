-- crypto: crypto-shredding.  Fields an event declares "personal" are stored
-- encrypted with their data subject's key; every read path decrypts them for
-- roles allowed to (es_pii_reader); es_forget_subject destroys the key and
-- every read then shows the redaction marker.  Without pgcrypto es_ext works
-- but refuses personal appends.

-- markers carry random ciphertext: show them with it masked
CREATE FUNCTION cry_masked(j jsonb) RETURNS text LANGUAGE sql IMMUTABLE
RETURN regexp_replace(j::text, '"\$es_encrypted": "[A-Za-z0-9+/=]+"', '"$es_encrypted": "…"', 'g');

-- 1. without pgcrypto
SET client_min_messages = warning;
DROP EXTENSION IF EXISTS pgcrypto;
RESET client_min_messages;
SELECT store_mark();
SELECT try($$SELECT es.es_append('cry-0', NULL, '[{"type": "Registered", "data": {"email": "x@example.org"},
	"personal": {"subject": "s-0", "fields": ["email"]}}]')$$);
SELECT * FROM store_counts();
SELECT count(*) AS keys_made FROM es.subject_keys WHERE subject = 's-0';
-- events without a declaration need no pgcrypto
SELECT version FROM es.es_append('cry-0', NULL, '[{"type": "Noted", "data": {}}]');
CREATE EXTENSION pgcrypto;

-- 2. bad declarations: 22023 (54000 past a limit), with the event named
SELECT es.es_append('cry-bad', NULL, '[{"type": "A", "data": {}},
	{"type": "B", "data": {"email": "e"}, "personal": {"subject": "s", "fields": ["mail"]}}]');
CREATE FUNCTION cry_bad(personal text, data text DEFAULT '{"email": "e", "a": {"b": 1}}') RETURNS text
LANGUAGE sql RETURN try(format($$SELECT es.es_append('cry-bad', NULL, '[{"type": "B", "data": %s, "personal": %s}]')$$,
							   data, personal));
SELECT store_mark();
SELECT cry_bad('"s"');
SELECT cry_bad('[]');
SELECT cry_bad('{"subject": "s"}');
SELECT cry_bad('{"fields": ["email"]}');
SELECT cry_bad('{"subject": "s", "fields": ["email"], "more": 1}');
SELECT cry_bad('{"subject": 42, "fields": ["email"]}');
SELECT cry_bad('{"subject": "", "fields": ["email"]}');
SELECT cry_bad(format('{"subject": "%s", "fields": ["email"]}', repeat('s', 1025)));
SELECT cry_bad('{"subject": "s", "fields": "email"}');
SELECT cry_bad('{"subject": "s", "fields": []}');
SELECT cry_bad('{"subject": "s", "fields": [1]}');
SELECT cry_bad('{"subject": "s", "fields": [""]}');
SELECT cry_bad('{"subject": "s", "fields": ["email", "email"]}');
SELECT cry_bad('{"subject": "s", "fields": ["a..b"]}');
SELECT cry_bad('{"subject": "s", "fields": [".a"]}');
SELECT cry_bad('{"subject": "s", "fields": ["a.b", "a"]}');
SELECT cry_bad('{"subject": "s", "fields": ["nope"]}');
SELECT cry_bad('{"subject": "s", "fields": ["email.x"]}');
SELECT cry_bad('{"subject": "s", "fields": ["email"]}', '"just a string"');
SELECT cry_bad(format('{"subject": "s", "fields": [%s]}',
					  (SELECT string_agg(format('"f%s"', i), ', ') FROM generate_series(1, 65) i)));
SELECT try($$SELECT es.es_append('cry-bad', NULL, '[{"type": "B", "data": {}, "metadata": {"$es_personal": 1}}]')$$);
SELECT * FROM store_counts();
-- a null declaration is no declaration
SELECT version FROM es.es_append('cry-bad', NULL, '[{"type": "B", "data": {"email": "e"}, "personal": null}]');

-- 3. roles: a writer encrypts without seeing keys; es_pii_reader decrypts;
-- es_pii_admin forgets
CREATE ROLE regress_cry_writer IN ROLE es_writer;
CREATE ROLE regress_cry_reader IN ROLE es_reader;
CREATE ROLE regress_cry_pii IN ROLE es_reader, es_pii_reader;
CREATE ROLE regress_cry_dpo IN ROLE es_pii_admin;
CREATE ROLE regress_cry_consumer IN ROLE es_consumer, es_pii_reader;
SELECT es.es_outbox_route('cry');
SELECT es.es_outbox_create_group('cry_g') > 0 AS group_created;

-- projections: es_project handlers see clear data when their owner may
-- decrypt (the handler below is owned by the superuser), markers otherwise
CREATE TABLE cry_model (stream_id text, version bigint, name text, email text, street text);
CREATE TABLE cry_model_plain (stream_id text, version bigint, email jsonb);
GRANT ALL ON cry_model_plain TO regress_cry_reader;
CREATE FUNCTION cry_on_event(e es.events) RETURNS void LANGUAGE sql AS $$
	INSERT INTO public.cry_model VALUES (e.stream_id, e.version, e.data ->> 'name', e.data ->> 'email',
										 e.data #>> '{address,street}')
$$;
CREATE FUNCTION cry_on_event_plain(e es.events) RETURNS void LANGUAGE sql AS $$
	INSERT INTO public.cry_model_plain VALUES (e.stream_id, e.version, e.data -> 'email')
$$;
ALTER FUNCTION cry_on_event_plain(es.events) OWNER TO regress_cry_reader;
CREATE TRIGGER cry_model AFTER INSERT ON es.events FOR EACH ROW
	WHEN (NEW.stream_id LIKE 'cry-%') EXECUTE FUNCTION es.es_project('cry_on_event');
CREATE TRIGGER cry_model_plain AFTER INSERT ON es.events FOR EACH ROW
	WHEN (NEW.stream_id LIKE 'cry-%') EXECUTE FUNCTION es.es_project('cry_on_event_plain');
-- an asynchronous projection (applied by es_run_projections through the
-- same es_project)
CREATE TABLE cry_async (version bigint, email text);
CREATE FUNCTION cry_on_async(e es.events) RETURNS void LANGUAGE sql AS $$
	INSERT INTO public.cry_async VALUES (e.version, e.data ->> 'email')
$$;
BEGIN;
CREATE TRIGGER cry_async AFTER INSERT ON es.events FOR EACH ROW EXECUTE FUNCTION es.es_project('cry_on_async');
SELECT es.es_create_async_projection('cry_async', categories => '{cry}');
COMMIT;

SET ROLE regress_cry_writer;
SELECT version FROM es.es_append('cry-1', NULL, '[
	{"type": "Registered", "data": {"name": "Ann", "email": "ann@example.org",
	 "address": {"street": "Main 1", "city": "Oslo"}, "list": [{"name": "not declared"}]},
	 "personal": {"subject": "s-1", "fields": ["name", "email", "address.street"]},
	 "metadata": {"correlation_id": "c-1"}, "tags": ["cust:s-1"]},
	{"type": "CryEmailChanged", "data": {"email": "ANN@example.net"},
	 "personal": {"subject": "s-1", "fields": ["email"]}, "tags": ["cust:s-1"]},
	{"type": "Noted", "data": {"note": "nothing personal"}, "tags": ["cust:s-1"]}]');
SELECT version FROM es.es_append('cry-2', NULL, '[{"type": "Registered", "data": {"name": "Bo", "email": "bo@example.org"},
	"personal": {"subject": "s-2", "fields": ["name", "email"]}}]');
-- the writer cannot read keys, and reads the markers
SELECT try('SELECT * FROM es.subject_keys');
SELECT version, cry_masked(data) FROM es.es_read_stream('cry-1');
RESET ROLE;

-- stored: markers only, metadata flagged; one key per subject
SELECT version, cry_masked(data) AS data, metadata FROM es.events WHERE stream_id = 'cry-1' ORDER BY version;
SELECT count(*) AS clear_text_stored FROM es.events
 WHERE stream_id IN ('cry-1', 'cry-2') AND (data::text LIKE '%Ann%' OR data::text LIKE '%ann@%' OR data::text LIKE '%Main 1%');
SELECT subject, octet_length(key) AS key_bytes, forgotten_at IS NULL AS live FROM es.subject_keys WHERE subject LIKE 's-%' ORDER BY subject;

-- 4. every read path, as a role allowed to decrypt
CREATE FUNCTION cry_reduce(state jsonb, event jsonb) RETURNS jsonb LANGUAGE sql
RETURN state || (event -> 'data');
CREATE FUNCTION cry_reduce_row(state jsonb, e es.events) RETURNS jsonb LANGUAGE sql
RETURN state || e.data;
CREATE FUNCTION cry_upcast(data jsonb) RETURNS jsonb LANGUAGE sql
RETURN jsonb_build_object('email_lower', lower(data ->> 'email'));
SELECT es.es_register_upcaster('CryEmailChanged', 1, 'cry_upcast(jsonb)');
GRANT EXECUTE ON FUNCTION cry_reduce(jsonb, jsonb), cry_reduce_row(jsonb, es.events) TO PUBLIC;
SET ROLE regress_cry_pii;
SELECT version, schema_version, data FROM es.es_read_stream('cry-1');
SELECT version, data FROM es.es_read_stream('cry-1', NULL, NULL, 'backward');
SELECT stream_id, version, data FROM es.es_read_all(max_count => 100000) WHERE stream_id IN ('cry-1', 'cry-2');
SELECT stream_id, version, data FROM es.es_read_all(category => 'cry', event_types => '{Registered}');
SELECT version, data FROM es.es_read_query('[{"tags": ["cust:s-1"]}]');
SELECT es.es_fold('cry-1', 'cry_reduce(jsonb, jsonb)', '{}');
SELECT es.es_fold('cry-1', 'cry_reduce_row(jsonb, es.events)', '{}');
SELECT (es.es_upcast(e)).data FROM es.events AS e WHERE stream_id = 'cry-2';
SELECT es.es_decrypt(data) FROM es.events WHERE stream_id = 'cry-2';
-- a role that may not decrypt sees the markers on every path
SET ROLE regress_cry_reader;
SELECT version, cry_masked(data) FROM es.es_read_stream('cry-2');
SELECT cry_masked(data) FROM es.es_read_all(category => 'cry', event_types => '{Registered}');
SELECT cry_masked(es.es_fold('cry-2', 'cry_reduce(jsonb, jsonb)', '{}'));
SELECT try($$SELECT es.es_decrypt('{}')$$);
SELECT try($$SELECT es.es_forget_subject('s-1')$$);
RESET ROLE;
-- projections: inline (handler owned by a role allowed to decrypt, and by
-- one that is not), asynchronous
SELECT * FROM cry_model ORDER BY stream_id, version;
SELECT stream_id, version, cry_masked(email) FROM cry_model_plain ORDER BY stream_id, version;
CALL es.es_run_projections('cry_async');
SELECT * FROM cry_async ORDER BY version, email;
-- the outbox carries the markers; a consumer allowed to decrypt calls es_decrypt
SET ROLE regress_cry_consumer;
CREATE TEMP TABLE cry_claimed AS SELECT * FROM es.es_outbox_claim('cry_g', 100);
SELECT stream_id, version, cry_masked(data) AS carried, es.es_decrypt(data) AS decrypted
  FROM cry_claimed ORDER BY stream_id, version;
RESET ROLE;
-- snapshots: never of a state folded from personal data
SELECT try($$SELECT es.es_snapshot_save('cry-1', 'cry_reduce(jsonb, jsonb)', '{}')$$);
SET es.snapshot_every = 1;
SELECT es.es_fold('cry-1', 'cry_reduce(jsonb, jsonb)', '{}') IS NOT NULL AS folded;
RESET es.snapshot_every;
SELECT count(*) AS snapshots FROM es.snapshots WHERE stream_id = 'cry-1';

-- 5. the keys: direct writes refused, even for a superuser; keys never in
-- an error message
SELECT try($$INSERT INTO es.subject_keys (subject, key) VALUES ('x', NULL)$$);
SELECT try($$UPDATE es.subject_keys SET key = NULL$$);
SELECT try($$DELETE FROM es.subject_keys$$);
SELECT try($$TRUNCATE es.subject_keys$$);
CREATE TEMP TABLE cry_errors (msg text);
-- a marker altered by one character does not authenticate (XX001)
INSERT INTO cry_errors SELECT try(format('SELECT es.es_decrypt(%L)',
	jsonb_set(data, '{email,$es_encrypted}', to_jsonb(overlay(data #>> '{email,$es_encrypted}' placing
		CASE WHEN substr(data #>> '{email,$es_encrypted}', 10, 1) = 'A' THEN 'B' ELSE 'A' END from 10 for 1)))))
  FROM es.events WHERE stream_id = 'cry-2';
-- a marker moved to another subject does not either
INSERT INTO cry_errors SELECT try(format('SELECT es.es_decrypt(%L)',
	jsonb_set(data, '{email,subject}', '"s-1"'))) FROM es.events WHERE stream_id = 'cry-2';
SELECT * FROM cry_errors;
INSERT INTO cry_errors SELECT try($$SELECT es.es_append('cry-bad', NULL, '[{"type": "B", "data": {"e": 1}, "personal": {"subject": "s-1", "fields": ["x"]}}]')$$);
SELECT count(*) AS errors, count(*) FILTER (WHERE position(encode(k.key, 'hex') IN e.msg) > 0
										  OR position(encode(k.key, 'base64') IN e.msg) > 0) AS with_a_key
  FROM cry_errors AS e CROSS JOIN es.subject_keys AS k WHERE k.key IS NOT NULL;

-- 6. forget
SET ROLE regress_cry_dpo;
SELECT es.es_forget_subject('s-1') AS destroyed;
SELECT es.es_forget_subject('s-1') AS again;
SELECT es.es_forget_subject('s-never-seen') AS unknown;
SELECT try($$SELECT es.es_forget_subject(NULL)$$);
SELECT try($$SELECT es.es_forget_subject('')$$);
SELECT try(format('SELECT es.es_forget_subject(%L)', repeat('s', 1025)));
RESET ROLE;
-- the key is destroyed; the row stays, so the subject cannot come back
SELECT subject, key IS NULL AS key_destroyed, forgotten_at IS NOT NULL AS forgotten
  FROM es.subject_keys WHERE subject LIKE 's-%' ORDER BY subject;
SELECT store_mark();
SELECT try($$SELECT es.es_append('cry-1', NULL, '[{"type": "CryEmailChanged", "data": {"email": "x"},
	"personal": {"subject": "s-1", "fields": ["email"]}}]')$$);
SELECT try($$SELECT es.es_append('cry-9', NULL, '[{"type": "Registered", "data": {"email": "x"},
	"personal": {"subject": "s-never-seen", "fields": ["email"]}}]')$$);
SELECT * FROM store_counts();
-- no event was rewritten
SELECT version, cry_masked(data) AS data FROM es.events WHERE stream_id = 'cry-1' ORDER BY version;
-- every read path shows the redaction marker; s-2 still decrypts
SET ROLE regress_cry_pii;
SELECT version, schema_version, data FROM es.es_read_stream('cry-1');
SELECT stream_id, version, data FROM es.es_read_all(category => 'cry', event_types => '{Registered}');
SELECT version, data FROM es.es_read_query('[{"tags": ["cust:s-1"]}]');
SELECT es.es_fold('cry-1', 'cry_reduce_row(jsonb, es.events)', '{}');
SELECT (es.es_upcast(e)).data FROM es.events AS e WHERE stream_id = 'cry-1' AND version = 1;
RESET ROLE;
SELECT stream_id, version, es.es_decrypt(data) FROM cry_claimed ORDER BY stream_id, version;
-- a rebuild of a projection replays the log: the personal fields are gone
-- from the read model too
SELECT es.es_projection_reset('cry_async', 'TRUNCATE public.cry_async');
CALL es.es_run_projections('cry_async');
SELECT * FROM cry_async ORDER BY version, email;

-- clean up
SELECT es.es_unregister_upcaster('CryEmailChanged', 1);
SELECT es.es_drop_projection('cry_async');
DROP TRIGGER cry_model ON es.events;
DROP TRIGGER cry_model_plain ON es.events;
SELECT es.es_outbox_drop_group('cry_g');
SELECT es.es_outbox_unroute('cry');
DROP TABLE cry_model, cry_model_plain, cry_async;
DROP FUNCTION cry_on_event_plain(es.events);
DROP OWNED BY regress_cry_writer, regress_cry_reader, regress_cry_pii, regress_cry_dpo, regress_cry_consumer;
DROP ROLE regress_cry_writer, regress_cry_reader, regress_cry_pii, regress_cry_dpo, regress_cry_consumer;

-- 7. an idempotent retry of an append with personal fields returns the
-- original result; a retry whose declaration or other fields differ is 42710
-- (the personal values themselves are not compared: that would let a writer
-- test guesses of stored personal data)
SELECT version FROM es.es_append('cry-r', NULL, '[{"id": "0190b7a4-0000-7000-8000-000000000001", "type": "Registered",
	"data": {"email": "r@example.org", "city": "Oslo"}, "metadata": {"correlation_id": "r"},
	"personal": {"subject": "s-r", "fields": ["email"]}}]');
SELECT version FROM es.es_append('cry-r', NULL, '[{"id": "0190b7a4-0000-7000-8000-000000000001", "type": "Registered",
	"data": {"email": "r@example.org", "city": "Oslo"}, "metadata": {"correlation_id": "r"},
	"personal": {"subject": "s-r", "fields": ["email"]}}]') AS retried;
SELECT count(*) AS events FROM es.events WHERE stream_id = 'cry-r';
SELECT try($$SELECT es.es_append('cry-r', NULL, '[{"id": "0190b7a4-0000-7000-8000-000000000001", "type": "Registered",
	"data": {"email": "r@example.org", "city": "Bergen"}, "metadata": {"correlation_id": "r"},
	"personal": {"subject": "s-r", "fields": ["email"]}}]')$$);
SELECT try($$SELECT es.es_append('cry-r', NULL, '[{"id": "0190b7a4-0000-7000-8000-000000000001", "type": "Registered",
	"data": {"email": "r@example.org", "city": "Oslo"}, "metadata": {"correlation_id": "r"},
	"personal": {"subject": "s-other", "fields": ["email"]}}]')$$);
SELECT try($$SELECT es.es_append('cry-r', NULL, '[{"id": "0190b7a4-0000-7000-8000-000000000001", "type": "Registered",
	"data": {"email": "r@example.org", "city": "Oslo"}, "metadata": {"correlation_id": "r"}}]')$$);
