-- search_path: a hostile search_path changes nothing
--
-- A schema earlier in the path defines "=" for text that is always true,
-- "+" for bigint that always returns 0, ">=" for bigint that is always true,
-- and look-alike tables and functions.  This is a fresh session, so the
-- extension's statements are first prepared under this path.

CREATE SCHEMA evil;
CREATE FUNCTION evil.text_eq(text, text) RETURNS boolean LANGUAGE sql IMMUTABLE AS 'SELECT true';
CREATE OPERATOR evil.= (LEFTARG = text, RIGHTARG = text, PROCEDURE = evil.text_eq);
CREATE FUNCTION evil.int8_plus(bigint, bigint) RETURNS bigint LANGUAGE sql IMMUTABLE AS 'SELECT 0::bigint';
CREATE OPERATOR evil.+ (LEFTARG = bigint, RIGHTARG = bigint, PROCEDURE = evil.int8_plus);
CREATE FUNCTION evil.int8_ge(bigint, bigint) RETURNS boolean LANGUAGE sql IMMUTABLE AS 'SELECT true';
CREATE OPERATOR evil.>= (LEFTARG = bigint, RIGHTARG = bigint, PROCEDURE = evil.int8_ge);
CREATE TABLE evil.events (LIKE es.events);
CREATE TABLE evil.streams (LIKE es.streams);
CREATE FUNCTION evil.unnest(anyarray) RETURNS SETOF anyelement LANGUAGE sql AS 'SELECT NULL';
CREATE FUNCTION evil.clock_timestamp() RETURNS timestamptz LANGUAGE sql AS $$SELECT '2000-01-01'::timestamptz$$;
CREATE TEMP TABLE events (LIKE es.events);

SET search_path = evil, pg_temp, public, es, pg_catalog;

-- the hostile operator is really in effect for unqualified SQL
SELECT 'a'::text = 'b'::text AS evil_eq, 1::bigint + 1::bigint AS evil_plus;

SELECT version FROM es_append('sp-1', 0, '[{"type": "A", "data": 1}, {"type": "B", "data": 2}]');
SELECT version FROM es_append('sp-1', 2, '[{"type": "C", "data": 3}]');
SELECT version FROM es_append('sp-2', NULL, '[{"type": "A", "data": 1}]');
SELECT try($$SELECT es_append('sp-1', 2, '[{"type": "D", "data": 4}]')$$);
SELECT es_stream_version('sp-1'), es_stream_version('sp-2'), es_stream_version('sp-none');
SELECT stream_id, version, event_type FROM es_read_stream('sp-1', 2);
SELECT stream_id, version, event_type FROM es_read_all(NULL, 100, 'sp');
SELECT version FROM es_append('sp-3', 0,
  '[{"type": "A", "data": 1, "id": "44444444-4444-4444-8444-444444444444"}]');
SELECT version FROM es_append('sp-3', 0,
  '[{"type": "A", "data": 1, "id": "44444444-4444-4444-8444-444444444444"}]');

-- the look-alike tables got nothing
SELECT (SELECT count(*) FROM evil.events) AS evil_events, (SELECT count(*) FROM evil.streams) AS evil_streams,
       (SELECT count(*) FROM pg_temp.events) AS temp_events;

RESET search_path;
SELECT stream_id, version, event_type, recorded_at > '2001-01-01' AS real_time
  FROM es.events WHERE stream_id LIKE 'sp-%' ORDER BY 1, 2;
SELECT stream_id, version FROM es.streams WHERE stream_id LIKE 'sp-%' ORDER BY 1;
DROP SCHEMA evil CASCADE;
