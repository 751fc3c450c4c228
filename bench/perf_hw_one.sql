-- bench/perf_hw_one.sql — bench/perf_run, the safe hand-written append
-- (hw.append, bench/perf_setup.sql) of ONE event to a random stream, expected
-- version NULL; the same event as perf_es_one.sql.  -D streams=1: hot stream.
\set sid random(1, :streams)
\set amount random(1, 1000000)
SELECT hw.append('account-' || :sid, NULL,
		jsonb_build_array(jsonb_build_object(
			'type', 'Deposited',
			'data', jsonb_build_object('amount', :amount::integer, 'currency', 'EUR'),
			'metadata', jsonb_build_object('correlation_id', 'c-' || :amount))));
