-- bench/perf_setup.sql — schema and data of bench/perf_run (the issue-14
-- performance runner), loaded once per throwaway cluster with
-- psql -v streams=N -v per_stream=M after CREATE EXTENSION es_ext.
--
-- Four contenders live side by side in the same database, each with the same
-- :streams streams (account-1 .. account-N) of :per_stream events:
--   es.events / es.streams  es_ext, written only through es.es_append
--   hw.events / hw.streams  the "safe hand-written append" a user writes in
--                           ten lines: hw.append() advances a streams row
--                           (optimistic concurrency: expected version check,
--                           INSERT ... ON CONFLICT DO NOTHING for a new
--                           stream, SQLSTATE 40001 on a mismatch) and inserts
--                           into a table with the columns of es.events and
--                           ONLY PRIMARY KEY (stream_id, version)
--   hw.minimal              the same minimal table, written by a raw INSERT
--                           (no streams row, no check: a ceiling)
--   rawes.events            a copy of es.events' schema (LIKE ... INCLUDING
--                           ALL: columns, defaults, identity, CHECKs, every
--                           index; LIKE never copies triggers), written by a
--                           raw INSERT: what es.events' indexes cost alone
-- and read-1 .. read-100: 100 streams of 100 events in es.events, read with
-- es_read_stream and with a plain SELECT.
\set ON_ERROR_STOP on
SET client_min_messages = warning;

CREATE SCHEMA hw;
CREATE TABLE hw.streams (
	stream_id	text PRIMARY KEY,
	version		bigint NOT NULL
) WITH (fillfactor = 50);
CREATE TABLE hw.events (
	global_position	bigint GENERATED ALWAYS AS IDENTITY,
	stream_id		text NOT NULL,
	version			bigint NOT NULL,
	event_id		uuid NOT NULL DEFAULT gen_random_uuid(),
	event_type		text NOT NULL,
	data			jsonb NOT NULL,
	metadata		jsonb,
	recorded_at		timestamptz NOT NULL DEFAULT now(),
	PRIMARY KEY (stream_id, version)
);
CREATE TABLE hw.minimal (LIKE hw.events INCLUDING ALL);

-- hw.append(stream, expected, events): expected NULL = any version, 0 = the
-- stream must not exist; returns the stream's new version.  events is a
-- jsonb array of {"type", "data", "metadata"} as for es_append.
CREATE FUNCTION hw.append(p_stream text, p_expected bigint, p_events jsonb)
RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
	n int := jsonb_array_length(p_events);
	v bigint;
BEGIN
	UPDATE hw.streams AS s SET version = s.version + n
	 WHERE s.stream_id = p_stream AND (p_expected IS NULL OR s.version = p_expected)
	RETURNING s.version INTO v;
	IF NOT FOUND THEN
		IF p_expected IS NULL OR p_expected = 0 THEN
			INSERT INTO hw.streams VALUES (p_stream, n) ON CONFLICT DO NOTHING RETURNING version INTO v;
		END IF;
		IF v IS NULL THEN
			RAISE EXCEPTION 'wrong expected version % for stream %', p_expected, p_stream
				USING ERRCODE = '40001';
		END IF;
	END IF;
	IF n = 1 THEN
		INSERT INTO hw.events (stream_id, version, event_id, event_type, data, metadata)
		VALUES (p_stream, v, gen_random_uuid(), p_events -> 0 ->> 'type', p_events -> 0 -> 'data',
				p_events -> 0 -> 'metadata');
	ELSE
		INSERT INTO hw.events (stream_id, version, event_id, event_type, data, metadata)
		SELECT p_stream, v - n + x.o, gen_random_uuid(), x.e ->> 'type', x.e -> 'data', x.e -> 'metadata'
		  FROM jsonb_array_elements(p_events) WITH ORDINALITY AS x(e, o);
	END IF;
	RETURN v;
END
$$;

CREATE SCHEMA rawes;
CREATE TABLE rawes.events (LIKE es.events INCLUDING ALL);

-- es_ext: one append of :per_stream events per stream
SELECT count(es.es_append('account-' || s, 0,
		(SELECT jsonb_agg(jsonb_build_object(
					'type', 'Deposited',
					'data', jsonb_build_object('amount', i, 'currency', 'EUR'),
					'metadata', jsonb_build_object('correlation_id', 'setup-' || s || '-' || i)) ORDER BY i)
		   FROM generate_series(1, :per_stream) AS i)))
	AS es_streams
  FROM generate_series(1, :streams) AS s;

-- hand-written: the same, through hw.append
SELECT count(hw.append('account-' || s, 0,
		(SELECT jsonb_agg(jsonb_build_object(
					'type', 'Deposited',
					'data', jsonb_build_object('amount', i, 'currency', 'EUR'),
					'metadata', jsonb_build_object('correlation_id', 'setup-' || s || '-' || i)) ORDER BY i)
		   FROM generate_series(1, :per_stream) AS i)))
	AS hw_streams
  FROM generate_series(1, :streams) AS s;

-- raw tables: copies of the rows above
INSERT INTO hw.minimal (stream_id, version, event_id, event_type, data, metadata, recorded_at)
SELECT stream_id, version, event_id, event_type, data, metadata, recorded_at FROM hw.events;

-- every column of es.events that is neither an identity nor generated (the
-- category column is generated or plain depending on the es_ext version)
DO $$
DECLARE
	cols text;
BEGIN
	SELECT string_agg(quote_ident(attname), ', ' ORDER BY attnum) INTO cols
	  FROM pg_attribute
	 WHERE attrelid = 'es.events'::regclass AND attnum > 0 AND NOT attisdropped
	   AND attidentity = '' AND attgenerated = '';
	EXECUTE format('INSERT INTO rawes.events (%s) SELECT %s FROM es.events', cols, cols);
END
$$;

-- 100 streams of 100 events, read by perf_es_read.sql and perf_select_read.sql
SELECT count(es.es_append('read-' || s, 0,
		(SELECT jsonb_agg(jsonb_build_object('type', 'Sold',
					'data', jsonb_build_object('amount', i % 100, 'sku', 'A' || i % 50),
					'metadata', jsonb_build_object('correlation_id', 'r-' || s || '-' || i)) ORDER BY i)
		   FROM generate_series(1, 100) AS i)))
	AS read_streams
  FROM generate_series(1, 100) AS s;

VACUUM ANALYZE;
CHECKPOINT;

SELECT (SELECT count(*) FROM es.events) AS es_events,
	   (SELECT count(*) FROM hw.events) AS hw_events,
	   (SELECT count(*) FROM hw.minimal) AS minimal_events,
	   (SELECT count(*) FROM rawes.events) AS rawes_events,
	   (SELECT count(*) FROM pg_index WHERE indrelid = 'es.events'::regclass) AS es_indexes,
	   (SELECT count(*) FROM pg_index WHERE indrelid = 'rawes.events'::regclass) AS rawes_indexes;
