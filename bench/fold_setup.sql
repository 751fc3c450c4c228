-- bench/fold_setup.sql — data and contenders of the es_fold benchmark (bench/fold_run)
--
-- Streams "fold-100", "fold-10000" and "fold-1000000" of "Sold" events
-- {"amount": 0..99, "sku": "A0".."A49"}, appended through es_append in
-- batches of at most 10,000 (one transaction each), and the contenders:
--   bench_reducer(state jsonb, event jsonb)      the PL/pgSQL reducer
--   bench_reducer_row(state jsonb, e es.events)  the same, taking the row
--   bench_loop(stream) / bench_loop_row(stream)  PL/pgSQL loops over es_read_stream
--                                                calling the same reducers
\set ON_ERROR_STOP 1
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS es_ext;

CREATE PROCEDURE bench_fill(stream text, n integer)
LANGUAGE plpgsql AS $$
DECLARE
	done integer := 0;
	b integer;
BEGIN
	WHILE done < n LOOP
		b := least(10000, n - done);
		PERFORM es.es_append(stream, NULL,
			(SELECT jsonb_agg(jsonb_build_object('type', 'Sold',
												 'data', jsonb_build_object('amount', (done + i) % 100,
																			'sku', 'A' || (done + i) % 50))
							  ORDER BY i)
			   FROM generate_series(1, b) AS i));
		done := done + b;
		COMMIT;
	END LOOP;
END
$$;

CALL bench_fill('fold-100', 100);
CALL bench_fill('fold-10000', 10000);
CALL bench_fill('fold-1000000', 1000000);
VACUUM ANALYZE es.events;

-- the reducer: count, total amount, last version
CREATE FUNCTION bench_reducer(state jsonb, event jsonb) RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
	RETURN jsonb_build_object('count', (state->>'count')::bigint + 1,
							  'total', (state->>'total')::numeric + (event->'data'->>'amount')::numeric,
							  'version', (event->>'version')::bigint);
END
$$;

CREATE FUNCTION bench_reducer_row(state jsonb, e es.events) RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
	RETURN jsonb_build_object('count', (state->>'count')::bigint + 1,
							  'total', (state->>'total')::numeric + (e.data->>'amount')::numeric,
							  'version', e.version);
END
$$;

-- the same reducers called from a PL/pgSQL loop over es_read_stream; the
-- jsonb one gets the same event envelope es_fold builds
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

CREATE FUNCTION bench_loop_row(stream text) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
	st jsonb := '{"count": 0, "total": 0}';
	e es.events;
BEGIN
	FOR e IN SELECT * FROM es.es_read_stream(stream) LOOP
		st := bench_reducer_row(st, e);
	END LOOP;
	RETURN st;
END
$$;
