
/*
 * ========================================================================
 * sql/install/70_fold.sql — folding: snapshots, es_fold, es_fold_state and
 * the aggregate es_fold_agg
 * ========================================================================
 *
 * Privileges: readers fold and read snapshots; writers (who may append
 * events anyway) also write snapshots -- explicitly, or automatically
 * through es_fold.
 */
/*
 * Snapshots: the folded state of (stream, reducer, initial state) at a
 * version, a cache that es_fold starts from.  reducer is the reducer's
 * schema-qualified signature; fingerprint hashes its definition and the
 * upcaster registry, initial_hash the initial state.  A snapshot is used
 * only when all of them match, so a changed reducer or registry, or another
 * initial state, never sees a stale one; deleting snapshots changes no
 * result.
 */
CREATE TABLE @extschema@.snapshots (
	stream_id		text NOT NULL,
	reducer			text NOT NULL,
	initial_hash	bytea NOT NULL,
	fingerprint		bytea NOT NULL,
	version			bigint NOT NULL CHECK (version OPERATOR(pg_catalog.>=) 1),
	state			jsonb NOT NULL,
	automatic		boolean NOT NULL DEFAULT false,
	created_at		timestamptz NOT NULL DEFAULT pg_catalog.now(),
	CONSTRAINT snapshots_pkey PRIMARY KEY (stream_id, reducer, initial_hash, fingerprint, version)
);
COMMENT ON TABLE @extschema@.snapshots IS
	'es_ext snapshots: folded states that es_fold starts from (a cache: deleting rows changes no result)';
COMMENT ON COLUMN @extschema@.snapshots.reducer IS 'schema-qualified signature of the reducer (cast it with ::regprocedure)';
COMMENT ON COLUMN @extschema@.snapshots.initial_hash IS 'SHA-256 of the initial state''s text';
COMMENT ON COLUMN @extschema@.snapshots.fingerprint IS 'SHA-256 of the reducer''s definition and of the upcaster registry';
COMMENT ON COLUMN @extschema@.snapshots.version IS 'stream version the state is at';
COMMENT ON COLUMN @extschema@.snapshots.automatic IS 'written by es_fold (replaced by newer automatic ones) rather than by es_snapshot_save';
SELECT pg_catalog.pg_extension_config_dump('@extschema@.snapshots', '');
-- written only by es_fold, es_snapshot_save and es_snapshot_delete: es_fold
-- trusts a snapshot as the fold of its stream
CREATE OR REPLACE TRIGGER es_guard_write BEFORE INSERT OR UPDATE OR DELETE ON @extschema@.snapshots
	FOR EACH STATEMENT EXECUTE FUNCTION @extschema@.es_guard();
CREATE OR REPLACE TRIGGER es_guard_truncate BEFORE TRUNCATE ON @extschema@.snapshots
	FOR EACH STATEMENT EXECUTE FUNCTION @extschema@.es_guard();
REVOKE ALL ON TABLE @extschema@.snapshots FROM PUBLIC;
GRANT SELECT ON @extschema@.snapshots TO es_reader;
GRANT INSERT, UPDATE, DELETE ON @extschema@.snapshots TO es_writer;

CREATE TYPE @extschema@.fold_state AS (
	state				jsonb,
	version				bigint,
	snapshot_version	bigint,
	events_applied		bigint
);
COMMENT ON TYPE @extschema@.fold_state IS
	'result of es_fold_state: the state, the stream version it is at, the snapshot it started from (NULL: none) and the number of events applied';
REVOKE ALL ON TYPE @extschema@.fold_state FROM PUBLIC;
GRANT USAGE ON TYPE @extschema@.fold_state TO es_reader;

/*
 * es_fold may write an automatic snapshot, hence VOLATILE (and PARALLEL
 * UNSAFE); it reads under the caller's snapshot all the same.
 */
CREATE FUNCTION @extschema@.es_fold(stream text,
									reducer regprocedure,
									initial jsonb,
									up_to_version bigint DEFAULT NULL,
									as_of timestamptz DEFAULT NULL)
RETURNS jsonb
AS 'MODULE_PATHNAME', 'es_fold'
LANGUAGE C VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE;
COMMENT ON FUNCTION @extschema@.es_fold(text, regprocedure, jsonb, bigint, timestamptz) IS
	'the state after folding the stream''s events (up to a version or a time) through reducer(state jsonb, event jsonb or es.events) returning jsonb';
REVOKE ALL ON FUNCTION @extschema@.es_fold(text, regprocedure, jsonb, bigint, timestamptz) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@.es_fold(text, regprocedure, jsonb, bigint, timestamptz) TO es_reader;

CREATE FUNCTION @extschema@.es_fold_state(stream text,
										  reducer regprocedure,
										  initial jsonb,
										  up_to_version bigint DEFAULT NULL,
										  as_of timestamptz DEFAULT NULL)
RETURNS @extschema@.fold_state
AS 'MODULE_PATHNAME', 'es_fold_state'
LANGUAGE C VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE;
COMMENT ON FUNCTION @extschema@.es_fold_state(text, regprocedure, jsonb, bigint, timestamptz) IS
	'es_fold with the version the state is at, the snapshot it started from and the number of events applied';
REVOKE ALL ON FUNCTION @extschema@.es_fold_state(text, regprocedure, jsonb, bigint, timestamptz) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@.es_fold_state(text, regprocedure, jsonb, bigint, timestamptz) TO es_reader;

CREATE FUNCTION @extschema@.es_snapshot_save(stream text,
											 reducer regprocedure,
											 initial jsonb,
											 version bigint DEFAULT NULL)
RETURNS bigint
AS 'MODULE_PATHNAME', 'es_snapshot_save'
LANGUAGE C VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE;
COMMENT ON FUNCTION @extschema@.es_snapshot_save(text, regprocedure, jsonb, bigint) IS
	'folds the stream up to version (default: its last) and stores the state as a snapshot; returns its version';
REVOKE ALL ON FUNCTION @extschema@.es_snapshot_save(text, regprocedure, jsonb, bigint) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@.es_snapshot_save(text, regprocedure, jsonb, bigint) TO es_writer;

CREATE FUNCTION @extschema@.es_snapshot_delete(stream text, reducer regprocedure DEFAULT NULL)
RETURNS bigint
AS 'MODULE_PATHNAME', 'es_snapshot_delete'
LANGUAGE C VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE;
COMMENT ON FUNCTION @extschema@.es_snapshot_delete(text, regprocedure) IS
	'deletes the snapshots of a stream (NULL: every stream), of one reducer or of all; returns how many';
REVOKE ALL ON FUNCTION @extschema@.es_snapshot_delete(text, regprocedure) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@.es_snapshot_delete(text, regprocedure) TO es_writer;

/*
 * The fold as an aggregate, for ad-hoc queries over many streams:
 *   es_fold_agg(reducer, initial, e ORDER BY e.version) ... GROUP BY e.stream_id
 * No snapshots; events are upcast.
 */
CREATE FUNCTION @extschema@.es_fold_agg_step(internal, regprocedure, jsonb, @extschema@.events)
RETURNS internal
AS 'MODULE_PATHNAME', 'es_fold_agg_step'
LANGUAGE C VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE;
COMMENT ON FUNCTION @extschema@.es_fold_agg_step(internal, regprocedure, jsonb, @extschema@.events) IS
	'transition function of es_fold_agg';
REVOKE ALL ON FUNCTION @extschema@.es_fold_agg_step(internal, regprocedure, jsonb, @extschema@.events) FROM PUBLIC;

CREATE FUNCTION @extschema@.es_fold_agg_final(internal)
RETURNS jsonb
AS 'MODULE_PATHNAME', 'es_fold_agg_final'
LANGUAGE C VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE;
COMMENT ON FUNCTION @extschema@.es_fold_agg_final(internal) IS
	'final function of es_fold_agg';
REVOKE ALL ON FUNCTION @extschema@.es_fold_agg_final(internal) FROM PUBLIC;

CREATE AGGREGATE @extschema@.es_fold_agg(reducer regprocedure, initial jsonb, event @extschema@.events) (
	SFUNC = @extschema@.es_fold_agg_step,
	STYPE = internal,
	FINALFUNC = @extschema@.es_fold_agg_final,
	PARALLEL = UNSAFE
);
COMMENT ON AGGREGATE @extschema@.es_fold_agg(regprocedure, jsonb, @extschema@.events) IS
	'folds the aggregated events through a reducer (order them: es_fold_agg(r, initial, e ORDER BY e.version)); no snapshots';
REVOKE ALL ON FUNCTION @extschema@.es_fold_agg(regprocedure, jsonb, @extschema@.events) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@.es_fold_agg(regprocedure, jsonb, @extschema@.events) TO es_reader;
