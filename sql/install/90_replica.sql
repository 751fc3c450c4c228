
/*
 * ========================================================================
 * sql/install/90_replica.sql — es_ext on a logical replication subscriber
 * ========================================================================
 *
 * A database that receives es.events and es.streams from another cluster
 * through a subscription: es_replica_projections makes the projection
 * triggers fire for the replicated events (src/replica.c).  es_read_all and
 * es_append refuse to run there.
 */
CREATE FUNCTION @extschema@.es_replica_projections(enable boolean DEFAULT true)
RETURNS SETOF name
AS 'MODULE_PATHNAME', 'es_replica_projections'
LANGUAGE C VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE ROWS 10
SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION @extschema@.es_replica_projections(boolean) IS
	'on a logical replication subscriber: makes the projection triggers on es.events fire for replicated events (ENABLE ALWAYS, after checking that they pin search_path) or not (false); returns the triggers changed';
REVOKE ALL ON FUNCTION @extschema@.es_replica_projections(boolean) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@.es_replica_projections(boolean) TO es_admin;
