-- projection: read models kept by triggers on es.events, in the appending
-- transaction; rebuilds from history

SELECT store_mark();
CREATE SCHEMA proj;

-- error text plus the CONTEXT lines that name a projection
CREATE FUNCTION proj.try_ctx(sql text) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
	st text;
	msg text;
	ctx text;
BEGIN
	EXECUTE sql;
	RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
	GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE, msg = MESSAGE_TEXT, ctx = PG_EXCEPTION_CONTEXT;
	RETURN st || ': ' || msg || coalesce(E'\n' || (SELECT string_agg(l, E'\n') FROM regexp_split_to_table(ctx, E'\n') l
	                                                WHERE l LIKE 'projection%' OR l LIKE 'PL/pgSQL function%'), '');
END
$$;

-- style 1: a row-level trigger in PL/pgSQL sees the full event row
CREATE TABLE proj.account_balance (account text PRIMARY KEY, balance numeric NOT NULL, events int NOT NULL,
                                   last_version bigint NOT NULL, last_position bigint NOT NULL);
CREATE FUNCTION proj.account_balance_project() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	INSERT INTO proj.account_balance AS b
	VALUES (NEW.stream_id,
	        CASE NEW.event_type WHEN 'Deposited' THEN (NEW.data ->> 'amount')::numeric
	                            WHEN 'Withdrawn' THEN -(NEW.data ->> 'amount')::numeric ELSE 0 END,
	        1, NEW.version, NEW.global_position)
	ON CONFLICT (account) DO UPDATE
	   SET balance = b.balance + excluded.balance, events = b.events + 1,
	       last_version = excluded.last_version, last_position = excluded.last_position;
	RETURN NULL;
END
$$;
CREATE TRIGGER account_balance AFTER INSERT ON es.events
	FOR EACH ROW WHEN (NEW.category = 'pacct')
	EXECUTE FUNCTION proj.account_balance_project();

-- style 2: a statement-level trigger projects the whole batch in one statement
CREATE TABLE proj.type_counts (event_type text PRIMARY KEY, n bigint NOT NULL);
CREATE FUNCTION proj.type_counts_project() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	INSERT INTO proj.type_counts AS c
	SELECT event_type, count(*) FROM new_events WHERE category = 'pacct' GROUP BY event_type
	ON CONFLICT (event_type) DO UPDATE SET n = c.n + excluded.n;
	RETURN NULL;
END
$$;
CREATE TRIGGER type_counts AFTER INSERT ON es.events
	REFERENCING NEW TABLE AS new_events
	FOR EACH STATEMENT EXECUTE FUNCTION proj.type_counts_project();

-- style 3: es_project dispatches each event type to a handler taking es.events
CREATE TABLE proj.account_log (account text, version bigint, line text, PRIMARY KEY (account, version));
CREATE FUNCTION proj.on_opened(e es.events) RETURNS void LANGUAGE sql AS $$
	INSERT INTO proj.account_log VALUES (e.stream_id, e.version, 'opened by ' || (e.data ->> 'owner'))
$$;
CREATE FUNCTION proj.on_money(e es.events) RETURNS void LANGUAGE sql AS $$
	INSERT INTO proj.account_log VALUES (e.stream_id, e.version, lower(e.event_type) || ' ' || (e.data ->> 'amount'))
$$;
CREATE TRIGGER account_log AFTER INSERT ON es.events
	FOR EACH ROW WHEN (NEW.category = 'pacct')
	EXECUTE FUNCTION es.es_project('Opened', 'proj.on_opened', 'Deposited', 'proj.on_money', 'Withdrawn', 'proj.on_money');

SELECT version FROM es.es_append('pacct-1', 0, '[{"type": "Opened", "data": {"owner": "ann"}},
                                                  {"type": "Deposited", "data": {"amount": 100}}]');
SELECT version FROM es.es_append('pacct-2', 0, '[{"type": "Opened", "data": {"owner": "bob"}}]');
SELECT version FROM es.es_append('pacct-1', 2, '[{"type": "Withdrawn", "data": {"amount": 30}},
                                                  {"type": "Renamed", "data": {"owner": "ann b."}}]');
SELECT version FROM es.es_append('pacct-2', NULL, '[{"type": "Deposited", "data": {"amount": 5}}]');
SELECT version FROM es.es_append('other-1', NULL, '[{"type": "Deposited", "data": {"amount": 999}}]');

-- the read models are up to date as soon as the append returns
SELECT account, balance, events, last_version,
       last_position = (SELECT max(global_position) FROM es.events WHERE stream_id = account) AS last_position_ok
  FROM proj.account_balance ORDER BY account;
SELECT * FROM proj.type_counts ORDER BY event_type;
SELECT * FROM proj.account_log ORDER BY account, version;

-- a failing projection aborts the append: nothing is half-applied, and the
-- error names the projection
CREATE OR REPLACE FUNCTION proj.on_money(e es.events) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
	IF (e.data ->> 'amount')::numeric < 0 THEN
		RAISE EXCEPTION 'negative amount %', e.data ->> 'amount' USING ERRCODE = 'check_violation';
	END IF;
	INSERT INTO proj.account_log VALUES (e.stream_id, e.version, lower(e.event_type) || ' ' || (e.data ->> 'amount'));
END
$$;
SELECT * FROM store_counts();
SELECT proj.try_ctx($$SELECT es.es_append('pacct-1', NULL, '[{"type": "Deposited", "data": {"amount": 1}},
                                                              {"type": "Deposited", "data": {"amount": -1}}]')$$);
SELECT proj.try_ctx($$SELECT es.es_append('pacct-1', NULL, '[{"type": "Deposited", "data": {"amount": "x"}}]')$$);
SELECT * FROM store_counts();
SELECT es.es_stream_version('pacct-1');
SELECT account, balance, events FROM proj.account_balance ORDER BY account;
SELECT * FROM proj.type_counts ORDER BY event_type;

-- rebuild: empty the read model and replay the whole history through the
-- same trigger; the result equals what inline projection produced
-- (its progress NOTICEs count the whole log, so they are not shown here;
-- es.projection_status is checked instead)
SET client_min_messages = warning;
CREATE TABLE proj.balance_inline AS SELECT * FROM proj.account_balance;
CREATE TABLE proj.counts_inline AS SELECT * FROM proj.type_counts;
CREATE TABLE proj.log_inline AS SELECT * FROM proj.account_log;
UPDATE proj.account_balance SET balance = 0;	-- damage it
CALL es.es_rebuild_projection('account_balance', 'TRUNCATE proj.account_balance', batch_size => 2);
CALL es.es_rebuild_projection('type_counts', 'DELETE FROM proj.type_counts', batch_size => 3);
CALL es.es_rebuild_projection('account_log', 'TRUNCATE proj.account_log');
SELECT count(*) AS differences FROM (
	(SELECT * FROM proj.account_balance EXCEPT SELECT * FROM proj.balance_inline)
	UNION ALL (SELECT * FROM proj.balance_inline EXCEPT SELECT * FROM proj.account_balance)
	UNION ALL (SELECT account, NULL, NULL, NULL, NULL FROM (SELECT * FROM proj.account_log EXCEPT SELECT * FROM proj.log_inline) d)
	UNION ALL (SELECT account, NULL, NULL, NULL, NULL FROM (SELECT * FROM proj.log_inline EXCEPT SELECT * FROM proj.account_log) d)) x;
SELECT count(*) AS differences FROM (
	(SELECT * FROM proj.type_counts EXCEPT SELECT * FROM proj.counts_inline)
	UNION ALL (SELECT * FROM proj.counts_inline EXCEPT SELECT * FROM proj.type_counts)) x;
SELECT projection, state, replayed = (SELECT count(*) FROM es.events) AS replayed_all, finished_at IS NOT NULL AS finished,
       last_cursor = (SELECT log_cursor FROM es.es_read_all(NULL, 1000000) ORDER BY log_cursor DESC LIMIT 1) AS at_head
  FROM es.projection_status ORDER BY projection;
-- es.projection_progress: a finished rebuild is live, with nothing left
SELECT projection, state, remaining, total = replayed AS total_is_replayed,
       total = (SELECT count(*) FROM es.events) AS total_is_log, eta,
       events_per_second = round(replayed / extract(epoch FROM finished_at - started_at), 1) AS rate_ok,
       finished_at IS NOT NULL AS finished
  FROM es.projection_progress ORDER BY projection;

-- the triggers are live again after a rebuild
SELECT tgname, tgenabled FROM pg_trigger WHERE tgrelid = 'es.events'::regclass AND NOT tgisinternal
   AND tgname IN ('account_balance', 'type_counts', 'account_log') ORDER BY 1;
SELECT version FROM es.es_append('pacct-2', NULL, '[{"type": "Deposited", "data": {"amount": 10}}]');
SELECT account, balance, events FROM proj.account_balance ORDER BY account;

-- rebuild after changing the projection's logic: the new logic is applied
-- to the whole history
ALTER TABLE proj.account_balance ADD COLUMN deposits int NOT NULL DEFAULT 0;
CREATE OR REPLACE FUNCTION proj.account_balance_project() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	INSERT INTO proj.account_balance AS b
	VALUES (NEW.stream_id,
	        CASE NEW.event_type WHEN 'Deposited' THEN (NEW.data ->> 'amount')::numeric
	                            WHEN 'Withdrawn' THEN -(NEW.data ->> 'amount')::numeric ELSE 0 END,
	        1, NEW.version, NEW.global_position, (NEW.event_type = 'Deposited')::int)
	ON CONFLICT (account) DO UPDATE
	   SET balance = b.balance + excluded.balance, events = b.events + 1,
	       last_version = excluded.last_version, last_position = excluded.last_position,
	       deposits = b.deposits + excluded.deposits;
	RETURN NULL;
END
$$;
CALL es.es_rebuild_projection('account_balance', 'TRUNCATE proj.account_balance');
SELECT account, balance, events, deposits FROM proj.account_balance ORDER BY account;

-- an interrupted rebuild leaves the projection paused; the next call resumes
-- from the last committed batch instead of starting over
ALTER TABLE es.events DISABLE TRIGGER account_log;
TRUNCATE proj.account_log;
INSERT INTO es.projection_status (projection, state, started_at, replayed, last_cursor, updated_at)
SELECT 'account_log', 'rebuilding', now(), r.replayed, r.last_cursor, now()
  FROM es.es_projection_replay('account_log',
         -- the cursor just before the first pacct event: earlier events are
         -- filtered out by the trigger's WHEN anyway
         (SELECT log_cursor FROM es.es_read_all(NULL, 1000000)
           WHERE log_cursor < (SELECT log_cursor FROM es.es_read_all(NULL, 1000000, 'pacct') LIMIT 1)
           ORDER BY log_cursor DESC LIMIT 1),
         3, false) r
ON CONFLICT (projection) DO UPDATE SET state = 'rebuilding', replayed = excluded.replayed,
	last_cursor = excluded.last_cursor;
SELECT count(*) AS replayed_before_interruption FROM proj.account_log;
-- the interrupted rebuild in es.projection_progress: what is left is every
-- event after its last cursor; no rate yet (no time passed in its batches)
UPDATE es.projection_status SET started_at = now(), updated_at = now(), finished_at = NULL
 WHERE projection = 'account_log';
SELECT p.projection, p.state, p.replayed,
       p.remaining = (SELECT count(*) FROM es.events AS e
                       WHERE ROW(e.era, e.tx_id, e.global_position)::es.log_cursor > s.last_cursor) AS remaining_ok,
       p.remaining > 0 AS some_left, p.total = p.replayed + p.remaining AS adds_up,
       p.events_per_second, p.eta, p.finished_at
  FROM es.projection_progress AS p JOIN es.projection_status AS s USING (projection)
 WHERE p.projection = 'account_log';
-- with a rate: 3 events in 3 seconds, 1 event per second
UPDATE es.projection_status SET started_at = updated_at - interval '3 seconds' WHERE projection = 'account_log';
SELECT events_per_second, eta = make_interval(secs => remaining) AS eta_ok
  FROM es.projection_progress WHERE projection = 'account_log';
CALL es.es_rebuild_projection('account_log', 'TRUNCATE proj.account_log');
SELECT state FROM es.projection_status WHERE projection = 'account_log';
SELECT state, remaining, eta FROM es.projection_progress WHERE projection = 'account_log';
SELECT count(*) AS differences FROM (
	(SELECT * FROM proj.account_log EXCEPT (SELECT * FROM proj.log_inline UNION SELECT 'pacct-2', 3, 'deposited 10'))
	UNION ALL ((SELECT * FROM proj.log_inline UNION SELECT 'pacct-2', 3, 'deposited 10') EXCEPT SELECT * FROM proj.account_log)) x;

RESET client_min_messages;

-- bad calls
SELECT try($$CALL es.es_rebuild_projection('no_such_projection', NULL)$$);
SELECT try($$CALL es.es_rebuild_projection(NULL, NULL)$$);
SELECT try($$CALL es.es_rebuild_projection('account_log', NULL, 0)$$);
-- a rebuild commits as it goes: it cannot run inside a transaction block
SELECT try($$CALL es.es_rebuild_projection('account_log', 'TRUNCATE proj.account_log')$$);
SELECT try($$SELECT * FROM es.es_projection_replay('no_such_projection', NULL, 10, false)$$);
SELECT try($$SELECT * FROM es.es_projection_replay('account_log', NULL, 0, false)$$);
SELECT try($$SELECT * FROM es.es_projection_replay(NULL, NULL, 10, false)$$);
CREATE TRIGGER proj_before BEFORE INSERT ON es.events FOR EACH STATEMENT EXECUTE FUNCTION es.es_guard();
SELECT try($$SELECT * FROM es.es_projection_replay('proj_before', NULL, 10, false)$$);
DROP TRIGGER proj_before ON es.events;
-- only a user's AFTER INSERT trigger is rebuilt: anything else is refused
-- before a trigger is paused or a status row written
CREATE FUNCTION proj.before_noop() RETURNS trigger LANGUAGE plpgsql AS 'BEGIN RETURN NEW; END';
CREATE TRIGGER proj_before_row BEFORE INSERT ON es.events FOR EACH ROW EXECUTE FUNCTION proj.before_noop();
SELECT try($$CALL es.es_rebuild_projection('proj_before_row', 'SELECT 1')$$);
SELECT tgenabled FROM pg_trigger WHERE tgname = 'proj_before_row';
DROP TRIGGER proj_before_row ON es.events;
DROP FUNCTION proj.before_noop();
SELECT try($$CALL es.es_rebuild_projection('es_guard_write', NULL)$$);
SELECT try($$CALL es.es_rebuild_projection('es_restored', NULL)$$);
SELECT try($$SELECT * FROM es.es_projection_replay('es_restored', NULL, 10, false)$$);
SELECT tgname, tgenabled FROM pg_trigger
 WHERE tgrelid = 'es.events'::regclass AND tgname LIKE 'es\_%' ORDER BY 1;
SELECT count(*) AS status_rows FROM es.projection_status
 WHERE projection IN ('proj_before_row', 'es_guard_write', 'es_restored');
SELECT try($$SELECT es.es_project()$$);

-- es_project misuse is reported at the first append
CREATE TRIGGER proj_bad_args AFTER INSERT ON es.events FOR EACH ROW EXECUTE FUNCTION es.es_project('A', 'proj.on_money', 'B');
SELECT try($$SELECT es.es_append('pacct-3', NULL, '[{"type": "A", "data": {}}]')$$);
DROP TRIGGER proj_bad_args ON es.events;
CREATE TRIGGER proj_no_handler AFTER INSERT ON es.events FOR EACH ROW EXECUTE FUNCTION es.es_project('proj.nope');
SELECT try($$SELECT es.es_append('pacct-3', NULL, '[{"type": "A", "data": {}}]')$$);
DROP TRIGGER proj_no_handler ON es.events;
CREATE TRIGGER proj_stmt_project AFTER INSERT ON es.events FOR EACH STATEMENT EXECUTE FUNCTION es.es_project('proj.on_opened');
SELECT try($$SELECT es.es_append('pacct-3', NULL, '[{"type": "A", "data": {}}]')$$);
DROP TRIGGER proj_stmt_project ON es.events;
SELECT es.es_stream_version('pacct-3');

DROP TRIGGER account_balance ON es.events;
DROP TRIGGER type_counts ON es.events;
DROP TRIGGER account_log ON es.events;
DROP SCHEMA proj CASCADE;

-- a rebuild reports its progress in es.projection_progress, not with a
-- NOTICE per batch: one NOTICE when it starts (naming the view), one when it
-- ends, whatever the number of batches (in a database of its own, so that
-- the counts are this test's)
SELECT current_database() AS regress_db \gset
CREATE DATABASE regress_proj_notices;
\c regress_proj_notices
CREATE EXTENSION es_ext;
CREATE TABLE public.n (version bigint);
CREATE FUNCTION public.n_project() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	INSERT INTO public.n VALUES (NEW.version);
	RETURN NULL;
END
$$;
CREATE TRIGGER n_proj AFTER INSERT ON es.events FOR EACH ROW EXECUTE FUNCTION public.n_project();
SELECT version FROM es.es_append('n-1', 0,
	(SELECT jsonb_agg(jsonb_build_object('type', 'N', 'data', i)) FROM generate_series(1, 5) AS i));
CALL es.es_rebuild_projection('n_proj', 'TRUNCATE public.n', batch_size => 1);
SELECT count(*) AS projected FROM public.n;
SELECT projection, state, replayed, remaining, total, eta FROM es.projection_progress;
-- resuming an interrupted rebuild: the same two NOTICEs
ALTER TABLE es.events DISABLE TRIGGER n_proj;
DELETE FROM public.n WHERE version > 2;
UPDATE es.projection_status
   SET state = 'rebuilding', replayed = 2, finished_at = NULL,
       last_cursor = (SELECT log_cursor FROM es.es_read_all(NULL, 2) ORDER BY log_cursor DESC LIMIT 1);
SELECT projection, state, replayed, remaining, total, eta IS NOT NULL AS has_eta, finished_at FROM es.projection_progress;
CALL es.es_rebuild_projection('n_proj', 'TRUNCATE public.n', batch_size => 1);
SELECT count(*) AS projected FROM public.n;
SELECT projection, state, replayed, remaining, total, eta FROM es.projection_progress;
-- the rate of the resumed run counts from its resumption, and only its own events
SELECT run_started_at > started_at AS run_from_resumption, run_replayed_from,
       (SELECT events_per_second FROM es.projection_progress WHERE projection = 'n_proj')
         = round((replayed - run_replayed_from) / extract(epoch FROM finished_at - run_started_at), 1) AS rate_of_the_run
  FROM es.projection_status WHERE projection = 'n_proj';
\c :regress_db
DROP DATABASE regress_proj_notices;
