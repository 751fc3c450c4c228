-- bench/es_append_any.sql — es_ext: append ONE event to a random existing
-- stream with expected version NULL ("any": never conflicts).
-- Contender of raw_insert_one.sql.  Variables: -D streams=N (default in
-- bench/run: 10000).  One transaction per script run (autocommit).
\set sid random(1, :streams)
\set amount random(1, 1000000)
SELECT es.es_append('account-' || :sid, NULL,
		jsonb_build_array(jsonb_build_object(
			'type', 'Deposited',
			'data', jsonb_build_object('amount', :amount::integer, 'currency', 'EUR'),
			'metadata', jsonb_build_object('correlation_id', 'c-' || :amount))));
