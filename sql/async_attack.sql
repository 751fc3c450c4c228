-- async_attack: adversarial cases of asynchronous projections (issue 13
-- review).  Each case states what must hold; the read model "aak.seen" records
-- every application of every event of the category "aak".

CREATE SCHEMA aak;
CREATE TABLE aak.seen (global_position bigint, projection text);
CREATE FUNCTION aak.on_event(e es.events) RETURNS void
LANGUAGE sql SET search_path = pg_catalog, pg_temp
AS $$ INSERT INTO aak.seen VALUES (e.global_position, 'aak') $$;
-- every event of the category applied exactly once
CREATE FUNCTION aak.exact() RETURNS boolean LANGUAGE sql AS $$
	SELECT (SELECT count(*) FROM aak.seen) = (SELECT count(*) FROM es.events WHERE category = 'aak')
	   AND NOT EXISTS (SELECT global_position FROM es.events WHERE category = 'aak'
					   EXCEPT SELECT global_position FROM aak.seen) $$;
SELECT version FROM es.es_append('aak-1', 0, '[{"type": "T", "data": {}}]');

-- a trigger created in this transaction has fired on the events this same
-- transaction appended after creating it: declaring it asynchronous from the
-- beginning of the log would apply them a second time, so it is refused
-- (55000) and the transaction changes nothing
BEGIN;
CREATE TRIGGER aak AFTER INSERT ON es.events FOR EACH ROW WHEN (NEW.category = 'aak')
	EXECUTE FUNCTION es.es_project('aak.on_event');
SELECT version FROM es.es_append('aak-2', 0, '[{"type": "T", "data": {}}]');
SELECT count(*) AS applied_inline FROM aak.seen;
SELECT es.es_create_async_projection('aak');
COMMIT;
SELECT count(*) AS triggers FROM pg_trigger WHERE tgname = 'aak';
SELECT count(*) AS registered FROM es.async_projections WHERE projection = 'aak';
SELECT count(*) AS applied FROM aak.seen;
-- from_start => false says the read model holds them: it continues after them
BEGIN;
CREATE TRIGGER aak AFTER INSERT ON es.events FOR EACH ROW WHEN (NEW.category = 'aak')
	EXECUTE FUNCTION es.es_project('aak.on_event');
SELECT version FROM es.es_append('aak-2', 0, '[{"type": "T", "data": {}}]');
SELECT es.es_create_async_projection('aak', from_start => false);
COMMIT;
CALL es.es_run_projections('aak');
SELECT count(*) AS applied_twice FROM (SELECT FROM aak.seen GROUP BY global_position HAVING count(*) > 1) AS d;
SELECT es.es_drop_projection('aak');
TRUNCATE aak.seen;

-- the reset statement is the caller's code run inside the reset: it must
-- not apply (or otherwise change) the projection being reset, or the batch
-- it applies survives the reset and is applied again by the replay
BEGIN;
CREATE TRIGGER aak AFTER INSERT ON es.events FOR EACH ROW WHEN (NEW.category = 'aak')
	EXECUTE FUNCTION es.es_project('aak.on_event');
SELECT es.es_create_async_projection('aak');
COMMIT;
\set VERBOSITY terse
SELECT es.es_projection_reset('aak', 'TRUNCATE aak.seen; SELECT es.es_projection_apply(''aak'')');
\set VERBOSITY default
DO $$ DECLARE a bigint; f integer; BEGIN CALL es.es_run_projections('aak', NULL, a, f); END $$;
SELECT aak.exact() AS exactly_once;
\set VERBOSITY terse
SELECT es.es_projection_reset('aak', 'SELECT es.es_drop_projection(''aak'')');
\set VERBOSITY default
SELECT count(*) AS still_declared FROM es.async_projections WHERE projection = 'aak';
SELECT es.es_drop_projection('aak');
TRUNCATE aak.seen;

-- a plain trigger function declared by one es_admin member must not run
-- with the rights of another role that applies the projection (a superuser
-- running CALL es.es_run_projections() from pg_cron, as the README shows):
-- it runs as the role that declared the projection, as the worker will
CREATE ROLE regress_aak_mallory IN ROLE es_admin;
CREATE TABLE aak.ran_as (role name, super boolean);
GRANT USAGE ON SCHEMA aak TO regress_aak_mallory;
GRANT INSERT ON aak.ran_as TO regress_aak_mallory;
CREATE FUNCTION aak.mallory_trigger() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	INSERT INTO aak.ran_as SELECT current_user, rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user;
	RETURN NULL;
END $$;
ALTER FUNCTION aak.mallory_trigger() OWNER TO regress_aak_mallory;
SET ROLE regress_aak_mallory;
BEGIN;
CREATE TRIGGER aak_mallory AFTER INSERT ON es.events FOR EACH STATEMENT EXECUTE FUNCTION aak.mallory_trigger();
SELECT es.es_create_async_projection('aak_mallory');
COMMIT;
RESET ROLE;
DO $$ DECLARE a bigint; f integer; BEGIN CALL es.es_run_projections('aak_mallory', NULL, a, f); END $$;
SELECT DISTINCT role = 'regress_aak_mallory' AS ran_as_declarer, super FROM aak.ran_as;
SELECT es.es_drop_projection('aak_mallory');

DROP SCHEMA aak CASCADE;
DROP ROLE regress_aak_mallory;
