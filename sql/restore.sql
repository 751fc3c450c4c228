-- restore: what makes a logical dump restore (src/dump.c, sql/install/80_dump.sql)
--
-- The dump/restore round trips themselves are in test/t/040_dump_restore.pl;
-- this file covers the pieces one by one: which user objects es_ext carries,
-- who may write through the guards during a restore, how pending objects
-- are re-created, and every refusal.
SET client_min_messages = warning;
CREATE ROLE regress_restore_writer LOGIN IN ROLE es_writer;
CREATE ROLE regress_restore_admin LOGIN IN ROLE es_admin;
RESET client_min_messages;

-- the sequences and es.user_objects are dumped; es.user_objects through its filter
SELECT x::regclass AS dumped, c AS filter
  FROM pg_extension AS e, unnest(e.extconfig, e.extcondition) AS u(x, c)
 WHERE e.extname = 'es_ext' AND (x::regclass::text LIKE '%seq' OR x::regclass::text = 'es.user_objects')
 ORDER BY 1::text;

-- es_ext's own triggers and indexes are not user objects
SELECT count(*) AS own_objects_listed
  FROM es.es_user_objects() AS u
 WHERE u.object_name LIKE 'es\_%'
    OR u.object_name IN (SELECT c.relname FROM pg_class AS c
						  WHERE c.relnamespace = 'es'::regnamespace AND c.relkind = 'i');

-- user objects of every kind are listed with the statements that re-create them
CREATE TABLE public.restore_log (stream_id text, version bigint);
CREATE FUNCTION public.restore_log_row() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	INSERT INTO public.restore_log VALUES (NEW.stream_id, NEW.version);
	RETURN NULL;
END $$;
CREATE FUNCTION public.restore_handler(e es.events) RETURNS void LANGUAGE sql AS $$ SELECT $$;
CREATE TRIGGER restore_when AFTER INSERT ON es.events FOR EACH ROW
	WHEN (NEW.category = 'rst') EXECUTE FUNCTION public.restore_log_row();
CREATE TRIGGER restore_paused AFTER INSERT ON es.events FOR EACH ROW EXECUTE FUNCTION public.restore_log_row();
ALTER TABLE es.events DISABLE TRIGGER restore_paused;
CREATE TRIGGER restore_always AFTER INSERT ON es.streams FOR EACH ROW EXECUTE FUNCTION public.restore_log_row();
ALTER TABLE es.streams ENABLE ALWAYS TRIGGER restore_always;
CREATE TRIGGER restore_dispatch AFTER INSERT ON es.events FOR EACH ROW
	EXECUTE FUNCTION es.es_project('Moved', 'public.restore_handler');
CREATE INDEX restore_idx ON es.snapshots (stream_id, reducer);
ALTER TABLE es.snapshots ENABLE ROW LEVEL SECURITY;
ALTER TABLE es.snapshots FORCE ROW LEVEL SECURITY;
CREATE POLICY restore_all ON es.snapshots USING (true);
CREATE POLICY restore_two ON es.snapshots AS RESTRICTIVE FOR UPDATE TO es_writer, es_admin
	USING (stream_id <> 'x') WITH CHECK (stream_id <> 'y');
SELECT u.table_name, u.kind, u.object_name, u.definition, u.trigger_enabled
  FROM es.es_user_objects() AS u
 WHERE u.object_name LIKE 'restore%' OR u.kind = 'row security'
 ORDER BY 1, 2, 3;
-- the definitions are schema-qualified whatever the caller's search_path
SET search_path = es, public;
SELECT count(*) AS unqualified
  FROM es.es_user_objects() AS u
 WHERE u.object_name LIKE 'restore%' AND u.definition !~ ' ON es\.';
RESET search_path;
-- es_admin may list them; other roles may not
SET ROLE regress_restore_admin;
SELECT count(*) > 0 AS listed FROM es.es_user_objects();
SET ROLE regress_restore_writer;
SELECT try('SELECT es.es_user_objects()');
RESET ROLE;
DROP POLICY restore_all ON es.snapshots;
DROP POLICY restore_two ON es.snapshots;
ALTER TABLE es.snapshots NO FORCE ROW LEVEL SECURITY;
ALTER TABLE es.snapshots DISABLE ROW LEVEL SECURITY;
DROP INDEX es.restore_idx;
DROP TRIGGER restore_paused ON es.events;
DROP TRIGGER restore_always ON es.streams;
DROP TRIGGER restore_dispatch ON es.events;

-- es.user_objects is written only by a restore: direct writes are refused, even for a superuser
SELECT try($$INSERT INTO es.user_objects (table_name, kind, object_name, definition)
			 VALUES ('events', 'trigger', 'x', 'CREATE TRIGGER x AFTER INSERT ON es.events FOR EACH ROW EXECUTE FUNCTION public.restore_log_row()')$$);
SELECT try('UPDATE es.user_objects SET definition = definition');
SELECT try('DELETE FROM es.user_objects');
SELECT try('TRUNCATE es.user_objects');

-- a restore COPY is a COPY FROM by the table's owner: other roles are refused
SET ROLE regress_restore_writer;
COPY es.events (global_position, stream_id, version, event_id, event_type, data, recorded_at, era, tx_id) FROM stdin;
900001	rst-forged	1	00000000-0000-0000-0000-000000000001	Forged	{}	2026-01-01 00:00:00+00	0	5
\.
RESET ROLE;
SELECT count(*) AS forged FROM es.events WHERE stream_id = 'rst-forged';
-- and so is a plain INSERT by the owner: only COPY restores
SELECT try($$INSERT INTO es.events (stream_id, version, event_id, event_type, data, recorded_at, era, tx_id)
			 VALUES ('rst-forged', 1, gen_random_uuid(), 'Forged', '{}', now(), 0, '5')$$);

-- a restore COPY into a table with a user trigger is refused: the trigger
-- would fire for the restored rows (here restore_when)
COPY es.events (global_position, stream_id, version, event_id, event_type, data, recorded_at, era, tx_id) FROM stdin;
900001	rst-forged	1	00000000-0000-0000-0000-000000000001	Forged	{}	2026-01-01 00:00:00+00	0	5
\.
SELECT count(*) AS forged FROM es.events WHERE stream_id = 'rst-forged';
DROP TRIGGER restore_when ON es.events;

-- pending objects: a restore COPY into es.user_objects leaves them pending
-- until the rows of their table are restored too (then they are re-created
-- at the commit of that step, and their rows deleted)
COPY es.user_objects (table_name, kind, object_name, definition, trigger_enabled) FROM stdin;
upcasters	trigger	restore_uc_paused	CREATE TRIGGER restore_uc_paused AFTER INSERT ON es.upcasters FOR EACH ROW EXECUTE FUNCTION public.restore_log_row()	D
upcasters	index	restore_uc_idx	CREATE INDEX restore_uc_idx ON es.upcasters USING btree (fn)	\N
\.
SELECT table_name, kind, object_name FROM es.user_objects ORDER BY 1, 2, 3;
SELECT count(*) AS created_early FROM pg_trigger WHERE tgname = 'restore_uc_paused';
COPY es.upcasters FROM stdin;
\.
SELECT table_name, kind, object_name FROM es.user_objects ORDER BY 1, 2, 3;
SELECT tgname, tgenabled FROM pg_trigger WHERE tgrelid = 'es.upcasters'::regclass AND tgname LIKE 'restore%';
SELECT indexrelid::regclass AS index FROM pg_index WHERE indrelid = 'es.upcasters'::regclass
   AND indexrelid::regclass::text LIKE '%restore%';
-- an object that already exists is skipped
COPY es.user_objects (table_name, kind, object_name, definition, trigger_enabled) FROM stdin;
upcasters	index	restore_uc_idx	CREATE INDEX restore_uc_idx ON es.upcasters USING btree (fn)	\N
\.
SELECT count(*) AS pending FROM es.user_objects WHERE kind <> 'restored rows';
DROP TRIGGER restore_uc_paused ON es.upcasters;
DROP INDEX es.restore_uc_idx;

-- a definition that is not one statement of its kind on its es_ext table is
-- refused, and nothing of that restore step stays
COPY es.user_objects (table_name, kind, object_name, definition, trigger_enabled) FROM stdin;
upcasters	trigger	restore_evil	DROP TABLE public.restore_log	O
\.
COPY es.user_objects (table_name, kind, object_name, definition, trigger_enabled) FROM stdin;
upcasters	trigger	restore_evil	CREATE TRIGGER restore_evil AFTER INSERT ON public.restore_log FOR EACH ROW EXECUTE FUNCTION public.restore_log_row()	O
\.
COPY es.user_objects (table_name, kind, object_name, definition, trigger_enabled) FROM stdin;
upcasters	index	restore_evil	CREATE INDEX restore_evil ON es.upcasters (fn); DROP TABLE public.restore_log	\N
\.
COPY es.user_objects (table_name, kind, object_name, definition, trigger_enabled) FROM stdin;
upcasters	policy	restore_evil	CREATE INDEX restore_evil ON es.upcasters (fn)	\N
\.
SELECT count(*) AS pending FROM es.user_objects WHERE kind <> 'restored rows';
SELECT to_regclass('public.restore_log') AS still_there, to_regclass('es.restore_evil') AS evil_index;

-- a restore COPY by another role cannot bring objects either
SET ROLE regress_restore_admin;
COPY es.user_objects (table_name, kind, object_name, definition, trigger_enabled) FROM stdin;
upcasters	index	restore_evil	CREATE INDEX restore_evil ON es.upcasters (fn)	\N
\.
RESET ROLE;
SELECT count(*) AS pending FROM es.user_objects WHERE kind <> 'restored rows';

-- clean up: the markers of this simulated restore
ALTER TABLE es.user_objects DISABLE TRIGGER es_guard_write;
DELETE FROM es.user_objects;
ALTER TABLE es.user_objects ENABLE TRIGGER es_guard_write;
DROP TABLE public.restore_log;
DROP FUNCTION public.restore_log_row(), public.restore_handler(es.events);
DROP ROLE regress_restore_writer, regress_restore_admin;
