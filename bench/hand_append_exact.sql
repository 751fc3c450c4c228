-- bench/hand_append_exact.sql — the hand-written approach with an exact
-- expected version: the client reads max(version), then appends expecting it.
-- Conflicts (23505 or a stale expectation) come back as 40001 (hand.append_r)
-- and pgbench re-runs both statements.  Variables: -D streams=N.
\set sid random(1, :streams)
\set amount random(1, 1000000)
SELECT coalesce(max(version), 0) AS expected FROM hand.events WHERE stream_id = 'account-' || :sid \gset
SELECT hand.append_r('account-' || :sid, :expected,
		jsonb_build_array(jsonb_build_object(
			'type', 'Deposited',
			'data', jsonb_build_object('amount', :amount::integer, 'currency', 'EUR'),
			'metadata', jsonb_build_object('correlation_id', 'c-' || :amount))));
