-- bench/raw_insert_batch.sql — raw ceiling for batch appends: one multi-row
-- INSERT of :batch rows into raw.events (same columns and indexes as
-- es.events, no triggers, no checks, no streams row).  Random stream among
-- :streams, versions :ver+1 .. :ver+:batch from a random huge base,
-- tx_id from pg_current_xact_id(), era 0.
-- Variables: -D streams=N -D batch=B.  Events/s = tps x B.
\set sid random(1, :streams)
\set ver random(1000, 1000000000000000) * 1000
\set amount random(1, 1000000)
INSERT INTO raw.events (stream_id, version, event_id, event_type, data, metadata,
						recorded_at, era, tx_id)
SELECT 'account-' || :sid, :ver::bigint + i, gen_random_uuid(), 'Deposited',
	   jsonb_build_object('amount', :amount::integer + i, 'currency', 'EUR'),
	   jsonb_build_object('correlation_id', 'c-' || :amount || '-' || i),
	   now(), 0, pg_current_xact_id()
  FROM generate_series(1, :batch::integer) AS i
RETURNING global_position;
