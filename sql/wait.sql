-- wait: read-your-writes — the consistency token of es_append (its shape,
-- an idempotent replay), es_wait_for on inline and asynchronous
-- projections, es_wait_for_checkpoint, es_wait_for_group, timeouts, and
-- every error path.  Here es_ext is not preloaded: waits poll.  Waking by
-- commit is in test/t/062_wait.pl, concurrent waits in test/specs/wait.spec.

-- the token is the log cursor of the batch's last event
SELECT (es.es_append('wait-1', 0, '[{"id": "6f1c1c2e-0000-4000-8000-000000000001", "type": "A", "data": {}},
                                   {"id": "6f1c1c2e-0000-4000-8000-000000000002", "type": "B", "data": {}}]')).token AS t1 \gset
SELECT :'t1'::es.log_cursor = (SELECT ROW(e.era, e.tx_id, e.global_position)::es.log_cursor
                                FROM es.events AS e WHERE e.stream_id = 'wait-1' AND e.version = 2) AS token_is_last_event,
       (:'t1'::es.log_cursor).tx_id = (SELECT e.tx_id FROM es.events AS e
                                        WHERE e.stream_id = 'wait-1' AND e.version = 1) AS one_tx_id;
-- the result has three attributes: version, positions, token
SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute
 WHERE attrelid = 'es.append_result'::regclass AND attnum > 0 ORDER BY attnum;
-- an idempotent replay returns the token of the stored events
SELECT (r).version, (r).token = :'t1'::es.log_cursor AS same_token
  FROM (SELECT es.es_append('wait-1', NULL, '[{"id": "6f1c1c2e-0000-4000-8000-000000000001", "type": "A", "data": {}},
                                              {"id": "6f1c1c2e-0000-4000-8000-000000000002", "type": "B", "data": {}}]') AS r) AS x;
-- a replay that spans two appends: the greater of their cursors
SELECT (es.es_append('wait-1', 2, '[{"id": "6f1c1c2e-0000-4000-8000-000000000003", "type": "C", "data": {}}]')).token AS t2 \gset
SELECT :'t2'::es.log_cursor > :'t1'::es.log_cursor AS later,
       (es.es_append('wait-1', NULL, '[{"id": "6f1c1c2e-0000-4000-8000-000000000002", "type": "B", "data": {}},
                                       {"id": "6f1c1c2e-0000-4000-8000-000000000003", "type": "C", "data": {}}]')).token
       = :'t2'::es.log_cursor AS replay_token_is_max;

--
-- es_wait_for_checkpoint
--
-- a checkpoint that does not exist yet is waited for: false at the timeout
SELECT es.es_wait_for_checkpoint('wait_sub', :'t1', '20 ms') AS not_yet;
-- a timeout of zero or less checks once
SELECT es.es_wait_for_checkpoint('wait_sub', :'t1', '0') AS zero, es.es_wait_for_checkpoint('wait_sub', :'t1', '-1 hour') AS negative;
SELECT es.es_checkpoint_save('wait_sub', NULL);
SELECT es.es_wait_for_checkpoint('wait_sub', :'t1', '0') AS from_start_not_reached;
SELECT es.es_checkpoint_save('wait_sub', :'t1');
SELECT es.es_wait_for_checkpoint('wait_sub', :'t1') AS reached,
       es.es_wait_for_checkpoint('wait_sub', :'t2', '20 ms') AS t2_not_reached;
SELECT es.es_checkpoint_save('wait_sub', (SELECT r.log_cursor FROM es.es_read_all(NULL, 1000000) AS r
                                           ORDER BY r.log_cursor DESC LIMIT 1));
SELECT es.es_wait_for_checkpoint('wait_sub', :'t2') AS t2_reached;

--
-- es_wait_for: projections
--
CREATE TABLE wait_model (stream_id text PRIMARY KEY, n integer NOT NULL);
CREATE FUNCTION wait_project() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	INSERT INTO wait_model VALUES (NEW.stream_id, 1)
	ON CONFLICT (stream_id) DO UPDATE SET n = wait_model.n + 1;
	RETURN NULL;
END
$$;
-- an inline projection has applied every committed event
CREATE TRIGGER wait_inline AFTER INSERT ON es.events FOR EACH ROW EXECUTE FUNCTION wait_project();
SELECT es.es_wait_for('wait_inline', :'t2') AS inline_at_once;
-- ... unless it is disabled
ALTER TABLE es.events DISABLE TRIGGER wait_inline;
SELECT es.es_wait_for('wait_inline', :'t2');
-- ... or being rebuilt: then until the rebuild is over
INSERT INTO es.projection_status (projection, state, started_at, updated_at)
VALUES ('wait_inline', 'rebuilding', now(), now());
SELECT es.es_wait_for('wait_inline', :'t2', '20 ms') AS rebuilding;
ALTER TABLE es.events ENABLE TRIGGER wait_inline;
-- ... in place: a rebuild in a shadow keeps the live read model current
UPDATE es.projection_status SET read_model = 'public' WHERE projection = 'wait_inline';
SELECT es.es_wait_for('wait_inline', :'t2', '20 ms') AS shadow_rebuild;
UPDATE es.projection_status SET read_model = NULL WHERE projection = 'wait_inline';
UPDATE es.projection_status SET state = 'live', finished_at = now() WHERE projection = 'wait_inline';
SELECT es.es_wait_for('wait_inline', :'t2', '20 ms') AS live_again;
DELETE FROM es.projection_status WHERE projection = 'wait_inline';
DROP TRIGGER wait_inline ON es.events;
-- an asynchronous projection: when its checkpoint reaches the token
BEGIN;
CREATE TRIGGER wait_async AFTER INSERT ON es.events FOR EACH ROW EXECUTE FUNCTION wait_project();
SELECT es.es_create_async_projection('wait_async', batch_size => 100000, categories => '{wait}');
COMMIT;
SELECT (es.es_append('wait-2', 0, '[{"type": "A", "data": {}}]')).token AS t3 \gset
SELECT es.es_wait_for('wait_async', :'t3', '20 ms') AS before_apply;
SELECT es.es_projection_apply('wait_async') > 0 AS applied;
SELECT es.es_wait_for('wait_async', :'t3', '0') AS after_apply, es.es_wait_for('wait_async', :'t1', '0') AS older_token;
SELECT * FROM wait_model ORDER BY stream_id;
SELECT es.es_drop_projection('wait_async');
-- unknown projections, and triggers that are not projections
SELECT es.es_wait_for('wait_nope', :'t1');
SELECT es.es_wait_for('es_guard_write', :'t1');

--
-- es_wait_for_group: acked or dead-lettered
--
SELECT es.es_outbox_route('waitg');
SELECT es.es_outbox_create_group('wait_g', max_attempts => 1) > 0 AS created;
SELECT (es.es_append('waitg-1', 0, '[{"type": "A", "data": {}}, {"type": "B", "data": {}}]')).token AS t4 \gset
SELECT (es.es_append('waitg-2', 0, '[{"type": "A", "data": {}}]')).token AS t5 \gset
-- a token before the group's messages: nothing to deliver
SELECT es.es_wait_for_group('wait_g', :'t1', '0') AS nothing_before;
SELECT es.es_wait_for_group('wait_g', :'t4', '20 ms') AS undelivered;
-- ack the first stream's two messages: t4 is reached, t5 is not
CREATE TEMP TABLE wait_claim AS SELECT * FROM es.es_outbox_claim('wait_g', 10, '1 minute');
SELECT count(*) AS claimed FROM wait_claim;
SELECT es.es_outbox_ack('wait_g', c.lease, array_agg(c.position)) AS acked
  FROM wait_claim AS c WHERE c.stream_id = 'waitg-1' GROUP BY c.lease;
SELECT es.es_wait_for_group('wait_g', :'t4', '0') AS t4_acked, es.es_wait_for_group('wait_g', :'t5', '0') AS t5_pending;
-- a dead letter counts as processed (max_attempts 1: a nack is final)
SELECT es.es_outbox_nack('wait_g', c.lease, ARRAY[c.position], 'broken') AS nacked
  FROM wait_claim AS c WHERE c.stream_id = 'waitg-2';
DROP TABLE wait_claim;
SELECT count(*) AS dead FROM es.outbox_dead_letters WHERE consumer_group = 'wait_g';
SELECT es.es_wait_for_group('wait_g', :'t5', '0') AS t5_dead_lettered;
-- a reader may wait for a group
CREATE ROLE regress_wait_reader IN ROLE es_reader;
SET ROLE regress_wait_reader;
SELECT es.es_wait_for_group('wait_g', :'t5', '0') AS reader_waits,
       es.es_wait_for_checkpoint('wait_sub', :'t2', '0') AS reader_checkpoint;
RESET ROLE;
DROP ROLE regress_wait_reader;
SELECT es.es_wait_for_group('wait_nope', :'t1');
SELECT es.es_outbox_drop_group('wait_g');
SELECT es.es_outbox_unroute('waitg');

--
-- errors
--
-- NULL arguments and bad tokens
SELECT es.es_wait_for(NULL, :'t1');
SELECT es.es_wait_for_checkpoint(NULL, :'t1');
SELECT es.es_wait_for_group(NULL, :'t1');
SELECT es.es_wait_for_checkpoint('wait_sub', NULL);
SELECT es.es_wait_for_checkpoint('wait_sub', ROW(0, NULL, 1)::es.log_cursor);
SELECT es.es_wait_for_checkpoint('wait_sub', ROW(-1, '1', 1)::es.log_cursor);
SELECT es.es_wait_for_checkpoint('wait_sub', :'t1', NULL);
-- a token of this transaction's own appends can never be reached before it
-- commits: an error at once, not a wait until the timeout
BEGIN;
SELECT (es.es_append('wait-3', 0, '[{"type": "A", "data": {}}]')).token AS t6 \gset
\set VERBOSITY terse
SELECT es.es_wait_for_checkpoint('wait_sub', :'t6', '1 hour');
\set VERBOSITY default
ROLLBACK;
-- ... but what is already reached is true, even then
BEGIN;
SELECT (es.es_append('wait-3', 0, '[{"type": "A", "data": {}}]')).version;
SELECT es.es_wait_for_checkpoint('wait_sub', :'t1', '1 hour') AS reached_in_own_tx;
ROLLBACK;
-- REPEATABLE READ and SERIALIZABLE: true when reached at once, else an error
BEGIN ISOLATION LEVEL REPEATABLE READ;
SELECT es.es_wait_for_checkpoint('wait_sub', :'t1', '1 hour') AS reached_rr;
SELECT es.es_wait_for_checkpoint('wait_sub', :'t5', '1 hour');
ROLLBACK;
BEGIN ISOLATION LEVEL SERIALIZABLE;
SELECT es.es_wait_for_checkpoint('wait_sub', :'t5', '1 hour');
ROLLBACK;
-- statement_timeout interrupts a wait
SET statement_timeout = '50ms';
SELECT es.es_wait_for_checkpoint('wait_sub', :'t5', '1 hour');
RESET statement_timeout;

SELECT es.es_checkpoint_drop('wait_sub');
DROP TABLE wait_model;
DROP FUNCTION wait_project();
