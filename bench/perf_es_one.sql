-- bench/perf_es_one.sql — bench/perf_run, es_ext: es_append of ONE event to
-- a random stream account-1 .. account-:streams, expected version NULL.
-- -D streams=1 is the hot-stream workload (every client on account-1).
\set sid random(1, :streams)
\set amount random(1, 1000000)
SELECT es.es_append('account-' || :sid, NULL,
		jsonb_build_array(jsonb_build_object(
			'type', 'Deposited',
			'data', jsonb_build_object('amount', :amount::integer, 'currency', 'EUR'),
			'metadata', jsonb_build_object('correlation_id', 'c-' || :amount))));
