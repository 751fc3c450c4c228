-- bench/hand_append_any.sql — the hand-written approach (peers_setup.sql):
-- read max(version), insert ONE event; a concurrent append to the same stream
-- hits UNIQUE (stream_id, version): 23505, turned into 40001 by
-- hand.append_r so that pgbench retries and counts it.
-- Variables: -D streams=N (1 = one hot stream).
\set sid random(1, :streams)
\set amount random(1, 1000000)
SELECT hand.append_r('account-' || :sid, NULL,
		jsonb_build_array(jsonb_build_object(
			'type', 'Deposited',
			'data', jsonb_build_object('amount', :amount::integer, 'currency', 'EUR'),
			'metadata', jsonb_build_object('correlation_id', 'c-' || :amount))));
