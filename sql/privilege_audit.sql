-- privilege_audit: every object of schema es, taken from the catalog, x the
-- roles PUBLIC, an unrelated role, es_reader, es_writer, es_consumer,
-- es_admin and es_eraser; ownership; no SECURITY DEFINER; what the privileges actually
-- let each role call; and row level security on es.events honoured by
-- every read path.  A new object shows up in the matrix by itself, and
-- anything granted to PUBLIC fails the first queries.

-- nothing in schema es is granted to PUBLIC: schema, relations (tables,
-- views, sequences), routines (functions, procedures, aggregates), types
SELECT 'schema' AS kind, n.nspname::text AS object FROM pg_namespace AS n, aclexplode(n.nspacl) AS a
 WHERE n.nspname = 'es' AND a.grantee = 0
UNION ALL
SELECT 'relation', c.oid::regclass::text FROM pg_class AS c, aclexplode(c.relacl) AS a
 WHERE c.relnamespace = 'es'::regnamespace AND a.grantee = 0
UNION ALL
SELECT 'routine', p.oid::regprocedure::text FROM pg_proc AS p, aclexplode(p.proacl) AS a
 WHERE p.pronamespace = 'es'::regnamespace AND a.grantee = 0
UNION ALL
SELECT 'type', t.oid::regtype::text FROM pg_type AS t, aclexplode(t.typacl) AS a
 WHERE t.typnamespace = 'es'::regnamespace AND a.grantee = 0;

-- a NULL ACL means the default privileges, which give EXECUTE on routines
-- and USAGE on types to PUBLIC: every routine and standalone type has an
-- explicit ACL
SELECT p.oid::regprocedure AS routine_with_default_acl FROM pg_proc AS p
 WHERE p.pronamespace = 'es'::regnamespace AND p.proacl IS NULL;
SELECT t.oid::regtype AS type_with_default_acl FROM pg_type AS t
  LEFT JOIN pg_class AS c ON c.oid = t.typrelid
 WHERE t.typnamespace = 'es'::regnamespace AND t.typacl IS NULL
   AND t.typtype IN ('c', 'd', 'e', 'r', 'm') AND (c.relkind IS NULL OR c.relkind = 'c');

-- no SECURITY DEFINER routine, no routine that sets a role
SELECT p.oid::regprocedure AS security_definer FROM pg_proc AS p
 WHERE p.pronamespace = 'es'::regnamespace AND p.prosecdef;
SELECT p.oid::regprocedure AS sets_a_role FROM pg_proc AS p, unnest(p.proconfig) AS c
 WHERE p.pronamespace = 'es'::regnamespace AND c ~* '^(role|session_authorization)=';
-- views read their tables with their owner's privileges unless they are
-- security_invoker: each view and what it reads (row level security on
-- those tables would not apply to the view's readers)
SELECT c.relname AS view, COALESCE(array_to_string(c.reloptions, ','), '') AS options,
	   (SELECT string_agg(DISTINCT d.refobjid::regclass::text, ', ')
		  FROM pg_rewrite AS r JOIN pg_depend AS d ON d.objid = r.oid AND d.classid = 'pg_rewrite'::regclass
		 WHERE r.ev_class = c.oid AND d.refobjid <> c.oid AND d.refclassid = 'pg_class'::regclass) AS reads
  FROM pg_class AS c
 WHERE c.relnamespace = 'es'::regnamespace AND c.relkind = 'v'
 ORDER BY 1;
-- every SQL or PL/pgSQL function pins its search_path (procedures, which
-- cannot, and C functions are listed: their names must all be qualified)
SELECT p.prokind, p.oid::regprocedure AS routine, l.lanname
  FROM pg_proc AS p JOIN pg_language AS l ON l.oid = p.prolang
 WHERE p.pronamespace = 'es'::regnamespace AND l.lanname <> 'c' AND p.prokind <> 'a'
   AND NOT EXISTS (SELECT FROM unnest(p.proconfig) AS c WHERE c = 'search_path=pg_catalog, pg_temp')
 ORDER BY 2::text;

-- every object belongs to the extension and to the extension's owner
SELECT count(*) AS objects_not_of_the_extension
  FROM (SELECT 'pg_class'::regclass AS classid, c.oid FROM pg_class AS c
		 WHERE c.relnamespace = 'es'::regnamespace AND c.relkind IN ('r', 'v', 'S', 'm', 'p', 'c')
		UNION ALL
		SELECT 'pg_proc'::regclass, p.oid FROM pg_proc AS p WHERE p.pronamespace = 'es'::regnamespace) AS o
 WHERE NOT EXISTS (SELECT FROM pg_depend AS d
					WHERE d.classid = o.classid AND d.objid = o.oid AND d.deptype = 'e'
					  AND d.refobjid = (SELECT oid FROM pg_extension WHERE extname = 'es_ext'))
   AND NOT EXISTS (SELECT FROM pg_type AS t JOIN pg_depend AS d ON d.objid = t.oid AND d.deptype = 'e'
					WHERE o.classid = 'pg_class'::regclass AND t.typrelid = o.oid);
SELECT count(*) AS objects_of_another_owner
  FROM (SELECT c.relowner AS owner FROM pg_class AS c WHERE c.relnamespace = 'es'::regnamespace
		UNION ALL SELECT p.proowner FROM pg_proc AS p WHERE p.pronamespace = 'es'::regnamespace
		UNION ALL SELECT t.typowner FROM pg_type AS t WHERE t.typnamespace = 'es'::regnamespace) AS o
 WHERE o.owner <> (SELECT extowner FROM pg_extension WHERE extname = 'es_ext');

-- the roles: an unrelated one, and one member of each es_* role
CREATE ROLE regress_pa_nobody;
CREATE ROLE regress_pa_reader IN ROLE es_reader;
CREATE ROLE regress_pa_writer IN ROLE es_writer;
CREATE ROLE regress_pa_consumer IN ROLE es_consumer;
CREATE ROLE regress_pa_admin IN ROLE es_admin;
CREATE ROLE regress_pa_eraser IN ROLE es_eraser;

-- the matrix, from the catalog: each object, each privilege some role
-- holds, and which of the roles hold it (x).  PUBLIC holds what
-- regress_pa_nobody holds: nothing.
CREATE FUNCTION pa_privileges(obj_kind text, obj oid, priv text, role name) RETURNS boolean
LANGUAGE sql AS $$
	SELECT CASE obj_kind
		WHEN 'schema' THEN has_schema_privilege(role, obj, priv)
		WHEN 'routine' THEN has_function_privilege(role, obj, priv)
		WHEN 'type' THEN has_type_privilege(role, obj, priv)
		WHEN 'sequence' THEN has_sequence_privilege(role, obj, priv)
		ELSE has_table_privilege(role, obj, priv) END
$$;
CREATE VIEW pa_objects AS
	SELECT 'schema' AS kind, n.oid, 'es' AS name, p AS priv
	  FROM pg_namespace AS n, unnest(ARRAY['USAGE', 'CREATE']) AS p WHERE n.nspname = 'es'
	UNION ALL
	SELECT CASE c.relkind WHEN 'v' THEN 'view' WHEN 'S' THEN 'sequence' ELSE 'table' END, c.oid,
		   c.relname::text, p
	  FROM pg_class AS c,
		   unnest(CASE WHEN c.relkind = 'S' THEN ARRAY['USAGE', 'SELECT', 'UPDATE']
					   ELSE ARRAY['SELECT', 'INSERT', 'UPDATE', 'DELETE', 'TRUNCATE', 'REFERENCES', 'TRIGGER'] END) AS p
	 WHERE c.relnamespace = 'es'::regnamespace AND c.relkind IN ('r', 'v', 'S', 'm', 'p')
	UNION ALL
	SELECT 'routine', p.oid,
		   (CASE p.prokind WHEN 'p' THEN 'procedure ' WHEN 'a' THEN 'aggregate ' ELSE '' END)
			 || substr(p.oid::regprocedure::text, 4), 'EXECUTE'
	  FROM pg_proc AS p WHERE p.pronamespace = 'es'::regnamespace
	UNION ALL
	SELECT 'type', t.oid, substr(t.oid::regtype::text, 4), 'USAGE'
	  FROM pg_type AS t LEFT JOIN pg_class AS c ON c.oid = t.typrelid
	 WHERE t.typnamespace = 'es'::regnamespace AND t.typtype = 'c' AND c.relkind = 'c';
SELECT o.kind, o.name, o.priv,
	   CASE WHEN pa_privileges(o.kind, o.oid, o.priv, 'regress_pa_nobody') THEN 'x' ELSE '' END AS nobody,
	   CASE WHEN pa_privileges(o.kind, o.oid, o.priv, 'regress_pa_reader') THEN 'x' ELSE '' END AS reader,
	   CASE WHEN pa_privileges(o.kind, o.oid, o.priv, 'regress_pa_writer') THEN 'x' ELSE '' END AS writer,
	   CASE WHEN pa_privileges(o.kind, o.oid, o.priv, 'regress_pa_consumer') THEN 'x' ELSE '' END AS consumer,
	   CASE WHEN pa_privileges(o.kind, o.oid, o.priv, 'regress_pa_admin') THEN 'x' ELSE '' END AS admin,
	   CASE WHEN pa_privileges(o.kind, o.oid, o.priv, 'regress_pa_eraser') THEN 'x' ELSE '' END AS eraser
  FROM pa_objects AS o
 WHERE pa_privileges(o.kind, o.oid, o.priv, 'regress_pa_nobody')
	OR pa_privileges(o.kind, o.oid, o.priv, 'regress_pa_reader')
	OR pa_privileges(o.kind, o.oid, o.priv, 'regress_pa_writer')
	OR pa_privileges(o.kind, o.oid, o.priv, 'regress_pa_consumer')
	OR pa_privileges(o.kind, o.oid, o.priv, 'regress_pa_admin')
	OR pa_privileges(o.kind, o.oid, o.priv, 'regress_pa_eraser')
 ORDER BY o.kind, o.name, o.priv;

-- column privileges, granted where a role may read some columns only
-- (es_wait_for_group: readers see which messages a group has not delivered)
SELECT c.relname, a.attname, x.privilege_type, x.grantee::regrole
  FROM pg_class AS c
  JOIN pg_attribute AS a ON a.attrelid = c.oid AND a.attacl IS NOT NULL
 CROSS JOIN aclexplode(a.attacl) AS x
 WHERE c.relnamespace = 'es'::regnamespace
 ORDER BY 1, 2, 3, 4::text;

-- the objects no es_* role may use at all (only the owner)
SELECT o.kind, o.name
  FROM pa_objects AS o
 GROUP BY o.kind, o.oid, o.name
HAVING NOT bool_or(pa_privileges(o.kind, o.oid, o.priv, 'regress_pa_admin')
				   OR pa_privileges(o.kind, o.oid, o.priv, 'regress_pa_consumer')
				   OR pa_privileges(o.kind, o.oid, o.priv, 'regress_pa_eraser'))
 ORDER BY 1, 2;

-- What the privileges actually let each role do: every routine of schema
-- es called (with NULL arguments, then rolled back) and every relation
-- read, as each role.  A call is refused exactly when the role lacks the
-- privilege: refused with 42501 "permission denied", anything else means
-- the call got in.
CREATE FUNCTION pa_attempt(role name, sql text) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
	st	text;
	msg	text;
BEGIN
	BEGIN
		EXECUTE format('SET LOCAL ROLE %I', role);
		EXECUTE sql;
		RAISE SQLSTATE 'PA000';		-- roll back what the call did
	EXCEPTION WHEN OTHERS THEN
		GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE, msg = MESSAGE_TEXT;
	END;
	RESET ROLE;
	RETURN CASE WHEN st = '42501' AND msg LIKE 'permission denied for %' THEN 'refused' ELSE 'in' END;
END
$$;
CREATE TEMP TABLE pa_calls AS
SELECT o.kind, o.name, r.role,
	   pa_privileges(o.kind, o.oid, o.priv, r.role)
	   OR (o.kind = 'table' AND has_any_column_privilege(r.role, o.oid, 'SELECT')) AS allowed,
	   pa_attempt(r.role,
		   CASE WHEN o.kind = 'routine' AND p.prokind = 'p' THEN 'CALL ' ELSE 'SELECT ' END
		   || CASE WHEN o.kind = 'routine'
				   THEN format('%I.%I(%s)', 'es', p.proname,
							   (SELECT string_agg('NULL::' || format_type(t, NULL), ', ' ORDER BY i)
								  FROM unnest(p.proargtypes::oid[]) WITH ORDINALITY AS a(t, i)))
				   ELSE format('1 FROM %s LIMIT 0', o.oid::regclass) END) AS outcome
  FROM pa_objects AS o
  LEFT JOIN pg_proc AS p ON o.kind = 'routine' AND p.oid = o.oid
 CROSS JOIN unnest(ARRAY['regress_pa_nobody', 'regress_pa_reader', 'regress_pa_writer',
						 'regress_pa_consumer', 'regress_pa_admin', 'regress_pa_eraser']::name[]) AS r(role)
 WHERE (o.kind = 'routine' AND NOT 'internal'::regtype = ANY (p.proargtypes::oid[]))
	OR (o.kind IN ('table', 'view', 'sequence') AND o.priv = 'SELECT');
SELECT count(*) > 100 AS attempts_made,
	   count(*) FILTER (WHERE outcome = 'in') > 0 AS some_got_in,
	   count(*) FILTER (WHERE outcome = 'refused') > 0 AS some_refused
  FROM pa_calls;
-- every attempt agrees with the privilege (no rows)
SELECT kind, name, role, allowed, outcome FROM pa_calls
 WHERE allowed <> (outcome = 'in') ORDER BY 1, 2, 3;
-- routines that take "internal" cannot be called from SQL at all
SELECT p.oid::regprocedure AS not_callable_from_sql FROM pg_proc AS p
 WHERE p.pronamespace = 'es'::regnamespace AND 'internal'::regtype = ANY (p.proargtypes::oid[])
 ORDER BY p.oid::regprocedure::text;

--
-- Row level security on es.events (a tenant in the metadata) is honoured
-- by every read path
--
-- the outbox copies routed events: route this category
SELECT es.es_outbox_route('rls');
SELECT count(*) FROM (
	SELECT es.es_append('rls-' || t || '-1', NULL,
		jsonb_build_array(
			jsonb_build_object('type', 'Opened', 'data', jsonb_build_object('n', 1),
							   'metadata', jsonb_build_object('tenant', t, 'correlation_id', 'rls-corr',
															  'causation_id', 'rls-cause')),
			jsonb_build_object('type', 'Paid', 'data', jsonb_build_object('n', 2),
							   'metadata', jsonb_build_object('tenant', t, 'correlation_id', 'rls-corr'))))
	  FROM unnest(ARRAY['a', 'b']) AS t) AS x;
-- one stream with events of both tenants
SELECT (es.es_append('rls-mix-1', NULL,
	'[{"type": "Opened", "data": {"n": 1}, "metadata": {"tenant": "a", "correlation_id": "rls-corr"}},
	  {"type": "Opened", "data": {"n": 2}, "metadata": {"tenant": "b", "correlation_id": "rls-corr"}},
	  {"type": "Paid", "data": {"n": 3}, "metadata": {"tenant": "a", "causation_id": "rls-cause"}},
	  {"type": "Paid", "data": {"n": 4}, "metadata": {"tenant": "b"}}]')).version;

CREATE FUNCTION pa_count(state jsonb, e jsonb) RETURNS jsonb LANGUAGE sql AS $$
	SELECT jsonb_build_object('n', (state->>'n')::int + 1,
							  'tenants', COALESCE(state->'tenants', '[]') || (e->'metadata'->'tenant'))
$$;
GRANT EXECUTE ON FUNCTION pa_count(jsonb, jsonb) TO es_reader;
-- a snapshot stored by a role that sees everything must not leak into the
-- folds of a role that sees less
SELECT es.es_snapshot_save('rls-mix-1', 'pa_count(jsonb,jsonb)', '{"n": 0}');

ALTER TABLE es.events ENABLE ROW LEVEL SECURITY;
CREATE POLICY regress_pa_tenant ON es.events FOR SELECT TO regress_pa_reader, regress_pa_writer
	USING (metadata->>'tenant' = current_setting('regress.tenant', true));
CREATE POLICY regress_pa_tenant_insert ON es.events FOR INSERT TO regress_pa_writer
	WITH CHECK (metadata->>'tenant' = current_setting('regress.tenant', true));
SET regress.tenant = 'a';
SET ROLE regress_pa_reader;
-- es_read_stream: the other tenant's stream is empty, the mixed one is filtered
SELECT count(*) AS other_tenant FROM es.es_read_stream('rls-b-1');
SELECT version, metadata->>'tenant' AS tenant FROM es.es_read_stream('rls-mix-1');
SELECT version, metadata->>'tenant' AS tenant FROM es.es_read_stream('rls-mix-1', direction => 'backward');
-- es_read_all, plain and with each filter
SELECT stream_id, version FROM es.es_read_all(NULL, 1000, 'rls') ORDER BY log_cursor;
-- es_read_log (a distributed store's global log; here the one node log)
SELECT stream_id, version FROM es.es_read_log(NULL, 1000, 'rls');
SELECT stream_id, version FROM es.es_read_all(NULL, 1000, event_types => ARRAY['Paid'])
 WHERE stream_id LIKE 'rls-%' ORDER BY log_cursor;
SELECT count(*) AS all_rows_visible FROM es.es_read_all(NULL, 100000)
 WHERE stream_id LIKE 'rls-%' AND version IS NOT NULL;
-- es_cursor_lag (what es.subscriptions shows) counts only what the reader sees
SELECT events_behind AS visible_after_the_first, events_held_back
  FROM es.es_cursor_lag((SELECT r.log_cursor FROM es.es_read_all(NULL, 1, 'rls') AS r));
-- correlation and causation lookups
SELECT stream_id, version FROM es.es_events_by_correlation('rls-corr');
SELECT stream_id, version FROM es.es_events_by_causation('rls-cause');
-- folds: es_fold, es_fold_state (no snapshot used under RLS), es_fold_agg
SELECT es.es_fold('rls-mix-1', 'pa_count(jsonb,jsonb)', '{"n": 0}');
SELECT state, version, snapshot_version, events_applied
  FROM es.es_fold_state('rls-mix-1', 'pa_count(jsonb,jsonb)', '{"n": 0}');
SELECT es.es_fold('rls-b-1', 'pa_count(jsonb,jsonb)', '{"n": 0}');
SELECT e.stream_id, es.es_fold_agg('pa_count(jsonb,jsonb)', '{"n": 0}', e ORDER BY e.version)
  FROM es.events AS e WHERE e.stream_id LIKE 'rls-%' GROUP BY 1 ORDER BY 1;
-- the table itself
SELECT count(*) FROM es.events WHERE stream_id LIKE 'rls-%';
-- not covered by the policy on es.events (documented): es.streams, hence
-- es_stream_version, shows every stream and its version
SELECT es.es_stream_version('rls-b-1') AS other_tenant_version;
-- nor the outbox, which holds a copy of every routed event for the consumers
SELECT count(*) AS outbox_rows_of_both_tenants FROM es.outbox WHERE aggregatetype = 'rls';
RESET ROLE;

-- a writer under RLS: appends of its tenant go in, of another are refused;
-- es_snapshot_save refuses (0A000): the state depends on what it can see
SET ROLE regress_pa_writer;
SELECT version FROM es.es_append('rls-a-1', NULL, '[{"type": "Paid", "data": {"n": 3}, "metadata": {"tenant": "a"}}]');
SELECT public.try($$SELECT es.es_append('rls-a-1', NULL, '[{"type": "Paid", "data": {}, "metadata": {"tenant": "b"}}]')$$);
SELECT public.try($$SELECT es.es_snapshot_save('rls-mix-1', 'pa_count(jsonb,jsonb)', '{"n": 0}')$$);
SELECT count(*) FROM es.es_read_stream('rls-a-1');
RESET ROLE;
RESET regress.tenant;

-- with no tenant set, the reader sees nothing
SET ROLE regress_pa_reader;
SELECT count(*) AS no_tenant FROM es.es_read_all(NULL, 100000) WHERE stream_id LIKE 'rls-%';
SELECT es.es_fold('rls-mix-1', 'pa_count(jsonb,jsonb)', '{"n": 0}') AS no_tenant;
RESET ROLE;

DROP POLICY regress_pa_tenant ON es.events;
DROP POLICY regress_pa_tenant_insert ON es.events;
ALTER TABLE es.events DISABLE ROW LEVEL SECURITY;
SELECT es.es_snapshot_delete('rls-mix-1') AS snapshots_deleted;
SELECT es.es_outbox_unroute('rls');

DROP FUNCTION pa_count(jsonb, jsonb);
DROP TABLE pa_calls;
DROP FUNCTION pa_attempt(name, text);
DROP VIEW pa_objects;
DROP FUNCTION pa_privileges(text, oid, text, name);
DROP ROLE regress_pa_nobody, regress_pa_reader, regress_pa_writer, regress_pa_consumer, regress_pa_admin,
	regress_pa_eraser;
