-- outbox: rows written in the appending transaction for routed events,
-- consumer groups (claim, ack, nack, attempts and backoff, dead letters,
-- replay, fan-out), cleanup, the wake-up settings, privileges, errors.
-- Every category used here starts with "ob" and is used nowhere else.

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

-- route errors
SELECT try($$SELECT es.es_outbox_route('')$$);
SELECT try($$SELECT es.es_outbox_route('obz', '')$$);
SELECT try($$SELECT es.es_outbox_route(repeat('x', 1025))$$);

-- the outbox is written only by es_append; UPDATE is refused too
SELECT try($$INSERT INTO es.outbox (id, aggregatetype, aggregateid, type, payload, stream_version,
			schema_version, global_position, created_at)
			VALUES (gen_random_uuid(), 'obz', 'obz-1', 'Forged', '{}', 1, 1, 1, now())$$);
SELECT try($$UPDATE es.outbox SET payload = '{}' WHERE aggregatetype = 'obc'$$);

--
-- Consumer groups
--
SELECT es.es_outbox_create_group('regress_g1') > 0 AS created;
SELECT es.es_outbox_create_group('regress_g2', max_attempts => 3,
								 backoff_base => '1 hour', backoff_max => '90 minutes') > 0 AS created;
SELECT name, max_attempts, backoff_base, backoff_max FROM es.outbox_groups
 WHERE name LIKE 'regress_g%' ORDER BY name;

-- group errors
SELECT try($$SELECT es.es_outbox_create_group('regress_g1')$$);
SELECT try($$SELECT es.es_outbox_create_group(NULL)$$);
SELECT try($$SELECT es.es_outbox_create_group('regress_gx', max_attempts => NULL)$$);
SELECT try($$SELECT es.es_outbox_create_group('')$$);
SELECT try($$SELECT es.es_outbox_create_group(repeat('g', 64))$$);
SELECT try($$SELECT es.es_outbox_create_group('regress_gx', max_attempts => 0)$$);
SELECT try($$SELECT es.es_outbox_create_group('regress_gx', backoff_base => '0')$$);
SELECT try($$SELECT es.es_outbox_create_group('regress_gx', backoff_base => '1 minute', backoff_max => '1 second')$$);
SELECT try($$SELECT es.es_outbox_drop_group('regress_gx')$$);
SELECT try($$SELECT es.es_outbox_drop_group(NULL)$$);

-- fan-out: each group gets a delivery of every message routed from now on
SELECT es.es_outbox_route('obq');
SELECT version FROM es.es_append('obq-1', 0, '[{"type": "A1", "data": {}}, {"type": "A2", "data": {}}]');
SELECT version FROM es.es_append('obq-2', 0, '[{"type": "B1", "data": {}}]');
CREATE VIEW ob_deliveries AS
	SELECT g.name AS grp, o.aggregateid AS stream, o.stream_version AS version, d.attempts,
		   d.lease IS NOT NULL AS leased, d.last_error, d.visible_at, o.position
	  FROM es.outbox_deliveries AS d
	  JOIN es.outbox_groups AS g USING (group_id)
	  JOIN es.outbox AS o USING (position)
	 WHERE g.name LIKE 'regress_g%';
SELECT grp, stream, version, attempts, leased FROM ob_deliveries ORDER BY grp, position;
SELECT consumer_group, undelivered, in_flight, retrying, dead FROM es.outbox_status
 WHERE consumer_group LIKE 'regress_g%' ORDER BY 1;

-- claim: a batch in order, each stream's messages in version order, one lease
CREATE TABLE ob_claims (seq bigserial, grp text, lease uuid, position bigint, attempts int, stream text,
						version bigint, event_type text, data jsonb);
CREATE FUNCTION ob_claim(grp text, n int DEFAULT 10, lease interval DEFAULT '5 minutes')
RETURNS TABLE (stream text, version bigint, event_type text, attempts int)
LANGUAGE sql AS $$
	INSERT INTO ob_claims (grp, lease, position, attempts, stream, version, event_type, data)
	SELECT grp, c.lease, c.position, c.attempts, c.stream_id, c.version, c.event_type, c.data
	  FROM es.es_outbox_claim(grp, n, lease) AS c
	RETURNING stream, version, event_type, attempts
$$;
-- the lease of the last claim of a group, and the positions it claimed (of some streams)
CREATE FUNCTION ob_last(grp text, streams text[] DEFAULT NULL, OUT lease uuid, OUT positions bigint[])
LANGUAGE sql AS $$
	SELECT c.lease, array_agg(c.position ORDER BY c.position)
	  FROM ob_claims AS c
	 WHERE c.grp = ob_last.grp
	   AND c.lease = (SELECT l.lease FROM ob_claims AS l WHERE l.grp = ob_last.grp
					   ORDER BY l.seq DESC LIMIT 1)
	   AND (streams IS NULL OR c.stream = ANY (streams))
	 GROUP BY c.lease
$$;

SELECT * FROM ob_claim('regress_g1');
SELECT count(DISTINCT lease) AS leases FROM ob_claims WHERE grp = 'regress_g1';
-- claimed messages are not claimed again while leased
SELECT * FROM ob_claim('regress_g1');
SELECT grp, stream, version, attempts, leased FROM ob_deliveries WHERE grp = 'regress_g1' ORDER BY position;

-- ack: deletes the deliveries that still hold the lease
SELECT es.es_outbox_ack('regress_g1', l.lease, l.positions) AS acked
  FROM ob_last('regress_g1', '{obq-1}') AS l;
SELECT es.es_outbox_ack('regress_g1', l.lease, l.positions) AS acked_again
  FROM ob_last('regress_g1', '{obq-1}') AS l;

-- nack: back after retry_after, with one more attempt when claimed again
SELECT es.es_outbox_nack('regress_g1', l.lease, l.positions, 'downstream timeout', '0') AS nacked
  FROM ob_last('regress_g1', '{obq-2}') AS l;
SELECT grp, stream, version, attempts, leased, last_error FROM ob_deliveries WHERE grp = 'regress_g1';
SELECT * FROM ob_claim('regress_g1');
-- the old lease no longer settles anything; the new one does
SELECT es.es_outbox_ack('regress_g1', c.lease, ARRAY[c.position]) AS stale_ack
  FROM ob_claims AS c WHERE c.grp = 'regress_g1' AND c.stream = 'obq-2' AND c.attempts = 1;
SELECT es.es_outbox_nack('regress_g1', c.lease, ARRAY[c.position]) AS stale_nack
  FROM ob_claims AS c WHERE c.grp = 'regress_g1' AND c.stream = 'obq-2' AND c.attempts = 1;
SELECT es.es_outbox_ack('regress_g1', l.lease, l.positions) AS acked
  FROM ob_last('regress_g1') AS l;
SELECT count(*) AS undelivered FROM ob_deliveries WHERE grp = 'regress_g1';

-- per-stream order: while a stream's oldest message is leased or waits for
-- its retry, the stream's later messages are not claimable
SELECT version FROM es.es_append('obq-3', 0,
	'[{"type": "C1", "data": {}}, {"type": "C2", "data": {}}, {"type": "C3", "data": {}}]');
SELECT version FROM es.es_append('obq-4', 0, '[{"type": "D1", "data": {}}]');
SELECT * FROM ob_claim('regress_g1', 1);
SELECT * FROM ob_claim('regress_g1', 10);
SELECT es.es_outbox_ack('regress_g1', l.lease, l.positions) AS acked_obq4
  FROM ob_last('regress_g1', '{obq-4}') AS l;
SELECT es.es_outbox_nack('regress_g1', c.lease, ARRAY[c.position], 'not yet', '1 hour') AS nacked
  FROM ob_claims AS c WHERE c.grp = 'regress_g1' AND c.stream = 'obq-3' AND c.version = 1;
SELECT * FROM ob_claim('regress_g1', 10);
-- retry due (an hour later): the head and the rest of its stream come as
-- one run, in order
UPDATE es.outbox_deliveries AS d SET visible_at = now() - interval '1 second'
  FROM es.outbox_groups AS g
 WHERE g.group_id = d.group_id AND g.name = 'regress_g1';
SELECT * FROM ob_claim('regress_g1', 10);
SELECT es.es_outbox_ack('regress_g1', l.lease, l.positions) AS acked
  FROM ob_last('regress_g1') AS l;

-- backoff: base * 2^(attempts - 1), at most backoff_max (regress_g2: 1 h,
-- 90 min); while a stream's oldest message waits, the stream waits
SELECT * FROM ob_claim('regress_g2', 3);
SELECT es.es_outbox_nack('regress_g2', l.lease, l.positions, 'boom') AS nacked
  FROM ob_last('regress_g2') AS l;
SELECT stream, version, attempts, leased, last_error,
	   visible_at BETWEEN now() + interval '59 minutes' AND now() + interval '61 minutes' AS in_1h
  FROM ob_deliveries WHERE grp = 'regress_g2' AND stream IN ('obq-1', 'obq-2') ORDER BY position;
SELECT * FROM ob_claim('regress_g2', 3);
-- (each UPDATE below stands for the backoff going by)
UPDATE es.outbox_deliveries AS d SET visible_at = now() - interval '1 second'
  FROM es.outbox_groups AS g
 WHERE g.group_id = d.group_id AND g.name = 'regress_g2' AND d.lease IS NULL;
SELECT * FROM ob_claim('regress_g2', 2);
SELECT es.es_outbox_nack('regress_g2', l.lease, l.positions, 'boom again') AS nacked
  FROM ob_last('regress_g2') AS l;
SELECT stream, version, attempts, last_error,
	   visible_at BETWEEN now() + interval '89 minutes' AND now() + interval '91 minutes' AS in_90min
  FROM ob_deliveries WHERE grp = 'regress_g2' AND attempts = 2 ORDER BY position;

-- dead letters: a nack after the last attempt (max_attempts 3) moves the
-- messages to the dead letters
UPDATE es.outbox_deliveries AS d SET visible_at = now() - interval '1 second'
  FROM es.outbox_groups AS g
 WHERE g.group_id = d.group_id AND g.name = 'regress_g2' AND d.lease IS NULL;
SELECT * FROM ob_claim('regress_g2', 2);
SELECT es.es_outbox_nack('regress_g2', l.lease, l.positions, 'boom, third time') AS nacked
  FROM ob_last('regress_g2') AS l;
SELECT consumer_group, stream_id, version, event_type, attempts, last_error, data
  FROM es.outbox_dead_letters WHERE consumer_group = 'regress_g2' ORDER BY position;
-- a dead letter no longer blocks its stream: obq-1 goes on with version 2
SELECT * FROM ob_claim('regress_g2', 1);
SELECT es.es_outbox_ack('regress_g2', l.lease, l.positions) AS acked
  FROM ob_last('regress_g2') AS l;

-- a lease that runs out counts as an attempt: obq-3 v1 (1 attempt so far)
-- and obq-4 v1 (claimed above, never settled) are claimed with short leases
-- until their third attempt runs out; the next claim moves them to the dead
-- letters instead of returning them, the one after goes on with obq-3 v2
UPDATE es.outbox_deliveries AS d SET visible_at = now() - interval '1 second'
  FROM es.outbox_groups AS g
 WHERE g.group_id = d.group_id AND g.name = 'regress_g2';
SELECT * FROM ob_claim('regress_g2', 10, '10 milliseconds');
SELECT pg_sleep(0.05);
SELECT * FROM ob_claim('regress_g2', 10, '10 milliseconds');
SELECT pg_sleep(0.05);
SELECT * FROM ob_claim('regress_g2', 10);
SELECT * FROM ob_claim('regress_g2', 10);
SELECT es.es_outbox_ack('regress_g2', l.lease, l.positions) AS acked
  FROM ob_last('regress_g2') AS l;
SELECT stream_id, version, attempts, last_error FROM es.outbox_dead_letters
 WHERE consumer_group = 'regress_g2' ORDER BY position;
SELECT consumer_group, undelivered, in_flight, retrying, dead FROM es.outbox_status
 WHERE consumer_group = 'regress_g2';

-- cleanup: deletes the rows every group has delivered, older than the
-- retention, except those of dead letters
SELECT count(*) AS obq_rows FROM es.outbox WHERE aggregatetype = 'obq';
SELECT es.es_outbox_cleanup('1 hour') AS cleaned_with_retention;
SELECT count(*) AS obq_rows FROM es.outbox WHERE aggregatetype = 'obq';
SELECT es.es_outbox_cleanup() > 0 AS cleaned;
SELECT aggregateid, stream_version, type FROM es.outbox WHERE aggregatetype = 'obq' ORDER BY position;

-- discard a dead letter: its row goes with the next cleanup
SELECT es.es_outbox_discard('regress_g2', ARRAY[(SELECT position FROM es.outbox_dead_letters
												 WHERE consumer_group = 'regress_g2' AND stream_id = 'obq-3')]) AS discarded;
SELECT es.es_outbox_cleanup() > 0 AS cleaned;
SELECT aggregateid, stream_version, type FROM es.outbox WHERE aggregatetype = 'obq' ORDER BY position;

-- replay: one dead letter, then all the others, back to delivery with
-- fresh attempts, in order
SELECT es.es_outbox_replay('regress_g2', ARRAY[(SELECT position FROM es.outbox_dead_letters
												 WHERE consumer_group = 'regress_g2' AND stream_id = 'obq-2')]) AS replayed;
SELECT * FROM ob_claim('regress_g2', 10);
SELECT es.es_outbox_ack('regress_g2', l.lease, l.positions) AS acked
  FROM ob_last('regress_g2') AS l;
SELECT es.es_outbox_replay('regress_g2') AS replayed;
SELECT * FROM ob_claim('regress_g2', 10);
SELECT es.es_outbox_ack('regress_g2', l.lease, l.positions) AS acked
  FROM ob_last('regress_g2') AS l;
SELECT count(*) AS dead FROM es.outbox_dead_letters WHERE consumer_group = 'regress_g2';
SELECT es.es_outbox_discard('regress_g2') AS discarded_none;
SELECT es.es_outbox_cleanup() > 0 AS cleaned;
SELECT count(*) AS obq_rows FROM es.outbox WHERE aggregatetype = 'obq';

-- a group created with backfill gets the messages already in the outbox
SELECT version FROM es.es_append('obq-5', 0, '[{"type": "E1", "data": {}}]');
SELECT es.es_outbox_create_group('regress_g3', backfill => true) > 0 AS created;
SELECT grp, stream, version FROM ob_deliveries WHERE stream = 'obq-5' ORDER BY grp;
SELECT es.es_outbox_drop_group('regress_g3') > 0 AS dropped;
SELECT try($$SELECT es.es_outbox_drop_group('regress_g3')$$);

-- errors of the consumer functions
SELECT try($$SELECT * FROM es.es_outbox_claim(NULL)$$);
SELECT try($$SELECT * FROM es.es_outbox_claim('regress_g1', NULL)$$);
SELECT try($$SELECT * FROM es.es_outbox_claim('regress_nope')$$);
SELECT try($$SELECT * FROM es.es_outbox_claim('regress_g1', 0)$$);
SELECT try($$SELECT * FROM es.es_outbox_claim('regress_g1', 10001)$$);
SELECT try($$SELECT * FROM es.es_outbox_claim('regress_g1', 10, '0')$$);
SELECT try($$SELECT es.es_outbox_ack('regress_g1', NULL, '{1}')$$);
SELECT try($$SELECT es.es_outbox_ack('regress_g1', gen_random_uuid(), NULL)$$);
SELECT try($$SELECT es.es_outbox_ack('regress_nope', gen_random_uuid(), '{1}')$$);
SELECT try($$SELECT es.es_outbox_nack('regress_g1', gen_random_uuid(), NULL)$$);
SELECT try($$SELECT es.es_outbox_nack('regress_g1', gen_random_uuid(), '{1}', 'x', '-1 second')$$);
SELECT try($$SELECT es.es_outbox_nack('regress_nope', gen_random_uuid(), '{1}')$$);
SELECT try($$SELECT es.es_outbox_replay(NULL)$$);
SELECT try($$SELECT es.es_outbox_replay('regress_nope')$$);
SELECT try($$SELECT es.es_outbox_discard(NULL)$$);
SELECT try($$SELECT es.es_outbox_discard('regress_nope')$$);
SELECT try($$SELECT es.es_outbox_cleanup(NULL)$$);
SELECT try($$SELECT es.es_outbox_cleanup('-1 second')$$);
SELECT try($$SELECT es.es_outbox_cleanup('0', 0)$$);

--
-- Wake-ups: pg_regress runs without shared_preload_libraries, so the
-- default is "commit", and "worker" falls back to it (with one WARNING)
--
SHOW es.notify;
SELECT setting, mode, preloaded, worker_pid, wakeups_requested FROM es.es_outbox_notify_status();
SET es.notify = worker;
SELECT setting, mode, preloaded FROM es.es_outbox_notify_status();
SELECT version FROM es.es_append('obq-6', 0, '[{"type": "F1", "data": {}}]');
SELECT version FROM es.es_append('obq-6', 1, '[{"type": "F2", "data": {}}]');
SET es.notify = off;
SELECT setting, mode FROM es.es_outbox_notify_status();
RESET es.notify;
SELECT try($$SET es.notify = 'sometimes'$$);
SELECT try($$SET es.notify_worker_idle_timeout = '1s'$$);
SHOW es.notify_worker_idle_timeout;

--
-- Privileges: es_consumer consumes, es_writer appends (and so writes the
-- outbox), es_reader reads, es_admin configures
--
CREATE ROLE regress_ob_reader IN ROLE es_reader;
CREATE ROLE regress_ob_writer IN ROLE es_writer;
CREATE ROLE regress_ob_consumer IN ROLE es_consumer;
CREATE ROLE regress_ob_admin IN ROLE es_admin;
CREATE FUNCTION ob_priv(role text) RETURNS TABLE (action text, result text)
LANGUAGE plpgsql AS $$
DECLARE
	actions text[] := ARRAY[
		'append (routed)', 'SELECT es.es_append(''obq-' || role || ''', NULL, ''[{"type": "P", "data": {}}]'')',
		'claim', 'SELECT count(*) FROM es.es_outbox_claim(''regress_g1'', 1, ''1 hour'')',
		'ack', 'SELECT es.es_outbox_ack(''regress_g1'', gen_random_uuid(), ''{1}'')',
		'nack', 'SELECT es.es_outbox_nack(''regress_g1'', gen_random_uuid(), ''{1}'')',
		'replay', 'SELECT es.es_outbox_replay(''regress_g1'')',
		'cleanup', 'SELECT es.es_outbox_cleanup(''1 day'')',
		'dead letters', 'SELECT count(*) FROM es.outbox_dead_letters',
		'status', 'SELECT count(*) FROM es.outbox_status',
		'SELECT es.outbox', 'SELECT count(*) FROM es.outbox',
		'notify status', 'SELECT mode FROM es.es_outbox_notify_status()',
		'route', 'SELECT es.es_outbox_route(''obp'')',
		'create group', 'SELECT es.es_outbox_create_group(''regress_gp'')',
		'INSERT es.outbox', 'INSERT INTO es.outbox (id, aggregatetype, aggregateid, type, payload, stream_version, schema_version, global_position, created_at) VALUES (gen_random_uuid(), ''obp'', ''obp-1'', ''X'', ''{}'', 1, 1, 1, now())'];
	i int;
BEGIN
	FOR i IN 1 .. array_length(actions, 1) / 2 LOOP
		EXECUTE format('SET LOCAL ROLE %I', role);
		action := actions[2 * i - 1];
		result := split_part(public.try(actions[2 * i]), E'\n', 1);
		RESET ROLE;
		RETURN NEXT;
	END LOOP;
END
$$;
SELECT * FROM ob_priv('regress_ob_reader');
SELECT * FROM ob_priv('regress_ob_writer');
SELECT * FROM ob_priv('regress_ob_consumer');
SELECT * FROM ob_priv('regress_ob_admin');
SELECT es.es_outbox_unroute('obp');
SELECT es.es_outbox_drop_group('regress_gp') AS dropped;
SELECT grp, stream, version FROM ob_deliveries WHERE stream LIKE 'obq-regress%' ORDER BY grp, stream;

-- nothing in the outbox schema is granted to PUBLIC, nothing is SECURITY DEFINER
SELECT count(*) AS public_grants FROM pg_class AS c, aclexplode(c.relacl) AS a
 WHERE c.relnamespace = 'es'::regnamespace AND c.relname LIKE 'outbox%' AND a.grantee = 0;
SELECT count(*) AS security_definer FROM pg_proc
 WHERE pronamespace = 'es'::regnamespace AND proname LIKE 'es_outbox%' AND prosecdef;

-- a hostile search_path changes nothing (a new session prepares the plans)
\c
CREATE SCHEMA ob_evil;
CREATE TABLE ob_evil.outbox_groups (group_id int);
CREATE FUNCTION ob_evil.hashtextextended(text, bigint) RETURNS bigint LANGUAGE sql AS 'SELECT 0::bigint';
CREATE FUNCTION ob_evil.bad_eq(bigint, bigint) RETURNS boolean LANGUAGE sql AS 'SELECT false';
CREATE OPERATOR ob_evil.= (FUNCTION = ob_evil.bad_eq, LEFTARG = bigint, RIGHTARG = bigint);
SET search_path = ob_evil, public, pg_catalog;
SELECT version FROM es.es_append('obq-7', 0, '[{"type": "G1", "data": {}}]');
SELECT stream, version, event_type FROM ob_claim('regress_g1');
SELECT es.es_outbox_ack('regress_g1', l.lease, l.positions) AS acked FROM ob_last('regress_g1') AS l;
RESET search_path;
SELECT count(*) AS stream_keys_ok FROM es.outbox_deliveries AS d JOIN es.outbox AS o USING (position)
 WHERE o.aggregateid = 'obq-7' AND d.stream_key = pg_catalog.hashtextextended('obq-7', 0);
DROP SCHEMA ob_evil CASCADE;

-- clean up: no route, no group of this file is left behind
SELECT es.es_outbox_drop_group('regress_g1') >= 0 AS dropped;
SELECT es.es_outbox_drop_group('regress_g2') >= 0 AS dropped;
SELECT es.es_outbox_unroute('obc', 'Paid'), es.es_outbox_unroute('obd'), es.es_outbox_unroute('obe'),
	   es.es_outbox_unroute('obq');
SELECT count(*) AS routes_left FROM es.outbox_routes WHERE category LIKE 'ob%';
SELECT es.es_outbox_cleanup() >= 0 AS cleaned;
DROP VIEW ob_deliveries;
DROP TABLE ob_claims;
DROP FUNCTION ob_rows(text), ob_claim(text, int, interval), ob_last(text, text[]), ob_priv(text);
DROP ROLE regress_ob_reader, regress_ob_writer, regress_ob_consumer, regress_ob_admin;
