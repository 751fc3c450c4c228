-- bench/perf_rawes_batch.sql — bench/perf_run: one multi-row INSERT of
-- :batch rows into rawes.events (es.events' schema and indexes, no
-- triggers).  -D gencat as in perf_rawes_one.sql.
\set sid random(1, :streams)
\set ver random(1000, 1000000000000000) * 1000
\set amount random(1, 1000000)
\if :gencat
INSERT INTO rawes.events (stream_id, version, event_id, event_type, data, metadata,
						  recorded_at, era, tx_id)
SELECT 'account-' || :sid, :ver::bigint + i, gen_random_uuid(), 'Deposited',
	   jsonb_build_object('amount', :amount::integer + i, 'currency', 'EUR'),
	   jsonb_build_object('correlation_id', 'c-' || :amount || '-' || i),
	   now(), 0, pg_current_xact_id()
  FROM generate_series(1, :batch::integer) AS i;
\else
INSERT INTO rawes.events (stream_id, version, event_id, event_type, data, metadata,
						  recorded_at, era, tx_id, category)
SELECT 'account-' || :sid, :ver::bigint + i, gen_random_uuid(), 'Deposited',
	   jsonb_build_object('amount', :amount::integer + i, 'currency', 'EUR'),
	   jsonb_build_object('correlation_id', 'c-' || :amount || '-' || i),
	   now(), 0, pg_current_xact_id(), 'account'
  FROM generate_series(1, :batch::integer) AS i;
\endif
