
/*
 * ========================================================================
 * sql/install/65_crypto.sql — crypto-shredding: a key per data subject
 * (src/crypto.c)
 * ========================================================================
 *
 * Fields an event declares "personal" are stored encrypted with its data
 * subject's key; es_forget_subject destroys the key.  Roles:
 *   es_pii_reader  may decrypt: readers, projections whose handler owner is
 *                  a member, es_decrypt (SELECT on es.subject_keys is the
 *                  test)
 *   es_pii_admin   may forget a data subject (irreversible)
 * Neither is granted to the other es_ext roles: reading personal data and
 * destroying it are decisions of their own.  The DDL can be re-run: the
 * 0.1.0 -> 0.2.0 upgrade script holds the same.
 */
DO $roles$
BEGIN
	IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname OPERATOR(pg_catalog.=) 'es_pii_reader') THEN
		CREATE ROLE es_pii_reader NOLOGIN;
	END IF;
	IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname OPERATOR(pg_catalog.=) 'es_pii_admin') THEN
		CREATE ROLE es_pii_admin NOLOGIN;
	END IF;
END
$roles$;
GRANT USAGE ON SCHEMA @extschema@ TO es_pii_reader, es_pii_admin;

CREATE TABLE IF NOT EXISTS @extschema@.subject_keys (
	subject			text NOT NULL CHECK (pg_catalog.octet_length(subject) OPERATOR(pg_catalog.>=) 1
										AND pg_catalog.octet_length(subject) OPERATOR(pg_catalog.<=) 1024),
	key				bytea CHECK (pg_catalog.octet_length(key) OPERATOR(pg_catalog.=) 32),
	created_at		timestamptz NOT NULL DEFAULT pg_catalog.now(),
	forgotten_at	timestamptz,
	CONSTRAINT subject_keys_pkey PRIMARY KEY (subject),
	CONSTRAINT subject_keys_forgotten CHECK ((key IS NULL) OPERATOR(pg_catalog.=) (forgotten_at IS NOT NULL))
);
COMMENT ON TABLE @extschema@.subject_keys IS
	'es_ext data subject keys: one random 256-bit key per subject, made by its first append; written only by es_append and es_forget_subject';
COMMENT ON COLUMN @extschema@.subject_keys.subject IS 'the data subject''s opaque id, as events declare it in "personal"';
COMMENT ON COLUMN @extschema@.subject_keys.key IS 'the subject''s key; NULL once forgotten';
COMMENT ON COLUMN @extschema@.subject_keys.created_at IS 'when the key was made (or the subject first forgotten)';
COMMENT ON COLUMN @extschema@.subject_keys.forgotten_at IS 'when es_forget_subject destroyed the key; NULL while it exists';
CREATE OR REPLACE TRIGGER es_guard_write BEFORE INSERT OR UPDATE OR DELETE ON @extschema@.subject_keys
	FOR EACH STATEMENT EXECUTE FUNCTION @extschema@.es_guard();
CREATE OR REPLACE TRIGGER es_guard_truncate BEFORE TRUNCATE ON @extschema@.subject_keys
	FOR EACH STATEMENT EXECUTE FUNCTION @extschema@.es_guard();
CREATE OR REPLACE FUNCTION @extschema@.es_subject_keys_changed()
RETURNS trigger
AS 'MODULE_PATHNAME', 'es_subject_keys_changed'
LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION @extschema@.es_subject_keys_changed() IS
	'trigger: makes every backend check again whether es.subject_keys has keys (readers skip decryption while it has none)';
REVOKE ALL ON FUNCTION @extschema@.es_subject_keys_changed() FROM PUBLIC;
CREATE OR REPLACE TRIGGER es_subject_keys_changed AFTER INSERT OR DELETE OR TRUNCATE ON @extschema@.subject_keys
	FOR EACH STATEMENT EXECUTE FUNCTION @extschema@.es_subject_keys_changed();
SELECT pg_catalog.pg_extension_config_dump('@extschema@.subject_keys', '');
REVOKE ALL ON TABLE @extschema@.subject_keys FROM PUBLIC;
-- SELECT is the privilege to decrypt; es_ext's own statements on the table
-- run as its owner (appenders encrypt without seeing keys)
GRANT SELECT ON @extschema@.subject_keys TO es_pii_reader;

CREATE OR REPLACE FUNCTION @extschema@.es_decrypt(data jsonb)
RETURNS jsonb
AS 'MODULE_PATHNAME', 'es_decrypt'
LANGUAGE C STABLE CALLED ON NULL INPUT PARALLEL RESTRICTED;
COMMENT ON FUNCTION @extschema@.es_decrypt(jsonb) IS
	'data (of an event, an outbox row, a trigger''s NEW) with its encrypted personal fields in clear, or redacted when their subject was forgotten; for es_pii_reader';
REVOKE ALL ON FUNCTION @extschema@.es_decrypt(jsonb) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@.es_decrypt(jsonb) TO es_pii_reader;

CREATE OR REPLACE FUNCTION @extschema@.es_forget_subject(subject text)
RETURNS boolean
AS 'MODULE_PATHNAME', 'es_forget_subject'
LANGUAGE C VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE;
COMMENT ON FUNCTION @extschema@.es_forget_subject(text) IS
	'destroys a data subject''s key: its personal fields read as redacted everywhere, no event is rewritten, later appends for it are refused; true when a key was destroyed';
REVOKE ALL ON FUNCTION @extschema@.es_forget_subject(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@.es_forget_subject(text) TO es_pii_admin;
