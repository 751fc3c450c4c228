-- trust: code that one role registers in es_ext's registries runs as that
-- role, never with a more privileged caller's rights.  Upcasters run as the
-- role that registered them, es_project handlers as the owner of the handler
-- function, both inside a security-restricted operation with search_path
-- pg_catalog, pg_temp whenever the caller is another role.  Reducers are
-- chosen by the caller and run as the caller.  A role with TRIGGER on
-- es.events runs code as every appender (plain triggers run as the appender).
SET es.snapshot_every = 0;

-- the cast: a superuser, a non-superuser es_admin, a writer and a reader
CREATE ROLE regress_trust_super SUPERUSER;
CREATE ROLE regress_trust_admin IN ROLE es_admin;
CREATE ROLE regress_trust_admin2 IN ROLE es_admin;
CREATE ROLE regress_trust_writer IN ROLE es_writer;
CREATE ROLE regress_trust_reader IN ROLE es_reader;
CREATE SCHEMA trust_admin AUTHORIZATION regress_trust_admin;
CREATE SCHEMA trust_reader AUTHORIZATION regress_trust_reader;
GRANT USAGE ON SCHEMA trust_admin TO PUBLIC;
-- a table only superusers may write
CREATE TABLE public.trust_loot (who text);
REVOKE ALL ON public.trust_loot FROM PUBLIC;

-- the hostile code, written by the non-superuser es_admin: whenever it runs
-- as a superuser it makes its author superuser and writes where only
-- superusers may; it returns the role it ran as
SET ROLE regress_trust_admin;
CREATE FUNCTION trust_admin.grab() RETURNS text LANGUAGE plpgsql AS $$
BEGIN
	BEGIN
		ALTER ROLE regress_trust_admin SUPERUSER;
	EXCEPTION WHEN insufficient_privilege THEN NULL;
	END;
	BEGIN
		INSERT INTO public.trust_loot VALUES (current_user);
	EXCEPTION WHEN insufficient_privilege THEN NULL;
	END;
	RETURN current_user;
END
$$;
CREATE FUNCTION trust_admin.up_v1(data jsonb) RETURNS jsonb LANGUAGE sql AS $$
	SELECT data || jsonb_build_object('upcast_by', trust_admin.grab())
$$;
SELECT es.es_register_upcaster('TrustPlaced', 1, 'trust_admin.up_v1(jsonb)');
RESET ROLE;

-- the registry records who registered each upcaster
SELECT event_type, from_version, fn, registered_by FROM es.upcasters WHERE event_type LIKE 'Trust%';

-- a superuser appends and reads, on every read path: the upcaster runs as
-- the admin that registered it, and its attack has no effect
SET ROLE regress_trust_super;
SELECT version FROM es.es_append('trust-1', 0, '[{"type": "TrustPlaced", "data": {"n": 1}},
                                                 {"type": "TrustPlaced", "data": {"n": 2}}]');
SELECT version, data->>'upcast_by' AS upcast_by, schema_version FROM es.es_read_stream('trust-1');
SELECT version, data->>'upcast_by' AS upcast_by FROM es.es_read_all(NULL, 100, 'trust');
SELECT (es.es_upcast(e)).data->>'upcast_by' AS upcast_by FROM es.events AS e WHERE e.stream_id = 'trust-1';
-- a reducer is chosen by its caller and runs as the caller (here, a superuser)
CREATE FUNCTION public.trust_reducer(state jsonb, event jsonb) RETURNS jsonb LANGUAGE sql AS $$
	SELECT state || jsonb_build_object('upcast_by', event->'data'->'upcast_by',
	                                   'reducer_superuser', (SELECT rolsuper FROM pg_roles WHERE rolname = current_user))
$$;
SELECT es.es_fold('trust-1', 'public.trust_reducer(jsonb,jsonb)', '{}');
SELECT es.es_fold_agg('public.trust_reducer(jsonb,jsonb)', '{}', e ORDER BY e.version)
  FROM es.events AS e WHERE e.stream_id = 'trust-1';
RESET ROLE;
SELECT rolsuper AS admin_became_superuser FROM pg_roles WHERE rolname = 'regress_trust_admin';
SELECT count(*) AS loot FROM public.trust_loot;

-- ordinary roles keep reading through it; the upcaster runs as the admin
SET ROLE regress_trust_reader;
SELECT version, data->>'upcast_by' AS upcast_by FROM es.es_read_stream('trust-1');
RESET ROLE;
-- and so does the registrant itself
SET ROLE regress_trust_admin;
SELECT version, data->>'upcast_by' AS upcast_by FROM es.es_read_stream('trust-1');
RESET ROLE;

-- registered_by cannot be forged by a direct write to es.upcasters: an
-- admin may only name itself or a role it is a member of ...
SET ROLE regress_trust_admin;
SELECT try($$INSERT INTO es.upcasters (event_type, from_version, fn, registered_by)
             VALUES ('TrustPlaced', 2, 'trust_admin.up_v1(pg_catalog.jsonb)', 'regress_trust_super')$$);
SELECT try($$UPDATE es.upcasters SET registered_by = 'regress_trust_super' WHERE event_type = 'TrustPlaced'$$);
-- ... a row written without it is stamped with the writer
INSERT INTO es.upcasters (event_type, from_version, fn) VALUES ('TrustOther', 1, 'trust_admin.up_v1(pg_catalog.jsonb)');
RESET ROLE;
-- another admin rewriting the row takes it over: the code now runs as that admin
SET ROLE regress_trust_admin2;
UPDATE es.upcasters SET created_at = now() WHERE event_type = 'TrustOther';
RESET ROLE;
SELECT event_type, from_version, registered_by FROM es.upcasters WHERE event_type LIKE 'Trust%' ORDER BY 1, 2;
-- a superuser may name any role (a restore writes the dumped rows back so)
SET ROLE regress_trust_super;
UPDATE es.upcasters SET registered_by = 'regress_trust_admin' WHERE event_type = 'TrustOther';
SELECT try($$UPDATE es.upcasters SET registered_by = 12345 WHERE event_type = 'TrustOther'$$);
RESET ROLE;
SELECT event_type, from_version, registered_by FROM es.upcasters WHERE event_type = 'TrustOther';
DELETE FROM es.upcasters WHERE event_type = 'TrustOther';

-- the owner of an upcaster's function controls its body: it must have the
-- rights of the role the upcaster runs as.  A superuser registering a
-- function the admin owns (which the admin could then rewrite) is refused
-- when the upcaster would run, and so is a function dropped and created
-- again under the registered name by the admin
SELECT es.es_register_upcaster('TrustTaken', 1, 'trust_admin.up_v1(jsonb)');
SELECT version FROM es.es_append('trust-taken-1', 0, '[{"type": "TrustTaken", "data": {}}]');
SELECT try($$SELECT data FROM es.es_read_stream('trust-taken-1')$$);
SELECT rolsuper AS admin_became_superuser FROM pg_roles WHERE rolname = 'regress_trust_admin';
SELECT es.es_unregister_upcaster('TrustTaken', 1);

-- the caller's search_path does not reach code that runs as another role:
-- an upcaster naming a helper without its schema finds it when its
-- registrant reads, not when a reader who shadows it does (the upcaster
-- runs with search_path pg_catalog, pg_temp)
SET ROLE regress_trust_admin;
CREATE FUNCTION trust_admin.trust_helper(data jsonb) RETURNS jsonb LANGUAGE sql AS $$
	SELECT data || '{"helper": "admin"}'
$$;
CREATE FUNCTION trust_admin.up_path(data jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
BEGIN
	RETURN trust_helper(data);
END
$$;
SELECT es.es_register_upcaster('TrustPath', 1, 'trust_admin.up_path(jsonb)');
RESET ROLE;
SELECT version FROM es.es_append('trust-2', 0, '[{"type": "TrustPath", "data": {}}]');
SET ROLE regress_trust_reader;
CREATE FUNCTION trust_reader.trust_helper(data jsonb) RETURNS jsonb LANGUAGE sql AS $$
	SELECT data || jsonb_build_object('helper', 'reader', 'ran_as', current_user)
$$;
SET search_path = trust_reader, trust_admin, public;
SELECT try($$SELECT data FROM es.es_read_stream('trust-2')$$);
RESET search_path;
RESET ROLE;
SET ROLE regress_trust_admin;
SET search_path = trust_admin, public;
SELECT data FROM es.es_read_stream('trust-2');
RESET search_path;
-- an upcaster that pins its own search_path keeps it
ALTER FUNCTION trust_admin.up_path(jsonb) SET search_path = trust_admin, pg_catalog;
RESET ROLE;
SET ROLE regress_trust_reader;
SET search_path = trust_reader, trust_admin, public;
SELECT data FROM es.es_read_stream('trust-2');
RESET search_path;
RESET ROLE;

-- the upcaster cannot change the reader's session: settings it makes are
-- undone after it, and what a security-restricted operation forbids fails
SET ROLE regress_trust_admin;
CREATE OR REPLACE FUNCTION trust_admin.up_path(data jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
BEGIN
	PERFORM pg_catalog.set_config('search_path', 'trust_admin', false);
	PERFORM pg_catalog.set_config('application_name', 'hijacked', false);
	RETURN data;
END
$$;
RESET ROLE;
SET ROLE regress_trust_reader;
SELECT data FROM es.es_read_stream('trust-2');
SELECT current_setting('search_path') AS search_path, current_setting('application_name') = 'hijacked' AS hijacked;
RESET ROLE;
SET ROLE regress_trust_admin;
CREATE OR REPLACE FUNCTION trust_admin.up_path(data jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
BEGIN
	CREATE TEMP TABLE trust_tmp (x int);
	RETURN data;
END
$$;
RESET ROLE;
SET ROLE regress_trust_reader;
SELECT try($$SELECT data FROM es.es_read_stream('trust-2')$$);
RESET ROLE;

-- a registrant that no longer exists: its upcasters fail closed
CREATE ROLE regress_trust_gone IN ROLE es_admin;
SET ROLE regress_trust_gone;
SELECT es.es_register_upcaster('TrustGone', 1, 'trust_admin.up_v1(jsonb)');
RESET ROLE;
DROP ROLE regress_trust_gone;
SELECT version FROM es.es_append('trust-3', 0, '[{"type": "TrustGone", "data": {}}]');
SELECT try($$SELECT data FROM es.es_read_stream('trust-3')$$);
-- a registrant that lost EXECUTE on the upcaster cannot run it either
SET ROLE regress_trust_admin2;
SELECT es.es_register_upcaster('TrustGone', 1, 'trust_admin.up_v1(jsonb)');
RESET ROLE;
REVOKE EXECUTE ON FUNCTION trust_admin.up_v1(jsonb) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION trust_admin.up_v1(jsonb) TO regress_trust_reader;
SET ROLE regress_trust_reader;
SELECT try($$SELECT data FROM es.es_read_stream('trust-3')$$);
RESET ROLE;
GRANT EXECUTE ON FUNCTION trust_admin.up_v1(jsonb) TO PUBLIC;
DELETE FROM es.upcasters WHERE event_type LIKE 'Trust%';

-- es_project handlers run as the owner of the handler function
SET ROLE regress_trust_admin;
CREATE TABLE trust_admin.seen (stream_id text, version bigint, ran_as text, PRIMARY KEY (stream_id, version));
CREATE FUNCTION trust_admin.on_event(e es.events) RETURNS void LANGUAGE sql AS $$
	INSERT INTO trust_admin.seen VALUES (e.stream_id, e.version, trust_admin.grab())
$$;
CREATE TRIGGER trust_project AFTER INSERT ON es.events
	FOR EACH ROW WHEN (NEW.category = 'trustp')
	EXECUTE FUNCTION es.es_project('trust_admin.on_event');
RESET ROLE;
-- a superuser appends: the handler's attack has no effect
SET ROLE regress_trust_super;
SELECT version FROM es.es_append('trustp-1', 0, '[{"type": "A", "data": {}}]');
RESET ROLE;
SELECT rolsuper AS admin_became_superuser FROM pg_roles WHERE rolname = 'regress_trust_admin';
SELECT count(*) AS loot FROM public.trust_loot;
-- a writer appends: it needs no privilege on the read model, which the
-- handler writes as its owner
SET ROLE regress_trust_writer;
SELECT try($$INSERT INTO trust_admin.seen VALUES ('x', 1, 'x')$$);
SELECT version FROM es.es_append('trustp-2', 0, '[{"type": "A", "data": {}}]');
RESET ROLE;
SELECT * FROM trust_admin.seen ORDER BY 1, 2;
-- a replay (the rebuild's engine) runs it as the owner too
DELETE FROM trust_admin.seen;
SET ROLE regress_trust_super;
SELECT replayed FROM es.es_projection_replay('trust_project',
	(SELECT log_cursor FROM es.es_read_all(NULL, 1000000)
	  WHERE log_cursor < (SELECT log_cursor FROM es.es_read_all(NULL, 1000000, 'trustp') LIMIT 1)
	  ORDER BY log_cursor DESC LIMIT 1), 100, true);
RESET ROLE;
SELECT * FROM trust_admin.seen ORDER BY 1, 2;
SELECT rolsuper AS admin_became_superuser FROM pg_roles WHERE rolname = 'regress_trust_admin';
SELECT count(*) AS loot FROM public.trust_loot;
DROP TRIGGER trust_project ON es.events;

-- what es_ext cannot change: a plain trigger on es.events runs as the
-- appender, so a role with TRIGGER on es.events runs code as every appender
SET ROLE regress_trust_admin;
CREATE TABLE trust_admin.plain (appender_is_superuser boolean);
GRANT INSERT ON trust_admin.plain TO PUBLIC;
CREATE FUNCTION trust_admin.plain_trigger() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	INSERT INTO trust_admin.plain SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user;
	RETURN NULL;
END
$$;
CREATE TRIGGER trust_plain AFTER INSERT ON es.events
	FOR EACH ROW WHEN (NEW.category = 'trustq')
	EXECUTE FUNCTION trust_admin.plain_trigger();
RESET ROLE;
SET ROLE regress_trust_super;
SELECT version FROM es.es_append('trustq-1', 0, '[{"type": "A", "data": {}}]');
RESET ROLE;
SELECT * FROM trust_admin.plain;
DROP TRIGGER trust_plain ON es.events;

-- clean up
DROP SCHEMA trust_admin CASCADE;
DROP SCHEMA trust_reader CASCADE;
DROP TABLE public.trust_loot;
DROP FUNCTION public.trust_reducer(jsonb, jsonb);
DROP ROLE regress_trust_super, regress_trust_admin, regress_trust_admin2, regress_trust_writer, regress_trust_reader;
RESET es.snapshot_every;
