-- bench/plpgsql_setup.sql — optional third contender (BENCH_PLPGSQL=1): the
-- same two statements as es_append (advance the streams row, insert the
-- events), written as a PL/pgSQL function over copies of es.streams and
-- es.events (same columns, indexes, defaults and checks; no guard triggers).
-- It tells apart the cost of the design (two statements, a row lock) from the
-- cost of the C implementation (SPI, guard triggers, es.config join, JSON
-- parsing).  Copies the pre-populated data, so run it after setup.sql.
\set ON_ERROR_STOP on

CREATE SCHEMA plpg;
CREATE TABLE plpg.streams (LIKE es.streams INCLUDING ALL) WITH (fillfactor = 50);
CREATE TABLE plpg.events (LIKE es.events INCLUDING ALL);

INSERT INTO plpg.streams (stream_id, version, created_at, updated_at, log_tx_id, metadata)
SELECT stream_id, version, created_at, updated_at, log_tx_id, metadata FROM es.streams;
INSERT INTO plpg.events (global_position, stream_id, version, event_id, event_type,
						 schema_version, data, metadata, recorded_at, era, tx_id)
OVERRIDING SYSTEM VALUE
SELECT global_position, stream_id, version, event_id, event_type,
	   schema_version, data, metadata, recorded_at, era, tx_id
  FROM es.events;
SELECT setval(pg_get_serial_sequence('plpg.events', 'global_position'),
			  (SELECT max(global_position) FROM plpg.events));

-- append(stream, expected_version, events): expected NULL = any, N = exact.
-- Existing streams only (enough for the benchmark).  Mirrors the statements
-- of src/append.c (update_any_plan / update_exact_plan, then insert_*_plan):
-- the stream row's log_tx_id is raised to this transaction's id and orders
-- the events in the global log.
CREATE FUNCTION plpg.append(p_stream text, p_expected bigint, p_events jsonb)
RETURNS es.append_result
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	n	integer := jsonb_array_length(p_events);
	v	bigint;
	tx	xid8;
	pos	bigint[];
BEGIN
	UPDATE plpg.streams AS s
	   SET version = s.version + n, updated_at = clock_timestamp(),
		   log_tx_id = GREATEST(s.log_tx_id, pg_current_xact_id())
	 WHERE s.stream_id = p_stream
	   AND (p_expected IS NULL OR s.version = p_expected)
	RETURNING s.version, s.log_tx_id INTO v, tx;
	IF NOT FOUND THEN
		RAISE EXCEPTION 'wrong expected version for stream "%"', p_stream
			USING ERRCODE = 'serialization_failure';
	END IF;

	WITH ins AS (
		INSERT INTO plpg.events AS e (stream_id, version, event_id, event_type, data,
									  metadata, recorded_at, era, tx_id)
		SELECT p_stream, v - n + x.o, gen_random_uuid(), x.e ->> 'type', x.e -> 'data',
			   x.e -> 'metadata', clock_timestamp(), 0, tx
		  FROM jsonb_array_elements(p_events) WITH ORDINALITY AS x(e, o)
		RETURNING e.global_position
	)
	SELECT array_agg(ins.global_position) INTO pos FROM ins;
	RETURN ROW(v, pos, ROW(0, tx, pos[array_upper(pos, 1)])::es.log_cursor)::es.append_result;
END
$$;

VACUUM ANALYZE plpg.streams, plpg.events;
CHECKPOINT;
