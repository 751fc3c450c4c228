-- bench/mdb_write_one.sql — Message DB: ONE message to a random existing
-- stream of category "account" with message_store.write_message, expected
-- version NULL.  Database message_store, role message_store.
-- Variables: -D streams=N (1 = one hot stream).
\set sid random(1, :streams)
\set amount random(1, 1000000)
SELECT message_store.write_message(gen_random_uuid()::varchar, 'account-' || :sid, 'Deposited',
		jsonb_build_object('amount', :amount::integer, 'currency', 'EUR'),
		jsonb_build_object('correlation_id', 'c-' || :amount));
