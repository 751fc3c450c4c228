-- bench/perf_hw_batch.sql — bench/perf_run, the safe hand-written append
-- (hw.append) of a batch of :batch events to a random stream, expected
-- version NULL; the same batch as perf_es_batch.sql.
\set sid random(1, :streams)
\set amount random(1, 1000000)
SELECT hw.append('account-' || :sid, NULL,
		(SELECT jsonb_agg(jsonb_build_object(
					'type', 'Deposited',
					'data', jsonb_build_object('amount', :amount::integer + i, 'currency', 'EUR'),
					'metadata', jsonb_build_object('correlation_id', 'c-' || :amount || '-' || i)))
		   FROM generate_series(1, :batch::integer) AS i));
