-- bench/hand_append_batch.sql — the hand-written approach: a batch of :batch
-- events in one hand.append_r call.  Variables: -D streams=N -D batch=B.
\set sid random(1, :streams)
\set amount random(1, 1000000)
SELECT hand.append_r('account-' || :sid, NULL,
		(SELECT jsonb_agg(jsonb_build_object(
					'type', 'Deposited',
					'data', jsonb_build_object('amount', :amount::integer + i, 'currency', 'EUR'),
					'metadata', jsonb_build_object('correlation_id', 'c-' || :amount || '-' || i)))
		   FROM generate_series(1, :batch::integer) AS i));
