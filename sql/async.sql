-- async: asynchronous projections — declaring one, applying it in batches
-- (es_projection_apply, es_run_projections), its checkpoint written with the
-- read model, failures (retry, stop, park, dead letters), pause, resume,
-- reset, the switches between inline and asynchronous, drop, the view
-- es.projections and every error path.  The background workers are in
-- test/t/060_async_worker.pl; concurrent appliers in test/specs/async.spec.

CREATE SCHEMA asy;
CREATE TABLE asy.totals (stream_id text PRIMARY KEY, n integer NOT NULL, amount numeric NOT NULL);
CREATE TABLE asy.seen (global_position bigint PRIMARY KEY, stream_id text, version bigint);
CREATE FUNCTION asy.on_event(e es.events) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
	IF e.data ? 'poison' AND NOT EXISTS (SELECT FROM asy.cure) THEN
		RAISE EXCEPTION 'poisoned event % of %', e.version, e.stream_id USING ERRCODE = 'data_exception';
	END IF;
	INSERT INTO asy.seen VALUES (e.global_position, e.stream_id, e.version);
	INSERT INTO asy.totals VALUES (e.stream_id, 1, coalesce((e.data->>'amount')::numeric, 0))
	ON CONFLICT (stream_id) DO UPDATE SET n = asy.totals.n + 1, amount = asy.totals.amount + excluded.amount;
END
$$;
CREATE TABLE asy.cure ();
-- the model equals exactly one application of every event of the category
CREATE FUNCTION asy.exact() RETURNS boolean LANGUAGE sql AS $$
	SELECT (SELECT count(*) FROM asy.seen) = (SELECT count(*) FROM es.events WHERE category = 'asy')
	   AND NOT EXISTS (SELECT e.global_position FROM es.events AS e WHERE e.category = 'asy'
					   EXCEPT SELECT s.global_position FROM asy.seen AS s)
$$;
CREATE FUNCTION asy.status(OUT mode text, OUT state text, OUT applied bigint, OUT events_behind bigint,
						   OUT attempts integer, OUT last_error text, OUT dead_letters bigint)
LANGUAGE sql AS $$
	SELECT p.mode, p.state, p.applied, p.events_behind, p.attempts, p.last_error, p.dead_letters
	  FROM es.projections AS p WHERE p.projection = 'asy_totals'
$$;

-- history before the projection exists
SELECT version FROM es.es_append('asy-1', 0, '[{"type": "Paid", "data": {"amount": 10}}, {"type": "Paid", "data": {"amount": 5}}]');
SELECT version FROM es.es_append('asyx-1', 0, '[{"type": "Paid", "data": {"amount": 99}}]');

-- declared in the transaction that creates the trigger: it never fired, so
-- the projection starts at the beginning of the log
BEGIN;
CREATE TRIGGER asy_totals AFTER INSERT ON es.events
	FOR EACH ROW EXECUTE FUNCTION es.es_project('asy.on_event');
SELECT es.es_create_async_projection('asy_totals', batch_size => 2, categories => '{asy}');
COMMIT;
SELECT tgenabled FROM pg_trigger WHERE tgname = 'asy_totals';
SELECT projection, owner = current_user::regrole AS mine, state, batch_size, categories, event_types,
	   on_error, max_retries, checkpoint, applied, isolate_until, attempts
  FROM es.async_projections;
SELECT mode, state, applied, events_behind >= 3 AS behind, attempts, last_error, dead_letters FROM asy.status();

-- appends do not fire it: the read model moves only when batches are applied
SELECT version FROM es.es_append('asy-2', 0, '[{"type": "Paid", "data": {"amount": 1}}]');
SELECT count(*) AS before_apply FROM asy.seen;
SELECT es.es_projection_apply('asy_totals') AS batch_1;
SELECT * FROM asy.totals ORDER BY stream_id;
SELECT es.es_projection_apply('asy_totals') AS batch_2;
SELECT es.es_projection_apply('asy_totals') AS caught_up;
SELECT * FROM asy.totals ORDER BY stream_id;
SELECT asy.exact();
-- caught up: the checkpoint covers the whole log below the horizon, so an
-- append's token is behind it; nothing written when there is nothing to do
SELECT (SELECT checkpoint FROM es.async_projections)
	 >= (SELECT ROW(era, tx_id, global_position)::es.log_cursor FROM es.events ORDER BY era DESC, tx_id DESC, global_position DESC LIMIT 1) AS covers_log;
SELECT xmin AS row_version FROM es.async_projections \gset
SELECT es.es_projection_apply('asy_totals') AS idle;
SELECT xmin = :'row_version' AS not_rewritten FROM es.async_projections;
SELECT mode, state, applied, events_behind FROM asy.status();

-- the checkpoint is written in the read model's transaction: a rolled back
-- batch changes neither
SELECT version FROM es.es_append('asy-2', 1, '[{"type": "Paid", "data": {"amount": 2}}]');
SELECT events_behind FROM asy.status();
BEGIN;
SELECT es.es_projection_apply('asy_totals') AS applied_then_rolled_back;
ROLLBACK;
SELECT amount AS still_1 FROM asy.totals WHERE stream_id = 'asy-2';
SELECT es.es_projection_apply('asy_totals') AS applied_once;
SELECT amount AS now_3 FROM asy.totals WHERE stream_id = 'asy-2';
SELECT asy.exact();

-- es_run_projections: the worker's loop, from a client (or pg_cron)
SELECT version FROM es.es_append('asy-3', 0, '[{"type": "Paid", "data": {"amount": 1}}, {"type": "Paid", "data": {"amount": 1}}, {"type": "Paid", "data": {"amount": 1}}]');
CALL es.es_run_projections();
CALL es.es_run_projections('asy_totals', max_batches => 1);
SELECT asy.exact();

-- a failing event: the batch rolls back, its events are retried one at a
-- time at once, then the failing one with backoff; after max_retries the
-- policy (stop) sets the state failed
SELECT version FROM es.es_append('asy-4', 0, '[{"type": "Paid", "data": {"amount": 1}}, {"type": "Paid", "data": {"poison": true}}, {"type": "Paid", "data": {"amount": 1}}]');
SELECT try($$SELECT es.es_projection_apply('asy_totals')$$);
SELECT es.es_projection_failed('asy_totals', 'boom', '22000') AS after_batch;
SELECT state, attempts, last_error FROM asy.status();
SELECT isolate_until = (SELECT ROW(era, tx_id, global_position)::es.log_cursor FROM es.events WHERE stream_id = 'asy-4' AND version = 2) AS isolates_the_batch,
	   attempts, retry_at <= clock_timestamp() AS due_now, last_error_position IS NULL AS event_unknown
  FROM es.async_projections;
-- one at a time: the first event passes, the poisoned one fails
SELECT es.es_projection_apply('asy_totals') AS first_alone;
SELECT try($$SELECT es.es_projection_apply('asy_totals')$$);
SELECT es.es_projection_failed('asy_totals', 'poisoned', '22000') AS attempt_1;
SELECT state, attempts FROM asy.status();
SELECT retry_at > clock_timestamp() AS backoff, last_error_position = (SELECT global_position FROM es.events WHERE stream_id = 'asy-4' AND version = 2) AS event_known
  FROM es.async_projections;
-- not due: nothing applied, nothing written
SELECT es.es_projection_apply('asy_totals') AS not_due;
SELECT es.es_projection_failed('asy_totals', 'poisoned', '22000') AS attempt_2;
SELECT es.es_projection_failed('asy_totals', 'poisoned', '22000') AS attempt_3;
SELECT es.es_projection_failed('asy_totals', 'poisoned', '22000') AS attempt_4;
SELECT state, attempts, last_error FROM asy.status();
SELECT es.es_projection_apply('asy_totals') AS failed_applies_nothing;
CALL es.es_run_projections();
-- resume after a fix: the failing event is retried at once
INSERT INTO asy.cure DEFAULT VALUES;
SELECT es.es_projection_resume('asy_totals');
SELECT state, attempts FROM asy.status();
SELECT es.es_projection_apply('asy_totals') AS the_fixed_event;
SELECT es.es_projection_apply('asy_totals') AS the_rest;
SELECT state, isolate_until, attempts FROM es.async_projections;
SELECT asy.exact();
DELETE FROM asy.cure;

-- on_error = park: after max_retries the event goes to the dead letters and
-- the projection goes on
SELECT es.es_drop_projection('asy_totals');
TRUNCATE asy.totals, asy.seen;
BEGIN;
CREATE TRIGGER asy_totals AFTER INSERT ON es.events
	FOR EACH ROW EXECUTE FUNCTION es.es_project('asy.on_event');
SELECT es.es_create_async_projection('asy_totals', batch_size => 100, categories => '{asy}',
									 on_error => 'park', max_retries => 0);
COMMIT;
CALL es.es_run_projections();
SELECT state, applied, dead_letters FROM asy.status();
SELECT projection, stream_id, version, event_type, error, sqlstate, attempts,
	   log_cursor = (SELECT ROW(era, tx_id, global_position)::es.log_cursor FROM es.events
					  WHERE stream_id = 'asy-4' AND version = 2) AS cursor_ok
  FROM es.projection_dead_letters;
SELECT count(*) AS applied_but_parked FROM asy.seen;
-- retried after a fix: applied now, removed from the dead letters
SELECT try($$SELECT es.es_projection_retry_dead('asy_totals')$$);
SELECT count(*) AS still_parked FROM es.projection_dead_letters;
INSERT INTO asy.cure DEFAULT VALUES;
SELECT es.es_projection_retry_dead('asy_totals', -1) AS no_such_position;
SELECT es.es_projection_retry_dead('asy_totals') AS retried;
SELECT count(*) AS parked FROM es.projection_dead_letters;
SELECT asy.exact();
DELETE FROM asy.cure;
-- discarded: removed without being applied
SELECT version FROM es.es_append('asy-5', 0, '[{"type": "Paid", "data": {"poison": true}}]');
CALL es.es_run_projections();
SELECT es.es_projection_discard_dead('asy_totals') AS discarded;
SELECT dead_letters, state FROM asy.status();

-- pause: nothing is applied until resume
SELECT es.es_projection_pause('asy_totals');
SELECT version FROM es.es_append('asy-6', 0, '[{"type": "Paid", "data": {"amount": 1}}]');
SELECT es.es_projection_apply('asy_totals') AS paused;
SELECT state, events_behind > 0 AS behind FROM asy.status();
SELECT es.es_projection_pause('asy_totals') AS pause_again;
SELECT es.es_projection_resume('asy_totals');
SELECT es.es_projection_apply('asy_totals') AS resumed;

-- reset: the reset statement and the checkpoint in one transaction; the
-- next batches rebuild the model in place
SELECT es.es_projection_reset('asy_totals', 'TRUNCATE asy.totals, asy.seen');
SELECT count(*) AS emptied, (SELECT checkpoint IS NULL FROM es.async_projections) AS from_start FROM asy.seen;
CALL es.es_run_projections();
SELECT count(*) = (SELECT count(*) FROM es.events WHERE category = 'asy' AND NOT data ? 'poison') AS rebuilt FROM asy.seen;
-- a failing reset statement changes nothing
SELECT try($$SELECT es.es_projection_reset('asy_totals', 'TRUNCATE asy.no_such_table')$$);
SELECT checkpoint IS NOT NULL AS kept FROM es.async_projections;
-- a reset statement cannot control transactions (22023, nothing changed),
-- and a setting it changes does not outlive it
SELECT try($$SELECT es.es_projection_reset('asy_totals', 'COMMIT')$$);
SELECT es.es_projection_reset('asy_totals', 'SET search_path = asy, pg_catalog; TRUNCATE totals, seen');
SHOW search_path;
CALL es.es_run_projections('asy_totals');
-- a failure report carries a real SQLSTATE; a conflict with another
-- transaction (40001, 40P01, 55P03) is retried without counting an attempt
SELECT try($$SELECT es.es_projection_failed('asy_totals', 'x', 'bogus')$$);
SELECT es.es_projection_failed('asy_totals', 'could not serialize access', '40001') AS conflict;
SELECT attempts, isolate_until IS NULL AS whole_batches, retry_at > clock_timestamp() AS delayed FROM es.async_projections WHERE projection = 'asy_totals';
SELECT es.es_projection_resume('asy_totals');
SELECT retry_at IS NULL AS resume_cancels_the_delay FROM es.async_projections WHERE projection = 'asy_totals';

-- an enabled trigger under an asynchronous projection is refused: appends
-- would apply the same events
ALTER TABLE es.events ENABLE TRIGGER asy_totals;
SELECT try($$SELECT es.es_projection_apply('asy_totals')$$);
ALTER TABLE es.events DISABLE TRIGGER asy_totals;

-- a statement (batch) handler over a transition table, asynchronous too
CREATE TABLE asy.batches (events integer, first_position bigint);
CREATE FUNCTION asy.on_batch() RETURNS trigger LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
	INSERT INTO asy.batches SELECT count(*), min(global_position) FROM new_events;
	RETURN NULL;
END
$$;
BEGIN;
CREATE TRIGGER asy_batches AFTER INSERT ON es.events REFERENCING NEW TABLE AS new_events
	FOR EACH STATEMENT EXECUTE FUNCTION asy.on_batch();
SELECT es.es_create_async_projection('asy_batches', batch_size => 3, categories => '{asy}', event_types => '{Paid}');
COMMIT;
CALL es.es_run_projections('asy_batches');
SELECT sum(events) = (SELECT count(*) FROM es.events WHERE category = 'asy') AS every_event,
	   max(events) AS largest_batch FROM asy.batches;

-- inline -> asynchronous without a rebuild: an inline projection that has
-- applied every event continues after the last one (no event applied twice)
CREATE TABLE asy.inline_seen (global_position bigint PRIMARY KEY);
CREATE FUNCTION asy.on_inline(e es.events) RETURNS void LANGUAGE sql
	SET search_path = pg_catalog, pg_temp AS $$ INSERT INTO asy.inline_seen VALUES (e.global_position) $$;
CREATE TRIGGER asy_inline AFTER INSERT ON es.events
	FOR EACH ROW WHEN (NEW.category = 'asy') EXECUTE FUNCTION es.es_project('asy.on_inline');
SELECT version FROM es.es_append('asy-7', 0, '[{"type": "Paid", "data": {"amount": 1}}]');
SELECT count(*) AS applied_inline FROM asy.inline_seen;
SELECT es.es_create_async_projection('asy_inline');
SELECT mode, state, events_behind FROM es.projections WHERE projection = 'asy_inline';
SELECT version FROM es.es_append('asy-7', 1, '[{"type": "Paid", "data": {"amount": 1}}]');
SELECT count(*) AS not_yet FROM asy.inline_seen;
CALL es.es_run_projections('asy_inline');
SELECT count(*) = (SELECT count(*) FROM es.events WHERE stream_id = 'asy-7') AS each_once FROM asy.inline_seen;
-- and back: the backlog is applied under the lock, the trigger enabled
SELECT version FROM es.es_append('asy-7', 2, '[{"type": "Paid", "data": {"amount": 1}}]');
SELECT es.es_projection_make_inline('asy_inline') AS backlog;
SELECT mode, state, events_behind FROM es.projections WHERE projection = 'asy_inline';
SELECT version FROM es.es_append('asy-7', 3, '[{"type": "Paid", "data": {"amount": 1}}]');
SELECT count(*) = (SELECT count(*) FROM es.events WHERE stream_id = 'asy-7') AS each_once_inline FROM asy.inline_seen;
SELECT try($$SELECT es.es_projection_make_inline('asy_inline')$$);
-- a filtered projection cannot become inline
SELECT try($$SELECT es.es_projection_make_inline('asy_totals')$$);

-- a projection's code cannot apply (or pause, reset, drop...) projections:
-- applying its own projection from inside a batch would apply events twice
CREATE FUNCTION asy.on_reenter(e es.events) RETURNS void LANGUAGE plpgsql
	SET search_path = pg_catalog, pg_temp AS $$
BEGIN
	PERFORM es.es_projection_apply('asy_reenter');
END
$$;
BEGIN;
CREATE TRIGGER asy_reenter AFTER INSERT ON es.events
	FOR EACH ROW EXECUTE FUNCTION es.es_project('asy.on_reenter');
SELECT es.es_create_async_projection('asy_reenter', categories => '{asy}');
COMMIT;
SELECT try($$SELECT es.es_projection_apply('asy_reenter')$$);
SELECT checkpoint IS NULL AS nothing_applied FROM es.async_projections WHERE projection = 'asy_reenter';
-- the guard is released after the error: the session can apply again
SELECT es.es_projection_pause('asy_reenter');
SELECT es.es_drop_projection('asy_reenter');

-- the view lists both kinds
SELECT projection, mode, state, function, batch_size, categories, event_types, on_error
  FROM es.projections WHERE projection LIKE 'asy%' ORDER BY projection;

-- bad input: a clear error, nothing written
SELECT try($$SELECT es.es_create_async_projection(NULL)$$);
SELECT try($$SELECT es.es_create_async_projection('no_such_trigger')$$);
SELECT try($$SELECT es.es_create_async_projection('es_guard_write')$$);
SELECT try($$SELECT es.es_create_async_projection('asy_totals')$$);
SELECT try($$SELECT es.es_create_async_projection('asy_inline', batch_size => 0)$$);
SELECT try($$SELECT es.es_create_async_projection('asy_inline', batch_size => 100001)$$);
SELECT try($$SELECT es.es_create_async_projection('asy_inline', batch_size => NULL)$$);
SELECT try($$SELECT es.es_create_async_projection('asy_inline', on_error => 'ignore')$$);
SELECT try($$SELECT es.es_create_async_projection('asy_inline', max_retries => -1)$$);
SELECT try($$SELECT es.es_create_async_projection('asy_inline', categories => '{}')$$);
SELECT try($$SELECT es.es_create_async_projection('asy_inline', categories => '{NULL}')$$);
SELECT try($$SELECT es.es_create_async_projection('asy_inline', event_types => '{""}')$$);
SELECT try($$SELECT es.es_create_async_projection('asy_inline', event_types => '{{a},{b}}')$$);
CREATE FUNCTION asy.before_trg() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NEW; END $$;
CREATE TRIGGER asy_before BEFORE INSERT ON es.events FOR EACH ROW EXECUTE FUNCTION asy.before_trg();
SELECT try($$SELECT es.es_create_async_projection('asy_before')$$);
DROP TRIGGER asy_before ON es.events;
SELECT try($$SELECT es.es_projection_apply(NULL)$$);
SELECT try($$SELECT es.es_projection_apply('no_such')$$);
SELECT try($$SELECT es.es_projection_failed('no_such', 'x', NULL)$$);
SELECT try($$SELECT es.es_projection_failed('asy_totals', NULL, NULL)$$);
SELECT try($$SELECT es.es_projection_pause('no_such')$$);
SELECT try($$SELECT es.es_projection_resume(NULL)$$);
SELECT try($$SELECT es.es_projection_reset('no_such', NULL)$$);
SELECT try($$SELECT es.es_projection_make_inline('no_such')$$);
SELECT try($$SELECT es.es_drop_projection('no_such')$$);
SELECT try($$CALL es.es_run_projections('no_such')$$);
SELECT try($$CALL es.es_run_projections(max_batches => 0)$$);
SELECT try($$SELECT es.es_projection_retry_dead('no_such')$$);
SELECT try($$SELECT es.es_projection_discard_dead('no_such', 1)$$);
SET default_transaction_read_only = on;
CALL es.es_run_projections();
RESET default_transaction_read_only;
SELECT count(*) AS registered FROM es.async_projections;

-- the registry and the dead letters are written only through the functions
SELECT try($$UPDATE es.async_projections SET checkpoint = NULL$$);
SELECT try($$DELETE FROM es.projection_dead_letters$$);
SELECT try($$INSERT INTO es.async_projections (projection, owner, state, batch_size, on_error, max_retries, created_at) VALUES ('x', 'es_admin', 'running', 1, 'stop', 0, now())$$);
SELECT try($$TRUNCATE es.async_projections$$);

-- privileges: only es_admin declares and applies; readers see the view
CREATE ROLE regress_asy_admin IN ROLE es_admin;
CREATE ROLE regress_asy_writer IN ROLE es_writer;
CREATE ROLE regress_asy_reader IN ROLE es_reader;
GRANT USAGE ON SCHEMA asy TO regress_asy_admin;
SET ROLE regress_asy_writer;
SELECT try($$SELECT es.es_projection_apply('asy_totals')$$);
SELECT try($$SELECT es.es_projection_pause('asy_totals')$$);
SELECT try($$SELECT es.es_drop_projection('asy_totals')$$);
SELECT try($$UPDATE es.async_projections SET state = 'paused'$$);
SET ROLE regress_asy_reader;
SELECT projection, mode FROM es.projections WHERE projection = 'asy_totals';
RESET ROLE;
-- the trigger's code runs as the role that declared the projection, not as
-- the caller: an es_admin without EXECUTE on it may still apply it
SET ROLE regress_asy_admin;
SELECT try($$SELECT es.es_projection_pause('asy_totals')$$);
SELECT try($$SELECT es.es_projection_resume('asy_totals')$$);
RESET ROLE;
REVOKE EXECUTE ON FUNCTION es.es_project() FROM es_admin;
SET ROLE regress_asy_admin;
SELECT try($$SELECT es.es_projection_apply('asy_totals')$$);
RESET ROLE;
GRANT EXECUTE ON FUNCTION es.es_project() TO es_admin;

-- drop: the trigger, settings, checkpoint and dead letters go; the read
-- model stays
SELECT es.es_drop_projection('asy_totals');
SELECT es.es_drop_projection('asy_batches');
SELECT es.es_drop_projection('asy_inline');
SELECT count(*) AS triggers FROM pg_trigger WHERE tgname LIKE 'asy%';
SELECT count(*) AS registered FROM es.async_projections;
SELECT count(*) > 0 AS model_kept FROM asy.totals;

DROP SCHEMA asy CASCADE;
DROP ROLE regress_asy_admin, regress_asy_writer, regress_asy_reader;
