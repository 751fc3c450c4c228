-- bench/mdb_write_exact.sql — Message DB with an exact expected version, as a
-- client does it: stream_version, then write_message expecting it (through
-- bench_mdb.write_exact, which turns Message DB's "Wrong expected version"
-- P0001 into 40001 so that pgbench --max-tries retries and counts it).
-- Variables: -D streams=N (1 = one hot stream).
\set sid random(1, :streams)
\set amount random(1, 1000000)
SELECT coalesce(message_store.stream_version('account-' || :sid), -1) AS expected \gset
SELECT bench_mdb.write_exact('account-' || :sid, :expected,
		jsonb_build_object('amount', :amount::integer, 'currency', 'EUR'),
		jsonb_build_object('correlation_id', 'c-' || :amount));
