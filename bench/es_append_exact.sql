-- bench/es_append_exact.sql — es_ext: optimistic concurrency as a client does
-- it: read the stream's version, then append ONE event expecting exactly that
-- version.  A concurrent append in between makes es_append raise SQLSTATE
-- 40001; pgbench (--max-tries > 1) then re-runs the whole script (re-read and
-- re-append), which bench/run reports as retries.  Two statements, two
-- autocommit transactions, one pgbench "transaction".
-- Contender of raw_insert_one.sql.  Variables: -D streams=N.
\set sid random(1, :streams)
\set amount random(1, 1000000)
SELECT es.es_stream_version('account-' || :sid) AS expected \gset
SELECT es.es_append('account-' || :sid, :expected,
		jsonb_build_array(jsonb_build_object(
			'type', 'Deposited',
			'data', jsonb_build_object('amount', :amount::integer, 'currency', 'EUR'),
			'metadata', jsonb_build_object('correlation_id', 'c-' || :amount))));
