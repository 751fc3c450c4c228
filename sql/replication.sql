-- replication: es_replica_projections, which makes the projection triggers
-- on es.events fire for the rows a logical replication subscription applies
-- (ENABLE ALWAYS) after checking that they can run there, and turns them
-- back.  The subscriber itself is tested in test/t/051_logical_replication.pl.

CREATE SCHEMA repl;
CREATE ROLE regress_repl_admin IN ROLE es_admin;
GRANT USAGE ON SCHEMA repl TO regress_repl_admin;

-- error text with the detail and hint, and the state of the triggers
CREATE FUNCTION repl.try_hint(sql text) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
	st text;
	msg text;
	det text;
	hnt text;
BEGIN
	EXECUTE sql;
	RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
	GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE, msg = MESSAGE_TEXT,
		det = PG_EXCEPTION_DETAIL, hnt = PG_EXCEPTION_HINT;
	RETURN st || ': ' || msg
		|| CASE WHEN det <> '' THEN E'\nDETAIL: ' || det ELSE '' END
		|| CASE WHEN hnt <> '' THEN E'\nHINT: ' || hnt ELSE '' END;
END
$$;
CREATE VIEW repl.triggers AS
	SELECT c.relname, t.tgname, t.tgenabled
	  FROM pg_trigger AS t JOIN pg_class AS c ON c.oid = t.tgrelid
	 WHERE c.oid IN ('es.events'::regclass, 'es.streams'::regclass) AND NOT t.tgisinternal
	 ORDER BY 1, 2;

-- read models: an es_project trigger whose handlers pin search_path, and a
-- plain row trigger whose function does
CREATE TABLE repl.balance (stream_id text PRIMARY KEY, amount numeric NOT NULL);
CREATE TABLE repl.seen (stream_id text, version bigint, PRIMARY KEY (stream_id, version));
CREATE FUNCTION repl.on_deposit(e es.events) RETURNS void LANGUAGE sql
SET search_path = repl, pg_temp AS $$
	INSERT INTO balance AS b VALUES (e.stream_id, (e.data ->> 'amount')::numeric)
	ON CONFLICT (stream_id) DO UPDATE SET amount = b.amount + excluded.amount
$$;
CREATE FUNCTION repl.on_any(e es.events) RETURNS void LANGUAGE sql
SET search_path = repl, pg_temp AS $$
	INSERT INTO balance VALUES (e.stream_id, 0) ON CONFLICT DO NOTHING
$$;
CREATE FUNCTION repl.seen_project() RETURNS trigger LANGUAGE plpgsql
SET search_path = repl, pg_temp AS $$
BEGIN
	INSERT INTO seen VALUES (NEW.stream_id, NEW.version);
	RETURN NULL;
END
$$;
CREATE TRIGGER repl_balance AFTER INSERT ON es.events FOR EACH ROW WHEN (NEW.category = 'repl')
	EXECUTE FUNCTION es.es_project('Deposited', 'repl.on_deposit', '*', 'repl.on_any');
CREATE TRIGGER repl_seen AFTER INSERT ON es.events FOR EACH ROW WHEN (NEW.category = 'repl')
	EXECUTE FUNCTION repl.seen_project();
-- a paused projection (an interrupted rebuild) and a trigger that is not a
-- projection are left alone
CREATE TRIGGER repl_paused AFTER INSERT ON es.events FOR EACH ROW EXECUTE FUNCTION repl.seen_project();
ALTER TABLE es.events DISABLE TRIGGER repl_paused;
CREATE FUNCTION repl.noop() RETURNS trigger LANGUAGE plpgsql AS 'BEGIN RETURN NULL; END';
CREATE TRIGGER repl_after_update AFTER UPDATE ON es.events FOR EACH STATEMENT EXECUTE FUNCTION repl.noop();

-- NULL, and a caller that is not the owner of es.events (es_admin may call it)
SELECT repl.try_hint($$SELECT es.es_replica_projections(NULL)$$);
SET ROLE regress_repl_admin;
SELECT repl.try_hint($$SELECT es.es_replica_projections()$$);
SELECT repl.try_hint($$SELECT es.es_replica_projections(false)$$);
RESET ROLE;
-- a writer may not call it at all
CREATE ROLE regress_repl_writer IN ROLE es_writer;
GRANT USAGE ON SCHEMA repl TO regress_repl_writer;
SET ROLE regress_repl_writer;
SELECT repl.try_hint($$SELECT es.es_replica_projections()$$);
RESET ROLE;
REVOKE USAGE ON SCHEMA repl FROM regress_repl_writer;
DROP ROLE regress_repl_writer;
SELECT * FROM repl.triggers;

-- enabling: the projections fire ALWAYS, es_ext's guards and the rest stay
SELECT * FROM es.es_replica_projections();
SELECT * FROM repl.triggers;
-- nothing left to change
SELECT * FROM es.es_replica_projections(true);
-- the projections still run for local appends
SELECT version FROM es.es_append('repl-1', 0, '[{"type": "Opened", "data": {}},
                                                {"type": "Deposited", "data": {"amount": 5}}]');
SELECT * FROM repl.balance;
SELECT * FROM repl.seen ORDER BY 1, 2;

-- a projection created later fires for local writes only until the next call
CREATE TRIGGER repl_later AFTER INSERT ON es.events FOR EACH ROW WHEN (NEW.category = 'repl')
	EXECUTE FUNCTION es.es_project('repl.on_any');
SELECT tgenabled FROM pg_trigger WHERE tgname = 'repl_later';
SELECT * FROM es.es_replica_projections();

-- disabling turns back exactly the projections that fire for replicated rows
ALTER TABLE es.events ENABLE REPLICA TRIGGER repl_later;
SELECT es.es_replica_projections(false) AS changed;
SELECT * FROM repl.triggers;
SELECT * FROM es.es_replica_projections(false);

-- refusals change nothing: every trigger keeps its state
-- a plain trigger function without SET search_path
CREATE FUNCTION repl.unpinned_project() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	INSERT INTO seen VALUES (NEW.stream_id, NEW.version);
	RETURN NULL;
END
$$;
CREATE TRIGGER repl_unpinned AFTER INSERT ON es.events FOR EACH ROW WHEN (NEW.category = 'nope')
	EXECUTE FUNCTION repl.unpinned_project();
SELECT repl.try_hint($$SELECT es.es_replica_projections()$$);
SELECT * FROM repl.triggers;
-- pinned: accepted
ALTER FUNCTION repl.unpinned_project() SET search_path = repl, pg_temp;
SELECT * FROM es.es_replica_projections();
SELECT * FROM es.es_replica_projections(false);
DROP TRIGGER repl_unpinned ON es.events;

-- an es_project handler without SET search_path
CREATE FUNCTION repl.on_unpinned(e es.events) RETURNS void LANGUAGE sql AS 'SELECT';
CREATE TRIGGER repl_bad AFTER INSERT ON es.events FOR EACH ROW WHEN (NEW.category = 'nope')
	EXECUTE FUNCTION es.es_project('A', 'repl.on_any', 'B', 'repl.on_unpinned');
SELECT repl.try_hint($$SELECT es.es_replica_projections()$$);
DROP TRIGGER repl_bad ON es.events;
-- a handler named without its schema (found only through a search_path)
CREATE TRIGGER repl_bad AFTER INSERT ON es.events FOR EACH ROW WHEN (NEW.category = 'nope')
	EXECUTE FUNCTION es.es_project('A', 'repl.on_any', 'B', 'on_any');
SELECT repl.try_hint($$SELECT es.es_replica_projections()$$);
DROP TRIGGER repl_bad ON es.events;
-- a handler that does not exist, an invalid name, bad arguments
CREATE TRIGGER repl_bad AFTER INSERT ON es.events FOR EACH ROW WHEN (NEW.category = 'nope')
	EXECUTE FUNCTION es.es_project('repl.nope');
SELECT repl.try_hint($$SELECT es.es_replica_projections()$$);
DROP TRIGGER repl_bad ON es.events;
CREATE TRIGGER repl_bad AFTER INSERT ON es.events FOR EACH ROW WHEN (NEW.category = 'nope')
	EXECUTE FUNCTION es.es_project('repl."on_any');
SELECT repl.try_hint($$SELECT es.es_replica_projections()$$);
DROP TRIGGER repl_bad ON es.events;
CREATE TRIGGER repl_bad AFTER INSERT ON es.events FOR EACH ROW WHEN (NEW.category = 'nope')
	EXECUTE FUNCTION es.es_project('A', 'repl.on_any', 'B');
SELECT repl.try_hint($$SELECT es.es_replica_projections()$$);
DROP TRIGGER repl_bad ON es.events;
-- a statement-level projection: the apply worker would not fire it
CREATE FUNCTION repl.count_batch() RETURNS trigger LANGUAGE plpgsql
SET search_path = repl, pg_temp AS 'BEGIN RETURN NULL; END';
CREATE TRIGGER repl_batch AFTER INSERT ON es.events REFERENCING NEW TABLE AS new_events
	FOR EACH STATEMENT EXECUTE FUNCTION repl.count_batch();
SELECT repl.try_hint($$SELECT es.es_replica_projections()$$);
-- ... disabled, it is left alone
ALTER TABLE es.events DISABLE TRIGGER repl_batch;
SELECT * FROM es.es_replica_projections();
SELECT * FROM repl.triggers;
-- turning off needs no check
ALTER TABLE es.events ENABLE TRIGGER repl_batch;
SELECT * FROM es.es_replica_projections(false);
SELECT * FROM repl.triggers;

-- on a database that is no subscriber, es_read_all and es_append work
SELECT count(*) FROM es.es_read_all(NULL, 1000, 'repl');

DROP TRIGGER repl_batch ON es.events;
DROP TRIGGER repl_balance ON es.events;
DROP TRIGGER repl_seen ON es.events;
DROP TRIGGER repl_paused ON es.events;
DROP TRIGGER repl_later ON es.events;
DROP TRIGGER repl_after_update ON es.events;
REVOKE USAGE ON SCHEMA repl FROM regress_repl_admin;
DROP ROLE regress_repl_admin;
DROP SCHEMA repl CASCADE;
