/*
 * ========================================================================
 * sql/install/22_import.sql — bulk import: the shape of an import source,
 * the result type and es_import
 * ========================================================================
 *
 * A migrating user loads the events to import into a table of their own
 * (CREATE TEMP TABLE staging (LIKE es.import_event), then COPY) and calls
 * es_import('staging') once.  es_import runs as the caller (no SECURITY
 * DEFINER) and writes es.events and es.streams past their guard triggers,
 * like es_append.  It is granted to es_admin only: unlike es_append, it
 * writes recorded_at as given (history can be back-dated) and has no batch
 * limit.
 */
CREATE TYPE @extschema@.import_event AS (
	stream_id		text,
	version			bigint,
	event_id		uuid,
	event_type		text,
	schema_version	integer,
	data			jsonb,
	metadata		jsonb,
	recorded_at		timestamptz,
	tags			text[]
);
COMMENT ON TYPE @extschema@.import_event IS
	'the columns of an es_import source: CREATE TEMP TABLE staging (LIKE es.import_event); version, event_id, schema_version, recorded_at and tags may be NULL (next version, generated id, 1, now, no tags); a source may leave out the tags column';

CREATE TYPE @extschema@.import_result AS (
	streams			bigint,
	new_streams		bigint,
	events			bigint,
	first_position	bigint,
	last_position	bigint,
	token			@extschema@.log_cursor
);
COMMENT ON TYPE @extschema@.import_result IS
	'result of es_import: streams imported into (of which new), events imported, the global positions of the first and last one, and the log cursor of the last one (for es_wait_for)';

REVOKE ALL ON TYPE @extschema@.import_event, @extschema@.import_result FROM PUBLIC;
GRANT USAGE ON TYPE @extschema@.import_event, @extschema@.import_result TO es_admin;

CREATE FUNCTION @extschema@.es_import(source regclass, outbox boolean DEFAULT true)
RETURNS @extschema@.import_result
AS 'MODULE_PATHNAME', 'es_import'
LANGUAGE C VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE;
COMMENT ON FUNCTION @extschema@.es_import(regclass, boolean) IS
	'imports every row of a table shaped like es.import_event into the log, in one transaction and in the table''s row order; outbox: route the events to the outbox when routes exist';
REVOKE ALL ON FUNCTION @extschema@.es_import(regclass, boolean) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@.es_import(regclass, boolean) TO es_admin;
