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

CREATE EXTENSION es_ext;

CREATE SCHEMA raw;

-- Same columns and indexes as es.events (sql/es_ext--0.1.0.sql), minus the
-- CHECK (version >= 1) and the guard triggers.
CREATE TABLE raw.events (
	global_position	bigint GENERATED ALWAYS AS IDENTITY,
	stream_id		text NOT NULL,
	version			bigint NOT NULL,
	event_id		uuid NOT NULL,
	event_type		text NOT NULL,
	data			jsonb NOT NULL,
	metadata		jsonb,
	recorded_at		timestamptz NOT NULL,
	category		text NOT NULL GENERATED ALWAYS AS (split_part(stream_id, '-', 1)) STORED,
	era				integer NOT NULL,
	tx_id			xid8 NOT NULL,
	CONSTRAINT events_pkey PRIMARY KEY (stream_id, version),
	CONSTRAINT events_stream_event_id_key UNIQUE (stream_id, event_id)
);
CREATE INDEX events_log_idx ON raw.events (era, tx_id, global_position);
CREATE INDEX events_category_log_idx ON raw.events (category, era, tx_id, global_position);
CREATE INDEX events_type_log_idx ON raw.events (event_type, era, tx_id, global_position);
CREATE INDEX events_correlation_idx ON raw.events ((metadata ->> 'correlation_id'))
	WHERE metadata ? 'correlation_id';
CREATE INDEX events_causation_idx ON raw.events ((metadata ->> 'causation_id'))
	WHERE metadata ? 'causation_id';

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
	   (SELECT count(*) FROM raw.events) AS raw_events;
