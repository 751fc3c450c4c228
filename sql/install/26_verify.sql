
/*
 * ========================================================================
 * sql/install/26_verify.sql — tamper evidence: checking the hash chains
 * (es_verify, es_verify_all) and the stream heads (es_heads, es_digest,
 * es_verify_heads)
 * ========================================================================
 *
 * Read-only functions for es_reader (an auditor reads, never writes).  They
 * refuse to run while row level security hides events or streams from the
 * caller: a chain can only be checked against every event.
 */
CREATE FUNCTION @extschema@.es_verify(stream text)
RETURNS TABLE (stream_id text, version bigint, problem text,
			   expected_hash bytea, stored_hash bytea, detail text)
AS 'MODULE_PATHNAME', 'es_verify'
LANGUAGE C STABLE CALLED ON NULL INPUT PARALLEL RESTRICTED;
COMMENT ON FUNCTION @extschema@.es_verify(text) IS
	'checks the hash chain of a stream: the first event whose content, order or presence does not match; no row when it verifies';
REVOKE ALL ON FUNCTION @extschema@.es_verify(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@.es_verify(text) TO es_reader;

CREATE FUNCTION @extschema@.es_verify_all()
RETURNS TABLE (stream_id text, version bigint, problem text,
			   expected_hash bytea, stored_hash bytea, detail text)
AS 'MODULE_PATHNAME', 'es_verify_all'
LANGUAGE C STABLE PARALLEL RESTRICTED;
COMMENT ON FUNCTION @extschema@.es_verify_all() IS
	'checks the hash chain of every stream in one pass: the first problem of each damaged stream; no row when all verify';
REVOKE ALL ON FUNCTION @extschema@.es_verify_all() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@.es_verify_all() TO es_reader;

CREATE FUNCTION @extschema@.es_heads()
RETURNS TABLE (stream_id text, first_version bigint, version bigint, head_hash bytea)
AS 'MODULE_PATHNAME', 'es_heads'
LANGUAGE C STABLE PARALLEL RESTRICTED;
COMMENT ON FUNCTION @extschema@.es_heads() IS
	'the head of every stream (its version and the chain hash at it), in stream_id byte order: export with jsonb_agg for es_verify_heads';
REVOKE ALL ON FUNCTION @extschema@.es_heads() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@.es_heads() TO es_reader;

CREATE FUNCTION @extschema@.es_digest(heads jsonb DEFAULT NULL)
RETURNS bytea
AS 'MODULE_PATHNAME', 'es_digest'
LANGUAGE C STABLE CALLED ON NULL INPUT PARALLEL RESTRICTED;
COMMENT ON FUNCTION @extschema@.es_digest(jsonb) IS
	'SHA-256 digest of the current stream heads (NULL) or of an export of them (jsonb_agg of es_heads())';
REVOKE ALL ON FUNCTION @extschema@.es_digest(jsonb) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@.es_digest(jsonb) TO es_reader;

CREATE FUNCTION @extschema@.es_verify_heads(earlier jsonb)
RETURNS TABLE (stream_id text, version bigint, problem text,
			   expected_hash bytea, stored_hash bytea, detail text)
AS 'MODULE_PATHNAME', 'es_verify_heads'
LANGUAGE C STABLE CALLED ON NULL INPUT PARALLEL RESTRICTED;
COMMENT ON FUNCTION @extschema@.es_verify_heads(jsonb) IS
	'checks the store against an earlier export of the heads: every earlier head must still be on its chain (or removed by retention or erasure); no row when it is';
REVOKE ALL ON FUNCTION @extschema@.es_verify_heads(jsonb) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@.es_verify_heads(jsonb) TO es_reader;
