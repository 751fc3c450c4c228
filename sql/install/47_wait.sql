
/*
 * ========================================================================
 * sql/install/47_wait.sql — read-your-writes: waits for a projection, a
 * subscriber checkpoint or a consumer group to reach a token (src/wait.c)
 * ========================================================================
 *
 * es_append returns a token (es.append_result.token, an es.log_cursor).
 * The functions below return true once the projection, checkpoint or group
 * has processed everything up to it, false when the timeout passes first
 * (a timeout of zero or less checks once).  Each check sees what committed
 * before it (READ COMMITTED); under REPEATABLE READ or SERIALIZABLE a token
 * not reached at once is an error (25001), as is a token this transaction
 * holds back (its own appends).  When es_ext is preloaded the commits that
 * make progress wake the sleepers; otherwise they poll (10 ms doubling to
 * 100 ms).  They only read: es_reader may call them.  The DDL can be re-run:
 * the 0.1.0 -> 0.2.0 upgrade script holds the same.
 */
CREATE OR REPLACE FUNCTION @extschema@.es_wait_for(projection name,
												   token @extschema@.log_cursor,
												   timeout interval DEFAULT '10 seconds')
RETURNS boolean
AS 'MODULE_PATHNAME', 'es_wait_for'
LANGUAGE C VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE;
COMMENT ON FUNCTION @extschema@.es_wait_for(name, @extschema@.log_cursor, interval) IS
	'waits until a projection has applied everything up to a token (es_append''s result): true, or false when the timeout passes first';
REVOKE ALL ON FUNCTION @extschema@.es_wait_for(name, @extschema@.log_cursor, interval) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@.es_wait_for(name, @extschema@.log_cursor, interval) TO es_reader;

CREATE OR REPLACE FUNCTION @extschema@.es_wait_for_checkpoint(checkpoint text,
															  token @extschema@.log_cursor,
															  timeout interval DEFAULT '10 seconds')
RETURNS boolean
AS 'MODULE_PATHNAME', 'es_wait_for_checkpoint'
LANGUAGE C VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE;
COMMENT ON FUNCTION @extschema@.es_wait_for_checkpoint(text, @extschema@.log_cursor, interval) IS
	'waits until a subscriber checkpoint (es.checkpoints) is at or past a token: true, or false when the timeout passes first (a checkpoint that does not exist yet is waited for)';
REVOKE ALL ON FUNCTION @extschema@.es_wait_for_checkpoint(text, @extschema@.log_cursor, interval) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@.es_wait_for_checkpoint(text, @extschema@.log_cursor, interval) TO es_reader;

CREATE OR REPLACE FUNCTION @extschema@.es_wait_for_group(group_name text,
														 token @extschema@.log_cursor,
														 timeout interval DEFAULT '10 seconds')
RETURNS boolean
AS 'MODULE_PATHNAME', 'es_wait_for_group'
LANGUAGE C VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE;
COMMENT ON FUNCTION @extschema@.es_wait_for_group(text, @extschema@.log_cursor, interval) IS
	'waits until a consumer group has acked or dead-lettered every message from an event at or before a token: true, or false when the timeout passes first';
REVOKE ALL ON FUNCTION @extschema@.es_wait_for_group(text, @extschema@.log_cursor, interval) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@.es_wait_for_group(text, @extschema@.log_cursor, interval) TO es_reader;
