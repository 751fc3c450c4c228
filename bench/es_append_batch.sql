-- bench/es_append_batch.sql — es_ext: append a batch of :batch events (one
-- es_append call, expected version NULL) to a random existing stream.
-- Contender of raw_insert_batch.sql.  Variables: -D streams=N -D batch=B
-- (bench/run uses B = 10 and 100).  Events/s = tps x B.
\set sid random(1, :streams)
\set amount random(1, 1000000)
SELECT es.es_append('account-' || :sid, NULL,
		(SELECT jsonb_agg(jsonb_build_object(
					'type', 'Deposited',
					'data', jsonb_build_object('amount', :amount::integer + i, 'currency', 'EUR'),
					'metadata', jsonb_build_object('correlation_id', 'c-' || :amount || '-' || i)))
		   FROM generate_series(1, :batch::integer) AS i));
