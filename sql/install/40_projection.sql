
/*
 * ========================================================================
 * sql/install/40_projection.sql — projections and their rebuild
 * ========================================================================
 *
 * Projections: AFTER INSERT triggers on es.events, created with CREATE
 * TRIGGER (es_admin holds TRIGGER on es.events, see 20_core.sql).
 * es_project is an optional dispatching trigger function;
 * es_rebuild_projection replays history through a projection's trigger.
 */
CREATE FUNCTION @extschema@.es_project()
RETURNS trigger
AS 'MODULE_PATHNAME', 'es_project'
LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION @extschema@.es_project() IS
	'projection trigger: calls handler(es.events) functions by event type; arguments: handler, or pairs of event type and handler';
REVOKE ALL ON FUNCTION @extschema@.es_project() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@.es_project() TO es_admin;

CREATE FUNCTION @extschema@.es_projection_replay(projection name,
												 after @extschema@.log_cursor,
												 max_count integer,
												 to_head boolean)
RETURNS TABLE (replayed integer, last_cursor @extschema@.log_cursor)
AS 'MODULE_PATHNAME', 'es_projection_replay'
LANGUAGE C VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE;
COMMENT ON FUNCTION @extschema@.es_projection_replay(name, @extschema@.log_cursor, integer, boolean) IS
	'replays events after a cursor through a projection trigger on es.events (the engine of es_rebuild_projection)';
REVOKE ALL ON FUNCTION @extschema@.es_projection_replay(name, @extschema@.log_cursor, integer, boolean) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@.es_projection_replay(name, @extschema@.log_cursor, integer, boolean) TO es_admin;

CREATE TABLE @extschema@.projection_status (
	projection	name NOT NULL,
	state		text NOT NULL CHECK (state IN ('rebuilding', 'live')),
	started_at	timestamptz NOT NULL,
	finished_at	timestamptz,
	replayed	bigint NOT NULL DEFAULT 0,
	last_cursor	@extschema@.log_cursor,
	updated_at	timestamptz NOT NULL,
	run_started_at	timestamptz,
	run_replayed_from bigint NOT NULL DEFAULT 0,
	read_model	name,
	shadow		name,
	mode		text CHECK (mode IN ('inline', 'async')),
	CONSTRAINT projection_status_pkey PRIMARY KEY (projection)
);
COMMENT ON COLUMN @extschema@.projection_status.run_started_at IS 'when the rebuild was last resumed, its current run started (NULL: not resumed, the run started at started_at)';
COMMENT ON COLUMN @extschema@.projection_status.run_replayed_from IS 'events replayed before the current run (0, or the count at the last resumption)';
COMMENT ON COLUMN @extschema@.projection_status.read_model IS 'the schema of the read model rebuilt in a shadow (NULL: rebuilt in place)';
COMMENT ON COLUMN @extschema@.projection_status.shadow IS 'the shadow schema a rebuild writes until its switch (NULL: in place, or switched)';
COMMENT ON COLUMN @extschema@.projection_status.mode IS 'the mode of the projection after the rebuild: inline or async';
COMMENT ON TABLE @extschema@.projection_status IS
	'progress of projection rebuilds: state, events replayed so far, cursor reached';
SELECT pg_catalog.pg_extension_config_dump('@extschema@.projection_status', '');
REVOKE ALL ON TABLE @extschema@.projection_status FROM PUBLIC;
GRANT SELECT ON @extschema@.projection_status TO es_reader;
GRANT INSERT, UPDATE, DELETE ON @extschema@.projection_status TO es_admin;

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
CREATE FUNCTION @extschema@.es_read_model_check(read_model name)
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

CREATE FUNCTION @extschema@.es_rebuild_shadow_batch(projection name, max_count integer, final boolean)
RETURNS integer
AS 'MODULE_PATHNAME', 'es_rebuild_shadow_batch'
LANGUAGE C VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE;
COMMENT ON FUNCTION @extschema@.es_rebuild_shadow_batch(name, integer, boolean) IS
	'one step of a rebuild in a shadow (the engine of es_rebuild_projection with read_model): replays a batch into the shadow of the read model, or (final) the rest and switches the shadow in; returns the events replayed';
REVOKE ALL ON FUNCTION @extschema@.es_rebuild_shadow_batch(name, integer, boolean) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@.es_rebuild_shadow_batch(name, integer, boolean) TO es_admin;

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
CREATE PROCEDURE @extschema@.es_rebuild_projection(projection name,
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
