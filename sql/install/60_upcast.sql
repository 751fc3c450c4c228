
/*
 * ========================================================================
 * sql/install/60_upcast.sql — upcasters: old event shapes raised to the
 * newest one on every read
 * ========================================================================
 *
 * Privileges: readers read the upcaster registry and upcast; only admins
 * change the registry, since it changes what every reader sees.
 */
/*
 * Upcasters: (event_type, from_version) -> the function that turns the data
 * of that version into the next one.  fn is the function's schema-qualified
 * signature as text (read it with fn::regprocedure), not a regprocedure:
 * pg_upgrade refuses reg* columns other than regclass/regrole/regtype, and
 * OIDs do not survive dump/restore.  Readers cache the registry per backend;
 * the statement trigger below tells every backend to reload it at commit.
 * registered_by is the role an upcaster runs as (registered code runs as its
 * owner, never as the reader: src/upcast.c); regrole is dumped by name.
 */
CREATE TABLE @extschema@.upcasters (
	event_type		text NOT NULL
		CHECK (pg_catalog.octet_length(event_type) OPERATOR(pg_catalog.>=) 1
			   AND pg_catalog.octet_length(event_type) OPERATOR(pg_catalog.<=) 1024),
	from_version	integer NOT NULL CHECK (from_version OPERATOR(pg_catalog.>=) 1),
	fn				text NOT NULL,
	created_at		timestamptz NOT NULL DEFAULT pg_catalog.now(),
	registered_by	regrole NOT NULL,	/* set by es_upcasters_stamp, below */
	CONSTRAINT upcasters_pkey PRIMARY KEY (event_type, from_version)
);
COMMENT ON TABLE @extschema@.upcasters IS
	'es_ext upcasters: the function that raises the data of event_type from schema version from_version to the next, applied on every read';
COMMENT ON COLUMN @extschema@.upcasters.fn IS
	'schema-qualified signature of the upcaster function (cast it with ::regprocedure)';
COMMENT ON COLUMN @extschema@.upcasters.registered_by IS
	'the role that registered the upcaster (wrote the row): the upcaster runs as this role';
SELECT pg_catalog.pg_extension_config_dump('@extschema@.upcasters', '');
REVOKE ALL ON TABLE @extschema@.upcasters FROM PUBLIC;
GRANT SELECT ON @extschema@.upcasters TO es_reader;
GRANT INSERT, UPDATE, DELETE, TRUNCATE ON @extschema@.upcasters TO es_admin;

CREATE FUNCTION @extschema@.es_upcasters_changed()
RETURNS trigger
AS 'MODULE_PATHNAME', 'es_upcasters_changed'
LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION @extschema@.es_upcasters_changed() IS
	'trigger: makes every backend reload its cached upcaster registry after a change to es.upcasters';
REVOKE ALL ON FUNCTION @extschema@.es_upcasters_changed() FROM PUBLIC;
CREATE TRIGGER es_upcasters_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON @extschema@.upcasters
	FOR EACH STATEMENT EXECUTE FUNCTION @extschema@.es_upcasters_changed();

/*
 * registered_by is the role that wrote the row, whatever the statement says:
 * a role may name only itself or a role it is a member of (a superuser, any
 * role: a restore writes the dumped rows back so).  Upcasters run as it.
 */
CREATE FUNCTION @extschema@.es_upcasters_stamp()
RETURNS trigger
AS 'MODULE_PATHNAME', 'es_upcasters_stamp'
LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION @extschema@.es_upcasters_stamp() IS
	'trigger: records the role that writes a row of es.upcasters as its registered_by, the role the upcaster runs as';
REVOKE ALL ON FUNCTION @extschema@.es_upcasters_stamp() FROM PUBLIC;
CREATE TRIGGER es_upcasters_stamp BEFORE INSERT OR UPDATE ON @extschema@.upcasters
	FOR EACH ROW EXECUTE FUNCTION @extschema@.es_upcasters_stamp();

CREATE FUNCTION @extschema@.es_register_upcaster(event_type text, from_version integer, fn regprocedure)
RETURNS void
AS 'MODULE_PATHNAME', 'es_register_upcaster'
LANGUAGE C VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE;
COMMENT ON FUNCTION @extschema@.es_register_upcaster(text, integer, regprocedure) IS
	'registers (or replaces) the upcaster of an event type from a schema version to the next; fn is (data jsonb) or (data jsonb, event jsonb) returning jsonb';
REVOKE ALL ON FUNCTION @extschema@.es_register_upcaster(text, integer, regprocedure) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@.es_register_upcaster(text, integer, regprocedure) TO es_admin;

CREATE FUNCTION @extschema@.es_unregister_upcaster(event_type text, from_version integer)
RETURNS boolean
AS 'MODULE_PATHNAME', 'es_unregister_upcaster'
LANGUAGE C VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE;
COMMENT ON FUNCTION @extschema@.es_unregister_upcaster(text, integer) IS
	'removes an upcaster; false when none was registered';
REVOKE ALL ON FUNCTION @extschema@.es_unregister_upcaster(text, integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@.es_unregister_upcaster(text, integer) TO es_admin;

CREATE FUNCTION @extschema@.es_upcast(event @extschema@.events)
RETURNS @extschema@.events
AS 'MODULE_PATHNAME', 'es_upcast'
LANGUAGE C STABLE STRICT PARALLEL RESTRICTED;
COMMENT ON FUNCTION @extschema@.es_upcast(@extschema@.events) IS
	'an event row with its data upcast to the newest registered schema version (for rows read from es.events directly)';
REVOKE ALL ON FUNCTION @extschema@.es_upcast(@extschema@.events) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@.es_upcast(@extschema@.events) TO es_reader;
