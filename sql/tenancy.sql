-- tenancy: tenant isolation (es_enable_tenancy).  Two tenants, acme (role
-- regress_ten_a) and globex (regress_ten_b), attack each other on every
-- path: appends with each expected version, conflicts, event ids, stream
-- versions, reads, folds, snapshots, conditions, the outbox; an attack on a
-- stream that exists must fail exactly as one on a stream that does not.
CREATE ROLE regress_ten_a IN ROLE es_writer, es_consumer;
CREATE ROLE regress_ten_b IN ROLE es_writer, es_consumer;
CREATE ROLE regress_ten_ops IN ROLE es_admin;

-- ten_err(sql): "ok" or every field of the error a client sees
CREATE FUNCTION ten_err(sql text) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
	st text; msg text; det text; hnt text; con text; tab text;
BEGIN
	EXECUTE sql;
	RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
	GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE, msg = MESSAGE_TEXT, det = PG_EXCEPTION_DETAIL,
		hnt = PG_EXCEPTION_HINT, con = CONSTRAINT_NAME, tab = TABLE_NAME;
	RETURN concat_ws(' | ', st, msg, nullif(det, ''), nullif(hnt, ''), nullif(con, ''), nullif(tab, ''));
END
$$;
-- the same attack on an existing and on a missing stream of another tenant:
-- the error, masked of the stream id, must be the same
CREATE FUNCTION ten_same(tmpl text) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
	e1 text := ten_err(format(tmpl, 'acme/order-1'));
	e2 text := ten_err(format(tmpl, 'acme/order-404'));
BEGIN
	IF replace(e1, 'acme/order-1', 'S') IS DISTINCT FROM replace(e2, 'acme/order-404', 'S') THEN
		RETURN 'LEAK: ' || e1 || ' <> ' || e2;
	END IF;
	RETURN e1;
END
$$;
CREATE FUNCTION ten_count(state jsonb, event jsonb) RETURNS jsonb
LANGUAGE sql IMMUTABLE AS $$ SELECT jsonb_build_object('n', coalesce((state ->> 'n')::int, 0) + 1) $$;
GRANT EXECUTE ON FUNCTION ten_count(jsonb, jsonb) TO PUBLIC;

-- the setup's error paths: only the owner of the tables enables tenancy
SET ROLE regress_ten_ops;
SELECT ten_err($$SELECT es.es_enable_tenancy()$$);
RESET ROLE;
GRANT EXECUTE ON FUNCTION es.es_enable_tenancy(boolean), es.es_disable_tenancy() TO regress_ten_ops;
SET ROLE regress_ten_ops;
SELECT ten_err($$SELECT es.es_enable_tenancy()$$);
SELECT ten_err($$SELECT es.es_disable_tenancy()$$);
RESET ROLE;
REVOKE EXECUTE ON FUNCTION es.es_enable_tenancy(boolean), es.es_disable_tenancy() FROM regress_ten_ops;
-- STRICT: a NULL force does nothing
SELECT count(*) AS enabled_with_null FROM es.es_enable_tenancy(NULL);
-- bad mappings
SELECT ten_err($$INSERT INTO es.tenant_roles VALUES ('acme/x', 'regress_ten_a')$$);
SELECT ten_err($$INSERT INTO es.tenant_roles VALUES ('', 'regress_ten_a')$$);
SELECT ten_err($$INSERT INTO es.tenant_roles VALUES ('acme', 'regress_ten_nobody')$$);

-- the mapping, by es_admin; ops acts for every tenant
SET ROLE regress_ten_ops;
INSERT INTO es.tenant_roles VALUES ('acme', 'regress_ten_a'), ('globex', 'regress_ten_b'),
	('*', 'regress_ten_ops');
RESET ROLE;

-- acme's history, written before tenancy (by the owner: no policies apply)
SELECT version FROM es.es_append('acme/order-1', 0,
	'[{"id": "aaaaaaaa-0000-4000-8000-000000000001", "type": "Placed", "data": {"secret": 1}, "tags": ["sku:42"]},
	  {"id": "aaaaaaaa-0000-4000-8000-000000000002", "type": "Paid", "data": {"secret": 2}}]');
SELECT es.es_outbox_route('acme/order') AS route_a, es.es_outbox_route('globex/order') AS route_b;
SELECT es.es_outbox_create_group('regress_ten_g') > 0 AS group_created;
SELECT es.es_snapshot_save('acme/order-1', 'ten_count(jsonb,jsonb)', '{}');

-- enable: every table holding stream data, and the mapping
SELECT * FROM es.es_enable_tenancy() AS t ORDER BY t::text;
SELECT c.relname, p.polname, p.polpermissive FROM pg_policy AS p JOIN pg_class AS c ON c.oid = p.polrelid
 WHERE c.relnamespace = 'es'::regnamespace ORDER BY 1, 2;

-- acme works as before in its own streams
SET ROLE regress_ten_a;
SELECT es.es_current_tenants();
SELECT version FROM es.es_append('acme/order-1', 2, '[{"type": "Shipped", "data": {}}]');
SELECT version FROM es.es_append('acme/order-2', NULL, '[{"type": "Placed", "data": {}, "tags": ["sku:42"]}]');
SELECT ten_err($$SELECT es.es_append('acme/order-1', 1, '[{"type": "X", "data": {}}]')$$);
SELECT es.es_stream_version('acme/order-1');
SELECT count(*) AS acme_claims FROM es.es_outbox_claim('regress_ten_g', 100, '1 minute');

-- globex appends its own, and attacks acme
SET ROLE regress_ten_b;
SELECT es.es_current_tenants();
SELECT * FROM es.tenant_roles ORDER BY 1;
SELECT version FROM es.es_append('globex/order-1', 0, '[{"type": "Placed", "data": {}, "tags": ["sku:42"]}]');
SELECT store_mark();
-- appends, each expected version: refused as the policy refuses, the same for
-- a stream that exists and one that does not
SELECT ten_same($$SELECT es.es_append(%L, NULL, '[{"type": "Evil", "data": {}}]')$$);
SELECT ten_same($$SELECT es.es_append(%L, 0, '[{"type": "Evil", "data": {}}]')$$);
SELECT ten_same($$SELECT es.es_append(%L, -1, '[{"type": "Evil", "data": {}}]')$$);
SELECT ten_same($$SELECT es.es_append(%L, 3, '[{"type": "Evil", "data": {}}]')$$);
SELECT ten_same($$SELECT es.es_append(%L, 7, '[{"type": "Evil", "data": {}}]')$$);
-- event ids: a replay of acme's batch, a partial overlap, one stored id
SELECT ten_same($$SELECT es.es_append(%L, 0,
	'[{"id": "aaaaaaaa-0000-4000-8000-000000000001", "type": "Placed", "data": {"secret": 1}, "tags": ["sku:42"]},
	  {"id": "aaaaaaaa-0000-4000-8000-000000000002", "type": "Paid", "data": {"secret": 2}}]')$$);
SELECT ten_same($$SELECT es.es_append(%L, NULL,
	'[{"id": "aaaaaaaa-0000-4000-8000-000000000001", "type": "Placed", "data": {"secret": 1}, "tags": ["sku:42"]},
	  {"id": "bbbbbbbb-0000-4000-8000-000000000009", "type": "Paid", "data": {}}]')$$);
SELECT ten_same($$SELECT es.es_append(%L, NULL,
	'[{"id": "aaaaaaaa-0000-4000-8000-000000000002", "type": "Other", "data": {}}]')$$);
-- a conditional append into acme's stream
SELECT ten_same($$SELECT es.es_append(%L, NULL, '[{"type": "Evil", "data": {}}]',
	'{"items": [{"tags": ["sku:42"]}]}')$$);
-- a stream id without a tenant prefix belongs to no tenant of globex
SELECT ten_err($$SELECT es.es_append('order-1', NULL, '[{"type": "Evil", "data": {}}]')$$);
SELECT * FROM store_counts();
-- versions and rows: another tenant's stream is as missing
SELECT es.es_stream_version('acme/order-1') AS v_existing, es.es_stream_version('acme/order-404') AS v_missing;
SELECT stream_id, version FROM es.streams ORDER BY 1;
SELECT stream_id, version FROM es.events ORDER BY global_position;
SELECT count(*) AS read_stream FROM es.es_read_stream('acme/order-1');
SELECT stream_id, version FROM es.es_read_all(NULL, 100) ORDER BY global_position;
SELECT stream_id, version FROM es.es_read_all(NULL, 100, 'acme/order');
SELECT stream_id, version FROM es.es_read_query('{"items": [{"tags": ["sku:42"]}]}') ORDER BY global_position;
SELECT es.es_fold('acme/order-1', 'ten_count(jsonb,jsonb)', '{}') AS fold_other;
SELECT es.es_fold('globex/order-1', 'ten_count(jsonb,jsonb)', '{}') AS fold_own;
-- snapshots: acme's is invisible; saving one under row level security is refused
SELECT count(*) AS snapshots FROM es.snapshots;
SELECT ten_err($$SELECT es.es_snapshot_save('acme/order-1', 'ten_count(jsonb,jsonb)', '{}')$$);
SELECT ten_err($$SELECT es.es_snapshot_save('globex/order-1', 'ten_count(jsonb,jsonb)', '{}')$$);
-- a condition on a tag that acme's events carry does not fail because of them
SELECT version FROM es.es_append('globex/order-2', 0, '[{"type": "Placed", "data": {}, "tags": ["sku:42"]}]',
	'{"items": [{"tags": ["sku:42"], "types": ["Placed"]}]}',
	(SELECT es.max(log_cursor) FROM es.es_read_query('{"items": [{"tags": ["sku:42"]}]}')));
-- the outbox: globex's consumer claims only globex's messages in the shared group
SELECT count(*) AS outbox_rows FROM es.outbox;
SELECT aggregateid FROM es.outbox ORDER BY position;
SELECT count(*) AS deliveries FROM es.outbox_deliveries;
SELECT stream_id, version FROM es.es_outbox_claim('regress_ten_g', 100, '1 minute') ORDER BY position;
-- acme's messages: ack and nack with their positions do nothing
RESET ROLE;
CREATE TEMP TABLE acme_msgs AS
	SELECT d.position, d.lease FROM es.outbox_deliveries AS d JOIN es.outbox AS o USING (position)
	 WHERE o.aggregateid LIKE 'acme/%';
GRANT SELECT ON acme_msgs TO PUBLIC;
SELECT count(*) AS acme_leased FROM acme_msgs WHERE lease IS NOT NULL;
SET ROLE regress_ten_b;
SELECT es.es_outbox_ack('regress_ten_g', lease, ARRAY[position]) AS acked
  FROM acme_msgs WHERE lease IS NOT NULL ORDER BY position;
SELECT es.es_outbox_nack('regress_ten_g', lease, ARRAY[position], 'x') AS nacked
  FROM acme_msgs WHERE lease IS NOT NULL ORDER BY position;
RESET ROLE;
SELECT count(*) AS acme_still_leased FROM es.outbox_deliveries WHERE position IN (SELECT position FROM acme_msgs) AND lease IS NOT NULL;

-- acme sees its own again, and nothing of globex
SET ROLE regress_ten_a;
SELECT stream_id, version FROM es.streams ORDER BY 1;
SELECT es.es_stream_version('globex/order-1');
SELECT ten_same($$SELECT es.es_append(replace(%L, 'acme', 'globex'), 1, '[{"type": "Evil", "data": {}}]')$$);
SELECT count(*) AS own_snapshots FROM es.snapshots;

-- ops acts for every tenant
SET ROLE regress_ten_ops;
SELECT count(DISTINCT split_part(stream_id, '/', 1)) AS tenants_seen FROM es.streams
 WHERE split_part(stream_id, '/', 1) IN ('acme', 'globex');
RESET ROLE;

-- force: FORCE ROW LEVEL SECURITY on the same tables (a superuser still
-- bypasses row level security)
SELECT count(*) AS forced FROM es.es_enable_tenancy(true);
SELECT count(*) AS forced_tables FROM pg_class WHERE relnamespace = 'es'::regnamespace AND relforcerowsecurity;

-- disable: the policies go, row level security with them
SELECT * FROM es.es_disable_tenancy() AS t ORDER BY t::text;
SELECT count(*) AS policies_left FROM pg_policy AS p JOIN pg_class AS c ON c.oid = p.polrelid
 WHERE c.relnamespace = 'es'::regnamespace;
SELECT count(*) AS rls_left FROM pg_class WHERE relnamespace = 'es'::regnamespace AND (relrowsecurity OR relforcerowsecurity);
SET ROLE regress_ten_b;
SELECT count(DISTINCT split_part(stream_id, '/', 1)) > 1 AS sees_all FROM es.streams;
RESET ROLE;

-- clean up (the events stay: the log is immutable)
SELECT es.es_outbox_drop_group('regress_ten_g');
SELECT es.es_outbox_unroute('acme/order'), es.es_outbox_unroute('globex/order');
DELETE FROM es.tenant_roles;
DROP ROLE regress_ten_a, regress_ten_b, regress_ten_ops;
