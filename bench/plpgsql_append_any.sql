-- bench/plpgsql_append_any.sql — optional contender (BENCH_PLPGSQL=1): the
-- PL/pgSQL equivalent of es_append_any.sql (plpgsql_setup.sql), appending
-- ONE event with expected version NULL to a random existing stream.
-- Variables: -D streams=N.
\set sid random(1, :streams)
\set amount random(1, 1000000)
SELECT plpg.append('account-' || :sid, NULL,
		jsonb_build_array(jsonb_build_object(
			'type', 'Deposited',
			'data', jsonb_build_object('amount', :amount::integer, 'currency', 'EUR'),
			'metadata', jsonb_build_object('correlation_id', 'c-' || :amount))));
