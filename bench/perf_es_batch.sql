-- bench/perf_es_batch.sql — bench/perf_run, es_ext: es_append of a batch
-- of :batch events (one call, expected version NULL) to a random stream.
-- Events/s = tps x :batch.
\set sid random(1, :streams)
\set amount random(1, 1000000)
SELECT es.es_append('account-' || :sid, NULL,
		(SELECT jsonb_agg(jsonb_build_object(
					'type', 'Deposited',
					'data', jsonb_build_object('amount', :amount::integer + i, 'currency', 'EUR'),
					'metadata', jsonb_build_object('correlation_id', 'c-' || :amount || '-' || i)))
		   FROM generate_series(1, :batch::integer) AS i));
