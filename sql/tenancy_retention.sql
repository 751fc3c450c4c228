-- tenancy_retention: retention policies under tenant isolation.  A tenant's
-- administrator (es_admin, mapped to acme only) sets the retention of its own
-- category and streams, never another tenant's: a category policy belongs
-- to the tenant its category starts with, as a stream policy does.
CREATE ROLE regress_tr_a IN ROLE es_admin;
SELECT count(*) > 0 AS enabled FROM es.es_enable_tenancy();
INSERT INTO es.tenant_roles VALUES ('acme', 'regress_tr_a');
CREATE FUNCTION tr_err(sql text) RETURNS text
LANGUAGE plpgsql AS $$
BEGIN
	EXECUTE sql;
	RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
	RETURN SQLSTATE || ': ' || SQLERRM;
END
$$;
SET ROLE regress_tr_a;
SELECT tr_err($$SELECT es.es_set_retention('acme/order', NULL, NULL, 5)$$) AS own_category;
SELECT tr_err($$SELECT es.es_set_retention(NULL, 'acme/order-1', NULL, 5)$$) AS own_stream;
SELECT tr_err($$SELECT es.es_set_retention('globex/order', NULL, NULL, 1)$$) AS other_category;
SELECT tr_err($$SELECT es.es_set_retention(NULL, 'globex/order-1', NULL, 1)$$) AS other_stream;
SELECT category, stream_id, max_count FROM es.retention_policies ORDER BY 1, 2;
RESET ROLE;
SELECT category, stream_id, max_count FROM es.retention_policies ORDER BY 1, 2;
-- clean up
SELECT es.es_set_retention('acme/order', NULL, NULL, NULL) IS NULL AS removed_category;
SELECT es.es_set_retention(NULL, 'acme/order-1', NULL, NULL) IS NULL AS removed_stream;
SELECT count(*) > 0 AS disabled FROM es.es_disable_tenancy();
DELETE FROM es.tenant_roles;
DROP ROLE regress_tr_a;
