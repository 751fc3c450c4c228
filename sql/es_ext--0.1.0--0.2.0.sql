/* sql/es_ext--0.1.0--0.2.0.sql — upgrade of es_ext from 0.1.0 to 0.2.0 */

-- complain if script is sourced in psql, rather than via ALTER EXTENSION
\echo Use "ALTER EXTENSION es_ext UPDATE TO '0.2.0'" to load this file. \quit

/*
 * Every change to the schema since 0.1.0, each one also made in its area file
 * of sql/install/ (which the 0.2.0 install script is generated from):
 * test/t/023_upgrade.pl checks that 0.1.0 + this script and a fresh 0.2.0
 * install create the same catalog.  Write DDL that can be re-run (CREATE OR
 * REPLACE, IF NOT EXISTS, IF EXISTS, DO blocks that check the catalog), and
 * keep REVOKE/GRANT and COMMENT ON beside each object as the area files do.
 */

/*
 * es.config is written by the first append, no longer by CREATE EXTENSION
 * (a dump's row then restores without a conflict): writers insert it.  An
 * existing row stays.
 */
COMMENT ON TABLE @extschema@.config IS
	'es_ext log configuration (at most one row, written by the first append): current era of the global log and the system identifier it belongs to';
GRANT INSERT, UPDATE ON @extschema@.config TO es_writer;

/*
 * The identity sequences are dumped with the tables, so positions and group
 * ids continue after the restored ones.
 */
SELECT pg_catalog.pg_extension_config_dump('@extschema@.events_global_position_seq', '');
SELECT pg_catalog.pg_extension_config_dump('@extschema@.outbox_position_seq', '');
SELECT pg_catalog.pg_extension_config_dump('@extschema@.outbox_groups_group_id_seq', '');

/*
 * User objects on es_ext's tables: pg_dump leaves out the triggers (the
 * projections), indexes, row level security and policies that users add to
 * an extension's tables.  The dump filter of this table makes pg_dump write,
 * as its rows, what es_user_objects() finds in the catalog at dump time; a
 * restore COPY brings them back as pending objects: indexes, row level
 * security and policies are re-created at once, triggers after the rows of
 * their table are restored (es_restored, an AFTER INSERT statement trigger
 * on every es_ext table, records that), so a projection trigger does not fire
 * for restored events.  An object that cannot be re-created is reported with
 * a WARNING and stays pending; it never costs the restore any rows.  Outside a restore the table is empty; after
 * one it lists the tables whose rows were restored ('restored rows') and any
 * object still pending (its table's rows were not in the dump).
 */
CREATE TABLE IF NOT EXISTS @extschema@.user_objects (
	table_name		name NOT NULL,
	kind			text NOT NULL
		CHECK (kind IN ('index', 'row security', 'policy', 'trigger', 'restored rows', 'foreign era')),
	object_name		name NOT NULL,
	definition		text,
	trigger_enabled	"char",
	CONSTRAINT user_objects_pkey PRIMARY KEY (table_name, kind, object_name),
	CONSTRAINT user_objects_definition_check
		CHECK ((definition IS NULL) = (kind IN ('restored rows', 'foreign era')))
);
COMMENT ON TABLE @extschema@.user_objects IS
	'user triggers, indexes, row level security and policies on es_ext''s tables, as a dump carries them; after a restore, the tables whose rows were restored';
COMMENT ON COLUMN @extschema@.user_objects.definition IS 'the statement that re-creates the object, schema-qualified';
COMMENT ON COLUMN @extschema@.user_objects.trigger_enabled IS 'pg_trigger.tgenabled of a trigger (O, D, R or A)';

CREATE OR REPLACE TRIGGER es_guard_write BEFORE INSERT OR UPDATE OR DELETE ON @extschema@.user_objects
	FOR EACH STATEMENT EXECUTE FUNCTION @extschema@.es_guard();
CREATE OR REPLACE TRIGGER es_guard_truncate BEFORE TRUNCATE ON @extschema@.user_objects
	FOR EACH STATEMENT EXECUTE FUNCTION @extschema@.es_guard();

CREATE OR REPLACE FUNCTION @extschema@.es_restored()
RETURNS trigger
AS 'MODULE_PATHNAME', 'es_restored'
LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION @extschema@.es_restored() IS
	'trigger: after a restore COPY into an es_ext table, records its rows as restored in es.user_objects';

CREATE OR REPLACE FUNCTION @extschema@.es_user_objects_pending()
RETURNS trigger
AS 'MODULE_PATHNAME', 'es_user_objects_pending'
LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION @extschema@.es_user_objects_pending() IS
	'trigger: at the commit of a restore step, re-creates the pending user objects of restored tables';
-- (CREATE OR REPLACE does not apply to constraint triggers)
DO $pending$
BEGIN
	IF NOT EXISTS (SELECT FROM pg_catalog.pg_trigger AS t
					WHERE t.tgrelid OPERATOR(pg_catalog.=) '@extschema@.user_objects'::pg_catalog.regclass
					  AND t.tgname OPERATOR(pg_catalog.=) 'es_user_objects_pending') THEN
		CREATE CONSTRAINT TRIGGER es_user_objects_pending AFTER INSERT ON @extschema@.user_objects
			DEFERRABLE INITIALLY DEFERRED
			FOR EACH ROW EXECUTE FUNCTION @extschema@.es_user_objects_pending();
	END IF;
END
$pending$;
DO $restored$
DECLARE
	t	text;
BEGIN
	FOREACH t IN ARRAY ARRAY['config', 'streams', 'events', 'projection_status', 'outbox_routes',
							 'outbox_groups', 'outbox', 'outbox_deliveries', 'outbox_dead',
							 'upcasters', 'snapshots'] LOOP
		EXECUTE pg_catalog.format('CREATE OR REPLACE TRIGGER es_restored AFTER INSERT ON @extschema@.%I'
								  ' FOR EACH STATEMENT EXECUTE FUNCTION @extschema@.es_restored()', t);
	END LOOP;
END
$restored$;

/*
 * es_user_objects(): the user objects on es_ext's tables, from the catalog.
 * es_ext's own objects are left out: its triggers are those whose function
 * belongs to the extension (except es_project, which users build projections
 * with), its indexes are listed by name, and indexes of constraints are not
 * carried.
 */
CREATE OR REPLACE FUNCTION @extschema@.es_user_objects()
RETURNS SETOF @extschema@.user_objects
LANGUAGE sql STABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $fn$
WITH tabs AS (
	SELECT c.oid, c.relname, c.relrowsecurity, c.relforcerowsecurity
	  FROM pg_catalog.pg_depend AS d
	  JOIN pg_catalog.pg_extension AS x ON x.oid = d.refobjid
	  JOIN pg_catalog.pg_class AS c ON c.oid = d.objid
	 WHERE x.extname = 'es_ext'
	   AND d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass
	   AND d.refclassid = 'pg_catalog.pg_extension'::pg_catalog.regclass
	   AND d.deptype = 'e'
	   AND c.relkind IN ('r', 'p')),
own_functions AS (
	SELECT d.objid
	  FROM pg_catalog.pg_depend AS d
	  JOIN pg_catalog.pg_extension AS x ON x.oid = d.refobjid
	 WHERE x.extname = 'es_ext'
	   AND d.classid = 'pg_catalog.pg_proc'::pg_catalog.regclass
	   AND d.refclassid = 'pg_catalog.pg_extension'::pg_catalog.regclass
	   AND d.deptype = 'e'
	   AND d.objid <> 'es.es_project()'::pg_catalog.regprocedure)
SELECT t.relname, 'index', i.relname, pg_catalog.pg_get_indexdef(ix.indexrelid), NULL::"char"
  FROM tabs AS t
  JOIN pg_catalog.pg_index AS ix ON ix.indrelid = t.oid
  JOIN pg_catalog.pg_class AS i ON i.oid = ix.indexrelid
 WHERE NOT EXISTS (SELECT FROM pg_catalog.pg_constraint AS k WHERE k.conindid = ix.indexrelid)
   AND i.relname <> ALL (ARRAY['streams_category_idx', 'events_log_idx', 'events_category_log_idx',
							   'events_type_log_idx', 'events_event_id_idx', 'events_tags_idx',
							   'outbox_deliveries_stream_idx', 'outbox_dead_position_idx']::name[])
UNION ALL
SELECT t.relname, 'row security', 'enable',
	   pg_catalog.format('ALTER TABLE %s ENABLE ROW LEVEL SECURITY', t.oid::pg_catalog.regclass),
	   NULL
  FROM tabs AS t WHERE t.relrowsecurity
UNION ALL
SELECT t.relname, 'row security', 'force',
	   pg_catalog.format('ALTER TABLE %s FORCE ROW LEVEL SECURITY', t.oid::pg_catalog.regclass),
	   NULL
  FROM tabs AS t WHERE t.relforcerowsecurity
UNION ALL
SELECT t.relname, 'policy', p.polname,
	   pg_catalog.format('CREATE POLICY %I ON %s AS %s FOR %s TO %s',
						 p.polname, t.oid::pg_catalog.regclass,
						 CASE WHEN p.polpermissive THEN 'PERMISSIVE' ELSE 'RESTRICTIVE' END,
						 CASE p.polcmd WHEN 'r' THEN 'SELECT' WHEN 'a' THEN 'INSERT'
									   WHEN 'w' THEN 'UPDATE' WHEN 'd' THEN 'DELETE' ELSE 'ALL' END,
						 (SELECT pg_catalog.string_agg(CASE WHEN r.oid = 0 THEN 'PUBLIC'
															ELSE pg_catalog.quote_ident(a.rolname) END,
													   ', ' ORDER BY r.n)
							FROM pg_catalog.unnest(p.polroles) WITH ORDINALITY AS r(oid, n)
							LEFT JOIN pg_catalog.pg_roles AS a ON a.oid = r.oid))
	   || COALESCE(' USING (' || pg_catalog.pg_get_expr(p.polqual, p.polrelid) || ')', '')
	   || COALESCE(' WITH CHECK (' || pg_catalog.pg_get_expr(p.polwithcheck, p.polrelid) || ')', ''),
	   NULL
  FROM tabs AS t
  JOIN pg_catalog.pg_policy AS p ON p.polrelid = t.oid
UNION ALL
SELECT t.relname, 'trigger', g.tgname, pg_catalog.pg_get_triggerdef(g.oid), g.tgenabled
  FROM tabs AS t
  JOIN pg_catalog.pg_trigger AS g ON g.tgrelid = t.oid
  JOIN pg_catalog.pg_proc AS f ON f.oid = g.tgfoid
 WHERE NOT g.tgisinternal
   AND g.tgfoid NOT IN (SELECT o.objid FROM own_functions AS o)
   -- a trigger on a session's temporary function goes with that session
   AND NOT pg_catalog.pg_is_other_temp_schema(f.pronamespace)
   AND f.pronamespace <> pg_catalog.pg_my_temp_schema()
$fn$;
COMMENT ON FUNCTION @extschema@.es_user_objects() IS
	'the user triggers, indexes, row level security and policies on es_ext''s tables, with the statements that re-create them (what a dump carries)';

-- pg_dump writes "COPY (SELECT <columns> FROM es.user_objects <filter>) TO stdout":
-- the rows dumped are the catalog's, never the (empty) table's
SELECT pg_catalog.pg_extension_config_dump('@extschema@.user_objects',
	'WHERE false UNION ALL SELECT * FROM es.es_user_objects()');

REVOKE ALL ON TABLE @extschema@.user_objects FROM PUBLIC;
REVOKE ALL ON FUNCTION @extschema@.es_user_objects(), @extschema@.es_restored(),
	@extschema@.es_user_objects_pending() FROM PUBLIC;
-- readers look up 'foreign era' rows (src/era.c)
GRANT SELECT ON @extschema@.user_objects TO es_reader;
-- pg_dump calls it: es_admin, and the predefined role of backup roles
GRANT EXECUTE ON FUNCTION @extschema@.es_user_objects() TO es_admin, pg_read_all_data;

/* the rate of a resumed rebuild counts from its resumption (es.projection_progress) */
ALTER TABLE @extschema@.projection_status
	ADD COLUMN IF NOT EXISTS run_started_at timestamptz,
	ADD COLUMN IF NOT EXISTS run_replayed_from bigint NOT NULL DEFAULT 0;
COMMENT ON COLUMN @extschema@.projection_status.run_started_at IS 'when the rebuild was last resumed, its current run started (NULL: not resumed, the run started at started_at)';
COMMENT ON COLUMN @extschema@.projection_status.run_replayed_from IS 'events replayed before the current run (0, or the count at the last resumption)';

/*
 * es_rebuild_projection checks that the trigger is a user's AFTER INSERT
 * trigger before it pauses anything (0.1.0 paused a BEFORE trigger, or one of
 * es_ext's own guard triggers, and only then failed).
 */
CREATE OR REPLACE PROCEDURE @extschema@.es_rebuild_projection(projection name,
												   reset text,
												   batch_size integer DEFAULT 1000,
												   resume boolean DEFAULT true)
LANGUAGE plpgsql
AS $proc$
DECLARE
	trig		record;
	prior		record;
	step		record;
	n			integer;
	cur			@extschema@.log_cursor;
	total		bigint := 0;
BEGIN
	IF projection IS NULL THEN
		RAISE EXCEPTION 'projection cannot be null' USING ERRCODE = 'null_value_not_allowed';
	END IF;
	IF batch_size IS NULL OR batch_size OPERATOR(pg_catalog.<) 1 THEN
		RAISE EXCEPTION 'batch_size must be greater than zero' USING ERRCODE = 'invalid_parameter_value';
	END IF;
	-- checked before anything is paused: only a user's AFTER INSERT trigger
	SELECT t.tgtype::pg_catalog.int4 AS tgtype, t.tgfoid INTO trig
	  FROM pg_catalog.pg_trigger AS t
	 WHERE t.tgrelid OPERATOR(pg_catalog.=) '@extschema@.events'::pg_catalog.regclass
	   AND t.tgname OPERATOR(pg_catalog.=) projection
	   AND NOT t.tgisinternal;
	IF NOT FOUND THEN
		RAISE EXCEPTION 'trigger "%" for table "es.events" does not exist', projection
			USING ERRCODE = 'undefined_object',
				  HINT = 'Create the projection with CREATE TRIGGER ... AFTER INSERT ON es.events.';
	END IF;
	-- pg_trigger.tgtype: 2 = BEFORE, 4 = INSERT, 64 = INSTEAD OF
	IF (trig.tgtype OPERATOR(pg_catalog.&) 4) OPERATOR(pg_catalog.=) 0
	   OR (trig.tgtype OPERATOR(pg_catalog.&) 66) OPERATOR(pg_catalog.<>) 0 THEN
		RAISE EXCEPTION 'trigger "%" on table "es.events" is not an AFTER INSERT trigger', projection
			USING ERRCODE = 'wrong_object_type',
				  HINT = 'A projection is an AFTER INSERT trigger on es.events.';
	END IF;
	IF trig.tgfoid OPERATOR(pg_catalog.<>) '@extschema@.es_project()'::pg_catalog.regprocedure
	   AND EXISTS (SELECT FROM pg_catalog.pg_depend AS d
				   WHERE d.classid OPERATOR(pg_catalog.=) 'pg_catalog.pg_proc'::pg_catalog.regclass
					 AND d.objid OPERATOR(pg_catalog.=) trig.tgfoid
					 AND d.refclassid OPERATOR(pg_catalog.=) 'pg_catalog.pg_extension'::pg_catalog.regclass
					 AND d.deptype OPERATOR(pg_catalog.=) 'e') THEN
		RAISE EXCEPTION 'trigger "%" on table "es.events" belongs to es_ext, not to a projection', projection
			USING ERRCODE = 'wrong_object_type';
	END IF;

	SELECT s.state, s.replayed, s.last_cursor INTO prior
	  FROM @extschema@.projection_status AS s
	 WHERE s.projection OPERATOR(pg_catalog.=) es_rebuild_projection.projection;

	IF resume AND prior.state OPERATOR(pg_catalog.=) 'rebuilding' THEN
		cur := prior.last_cursor;
		total := prior.replayed;
		-- the rate of this run counts from now: the pause is not replay time
		UPDATE @extschema@.projection_status AS s
		   SET run_started_at = pg_catalog.clock_timestamp(), run_replayed_from = total
		 WHERE s.projection OPERATOR(pg_catalog.=) es_rebuild_projection.projection;
	ELSE
		EXECUTE pg_catalog.format('ALTER TABLE @extschema@.events DISABLE TRIGGER %I', projection);
		IF reset IS NOT NULL THEN
			EXECUTE reset;
		END IF;
		INSERT INTO @extschema@.projection_status AS s
			(projection, state, started_at, finished_at, replayed, last_cursor, updated_at,
			 run_started_at, run_replayed_from)
		VALUES (projection, 'rebuilding', pg_catalog.clock_timestamp(), NULL, 0, NULL,
				pg_catalog.clock_timestamp(), NULL, 0)
		ON CONFLICT ON CONSTRAINT projection_status_pkey DO UPDATE
			SET state = 'rebuilding', started_at = excluded.started_at, finished_at = NULL,
				replayed = 0, last_cursor = NULL, updated_at = excluded.updated_at,
				run_started_at = NULL, run_replayed_from = 0;
	END IF;
	COMMIT;
	IF resume AND prior.state OPERATOR(pg_catalog.=) 'rebuilding' THEN
		RAISE NOTICE 'projection "%": resuming an interrupted rebuild after % events', projection, total
			USING HINT = 'Progress is shown in the view es.projection_progress.';
	ELSE
		RAISE NOTICE 'projection "%": rebuilding', projection
			USING HINT = 'Progress is shown in the view es.projection_progress.';
	END IF;

	-- history, in committed batches, while appends go on
	LOOP
		SELECT r.replayed, r.last_cursor INTO step
		  FROM @extschema@.es_projection_replay(projection, cur, batch_size, false) AS r;
		n := step.replayed;
		cur := step.last_cursor;
		total := total OPERATOR(pg_catalog.+) n;
		UPDATE @extschema@.projection_status AS s
		   SET replayed = total, last_cursor = cur, updated_at = pg_catalog.clock_timestamp()
		 WHERE s.projection OPERATOR(pg_catalog.=) es_rebuild_projection.projection;
		COMMIT;
		EXIT WHEN n OPERATOR(pg_catalog.<) batch_size;
	END LOOP;

	-- the tail, with appenders held off, then back to inline projection
	LOCK TABLE @extschema@.events IN SHARE ROW EXCLUSIVE MODE;
	LOOP
		SELECT r.replayed, r.last_cursor INTO step
		  FROM @extschema@.es_projection_replay(projection, cur, batch_size, true) AS r;
		n := step.replayed;
		cur := step.last_cursor;
		total := total OPERATOR(pg_catalog.+) n;
		EXIT WHEN n OPERATOR(pg_catalog.<) batch_size;
	END LOOP;
	EXECUTE pg_catalog.format('ALTER TABLE @extschema@.events ENABLE TRIGGER %I', projection);
	UPDATE @extschema@.projection_status AS s
	   SET state = 'live', replayed = total, last_cursor = cur,
		   finished_at = pg_catalog.clock_timestamp(), updated_at = pg_catalog.clock_timestamp()
	 WHERE s.projection OPERATOR(pg_catalog.=) es_rebuild_projection.projection;
	COMMIT;
	RAISE NOTICE 'projection "%" rebuilt: % events replayed', projection, total;
END
$proc$;

/* registered code runs as its owner (issue 10) */
/*
 * es.upcasters.registered_by: the role an upcaster runs as (src/upcast.c).
 * 0.1.0 did not record who registered an upcaster; an existing row gets the
 * owner of its function (the role that wrote the code), or es_admin when the
 * function no longer resolves.  Review the column after the update, and
 * register an upcaster again to run it as yourself.
 */
ALTER TABLE @extschema@.upcasters ADD COLUMN IF NOT EXISTS registered_by regrole;
UPDATE @extschema@.upcasters AS u
   SET registered_by = COALESCE((SELECT p.proowner::pg_catalog.regrole
								   FROM pg_catalog.pg_proc AS p
								  WHERE p.oid OPERATOR(pg_catalog.=) pg_catalog.to_regprocedure(u.fn)),
								'es_admin'::pg_catalog.regrole)
 WHERE u.registered_by IS NULL;
ALTER TABLE @extschema@.upcasters ALTER COLUMN registered_by SET NOT NULL;
COMMENT ON COLUMN @extschema@.upcasters.registered_by IS
	'the role that registered the upcaster (wrote the row): the upcaster runs as this role';
CREATE OR REPLACE FUNCTION @extschema@.es_upcasters_stamp()
RETURNS trigger
AS 'MODULE_PATHNAME', 'es_upcasters_stamp'
LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION @extschema@.es_upcasters_stamp() IS
	'trigger: records the role that writes a row of es.upcasters as its registered_by, the role the upcaster runs as';
REVOKE ALL ON FUNCTION @extschema@.es_upcasters_stamp() FROM PUBLIC;
CREATE OR REPLACE TRIGGER es_upcasters_stamp BEFORE INSERT OR UPDATE ON @extschema@.upcasters
	FOR EACH ROW EXECUTE FUNCTION @extschema@.es_upcasters_stamp();

/* outbox hardening (issue 10) */
/*
 * The outbox tables change only through es_append and the es_outbox_*
 * functions, as es.events does: the guard triggers go on every outbox table
 * (es.outbox's also refuses DELETE and TRUNCATE now), and the functions that
 * write them are C (src/outbox_api.c), which lets each of its own statements
 * through the guard.  Same signatures, defaults, results, errors and
 * SQLSTATEs; they still run as their caller, so the roles keep the table
 * privileges those statements need, and lose those no function needs.
 * The C functions also fix two races: es_outbox_cleanup computes its bound
 * and deletes in one statement, and, like es_outbox_create_group,
 * es_outbox_drop_group and the outbox write of es_append, reads the groups
 * and deliveries with a snapshot taken after its lock on es.outbox, at every
 * isolation level.
 */
CREATE OR REPLACE TRIGGER es_guard_write BEFORE INSERT OR UPDATE OR DELETE ON @extschema@.outbox_routes
	FOR EACH STATEMENT EXECUTE FUNCTION @extschema@.es_guard();
CREATE OR REPLACE TRIGGER es_guard_truncate BEFORE TRUNCATE ON @extschema@.outbox_routes
	FOR EACH STATEMENT EXECUTE FUNCTION @extschema@.es_guard();
CREATE OR REPLACE TRIGGER es_guard_write BEFORE INSERT OR UPDATE OR DELETE ON @extschema@.outbox_groups
	FOR EACH STATEMENT EXECUTE FUNCTION @extschema@.es_guard();
CREATE OR REPLACE TRIGGER es_guard_truncate BEFORE TRUNCATE ON @extschema@.outbox_groups
	FOR EACH STATEMENT EXECUTE FUNCTION @extschema@.es_guard();
CREATE OR REPLACE TRIGGER es_guard_write BEFORE INSERT OR UPDATE OR DELETE ON @extschema@.outbox
	FOR EACH STATEMENT EXECUTE FUNCTION @extschema@.es_guard();
CREATE OR REPLACE TRIGGER es_guard_truncate BEFORE TRUNCATE ON @extschema@.outbox
	FOR EACH STATEMENT EXECUTE FUNCTION @extschema@.es_guard();
CREATE OR REPLACE TRIGGER es_guard_write BEFORE INSERT OR UPDATE OR DELETE ON @extschema@.outbox_deliveries
	FOR EACH STATEMENT EXECUTE FUNCTION @extschema@.es_guard();
CREATE OR REPLACE TRIGGER es_guard_truncate BEFORE TRUNCATE ON @extschema@.outbox_deliveries
	FOR EACH STATEMENT EXECUTE FUNCTION @extschema@.es_guard();
CREATE OR REPLACE TRIGGER es_guard_write BEFORE INSERT OR UPDATE OR DELETE ON @extschema@.outbox_dead
	FOR EACH STATEMENT EXECUTE FUNCTION @extschema@.es_guard();
CREATE OR REPLACE TRIGGER es_guard_truncate BEFORE TRUNCATE ON @extschema@.outbox_dead
	FOR EACH STATEMENT EXECUTE FUNCTION @extschema@.es_guard();
REVOKE UPDATE, TRUNCATE ON @extschema@.outbox_routes FROM es_admin;
REVOKE UPDATE, TRUNCATE ON @extschema@.outbox_groups FROM es_admin;
REVOKE UPDATE ON @extschema@.outbox_dead FROM es_consumer, es_admin;

CREATE OR REPLACE FUNCTION @extschema@.es_outbox_route(category text DEFAULT NULL, event_type text DEFAULT NULL)
RETURNS boolean
AS 'MODULE_PATHNAME', 'es_outbox_route'
LANGUAGE C VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp;

CREATE OR REPLACE FUNCTION @extschema@.es_outbox_unroute(category text DEFAULT NULL, event_type text DEFAULT NULL)
RETURNS boolean
AS 'MODULE_PATHNAME', 'es_outbox_unroute'
LANGUAGE C VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp;

CREATE OR REPLACE FUNCTION @extschema@.es_outbox_create_group(consumer_group text,
												   max_attempts integer DEFAULT 10,
												   backoff_base interval DEFAULT '1 second',
												   backoff_max interval DEFAULT '5 minutes',
												   backfill boolean DEFAULT false)
RETURNS integer
AS 'MODULE_PATHNAME', 'es_outbox_create_group'
LANGUAGE C VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp;

CREATE OR REPLACE FUNCTION @extschema@.es_outbox_drop_group(consumer_group text)
RETURNS bigint
AS 'MODULE_PATHNAME', 'es_outbox_drop_group'
LANGUAGE C VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp;

CREATE OR REPLACE FUNCTION @extschema@.es_outbox_claim(consumer_group text,
											max_count integer DEFAULT 100,
											lease_time interval DEFAULT '30 seconds')
RETURNS TABLE (lease uuid,
			   "position" bigint,
			   attempts integer,
			   event_id uuid,
			   stream_id text,
			   version bigint,
			   event_type text,
			   schema_version integer,
			   data jsonb,
			   metadata jsonb,
			   global_position bigint,
			   recorded_at timestamptz)
AS 'MODULE_PATHNAME', 'es_outbox_claim'
LANGUAGE C VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE ROWS 100
SET search_path = pg_catalog, pg_temp;

CREATE OR REPLACE FUNCTION @extschema@.es_outbox_ack(consumer_group text, lease uuid, positions bigint[])
RETURNS bigint
AS 'MODULE_PATHNAME', 'es_outbox_ack'
LANGUAGE C VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp;

CREATE OR REPLACE FUNCTION @extschema@.es_outbox_nack(consumer_group text,
										   lease uuid,
										   positions bigint[],
										   reason text DEFAULT NULL,
										   retry_after interval DEFAULT NULL)
RETURNS bigint
AS 'MODULE_PATHNAME', 'es_outbox_nack'
LANGUAGE C VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp;

CREATE OR REPLACE FUNCTION @extschema@.es_outbox_replay(consumer_group text, positions bigint[] DEFAULT NULL)
RETURNS bigint
AS 'MODULE_PATHNAME', 'es_outbox_replay'
LANGUAGE C VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp;

CREATE OR REPLACE FUNCTION @extschema@.es_outbox_discard(consumer_group text, positions bigint[] DEFAULT NULL)
RETURNS bigint
AS 'MODULE_PATHNAME', 'es_outbox_discard'
LANGUAGE C VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp;

CREATE OR REPLACE FUNCTION @extschema@.es_outbox_cleanup(retention interval DEFAULT '0', max_rows integer DEFAULT 10000)
RETURNS bigint
AS 'MODULE_PATHNAME', 'es_outbox_cleanup'
LANGUAGE C VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp;

/* consumer group settings change through a function now that the guard refuses UPDATE */
CREATE OR REPLACE FUNCTION @extschema@.es_outbox_alter_group(consumer_group text,
												  max_attempts integer DEFAULT NULL,
												  backoff_base interval DEFAULT NULL,
												  backoff_max interval DEFAULT NULL)
RETURNS void
AS 'MODULE_PATHNAME', 'es_outbox_alter_group'
LANGUAGE C VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION @extschema@.es_outbox_alter_group(text, integer, interval, interval) IS
	'changes the retry settings of a consumer group (NULL: unchanged)';
REVOKE ALL ON FUNCTION @extschema@.es_outbox_alter_group(text, integer, interval, interval) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@.es_outbox_alter_group(text, integer, interval, interval) TO es_admin;


/*
 * es.snapshots is guarded like es.events: es_fold trusts a stored state as
 * the fold of its stream, so a writer's UPDATE could forge every reader's
 * result (issue 10, found by the adversarial pass).
 */
CREATE OR REPLACE TRIGGER es_guard_write BEFORE INSERT OR UPDATE OR DELETE ON @extschema@.snapshots
	FOR EACH STATEMENT EXECUTE FUNCTION @extschema@.es_guard();
CREATE OR REPLACE TRIGGER es_guard_truncate BEFORE TRUNCATE ON @extschema@.snapshots
	FOR EACH STATEMENT EXECUTE FUNCTION @extschema@.es_guard();


/*
 * Statistics (issue 12): counters in shared memory when preloaded, the
 * views es.stats and es.category_stats, and es.outbox_status with the age
 * of the oldest undelivered message and the throughput since the reset.
 */
CREATE OR REPLACE FUNCTION @extschema@.es_stats_counters(kind text,
											  OUT dbid oid,
											  OUT name text,
											  OUT enabled boolean,
											  OUT appends bigint,
											  OUT events bigint,
											  OUT data_bytes bigint,
											  OUT conflicts bigint,
											  OUT idempotent_replays bigint,
											  OUT refused_batches bigint,
											  OUT mean_append_time double precision,
											  OUT p50_append_time double precision,
											  OUT p99_append_time double precision,
											  OUT max_append_time double precision,
											  OUT stream_reads bigint,
											  OUT log_reads bigint,
											  OUT folds bigint,
											  OUT snapshot_hits bigint,
											  OUT outbox_claimed bigint,
											  OUT outbox_acked bigint,
											  OUT outbox_nacked bigint,
											  OUT outbox_dead bigint,
											  OUT stats_reset timestamptz,
											  OUT untracked bigint)
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'es_stats_counters'
LANGUAGE C VOLATILE STRICT PARALLEL RESTRICTED;
COMMENT ON FUNCTION @extschema@.es_stats_counters(text) IS
	'the statistics counters of one kind (database, category or group), as the views es.stats, es.category_stats and es.outbox_status show them';
REVOKE ALL ON FUNCTION @extschema@.es_stats_counters(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@.es_stats_counters(text) TO es_reader, pg_monitor;

CREATE OR REPLACE FUNCTION @extschema@.es_stats_reset()
RETURNS timestamptz
AS 'MODULE_PATHNAME', 'es_stats_reset'
LANGUAGE C VOLATILE STRICT PARALLEL UNSAFE;
COMMENT ON FUNCTION @extschema@.es_stats_reset() IS
	'zeroes the es_ext statistics of this database (its own, its categories'' and its consumer groups''); returns the time of the reset';
REVOKE ALL ON FUNCTION @extschema@.es_stats_reset() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@.es_stats_reset() TO es_admin;

CREATE OR REPLACE VIEW @extschema@.stats AS
	SELECT s.dbid,
		   d.datname,
		   s.enabled,
		   s.appends,
		   s.events,
		   s.data_bytes,
		   s.conflicts,
		   s.idempotent_replays,
		   s.refused_batches,
		   s.mean_append_time,
		   s.p50_append_time,
		   s.p99_append_time,
		   s.max_append_time,
		   s.stream_reads,
		   s.log_reads,
		   s.folds,
		   s.snapshot_hits,
		   s.outbox_claimed,
		   s.outbox_acked,
		   s.outbox_nacked,
		   s.outbox_dead,
		   s.untracked,
		   s.stats_reset
	  FROM @extschema@.es_stats_counters('database') AS s
	  JOIN pg_catalog.pg_database AS d ON d.oid OPERATOR(pg_catalog.=) s.dbid;
COMMENT ON VIEW @extschema@.stats IS
	'es_ext statistics per database (enabled = false, counters NULL: es_ext is not in shared_preload_libraries)';
REVOKE ALL ON TABLE @extschema@.stats FROM PUBLIC;
GRANT SELECT ON @extschema@.stats TO es_reader, pg_monitor;

CREATE OR REPLACE VIEW @extschema@.category_stats AS
	SELECT s.name AS category,
		   s.enabled,
		   s.appends,
		   s.events,
		   s.data_bytes,
		   s.conflicts,
		   s.idempotent_replays,
		   s.refused_batches,
		   s.mean_append_time,
		   s.p50_append_time,
		   s.p99_append_time,
		   s.max_append_time,
		   s.stream_reads,
		   s.log_reads,
		   s.folds,
		   s.snapshot_hits,
		   s.stats_reset
	  FROM @extschema@.es_stats_counters('category') AS s;
COMMENT ON VIEW @extschema@.category_stats IS
	'es_ext statistics per stream category of this database (enabled = false, counters NULL: es_ext is not in shared_preload_libraries)';
REVOKE ALL ON TABLE @extschema@.category_stats FROM PUBLIC;
GRANT SELECT ON @extschema@.category_stats TO es_reader, pg_monitor;

CREATE OR REPLACE VIEW @extschema@.outbox_status AS
	SELECT g.name AS consumer_group,
		   s.undelivered,
		   s.in_flight,
		   s.retrying,
		   (SELECT pg_catalog.count(*) FROM @extschema@.outbox_dead AS z
			 WHERE z.group_id OPERATOR(pg_catalog.=) g.group_id) AS dead,
		   f.created_at AS oldest_undelivered_at,
		   pg_catalog.now() OPERATOR(pg_catalog.-) f.created_at AS oldest_undelivered_age,
		   c.outbox_claimed AS claimed_since_reset,
		   c.outbox_acked AS delivered_since_reset,
		   c.outbox_acked::pg_catalog.float8 OPERATOR(pg_catalog./)
		   NULLIF(pg_catalog.date_part('epoch', pg_catalog.now() OPERATOR(pg_catalog.-) c.stats_reset), 0)
		   AS delivered_per_second,
		   c.stats_reset
	  FROM @extschema@.outbox_groups AS g
	 CROSS JOIN LATERAL (
		SELECT pg_catalog.count(*) AS undelivered,
			   pg_catalog.count(*) FILTER (WHERE d.lease IS NOT NULL
										   AND d.visible_at OPERATOR(pg_catalog.>) pg_catalog.now()) AS in_flight,
			   pg_catalog.count(*) FILTER (WHERE d.lease IS NULL
										   AND d.attempts OPERATOR(pg_catalog.>) 0) AS retrying
		  FROM @extschema@.outbox_deliveries AS d
		 WHERE d.group_id OPERATOR(pg_catalog.=) g.group_id) AS s
	  LEFT JOIN LATERAL (
		SELECT o.created_at
		  FROM @extschema@.outbox_deliveries AS d
		  JOIN @extschema@.outbox AS o ON o.position OPERATOR(pg_catalog.=) d.position
		 WHERE d.group_id OPERATOR(pg_catalog.=) g.group_id
		 ORDER BY d.position LIMIT 1) AS f ON true
	  LEFT JOIN @extschema@.es_stats_counters('group') AS c ON c.name OPERATOR(pg_catalog.=) g.name;
COMMENT ON VIEW @extschema@.outbox_status IS
	'per consumer group: undelivered messages, those claimed now, those waiting for a retry, dead letters, age of the oldest, throughput since the statistics were reset';

/* monitoring: pg_monitor (postgres_exporter's role) reads the operational views */
GRANT USAGE ON SCHEMA @extschema@ TO pg_monitor;
GRANT SELECT ON @extschema@.horizon_holders TO pg_monitor;
GRANT SELECT ON @extschema@.outbox_status TO pg_monitor;

/*
 * Logical replication (issue 12): projections for replicated events on a
 * subscriber (sql/install/90_replica.sql).
 */
CREATE OR REPLACE FUNCTION @extschema@.es_replica_projections(enable boolean DEFAULT true)
RETURNS SETOF name
AS 'MODULE_PATHNAME', 'es_replica_projections'
LANGUAGE C VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE ROWS 10
SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION @extschema@.es_replica_projections(boolean) IS
	'on a logical replication subscriber: makes the projection triggers on es.events fire for replicated events (ENABLE ALWAYS, after checking that they pin search_path) or not (false); returns the triggers changed';
REVOKE ALL ON FUNCTION @extschema@.es_replica_projections(boolean) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@.es_replica_projections(boolean) TO es_admin;

/*
 * How far a cursor is behind: events readable now, events held back by the
 * horizon, and the time since the first of them was appended.  es.subscriptions
 * (35_checkpoint.sql) and es.projection_progress (40_projection.sql) use it.
 */
CREATE OR REPLACE FUNCTION @extschema@.es_cursor_lag(after @extschema@.log_cursor,
										  OUT events_behind bigint,
										  OUT events_held_back bigint,
										  OUT lag interval)
RETURNS record
AS 'MODULE_PATHNAME', 'es_cursor_lag'
LANGUAGE C STABLE CALLED ON NULL INPUT PARALLEL RESTRICTED;
COMMENT ON FUNCTION @extschema@.es_cursor_lag(@extschema@.log_cursor) IS
	'how far a global log cursor (NULL: the start) is behind: events es_read_all would return now, committed events held back by the horizon, and the time since the first of them was appended';
REVOKE ALL ON FUNCTION @extschema@.es_cursor_lag(@extschema@.log_cursor) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@.es_cursor_lag(@extschema@.log_cursor) TO es_reader;

/*
 * Checkpoints of global-log subscribers and es.subscriptions (issue 12):
 * the same DDL as sql/install/35_checkpoint.sql.
 */
CREATE TABLE IF NOT EXISTS @extschema@.checkpoints (
	name		text NOT NULL CHECK (pg_catalog.octet_length(name) OPERATOR(pg_catalog.>=) 1
									 AND pg_catalog.octet_length(name) OPERATOR(pg_catalog.<=) 63),
	cursor		@extschema@.log_cursor,
	owner		regrole NOT NULL,
	created_at	timestamptz NOT NULL,
	saved_at	timestamptz NOT NULL,
	CONSTRAINT checkpoints_pkey PRIMARY KEY (name)
);
COMMENT ON TABLE @extschema@.checkpoints IS
	'es_ext checkpoints: the global log cursor of each named subscriber (written only by es_checkpoint_save and es_checkpoint_drop)';
COMMENT ON COLUMN @extschema@.checkpoints.name IS 'the subscriber''s name, 1 to 63 bytes';
COMMENT ON COLUMN @extschema@.checkpoints.cursor IS 'the log_cursor of the last event the subscriber processed; NULL: read from the start';
COMMENT ON COLUMN @extschema@.checkpoints.owner IS 'the role that created the checkpoint: only its members and es_admin may save or drop it';
COMMENT ON COLUMN @extschema@.checkpoints.created_at IS 'when the checkpoint was first saved';
COMMENT ON COLUMN @extschema@.checkpoints.saved_at IS 'when the cursor was last saved (the time of the call; it counts once the transaction commits)';
CREATE OR REPLACE TRIGGER es_guard_write BEFORE INSERT OR UPDATE OR DELETE ON @extschema@.checkpoints
	FOR EACH STATEMENT EXECUTE FUNCTION @extschema@.es_guard();
CREATE OR REPLACE TRIGGER es_guard_truncate BEFORE TRUNCATE ON @extschema@.checkpoints
	FOR EACH STATEMENT EXECUTE FUNCTION @extschema@.es_guard();
SELECT pg_catalog.pg_extension_config_dump('@extschema@.checkpoints', '');
REVOKE ALL ON TABLE @extschema@.checkpoints FROM PUBLIC;
GRANT SELECT ON @extschema@.checkpoints TO es_reader;
-- the functions run as their caller; the guard lets only them write
GRANT INSERT, UPDATE, DELETE ON @extschema@.checkpoints TO es_consumer, es_admin;

CREATE OR REPLACE FUNCTION @extschema@.es_checkpoint_save(name text, cursor @extschema@.log_cursor)
RETURNS void
AS 'MODULE_PATHNAME', 'es_checkpoint_save'
LANGUAGE C VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE;
COMMENT ON FUNCTION @extschema@.es_checkpoint_save(text, @extschema@.log_cursor) IS
	'saves a subscriber''s global log cursor under a name, in the caller''s transaction; NULL: from the start; moving it back replays';
REVOKE ALL ON FUNCTION @extschema@.es_checkpoint_save(text, @extschema@.log_cursor) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@.es_checkpoint_save(text, @extschema@.log_cursor) TO es_consumer, es_admin;

CREATE OR REPLACE FUNCTION @extschema@.es_checkpoint(name text)
RETURNS @extschema@.log_cursor
AS 'MODULE_PATHNAME', 'es_checkpoint'
LANGUAGE C STABLE STRICT PARALLEL RESTRICTED;
COMMENT ON FUNCTION @extschema@.es_checkpoint(text) IS
	'the cursor saved under a name; NULL when there is no such checkpoint, so es_read_all(es_checkpoint(name)) starts from the beginning';
REVOKE ALL ON FUNCTION @extschema@.es_checkpoint(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@.es_checkpoint(text) TO es_reader;

CREATE OR REPLACE FUNCTION @extschema@.es_checkpoint_drop(name text)
RETURNS boolean
AS 'MODULE_PATHNAME', 'es_checkpoint_drop'
LANGUAGE C VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE;
COMMENT ON FUNCTION @extschema@.es_checkpoint_drop(text) IS
	'drops a checkpoint; false when it does not exist';
REVOKE ALL ON FUNCTION @extschema@.es_checkpoint_drop(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@.es_checkpoint_drop(text) TO es_consumer, es_admin;

/*
 * One row per checkpoint with its lag (es_cursor_lag: index range scans of
 * the events after the cursor, never the whole log) and, when events wait
 * behind the horizon, the oldest transaction holding it back (the first row
 * of es.horizon_holders).  pg_stat_activity shows the start of another
 * role's transaction only to members of that role and of pg_read_all_stats:
 * holder_xact_age is NULL for the others.
 */
CREATE OR REPLACE VIEW @extschema@.subscriptions AS
	SELECT c.name,
		   c.owner,
		   c.cursor,
		   (c.cursor).global_position AS "position",
		   c.saved_at,
		   l.events_behind,
		   l.events_held_back,
		   l.lag,
		   h.pid AS holder_pid,
		   h.xid_age AS holder_xid_age,
		   h.xact_age AS holder_xact_age,
		   h.prepared_gid AS holder_prepared_gid
	  FROM @extschema@.checkpoints AS c
	 CROSS JOIN LATERAL @extschema@.es_cursor_lag(c.cursor) AS l
	  LEFT JOIN (SELECT o.pid, o.xid_age, o.xact_age, o.prepared_gid
				   FROM @extschema@.horizon_holders AS o
				  ORDER BY o.xid_age DESC
				  LIMIT 1) AS h
		ON l.events_held_back OPERATOR(pg_catalog.>) 0;
COMMENT ON VIEW @extschema@.subscriptions IS
	'one row per checkpoint: its cursor, the events readable after it, those held back by the horizon, its lag in time, and the oldest transaction holding the horizon back';
COMMENT ON COLUMN @extschema@.subscriptions."position" IS 'the global_position of the checkpoint''s cursor';
COMMENT ON COLUMN @extschema@.subscriptions.events_behind IS 'events after the cursor that es_read_all returns now';
COMMENT ON COLUMN @extschema@.subscriptions.events_held_back IS 'committed events after the cursor at or above the horizon: returned once older transactions end';
COMMENT ON COLUMN @extschema@.subscriptions.lag IS 'now() minus the recorded_at of the first event after the cursor; 0 when there is none';
COMMENT ON COLUMN @extschema@.subscriptions.holder_pid IS 'when events are held back: the process of the oldest transaction holding the horizon (NULL for a prepared transaction)';
COMMENT ON COLUMN @extschema@.subscriptions.holder_xid_age IS 'when events are held back: the age of that transaction''s id';
COMMENT ON COLUMN @extschema@.subscriptions.holder_xact_age IS 'when events are held back: how long that transaction has run (NULL when pg_stat_activity hides it from the reader)';
COMMENT ON COLUMN @extschema@.subscriptions.holder_prepared_gid IS 'when events are held back by a prepared transaction: its gid';
REVOKE ALL ON TABLE @extschema@.subscriptions FROM PUBLIC;
GRANT SELECT ON @extschema@.subscriptions TO es_reader;

/* a restore COPY records the table as restored (sql/install/80_dump.sql) */
CREATE OR REPLACE TRIGGER es_restored AFTER INSERT ON @extschema@.checkpoints
	FOR EACH STATEMENT EXECUTE FUNCTION @extschema@.es_restored();

/*
 * Rebuild progress, readable while a rebuild runs (each batch commits its
 * row of es.projection_status): what is left to replay is counted after the
 * last committed cursor (es_cursor_lag: an index range scan of the events
 * left, never the whole log), the rate from the start of the rebuild to its
 * last committed batch.  A rebuild that was interrupted keeps the state
 * 'rebuilding' with an updated_at that no longer moves.
 */
CREATE OR REPLACE VIEW @extschema@.projection_progress AS
	SELECT s.projection,
		   s.state,
		   s.started_at,
		   s.updated_at,
		   s.replayed,
		   r.remaining,
		   s.replayed OPERATOR(pg_catalog.+) r.remaining AS total,
		   t.events_per_second,
		   CASE WHEN s.state OPERATOR(pg_catalog.=) 'live' THEN '0'::interval
				WHEN t.events_per_second OPERATOR(pg_catalog.>) 0
				THEN pg_catalog.make_interval(secs => (r.remaining OPERATOR(pg_catalog./) t.events_per_second)::double precision)
		   END AS eta,
		   s.finished_at
	  FROM @extschema@.projection_status AS s
	 CROSS JOIN LATERAL
		   (SELECT CASE WHEN s.state OPERATOR(pg_catalog.=) 'live' THEN 0::bigint
						ELSE (SELECT l.events_behind OPERATOR(pg_catalog.+) l.events_held_back
								FROM @extschema@.es_cursor_lag(s.last_cursor) AS l)
				   END AS remaining) AS r
	 CROSS JOIN LATERAL
		   (SELECT pg_catalog.round((s.replayed OPERATOR(pg_catalog.-) s.run_replayed_from)::numeric
									OPERATOR(pg_catalog./)
									NULLIF(EXTRACT(epoch FROM
										CASE WHEN s.state OPERATOR(pg_catalog.=) 'live'
											 THEN COALESCE(s.finished_at, s.updated_at) ELSE s.updated_at END
										OPERATOR(pg_catalog.-) COALESCE(s.run_started_at, s.started_at)), 0),
									1) AS events_per_second) AS t;
COMMENT ON VIEW @extschema@.projection_progress IS
	'progress of projection rebuilds: events replayed, events left, rate and estimated time left (readable while a rebuild runs)';
COMMENT ON COLUMN @extschema@.projection_progress.remaining IS 'events still to replay after the last committed batch; 0 when live';
COMMENT ON COLUMN @extschema@.projection_progress.total IS 'replayed + remaining';
COMMENT ON COLUMN @extschema@.projection_progress.events_per_second IS 'events replayed per second by the current run (from its start, or its resumption, to the last committed batch or the end)';
COMMENT ON COLUMN @extschema@.projection_progress.eta IS 'estimated time left at that rate; 0 when live, NULL before the first batch';
REVOKE ALL ON TABLE @extschema@.projection_progress FROM PUBLIC;
GRANT SELECT ON @extschema@.projection_progress TO es_reader;

/*
 * ========================================================================
 * sql/install/45_async.sql — asynchronous projections (src/async.c)
 * ========================================================================
 *
 * An asynchronous projection is the same AFTER INSERT trigger on es.events
 * as an inline one (row trigger, es_project dispatch, or statement trigger
 * over a transition table), kept disabled so that appends never fire it.
 * es_projection_apply replays the log through it in batches, below the
 * horizon, and writes its checkpoint in the same transaction as the read
 * model: every event affects the read model exactly once.  The background
 * workers (when preloaded) and the procedure es_run_projections (from a
 * client or pg_cron) both run that function.  The tables are guarded: only
 * the functions below write them.  The DDL can be re-run: the 0.1.0 ->
 * 0.2.0 upgrade script holds the same.
 */
CREATE TABLE IF NOT EXISTS @extschema@.async_projections (
	projection		name NOT NULL,
	owner			regrole NOT NULL,
	state			text NOT NULL CHECK (state IN ('running', 'paused', 'failed')),
	batch_size		integer NOT NULL CHECK (batch_size BETWEEN 1 AND 100000),
	categories		text[],
	event_types		text[],
	on_error		text NOT NULL CHECK (on_error IN ('stop', 'park')),
	max_retries		integer NOT NULL CHECK (max_retries BETWEEN 0 AND 1000),
	checkpoint		@extschema@.log_cursor,
	applied			bigint NOT NULL DEFAULT 0,
	last_applied_at	timestamptz,
	isolate_until	@extschema@.log_cursor,
	attempts		integer NOT NULL DEFAULT 0,
	retry_at		timestamptz,
	last_error		text,
	last_error_sqlstate text,
	last_error_at	timestamptz,
	last_error_position bigint,
	created_at		timestamptz NOT NULL,
	CONSTRAINT async_projections_pkey PRIMARY KEY (projection)
);
COMMENT ON TABLE @extschema@.async_projections IS
	'es_ext asynchronous projections: settings and checkpoint of each (written only by the es_projection_* functions)';
COMMENT ON COLUMN @extschema@.async_projections.projection IS 'the name of the projection''s AFTER INSERT trigger on es.events, kept disabled';
COMMENT ON COLUMN @extschema@.async_projections.owner IS 'the role that declared the projection: the background worker applies it as this role';
COMMENT ON COLUMN @extschema@.async_projections.state IS 'running, paused (es_projection_pause) or failed (stopped on an event that kept failing)';
COMMENT ON COLUMN @extschema@.async_projections.categories IS 'only events of these stream categories (NULL: all)';
COMMENT ON COLUMN @extschema@.async_projections.event_types IS 'only events of these types (NULL: all)';
COMMENT ON COLUMN @extschema@.async_projections.on_error IS 'after max_retries failed attempts on one event: stop (state failed) or park it in es.projection_dead_letters and go on';
COMMENT ON COLUMN @extschema@.async_projections.checkpoint IS 'every event at or before this log cursor has been applied, parked or filtered out (NULL: none yet); written with the read model';
COMMENT ON COLUMN @extschema@.async_projections.isolate_until IS 'a batch failed: its events are applied one at a time up to this cursor, its last, so that the failing one is found (NULL: whole batches)';
COMMENT ON COLUMN @extschema@.async_projections.attempts IS 'failed attempts on the current event (one at a time)';
COMMENT ON COLUMN @extschema@.async_projections.retry_at IS 'no attempt before this time (backoff after a failure)';
COMMENT ON COLUMN @extschema@.async_projections.last_error_position IS 'global_position of the event of the last failure, when known';
CREATE OR REPLACE TRIGGER es_guard_write BEFORE INSERT OR UPDATE OR DELETE ON @extschema@.async_projections
	FOR EACH STATEMENT EXECUTE FUNCTION @extschema@.es_guard();
CREATE OR REPLACE TRIGGER es_guard_truncate BEFORE TRUNCATE ON @extschema@.async_projections
	FOR EACH STATEMENT EXECUTE FUNCTION @extschema@.es_guard();
SELECT pg_catalog.pg_extension_config_dump('@extschema@.async_projections', '');
REVOKE ALL ON TABLE @extschema@.async_projections FROM PUBLIC;
GRANT SELECT ON @extschema@.async_projections TO es_reader;
-- the functions run as their caller; the guard lets only them write
GRANT INSERT, UPDATE, DELETE ON @extschema@.async_projections TO es_admin;

CREATE TABLE IF NOT EXISTS @extschema@.projection_dead_letters (
	projection		name NOT NULL,
	global_position	bigint NOT NULL,
	log_cursor		@extschema@.log_cursor NOT NULL,
	stream_id		text NOT NULL,
	version			bigint NOT NULL,
	event_type		text NOT NULL,
	error			text,
	sqlstate		text,
	attempts		integer NOT NULL,
	parked_at		timestamptz NOT NULL,
	CONSTRAINT projection_dead_letters_pkey PRIMARY KEY (projection, global_position)
);
COMMENT ON TABLE @extschema@.projection_dead_letters IS
	'events an asynchronous projection parked after they kept failing (on_error = park); es_projection_retry_dead applies them again';
CREATE OR REPLACE TRIGGER es_guard_write BEFORE INSERT OR UPDATE OR DELETE ON @extschema@.projection_dead_letters
	FOR EACH STATEMENT EXECUTE FUNCTION @extschema@.es_guard();
CREATE OR REPLACE TRIGGER es_guard_truncate BEFORE TRUNCATE ON @extschema@.projection_dead_letters
	FOR EACH STATEMENT EXECUTE FUNCTION @extschema@.es_guard();
SELECT pg_catalog.pg_extension_config_dump('@extschema@.projection_dead_letters', '');
REVOKE ALL ON TABLE @extschema@.projection_dead_letters FROM PUBLIC;
GRANT SELECT ON @extschema@.projection_dead_letters TO es_reader;
GRANT INSERT, UPDATE, DELETE ON @extschema@.projection_dead_letters TO es_admin;

CREATE OR REPLACE FUNCTION @extschema@.es_create_async_projection(projection name,
																  batch_size integer DEFAULT 100,
																  categories text[] DEFAULT NULL,
																  event_types text[] DEFAULT NULL,
																  on_error text DEFAULT 'stop',
																  max_retries integer DEFAULT 3,
																  from_start boolean DEFAULT NULL)
RETURNS void
AS 'MODULE_PATHNAME', 'es_create_async_projection'
LANGUAGE C VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE;
COMMENT ON FUNCTION @extschema@.es_create_async_projection(name, integer, text[], text[], text, integer, boolean) IS
	'makes the projection trigger of that name asynchronous: disabled, and applied by es_projection_apply from the beginning of the log (a trigger created in this transaction or disabled) or after the last event it applied inline; from_start overrides that choice';
REVOKE ALL ON FUNCTION @extschema@.es_create_async_projection(name, integer, text[], text[], text, integer, boolean) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@.es_create_async_projection(name, integer, text[], text[], text, integer, boolean) TO es_admin;

CREATE OR REPLACE FUNCTION @extschema@.es_projection_apply(projection name)
RETURNS integer
AS 'MODULE_PATHNAME', 'es_projection_apply'
LANGUAGE C VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE;
COMMENT ON FUNCTION @extschema@.es_projection_apply(name) IS
	'applies the next batch of an asynchronous projection and its checkpoint in the caller''s transaction; returns the events applied (0: caught up, or not runnable now)';
REVOKE ALL ON FUNCTION @extschema@.es_projection_apply(name) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@.es_projection_apply(name) TO es_admin;

CREATE OR REPLACE FUNCTION @extschema@.es_projection_failed(projection name, message text, sqlstate text)
RETURNS text
AS 'MODULE_PATHNAME', 'es_projection_failed'
LANGUAGE C VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE;
COMMENT ON FUNCTION @extschema@.es_projection_failed(name, text, text) IS
	'records that es_projection_apply failed (call it after that transaction rolled back); returns retry, parked or failed';
REVOKE ALL ON FUNCTION @extschema@.es_projection_failed(name, text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@.es_projection_failed(name, text, text) TO es_admin;

CREATE OR REPLACE FUNCTION @extschema@.es_projection_pause(projection name)
RETURNS void
AS 'MODULE_PATHNAME', 'es_projection_pause'
LANGUAGE C VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE;
COMMENT ON FUNCTION @extschema@.es_projection_pause(name) IS
	'pauses an asynchronous projection (waits for a batch being applied)';
REVOKE ALL ON FUNCTION @extschema@.es_projection_pause(name) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@.es_projection_pause(name) TO es_admin;

CREATE OR REPLACE FUNCTION @extschema@.es_projection_resume(projection name)
RETURNS void
AS 'MODULE_PATHNAME', 'es_projection_resume'
LANGUAGE C VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE;
COMMENT ON FUNCTION @extschema@.es_projection_resume(name) IS
	'resumes a paused or failed asynchronous projection (a failed one retries its failing event at once)';
REVOKE ALL ON FUNCTION @extschema@.es_projection_resume(name) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@.es_projection_resume(name) TO es_admin;

CREATE OR REPLACE FUNCTION @extschema@.es_projection_reset(projection name, reset text)
RETURNS void
AS 'MODULE_PATHNAME', 'es_projection_reset'
LANGUAGE C VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE;
COMMENT ON FUNCTION @extschema@.es_projection_reset(name, text) IS
	'runs the reset statement (emptying the read model) and moves the asynchronous projection back to the beginning of the log, in one transaction; its dead letters are dropped';
REVOKE ALL ON FUNCTION @extschema@.es_projection_reset(name, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@.es_projection_reset(name, text) TO es_admin;

CREATE OR REPLACE FUNCTION @extschema@.es_projection_retry_dead(projection name, global_position bigint DEFAULT NULL)
RETURNS integer
AS 'MODULE_PATHNAME', 'es_projection_retry_dead'
LANGUAGE C VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE;
COMMENT ON FUNCTION @extschema@.es_projection_retry_dead(name, bigint) IS
	'applies parked events of a projection again, in log order, in the caller''s transaction, and removes them from its dead letters (NULL: all); returns how many';
REVOKE ALL ON FUNCTION @extschema@.es_projection_retry_dead(name, bigint) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@.es_projection_retry_dead(name, bigint) TO es_admin;

CREATE OR REPLACE FUNCTION @extschema@.es_projection_discard_dead(projection name, global_position bigint DEFAULT NULL)
RETURNS integer
AS 'MODULE_PATHNAME', 'es_projection_discard_dead'
LANGUAGE C VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE;
COMMENT ON FUNCTION @extschema@.es_projection_discard_dead(name, bigint) IS
	'removes parked events of a projection without applying them (NULL: all); returns how many';
REVOKE ALL ON FUNCTION @extschema@.es_projection_discard_dead(name, bigint) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@.es_projection_discard_dead(name, bigint) TO es_admin;

CREATE OR REPLACE FUNCTION @extschema@.es_projection_make_inline(projection name)
RETURNS integer
AS 'MODULE_PATHNAME', 'es_projection_make_inline'
LANGUAGE C VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE;
COMMENT ON FUNCTION @extschema@.es_projection_make_inline(name) IS
	'turns an asynchronous projection into an inline one: holds appenders off, applies the events after its checkpoint, enables its trigger; returns the events applied';
REVOKE ALL ON FUNCTION @extschema@.es_projection_make_inline(name) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@.es_projection_make_inline(name) TO es_admin;

CREATE OR REPLACE FUNCTION @extschema@.es_drop_projection(projection name)
RETURNS void
AS 'MODULE_PATHNAME', 'es_drop_projection'
LANGUAGE C VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE;
COMMENT ON FUNCTION @extschema@.es_drop_projection(name) IS
	'drops a projection, inline or asynchronous: its trigger on es.events, its settings, checkpoint, dead letters and rebuild status (not its read model)';
REVOKE ALL ON FUNCTION @extschema@.es_drop_projection(name) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@.es_drop_projection(name) TO es_admin;

/*
 * es_run_projections: the loop of the background worker, for a client or
 * pg_cron (no preload needed).  Applies batches of every running
 * asynchronous projection (or of the one named) whose retry is due,
 * committing after each, until all are caught up or max_batches batches
 * were applied; a failing batch is rolled back and recorded by
 * es_projection_failed in its own transaction.  Must be CALLed outside a
 * transaction block.  No SET clause (a procedure with one cannot commit):
 * every name is schema-qualified.
 */
CREATE OR REPLACE PROCEDURE @extschema@.es_run_projections(projection name DEFAULT NULL,
														   max_batches integer DEFAULT NULL,
														   INOUT applied bigint DEFAULT NULL,
														   INOUT failures integer DEFAULT NULL)
LANGUAGE plpgsql
AS $proc$
DECLARE
	p			name;
	n			integer;
	batches		bigint := 0;
	progress	boolean;
	msg			text;
	code		text;
	outcome		text;
BEGIN
	-- refused like every writing function of es_ext (es_projection_apply would be)
	IF pg_catalog.pg_is_in_recovery() THEN
		RAISE EXCEPTION 'cannot execute es_run_projections() during recovery'
			USING ERRCODE = 'read_only_sql_transaction';
	END IF;
	IF pg_catalog.current_setting('transaction_read_only')::boolean THEN
		RAISE EXCEPTION 'cannot execute es_run_projections() in a read-only transaction'
			USING ERRCODE = 'read_only_sql_transaction';
	END IF;
	IF max_batches IS NOT NULL AND max_batches OPERATOR(pg_catalog.<) 1 THEN
		RAISE EXCEPTION 'max_batches must be greater than zero' USING ERRCODE = 'invalid_parameter_value';
	END IF;
	IF projection IS NOT NULL AND NOT EXISTS
		(SELECT FROM @extschema@.async_projections AS a
		  WHERE a.projection OPERATOR(pg_catalog.=) es_run_projections.projection) THEN
		RAISE EXCEPTION 'asynchronous projection "%" does not exist', projection
			USING ERRCODE = 'undefined_object';
	END IF;
	applied := 0;
	failures := 0;
	COMMIT;
	LOOP
		progress := false;
		FOR p IN SELECT a.projection FROM @extschema@.async_projections AS a
				  WHERE a.state OPERATOR(pg_catalog.=) 'running'
					AND (a.retry_at IS NULL OR a.retry_at OPERATOR(pg_catalog.<=) pg_catalog.clock_timestamp())
					AND (es_run_projections.projection IS NULL
						 OR a.projection OPERATOR(pg_catalog.=) es_run_projections.projection)
				  ORDER BY a.projection
		LOOP
			EXIT WHEN max_batches IS NOT NULL AND batches OPERATOR(pg_catalog.>=) max_batches;
			msg := NULL;
			BEGIN
				n := @extschema@.es_projection_apply(p);
			EXCEPTION WHEN OTHERS THEN
				GET STACKED DIAGNOSTICS msg = MESSAGE_TEXT, code = RETURNED_SQLSTATE;
				n := 0;
			END;
			COMMIT;
			batches := batches OPERATOR(pg_catalog.+) 1;
			IF msg IS NOT NULL THEN
				outcome := @extschema@.es_projection_failed(p, msg, code);
				COMMIT;
				failures := failures OPERATOR(pg_catalog.+) 1;
				RAISE WARNING 'projection "%" failed: %', p, msg
					USING DETAIL = pg_catalog.format('SQLSTATE %s; outcome: %s.', code, outcome);
				-- parked: go on with the next event; retry: again if already due
				-- (the first failure of a batch retries its events one by one at once)
				progress := progress OR outcome OPERATOR(pg_catalog.<>) 'failed';
			ELSIF n OPERATOR(pg_catalog.>) 0 THEN
				applied := applied OPERATOR(pg_catalog.+) n;
				progress := true;
			END IF;
		END LOOP;
		EXIT WHEN NOT progress;
		EXIT WHEN max_batches IS NOT NULL AND batches OPERATOR(pg_catalog.>=) max_batches;
	END LOOP;
END
$proc$;
COMMENT ON PROCEDURE @extschema@.es_run_projections(name, integer, bigint, integer) IS
	'applies asynchronous projections from a client or pg_cron, committing after each batch, until caught up or max_batches; returns the events applied and the failures';
REVOKE ALL ON PROCEDURE @extschema@.es_run_projections(name, integer, bigint, integer) FROM PUBLIC;
GRANT EXECUTE ON PROCEDURE @extschema@.es_run_projections(name, integer, bigint, integer) TO es_admin;

/*
 * Every projection, inline or asynchronous, with its state and lag: the
 * user AFTER INSERT triggers of es.events (es_ext's own excluded), their
 * asynchronous settings and checkpoint, their rebuild and their dead
 * letters.  events_behind and lag count the log after the checkpoint,
 * before the projection's filter (es_cursor_lag: index range scans).
 */
CREATE OR REPLACE VIEW @extschema@.projections AS
	SELECT t.tgname AS projection,
		   CASE WHEN a.projection IS NOT NULL THEN 'async' ELSE 'inline' END AS mode,
		   CASE WHEN s.state OPERATOR(pg_catalog.=) 'rebuilding' THEN 'rebuilding'
				WHEN a.projection IS NOT NULL THEN
					CASE WHEN a.state OPERATOR(pg_catalog.=) 'running' AND a.attempts OPERATOR(pg_catalog.>) 0
						 THEN 'retrying' ELSE a.state END
				WHEN t.tgenabled OPERATOR(pg_catalog.=) 'D' THEN 'disabled'
				ELSE 'live' END AS state,
		   t.tgfoid::pg_catalog.regproc AS function,
		   a.batch_size,
		   a.categories,
		   a.event_types,
		   a.on_error,
		   a.checkpoint,
		   CASE WHEN a.projection IS NULL THEN CASE WHEN t.tgenabled OPERATOR(pg_catalog.<>) 'D' THEN 0::bigint END
				ELSE l.events_behind OPERATOR(pg_catalog.+) l.events_held_back END AS events_behind,
		   CASE WHEN a.projection IS NULL THEN CASE WHEN t.tgenabled OPERATOR(pg_catalog.<>) 'D' THEN '0'::interval END
				ELSE COALESCE(l.lag, '0'::interval) END AS lag,
		   a.applied,
		   a.last_applied_at,
		   a.attempts,
		   a.retry_at,
		   a.last_error,
		   a.last_error_sqlstate,
		   a.last_error_at,
		   a.last_error_position,
		   COALESCE(d.dead_letters, 0) AS dead_letters,
		   a.owner
	  FROM pg_catalog.pg_trigger AS t
	  LEFT JOIN @extschema@.async_projections AS a ON a.projection OPERATOR(pg_catalog.=) t.tgname
	  LEFT JOIN @extschema@.projection_status AS s ON s.projection OPERATOR(pg_catalog.=) t.tgname
	  LEFT JOIN LATERAL (SELECT pg_catalog.count(*) AS dead_letters
						   FROM @extschema@.projection_dead_letters AS x
						  WHERE x.projection OPERATOR(pg_catalog.=) t.tgname) AS d ON true
	  LEFT JOIN LATERAL @extschema@.es_cursor_lag(a.checkpoint) AS l ON a.projection IS NOT NULL
	 WHERE t.tgrelid OPERATOR(pg_catalog.=) '@extschema@.events'::pg_catalog.regclass
	   AND NOT t.tgisinternal
	   AND (t.tgtype::integer OPERATOR(pg_catalog.&) 4) OPERATOR(pg_catalog.<>) 0
	   AND (t.tgtype::integer OPERATOR(pg_catalog.&) 66) OPERATOR(pg_catalog.=) 0
	   AND (t.tgfoid OPERATOR(pg_catalog.=) '@extschema@.es_project()'::pg_catalog.regprocedure
			OR NOT EXISTS (SELECT FROM pg_catalog.pg_depend AS dep
							WHERE dep.classid OPERATOR(pg_catalog.=) 'pg_catalog.pg_proc'::pg_catalog.regclass
							  AND dep.objid OPERATOR(pg_catalog.=) t.tgfoid
							  AND dep.refclassid OPERATOR(pg_catalog.=) 'pg_catalog.pg_extension'::pg_catalog.regclass
							  AND dep.deptype OPERATOR(pg_catalog.=) 'e'));
COMMENT ON VIEW @extschema@.projections IS
	'every projection (AFTER INSERT trigger on es.events), inline or asynchronous: state, checkpoint, events and time behind, last error, dead letters';
COMMENT ON COLUMN @extschema@.projections.state IS 'inline: live, disabled or rebuilding; async: running, retrying, paused, failed or rebuilding';
COMMENT ON COLUMN @extschema@.projections.events_behind IS 'async: events of the log after its checkpoint, before its filter (0 when caught up); inline: 0 (NULL when disabled)';
COMMENT ON COLUMN @extschema@.projections.lag IS 'async: time since the first event after its checkpoint was appended (0 when caught up)';
REVOKE ALL ON TABLE @extschema@.projections FROM PUBLIC;
GRANT SELECT ON @extschema@.projections TO es_reader;
/*
 * security_invoker: the tables' row level security (es_enable_tenancy) runs
 * as the reader, not as this view's owner (who bypasses it): otherwise every
 * tenant's rows would show through the view (test tenancy_views)
 */
ALTER VIEW @extschema@.projections SET (security_invoker = true);
ALTER VIEW @extschema@.outbox_dead_letters SET (security_invoker = true);

/*
 * Rebuilds in a shadow (issue 13): es_rebuild_projection gains read_model
 * and mode (reset becomes optional); the old four-argument procedure is
 * replaced, positional calls keep working through the defaults.
 */
ALTER TABLE @extschema@.projection_status
	ADD COLUMN IF NOT EXISTS read_model name,
	ADD COLUMN IF NOT EXISTS shadow name,
	ADD COLUMN IF NOT EXISTS mode text CHECK (mode IN ('inline', 'async'));
COMMENT ON COLUMN @extschema@.projection_status.read_model IS 'the schema of the read model rebuilt in a shadow (NULL: rebuilt in place)';
COMMENT ON COLUMN @extschema@.projection_status.shadow IS 'the shadow schema a rebuild writes until its switch (NULL: in place, or switched)';
COMMENT ON COLUMN @extschema@.projection_status.mode IS 'the mode of the projection after the rebuild: inline or async';

/*
 * es_read_model_check: can this schema be rebuilt in a shadow copy?  A
 * rebuild in a shadow (es_rebuild_projection(..., read_model => ...)) clones
 * every table of the schema, replays history into the clones and replaces
 * the schema's tables with them, so it refuses up front, changing nothing,
 * what it could not clone, or what would break when the tables are replaced:
 * objects in the schema other than ordinary tables (their indexes, identity
 * sequences, row types and extended statistics come with them), partitioned
 * and inherited tables, typed tables, tables with triggers, row-level
 * security, column privileges or foreign keys, and anything that depends on
 * the tables or their row types (views, functions, tables outside the
 * schema, publications...).  The caller must be a member of the roles
 * owning the schema and its tables.  Returns the tables, by name.
 */
CREATE OR REPLACE FUNCTION @extschema@.es_read_model_check(read_model name)
RETURNS SETOF pg_catalog.regclass
LANGUAGE plpgsql STABLE CALLED ON NULL INPUT PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
	nsp			oid;
	nspowner	oid;
	bad			record;
BEGIN
	IF read_model IS NULL THEN
		RAISE EXCEPTION 'read_model cannot be null' USING ERRCODE = 'null_value_not_allowed';
	END IF;
	SELECT n.oid, n.nspowner INTO nsp, nspowner
	  FROM pg_catalog.pg_namespace AS n WHERE n.nspname OPERATOR(pg_catalog.=) read_model;
	IF NOT FOUND THEN
		RAISE EXCEPTION 'schema "%" does not exist', read_model USING ERRCODE = 'invalid_schema_name';
	END IF;
	IF read_model OPERATOR(pg_catalog.~~) 'pg\_%' OR read_model OPERATOR(pg_catalog.=) 'information_schema'
	   OR read_model OPERATOR(pg_catalog.=) 'public'
	   OR nsp OPERATOR(pg_catalog.=) '@extschema@'::pg_catalog.regnamespace
	   OR EXISTS (SELECT FROM pg_catalog.pg_depend AS d
				   WHERE d.classid OPERATOR(pg_catalog.=) 'pg_catalog.pg_namespace'::pg_catalog.regclass
					 AND d.objid OPERATOR(pg_catalog.=) nsp
					 AND d.deptype OPERATOR(pg_catalog.=) 'e') THEN
		RAISE EXCEPTION 'schema "%" cannot be rebuilt in a shadow', read_model
			USING ERRCODE = 'invalid_parameter_value',
				  DETAIL = 'It is a system schema, the public schema, or belongs to an extension.',
				  HINT = 'Keep the read model of a projection in a schema of its own.';
	END IF;
	IF NOT pg_catalog.pg_has_role(nspowner, 'MEMBER') THEN
		RAISE EXCEPTION 'must be a member of role "%" to rebuild schema "%" in a shadow',
			nspowner::pg_catalog.regrole, read_model
			USING ERRCODE = 'insufficient_privilege',
				  DETAIL = 'A rebuild in a shadow creates, renames and drops schemas and tables owned by the owners of the read model.';
	END IF;

	-- objects in the schema: only ordinary tables (and what belongs to them)
	SELECT pg_catalog.pg_describe_object(d.classid, d.objid, d.objsubid) AS what INTO bad
	  FROM pg_catalog.pg_depend AS d
	 WHERE d.refclassid OPERATOR(pg_catalog.=) 'pg_catalog.pg_namespace'::pg_catalog.regclass
	   AND d.refobjid OPERATOR(pg_catalog.=) nsp
	   AND NOT (d.classid OPERATOR(pg_catalog.=) 'pg_catalog.pg_class'::pg_catalog.regclass
				AND EXISTS (SELECT FROM pg_catalog.pg_class AS c
							 WHERE c.oid OPERATOR(pg_catalog.=) d.objid
							   AND (c.relkind OPERATOR(pg_catalog.=) 'r'
									OR (c.relkind OPERATOR(pg_catalog.=) 'S'
										AND EXISTS (SELECT FROM pg_catalog.pg_depend AS i
													 WHERE i.classid OPERATOR(pg_catalog.=) 'pg_catalog.pg_class'::pg_catalog.regclass
													   AND i.objid OPERATOR(pg_catalog.=) c.oid
													   AND i.deptype OPERATOR(pg_catalog.=) 'i')))))
	   AND NOT (d.classid OPERATOR(pg_catalog.=) 'pg_catalog.pg_type'::pg_catalog.regclass
				AND EXISTS (SELECT FROM pg_catalog.pg_type AS t
							  JOIN pg_catalog.pg_class AS c ON c.oid OPERATOR(pg_catalog.=) t.typrelid
							 WHERE t.oid OPERATOR(pg_catalog.=) d.objid
							   AND c.relkind OPERATOR(pg_catalog.=) 'r'))
	   AND d.classid OPERATOR(pg_catalog.<>) 'pg_catalog.pg_statistic_ext'::pg_catalog.regclass
	 ORDER BY 1 LIMIT 1;
	IF FOUND THEN
		RAISE EXCEPTION 'schema "%" cannot be rebuilt in a shadow: it contains %', read_model, bad.what
			USING ERRCODE = 'feature_not_supported',
				  DETAIL = 'A read model rebuilt in a shadow may contain only ordinary tables, with their indexes, constraints, identity columns and statistics.',
				  HINT = 'Move the other objects to another schema, or rebuild in place (without read_model).';
	END IF;

	-- tables that cannot be cloned as they are
	SELECT c.oid::pg_catalog.regclass AS rel,
		   CASE WHEN c.relispartition OR c.relkind OPERATOR(pg_catalog.=) 'p' THEN 'is partitioned or a partition'
				WHEN EXISTS (SELECT FROM pg_catalog.pg_inherits AS h
							  WHERE h.inhrelid OPERATOR(pg_catalog.=) c.oid OR h.inhparent OPERATOR(pg_catalog.=) c.oid)
				THEN 'has inheritance parents or children'
				WHEN c.reloftype OPERATOR(pg_catalog.<>) 0 THEN 'is a typed table'
				WHEN c.relrowsecurity THEN 'has row-level security'
				WHEN EXISTS (SELECT FROM pg_catalog.pg_constraint AS k
							  WHERE k.contype OPERATOR(pg_catalog.=) 'f'
								AND (k.conrelid OPERATOR(pg_catalog.=) c.oid OR k.confrelid OPERATOR(pg_catalog.=) c.oid))
				THEN 'has foreign keys, or is referenced by one'
				WHEN EXISTS (SELECT FROM pg_catalog.pg_trigger AS g WHERE g.tgrelid OPERATOR(pg_catalog.=) c.oid)
				THEN 'has triggers'
				WHEN EXISTS (SELECT FROM pg_catalog.pg_attribute AS a
							  WHERE a.attrelid OPERATOR(pg_catalog.=) c.oid AND a.attacl IS NOT NULL)
				THEN 'has column privileges'
				WHEN NOT pg_catalog.pg_has_role(c.relowner, 'MEMBER')
				THEN pg_catalog.format('is owned by role %s, of which the current user is not a member', c.relowner::pg_catalog.regrole)
		   END AS why INTO bad
	  FROM pg_catalog.pg_class AS c
	 WHERE c.relnamespace OPERATOR(pg_catalog.=) nsp AND c.relkind IN ('r', 'p')
	   AND (c.relispartition OR c.relkind OPERATOR(pg_catalog.=) 'p' OR c.reloftype OPERATOR(pg_catalog.<>) 0
			OR c.relrowsecurity OR NOT pg_catalog.pg_has_role(c.relowner, 'MEMBER')
			OR EXISTS (SELECT FROM pg_catalog.pg_inherits AS h
						WHERE h.inhrelid OPERATOR(pg_catalog.=) c.oid OR h.inhparent OPERATOR(pg_catalog.=) c.oid)
			OR EXISTS (SELECT FROM pg_catalog.pg_trigger AS g WHERE g.tgrelid OPERATOR(pg_catalog.=) c.oid)
			OR EXISTS (SELECT FROM pg_catalog.pg_constraint AS k
						WHERE k.contype OPERATOR(pg_catalog.=) 'f'
						  AND (k.conrelid OPERATOR(pg_catalog.=) c.oid OR k.confrelid OPERATOR(pg_catalog.=) c.oid))
			OR EXISTS (SELECT FROM pg_catalog.pg_attribute AS a
						WHERE a.attrelid OPERATOR(pg_catalog.=) c.oid AND a.attacl IS NOT NULL))
	 ORDER BY c.relname LIMIT 1;
	IF FOUND THEN
		RAISE EXCEPTION 'table % cannot be rebuilt in a shadow: it %', bad.rel, bad.why
			USING ERRCODE = CASE WHEN bad.why OPERATOR(pg_catalog.~~) 'is owned by%' THEN 'insufficient_privilege'
								 ELSE 'feature_not_supported' END,
				  HINT = 'Rebuild in place (without read_model).';
	END IF;

	-- what depends on the tables or their row types, other than their own parts
	SELECT pg_catalog.pg_describe_object(d.classid, d.objid, d.objsubid) AS what,
		   pg_catalog.pg_describe_object(d.refclassid, d.refobjid, 0) AS ref INTO bad
	  FROM pg_catalog.pg_depend AS d
	  JOIN pg_catalog.pg_class AS t ON t.relnamespace OPERATOR(pg_catalog.=) nsp
								   AND t.relkind OPERATOR(pg_catalog.=) 'r'
	 WHERE ((d.refclassid OPERATOR(pg_catalog.=) 'pg_catalog.pg_class'::pg_catalog.regclass
			 AND d.refobjid OPERATOR(pg_catalog.=) t.oid)
			OR (d.refclassid OPERATOR(pg_catalog.=) 'pg_catalog.pg_type'::pg_catalog.regclass
				AND d.refobjid IN (SELECT y.oid FROM pg_catalog.pg_type AS y
									WHERE y.typrelid OPERATOR(pg_catalog.=) t.oid
									   OR y.typelem IN (SELECT z.oid FROM pg_catalog.pg_type AS z
														 WHERE z.typrelid OPERATOR(pg_catalog.=) t.oid))))
	   AND NOT (d.deptype IN ('a', 'i', 'n')
				AND ((d.classid OPERATOR(pg_catalog.=) 'pg_catalog.pg_class'::pg_catalog.regclass
					  AND EXISTS (SELECT FROM pg_catalog.pg_class AS c
								   WHERE c.oid OPERATOR(pg_catalog.=) d.objid
									 AND (c.relkind IN ('i', 't')
										  OR (c.relkind OPERATOR(pg_catalog.=) 'S' AND d.deptype OPERATOR(pg_catalog.=) 'i'))
									 AND (c.relkind OPERATOR(pg_catalog.<>) 'i'
										  OR EXISTS (SELECT FROM pg_catalog.pg_index AS x
													  WHERE x.indexrelid OPERATOR(pg_catalog.=) c.oid
														AND x.indrelid OPERATOR(pg_catalog.=) t.oid))))
					 OR (d.classid OPERATOR(pg_catalog.=) 'pg_catalog.pg_type'::pg_catalog.regclass
						 AND d.deptype OPERATOR(pg_catalog.=) 'i')
					 OR (d.classid OPERATOR(pg_catalog.=) 'pg_catalog.pg_constraint'::pg_catalog.regclass
						 AND EXISTS (SELECT FROM pg_catalog.pg_constraint AS k
									  WHERE k.oid OPERATOR(pg_catalog.=) d.objid
										AND k.conrelid OPERATOR(pg_catalog.=) t.oid
										AND k.contype IN ('c', 'p', 'u', 'x')))
					 OR (d.classid OPERATOR(pg_catalog.=) 'pg_catalog.pg_attrdef'::pg_catalog.regclass
						 AND EXISTS (SELECT FROM pg_catalog.pg_attrdef AS f
									  WHERE f.oid OPERATOR(pg_catalog.=) d.objid
										AND f.adrelid OPERATOR(pg_catalog.=) t.oid))
					 OR (d.classid OPERATOR(pg_catalog.=) 'pg_catalog.pg_statistic_ext'::pg_catalog.regclass
						 AND EXISTS (SELECT FROM pg_catalog.pg_statistic_ext AS s
									  WHERE s.oid OPERATOR(pg_catalog.=) d.objid
										AND s.stxrelid OPERATOR(pg_catalog.=) t.oid))))
	 ORDER BY 1, 2 LIMIT 1;
	IF FOUND THEN
		RAISE EXCEPTION 'schema "%" cannot be rebuilt in a shadow: % depends on %', read_model, bad.what, bad.ref
			USING ERRCODE = 'dependent_objects_still_exist',
				  DETAIL = 'A rebuild in a shadow replaces the tables of the read model, so nothing else may depend on them.',
				  HINT = 'Drop the dependent object during the rebuild, or rebuild in place (without read_model).';
	END IF;

	-- sequences of serial columns are not identity: found above, as objects of the schema
	IF NOT EXISTS (SELECT FROM pg_catalog.pg_class AS c
					WHERE c.relnamespace OPERATOR(pg_catalog.=) nsp AND c.relkind OPERATOR(pg_catalog.=) 'r') THEN
		RAISE EXCEPTION 'schema "%" has no tables', read_model
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'Pass the schema that holds the tables the projection writes.';
	END IF;
	RETURN QUERY SELECT c.oid::pg_catalog.regclass FROM pg_catalog.pg_class AS c
				  WHERE c.relnamespace OPERATOR(pg_catalog.=) nsp AND c.relkind OPERATOR(pg_catalog.=) 'r'
				  ORDER BY c.relname;
END
$fn$;
COMMENT ON FUNCTION @extschema@.es_read_model_check(name) IS
	'checks that a schema can be rebuilt in a shadow (es_rebuild_projection with read_model): raises an error naming what cannot be, returns its tables';
REVOKE ALL ON FUNCTION @extschema@.es_read_model_check(name) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@.es_read_model_check(name) TO es_admin;

CREATE OR REPLACE FUNCTION @extschema@.es_rebuild_shadow_batch(projection name, max_count integer, final boolean)
RETURNS integer
AS 'MODULE_PATHNAME', 'es_rebuild_shadow_batch'
LANGUAGE C VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE;
COMMENT ON FUNCTION @extschema@.es_rebuild_shadow_batch(name, integer, boolean) IS
	'one step of a rebuild in a shadow (the engine of es_rebuild_projection with read_model): replays a batch into the shadow of the read model, or (final) the rest and switches the shadow in; returns the events replayed';
REVOKE ALL ON FUNCTION @extschema@.es_rebuild_shadow_batch(name, integer, boolean) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@.es_rebuild_shadow_batch(name, integer, boolean) TO es_admin;

DROP PROCEDURE IF EXISTS @extschema@.es_rebuild_projection(name, text, integer, boolean);
/*
 * es_rebuild_projection: replay the whole log through a projection's
 * trigger, in one of two ways.
 *
 * In place (read_model NULL): empty the read model and replay into it.
 *  1. Pause the trigger (ALTER TABLE ... DISABLE TRIGGER) and run the reset
 *     statement, in one short transaction.
 *  2. Replay the log in batches below the horizon, committing after each
 *     batch (progress in es.projection_status, shown by the view
 *     es.projection_progress; one NOTICE at the start, one at the end).  Appenders go on;
 *     their events are replayed too, in log order.
 *  3. Lock out appenders (SHARE ROW EXCLUSIVE on es.events) only to replay the
 *     last events and re-enable the trigger, then commit.
 * Readers see a half-built read model meanwhile.
 *
 * In a shadow (read_model: the schema holding the projection's tables):
 *  1. Check the schema (es_read_model_check) and clone its tables, with
 *     their indexes, owners and grants, into a shadow schema; replay the
 *     first batch into it; commit.  The trigger stays enabled: the live
 *     read model stays current.
 *  2. Replay the log in committed batches into the shadow
 *     (es_rebuild_shadow_batch, src/rebuild.c).
 *  3. Lock out appenders, replay the last events into the shadow, and
 *     switch: the shadow takes the read model's name, the old tables are
 *     dropped, in one transaction.  Readers see the old complete model until
 *     that commit, the new one after.
 *
 * An interrupted rebuild keeps the status 'rebuilding' (in place: the trigger
 * stays paused; in a shadow: the shadow stays); calling the procedure again
 * the same way resumes from the last committed batch (resume => false starts
 * over).  It must be CALLed outside a transaction block; in place by the
 * owner of es.events (ALTER TABLE), in a shadow by a member of the read
 * model's owners with CREATE on the database (renaming schemas).  It has no
 * SET clause (a procedure with one cannot commit), so every name in it is
 * schema-qualified.  mode: 'inline', 'async' or NULL (keep the projection's
 * mode); recorded in es.projection_status.
 */
CREATE OR REPLACE PROCEDURE @extschema@.es_rebuild_projection(projection name,
												   reset text DEFAULT NULL,
												   batch_size integer DEFAULT 1000,
												   resume boolean DEFAULT true,
												   read_model name DEFAULT NULL,
												   mode text DEFAULT NULL)
LANGUAGE plpgsql
AS $proc$
DECLARE
	trig		record;
	prior		record;
	step		record;
	n			integer;
	cur			@extschema@.log_cursor;
	total		bigint := 0;
	resuming	boolean;
	is_async	boolean;
	shadow		name;
	live_tmp	name;
	nsp			record;
	tab			record;
	acl			record;
	idx			record;
	dst_mode	text;
BEGIN
	IF projection IS NULL THEN
		RAISE EXCEPTION 'projection cannot be null' USING ERRCODE = 'null_value_not_allowed';
	END IF;
	IF batch_size IS NULL OR batch_size OPERATOR(pg_catalog.<) 1 THEN
		RAISE EXCEPTION 'batch_size must be greater than zero' USING ERRCODE = 'invalid_parameter_value';
	END IF;
	IF mode IS NOT NULL AND mode OPERATOR(pg_catalog.<>) ALL (ARRAY['inline', 'async']) THEN
		RAISE EXCEPTION 'invalid value for mode: "%"', mode
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'Valid values are "inline", "async" and NULL (keep the projection''s mode).';
	END IF;
	IF read_model IS NOT NULL AND reset IS NOT NULL THEN
		RAISE EXCEPTION 'reset must be null when read_model is given'
			USING ERRCODE = 'invalid_parameter_value',
				  DETAIL = 'A rebuild in a shadow starts from empty copies of the read model''s tables; the live tables are left alone until the switch.';
	END IF;
	-- checked before anything is paused: only a user's AFTER INSERT trigger
	SELECT t.tgtype::pg_catalog.int4 AS tgtype, t.tgfoid, t.tgenabled INTO trig
	  FROM pg_catalog.pg_trigger AS t
	 WHERE t.tgrelid OPERATOR(pg_catalog.=) '@extschema@.events'::pg_catalog.regclass
	   AND t.tgname OPERATOR(pg_catalog.=) projection
	   AND NOT t.tgisinternal;
	IF NOT FOUND THEN
		RAISE EXCEPTION 'trigger "%" for table "es.events" does not exist', projection
			USING ERRCODE = 'undefined_object',
				  HINT = 'Create the projection with CREATE TRIGGER ... AFTER INSERT ON es.events.';
	END IF;
	-- pg_trigger.tgtype: 2 = BEFORE, 4 = INSERT, 64 = INSTEAD OF
	IF (trig.tgtype OPERATOR(pg_catalog.&) 4) OPERATOR(pg_catalog.=) 0
	   OR (trig.tgtype OPERATOR(pg_catalog.&) 66) OPERATOR(pg_catalog.<>) 0 THEN
		RAISE EXCEPTION 'trigger "%" on table "es.events" is not an AFTER INSERT trigger', projection
			USING ERRCODE = 'wrong_object_type',
				  HINT = 'A projection is an AFTER INSERT trigger on es.events.';
	END IF;
	IF trig.tgfoid OPERATOR(pg_catalog.<>) '@extschema@.es_project()'::pg_catalog.regprocedure
	   AND EXISTS (SELECT FROM pg_catalog.pg_depend AS d
				   WHERE d.classid OPERATOR(pg_catalog.=) 'pg_catalog.pg_proc'::pg_catalog.regclass
					 AND d.objid OPERATOR(pg_catalog.=) trig.tgfoid
					 AND d.refclassid OPERATOR(pg_catalog.=) 'pg_catalog.pg_extension'::pg_catalog.regclass
					 AND d.deptype OPERATOR(pg_catalog.=) 'e') THEN
		RAISE EXCEPTION 'trigger "%" on table "es.events" belongs to es_ext, not to a projection', projection
			USING ERRCODE = 'wrong_object_type';
	END IF;

	is_async := EXISTS (SELECT FROM @extschema@.async_projections AS a
						 WHERE a.projection OPERATOR(pg_catalog.=) es_rebuild_projection.projection);
	-- the mode after the rebuild (the rebuild can switch it)
	dst_mode := COALESCE(mode, CASE WHEN is_async THEN 'async' ELSE 'inline' END);
	IF is_async AND dst_mode OPERATOR(pg_catalog.=) 'inline' AND EXISTS
		(SELECT FROM @extschema@.async_projections AS a
		  WHERE a.projection OPERATOR(pg_catalog.=) es_rebuild_projection.projection
			AND (a.categories IS NOT NULL OR a.event_types IS NOT NULL)) THEN
		RAISE EXCEPTION 'projection "%" has a category or event type filter', projection
			USING ERRCODE = 'object_not_in_prerequisite_state',
				  DETAIL = 'An inline projection is applied to every event its trigger''s WHEN condition accepts.',
				  HINT = 'Re-create the trigger with a WHEN condition instead of the filter.';
	END IF;

	SELECT s.state, s.replayed, s.last_cursor, s.read_model, s.shadow INTO prior
	  FROM @extschema@.projection_status AS s
	 WHERE s.projection OPERATOR(pg_catalog.=) es_rebuild_projection.projection;

	IF read_model IS NOT NULL THEN
		-- in a shadow: the live read model stays current meanwhile
		IF pg_catalog.current_setting('track_counts') OPERATOR(pg_catalog.<>) 'on' THEN
			RAISE EXCEPTION 'a rebuild in a shadow needs track_counts'
				USING ERRCODE = 'object_not_in_prerequisite_state',
					  HINT = 'Turn track_counts on, or rebuild in place (without read_model).';
		END IF;
		IF prior.state OPERATOR(pg_catalog.=) 'rebuilding' AND prior.shadow IS NULL THEN
			RAISE EXCEPTION 'projection "%" is being rebuilt in place', projection
				USING ERRCODE = 'object_not_in_prerequisite_state',
					  HINT = 'Finish that rebuild first: CALL es.es_rebuild_projection without read_model.';
		END IF;
		IF trig.tgenabled OPERATOR(pg_catalog.=) 'D' AND NOT is_async THEN
			RAISE EXCEPTION 'projection "%" is disabled', projection
				USING ERRCODE = 'object_not_in_prerequisite_state',
					  DETAIL = 'A rebuild in a shadow keeps an inline projection live: its trigger must be enabled.',
					  HINT = 'Enable the trigger (ALTER TABLE es.events ENABLE TRIGGER), or rebuild in place.';
		END IF;
		resuming := resume AND prior.state OPERATOR(pg_catalog.=) 'rebuilding'
					AND pg_catalog.to_regnamespace(prior.shadow) IS NOT NULL;
		IF resuming AND prior.read_model OPERATOR(pg_catalog.<>) read_model THEN
			RAISE EXCEPTION 'projection "%" is being rebuilt in a shadow of schema "%"', projection, prior.read_model
				USING ERRCODE = 'object_not_in_prerequisite_state',
					  HINT = 'Resume it with the same read_model, or start over with resume => false.';
		END IF;
		IF resuming THEN
			total := prior.replayed;
			UPDATE @extschema@.projection_status AS s
			   SET run_started_at = pg_catalog.clock_timestamp(), run_replayed_from = total
			 WHERE s.projection OPERATOR(pg_catalog.=) es_rebuild_projection.projection;
			COMMIT;
			RAISE NOTICE 'projection "%": resuming an interrupted rebuild in a shadow after % events', projection, total
				USING HINT = 'Progress is shown in the view es.projection_progress.';
		ELSE
			IF prior.state OPERATOR(pg_catalog.=) 'rebuilding' AND prior.shadow IS NOT NULL THEN
				EXECUTE pg_catalog.format('DROP SCHEMA IF EXISTS %I CASCADE', prior.shadow);
			END IF;
			PERFORM @extschema@.es_read_model_check(read_model);
			-- deterministic names that fit in NAMEDATALEN (see src/rebuild.c)
			shadow := 'es_shadow_' OPERATOR(pg_catalog.||)
					  CASE WHEN pg_catalog.octet_length(projection) OPERATOR(pg_catalog.<=) 53 THEN projection::text
						   ELSE pg_catalog.md5(projection::text) END;
			live_tmp := 'es_live_' OPERATOR(pg_catalog.||) pg_catalog.substr(shadow, 11);
			IF pg_catalog.to_regnamespace(shadow) IS NOT NULL OR pg_catalog.to_regnamespace(live_tmp) IS NOT NULL THEN
				RAISE EXCEPTION 'schema "%" already exists',
					CASE WHEN pg_catalog.to_regnamespace(shadow) IS NOT NULL THEN shadow ELSE live_tmp END
					USING ERRCODE = 'duplicate_schema',
						  DETAIL = pg_catalog.format('A rebuild in a shadow of projection "%s" uses the schemas "%s" and "%s".',
													 projection, shadow, live_tmp),
						  HINT = 'Drop or rename that schema.';
			END IF;

			-- the shadow: same owner, grants and comment as the read model
			SELECT n.oid, n.nspowner::pg_catalog.regrole AS owner, n.nspacl,
				   pg_catalog.obj_description(n.oid, 'pg_namespace') AS comment INTO nsp
			  FROM pg_catalog.pg_namespace AS n WHERE n.nspname OPERATOR(pg_catalog.=) read_model;
			EXECUTE pg_catalog.format('CREATE SCHEMA %I AUTHORIZATION %s', shadow, nsp.owner);
			IF nsp.nspacl IS NOT NULL THEN
				EXECUTE pg_catalog.format('REVOKE ALL ON SCHEMA %I FROM %s', shadow, nsp.owner);
				FOR acl IN SELECT x.grantee, x.privilege_type, x.is_grantable
							 FROM pg_catalog.aclexplode(nsp.nspacl) AS x LOOP
					EXECUTE pg_catalog.format('GRANT %s ON SCHEMA %I TO %s%s', acl.privilege_type, shadow,
						CASE WHEN acl.grantee OPERATOR(pg_catalog.=) 0 THEN 'PUBLIC'
							 ELSE acl.grantee::pg_catalog.regrole::text END,
						CASE WHEN acl.is_grantable THEN ' WITH GRANT OPTION' ELSE '' END);
				END LOOP;
			END IF;
			IF nsp.comment IS NOT NULL THEN
				EXECUTE pg_catalog.format('COMMENT ON SCHEMA %I IS %L', shadow, nsp.comment);
			END IF;

			-- each table: LIKE ... INCLUDING ALL, then what LIKE leaves out
			FOR tab IN SELECT c.oid, c.relname, c.relowner::pg_catalog.regrole AS owner, c.relacl,
							  c.relpersistence, c.reloptions, c.relreplident,
							  a.amname, ts.spcname,
							  pg_catalog.obj_description(c.oid, 'pg_class') AS comment
						 FROM pg_catalog.pg_class AS c
						 JOIN pg_catalog.pg_am AS a ON a.oid OPERATOR(pg_catalog.=) c.relam
						 LEFT JOIN pg_catalog.pg_tablespace AS ts ON ts.oid OPERATOR(pg_catalog.=) c.reltablespace
						WHERE c.relnamespace OPERATOR(pg_catalog.=) nsp.oid AND c.relkind OPERATOR(pg_catalog.=) 'r'
						ORDER BY c.relname LOOP
				EXECUTE pg_catalog.format('CREATE %sTABLE %I.%I (LIKE %I.%I INCLUDING ALL) USING %I%s%s',
					CASE WHEN tab.relpersistence OPERATOR(pg_catalog.=) 'u' THEN 'UNLOGGED ' ELSE '' END,
					shadow, tab.relname, read_model, tab.relname, tab.amname,
					CASE WHEN tab.reloptions IS NOT NULL
						 THEN pg_catalog.format(' WITH (%s)', pg_catalog.array_to_string(tab.reloptions, ', ')) ELSE '' END,
					CASE WHEN tab.spcname IS NOT NULL THEN pg_catalog.format(' TABLESPACE %I', tab.spcname) ELSE '' END);
				EXECUTE pg_catalog.format('ALTER TABLE %I.%I OWNER TO %s', shadow, tab.relname, tab.owner);
				IF tab.relacl IS NOT NULL THEN
					EXECUTE pg_catalog.format('REVOKE ALL ON TABLE %I.%I FROM %s', shadow, tab.relname, tab.owner);
					FOR acl IN SELECT x.grantee, x.privilege_type, x.is_grantable
								 FROM pg_catalog.aclexplode(tab.relacl) AS x LOOP
						EXECUTE pg_catalog.format('GRANT %s ON TABLE %I.%I TO %s%s', acl.privilege_type, shadow, tab.relname,
							CASE WHEN acl.grantee OPERATOR(pg_catalog.=) 0 THEN 'PUBLIC'
								 ELSE acl.grantee::pg_catalog.regrole::text END,
							CASE WHEN acl.is_grantable THEN ' WITH GRANT OPTION' ELSE '' END);
					END LOOP;
				END IF;
				IF tab.comment IS NOT NULL THEN
					EXECUTE pg_catalog.format('COMMENT ON TABLE %I.%I IS %L', shadow, tab.relname, tab.comment);
				END IF;
				-- the indexes keep their names (LIKE generates new ones): matched by definition
				FOR idx IN
					WITH l AS (SELECT ic.relname,
									  pg_catalog.regexp_replace(pg_catalog.pg_get_indexdef(i.indexrelid), '^CREATE .*? USING ', '') AS def,
									  pg_catalog.row_number() OVER (PARTITION BY pg_catalog.regexp_replace(pg_catalog.pg_get_indexdef(i.indexrelid), '^CREATE .*? USING ', '')
																	ORDER BY i.indexrelid) AS k
								 FROM pg_catalog.pg_index AS i
								 JOIN pg_catalog.pg_class AS ic ON ic.oid OPERATOR(pg_catalog.=) i.indexrelid
								WHERE i.indrelid OPERATOR(pg_catalog.=) tab.oid),
						 s AS (SELECT ic.relname,
									  pg_catalog.regexp_replace(pg_catalog.pg_get_indexdef(i.indexrelid), '^CREATE .*? USING ', '') AS def,
									  pg_catalog.row_number() OVER (PARTITION BY pg_catalog.regexp_replace(pg_catalog.pg_get_indexdef(i.indexrelid), '^CREATE .*? USING ', '')
																	ORDER BY i.indexrelid) AS k
								 FROM pg_catalog.pg_index AS i
								 JOIN pg_catalog.pg_class AS ic ON ic.oid OPERATOR(pg_catalog.=) i.indexrelid
								WHERE i.indrelid OPERATOR(pg_catalog.=) pg_catalog.format('%I.%I', shadow, tab.relname)::pg_catalog.regclass)
					SELECT s.relname AS shadow_name, l.relname AS live_name
					  FROM l JOIN s ON s.def OPERATOR(pg_catalog.=) l.def AND s.k OPERATOR(pg_catalog.=) l.k
					 WHERE s.relname OPERATOR(pg_catalog.<>) l.relname
				LOOP
					-- through a temporary name: two indexes may swap names
					EXECUTE pg_catalog.format('ALTER INDEX %I.%I RENAME TO %I', shadow, idx.shadow_name,
											  'es_tmp_' OPERATOR(pg_catalog.||) pg_catalog.md5(idx.live_name));
				END LOOP;
				FOR idx IN SELECT ic.relname AS tmp_name, l.relname AS live_name
							 FROM pg_catalog.pg_index AS i
							 JOIN pg_catalog.pg_class AS ic ON ic.oid OPERATOR(pg_catalog.=) i.indexrelid
							 JOIN pg_catalog.pg_index AS li ON li.indrelid OPERATOR(pg_catalog.=) tab.oid
							 JOIN pg_catalog.pg_class AS l ON l.oid OPERATOR(pg_catalog.=) li.indexrelid
							WHERE i.indrelid OPERATOR(pg_catalog.=) pg_catalog.format('%I.%I', shadow, tab.relname)::pg_catalog.regclass
							  AND ic.relname OPERATOR(pg_catalog.=) ('es_tmp_' OPERATOR(pg_catalog.||) pg_catalog.md5(l.relname))::name LOOP
					EXECUTE pg_catalog.format('ALTER INDEX %I.%I RENAME TO %I', shadow, idx.tmp_name, idx.live_name);
				END LOOP;
				IF tab.relreplident OPERATOR(pg_catalog.=) 'f' THEN
					EXECUTE pg_catalog.format('ALTER TABLE %I.%I REPLICA IDENTITY FULL', shadow, tab.relname);
				ELSIF tab.relreplident OPERATOR(pg_catalog.=) 'n' THEN
					EXECUTE pg_catalog.format('ALTER TABLE %I.%I REPLICA IDENTITY NOTHING', shadow, tab.relname);
				ELSIF tab.relreplident OPERATOR(pg_catalog.=) 'i' THEN
					EXECUTE pg_catalog.format('ALTER TABLE %I.%I REPLICA IDENTITY USING INDEX %I', shadow, tab.relname,
						(SELECT c.relname FROM pg_catalog.pg_index AS i
						   JOIN pg_catalog.pg_class AS c ON c.oid OPERATOR(pg_catalog.=) i.indexrelid
						  WHERE i.indrelid OPERATOR(pg_catalog.=) tab.oid AND i.indisreplident));
				END IF;
			END LOOP;

			INSERT INTO @extschema@.projection_status AS s
				(projection, state, started_at, finished_at, replayed, last_cursor, updated_at,
				 run_started_at, run_replayed_from, read_model, shadow, mode)
			VALUES (projection, 'rebuilding', pg_catalog.clock_timestamp(), NULL, 0, NULL,
					pg_catalog.clock_timestamp(), NULL, 0, read_model, shadow, dst_mode)
			ON CONFLICT ON CONSTRAINT projection_status_pkey DO UPDATE
				SET state = 'rebuilding', started_at = excluded.started_at, finished_at = NULL,
					replayed = 0, last_cursor = NULL, updated_at = excluded.updated_at,
					run_started_at = NULL, run_replayed_from = 0,
					read_model = excluded.read_model, shadow = excluded.shadow, mode = excluded.mode;
			-- the first batch commits with the shadow: a shadow that does not match fails here
			n := @extschema@.es_rebuild_shadow_batch(projection, batch_size, false);
			total := n;
			COMMIT;
			RAISE NOTICE 'projection "%": rebuilding in a shadow of schema "%"', projection, read_model
				USING HINT = 'Progress is shown in the view es.projection_progress.';
			IF n OPERATOR(pg_catalog.<) batch_size THEN
				n := @extschema@.es_rebuild_shadow_batch(projection, batch_size, true);
				total := total OPERATOR(pg_catalog.+) n;
				COMMIT;
				RAISE NOTICE 'projection "%" rebuilt: % events replayed', projection, total;
				RETURN;
			END IF;
		END IF;

		-- history, in committed batches, while appends go on and the live model stays current
		LOOP
			n := @extschema@.es_rebuild_shadow_batch(projection, batch_size, false);
			total := total OPERATOR(pg_catalog.+) n;
			COMMIT;
			EXIT WHEN n OPERATOR(pg_catalog.<) batch_size;
		END LOOP;
		-- the tail with appenders held off, and the switch
		n := @extschema@.es_rebuild_shadow_batch(projection, batch_size, true);
		total := total OPERATOR(pg_catalog.+) n;
		COMMIT;
		RAISE NOTICE 'projection "%" rebuilt: % events replayed', projection, total;
		RETURN;
	END IF;

	-- in place
	IF prior.state OPERATOR(pg_catalog.=) 'rebuilding' AND prior.shadow IS NOT NULL AND resume THEN
		RAISE EXCEPTION 'projection "%" is being rebuilt in a shadow of schema "%"', projection, prior.read_model
			USING ERRCODE = 'object_not_in_prerequisite_state',
				  HINT = 'Resume it with read_model, or start over in place with resume => false.';
	END IF;
	IF is_async OR dst_mode OPERATOR(pg_catalog.=) 'async' THEN
		/*
		 * In place through the asynchronous machinery: the reset and the
		 * checkpoint back to the start of the log in one transaction, then
		 * batches of es_projection_apply (the worker may apply some too),
		 * then, to become inline, es_projection_make_inline holds appenders
		 * off for the last events.  An error stops the rebuild; the
		 * projection stays asynchronous and goes on from its checkpoint.
		 */
		IF prior.state OPERATOR(pg_catalog.=) 'rebuilding' AND prior.shadow IS NOT NULL THEN
			EXECUTE pg_catalog.format('DROP SCHEMA IF EXISTS %I CASCADE', prior.shadow);
		END IF;
		IF is_async THEN
			PERFORM @extschema@.es_projection_reset(projection, reset);
		ELSE
			IF reset IS NOT NULL THEN
				EXECUTE reset;
			END IF;
			PERFORM @extschema@.es_create_async_projection(projection, from_start => true);
		END IF;
		INSERT INTO @extschema@.projection_status AS s
			(projection, state, started_at, finished_at, replayed, last_cursor, updated_at,
			 run_started_at, run_replayed_from, read_model, shadow, mode)
		VALUES (projection, 'rebuilding', pg_catalog.clock_timestamp(), NULL, 0, NULL,
				pg_catalog.clock_timestamp(), NULL, 0, NULL, NULL, dst_mode)
		ON CONFLICT ON CONSTRAINT projection_status_pkey DO UPDATE
			SET state = 'rebuilding', started_at = excluded.started_at, finished_at = NULL,
				replayed = 0, last_cursor = NULL, updated_at = excluded.updated_at,
				run_started_at = NULL, run_replayed_from = 0,
				read_model = NULL, shadow = NULL, mode = excluded.mode;
		COMMIT;
		RAISE NOTICE 'projection "%": rebuilding in place, asynchronously', projection
			USING HINT = 'Progress is shown in the view es.projection_progress.';
		LOOP
			n := @extschema@.es_projection_apply(projection);
			total := total OPERATOR(pg_catalog.+) n;
			UPDATE @extschema@.projection_status AS s
			   SET replayed = total, updated_at = pg_catalog.clock_timestamp(),
				   last_cursor = (SELECT a.checkpoint FROM @extschema@.async_projections AS a
								   WHERE a.projection OPERATOR(pg_catalog.=) es_rebuild_projection.projection)
			 WHERE s.projection OPERATOR(pg_catalog.=) es_rebuild_projection.projection;
			COMMIT;
			-- 0: caught up, or paused, failed, waiting for a retry, or applied by the worker
			EXIT WHEN n OPERATOR(pg_catalog.=) 0;
		END LOOP;
		IF dst_mode OPERATOR(pg_catalog.=) 'inline' THEN
			total := total OPERATOR(pg_catalog.+) @extschema@.es_projection_make_inline(projection);
		END IF;
		UPDATE @extschema@.projection_status AS s
		   SET state = 'live', replayed = total, finished_at = pg_catalog.clock_timestamp(),
			   updated_at = pg_catalog.clock_timestamp()
		 WHERE s.projection OPERATOR(pg_catalog.=) es_rebuild_projection.projection;
		COMMIT;
		RAISE NOTICE 'projection "%" rebuilt: % events replayed', projection, total;
		RETURN;
	END IF;
	IF prior.state OPERATOR(pg_catalog.=) 'rebuilding' AND prior.shadow IS NOT NULL THEN
		IF resume THEN
			RAISE EXCEPTION 'projection "%" is being rebuilt in a shadow of schema "%"', projection, prior.read_model
				USING ERRCODE = 'object_not_in_prerequisite_state',
					  HINT = 'Resume it with read_model, or start over in place with resume => false.';
		END IF;
		EXECUTE pg_catalog.format('DROP SCHEMA IF EXISTS %I CASCADE', prior.shadow);
	END IF;
	IF resume AND prior.state OPERATOR(pg_catalog.=) 'rebuilding' THEN
		cur := prior.last_cursor;
		total := prior.replayed;
		-- the rate of this run counts from now: the pause is not replay time
		UPDATE @extschema@.projection_status AS s
		   SET run_started_at = pg_catalog.clock_timestamp(), run_replayed_from = total
		 WHERE s.projection OPERATOR(pg_catalog.=) es_rebuild_projection.projection;
	ELSE
		EXECUTE pg_catalog.format('ALTER TABLE @extschema@.events DISABLE TRIGGER %I', projection);
		IF reset IS NOT NULL THEN
			EXECUTE reset;
		END IF;
		INSERT INTO @extschema@.projection_status AS s
			(projection, state, started_at, finished_at, replayed, last_cursor, updated_at,
			 run_started_at, run_replayed_from, read_model, shadow, mode)
		VALUES (projection, 'rebuilding', pg_catalog.clock_timestamp(), NULL, 0, NULL,
				pg_catalog.clock_timestamp(), NULL, 0, NULL, NULL,
				CASE WHEN is_async THEN 'async' ELSE 'inline' END)
		ON CONFLICT ON CONSTRAINT projection_status_pkey DO UPDATE
			SET state = 'rebuilding', started_at = excluded.started_at, finished_at = NULL,
				replayed = 0, last_cursor = NULL, updated_at = excluded.updated_at,
				run_started_at = NULL, run_replayed_from = 0,
				read_model = NULL, shadow = NULL, mode = excluded.mode;
	END IF;
	COMMIT;
	IF resume AND prior.state OPERATOR(pg_catalog.=) 'rebuilding' THEN
		RAISE NOTICE 'projection "%": resuming an interrupted rebuild after % events', projection, total
			USING HINT = 'Progress is shown in the view es.projection_progress.';
	ELSE
		RAISE NOTICE 'projection "%": rebuilding', projection
			USING HINT = 'Progress is shown in the view es.projection_progress.';
	END IF;

	-- history, in committed batches, while appends go on
	LOOP
		SELECT r.replayed, r.last_cursor INTO step
		  FROM @extschema@.es_projection_replay(projection, cur, batch_size, false) AS r;
		n := step.replayed;
		cur := step.last_cursor;
		total := total OPERATOR(pg_catalog.+) n;
		UPDATE @extschema@.projection_status AS s
		   SET replayed = total, last_cursor = cur, updated_at = pg_catalog.clock_timestamp()
		 WHERE s.projection OPERATOR(pg_catalog.=) es_rebuild_projection.projection;
		COMMIT;
		EXIT WHEN n OPERATOR(pg_catalog.<) batch_size;
	END LOOP;

	-- the tail, with appenders held off, then back to inline projection
	LOCK TABLE @extschema@.events IN SHARE ROW EXCLUSIVE MODE;
	LOOP
		SELECT r.replayed, r.last_cursor INTO step
		  FROM @extschema@.es_projection_replay(projection, cur, batch_size, true) AS r;
		n := step.replayed;
		cur := step.last_cursor;
		total := total OPERATOR(pg_catalog.+) n;
		EXIT WHEN n OPERATOR(pg_catalog.<) batch_size;
	END LOOP;
	EXECUTE pg_catalog.format('ALTER TABLE @extschema@.events ENABLE TRIGGER %I', projection);
	UPDATE @extschema@.projection_status AS s
	   SET state = 'live', replayed = total, last_cursor = cur,
		   finished_at = pg_catalog.clock_timestamp(), updated_at = pg_catalog.clock_timestamp()
	 WHERE s.projection OPERATOR(pg_catalog.=) es_rebuild_projection.projection;
	COMMIT;
	RAISE NOTICE 'projection "%" rebuilt: % events replayed', projection, total;
END
$proc$;
COMMENT ON PROCEDURE @extschema@.es_rebuild_projection(name, text, integer, boolean, name, text) IS
	'replays the whole log through a projection''s trigger, in committed, resumable batches: in place (reset empties the read model), or into a shadow copy of the read model''s schema switched in atomically (read_model)';
REVOKE ALL ON PROCEDURE @extschema@.es_rebuild_projection(name, text, integer, boolean, name, text) FROM PUBLIC;
GRANT EXECUTE ON PROCEDURE @extschema@.es_rebuild_projection(name, text, integer, boolean, name, text) TO es_admin;

/*
 * Read-your-writes (issue 13, sql/install/47_wait.sql): es_append's result
 * carries a consistency token, and es_wait_for, es_wait_for_checkpoint and
 * es_wait_for_group wait for it.  A fresh install declares the token with
 * the type; here it is added once (the type is only a function result: no
 * table column uses it).
 */
DO $token$
BEGIN
	IF NOT EXISTS (SELECT FROM pg_catalog.pg_attribute AS a
					WHERE a.attrelid OPERATOR(pg_catalog.=) (SELECT t.typrelid FROM pg_catalog.pg_type AS t
															 WHERE t.oid OPERATOR(pg_catalog.=) '@extschema@.append_result'::pg_catalog.regtype)
					  AND a.attname OPERATOR(pg_catalog.=) 'token'
					  AND NOT a.attisdropped) THEN
		ALTER TYPE @extschema@.append_result ADD ATTRIBUTE token @extschema@.log_cursor;
	END IF;
END
$token$;
COMMENT ON TYPE @extschema@.append_result IS
	'result of es_append: the stream version after the append, the global positions of the batch, in batch order, and the consistency token for es_wait_for';
COMMENT ON COLUMN @extschema@.append_result.token IS
	'the log cursor of the batch''s last event (of the stored events for an idempotent replay): a checkpoint at or past it has applied the append';
GRANT SELECT (group_id, position) ON @extschema@.outbox_deliveries TO es_reader;
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

/*
 * Appends write fewer indexes (issue 14): the event id is indexed alone, not
 * unique (es_append checks given ids against the stream under its row lock),
 * and the correlation and causation indexes of an upgraded database stay: a
 * fresh install leaves them to the deployment (README, "Correlation and
 * causation"); dumps carry them as user objects (es_user_objects).
 */
CREATE INDEX IF NOT EXISTS events_event_id_idx ON @extschema@.events (event_id);
ALTER TABLE @extschema@.events DROP CONSTRAINT IF EXISTS events_stream_event_id_key;
COMMENT ON COLUMN @extschema@.events.event_id IS 'event id given by the caller (idempotency key, unique within the stream) or generated (UUID version 7)';
-- the executor parses a CHECK constraint again for every statement; es_append,
-- the only writer, sets these columns itself
ALTER TABLE @extschema@.events DROP CONSTRAINT IF EXISTS events_version_check;
ALTER TABLE @extschema@.events DROP CONSTRAINT IF EXISTS events_schema_version_check;
ALTER TABLE @extschema@.streams DROP CONSTRAINT IF EXISTS streams_version_check;

/*
 * es_append's C function gets a new name (issue 14): the event id index is
 * no longer unique, and only this library checks given ids under the stream
 * row lock.  A session still running the previous library (loaded before the
 * package upgrade) looks the new name up in it when it next calls es_append,
 * and fails, instead of appending given ids a second time.
 */
CREATE OR REPLACE FUNCTION @extschema@.es_append(stream text, expected_version bigint, events jsonb)
RETURNS @extschema@.append_result
AS 'MODULE_PATHNAME', 'es_append_v2'
LANGUAGE C VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE;

/*
 * Bulk import (issue 14): the shape of an import source, the result type and
 * es_import (sql/install/22_import.sql).
 */
DO $import$
BEGIN
	IF NOT EXISTS (SELECT FROM pg_catalog.pg_type AS t
					WHERE t.typname OPERATOR(pg_catalog.=) 'import_event'
					  AND t.typnamespace OPERATOR(pg_catalog.=) '@extschema@'::pg_catalog.regnamespace) THEN
		CREATE TYPE @extschema@.import_event AS (
			stream_id		text,
			version			bigint,
			event_id		uuid,
			event_type		text,
			schema_version	integer,
			data			jsonb,
			metadata		jsonb,
			recorded_at		timestamptz,
			tags			text[]
		);
	END IF;
	IF NOT EXISTS (SELECT FROM pg_catalog.pg_type AS t
					WHERE t.typname OPERATOR(pg_catalog.=) 'import_result'
					  AND t.typnamespace OPERATOR(pg_catalog.=) '@extschema@'::pg_catalog.regnamespace) THEN
		CREATE TYPE @extschema@.import_result AS (
			streams			bigint,
			new_streams		bigint,
			events			bigint,
			first_position	bigint,
			last_position	bigint,
			token			@extschema@.log_cursor
		);
	END IF;
END
$import$;
COMMENT ON TYPE @extschema@.import_event IS
	'the columns of an es_import source: CREATE TEMP TABLE staging (LIKE es.import_event); version, event_id, schema_version, recorded_at and tags may be NULL (next version, generated id, 1, now, no tags); a source may leave out the tags column';
COMMENT ON TYPE @extschema@.import_result IS
	'result of es_import: streams imported into (of which new), events imported, the global positions of the first and last one, and the log cursor of the last one (for es_wait_for)';
REVOKE ALL ON TYPE @extschema@.import_event, @extschema@.import_result FROM PUBLIC;
GRANT USAGE ON TYPE @extschema@.import_event, @extschema@.import_result TO es_admin;

CREATE OR REPLACE FUNCTION @extschema@.es_import(source regclass, outbox boolean DEFAULT true)
RETURNS @extschema@.import_result
AS 'MODULE_PATHNAME', 'es_import'
LANGUAGE C VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE;
COMMENT ON FUNCTION @extschema@.es_import(regclass, boolean) IS
	'imports every row of a table shaped like es.import_event into the log, in one transaction and in the table''s row order; outbox: route the events to the outbox when routes exist';
REVOKE ALL ON FUNCTION @extschema@.es_import(regclass, boolean) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@.es_import(regclass, boolean) TO es_admin;

/*
 * Consistency across streams (issue 17): tags on events, the GIN index of
 * the tagged events, es_read_query and the conditional es_append.
 */
ALTER TABLE @extschema@.events ADD COLUMN IF NOT EXISTS tags text[];
COMMENT ON COLUMN @extschema@.events.tags IS 'tags of the event (es_read_query, conditional appends), in the order given; NULL when it has none';
CREATE INDEX IF NOT EXISTS events_tags_idx ON @extschema@.events USING gin (tags) WITH (fastupdate = off)
	WHERE tags IS NOT NULL;
CREATE OR REPLACE FUNCTION @extschema@.es_append(stream text, expected_version bigint, events jsonb,
												 fail_if_events_match jsonb,
												 after @extschema@.log_cursor DEFAULT NULL)
RETURNS @extschema@.append_result
AS 'MODULE_PATHNAME', 'es_append_v2'
LANGUAGE C VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE;
COMMENT ON FUNCTION @extschema@.es_append(text, bigint, jsonb, jsonb, @extschema@.log_cursor) IS
	'conditional append: es_append, failing with SQLSTATE 40001 (constraint es_append_condition) when another transaction committed an event matching the query fail_if_events_match after the cursor (NULL: at all)';
REVOKE ALL ON FUNCTION @extschema@.es_append(text, bigint, jsonb, jsonb, @extschema@.log_cursor) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@.es_append(text, bigint, jsonb, jsonb, @extschema@.log_cursor) TO es_writer;

CREATE OR REPLACE FUNCTION @extschema@.es_read_query(query jsonb,
													 after @extschema@.log_cursor DEFAULT NULL,
													 max_count integer DEFAULT NULL)
RETURNS TABLE (global_position bigint,
			   stream_id text,
			   version bigint,
			   event_id uuid,
			   event_type text,
			   tags text[],
			   data jsonb,
			   metadata jsonb,
			   recorded_at timestamptz,
			   log_cursor @extschema@.log_cursor,
			   horizon xid8)
AS 'MODULE_PATHNAME', 'es_read_query'
LANGUAGE C STABLE CALLED ON NULL INPUT PARALLEL RESTRICTED;
COMMENT ON FUNCTION @extschema@.es_read_query(jsonb, @extschema@.log_cursor, integer) IS
	'the events matching a query of event types and tags, after a cursor, in log order, gap-safe like es_read_all; the last row''s log_cursor is the position of a conditional append';
REVOKE ALL ON FUNCTION @extschema@.es_read_query(jsonb, @extschema@.log_cursor, integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@.es_read_query(jsonb, @extschema@.log_cursor, integer) TO es_reader;

/*
 * The greatest of log cursors, for the position of a conditional append:
 * SELECT es.max(log_cursor) FROM es.es_read_query(...).  Cursors compare as
 * rows (era, tx_id, global_position).
 */
CREATE OR REPLACE FUNCTION @extschema@.log_cursor_larger(a @extschema@.log_cursor, b @extschema@.log_cursor)
RETURNS @extschema@.log_cursor
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$SELECT CASE WHEN a OPERATOR(pg_catalog.>=) b THEN a ELSE b END$$;
COMMENT ON FUNCTION @extschema@.log_cursor_larger(@extschema@.log_cursor, @extschema@.log_cursor) IS
	'the greater of two log cursors (the state function of es.max(es.log_cursor))';
CREATE OR REPLACE AGGREGATE @extschema@.max(@extschema@.log_cursor) (
	SFUNC = @extschema@.log_cursor_larger,
	STYPE = @extschema@.log_cursor,
	COMBINEFUNC = @extschema@.log_cursor_larger,
	PARALLEL = SAFE
);
COMMENT ON AGGREGATE @extschema@.max(@extschema@.log_cursor) IS
	'the greatest log cursor: the position a conditional append refers to after an es_read_query';
REVOKE ALL ON FUNCTION @extschema@.log_cursor_larger(@extschema@.log_cursor, @extschema@.log_cursor) FROM PUBLIC;
REVOKE ALL ON FUNCTION @extschema@.max(@extschema@.log_cursor) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@.log_cursor_larger(@extschema@.log_cursor, @extschema@.log_cursor) TO es_reader;
GRANT EXECUTE ON FUNCTION @extschema@.max(@extschema@.log_cursor) TO es_reader;

/*
 * Tenant isolation (issue 15): sql/install/85_tenancy.sql, re-runnable
 */
CREATE TABLE IF NOT EXISTS @extschema@.tenant_roles (
	tenant		text NOT NULL CHECK (pg_catalog.octet_length(tenant) OPERATOR(pg_catalog.>=) 1
									 AND pg_catalog.octet_length(tenant) OPERATOR(pg_catalog.<=) 63
									 AND pg_catalog.strpos(tenant, '/') OPERATOR(pg_catalog.=) 0),
	role		regrole NOT NULL,
	CONSTRAINT tenant_roles_pkey PRIMARY KEY (tenant, role)
);
COMMENT ON TABLE @extschema@.tenant_roles IS
	'es_ext tenancy: the roles that act for a tenant (the owner of the streams "<tenant>/..."); tenant "*" stands for every tenant';
SELECT pg_catalog.pg_extension_config_dump('@extschema@.tenant_roles', '');
REVOKE ALL ON TABLE @extschema@.tenant_roles FROM PUBLIC;
GRANT SELECT ON @extschema@.tenant_roles TO es_reader;
GRANT INSERT, DELETE ON @extschema@.tenant_roles TO es_admin;

/*
 * In C (src/tenant.c): the answer is kept for the rest of the top-level
 * statement, so the policies of the several statements of an append ask
 * es.tenant_roles once.  PARALLEL RESTRICTED: it runs SPI, in the leader.
 */
CREATE OR REPLACE FUNCTION @extschema@.es_current_tenants()
RETURNS text[]
AS 'MODULE_PATHNAME', 'es_current_tenants'
LANGUAGE C STABLE PARALLEL RESTRICTED;
COMMENT ON FUNCTION @extschema@.es_current_tenants() IS
	'the tenants the current role acts for (es.tenant_roles rows of roles it is a member of; "*": every tenant)';
REVOKE ALL ON FUNCTION @extschema@.es_current_tenants() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@.es_current_tenants() TO es_reader;

CREATE OR REPLACE FUNCTION @extschema@.es_enable_tenancy(force boolean DEFAULT false)
RETURNS SETOF regclass
LANGUAGE plpgsql VOLATILE STRICT PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
	t record;
	p name;
	tenant_expr text;
BEGIN
	IF pg_catalog.current_setting('transaction_read_only') OPERATOR(pg_catalog.=) 'on' THEN
		RAISE EXCEPTION 'cannot execute es_enable_tenancy() in a read-only transaction'
			USING ERRCODE = 'read_only_sql_transaction';
	END IF;
	IF NOT pg_catalog.pg_has_role((SELECT c.relowner FROM pg_catalog.pg_class AS c
									WHERE c.oid OPERATOR(pg_catalog.=) '@extschema@.events'::pg_catalog.regclass),
								  'USAGE') THEN
		RAISE EXCEPTION 'must be owner of table events'
			USING ERRCODE = 'insufficient_privilege',
				  HINT = 'Tenancy is enabled by the owner of es_ext''s tables, the role that created the extension.';
	END IF;
	/* the statement naming pg_dist_partition is planned only with Citus */
	IF EXISTS (SELECT FROM pg_catalog.pg_extension AS x WHERE x.extname OPERATOR(pg_catalog.=) 'citus') THEN
		IF EXISTS (SELECT FROM pg_catalog.pg_dist_partition AS p
					WHERE p.logicalrelid OPERATOR(pg_catalog.=) '@extschema@.events'::pg_catalog.regclass) THEN
			RAISE EXCEPTION 'es_enable_tenancy() is not supported on a distributed event store'
				USING ERRCODE = 'feature_not_supported',
					  HINT = 'See README, "Scaling out with Citus".';
		END IF;
	END IF;

	/* %1$s: the column that holds the stream id; one init plan per table */
	tenant_expr := '(ARRAY[pg_catalog.split_part(%1$s, ''/'', 1), ''*''] OPERATOR(pg_catalog.&&)'
				|| ' (SELECT @extschema@.es_current_tenants()))';

	FOR t IN
		SELECT c.oid::pg_catalog.regclass AS rel, c.relname,
			   CASE WHEN c.relname OPERATOR(pg_catalog.=) ANY (ARRAY['outbox_deliveries', 'outbox_dead']::name[])
					THEN pg_catalog.format('EXISTS (SELECT FROM @extschema@.outbox AS o'
										   ' WHERE o.position OPERATOR(pg_catalog.=) %s.position AND %s)',
										   pg_catalog.quote_ident(c.relname),
										   pg_catalog.format(tenant_expr, 'o.aggregateid'))
					/* a category's policy is its tenant's too ("acme/order") */
					WHEN c.relname OPERATOR(pg_catalog.=) 'retention_policies'
					THEN pg_catalog.format(tenant_expr, 'COALESCE(stream_id, category)')
					ELSE pg_catalog.format(tenant_expr, pg_catalog.quote_ident(a.attname))
			   END AS expr
		  FROM pg_catalog.pg_class AS c
		  LEFT JOIN pg_catalog.pg_attribute AS a
			ON a.attrelid OPERATOR(pg_catalog.=) c.oid
		   AND (a.attname OPERATOR(pg_catalog.=) ANY (ARRAY['stream_id', 'aggregateid']::name[])
				/* a data subject is its tenant's too ("acme/c-42"): src/tenant.c */
				OR (c.relname OPERATOR(pg_catalog.=) 'subject_keys' AND a.attname OPERATOR(pg_catalog.=) 'subject'))
		   AND NOT a.attisdropped
		 WHERE c.relnamespace OPERATOR(pg_catalog.=) '@extschema@'::pg_catalog.regnamespace
		   AND c.relkind OPERATOR(pg_catalog.=) ANY (ARRAY['r', 'p']::"char"[])
		   AND (a.attname IS NOT NULL
				OR c.relname OPERATOR(pg_catalog.=) ANY (ARRAY['outbox_deliveries', 'outbox_dead']::name[]))
		 ORDER BY c.relname
	LOOP
		FOR p IN
			SELECT y.polname FROM pg_catalog.pg_policy AS y
			 WHERE y.polrelid OPERATOR(pg_catalog.=) t.rel::oid
			   AND y.polname OPERATOR(pg_catalog.=) ANY (ARRAY['es_tenant', 'es_tenant_base', 'es_tenant_admin']::name[])
		LOOP
			EXECUTE pg_catalog.format('DROP POLICY %I ON %s', p, t.rel);
		END LOOP;
		EXECUTE pg_catalog.format('CREATE POLICY es_tenant ON %s AS RESTRICTIVE FOR ALL TO PUBLIC'
								  ' USING (%s) WITH CHECK (%s)', t.rel, t.expr, t.expr);
		EXECUTE pg_catalog.format('CREATE POLICY es_tenant_base ON %s AS PERMISSIVE FOR ALL TO PUBLIC'
								  ' USING (true) WITH CHECK (true)', t.rel);
		EXECUTE pg_catalog.format('ALTER TABLE %s ENABLE ROW LEVEL SECURITY', t.rel);
		EXECUTE pg_catalog.format('ALTER TABLE %s %s FORCE ROW LEVEL SECURITY', t.rel,
								  CASE WHEN force THEN '' ELSE 'NO' END);
		RETURN NEXT t.rel;
	END LOOP;

	/* the mapping: a role sees its own rows; es_admin manages all of them */
	FOR p IN
		SELECT y.polname FROM pg_catalog.pg_policy AS y
		 WHERE y.polrelid OPERATOR(pg_catalog.=) '@extschema@.tenant_roles'::pg_catalog.regclass::oid
		   AND y.polname OPERATOR(pg_catalog.=) ANY (ARRAY['es_tenant', 'es_tenant_base', 'es_tenant_admin']::name[])
	LOOP
		EXECUTE pg_catalog.format('DROP POLICY %I ON %s', p, '@extschema@.tenant_roles'::pg_catalog.regclass);
	END LOOP;
	CREATE POLICY es_tenant ON @extschema@.tenant_roles AS PERMISSIVE FOR SELECT TO PUBLIC
		USING (pg_catalog.pg_has_role(role::oid, 'MEMBER'));
	CREATE POLICY es_tenant_admin ON @extschema@.tenant_roles AS PERMISSIVE FOR ALL TO es_admin
		USING (true) WITH CHECK (true);
	ALTER TABLE @extschema@.tenant_roles ENABLE ROW LEVEL SECURITY;
	RETURN NEXT '@extschema@.tenant_roles'::pg_catalog.regclass;
	RETURN;
END
$fn$;
COMMENT ON FUNCTION @extschema@.es_enable_tenancy(boolean) IS
	'tenant isolation: row level security and the policies es_tenant/es_tenant_base on every es_ext table holding stream data (the tenant of a stream is its id up to the first "/"; es.tenant_roles maps tenants to roles); force: FORCE ROW LEVEL SECURITY (the owner too); returns the tables; run by the tables'' owner, again after an upgrade';
REVOKE ALL ON FUNCTION @extschema@.es_enable_tenancy(boolean) FROM PUBLIC;

CREATE OR REPLACE FUNCTION @extschema@.es_disable_tenancy()
RETURNS SETOF regclass
LANGUAGE plpgsql VOLATILE STRICT PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
	t record;
	p name;
BEGIN
	IF pg_catalog.current_setting('transaction_read_only') OPERATOR(pg_catalog.=) 'on' THEN
		RAISE EXCEPTION 'cannot execute es_disable_tenancy() in a read-only transaction'
			USING ERRCODE = 'read_only_sql_transaction';
	END IF;
	IF NOT pg_catalog.pg_has_role((SELECT c.relowner FROM pg_catalog.pg_class AS c
									WHERE c.oid OPERATOR(pg_catalog.=) '@extschema@.events'::pg_catalog.regclass),
								  'USAGE') THEN
		RAISE EXCEPTION 'must be owner of table events'
			USING ERRCODE = 'insufficient_privilege',
				  HINT = 'Tenancy is disabled by the owner of es_ext''s tables, the role that created the extension.';
	END IF;
	FOR t IN
		SELECT DISTINCT c.oid::pg_catalog.regclass AS rel, c.relname
		  FROM pg_catalog.pg_policy AS p
		  JOIN pg_catalog.pg_class AS c ON c.oid OPERATOR(pg_catalog.=) p.polrelid
		 WHERE c.relnamespace OPERATOR(pg_catalog.=) '@extschema@'::pg_catalog.regnamespace
		   AND p.polname OPERATOR(pg_catalog.=) ANY (ARRAY['es_tenant', 'es_tenant_base', 'es_tenant_admin']::name[])
		 ORDER BY c.relname
	LOOP
		FOR p IN
			SELECT y.polname FROM pg_catalog.pg_policy AS y
			 WHERE y.polrelid OPERATOR(pg_catalog.=) t.rel::oid
			   AND y.polname OPERATOR(pg_catalog.=) ANY (ARRAY['es_tenant', 'es_tenant_base', 'es_tenant_admin']::name[])
		LOOP
			EXECUTE pg_catalog.format('DROP POLICY %I ON %s', p, t.rel);
		END LOOP;
		/* row level security stays on where other policies remain */
		IF NOT EXISTS (SELECT FROM pg_catalog.pg_policy AS p
						WHERE p.polrelid OPERATOR(pg_catalog.=) t.rel::oid) THEN
			EXECUTE pg_catalog.format('ALTER TABLE %s NO FORCE ROW LEVEL SECURITY', t.rel);
			EXECUTE pg_catalog.format('ALTER TABLE %s DISABLE ROW LEVEL SECURITY', t.rel);
		END IF;
		RETURN NEXT t.rel;
	END LOOP;
	RETURN;
END
$fn$;
COMMENT ON FUNCTION @extschema@.es_disable_tenancy() IS
	'removes the tenancy policies of es_enable_tenancy (row level security stays enabled on a table with other policies); returns the tables; run by the tables'' owner';
REVOKE ALL ON FUNCTION @extschema@.es_disable_tenancy() FROM PUBLIC;

/*
 * Data lifecycle, privacy and integrity (issue 15): the state of a stream
 * (retention and erasure raise its first version; archived; erased) and the
 * hash chain of its events.
 */
ALTER TABLE @extschema@.streams ADD COLUMN IF NOT EXISTS first_version bigint NOT NULL DEFAULT 1;
ALTER TABLE @extschema@.streams ADD COLUMN IF NOT EXISTS base_hash bytea;
ALTER TABLE @extschema@.streams ADD COLUMN IF NOT EXISTS archived_at timestamptz;
ALTER TABLE @extschema@.streams ADD COLUMN IF NOT EXISTS erased_at timestamptz;
ALTER TABLE @extschema@.streams ADD COLUMN IF NOT EXISTS outbox_node integer;
COMMENT ON COLUMN @extschema@.streams.first_version IS 'lowest version of the stream still stored (raised by retention and erasure)';
COMMENT ON COLUMN @extschema@.streams.base_hash IS 'chain hash of version first_version - 1 (NULL: the chain starts from 32 zero bytes)';
COMMENT ON COLUMN @extschema@.streams.archived_at IS 'when the stream was archived (read-only, out of the default log reads); NULL when it is not';
COMMENT ON COLUMN @extschema@.streams.erased_at IS 'when the stream was erased (only its tombstone is left; it cannot be recreated); NULL when it was not';
COMMENT ON COLUMN @extschema@.streams.outbox_node IS 'on a distributed event store: the Citus group of the node whose outbox holds the stream''s latest messages (see es.distribute()); NULL otherwise';
ALTER TABLE @extschema@.events ADD COLUMN IF NOT EXISTS hash bytea;
COMMENT ON COLUMN @extschema@.events.hash IS 'SHA-256 chaining the event to its predecessor in the stream (see es_verify)';


/*
 * ========================================================================
 * crypto-shredding: a key per data subject (as sql/install/65_crypto.sql)
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

/*
 * Tamper evidence (issue 15): the events stored before the upgrade get
 * their chain hashes, computed as es_append computes them (src/rechain.c).
 * The function that computes them is dropped right after: recomputing the
 * chains is what tamper evidence must catch, and it refuses to run outside
 * this script anyway.
 */
CREATE OR REPLACE FUNCTION @extschema@.es_rechain_internal()
RETURNS bigint
AS 'MODULE_PATHNAME', 'es_rechain_internal'
LANGUAGE C VOLATILE STRICT PARALLEL UNSAFE;
SELECT @extschema@.es_rechain_internal();
DROP FUNCTION @extschema@.es_rechain_internal();

/*
 * Checking the chains and the stream heads (sql/install/26_verify.sql).
 */
CREATE OR REPLACE FUNCTION @extschema@.es_verify(stream text)
RETURNS TABLE (stream_id text, version bigint, problem text,
			   expected_hash bytea, stored_hash bytea, detail text)
AS 'MODULE_PATHNAME', 'es_verify'
LANGUAGE C STABLE CALLED ON NULL INPUT PARALLEL RESTRICTED;
COMMENT ON FUNCTION @extschema@.es_verify(text) IS
	'checks the hash chain of a stream: the first event whose content, order or presence does not match; no row when it verifies';
REVOKE ALL ON FUNCTION @extschema@.es_verify(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@.es_verify(text) TO es_reader;

CREATE OR REPLACE FUNCTION @extschema@.es_verify_all()
RETURNS TABLE (stream_id text, version bigint, problem text,
			   expected_hash bytea, stored_hash bytea, detail text)
AS 'MODULE_PATHNAME', 'es_verify_all'
LANGUAGE C STABLE PARALLEL RESTRICTED;
COMMENT ON FUNCTION @extschema@.es_verify_all() IS
	'checks the hash chain of every stream in one pass: the first problem of each damaged stream; no row when all verify';
REVOKE ALL ON FUNCTION @extschema@.es_verify_all() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@.es_verify_all() TO es_reader;

CREATE OR REPLACE FUNCTION @extschema@.es_heads()
RETURNS TABLE (stream_id text, first_version bigint, version bigint, head_hash bytea)
AS 'MODULE_PATHNAME', 'es_heads'
LANGUAGE C STABLE PARALLEL RESTRICTED;
COMMENT ON FUNCTION @extschema@.es_heads() IS
	'the head of every stream (its version and the chain hash at it), in stream_id byte order: export with jsonb_agg for es_verify_heads';
REVOKE ALL ON FUNCTION @extschema@.es_heads() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@.es_heads() TO es_reader;

CREATE OR REPLACE FUNCTION @extschema@.es_digest(heads jsonb DEFAULT NULL)
RETURNS bytea
AS 'MODULE_PATHNAME', 'es_digest'
LANGUAGE C STABLE CALLED ON NULL INPUT PARALLEL RESTRICTED;
COMMENT ON FUNCTION @extschema@.es_digest(jsonb) IS
	'SHA-256 digest of the current stream heads (NULL) or of an export of them (jsonb_agg of es_heads())';
REVOKE ALL ON FUNCTION @extschema@.es_digest(jsonb) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@.es_digest(jsonb) TO es_reader;

CREATE OR REPLACE FUNCTION @extschema@.es_verify_heads(earlier jsonb)
RETURNS TABLE (stream_id text, version bigint, problem text,
			   expected_hash bytea, stored_hash bytea, detail text)
AS 'MODULE_PATHNAME', 'es_verify_heads'
LANGUAGE C STABLE CALLED ON NULL INPUT PARALLEL RESTRICTED;
COMMENT ON FUNCTION @extschema@.es_verify_heads(jsonb) IS
	'checks the store against an earlier export of the heads: every earlier head must still be on its chain (or removed by retention or erasure); no row when it is';
REVOKE ALL ON FUNCTION @extschema@.es_verify_heads(jsonb) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@.es_verify_heads(jsonb) TO es_reader;

/*
 * Data lifecycle (issue 15, sql/install/85_lifecycle.sql): the role
 * es_eraser, es.archived_events, es.erasures, es.retention_policies and
 * their functions.
 */
DO $eraser$
BEGIN
	IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname OPERATOR(pg_catalog.=) 'es_eraser') THEN
		CREATE ROLE es_eraser NOLOGIN;
	END IF;
END
$eraser$;
GRANT es_writer TO es_eraser;

/*
 * Archived events: es_archive_stream moves a stream's events here out of
 * es.events (so the log, category and query reads, and the indexes of the
 * hot table, no longer hold them); es_read_stream and es_fold still find
 * them; es_unarchive_stream moves them back with their original cursor.
 * Same columns, in the same order, as es.events (category is a plain column
 * here).  Only the primary key: the stream's events are read in version order.
 */
CREATE TABLE IF NOT EXISTS @extschema@.archived_events (
	global_position	bigint NOT NULL,
	stream_id		text NOT NULL,
	version			bigint NOT NULL,
	event_id		uuid NOT NULL,
	event_type		text NOT NULL,
	schema_version	integer NOT NULL,
	data			jsonb NOT NULL,
	metadata		jsonb,
	recorded_at		timestamptz NOT NULL,
	category		text NOT NULL,
	era				integer NOT NULL,
	tx_id			xid8 NOT NULL,
	tags			text[],
	hash			bytea,
	CONSTRAINT archived_events_pkey PRIMARY KEY (stream_id, version)
);
COMMENT ON TABLE @extschema@.archived_events IS
	'es_ext archived events: the events of archived streams, moved out of es.events by es_archive_stream (written only by es_archive_stream, es_unarchive_stream and es_erase_stream)';
CREATE OR REPLACE TRIGGER es_guard_write BEFORE INSERT OR UPDATE OR DELETE ON @extschema@.archived_events
	FOR EACH STATEMENT EXECUTE FUNCTION @extschema@.es_guard();
CREATE OR REPLACE TRIGGER es_guard_truncate BEFORE TRUNCATE ON @extschema@.archived_events
	FOR EACH STATEMENT EXECUTE FUNCTION @extschema@.es_guard();
SELECT pg_catalog.pg_extension_config_dump('@extschema@.archived_events', '');
REVOKE ALL ON TABLE @extschema@.archived_events FROM PUBLIC;
GRANT SELECT ON @extschema@.archived_events TO es_reader;
GRANT INSERT, DELETE ON @extschema@.archived_events TO es_admin;
GRANT DELETE ON @extschema@.archived_events TO es_eraser;

/*
 * Erasures: the audit of es_erase_stream, one row per erased stream.
 */
CREATE TABLE IF NOT EXISTS @extschema@.erasures (
	stream_id			text NOT NULL,
	erased_at			timestamptz NOT NULL,
	erased_by			name NOT NULL,
	erased_as			name NOT NULL,
	reason				text NOT NULL,
	first_version		bigint NOT NULL,
	last_version		bigint NOT NULL,
	events				bigint NOT NULL,
	head_hash			bytea,
	tombstone_position	bigint NOT NULL,
	CONSTRAINT erasures_pkey PRIMARY KEY (stream_id)
);
COMMENT ON TABLE @extschema@.erasures IS
	'es_ext erasure audit: who erased which stream, when, why, and what was removed (written only by es_erase_stream)';
COMMENT ON COLUMN @extschema@.erasures.erased_by IS 'session_user of the erasing session';
COMMENT ON COLUMN @extschema@.erasures.erased_as IS 'current_user of the erasure (the role holding es_eraser)';
COMMENT ON COLUMN @extschema@.erasures.first_version IS 'lowest version the stream still stored before the erasure';
COMMENT ON COLUMN @extschema@.erasures.last_version IS 'version of the stream''s head before the erasure (the tombstone is last_version + 1)';
COMMENT ON COLUMN @extschema@.erasures.events IS 'events removed (from es.events and es.archived_events)';
COMMENT ON COLUMN @extschema@.erasures.head_hash IS 'chain hash of the head before the erasure: the stream''s base_hash, from which the tombstone is chained';
CREATE OR REPLACE TRIGGER es_guard_write BEFORE INSERT OR UPDATE OR DELETE ON @extschema@.erasures
	FOR EACH STATEMENT EXECUTE FUNCTION @extschema@.es_guard();
CREATE OR REPLACE TRIGGER es_guard_truncate BEFORE TRUNCATE ON @extschema@.erasures
	FOR EACH STATEMENT EXECUTE FUNCTION @extschema@.es_guard();
SELECT pg_catalog.pg_extension_config_dump('@extschema@.erasures', '');
REVOKE ALL ON TABLE @extschema@.erasures FROM PUBLIC;
GRANT SELECT ON @extschema@.erasures TO es_admin, es_eraser;
GRANT INSERT ON @extschema@.erasures TO es_eraser;

/*
 * Retention policies: per category or per stream (a stream's own policy
 * wins over its category's), a maximum age and/or a maximum count of the
 * events a stream keeps.  Written only by es_set_retention.
 */
CREATE TABLE IF NOT EXISTS @extschema@.retention_policies (
	category	text,
	stream_id	text,
	max_age		interval,
	max_count	bigint,
	updated_at	timestamptz NOT NULL DEFAULT pg_catalog.now(),
	CONSTRAINT retention_policies_key UNIQUE NULLS NOT DISTINCT (category, stream_id),
	CONSTRAINT retention_policies_target_check
		CHECK (pg_catalog.num_nonnulls(category, stream_id) OPERATOR(pg_catalog.=) 1),
	CONSTRAINT retention_policies_limit_check
		CHECK (pg_catalog.num_nonnulls(max_age, max_count) OPERATOR(pg_catalog.>=) 1
			   AND max_age OPERATOR(pg_catalog.>) '0'::interval
			   AND max_count OPERATOR(pg_catalog.>=) 1)
);
COMMENT ON TABLE @extschema@.retention_policies IS
	'es_ext retention policies: the maximum age and/or count of the events of a category''s or a stream''s streams (written only by es_set_retention; applied by es_apply_retention)';
CREATE OR REPLACE TRIGGER es_guard_write BEFORE INSERT OR UPDATE OR DELETE ON @extschema@.retention_policies
	FOR EACH STATEMENT EXECUTE FUNCTION @extschema@.es_guard();
CREATE OR REPLACE TRIGGER es_guard_truncate BEFORE TRUNCATE ON @extschema@.retention_policies
	FOR EACH STATEMENT EXECUTE FUNCTION @extschema@.es_guard();
SELECT pg_catalog.pg_extension_config_dump('@extschema@.retention_policies', '');
REVOKE ALL ON TABLE @extschema@.retention_policies FROM PUBLIC;
GRANT SELECT ON @extschema@.retention_policies TO es_reader;
GRANT INSERT, UPDATE, DELETE ON @extschema@.retention_policies TO es_admin;
-- es_apply_retention deletes the events it removes (es_writer deletes snapshots)
GRANT DELETE ON @extschema@.events TO es_admin;
/*
 * es_erase_stream deletes from exactly these tables (es_eraser is an
 * es_writer, which deletes snapshots): the guards refuse any other DELETE
 */
GRANT DELETE ON @extschema@.events, @extschema@.outbox, @extschema@.outbox_deliveries,
	@extschema@.projection_dead_letters TO es_eraser;
GRANT SELECT, DELETE ON @extschema@.outbox_dead TO es_eraser;

/* the rows of these tables come back from a dump (src/dump.c) */
CREATE OR REPLACE TRIGGER es_restored AFTER INSERT ON @extschema@.archived_events
	FOR EACH STATEMENT EXECUTE FUNCTION @extschema@.es_restored();
CREATE OR REPLACE TRIGGER es_restored AFTER INSERT ON @extschema@.erasures
	FOR EACH STATEMENT EXECUTE FUNCTION @extschema@.es_restored();
CREATE OR REPLACE TRIGGER es_restored AFTER INSERT ON @extschema@.retention_policies
	FOR EACH STATEMENT EXECUTE FUNCTION @extschema@.es_restored();

/* Archive */
CREATE OR REPLACE FUNCTION @extschema@.es_archive_stream(stream text)
RETURNS bigint
AS 'MODULE_PATHNAME', 'es_archive_stream'
LANGUAGE C VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE;
COMMENT ON FUNCTION @extschema@.es_archive_stream(text) IS
	'archives a stream: it becomes read-only and its events move to es.archived_events, out of the log and category reads (es_read_stream and es_fold still read them); returns the number of events moved';
REVOKE ALL ON FUNCTION @extschema@.es_archive_stream(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@.es_archive_stream(text) TO es_admin;

CREATE OR REPLACE FUNCTION @extschema@.es_unarchive_stream(stream text)
RETURNS bigint
AS 'MODULE_PATHNAME', 'es_unarchive_stream'
LANGUAGE C VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE;
COMMENT ON FUNCTION @extschema@.es_unarchive_stream(text) IS
	'unarchives a stream: its events move back into es.events at their original log cursor (subscribers past it do not see them again) and it accepts appends again; returns the number of events moved';
REVOKE ALL ON FUNCTION @extschema@.es_unarchive_stream(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@.es_unarchive_stream(text) TO es_admin;

/* Erasure */
CREATE OR REPLACE FUNCTION @extschema@.es_erase_stream(stream text, reason text)
RETURNS @extschema@.erasures
AS 'MODULE_PATHNAME', 'es_erase_stream'
LANGUAGE C VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE;
COMMENT ON FUNCTION @extschema@.es_erase_stream(text, text) IS
	'erases a stream (the right to be forgotten): removes its events and every copy es_ext keeps, appends the tombstone es.stream_erased, records the erasure in es.erasures; the stream can never be appended to again';
REVOKE ALL ON FUNCTION @extschema@.es_erase_stream(text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@.es_erase_stream(text, text) TO es_eraser;

/* Retention */
CREATE OR REPLACE FUNCTION @extschema@.es_set_retention(category text, stream text,
														max_age interval, max_count bigint)
RETURNS void
AS 'MODULE_PATHNAME', 'es_set_retention'
LANGUAGE C VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE;
COMMENT ON FUNCTION @extschema@.es_set_retention(text, text, interval, bigint) IS
	'sets the retention policy of a category or of a stream (exactly one of them): the maximum age and/or count of its events; both NULL removes the policy';
REVOKE ALL ON FUNCTION @extschema@.es_set_retention(text, text, interval, bigint) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@.es_set_retention(text, text, interval, bigint) TO es_admin;

CREATE OR REPLACE FUNCTION @extschema@.es_apply_retention(batch_size integer DEFAULT 1000,
														  OUT streams bigint, OUT events bigint,
														  OUT snapshots bigint, OUT more boolean)
RETURNS record
AS 'MODULE_PATHNAME', 'es_apply_retention'
LANGUAGE C VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE;
COMMENT ON FUNCTION @extschema@.es_apply_retention(integer) IS
	'applies the retention policies: removes at most batch_size of the oldest events beyond the policies (never a stream''s last event), raising first_version; more: call again';
REVOKE ALL ON FUNCTION @extschema@.es_apply_retention(integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@.es_apply_retention(integer) TO es_admin;

/*
 * ========================================================================
 * sql/install/95_citus.sql — a distributed event store on Citus (issue 16):
 * es.distribute(), the per-node ranges of the sequences, and es_read_log,
 * the global log merged from the log of every node.  See README, "Scaling
 * out with Citus", and src/citus.c.
 * ========================================================================
 */

/*
 * es_node_ranges: give this node's sequences (event positions, outbox
 * positions) their own range, from the node's Citus group id g:
 * [g * 2^48 + 1, (g + 1) * 2^48 - 1].  A position is then unique across the
 * cluster, and says which node's log it belongs to: the node that appended
 * the event (its group, global_position >> 48), whose transaction ids order
 * it (es_read_log).  Run on every node by es.distribute(); idempotent.
 */
CREATE OR REPLACE FUNCTION @extschema@.es_node_ranges()
RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
	g integer;
	lo bigint;
	hi bigint;
	seq regclass;
	last bigint;
BEGIN
	IF NOT EXISTS (SELECT FROM pg_catalog.pg_extension WHERE extname OPERATOR(pg_catalog.=) 'citus') THEN
		RAISE EXCEPTION 'extension "citus" is not installed'
			USING ERRCODE = '55000', HINT = 'es.distribute() runs this on every node of a Citus cluster.';
	END IF;
	/* these sequences are this node's own: Citus must not send the DDL on */
	PERFORM pg_catalog.set_config('citus.enable_ddl_propagation', 'off', true);
	SELECT groupid INTO g FROM pg_catalog.pg_dist_local_group;
	IF g IS NULL OR g < 0 OR g >= 32767 THEN
		RAISE EXCEPTION 'this node has no Citus group id'
			USING ERRCODE = '55000';
	END IF;
	lo := (g::bigint << 48) + 1;
	hi := ((g::bigint + 1) << 48) - 1;
	FOREACH seq IN ARRAY ARRAY['@extschema@.events_global_position_seq'::regclass,
							   '@extschema@.outbox_position_seq'::regclass]
	LOOP
		SELECT s.last_value INTO last FROM pg_catalog.pg_sequences AS s
		 WHERE s.schemaname OPERATOR(pg_catalog.=) '@extschema@'
		   AND (pg_catalog.quote_ident(s.schemaname) || '.' || pg_catalog.quote_ident(s.sequencename))::regclass
			   OPERATOR(pg_catalog.=) seq;
		IF last IS NOT NULL AND last > hi THEN
			RAISE EXCEPTION 'sequence % is beyond the range of Citus group %', seq, g
				USING ERRCODE = '55000',
					  DETAIL = pg_catalog.format('Its last value is %s; the group''s range ends at %s.', last, hi);
		END IF;
		IF last IS NULL OR last < lo THEN
			EXECUTE pg_catalog.format('ALTER SEQUENCE %s MINVALUE %s MAXVALUE %s START WITH %s RESTART WITH %s',
									  seq, lo, hi, lo, lo);
		ELSE
			EXECUTE pg_catalog.format('ALTER SEQUENCE %s MINVALUE %s MAXVALUE %s START WITH %s', seq, lo, hi, lo);
		END IF;
	END LOOP;
	RETURN g;
END
$fn$;
COMMENT ON FUNCTION @extschema@.es_node_ranges() IS
	'gives this node''s es_ext sequences the range of its Citus group (run on every node by es.distribute())';
REVOKE ALL ON FUNCTION @extschema@.es_node_ranges() FROM PUBLIC;

/*
 * distribute: turn this database's event store into a distributed one, on
 * the Citus cluster it is the coordinator of.  Re-runnable: run it again
 * after adding nodes (their sequences get their range).
 */
CREATE OR REPLACE FUNCTION @extschema@.distribute(shard_count integer DEFAULT 32)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
	r record;
	t regclass;
	ours text;
BEGIN
	IF shard_count IS NULL OR shard_count < 1 OR shard_count > 64000 THEN
		RAISE EXCEPTION 'shard count % is out of range', shard_count
			USING ERRCODE = '22023', HINT = 'Give a shard count between 1 and 64000.';
	END IF;
	IF NOT EXISTS (SELECT FROM pg_catalog.pg_extension WHERE extname OPERATOR(pg_catalog.=) 'citus') THEN
		RAISE EXCEPTION 'extension "citus" is not installed'
			USING ERRCODE = '55000',
				  HINT = 'es.distribute() needs a Citus cluster: shared_preload_libraries = ''citus'', CREATE EXTENSION citus, then the worker nodes (citus_add_node).';
	END IF;
	IF NOT (SELECT r2.rolsuper FROM pg_catalog.pg_roles AS r2 WHERE r2.rolname OPERATOR(pg_catalog.=) current_user) THEN
		RAISE EXCEPTION 'permission denied to distribute the event store'
			USING ERRCODE = '42501', DETAIL = 'Only a superuser may run es.distribute().';
	END IF;
	IF NOT pg_catalog.citus_is_coordinator() THEN
		RAISE EXCEPTION 'es.distribute() must run on the Citus coordinator'
			USING ERRCODE = '55000';
	END IF;
	IF (SELECT pg_catalog.count(*) FROM pg_catalog.pg_dist_node AS n
		 WHERE n.isactive AND n.noderole OPERATOR(pg_catalog.=) 'primary'
		   AND n.groupid OPERATOR(pg_catalog.<>) 0) = 0 THEN
		RAISE EXCEPTION 'the Citus cluster has no worker node'
			USING ERRCODE = '55000', HINT = 'Add the workers first: SELECT citus_add_node(host, port).';
	END IF;
	IF NOT EXISTS (SELECT FROM pg_catalog.pg_dist_node AS n WHERE n.groupid OPERATOR(pg_catalog.=) 0) THEN
		RAISE EXCEPTION 'the coordinator is not in the Citus metadata'
			USING ERRCODE = '55000',
				  HINT = 'Run SELECT citus_set_coordinator_host(host, port) first: the registries are reference tables, read on every node.';
	END IF;
	/* the features that are not supported on a distributed store */
	IF EXISTS (SELECT FROM pg_catalog.pg_policy AS p
				WHERE p.polrelid OPERATOR(pg_catalog.=) '@extschema@.streams'::regclass) THEN
		RAISE EXCEPTION 'cannot distribute an event store with tenant isolation'
			USING ERRCODE = '0A000', HINT = 'Run es.es_disable_tenancy() first; tenancy is not supported on a distributed event store.';
	END IF;
	IF EXISTS (SELECT FROM @extschema@.subject_keys) THEN
		RAISE EXCEPTION 'cannot distribute an event store that holds personal data'
			USING ERRCODE = '0A000', DETAIL = 'es.subject_keys has keys; crypto-shredding is not supported on a distributed event store.';
	END IF;

	/* es_ext, at this version, on every node */
	SELECT e.extversion INTO ours FROM pg_catalog.pg_extension AS e
	 WHERE e.extname OPERATOR(pg_catalog.=) 'es_ext';
	FOR r IN SELECT * FROM pg_catalog.run_command_on_all_nodes(
				 'SELECT extversion FROM pg_catalog.pg_extension WHERE extname = ''es_ext''')
	LOOP
		IF NOT r.success OR r.result IS DISTINCT FROM ours THEN
			RAISE EXCEPTION 'es_ext % is not installed on Citus node %', ours, r.nodeid
				USING ERRCODE = '55000',
					  DETAIL = pg_catalog.format('The node answered: %s', r.result),
					  HINT = 'Install the same es_ext on every node (CREATE EXTENSION on the coordinator propagates it).';
		END IF;
	END LOOP;

	/*
	 * es_ext preloaded on every node: its planner hook keeps a NULL stream
	 * from Citus's function delegation, which crashes on it (src/citus.c)
	 */
	FOR r IN SELECT * FROM pg_catalog.run_command_on_all_nodes(
				 'SELECT pg_catalog.current_setting(''shared_preload_libraries'')')
	LOOP
		IF NOT r.success OR r.result IS NULL OR r.result !~ '(^|[\s,])"?es_ext"?($|[\s,])' THEN
			RAISE EXCEPTION 'es_ext is not in shared_preload_libraries on Citus node %', r.nodeid
				USING ERRCODE = '55000',
					  DETAIL = pg_catalog.format('The node answered: %s', r.result),
					  HINT = 'Set shared_preload_libraries = ''citus,es_ext'' on every node and restart it.';
		END IF;
	END LOOP;

	/* each node's sequences get its own range */
	FOR r IN SELECT * FROM pg_catalog.run_command_on_all_nodes('SELECT es.es_node_ranges()')
	LOOP
		IF NOT r.success THEN
			RAISE EXCEPTION 'could not set the sequence ranges of Citus node %', r.nodeid
				USING ERRCODE = '55000', DETAIL = r.result;
		END IF;
	END LOOP;

	/*
	 * The guard triggers are statement triggers that fire on each shard;
	 * Citus asks for this setting to keep triggers on distributed tables.
	 */
	PERFORM pg_catalog.set_config('citus.enable_unsafe_triggers', 'on', true);

	/* the stream-keyed tables, co-located by stream */
	IF NOT EXISTS (SELECT FROM pg_catalog.pg_dist_partition AS p
					WHERE p.logicalrelid OPERATOR(pg_catalog.=) '@extschema@.streams'::regclass) THEN
		PERFORM pg_catalog.create_distributed_table('@extschema@.streams', 'stream_id',
													shard_count => shard_count, colocate_with => 'none');
	END IF;
	FOREACH t IN ARRAY ARRAY['@extschema@.events'::regclass, '@extschema@.snapshots'::regclass,
							 '@extschema@.archived_events'::regclass, '@extschema@.erasures'::regclass]
	LOOP
		IF NOT EXISTS (SELECT FROM pg_catalog.pg_dist_partition AS p
						WHERE p.logicalrelid OPERATOR(pg_catalog.=) t) THEN
			PERFORM pg_catalog.create_distributed_table(t, 'stream_id', colocate_with => '@extschema@.streams');
		END IF;
	END LOOP;

	/* the registries that every node reads */
	FOREACH t IN ARRAY ARRAY['@extschema@.upcasters'::regclass, '@extschema@.outbox_routes'::regclass,
							 '@extschema@.outbox_groups'::regclass]
	LOOP
		IF NOT EXISTS (SELECT FROM pg_catalog.pg_dist_partition AS p
						WHERE p.logicalrelid OPERATOR(pg_catalog.=) t) THEN
			PERFORM pg_catalog.create_reference_table(t);
		END IF;
	END LOOP;

	/* the functions of one stream run on the node that holds it */
	PERFORM pg_catalog.create_distributed_function(f, '$1', colocate_with => '@extschema@.streams',
												   force_delegation => true)
	   FROM pg_catalog.unnest(ARRAY[
			'@extschema@.es_append(text, bigint, jsonb)',
			'@extschema@.es_append(text, bigint, jsonb, jsonb, @extschema@.log_cursor)',
			'@extschema@.es_read_stream(text, bigint, bigint, text)',
			'@extschema@.es_stream_version(text)',
			'@extschema@.es_fold(text, regprocedure, jsonb, bigint, timestamptz)',
			'@extschema@.es_fold_state(text, regprocedure, jsonb, bigint, timestamptz)',
			'@extschema@.es_snapshot_save(text, regprocedure, jsonb, bigint)',
			'@extschema@.es_snapshot_delete(text, regprocedure)',
			'@extschema@.es_verify(text)'
		]::regprocedure[]) AS f;
END
$fn$;
COMMENT ON FUNCTION @extschema@.distribute(integer) IS
	'distributes the event store on the Citus cluster this database coordinates: stream-keyed tables by stream_id, registries as reference tables, per-stream functions delegated, per-node sequence ranges (re-run after adding nodes)';
REVOKE ALL ON FUNCTION @extschema@.distribute(integer) FROM PUBLIC;

/*
 * es_read_log: the global log of a distributed event store, merged from the
 * log of every node.  A node's log is the events it appended (their
 * positions are in its range, see es_node_ranges), ordered by (era, tx_id,
 * global_position) with that node's transaction ids, gap-safe below that
 * node's horizon, wherever a shard move has since put them.  The cursor is
 * one es.log_cursor per node log (its node is global_position >> 48): each
 * row carries the whole cursor to resume after it.  Works on one node too
 * (one log).  Rows of the node logs are interleaved one by one, in each
 * node log's own order.
 */
CREATE OR REPLACE FUNCTION @extschema@.es_read_log(after @extschema@.log_cursor[] DEFAULT NULL,
												   max_count integer DEFAULT 1000,
												   category text DEFAULT NULL,
												   event_types text[] DEFAULT NULL)
RETURNS TABLE (global_position bigint, stream_id text, version bigint, event_id uuid,
			   event_type text, data jsonb, metadata jsonb, recorded_at timestamptz,
			   node integer, log_cursor @extschema@.log_cursor,
			   cursors @extschema@.log_cursor[])
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
	distributed boolean;
	nodes integer[];
	eras integer[];
	horizons xid8[];
	cur @extschema@.log_cursor[];
	c @extschema@.log_cursor;
	g integer;
	i integer;
	r record;
	evs @extschema@.events[];
	preds jsonb;
	pred jsonb;
	blocked integer[];
	emitted integer;
	nxt integer[];
	k integer;
	progress boolean;
BEGIN
	/* the arguments as es_read_all checks them */
	IF max_count IS NULL THEN
		RAISE EXCEPTION 'max_count cannot be null'
			USING ERRCODE = '22004';
	END IF;
	IF max_count < 1 THEN
		RAISE EXCEPTION 'max_count must be greater than zero'
			USING ERRCODE = '22023';
	END IF;
	IF category IS NOT NULL AND category OPERATOR(pg_catalog.=) '' THEN
		RAISE EXCEPTION 'category cannot be empty'
			USING ERRCODE = '22023', HINT = 'Use NULL to read every category.';
	END IF;
	IF event_types IS NOT NULL THEN
		IF pg_catalog.array_ndims(event_types) IS DISTINCT FROM 1
		   OR pg_catalog.cardinality(event_types) OPERATOR(pg_catalog.=) 0 THEN
			RAISE EXCEPTION 'event_types must be a non-empty one-dimensional array'
				USING ERRCODE = '22023', HINT = 'Use NULL to read every event type.';
		END IF;
		IF pg_catalog.array_position(event_types, NULL) IS NOT NULL THEN
			RAISE EXCEPTION 'event_types cannot contain null'
				USING ERRCODE = '22004';
		END IF;
	END IF;
	IF after IS NOT NULL THEN
		FOREACH c IN ARRAY after LOOP
			IF c IS NULL OR c.era IS NULL OR c.tx_id IS NULL OR c.global_position IS NULL
			   OR c.global_position < 1 THEN
				RAISE EXCEPTION 'invalid log cursor %', c
					USING ERRCODE = '22023', HINT = 'Pass the cursors of a row es_read_log returned.';
			END IF;
		END LOOP;
		IF (SELECT pg_catalog.count(DISTINCT (x.global_position OPERATOR(pg_catalog.>>) 48))
			  FROM pg_catalog.unnest(after) AS x) OPERATOR(pg_catalog.<>) pg_catalog.cardinality(after) THEN
			RAISE EXCEPTION 'log cursor has two positions for one node'
				USING ERRCODE = '22023', HINT = 'Pass the cursors of a row es_read_log returned.';
		END IF;
	END IF;

	/* the statement naming pg_dist_partition is planned only with Citus */
	distributed := false;
	IF EXISTS (SELECT FROM pg_catalog.pg_extension WHERE extname OPERATOR(pg_catalog.=) 'citus') THEN
		distributed := EXISTS (SELECT FROM pg_catalog.pg_dist_partition AS p
								WHERE p.logicalrelid OPERATOR(pg_catalog.=) '@extschema@.events'::regclass);
	END IF;

	/*
	 * Each node log: its node's era and horizon, taken before the reads.
	 * The horizons come from new transactions on the nodes: the reads must
	 * see at least what committed below them, so each read takes a new
	 * snapshot (VOLATILE), which REPEATABLE READ and SERIALIZABLE do not.
	 */
	IF distributed AND pg_catalog.current_setting('transaction_isolation') OPERATOR(pg_catalog.<>) 'read committed' THEN
		RAISE EXCEPTION 'es_read_log() on a distributed event store needs READ COMMITTED'
			USING ERRCODE = '0A000',
				  DETAIL = 'The nodes'' horizons are read after this transaction''s snapshot was taken: events below them could be missing from it.';
	END IF;
	IF distributed THEN
		nodes := '{}';
		eras := '{}';
		horizons := '{}';
		FOR r IN SELECT n.groupid, x.success, x.result
				   FROM pg_catalog.run_command_on_all_nodes(
						'SELECT coalesce((SELECT era FROM es.config), 0) || '','' || es.es_log_horizon()') AS x
				   JOIN pg_catalog.pg_dist_node AS n ON n.nodeid OPERATOR(pg_catalog.=) x.nodeid
				  WHERE n.noderole OPERATOR(pg_catalog.=) 'primary'
		LOOP
			IF NOT r.success THEN
				RAISE EXCEPTION 'could not read the log horizon of Citus node group %', r.groupid
					USING ERRCODE = '08006', DETAIL = r.result,
						  HINT = 'Every node''s horizon is needed: no event of its log can be returned safely without it.';
			END IF;
			nodes := nodes || r.groupid;
			eras := eras || pg_catalog.split_part(r.result, ',', 1)::integer;
			horizons := horizons || pg_catalog.split_part(r.result, ',', 2)::xid8;
		END LOOP;
	ELSE
		nodes := ARRAY[0];
		eras := ARRAY[coalesce((SELECT x.era FROM @extschema@.config AS x), 0)];
		horizons := ARRAY[@extschema@.es_log_horizon()];
	END IF;

	/* each node log's next events, in its own order */
	/* one dimension, from 1: the cursors are found by their position in it */
	cur := ARRAY(SELECT x FROM pg_catalog.unnest(after) AS x);
	evs := '{}';
	FOR i IN 1 .. pg_catalog.cardinality(nodes) LOOP
		g := nodes[i];
		c := NULL;
		SELECT x.* INTO c FROM pg_catalog.unnest(cur) AS x
		 WHERE (x.global_position OPERATOR(pg_catalog.>>) 48) OPERATOR(pg_catalog.=) g;
		evs := evs OPERATOR(pg_catalog.||) ARRAY(
			SELECT ev FROM @extschema@.events AS ev
			 WHERE ev.global_position OPERATOR(pg_catalog.>=) ((g::bigint OPERATOR(pg_catalog.<<) 48) OPERATOR(pg_catalog.+) 1)
			   AND ev.global_position OPERATOR(pg_catalog.<) ((g::bigint OPERATOR(pg_catalog.+) 1) OPERATOR(pg_catalog.<<) 48)
			   AND (c.global_position IS NULL OR (ev.era, ev.tx_id, ev.global_position)
					OPERATOR(pg_catalog.>) (c.era, c.tx_id, c.global_position))
			   AND (ev.era, ev.tx_id) OPERATOR(pg_catalog.<) (eras[i], horizons[i])
			   AND (es_read_log.category IS NULL OR ev.category OPERATOR(pg_catalog.=) es_read_log.category)
			   AND (es_read_log.event_types IS NULL OR ev.event_type OPERATOR(pg_catalog.=) ANY (es_read_log.event_types))
			 ORDER BY ev.era, ev.tx_id, ev.global_position
			 LIMIT max_count);
	END LOOP;

	/*
	 * A stream's events are in several node logs once its shard has moved:
	 * the predecessors of the candidates that are in another node log.  A
	 * candidate waits (and its node log with it) until that predecessor was
	 * returned, in this read or before the cursor.
	 */
	SELECT pg_catalog.jsonb_object_agg(p.version OPERATOR(pg_catalog.||) ':' OPERATOR(pg_catalog.||) p.stream_id,
									   pg_catalog.jsonb_build_array(p.era, p.tx_id::text, p.global_position))
	  INTO preds
	  FROM @extschema@.events AS p
	 WHERE p.stream_id OPERATOR(pg_catalog.=) ANY (ARRAY(SELECT DISTINCT u.stream_id FROM pg_catalog.unnest(evs) AS u))
	   AND p.version OPERATOR(pg_catalog.=) ANY (ARRAY(SELECT DISTINCT u.version OPERATOR(pg_catalog.-) 1
														FROM pg_catalog.unnest(evs) AS u))
	   AND (es_read_log.category IS NULL OR p.category OPERATOR(pg_catalog.=) es_read_log.category)
	   AND (es_read_log.event_types IS NULL OR p.event_type OPERATOR(pg_catalog.=) ANY (es_read_log.event_types));

	/*
	 * Interleaved one by one, each node log in its order.  A row waits
	 * while its predecessor, in another node log, was not returned: its
	 * node log stops there for this pass; passes repeat while they return
	 * something (the predecessor may come later in the pass).
	 */
	nxt := pg_catalog.array_fill(1, ARRAY[pg_catalog.cardinality(nodes)]);
	emitted := 0;
	LOOP
		progress := false;
		blocked := '{}';
		FOR r IN
			SELECT u.*, u AS ev, (u.global_position OPERATOR(pg_catalog.>>) 48)::integer AS g,
				   pg_catalog.row_number() OVER (PARTITION BY u.global_position OPERATOR(pg_catalog.>>) 48
												 ORDER BY u.era, u.tx_id, u.global_position) AS rn
			  FROM pg_catalog.unnest(evs) AS u
			 ORDER BY rn, g
		LOOP
			EXIT WHEN emitted OPERATOR(pg_catalog.>=) max_count;
			k := pg_catalog.array_position(nodes, r.g);
			CONTINUE WHEN r.g OPERATOR(pg_catalog.=) ANY (blocked) OR r.rn OPERATOR(pg_catalog.<>) nxt[k];
			pred := preds OPERATOR(pg_catalog.->) ((r.version OPERATOR(pg_catalog.-) 1)::text OPERATOR(pg_catalog.||) ':' OPERATOR(pg_catalog.||) r.stream_id);
			IF pred IS NOT NULL
			   AND ((pred OPERATOR(pg_catalog.->>) 2)::bigint OPERATOR(pg_catalog.>>) 48) OPERATOR(pg_catalog.<>) r.g THEN
				c := NULL;
				SELECT x.* INTO c FROM pg_catalog.unnest(cur) AS x
				 WHERE (x.global_position OPERATOR(pg_catalog.>>) 48)
					   OPERATOR(pg_catalog.=) ((pred OPERATOR(pg_catalog.->>) 2)::bigint OPERATOR(pg_catalog.>>) 48);
				IF c.global_position IS NULL
				   OR ((pred OPERATOR(pg_catalog.->>) 0)::integer, (pred OPERATOR(pg_catalog.->>) 1)::xid8,
					   (pred OPERATOR(pg_catalog.->>) 2)::bigint)
					  OPERATOR(pg_catalog.>) (c.era, c.tx_id, c.global_position) THEN
					blocked := blocked OPERATOR(pg_catalog.||) r.g;
					CONTINUE;
				END IF;
			END IF;
			nxt[k] := nxt[k] OPERATOR(pg_catalog.+) 1;
			progress := true;
			emitted := emitted OPERATOR(pg_catalog.+) 1;
			g := r.g;
			c := ROW(r.era, r.tx_id, r.global_position)::@extschema@.log_cursor;
			i := pg_catalog.array_position(ARRAY(SELECT x.global_position OPERATOR(pg_catalog.>>) 48
												   FROM pg_catalog.unnest(cur) AS x)::bigint[], g::bigint);
			IF i IS NULL THEN
				cur := cur OPERATOR(pg_catalog.||) c;
			ELSE
				cur[i] := c;
			END IF;
			global_position := r.global_position;
			stream_id := r.stream_id;
			version := r.version;
			event_id := r.event_id;
			event_type := r.event_type;
			data := (@extschema@.es_upcast(r.ev)).data;
			metadata := r.metadata;
			recorded_at := r.recorded_at;
			node := g;
			log_cursor := c;
			cursors := cur;
			RETURN NEXT;
		END LOOP;
		EXIT WHEN NOT progress OR emitted OPERATOR(pg_catalog.>=) max_count
			OR pg_catalog.cardinality(blocked) OPERATOR(pg_catalog.=) 0;
	END LOOP;
END
$fn$;
COMMENT ON FUNCTION @extschema@.es_read_log(@extschema@.log_cursor[], integer, text, text[]) IS
	'the global log merged from every node''s log (a distributed event store; one log on a single node): events after the cursors, below each node''s horizon; each row carries the cursors to resume after it';
REVOKE ALL ON FUNCTION @extschema@.es_read_log(@extschema@.log_cursor[], integer, text, text[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@.es_read_log(@extschema@.log_cursor[], integer, text, text[]) TO es_reader;

/*
 * es_outbox_undelivered: how many messages of a stream older than a version
 * this node's outbox has not yet delivered to a consumer group.  es_outbox_claim
 * asks every node before it releases the messages it held back after a
 * shard move (src/outbox.c, outbox_handoff).
 */
CREATE OR REPLACE FUNCTION @extschema@.es_outbox_undelivered(consumer_group text, stream text,
															 before_version bigint)
RETURNS bigint
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
	RETURN (SELECT pg_catalog.count(*)
			  FROM @extschema@.outbox_deliveries AS d
			  JOIN @extschema@.outbox_groups AS g ON g.group_id OPERATOR(pg_catalog.=) d.group_id
			  JOIN @extschema@.outbox AS o ON o.position OPERATOR(pg_catalog.=) d.position
			 WHERE g.name OPERATOR(pg_catalog.=) consumer_group
			   AND d.stream_key OPERATOR(pg_catalog.=) pg_catalog.hashtextextended(stream, 0)
			   AND o.aggregateid OPERATOR(pg_catalog.=) stream
			   AND o.stream_version OPERATOR(pg_catalog.<) before_version);
END
$fn$;
COMMENT ON FUNCTION @extschema@.es_outbox_undelivered(text, text, bigint) IS
	'messages of a stream older than a version that this node has not delivered to a consumer group (distributed event store: see es_outbox_claim)';
REVOKE ALL ON FUNCTION @extschema@.es_outbox_undelivered(text, text, bigint) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@.es_outbox_undelivered(text, text, bigint) TO es_consumer, es_admin;

/*
 * The SQL-standard bodies that return es.events rows were expanded with the
 * columns of 0.1.0: parse them again, now with tags and hash (a function of the
 * user's own written the same way needs the same; see README, Upgrading).
 * They are PL/pgSQL now: Citus cannot plan a SQL function whose parameter
 * filters a distributed table (issue 16), and a PL/pgSQL body is planned
 * when it runs, so a later ADD COLUMN needs nothing.
 */
CREATE OR REPLACE FUNCTION @extschema@.es_events_by_correlation(correlation_id text)
RETURNS SETOF @extschema@.events
LANGUAGE plpgsql STABLE STRICT PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
	RETURN QUERY
	SELECT e.* FROM @extschema@.events AS e
	 WHERE e.metadata OPERATOR(pg_catalog.?) 'correlation_id'
	   AND (e.metadata OPERATOR(pg_catalog.->>) 'correlation_id') OPERATOR(pg_catalog.=) $1
	 ORDER BY e.era, e.tx_id, e.global_position;
END
$fn$;
CREATE OR REPLACE FUNCTION @extschema@.es_events_by_causation(causation_id text)
RETURNS SETOF @extschema@.events
LANGUAGE plpgsql STABLE STRICT PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
	RETURN QUERY
	SELECT e.* FROM @extschema@.events AS e
	 WHERE e.metadata OPERATOR(pg_catalog.?) 'causation_id'
	   AND (e.metadata OPERATOR(pg_catalog.->>) 'causation_id') OPERATOR(pg_catalog.=) $1
	 ORDER BY e.era, e.tx_id, e.global_position;
END
$fn$;
