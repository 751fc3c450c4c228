-- bench/perf_min_batch.sql — bench/perf_run, ceiling: one multi-row INSERT of
-- :batch rows into hw.minimal (only PRIMARY KEY (stream_id, version)),
-- versions :ver+1 .. :ver+:batch from a random huge base.
\set sid random(1, :streams)
\set ver random(1000, 1000000000000000) * 1000
\set amount random(1, 1000000)
INSERT INTO hw.minimal (stream_id, version, event_id, event_type, data, metadata)
SELECT 'account-' || :sid, :ver::bigint + i, gen_random_uuid(), 'Deposited',
	   jsonb_build_object('amount', :amount::integer + i, 'currency', 'EUR'),
	   jsonb_build_object('correlation_id', 'c-' || :amount || '-' || i)
  FROM generate_series(1, :batch::integer) AS i;
