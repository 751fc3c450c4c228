-- bench/peers_setup.sql — contenders of bench/run besides es_ext and the raw
-- ceiling, in the es_bench database (run after setup.sql, psql -v streams=N
-- -v per_stream=M):
--   hand.events / hand.append   the hand-written approach the literature
--                               teaches: UNIQUE (stream_id, version) and a
--                               PL/pgSQL append that reads max(version) and
--                               inserts.  A concurrent append raises a raw
--                               unique violation (23505) at the client.
--   hand.append_r               the same, with 23505 and a wrong expected
--                               version turned into SQLSTATE 40001 so that
--                               pgbench --max-tries retries them and counts
--                               them (each retry = one raw 23505 or stale
--                               expectation a client would have seen)
--   read-1 .. read-100          100-event streams in es.events and raw.events
--                               (reading and folding workloads)
--   bench_reducer / bench_loop  the reducer and PL/pgSQL fold loop of
--                               bench/fold_setup.sql, for the 100-event fold
\set ON_ERROR_STOP on
SET client_min_messages = warning;

CREATE SCHEMA hand;
CREATE TABLE hand.events (
	global_position bigserial PRIMARY KEY,
	stream_id		text NOT NULL,
	version			bigint NOT NULL,
	event_id		uuid NOT NULL DEFAULT gen_random_uuid(),
	event_type		text NOT NULL,
	data			jsonb NOT NULL,
	metadata		jsonb,
	recorded_at		timestamptz NOT NULL DEFAULT now(),
	UNIQUE (stream_id, version)
);

-- append(stream, expected, events): expected NULL = any
CREATE FUNCTION hand.append(p_stream text, p_expected bigint, p_events jsonb)
RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
	cur bigint;
BEGIN
	SELECT coalesce(max(version), 0) INTO cur FROM hand.events WHERE stream_id = p_stream;
	IF p_expected IS NOT NULL AND p_expected <> cur THEN
		RAISE EXCEPTION 'wrong expected version % for stream % (actual %)', p_expected, p_stream, cur;
	END IF;
	INSERT INTO hand.events (stream_id, version, event_type, data, metadata)
	SELECT p_stream, cur + x.o, x.e ->> 'type', x.e -> 'data', x.e -> 'metadata'
	  FROM jsonb_array_elements(p_events) WITH ORDINALITY AS x(e, o);
	RETURN cur + jsonb_array_length(p_events);
END
$$;

CREATE FUNCTION hand.append_r(p_stream text, p_expected bigint, p_events jsonb)
RETURNS bigint LANGUAGE plpgsql AS $$
BEGIN
	RETURN hand.append(p_stream, p_expected, p_events);
EXCEPTION
	WHEN unique_violation THEN
		RAISE EXCEPTION 'hand: unique violation (23505) on stream %', p_stream USING ERRCODE = '40001';
	WHEN raise_exception THEN
		RAISE EXCEPTION 'hand: %', SQLERRM USING ERRCODE = '40001';
END
$$;

INSERT INTO hand.events (stream_id, version, event_type, data, metadata)
SELECT 'account-' || s, i, 'Deposited',
	   jsonb_build_object('amount', i, 'currency', 'EUR'),
	   jsonb_build_object('correlation_id', 'setup-' || s || '-' || i)
  FROM generate_series(1, :streams) AS s, generate_series(1, :per_stream) AS i;

-- 100 streams of 100 events, read and folded
SELECT count(es.es_append('read-' || s, 0,
		(SELECT jsonb_agg(jsonb_build_object('type', 'Sold',
					'data', jsonb_build_object('amount', i % 100, 'sku', 'A' || i % 50),
					'metadata', jsonb_build_object('correlation_id', 'r-' || s || '-' || i)) ORDER BY i)
		   FROM generate_series(1, 100) AS i)))
  FROM generate_series(1, 100) AS s;
INSERT INTO raw.events (stream_id, version, event_id, event_type, data, metadata, recorded_at, era, tx_id)
SELECT 'read-' || s, i, gen_random_uuid(), 'Sold',
	   jsonb_build_object('amount', i % 100, 'sku', 'A' || i % 50),
	   jsonb_build_object('correlation_id', 'r-' || s || '-' || i), now(), 0, pg_current_xact_id()
  FROM generate_series(1, 100) AS s, generate_series(1, 100) AS i;

CREATE FUNCTION bench_reducer(state jsonb, event jsonb) RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
	RETURN jsonb_build_object('count', (state->>'count')::bigint + 1,
							  'total', (state->>'total')::numeric + (event->'data'->>'amount')::numeric,
							  'version', (event->>'version')::bigint);
END
$$;

CREATE FUNCTION bench_loop(stream text) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
	st jsonb := '{"count": 0, "total": 0}';
	e record;
BEGIN
	FOR e IN SELECT * FROM es.es_read_stream(stream) LOOP
		st := bench_reducer(st, jsonb_build_object(
				'type', e.event_type, 'data', e.data, 'metadata', e.metadata,
				'version', e.version, 'stream_id', e.stream_id,
				'recorded_at', e.recorded_at, 'global_position', e.global_position,
				'event_id', e.event_id, 'schema_version', e.schema_version));
	END LOOP;
	RETURN st;
END
$$;

VACUUM ANALYZE;
CHECKPOINT;
