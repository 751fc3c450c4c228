-- outbox_routes: what es_append writes into es.outbox, in the appending
-- transaction, and for which events: the table (the columns of Debezium's
-- outbox event router, its autovacuum settings), routes by category, by
-- event type and by both, a stream id without "-", idempotent retries,
-- rollback and savepoints, a route made in a transaction that rolls back,
-- unroute, and that nothing but es_append writes the outbox.  The errors of
-- es_outbox_route are in outbox_errors.
-- The categories of the outbox tests start with "ob"; oba to obf are used
-- only here.  No route and no outbox row of this file is left at its end.

-- the outbox has the columns of Debezium's outbox event router
SELECT column_name, data_type, is_nullable
  FROM information_schema.columns
 WHERE table_schema = 'es' AND table_name = 'outbox'
 ORDER BY ordinal_position;

-- the queue tables carry per-table autovacuum settings
SELECT relname, reloptions FROM pg_class
 WHERE relnamespace = 'es'::regnamespace AND relname IN ('outbox', 'outbox_deliveries')
 ORDER BY relname;

-- the outbox rows of a category, checked against the events they copy
CREATE FUNCTION ob_rows(cat text)
RETURNS TABLE (aggregateid text, version bigint, type text, payload jsonb, metadata jsonb,
			   same_event boolean)
LANGUAGE sql AS $$
	SELECT o.aggregateid, o.stream_version, o.type, o.payload, o.metadata,
		   (o.id, o.global_position, o.created_at, o.schema_version, o.aggregatetype)
		   = (e.event_id, e.global_position, e.recorded_at, e.schema_version, e.category)
	  FROM es.outbox AS o
	  JOIN es.events AS e ON e.stream_id = o.aggregateid AND e.version = o.stream_version
	 WHERE o.aggregatetype = cat
	 ORDER BY o.position
$$;

-- no route, no outbox row
SELECT version FROM es.es_append('oba-1', 0, '[{"type": "Opened", "data": {}}]');
SELECT count(*) FROM es.outbox WHERE aggregatetype = 'oba';

-- a category route: every event of the category, with data and metadata
SELECT es.es_outbox_route('oba');
SELECT es.es_outbox_route('oba') AS added_again;
SELECT category, event_type FROM es.outbox_routes WHERE category = 'oba';
SELECT version FROM es.es_append('oba-1', 1,
	'[{"type": "Deposited", "data": {"n": 1}},
	  {"type": "Deposited", "data": {"n": 2}, "metadata": {"correlation_id": "c-1"}, "schema_version": 2}]');
SELECT * FROM ob_rows('oba');

-- an event type route, in any category: only the matching events of a batch
SELECT es.es_outbox_route(event_type => 'ObShipped');
SELECT version FROM es.es_append('obb-1', 0,
	'[{"type": "Created", "data": {}}, {"type": "ObShipped", "data": {"to": "x"}}, {"type": "Created", "data": {}}]');
SELECT * FROM ob_rows('obb');

-- a category and type route
SELECT es.es_outbox_route('obc', 'Paid');
SELECT version FROM es.es_append('obc-1', 0, '[{"type": "Created", "data": {}}, {"type": "Paid", "data": {"amount": 5}}]');
SELECT version FROM es.es_append('obc-2', 0, '[{"type": "Paid", "data": {"amount": 6}}]');
SELECT * FROM ob_rows('obc');

-- a stream id without "-" is its own category
SELECT es.es_outbox_route('obd');
SELECT version FROM es.es_append('obd', 0, '[{"type": "Solo", "data": {}}]');
SELECT * FROM ob_rows('obd');

-- an idempotent retry writes nothing twice
SELECT es.es_outbox_route('obe');
SELECT version FROM es.es_append('obe-1', 0, '[{"type": "Once", "data": {}, "id": "2b0f4a6e-6a4e-4f53-9e0d-4f0c9d3b1a01"}]');
SELECT version FROM es.es_append('obe-1', 0, '[{"type": "Once", "data": {}, "id": "2b0f4a6e-6a4e-4f53-9e0d-4f0c9d3b1a01"}]');
SELECT * FROM ob_rows('obe');

-- a rolled-back append leaves no outbox row, nor does one rolled back to a savepoint
BEGIN;
SELECT version FROM es.es_append('obe-2', 0, '[{"type": "Lost", "data": {}}]');
ROLLBACK;
BEGIN;
SAVEPOINT sp;
SELECT version FROM es.es_append('obe-3', 0, '[{"type": "Lost", "data": {}}]');
ROLLBACK TO SAVEPOINT sp;
SELECT version FROM es.es_append('obe-4', 0, '[{"type": "Kept", "data": {}}]');
COMMIT;
SELECT * FROM ob_rows('obe');

-- a route applies at once in its own transaction, and is forgotten when
-- that transaction rolls back
BEGIN;
SELECT es.es_outbox_route('obf');
SELECT version FROM es.es_append('obf-1', 0, '[{"type": "InTx", "data": {}}]');
SELECT count(*) AS rows_in_tx FROM es.outbox WHERE aggregatetype = 'obf';
ROLLBACK;
SELECT version FROM es.es_append('obf-1', 0, '[{"type": "AfterRollback", "data": {}}]');
SELECT count(*) AS rows_after FROM es.outbox WHERE aggregatetype = 'obf';

-- unroute
SELECT es.es_outbox_unroute('oba');
SELECT es.es_outbox_unroute('oba') AS removed_again;
SELECT es.es_outbox_unroute(event_type => 'ObShipped');
SELECT version FROM es.es_append('oba-1', 3, '[{"type": "Closed", "data": {}}]');
SELECT count(*) FROM es.outbox WHERE aggregatetype = 'oba';


-- the outbox is written only by es_append; UPDATE is refused too
SELECT try($$INSERT INTO es.outbox (id, aggregatetype, aggregateid, type, payload, stream_version,
			schema_version, global_position, created_at)
			VALUES (gen_random_uuid(), 'obz', 'obz-1', 'Forged', '{}', 1, 1, 1, now())$$);
SELECT try($$UPDATE es.outbox SET payload = '{}' WHERE aggregatetype = 'obc'$$);

-- clean up: no route of this file is left behind (those of oba and
-- ObShipped went above), and its outbox rows go with the cleanup
SELECT es.es_outbox_unroute('obc', 'Paid'), es.es_outbox_unroute('obd'), es.es_outbox_unroute('obe');
SELECT count(*) AS routes_left FROM es.outbox_routes WHERE category LIKE 'ob%';
SELECT es.es_outbox_cleanup() >= 0 AS cleaned;
DROP FUNCTION ob_rows(text);
