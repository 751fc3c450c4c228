-- bench/setup.sql — schema and data for the es_ext benchmark (run once per
-- throwaway cluster by bench/run, with psql -v streams=N -v per_stream=M).
--
-- Two contenders live side by side in the same database:
--   es.events / es.streams   es_ext itself, written only through es.es_append
--   raw.events               the "raw ceiling": a plain table with the same
--                            columns and the same indexes as es.events, but no
--                            triggers, no CHECK constraint and no streams table
-- Both are pre-populated with the same :streams streams of :per_stream events
-- each (10,000 x 20 = 200k events by default), so the timed appends hit
-- existing streams and indexes of a realistic size.
\set ON_ERROR_STOP on

-- bench/run creates the extension first (and pins its library)
CREATE EXTENSION IF NOT EXISTS es_ext;

CREATE SCHEMA raw;

-- Same columns (with their defaults, generated columns and identity) and the
-- same indexes as es.events, taken from the installed extension so that the
-- ceiling follows the schema; LIKE copies neither CHECK constraints nor
-- triggers.
CREATE TABLE raw.events (LIKE es.events
	INCLUDING DEFAULTS INCLUDING GENERATED INCLUDING IDENTITY INCLUDING INDEXES);

-- es_ext: one append of :per_stream events per stream.
SELECT count(es.es_append('account-' || s, 0,
		(SELECT jsonb_agg(jsonb_build_object(
					'type', 'Deposited',
					'data', jsonb_build_object('amount', i, 'currency', 'EUR'),
					'metadata', jsonb_build_object('correlation_id', 'setup-' || s || '-' || i)))
		   FROM generate_series(1, :per_stream) AS i)))
	AS es_streams
  FROM generate_series(1, :streams) AS s;

-- raw ceiling: the same rows.
INSERT INTO raw.events (stream_id, version, event_id, event_type, data, metadata,
						recorded_at, era, tx_id)
SELECT 'account-' || s, i, gen_random_uuid(), 'Deposited',
	   jsonb_build_object('amount', i, 'currency', 'EUR'),
	   jsonb_build_object('correlation_id', 'setup-' || s || '-' || i),
	   now(), 0, pg_current_xact_id()
  FROM generate_series(1, :streams) AS s, generate_series(1, :per_stream) AS i;

VACUUM ANALYZE;
CHECKPOINT;

SELECT (SELECT count(*) FROM es.events) AS es_events,
	   (SELECT count(*) FROM es.streams) AS es_streams,
	   (SELECT count(*) FROM raw.events) AS raw_events,
	   (SELECT count(*) FROM pg_index WHERE indrelid = 'es.events'::regclass) AS es_indexes,
	   (SELECT count(*) FROM pg_index WHERE indrelid = 'raw.events'::regclass) AS raw_indexes;
