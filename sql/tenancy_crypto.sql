-- tenancy_crypto: tenant isolation of crypto-shredding.  Two tenants, acme
-- (regress_tc_a) and globex (regress_tc_b), each with the roles that read
-- and forget personal data (es_pii_reader, es_pii_admin), attack each
-- other's data subjects: reading the keys and subjects, forgetting the
-- other's subject (which destroys the other's data), appending under the
-- other's subject (sharing its key; "was forgotten" as an oracle).  A
-- refusal must be the same whether the subject exists, is forgotten or not.
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS pgcrypto;
RESET client_min_messages;
CREATE ROLE regress_tc_a IN ROLE es_writer, es_pii_reader, es_pii_admin;
CREATE ROLE regress_tc_b IN ROLE es_writer, es_pii_reader, es_pii_admin;
CREATE FUNCTION tc_err(sql text) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
	st text; msg text; det text; hnt text;
BEGIN
	EXECUTE sql;
	RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
	GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE, msg = MESSAGE_TEXT, det = PG_EXCEPTION_DETAIL,
		hnt = PG_EXCEPTION_HINT;
	RETURN concat_ws(' | ', st, msg, nullif(det, ''), nullif(hnt, ''));
END
$$;
SELECT count(*) > 0 AS enabled FROM es.es_enable_tenancy();
SELECT c.relname, p.polname FROM pg_policy AS p JOIN pg_class AS c ON c.oid = p.polrelid
 WHERE c.relname = 'subject_keys' ORDER BY 2;
INSERT INTO es.tenant_roles VALUES ('acme', 'regress_tc_a'), ('globex', 'regress_tc_b');

-- globex stores a customer's name under its subject "globex/c-42"
SET ROLE regress_tc_b;
SELECT version FROM es.es_append('globex/cust-42', 0, '[{"type": "Registered",
	"data": {"name": "Bob"}, "personal": {"subject": "globex/c-42", "fields": ["name"]}}]');
SELECT version FROM es.es_append('globex/cust-43', 0, '[{"type": "Registered",
	"data": {"name": "Eve"}, "personal": {"subject": "globex/c-43", "fields": ["name"]}}]');
SELECT es.es_forget_subject('globex/c-43') AS globex_forgot_own;
-- a subject without the tenant prefix belongs to no tenant of globex
SELECT tc_err($$SELECT es.es_append('globex/cust-44', 0, '[{"type": "Registered",
	"data": {"name": "Ann"}, "personal": {"subject": "c-44", "fields": ["name"]}}]')$$);
RESET ROLE;

-- acme, with es_pii_reader and es_pii_admin for its own customers
SET ROLE regress_tc_a;
SELECT version FROM es.es_append('acme/cust-1', 0, '[{"type": "Registered",
	"data": {"name": "Al"}, "personal": {"subject": "acme/c-1", "fields": ["name"]}}]');
SELECT data FROM es.es_read_stream('acme/cust-1');
-- the keys and subjects of globex's customers are not acme's to see
SELECT subject FROM es.subject_keys ORDER BY 1;
-- forgetting globex's subjects: existing, forgotten, never used: one refusal
SELECT tc_err($$SELECT es.es_forget_subject('globex/c-42')$$) AS forget_existing;
SELECT tc_err($$SELECT es.es_forget_subject('globex/c-43')$$) AS forget_forgotten;
SELECT tc_err($$SELECT es.es_forget_subject('globex/c-404')$$) AS forget_unknown;
-- appending personal data under globex's subjects: the same refusal
SELECT tc_err($$SELECT es.es_append('acme/cust-2', 0, '[{"type": "Registered",
	"data": {"name": "X"}, "personal": {"subject": "globex/c-42", "fields": ["name"]}}]')$$) AS append_existing;
SELECT tc_err($$SELECT es.es_append('acme/cust-2', 0, '[{"type": "Registered",
	"data": {"name": "X"}, "personal": {"subject": "globex/c-43", "fields": ["name"]}}]')$$) AS append_forgotten;
SELECT tc_err($$SELECT es.es_append('acme/cust-2', 0, '[{"type": "Registered",
	"data": {"name": "X"}, "personal": {"subject": "globex/c-404", "fields": ["name"]}}]')$$) AS append_unknown;
SELECT es.es_stream_version('acme/cust-2') AS nothing_appended;
-- acme forgets its own
SELECT es.es_forget_subject('acme/c-1') AS acme_forgot_own;
SELECT es.es_forget_subject('acme/c-2') AS acme_forgot_unused;
RESET ROLE;

-- globex's data is intact: c-42 still readable, only c-43 (its own forget) redacted
SET ROLE regress_tc_b;
SELECT stream_id, data FROM es.es_read_all(NULL, 1000) WHERE stream_id LIKE 'globex/cust-%' ORDER BY global_position;
SELECT subject, key IS NOT NULL AS has_key FROM es.subject_keys ORDER BY 1;
RESET ROLE;
SELECT subject, key IS NOT NULL AS has_key FROM es.subject_keys
 WHERE subject LIKE 'acme/%' OR subject LIKE 'globex/%' ORDER BY 1;

-- es_decrypt (es_pii_reader) with globex's subjects: a marker of a live key,
-- of a forgotten one, of an unknown one, and globex's real ciphertext (say a
-- copy that leaked out of globex's outbox consumer): acme may decrypt none
-- of them, and all come back as given (no oracle of which subjects have keys)
SELECT data -> 'name' AS globex_marker FROM es.events WHERE stream_id = 'globex/cust-42' \gset
SET ROLE regress_tc_a;
SELECT es.es_decrypt(jsonb_build_object('n', :'globex_marker'::jsonb)) = jsonb_build_object('n', :'globex_marker'::jsonb)
	AS real_ciphertext_unchanged;
SELECT tc_err(format($$SELECT es.es_decrypt('{"n": {"$es_encrypted": "%s", "subject": "%s"}}')$$,
			  repeat('A', 80), s)) AS fake_marker, s
  FROM unnest(ARRAY['globex/c-42', 'globex/c-43', 'globex/c-404']) AS s;
SELECT es.es_decrypt(format('{"n": {"$es_encrypted": "%s", "subject": "globex/c-42"}}', repeat('A', 80))::jsonb)
	-> 'n' ? '$es_encrypted' AS fake_marker_unchanged;
RESET ROLE;

-- clean up (the events stay: the log is immutable)
SELECT count(*) > 0 AS disabled FROM es.es_disable_tenancy();
DELETE FROM es.tenant_roles;
DROP ROLE regress_tc_a, regress_tc_b;
