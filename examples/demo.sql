-- examples/demo.sql — the demo scenario (run by examples/demo after loading
-- examples/order_management.sql).  Every statement that is expected to fail
-- is marked; anything else failing stops the demo.
\set ON_ERROR_STOP 1
\pset footer off
\set SHOW_CONTEXT never
\echo
\echo '== 1. Commands: create two orders, add and remove items, confirm one'
\pset tuples_only on
SELECT format('%-45s -> version %s', 'create_order(''1001'', ''c-ann'')', orders.create_order('1001', 'c-ann'));
SELECT format('%-45s -> version %s', 'add_item(''1001'', ''BOOK-42'', 2, 12.50)', orders.add_item('1001', 'BOOK-42', 2, 12.50));
SELECT format('%-45s -> version %s', 'add_item(''1001'', ''PEN-7'', 5, 1.20)', orders.add_item('1001', 'PEN-7', 5, 1.20));
SELECT format('%-45s -> version %s', 'create_order(''1002'', ''c-ann'')', orders.create_order('1002', 'c-ann'));
SELECT format('%-45s -> version %s', 'add_item(''1002'', ''MUG-1'', 1, 8.00)', orders.add_item('1002', 'MUG-1', 1, 8.00));
SELECT format('%-45s -> version %s', 'remove_item(''1001'', ''PEN-7'')', orders.remove_item('1001', 'PEN-7'));
SELECT format('%-45s -> version %s', 'add_item(''1001'', ''PEN-9'', 3, 2.00)', orders.add_item('1001', 'PEN-9', 3, 2.00));
SELECT format('%-45s -> version %s', 'confirm_order(''1001'')', orders.confirm_order('1001'));
\pset tuples_only off
\echo
\echo '== 2. The events behind order 1001'
SELECT version, event_type, data FROM es.es_read_stream('order-1001');

\echo
\echo '== 3. The read model, updated in the same transaction as each append'
SELECT order_id, customer_id, status, item_count, total_amount FROM orders.order_summary ORDER BY order_id;
\echo 'orders of customer c-ann, newest first:'
SELECT order_id, status, item_count, total_amount FROM orders.customer_orders WHERE customer_id = 'c-ann';

\echo
\echo '== 4. Business rules reject invalid commands (expected errors)'
\set ON_ERROR_STOP 0
SELECT orders.add_item('1001', 'BOOK-43', 1, 5.00);
SELECT orders.add_item('1002', 'MUG-1', 0, 8.00);
SELECT orders.confirm_order('9999');
\set ON_ERROR_STOP 1

\echo
\echo '== 5. A stale command is rejected: someone read order 1002 at version 2,'
\echo '==    another user added an item meanwhile, then the first user confirms'
SELECT (orders.load('1002') ->> 'version') AS version_read;
SELECT orders.add_item('1002', 'TEA-3', 2, 4.50) AS concurrent_version;
\set ON_ERROR_STOP 0
SELECT orders.confirm_order('1002', expected_version => 2);
\set ON_ERROR_STOP 1
\echo 'reload and retry:'
SELECT orders.confirm_order('1002', expected_version => 3) AS version;

\echo
\echo '== 6. Time travel with es_fold: order 1001 now, and as it was at version 3'
SELECT orders.load('1001') AS now;
SELECT orders.load('1001', up_to_version => 3) AS at_version_3;

\echo
\echo '== 7. Rebuild the read model from the log (after damaging it)'
UPDATE orders.order_summary SET total_amount = 0;
CALL es.es_rebuild_projection('order_summary', 'TRUNCATE orders.order_summary');
SELECT order_id, customer_id, status, item_count, total_amount FROM orders.order_summary ORDER BY order_id;
SELECT projection, state, replayed, finished_at IS NOT NULL AS finished FROM es.projection_status;

\echo
\echo '== 8. The global log, as a subscriber reads it (cursor order)'
SELECT stream_id, version, event_type, log_cursor FROM es.es_read_all(NULL, 100, 'order');

\echo
\echo '== 9. An asynchronous read model (customer_stats), applied by a background worker:'
\echo '==    the command returns at once; es_wait_for waits for its token (read your writes)'
SELECT orders.create_order('1003', 'c-bob') AS version;
SELECT orders.add_item('1003', 'BOOK-42', 1, 12.50) AS version;
SELECT orders.confirm_order('1003') AS version;
SELECT es.es_wait_for('customer_stats', orders.last_token(), '5 seconds') AS applied;
SELECT * FROM orders.customer_stats ORDER BY customer_id;
SELECT projection, mode, state, events_behind, lag FROM es.projections ORDER BY projection;

\echo
\echo '== 10. A rule across streams: a coupon code is redeemed by one order at a time.'
\echo '==     apply_coupon reads the coupon''s events from every order by their tag,'
\echo '==     decides, and appends on condition that none appeared since its read'
SELECT orders.create_order('1004', 'c-cy') AS version;
SELECT orders.create_order('1005', 'c-dee') AS version;
SELECT orders.apply_coupon('1004', 'WELCOME10') AS version;
SELECT stream_id, version, event_type, tags, log_cursor
  FROM es.es_read_query('[{"types": ["CouponApplied", "OrderCancelled"], "tags": ["coupon:WELCOME10"]}]');
\echo 'a second redemption, by another order (expected error):'
\set ON_ERROR_STOP 0
SELECT orders.apply_coupon('1005', 'WELCOME10');
\set ON_ERROR_STOP 1
\echo 'the race: order 1005 read the coupon''s events when it was still free (no event:'
\echo 'after => NULL), order 1004 redeemed it first; the append of 1005 fails'
\echo '(expected error, SQLSTATE 40001, constraint es_append_condition):'
\set ON_ERROR_STOP 0
SELECT * FROM es.es_append('order-1005', 1,
  '[{"type": "CouponApplied", "data": {"code": "WELCOME10"}, "tags": ["coupon:WELCOME10"]}]',
  fail_if_events_match => '[{"types": ["CouponApplied", "OrderCancelled"], "tags": ["coupon:WELCOME10"]}]',
  after => NULL);
\set ON_ERROR_STOP 1
\echo 'cancelling order 1004 gives the coupon back; now order 1005 may redeem it:'
SELECT orders.cancel_order('1004', 'changed my mind') AS version;
SELECT orders.apply_coupon('1005', 'WELCOME10') AS version;
SELECT holder FROM orders.coupon_holder('WELCOME10');

\echo
\echo '== 11. The right to be forgotten: customer c-ann''s name and email are stored'
\echo '==     encrypted with her key; forgetting her destroys the key'
SELECT orders.register_customer('c-ann', 'Ann Example', 'ann@example.org', 'NO') AS version;
\echo 'as stored (markers):'
SELECT data FROM es.events WHERE stream_id = 'customer-c-ann';
\echo 'as read by a role allowed to decrypt:'
SELECT data FROM es.es_read_stream('customer-c-ann');
SELECT orders.forget_customer('c-ann') AS key_destroyed;
\echo 'after es_forget_subject, every read shows the redaction marker:'
SELECT data FROM es.es_read_stream('customer-c-ann');
