
/*
 * ========================================================================
 * sql/install/10_roles.sql — roles
 * ========================================================================
 *
 * Roles are cluster-wide, so they may already exist (another database of
 * the cluster installed the extension first).  They are created NOLOGIN:
 * grant them to login roles.
 *
 *   es_reader    reads streams and the global log
 *   es_writer    es_reader + appends
 *   es_consumer  es_reader + consumes the outbox (claim, ack, nack, replay, cleanup)
 *   es_admin     es_writer + administration (horizon holders, projections,
 *                outbox routes and groups, upcasters, archive, retention)
 *   es_eraser    es_writer + es_erase_stream (the right to be forgotten): a
 *                separate privilege, not held by es_admin
 */
DO $roles$
BEGIN
	IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname OPERATOR(pg_catalog.=) 'es_reader') THEN
		CREATE ROLE es_reader NOLOGIN;
	END IF;
	IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname OPERATOR(pg_catalog.=) 'es_writer') THEN
		CREATE ROLE es_writer NOLOGIN;
	END IF;
	IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname OPERATOR(pg_catalog.=) 'es_admin') THEN
		CREATE ROLE es_admin NOLOGIN;
	END IF;
	IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname OPERATOR(pg_catalog.=) 'es_consumer') THEN
		CREATE ROLE es_consumer NOLOGIN;
	END IF;
	IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname OPERATOR(pg_catalog.=) 'es_eraser') THEN
		CREATE ROLE es_eraser NOLOGIN;
	END IF;
END
$roles$;
GRANT es_reader TO es_writer;
GRANT es_writer TO es_admin;
GRANT es_reader TO es_consumer;
-- the tombstone of an erasure is an append
GRANT es_writer TO es_eraser;
