-- bench/mdb_write_batch.sql — Message DB: a batch of :batch messages to one
-- random stream in one transaction.  Message DB writes one message per call,
-- so the batch is :batch write_message calls — made here in ONE statement
-- (one round trip: the most favourable way for Message DB).
-- Variables: -D streams=N -D batch=B.  Events/s = tps x B.
\set sid random(1, :streams)
\set amount random(1, 1000000)
SELECT count(message_store.write_message(gen_random_uuid()::varchar, 'account-' || :sid, 'Deposited',
		jsonb_build_object('amount', :amount::integer + i, 'currency', 'EUR'),
		jsonb_build_object('correlation_id', 'c-' || :amount || '-' || i)))
  FROM generate_series(1, :batch::integer) AS i;
