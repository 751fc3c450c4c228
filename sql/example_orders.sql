-- example_orders: the worked example (examples/order_management.sql):
-- commands, business-rule errors, the read model, time travel, rebuild, the
-- asynchronous read model with a read-your-writes wait, and a rule across
-- streams (a coupon redeemed by one order at a time) kept by a conditional
-- append

\set ECHO none
-- (its NOTICEs would carry line numbers of the example file)
SET client_min_messages = warning;
\i examples/order_management.sql
RESET client_min_messages;
\set ECHO all
SELECT store_mark();

-- commands return the order's new version
SELECT orders.create_order('o-1', 'c-1') AS v;
SELECT orders.add_item('o-1', 'A', 2, 10.00) AS v;
SELECT orders.add_item('o-1', 'B', 1, 5.50) AS v;
SELECT orders.add_item('o-1', 'A', 1, 10.00) AS v;
SELECT orders.remove_item('o-1', 'B') AS v;
SELECT orders.create_order('o-2', 'c-1') AS v;
SELECT orders.add_item('o-2', 'C', 3, 1.00) AS v;
SELECT orders.confirm_order('o-1') AS v;
SELECT orders.create_order('o-3', 'c-2') AS v;
SELECT orders.cancel_order('o-3', 'changed my mind') AS v;
SELECT orders.create_order('o-4', 'c-2') AS v;

SELECT version, event_type, data FROM es.es_read_stream('order-o-1');
SELECT orders.load('o-1');

-- the read model and the per-customer view
SELECT order_id, customer_id, status, item_count, total_amount, last_version FROM orders.order_summary ORDER BY order_id;
SELECT order_id, status FROM orders.customer_orders WHERE customer_id = 'c-1';
SELECT count(*) AS newest_first FROM orders.customer_orders a JOIN orders.customer_orders b
    ON a.customer_id = b.customer_id AND a.created_at < b.created_at AND a.order_id = 'o-1' AND b.order_id = 'o-2';

-- business-rule errors, each with its SQLSTATE; none writes anything
SELECT * FROM store_counts();
SELECT try($$SELECT orders.create_order('o-1', 'c-9')$$);
SELECT try($$SELECT orders.create_order('', 'c-9')$$);
SELECT try($$SELECT orders.add_item('nope', 'A', 1, 1)$$);
SELECT try($$SELECT orders.add_item('o-1', 'D', 1, 1)$$);
SELECT try($$SELECT orders.add_item('o-2', 'D', 0, 1)$$);
SELECT try($$SELECT orders.add_item('o-2', 'D', 1, -1)$$);
SELECT try($$SELECT orders.add_item('o-2', 'C', 1, 2.00)$$);
SELECT try($$SELECT orders.remove_item('o-2', 'Z')$$);
SELECT try($$SELECT orders.confirm_order('o-3')$$);
SELECT try($$SELECT orders.cancel_order('o-3', 'again')$$);
SELECT try($$SELECT orders.confirm_order('o-4')$$);
SELECT * FROM store_counts();

-- a command with a stale expected version is rejected with 40001
SELECT try($$SELECT orders.add_item('o-2', 'E', 1, 1.00, expected_version => 1)$$);
SELECT orders.add_item('o-2', 'E', 1, 1.00, expected_version => 2) AS v;

-- time travel: the order as it was
SELECT orders.load('o-1', up_to_version => 3) -> 'items' AS items_at_v3;
SELECT orders.load('o-1', up_to_version => 1) ->> 'status' AS status_at_v1;

-- rebuild equals the inline read model
CREATE TEMP TABLE inline_summary AS SELECT * FROM orders.order_summary;
UPDATE orders.order_summary SET total_amount = 0, status = 'broken';
SET client_min_messages = warning;	-- progress NOTICEs count the whole log
CALL es.es_rebuild_projection('order_summary', 'TRUNCATE orders.order_summary');
RESET client_min_messages;
SELECT count(*) AS differences FROM (
	(SELECT * FROM orders.order_summary EXCEPT SELECT * FROM inline_summary)
	UNION ALL (SELECT * FROM inline_summary EXCEPT SELECT * FROM orders.order_summary)) d;

-- the asynchronous read model: appends did not apply it; a command's token
-- says when it has been (read-your-writes)
SELECT orders.last_token() IS NOT NULL AS have_token;
SELECT count(*) AS not_yet_applied FROM orders.customer_stats;
SELECT es.es_wait_for('customer_stats', orders.last_token(), '10 milliseconds') AS applied_yet;
DO $$ DECLARE a bigint; f integer; BEGIN CALL es.es_run_projections('customer_stats', NULL, a, f); END $$;
SELECT es.es_wait_for('customer_stats', orders.last_token(), '5 seconds') AS read_your_writes;
SELECT * FROM orders.customer_stats ORDER BY customer_id;
SELECT orders.confirm_order('o-2') AS v;
DO $$ DECLARE a bigint; f integer; BEGIN CALL es.es_run_projections('customer_stats', NULL, a, f); END $$;
SELECT es.es_wait_for('customer_stats', orders.last_token(), '5 seconds') AS read_your_writes;
SELECT customer_id, orders_confirmed, confirmed_amount FROM orders.customer_stats WHERE customer_id = 'c-1';
SELECT mode, state, events_behind FROM es.projections WHERE projection = 'customer_stats';

-- a rule across streams: a coupon code is redeemed by one order at a time,
-- across all orders (tags, es_read_query, a conditional append)
SELECT store_mark();
SELECT orders.create_order('o-5', 'c-3') AS v;
SELECT orders.create_order('o-6', 'c-3') AS v;
SELECT orders.create_order('o-7', 'c-4') AS v;
SELECT orders.apply_coupon('o-5', 'WELCOME10') AS v;
SELECT orders.load('o-5') ->> 'coupon' AS coupon;
SELECT stream_id, version, event_type, tags FROM es.events
 WHERE stream_id IN ('order-o-5', 'order-o-6', 'order-o-7') ORDER BY global_position;
SELECT stream_id, version, event_type, tags
  FROM es.es_read_query(orders.coupon_query('WELCOME10'));
SELECT holder, after IS NOT NULL AS has_after FROM orders.coupon_holder('WELCOME10');
-- a second redemption, in another order, is refused (23505) and writes nothing
SELECT store_mark();
SELECT try($$SELECT orders.apply_coupon('o-6', 'WELCOME10')$$);
-- one coupon per order (55000); a bad code (22023); not on a confirmed order (55000)
SELECT try($$SELECT orders.apply_coupon('o-5', 'SPRING')$$);
SELECT try($$SELECT orders.apply_coupon('o-6', '')$$);
SELECT try($$SELECT orders.apply_coupon('o-1', 'SPRING')$$);
SELECT * FROM store_counts();
-- cancelling the order gives the coupon back: another order may redeem it
SELECT orders.cancel_order('o-5', 'no longer needed') AS v;
SELECT event_type, tags FROM es.events WHERE stream_id = 'order-o-5' AND version = 3;
SELECT holder, after IS NOT NULL AS has_after FROM orders.coupon_holder('WELCOME10');
-- the race, in one session: order o-6 decides (the coupon is free after the
-- cursor it read), order o-7 redeems the coupon first, then o-6 appends with
-- the condition and the cursor it decided on: 40001, es_append_condition
SELECT (orders.coupon_holder('WELCOME10')).after AS decided_after \gset
SELECT orders.apply_coupon('o-7', 'WELCOME10') AS v;
SELECT regexp_replace(try(format(
	$$SELECT orders.emit('o-6', orders.load('o-6'), NULL, 'CouponApplied', '{"code": "WELCOME10"}',
						 tags => '["coupon:WELCOME10"]', condition => orders.coupon_query('WELCOME10'),
						 after => %L)$$, :'decided_after')),
	'\(\d+,\d+,\d+\)', '(era,tx_id,position)', 'g') AS refused;
-- the retry re-reads and re-decides: the coupon is taken (23505)
SELECT try($$SELECT orders.apply_coupon('o-6', 'WELCOME10')$$);
SELECT holder FROM orders.coupon_holder('WELCOME10');
-- the order's own expected version still applies with the condition (40001,
-- es_expected_version)
SELECT try($$SELECT orders.apply_coupon('o-6', 'SPRING', expected_version => 7)$$);
SELECT orders.apply_coupon('o-6', 'SPRING', expected_version => 1) AS v;
SELECT stream_id, version, event_type FROM es.events
 WHERE stream_id IN ('order-o-5', 'order-o-6', 'order-o-7') ORDER BY global_position;

-- personal data: a customer's name and email are stored encrypted with the
-- customer's key (the stored row holds markers), read in clear by a role
-- allowed to decrypt (here the superuser)
SELECT orders.register_customer('c-1', 'Ada Lovelace', 'ada@example.org', 'GB') AS v;
SELECT data -> 'name' ? '$es_encrypted' AS name_encrypted, data ->> 'country' AS country,
       metadata -> '$es_personal' AS declared
  FROM es.events WHERE stream_id = 'customer-c-1';
SELECT data FROM es.es_read_stream('customer-c-1');
-- the customer asks to be forgotten: the key is destroyed, no event is
-- rewritten, every read shows the redaction marker; the orders are intact
SELECT orders.forget_customer('c-1') AS key_destroyed;
SELECT data FROM es.es_read_stream('customer-c-1');
SELECT key IS NULL AS key_gone, forgotten_at IS NOT NULL AS forgotten FROM es.subject_keys WHERE subject = 'c-1';
SELECT count(*) AS orders_of_c1 FROM orders.order_summary WHERE customer_id = 'c-1';
-- no personal data of the forgotten subject can be stored again (55000)
SELECT try($$SELECT es.es_append('customer-c-1', 1, jsonb_build_array(jsonb_build_object(
	'type', 'EmailChanged', 'data', jsonb_build_object('email', 'ada@example.net'),
	'personal', jsonb_build_object('subject', 'c-1', 'fields', jsonb_build_array('email')))))$$);

SELECT es.es_drop_projection('customer_stats');
DROP TRIGGER order_summary ON es.events;
DROP SCHEMA orders CASCADE;
