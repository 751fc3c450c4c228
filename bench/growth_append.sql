-- bench/growth_append.sql — growth measurement: es_append of ONE event,
-- expected NULL, to a random stream grow-1 .. grow-N (bulk-loaded by bench/run).
\set sid random(1, :streams)
\set amount random(1, 1000000)
SELECT es.es_append('grow-' || :sid, NULL,
		jsonb_build_array(jsonb_build_object('type', 'Deposited',
			'data', jsonb_build_object('amount', :amount::integer, 'currency', 'EUR'))));
