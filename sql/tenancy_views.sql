-- tenancy_views: the views of es_ext under tenant isolation.  A view runs
-- its tables' row level security as the view's owner (the role that created
-- the extension, which bypasses it) unless it is security_invoker: then a
-- view over a protected table would show every tenant's rows to whoever may
-- select from it.  Two tenants, acme and globex; globex's message dies in a
-- consumer group, and acme's consumer looks at every view.
CREATE ROLE regress_tv_a IN ROLE es_writer, es_consumer;
CREATE ROLE regress_tv_b IN ROLE es_writer, es_consumer;
SELECT count(*) > 0 AS enabled FROM es.es_enable_tenancy();
INSERT INTO es.tenant_roles VALUES ('acme', 'regress_tv_a'), ('globex', 'regress_tv_b');
SELECT es.es_outbox_route('globex/pay') AS routed;
SELECT es.es_outbox_create_group('regress_tv_g', 1) > 0 AS group_created;

SET ROLE regress_tv_b;
SELECT version FROM es.es_append('globex/pay-1', 0, '[{"type": "Paid", "data": {"card": "4111 secret"}}]');
SELECT count(*) AS nacked FROM es.es_outbox_claim('regress_tv_g', 10, '1 min') AS c,
	LATERAL es.es_outbox_nack('regress_tv_g', c.lease, ARRAY[c.position], 'boom');
SELECT stream_id, data FROM es.outbox_dead_letters WHERE consumer_group = 'regress_tv_g';
RESET ROLE;

-- acme's consumer: no row of globex's in any view
SET ROLE regress_tv_a;
SELECT stream_id, data FROM es.outbox_dead_letters WHERE consumer_group = 'regress_tv_g';
SELECT consumer_group, undelivered, dead FROM es.outbox_status WHERE consumer_group = 'regress_tv_g';
RESET ROLE;
-- every view of es_ext reading a table with the tenancy policy is security_invoker,
-- but es.outbox_status: counts per group for operators and pg_monitor (which
-- has no privilege on the tables), listed in README as not isolated
SELECT v.relname,
	   coalesce('security_invoker=true' = ANY (v.reloptions), false) AS security_invoker
  FROM pg_class AS v
 WHERE v.relnamespace = 'es'::regnamespace AND v.relkind = 'v'
   AND EXISTS (SELECT FROM pg_depend AS d JOIN pg_rewrite AS r ON r.oid = d.objid
				 JOIN pg_policy AS p ON p.polrelid = d.refobjid AND p.polname = 'es_tenant'
				WHERE r.ev_class = v.oid AND d.classid = 'pg_rewrite'::regclass)
 ORDER BY 1;

-- clean up (the events stay: the log is immutable)
SELECT es.es_outbox_discard('regress_tv_g') >= 0 AS discarded;
SELECT es.es_outbox_drop_group('regress_tv_g');
SELECT es.es_outbox_unroute('globex/pay');
SELECT count(*) > 0 AS disabled FROM es.es_disable_tenancy();
DELETE FROM es.tenant_roles;
DROP ROLE regress_tv_a, regress_tv_b;
