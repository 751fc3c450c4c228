-- checkpoint: server-side checkpoints of global-log subscribers
-- (es_checkpoint_save, es_checkpoint, es_checkpoint_drop), how far a cursor
-- lags (es_cursor_lag) and the view es.subscriptions.  Held-back events,
-- which need a second session, are in test/specs/checkpoint_horizon.spec.

-- the cursor of the last event of the log, and the first line of an error
-- (for errors whose detail holds transaction ids or OIDs)
CREATE FUNCTION ck_head() RETURNS es.log_cursor LANGUAGE sql AS $$
	SELECT r.log_cursor FROM es.es_read_all(NULL, 1000000) AS r ORDER BY r.log_cursor DESC LIMIT 1
$$;
CREATE FUNCTION ck_try(sql text) RETURNS text LANGUAGE sql AS $$
	SELECT split_part(try(sql), E'\n', 1)
$$;
CREATE TABLE ck_model (stream_id text, version bigint);

-- no checkpoint yet: es_checkpoint is NULL, so es_read_all starts from the
-- beginning
SELECT es.es_checkpoint('ck_a') IS NULL AS no_checkpoint, es.es_checkpoint(NULL) IS NULL AS null_name;
SELECT (SELECT count(*) FROM es.es_read_all(es.es_checkpoint('ck_a'), 1000000))
	 = (SELECT count(*) FROM es.events) AS reads_from_the_start;

-- a NULL cursor is saved as NULL (from the start), owned by its creator
SELECT es.es_checkpoint_save('ck_a', NULL);
SELECT name, cursor IS NULL AS from_start, owner = current_user::regrole AS mine,
	   created_at = saved_at AS new
  FROM es.checkpoints WHERE name = 'ck_a';
SELECT es.es_checkpoint('ck_a') IS NULL AS still_null;
SELECT name, "position", events_behind = (SELECT count(*) FROM es.events) AS behind_all,
	   events_held_back, lag > '0' AS lagging, holder_pid
  FROM es.subscriptions WHERE name = 'ck_a';

-- caught up: saved at the head of the log, nothing behind, no lag
SELECT es.es_checkpoint_save('ck_a', ck_head());
SELECT es.es_checkpoint('ck_a') = ck_head() AS at_head;
SELECT name, "position" = (ck_head()).global_position AS position_ok, events_behind,
	   events_held_back, lag, holder_pid, holder_xid_age, holder_xact_age, holder_prepared_gid
  FROM es.subscriptions WHERE name = 'ck_a';

-- appends: the subscription falls behind, in events and in time
SELECT version FROM es.es_append('ckp-1', 0, '[{"type": "A", "data": {"i": 1}}, {"type": "A", "data": {"i": 2}}]');
SELECT version FROM es.es_append('ckp-2', 0, '[{"type": "A", "data": {"i": 3}}]');
SELECT pg_sleep(0.01);
SELECT events_behind, events_held_back, lag > '0' AND lag < '1 minute' AS lagging,
	   lag >= now() - (SELECT min(recorded_at) FROM es.events WHERE stream_id LIKE 'ckp-%') AS lag_ok
  FROM es.subscriptions WHERE name = 'ck_a';
SELECT events_behind, events_held_back FROM es.es_cursor_lag(es.es_checkpoint('ck_a'));

-- a subscriber loop: read after the checkpoint, process, save the cursor of
-- the last row processed in the same transaction as the read model
BEGIN;
INSERT INTO ck_model SELECT r.stream_id, r.version FROM es.es_read_all(es.es_checkpoint('ck_a'), 2) AS r;
SELECT es.es_checkpoint_save('ck_a',
	(SELECT r.log_cursor FROM es.es_read_all(es.es_checkpoint('ck_a'), 2) AS r ORDER BY r.log_cursor DESC LIMIT 1));
COMMIT;
SELECT * FROM ck_model ORDER BY stream_id, version;
SELECT events_behind, lag > '0' AS lagging FROM es.subscriptions WHERE name = 'ck_a';
SELECT stream_id, version FROM es.es_read_all(es.es_checkpoint('ck_a'));

-- atomic with the read model: a rolled back transaction saves nothing
BEGIN;
INSERT INTO ck_model SELECT r.stream_id, r.version FROM es.es_read_all(es.es_checkpoint('ck_a')) AS r;
SELECT es.es_checkpoint_save('ck_a', ck_head());
SELECT events_behind FROM es.subscriptions WHERE name = 'ck_a';
ROLLBACK;
SELECT count(*) AS model_rows, (SELECT events_behind FROM es.subscriptions WHERE name = 'ck_a') AS behind
  FROM ck_model;
-- and so does a rolled back subtransaction
BEGIN;
SAVEPOINT s;
SELECT es.es_checkpoint_save('ck_a', ck_head());
ROLLBACK TO SAVEPOINT s;
COMMIT;
SELECT events_behind FROM es.subscriptions WHERE name = 'ck_a';

-- caught up again; moving a checkpoint backwards is allowed: the subscriber
-- replays from there
SELECT es.es_checkpoint_save('ck_a', ck_head());
SELECT events_behind, lag FROM es.subscriptions WHERE name = 'ck_a';
SELECT es.es_checkpoint_save('ck_a',
	(SELECT r.log_cursor FROM es.es_read_all(NULL, 1000000, 'ckp') AS r ORDER BY r.log_cursor LIMIT 1));
SELECT stream_id, version FROM es.es_read_all(es.es_checkpoint('ck_a'));
SELECT events_behind FROM es.subscriptions WHERE name = 'ck_a';
SELECT es.es_checkpoint_save('ck_a', NULL);
SELECT es.es_checkpoint('ck_a') IS NULL AS back_to_the_start;

-- es_cursor_lag: from the start, every event is behind
SELECT events_behind = (SELECT count(*) FROM es.events) AS all_behind, events_held_back
  FROM es.es_cursor_lag(NULL);
SELECT events_behind, events_held_back, lag FROM es.es_cursor_lag(ck_head());
-- a cursor past the end of the log: nothing after it
SELECT events_behind, events_held_back, lag FROM es.es_cursor_lag('(2147483647,1,1)');

-- bad input: each error has its SQLSTATE, and nothing is written
SELECT count(*) AS checkpoints_before FROM es.checkpoints;
SELECT try($$SELECT es.es_checkpoint_save(NULL, NULL)$$);
SELECT try($$SELECT es.es_checkpoint_save('', NULL)$$);
SELECT try($$SELECT es.es_checkpoint_save(repeat('x', 64), NULL)$$);
SELECT try($$SELECT es.es_checkpoint_save(repeat('é', 32), NULL)$$);
SELECT try($$SELECT es.es_checkpoint_save(repeat('x', 1000000), NULL)$$);
SELECT try($$SELECT es.es_checkpoint_save('ck_bad', '(,,)')$$);
SELECT try($$SELECT es.es_checkpoint_save('ck_bad', '(0,,1)')$$);
SELECT try($$SELECT es.es_checkpoint_save('ck_bad', '(0,1,)')$$);
SELECT try($$SELECT es.es_checkpoint_save('ck_bad', ROW(NULL, '1', 1)::es.log_cursor)$$);
SELECT try($$SELECT es.es_checkpoint_save('ck_bad', '(-1,0,0)')$$);
SELECT ck_try($$SELECT es.es_checkpoint_save('ck_bad', '(2147483647,1,1)')$$);
-- forged: a transaction id at or past the horizon could not have been read
SELECT ck_try($$SELECT es.es_checkpoint_save('ck_bad', ROW((ck_head()).era, es.es_log_horizon(), 1)::es.log_cursor)$$);
SELECT ck_try($$SELECT es.es_checkpoint_save('ck_bad', ROW((ck_head()).era, '18446744073709551615', 1)::es.log_cursor)$$);
SELECT ck_try($$SELECT es.es_checkpoint_save('ck_a', ROW((ck_head()).era, pg_current_xact_id(), 1)::es.log_cursor)$$);
SELECT try($$SELECT es.es_checkpoint_drop(NULL)$$);
SELECT try($$SELECT es.es_checkpoint_drop('')$$);
SELECT try($$SELECT es.es_checkpoint_drop(repeat('x', 64))$$);
SELECT try($$SELECT * FROM es.es_cursor_lag('(0,,1)')$$);
SELECT count(*) AS checkpoints_after, es.es_checkpoint('ck_a') IS NULL AS ck_a_unchanged
  FROM es.checkpoints;
-- the longest name: 63 bytes
SELECT es.es_checkpoint_save(repeat('é', 31) || 'x', NULL);
SELECT es.es_checkpoint_drop(repeat('é', 31) || 'x');
-- a cursor es_read_all could have returned need not be an event's (here an
-- older era): the order is what counts
SELECT es.es_checkpoint_save('ck_b', '(0,3,0)');
SELECT es.es_checkpoint('ck_b');

-- a read-only transaction (and a standby) cannot save or drop: 25006 before
-- anything else, even for bad arguments; reads work
BEGIN TRANSACTION READ ONLY;
SELECT try($$SELECT es.es_checkpoint_save('ck_a', NULL)$$);
SELECT try($$SELECT es.es_checkpoint_save(NULL, '(,,)')$$);
SELECT try($$SELECT es.es_checkpoint_drop('ck_a')$$);
SELECT es.es_checkpoint('ck_b'), (SELECT count(*) FROM es.subscriptions) >= 2 AS view_readable;
COMMIT;

-- the guard: only the functions write es.checkpoints, even for its owner
SELECT try($$INSERT INTO es.checkpoints VALUES ('ck_x', NULL, current_user::regrole, now(), now())$$);
SELECT try($$UPDATE es.checkpoints SET cursor = NULL WHERE name = 'ck_b'$$);
SELECT try($$DELETE FROM es.checkpoints WHERE name = 'ck_b'$$);
SELECT try($$TRUNCATE es.checkpoints$$);
SELECT try($$MERGE INTO es.checkpoints AS c USING (SELECT 'ck_b' AS name) AS s ON c.name = s.name
			 WHEN MATCHED THEN UPDATE SET owner = 'es_reader'$$);
SELECT name, cursor, owner = current_user::regrole AS mine FROM es.checkpoints ORDER BY name;

-- ownership: only the role that created a checkpoint (or a member of it)
-- and es_admin may overwrite or drop it
CREATE ROLE regress_ck_alice IN ROLE es_consumer;
CREATE ROLE regress_ck_bob IN ROLE es_consumer;
CREATE ROLE regress_ck_alice_deputy IN ROLE regress_ck_alice;
CREATE ROLE regress_ck_admin IN ROLE es_admin;
CREATE ROLE regress_ck_reader IN ROLE es_reader;
CREATE ROLE regress_ck_nobody;
GRANT EXECUTE ON FUNCTION ck_head() TO PUBLIC;
SET ROLE regress_ck_alice;
SELECT es.es_checkpoint_save('ck_alice', ck_head());
RESET ROLE;
SELECT name, owner FROM es.subscriptions WHERE name = 'ck_alice';
-- bob may read it, but neither overwrite nor drop it, directly or not
SET ROLE regress_ck_bob;
SELECT es.es_checkpoint('ck_alice') = ck_head() AS bob_reads;
SELECT try($$SELECT es.es_checkpoint_save('ck_alice', NULL)$$);
SELECT try($$SELECT es.es_checkpoint_drop('ck_alice')$$);
SELECT try($$UPDATE es.checkpoints SET owner = current_user::regrole WHERE name = 'ck_alice'$$);
SELECT try($$DELETE FROM es.checkpoints WHERE name = 'ck_alice'$$);
SELECT try($$INSERT INTO es.checkpoints VALUES ('ck_alice', NULL, current_user::regrole, now(), now())
			 ON CONFLICT (name) DO UPDATE SET owner = excluded.owner$$);
-- bob's own checkpoint is his
SELECT es.es_checkpoint_save('ck_bob', NULL);
RESET ROLE;
SELECT name, owner, cursor = ck_head() AS unchanged FROM es.checkpoints WHERE name IN ('ck_alice', 'ck_bob') ORDER BY name;
-- a member of alice may save it; the owner stays alice
SET ROLE regress_ck_alice_deputy;
SELECT es.es_checkpoint_save('ck_alice', NULL);
RESET ROLE;
SELECT name, owner, cursor FROM es.checkpoints WHERE name = 'ck_alice';
-- es_admin may save and drop any checkpoint
SET ROLE regress_ck_admin;
SELECT es.es_checkpoint_save('ck_alice', ck_head());
SELECT es.es_checkpoint_drop('ck_bob');
RESET ROLE;
SELECT name, owner, cursor = ck_head() AS at_head FROM es.checkpoints WHERE name IN ('ck_alice', 'ck_bob') ORDER BY name;
-- readers read checkpoints and the view, but save and drop nothing; others
-- have no access at all
SET ROLE regress_ck_reader;
SELECT es.es_checkpoint('ck_alice') IS NOT NULL AS reader_reads,
	   (SELECT count(*) FROM es.subscriptions WHERE name = 'ck_alice') AS in_view;
SELECT try($$SELECT es.es_checkpoint_save('ck_reader', NULL)$$);
SELECT try($$SELECT es.es_checkpoint_drop('ck_alice')$$);
SET ROLE regress_ck_nobody;
SELECT try($$SELECT es.es_checkpoint('ck_alice')$$);
SELECT try($$SELECT * FROM es.subscriptions$$);
SELECT try($$SELECT es.es_checkpoint_save('ck_nobody', NULL)$$);
RESET ROLE;
-- the creator dropped: only es_admin can still save or drop its checkpoint
SET ROLE regress_ck_alice;
SELECT es.es_checkpoint_save('ck_alice_old', NULL);
RESET ROLE;
DROP ROLE regress_ck_alice_deputy;
DROP ROLE regress_ck_alice;
SET ROLE regress_ck_bob;
SELECT ck_try($$SELECT es.es_checkpoint_save('ck_alice_old', NULL)$$);
SELECT ck_try($$SELECT es.es_checkpoint_drop('ck_alice')$$);
SET ROLE regress_ck_admin;
SELECT es.es_checkpoint_drop('ck_alice_old'), es.es_checkpoint_drop('ck_alice');
RESET ROLE;

-- es_checkpoint_drop: true when it existed, false when not
SELECT es.es_checkpoint_drop('ck_b'), es.es_checkpoint_drop('ck_b');
SELECT es.es_checkpoint('ck_b') IS NULL AS gone;

-- the table is dumped with its rows, and a restore COPY by its owner passes
-- the guard (recorded as restored rows) while another role's COPY is refused
SELECT x.rel::regclass, x.cond FROM pg_extension AS e, unnest(e.extconfig, e.extcondition) AS x(rel, cond)
 WHERE e.extname = 'es_ext' AND x.rel = 'es.checkpoints'::regclass;
COPY es.checkpoints (name, cursor, owner, created_at, saved_at) FROM stdin;
ck_restored	(0,5,1)	es_admin	2026-01-01 00:00:00+00	2026-01-02 00:00:00+00
\.
SELECT name, cursor, owner, saved_at FROM es.checkpoints WHERE name = 'ck_restored';
SELECT kind, object_name FROM es.user_objects WHERE table_name = 'checkpoints';
SET ROLE regress_ck_bob;
COPY es.checkpoints (name, cursor, owner, created_at, saved_at) FROM stdin;
ck_forged	\N	regress_ck_bob	2026-01-01 00:00:00+00	2026-01-02 00:00:00+00
\.
RESET ROLE;
SELECT count(*) AS forged FROM es.checkpoints WHERE name = 'ck_forged';
ALTER TABLE es.user_objects DISABLE TRIGGER es_guard_write;
DELETE FROM es.user_objects WHERE table_name = 'checkpoints';
ALTER TABLE es.user_objects ENABLE TRIGGER es_guard_write;

-- clean up: nothing of this file is left behind
SELECT es.es_checkpoint_drop(name) FROM es.checkpoints ORDER BY name;
SELECT count(*) AS checkpoints_left FROM es.checkpoints;
DROP ROLE regress_ck_bob, regress_ck_admin, regress_ck_reader, regress_ck_nobody;
DROP FUNCTION ck_head(), ck_try(text);
DROP TABLE ck_model;
