/*
 * sql/install/80_dump.sql — what makes a logical dump restore: the sequences
 * in the dump, and the user's objects on es_ext's tables (src/dump.c).  The
 * DDL can be re-run: the 0.1.0 -> 0.2.0 upgrade script holds the same.
 */

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
							 'upcasters', 'snapshots', 'checkpoints'] LOOP
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
