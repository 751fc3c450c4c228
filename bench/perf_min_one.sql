-- bench/perf_min_one.sql — bench/perf_run, ceiling: one raw single-row INSERT
-- into hw.minimal (the columns of es.events, only PRIMARY KEY (stream_id,
-- version), no streams row, no check).  Random stream, random huge version
-- (collisions are negligible).
\set sid random(1, :streams)
\set ver random(1000, 1000000000000000)
\set amount random(1, 1000000)
INSERT INTO hw.minimal (stream_id, version, event_id, event_type, data, metadata)
VALUES ('account-' || :sid, :ver, gen_random_uuid(), 'Deposited',
		jsonb_build_object('amount', :amount::integer, 'currency', 'EUR'),
		jsonb_build_object('correlation_id', 'c-' || :amount));
