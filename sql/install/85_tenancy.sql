
/*
 * ========================================================================
 * sql/install/85_tenancy.sql — tenant isolation (issue 15)
 * ========================================================================
 *
 * A tenant owns the streams whose id starts with "<tenant>/" (the whole id
 * when it has no "/"), and is reached through roles: es.tenant_roles maps a
 * tenant to the roles that act for it, and a session acts for the tenants
 * of every row whose role its current role is a member of (pg_has_role
 * MEMBER); the tenant "*" stands for all of them (operators, the relay, the
 * projection roles).  Roles are the trust boundary: a setting would be
 * spoofable by any client that can run SET.
 *
 * es_enable_tenancy(), run by the owner of es_ext's tables, enables row
 * level security on every es_ext table that holds stream data (a column
 * stream_id or, in es.outbox, aggregateid; the outbox deliveries and dead
 * letters through their outbox position) and gives each a RESTRICTIVE
 * policy es_tenant plus a PERMISSIVE base policy es_tenant_base (true), so
 * a role sees and writes only its tenants' rows, whatever other permissive
 * policies say.  es_append checks the tenant of the stream first (src/
 * tenant.c), so an append into another tenant's stream is refused with the
 * policy's own error before any lookup could tell whether the stream exists.
 * The policies are user objects for es_user_objects (80_dump.sql): a dump
 * carries them.  es_disable_tenancy() removes them.
 *
 * The tenant rule is written twice, once as the policy expression
 * (tenant_expr below, inlined for speed: the scalar subquery over
 * es_current_tenants() is an init plan, evaluated once per statement and
 * table) and once in src/tenant.c; the two must agree.
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
