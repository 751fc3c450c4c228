-- bench/fold_bench.sql — times the es_fold contenders (bench/fold_run)
--
-- Server-side timing: each statement runs once to warm up, then :reps_N
-- times; clock_timestamp() around each run, median/min/max in ms.  Every
-- contender must return the same state (checked; a mismatch fails the run).
-- Contenders of a stream size run interleaved, repetition by repetition, so
-- that a change of machine load hits them alike.  The snapshot contender
-- runs last, once es_snapshot_save stored a state 100 events behind the head.
-- Prints one row per (events, contender), tab-separated.
\set ON_ERROR_STOP 1
SET client_min_messages = warning;
SET es.snapshot_every = 0;		-- automatic snapshots would change the runs

CREATE TEMP TABLE runs (events bigint, contender text, rep integer, ms float8, result jsonb);

CREATE FUNCTION pg_temp.bench(events bigint, reps integer, contenders text[], sqls text[])
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
	t0 timestamptz;
	r jsonb;
	i integer;
	k integer;
BEGIN
	FOR k IN 1 .. array_length(sqls, 1) LOOP
		EXECUTE sqls[k] INTO r;			-- warm-up: plans, caches, buffers
	END LOOP;
	FOR i IN 1 .. reps LOOP
		FOR k IN 1 .. array_length(sqls, 1) LOOP
			t0 := clock_timestamp();
			EXECUTE sqls[k] INTO r;
			INSERT INTO runs VALUES (events, contenders[k], i,
				extract(epoch FROM clock_timestamp() - t0) * 1000, r);
		END LOOP;
	END LOOP;
END
$$;

CREATE FUNCTION pg_temp.contenders(stream text, snapshot boolean, OUT names text[], OUT sqls text[])
LANGUAGE sql AS $$
	SELECT ARRAY['es_fold', 'es_fold_row', 'plpgsql_loop', 'plpgsql_loop_row', 'sql_aggregate']
		   || CASE WHEN snapshot THEN ARRAY['es_fold_snapshot'] ELSE ARRAY[]::text[] END,
		   ARRAY[format($q$SELECT es.es_fold(%L, 'bench_reducer(jsonb,jsonb)', '{"count": 0, "total": 0}')$q$, stream),
				 format($q$SELECT es.es_fold(%L, 'bench_reducer_row(jsonb,es.events)', '{"count": 0, "total": 0}')$q$, stream),
				 format($q$SELECT bench_loop(%L)$q$, stream),
				 format($q$SELECT bench_loop_row(%L)$q$, stream),
				 format($q$SELECT es.es_fold_agg('bench_reducer(jsonb,jsonb)', '{"count": 0, "total": 0}', e ORDER BY e.version)
							 FROM es.events AS e WHERE e.stream_id = %L$q$, stream)]
		   -- with the snapshot 100 events behind the head (saved below)
		   || CASE WHEN snapshot THEN
				ARRAY[format($q$SELECT es.es_fold(%L, 'bench_reducer(jsonb,jsonb)', '{"count": 0, "total": 0}')$q$, stream)]
			  ELSE ARRAY[]::text[] END
$$;

-- first without any snapshot, then with one 100 events behind the head
SELECT pg_temp.bench(100, :reps_100, c.names, c.sqls) FROM pg_temp.contenders('fold-100', false) AS c;
SELECT pg_temp.bench(10000, :reps_10000, c.names, c.sqls) FROM pg_temp.contenders('fold-10000', false) AS c;
SELECT pg_temp.bench(1000000, :reps_1000000, c.names, c.sqls) FROM pg_temp.contenders('fold-1000000', false) AS c;
SELECT es.es_snapshot_save('fold-' || n, 'bench_reducer(jsonb,jsonb)', '{"count": 0, "total": 0}', n - 100)
  FROM (VALUES (10000), (1000000)) AS v(n);
SELECT pg_temp.bench(n, :reps_100, ARRAY['es_fold_snapshot'], ARRAY[c.sqls[6]])
  FROM (VALUES (10000), (1000000)) AS v(n),
	   LATERAL pg_temp.contenders('fold-' || n, true) AS c;
-- the snapshot contender applied 100 events
DO $$
BEGIN
	IF (SELECT events_applied FROM es.es_fold_state('fold-1000000', 'bench_reducer(jsonb,jsonb)',
													 '{"count": 0, "total": 0}')) <> 100 THEN
		RAISE EXCEPTION 'the snapshot was not used';
	END IF;
END
$$;
SELECT es.es_snapshot_delete(NULL);

-- every contender of a stream size returned the same state
DO $$
BEGIN
	IF EXISTS (SELECT FROM runs GROUP BY events HAVING count(DISTINCT result) <> 1) THEN
		RAISE EXCEPTION 'contenders disagree: %',
			(SELECT string_agg(DISTINCT events || ' ' || contender || ' ' || result::text, E'\n') FROM runs);
	END IF;
END
$$;

\pset format unaligned
\pset fieldsep '\t'
\pset tuples_only on
SELECT events, contender, count(*) AS reps,
	   round((percentile_cont(0.5) WITHIN GROUP (ORDER BY ms))::numeric, 3) AS median_ms,
	   round(min(ms)::numeric, 3) AS min_ms, round(max(ms)::numeric, 3) AS max_ms
  FROM runs GROUP BY events, contender ORDER BY events, contender;
