-- examples/order_management.sql — the worked example: order management with
-- event sourcing and CQRS inside PostgreSQL.
--
-- Load it into a database where es_ext is installed:
--     psql -d mydb -f examples/order_management.sql
--
-- Write side: commands are SQL functions.  Each loads the order's state by
-- folding its stream (es_fold with the reducer orders.apply), checks the
-- business rules, and appends the resulting event with the version it read as
-- the expected version, so a concurrent change makes it fail with 40001
-- instead of acting on stale state.
--
-- Read side: orders.order_summary is a read model kept in the appending
-- transaction by the projection trigger order_summary (es_project dispatches
-- each event type to a handler); orders.customer_orders lists a customer's
-- orders, newest first.  es_rebuild_projection('order_summary', ...) rebuilds
-- it from the log.  orders.customer_stats is an asynchronous read model
-- (projection customer_stats, applied off the appending path); a client
-- reads its own writes there with es_wait_for('customer_stats',
-- orders.last_token(), timeout).
--
-- A rule across streams: a coupon code is redeemed by one order at a time,
-- across all orders.  orders.apply_coupon reads the coupon's events from every
-- order stream by their tag (es_read_query), decides, and appends with the
-- same query as its append condition: a concurrent redemption of the same
-- code in another order makes it fail with 40001 (constraint
-- es_append_condition) instead of redeeming the code twice.  Cancelling an
-- order gives its coupon back.
--
-- Personal data (crypto-shredding): a customer's name and email are
-- declared personal when orders.register_customer appends CustomerRegistered
-- to the stream "customer-<customer id>", with the customer id as the data
-- subject (an opaque id: it says nothing about the person).  They are stored
-- encrypted with the customer's key (pgcrypto), read in clear by roles
-- allowed to (es_pii_reader; the superuser here), and
-- orders.forget_customer (es_forget_subject) destroys the key: every read
-- then shows {"$es_redacted": "subject forgotten", ...} in their place,
-- while the orders, which hold no personal data, stay as they were.
--
-- Streams are named "order-<order id>" (category "order").  Events:
--   OrderCreated   {"order_id", "customer_id"}
--   ItemAdded      {"sku", "qty", "price"}
--   ItemRemoved    {"sku", "qty", "price"}   (what was removed)
--   CouponApplied  {"code"}                  tags: coupon:<code>
--   OrderConfirmed {}
--   OrderCancelled {"reason"}                tags: coupon:<code> if it had one
--
-- Business-rule errors:
--   P0002 no_data_found                     the order does not exist
--   42710 duplicate_object                  the order already exists
--   23505 unique_violation                  the coupon is redeemed by another order
--   22023 invalid_parameter_value           bad quantity, price, sku, coupon or customer
--   55000 object_not_in_prerequisite_state  the order's status forbids the command
--   40001 serialization_failure             the order changed since it was read, or
--                                           (constraint es_append_condition) the
--                                           coupon was redeemed meanwhile (retry)

CREATE EXTENSION IF NOT EXISTS pgcrypto;	-- the cipher of personal data
CREATE SCHEMA orders;
COMMENT ON SCHEMA orders IS 'es_ext worked example: order management';

/*
 * The reducer: (state, event) -> state.  State:
 *   {"version": n, "status": "draft"|"confirmed"|"cancelled",
 *    "customer_id": "...", "items": {"<sku>": {"qty": q, "price": p}},
 *    "coupon": "<code>" (once one is applied)}
 * An order that does not exist folds to the initial state {}.
 */
CREATE FUNCTION orders.apply(state jsonb, event jsonb) RETURNS jsonb
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
RETURN CASE event ->> 'type'
	WHEN 'OrderCreated' THEN
		jsonb_build_object('status', 'draft',
						   'customer_id', event -> 'data' -> 'customer_id',
						   'items', '{}'::jsonb)
	WHEN 'ItemAdded' THEN
		jsonb_set(state, ARRAY['items', event -> 'data' ->> 'sku'],
				  jsonb_build_object('qty', coalesce((state -> 'items' -> (event -> 'data' ->> 'sku') ->> 'qty')::int, 0)
											+ (event -> 'data' ->> 'qty')::int,
									 'price', event -> 'data' -> 'price'))
	WHEN 'ItemRemoved' THEN
		jsonb_set(state, '{items}', (state -> 'items') - (event -> 'data' ->> 'sku'))
	WHEN 'CouponApplied' THEN
		state || jsonb_build_object('coupon', event -> 'data' -> 'code')
	WHEN 'OrderConfirmed' THEN
		jsonb_set(state, '{status}', '"confirmed"')
	WHEN 'OrderCancelled' THEN
		jsonb_set(state, '{status}', '"cancelled"') || jsonb_build_object('reason', event -> 'data' -> 'reason')
	ELSE state
END || jsonb_build_object('version', event -> 'version');
COMMENT ON FUNCTION orders.apply(jsonb, jsonb) IS 'order reducer: state after one more event';

/* Load an order: its state, with "version" 0 when it does not exist; optionally as it was. */
CREATE FUNCTION orders.load(order_id text, up_to_version bigint DEFAULT NULL,
							as_of timestamptz DEFAULT NULL) RETURNS jsonb
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
RETURN es.es_fold('order-' || order_id, 'orders.apply(jsonb,jsonb)'::regprocedure,
				  '{"version": 0}'::jsonb, up_to_version, as_of);

/*
 * Append one event to an order, expecting the version the command decided on.
 * expected_version: what the caller read (NULL: the version just loaded).
 * tags: the event's tags (a JSON array; NULL: none).  condition, after: an
 * append condition (es_append's fail_if_events_match and after; NULL: none).
 */
CREATE FUNCTION orders.emit(order_id text, state jsonb, expected_version bigint,
							event_type text, data jsonb, tags jsonb DEFAULT NULL,
							condition jsonb DEFAULT NULL, after es.log_cursor DEFAULT NULL)
RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	r es.append_result;
BEGIN
	r := es.es_append('order-' || order_id,
					  coalesce(expected_version, (state ->> 'version')::bigint),
					  jsonb_build_array(jsonb_build_object('type', event_type, 'data', data,
														   'tags', tags)),
					  fail_if_events_match => condition, after => after);
	-- the consistency token, for a read-your-writes wait (orders.last_token())
	PERFORM set_config('orders.last_token', r.token::text, false);
	RETURN r.version;
END
$$;

CREATE FUNCTION orders.require(order_id text, state jsonb, allowed text[], command text) RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	IF (state ->> 'version')::bigint = 0 THEN
		RAISE EXCEPTION 'order "%" does not exist', order_id
			USING ERRCODE = 'no_data_found';
	END IF;
	IF NOT (state ->> 'status') = ANY (allowed) THEN
		RAISE EXCEPTION 'cannot % order "%" because it is %', command, order_id, state ->> 'status'
			USING ERRCODE = 'object_not_in_prerequisite_state',
				  HINT = format('Only orders that are %s accept this command.',
								array_to_string(allowed, ' or '));
	END IF;
END
$$;

/* Commands.  Each returns the order's new version. */

CREATE FUNCTION orders.create_order(order_id text, customer_id text) RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	IF coalesce(order_id, '') = '' OR coalesce(customer_id, '') = '' THEN
		RAISE EXCEPTION 'order id and customer id are required' USING ERRCODE = 'invalid_parameter_value';
	END IF;
	IF es.es_stream_version('order-' || order_id) > 0 THEN
		RAISE EXCEPTION 'order "%" already exists', order_id USING ERRCODE = 'duplicate_object';
	END IF;
	-- expected version 0: a concurrent create of the same order fails with 40001
	RETURN orders.emit(order_id, '{"version": 0}', 0, 'OrderCreated',
					   jsonb_build_object('order_id', order_id, 'customer_id', customer_id));
END
$$;

CREATE FUNCTION orders.add_item(order_id text, sku text, qty integer, price numeric,
								expected_version bigint DEFAULT NULL) RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	state jsonb := orders.load(order_id);
BEGIN
	PERFORM orders.require(order_id, state, '{draft}', 'add items to');
	IF coalesce(sku, '') = '' THEN
		RAISE EXCEPTION 'sku is required' USING ERRCODE = 'invalid_parameter_value';
	END IF;
	IF qty IS NULL OR qty <= 0 THEN
		RAISE EXCEPTION 'quantity must be positive, got %', coalesce(qty::text, 'NULL')
			USING ERRCODE = 'invalid_parameter_value';
	END IF;
	IF price IS NULL OR price < 0 THEN
		RAISE EXCEPTION 'price cannot be negative or NULL' USING ERRCODE = 'invalid_parameter_value';
	END IF;
	IF state -> 'items' ? sku AND (state -> 'items' -> sku ->> 'price')::numeric <> price THEN
		RAISE EXCEPTION 'sku "%" is already in order "%" at another price', sku, order_id
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'Remove the item first to change its price.';
	END IF;
	RETURN orders.emit(order_id, state, expected_version, 'ItemAdded',
					   jsonb_build_object('sku', sku, 'qty', qty, 'price', price));
END
$$;

CREATE FUNCTION orders.remove_item(order_id text, sku text,
								   expected_version bigint DEFAULT NULL) RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	state jsonb := orders.load(order_id);
BEGIN
	PERFORM orders.require(order_id, state, '{draft}', 'remove items from');
	IF NOT coalesce(state -> 'items' ? sku, false) THEN
		RAISE EXCEPTION 'order "%" has no item "%"', order_id, sku USING ERRCODE = 'invalid_parameter_value';
	END IF;
	RETURN orders.emit(order_id, state, expected_version, 'ItemRemoved',
					   jsonb_build_object('sku', sku) || (state -> 'items' -> sku));
END
$$;

CREATE FUNCTION orders.confirm_order(order_id text, expected_version bigint DEFAULT NULL) RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	state jsonb := orders.load(order_id);
BEGIN
	PERFORM orders.require(order_id, state, '{draft}', 'confirm');
	IF state -> 'items' = '{}'::jsonb THEN
		RAISE EXCEPTION 'cannot confirm order "%" because it has no items', order_id
			USING ERRCODE = 'object_not_in_prerequisite_state';
	END IF;
	RETURN orders.emit(order_id, state, expected_version, 'OrderConfirmed', '{}');
END
$$;

CREATE FUNCTION orders.cancel_order(order_id text, reason text,
									expected_version bigint DEFAULT NULL) RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	state jsonb := orders.load(order_id);
BEGIN
	PERFORM orders.require(order_id, state, '{draft,confirmed}', 'cancel');
	-- tagged with its coupon, which it gives back (see orders.apply_coupon)
	RETURN orders.emit(order_id, state, expected_version, 'OrderCancelled',
					   jsonb_build_object('reason', coalesce(reason, 'no reason given')),
					   tags => CASE WHEN state ? 'coupon'
									THEN jsonb_build_array('coupon:' || (state ->> 'coupon')) END);
END
$$;

/*
 * The coupon's events across all orders: its redemptions and the
 * cancellations that gave it back (both tagged coupon:<code>).
 */
CREATE FUNCTION orders.coupon_query(code text) RETURNS jsonb
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
RETURN jsonb_build_array(jsonb_build_object(
		   'types', jsonb_build_array('CouponApplied', 'OrderCancelled'),
		   'tags', jsonb_build_array('coupon:' || code)));

/*
 * The order holding a coupon now (NULL: the coupon is free), and the log
 * cursor of the last of the coupon's events (NULL: it has none), the "after"
 * of an append condition on orders.coupon_query(code).
 */
CREATE FUNCTION orders.coupon_holder(code text, OUT holder text, OUT after es.log_cursor)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	e record;
BEGIN
	FOR e IN SELECT r.stream_id, r.event_type, r.log_cursor
			   FROM es.es_read_query(orders.coupon_query(code)) AS r
	LOOP
		IF e.event_type = 'CouponApplied' THEN
			holder := substr(e.stream_id, 7);
		ELSIF holder = substr(e.stream_id, 7) THEN
			holder := NULL;			-- its order was cancelled
		END IF;
		after := e.log_cursor;		-- rows come in log order: the last is the greatest
	END LOOP;
END
$$;

/*
 * Redeem a coupon code for a draft order.  The code is redeemed by one order
 * at a time across all orders: a rule no single stream can enforce.  The
 * append carries the order's expected version and, as its condition, the
 * query the decision read, after the last event it read; if another order
 * redeems the code meanwhile (even concurrently) the append fails with 40001,
 * constraint es_append_condition: run the command again (it then fails with
 * 23505 if that order kept the code).
 */
CREATE FUNCTION orders.apply_coupon(order_id text, code text,
									expected_version bigint DEFAULT NULL) RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	state jsonb := orders.load(order_id);
	c record;
BEGIN
	PERFORM orders.require(order_id, state, '{draft}', 'apply a coupon to');
	IF coalesce(code, '') = '' OR length(code) > 64 THEN
		RAISE EXCEPTION 'coupon code must have 1 to 64 characters' USING ERRCODE = 'invalid_parameter_value';
	END IF;
	IF state ? 'coupon' THEN
		RAISE EXCEPTION 'order "%" already has coupon "%"', order_id, state ->> 'coupon'
			USING ERRCODE = 'object_not_in_prerequisite_state';
	END IF;
	SELECT * INTO c FROM orders.coupon_holder(code);
	IF c.holder IS NOT NULL THEN
		RAISE EXCEPTION 'coupon "%" is already redeemed by order "%"', code, c.holder
			USING ERRCODE = 'unique_violation';
	END IF;
	RETURN orders.emit(order_id, state, expected_version, 'CouponApplied',
					   jsonb_build_object('code', code),
					   tags => jsonb_build_array('coupon:' || code),
					   condition => orders.coupon_query(code), after => c.after);
END
$$;

/*
 * Read model: one row per order, kept by the projection trigger below in the
 * appending transaction.  The handlers are idempotent per event (each sets
 * last_version and ignores an event at or below it), so replaying history
 * over a partly built model never applies an event twice.
 */
CREATE TABLE orders.order_summary (
	order_id		text PRIMARY KEY,
	customer_id		text NOT NULL,
	status			text NOT NULL,
	item_count		integer NOT NULL DEFAULT 0,
	total_amount	numeric(12, 2) NOT NULL DEFAULT 0,
	created_at		timestamptz NOT NULL,
	last_updated	timestamptz NOT NULL,
	last_version	bigint NOT NULL
);
CREATE INDEX order_summary_customer_idx ON orders.order_summary (customer_id, created_at DESC);
COMMENT ON TABLE orders.order_summary IS 'read model: one row per order (projection "order_summary")';

CREATE FUNCTION orders.on_created(e es.events) RETURNS void
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
	INSERT INTO orders.order_summary (order_id, customer_id, status, created_at, last_updated, last_version)
	VALUES (e.data ->> 'order_id', e.data ->> 'customer_id', 'draft', e.recorded_at, e.recorded_at, e.version)
	ON CONFLICT (order_id) DO NOTHING;
END;

CREATE FUNCTION orders.on_item(e es.events) RETURNS void
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
	UPDATE orders.order_summary AS s
	   SET item_count = s.item_count + CASE e.event_type WHEN 'ItemAdded' THEN 1 ELSE -1 END
										 * (e.data ->> 'qty')::int,
		   total_amount = s.total_amount + CASE e.event_type WHEN 'ItemAdded' THEN 1 ELSE -1 END
										 * (e.data ->> 'qty')::int * (e.data ->> 'price')::numeric,
		   last_updated = e.recorded_at,
		   last_version = e.version
	 WHERE s.order_id = substr(e.stream_id, 7) AND s.last_version < e.version;
END;

CREATE FUNCTION orders.on_status(e es.events) RETURNS void
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
	UPDATE orders.order_summary AS s
	   SET status = CASE e.event_type WHEN 'OrderConfirmed' THEN 'confirmed' ELSE 'cancelled' END,
		   last_updated = e.recorded_at,
		   last_version = e.version
	 WHERE s.order_id = substr(e.stream_id, 7) AND s.last_version < e.version;
END;

CREATE TRIGGER order_summary AFTER INSERT ON es.events
	FOR EACH ROW WHEN (NEW.category = 'order')
	EXECUTE FUNCTION es.es_project('OrderCreated', 'orders.on_created',
								   'ItemAdded', 'orders.on_item',
								   'ItemRemoved', 'orders.on_item',
								   'OrderConfirmed', 'orders.on_status',
								   'OrderCancelled', 'orders.on_status');

/* A customer's orders, newest first: SELECT * FROM orders.customer_orders WHERE customer_id = 'c-1'; */
CREATE VIEW orders.customer_orders AS
	SELECT customer_id, order_id, status, item_count, total_amount, created_at, last_updated
	  FROM orders.order_summary
	 ORDER BY customer_id, created_at DESC, order_id;
COMMENT ON VIEW orders.customer_orders IS 'orders of each customer, newest first';

/*
 * An asynchronous read model: per customer, the orders created, confirmed
 * and cancelled, and the amount of the confirmed ones.  Its trigger is kept
 * disabled and applied off the appending path, in batches: by the background
 * worker when es_ext is in shared_preload_libraries, otherwise by
 * CALL es.es_run_projections() (from a client or pg_cron).  Appends do not
 * wait for it, and a failing handler does not refuse the events.
 *
 * Read-your-writes: every command leaves the consistency token of its append
 * in the session (orders.last_token()); a client that must see its own
 * write in this read model waits for it, in the same round trip:
 *     SELECT orders.confirm_order('o-1');
 *     SELECT es.es_wait_for('customer_stats', orders.last_token(), '5 seconds');
 *     SELECT * FROM orders.customer_stats WHERE customer_id = 'c-1';
 * The token is a session setting: behind a transaction-pooling connection
 * pooler, carry the token es_append returned yourself instead.
 */
CREATE TABLE orders.customer_stats (
	customer_id			text PRIMARY KEY,
	orders_created		integer NOT NULL DEFAULT 0,
	orders_confirmed	integer NOT NULL DEFAULT 0,
	orders_cancelled	integer NOT NULL DEFAULT 0,
	confirmed_amount	numeric(12, 2) NOT NULL DEFAULT 0
);
COMMENT ON TABLE orders.customer_stats IS 'asynchronous read model: orders and confirmed amount per customer (projection "customer_stats")';

CREATE FUNCTION orders.on_stats(e es.events) RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	state jsonb := orders.load(substr(e.stream_id, 7), e.version);
BEGIN
	IF state ->> 'customer_id' IS NULL THEN
		RETURN;					-- not an order of this model
	END IF;
	INSERT INTO orders.customer_stats AS s (customer_id, orders_created, orders_confirmed, orders_cancelled,
											confirmed_amount)
	VALUES (state ->> 'customer_id',
			CASE e.event_type WHEN 'OrderCreated' THEN 1 ELSE 0 END,
			CASE e.event_type WHEN 'OrderConfirmed' THEN 1 ELSE 0 END,
			CASE e.event_type WHEN 'OrderCancelled' THEN 1 ELSE 0 END,
			CASE e.event_type WHEN 'OrderConfirmed'
				 THEN (SELECT coalesce(sum((i.value ->> 'qty')::int * (i.value ->> 'price')::numeric), 0)
						 FROM jsonb_each(state -> 'items') AS i)
				 ELSE 0 END)
	ON CONFLICT (customer_id) DO UPDATE
	   SET orders_created = s.orders_created + excluded.orders_created,
		   orders_confirmed = s.orders_confirmed + excluded.orders_confirmed,
		   orders_cancelled = s.orders_cancelled + excluded.orders_cancelled,
		   confirmed_amount = s.confirmed_amount + excluded.confirmed_amount;
END
$$;

BEGIN;
CREATE TRIGGER customer_stats AFTER INSERT ON es.events
	FOR EACH ROW EXECUTE FUNCTION es.es_project('orders.on_stats');
SELECT es.es_create_async_projection('customer_stats', batch_size => 500,
									 categories => '{order}',
									 event_types => '{OrderCreated,OrderConfirmed,OrderCancelled}');
COMMIT;

/*
 * Customers: CustomerRegistered {"customer_id", "name", "email", "country"}
 * in stream "customer-<customer id>"; name and email are personal, with the
 * customer id as the data subject.
 */
CREATE FUNCTION orders.register_customer(customer_id text, name text, email text,
										 country text) RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	IF customer_id IS NULL OR customer_id = '' THEN
		RAISE EXCEPTION 'customer id is required' USING ERRCODE = 'invalid_parameter_value';
	END IF;
	RETURN (es.es_append('customer-' || customer_id, 0, jsonb_build_array(jsonb_build_object(
		'type', 'CustomerRegistered',
		'data', jsonb_build_object('customer_id', customer_id, 'name', name,
								   'email', email, 'country', country),
		'personal', jsonb_build_object('subject', customer_id,
									   'fields', jsonb_build_array('name', 'email')))))).version;
END
$$;

/* The right to be forgotten: the customer's key is destroyed. */
CREATE FUNCTION orders.forget_customer(customer_id text) RETURNS boolean
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
RETURN es.es_forget_subject(customer_id);

/* The consistency token of this session's last command (NULL before the first). */
CREATE FUNCTION orders.last_token() RETURNS es.log_cursor
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
RETURN nullif(current_setting('orders.last_token', true), '')::es.log_cursor;
