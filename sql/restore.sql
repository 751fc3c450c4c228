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

-- a row that is not one statement of its kind creating the named object on
-- its es_ext table is refused with a WARNING and stays pending: a restore
-- step never loses its rows because of a user object
COPY es.user_objects (table_name, kind, object_name, definition, trigger_enabled) FROM stdin;
upcasters	trigger	restore_evil1	DROP TABLE public.restore_log	O
upcasters	trigger	restore_evil2	CREATE TRIGGER restore_evil2 AFTER INSERT ON public.restore_log FOR EACH ROW EXECUTE FUNCTION public.restore_log_row()	O
upcasters	index	restore_evil3	CREATE INDEX restore_evil3 ON es.upcasters (fn); DROP TABLE public.restore_log	\N
upcasters	policy	restore_evil4	CREATE INDEX restore_evil4 ON es.upcasters (fn)	\N
events	trigger	restore_evil5	CREATE OR REPLACE TRIGGER es_guard_write BEFORE INSERT OR UPDATE OR DELETE ON es.events FOR EACH STATEMENT EXECUTE FUNCTION public.restore_log_row()	O
events	trigger	restore_evil6	CREATE OR REPLACE TRIGGER restore_evil6 AFTER INSERT ON es.events FOR EACH ROW EXECUTE FUNCTION public.restore_log_row()	O
upcasters	trigger	restore_evil7	CREATE TRIGGER restore_evil7 AFTER INSERT ON es.upcasters FOR EACH ROW EXECUTE FUNCTION public.restore_log_row()	Z
upcasters	trigger	restore_evil8	CREATE TRIGGER restore_evil8 AFTER INSERT ON es.upcasters FOR EACH ROW EXECUTE FUNCTION public.no_such_function()	O
upcasters	row security	enable	ALTER TABLE es.upcasters DISABLE ROW LEVEL SECURITY	\N
\.
SELECT table_name, kind, object_name FROM es.user_objects WHERE kind <> 'restored rows' ORDER BY 1, 2, 3;
SELECT to_regclass('public.restore_log') AS still_there, to_regclass('es.restore_evil3') AS evil_index,
	   (SELECT count(*) FROM pg_trigger WHERE tgname LIKE 'restore_evil%') AS evil_triggers,
	   (SELECT tgfoid::regproc FROM pg_trigger
		 WHERE tgrelid = 'es.events'::regclass AND tgname = 'es_guard_write') AS guard_function;
-- no user object on es.user_objects itself, even with a forged marker
COPY es.user_objects (table_name, kind, object_name, definition, trigger_enabled) FROM stdin;
user_objects	restored rows	user_objects	\N	\N
user_objects	trigger	restore_evil9	CREATE TRIGGER restore_evil9 AFTER INSERT ON es.user_objects FOR EACH ROW EXECUTE FUNCTION public.restore_log_row()	O
\.
SELECT count(*) AS evil_triggers FROM pg_trigger WHERE tgname = 'restore_evil9';
-- (pending objects are tried again at every restore step: drop them here)
ALTER TABLE es.user_objects DISABLE TRIGGER es_guard_write;
DELETE FROM es.user_objects WHERE kind <> 'restored rows';
ALTER TABLE es.user_objects ENABLE TRIGGER es_guard_write;
-- indexes, row level security and policies do not wait for their table's
-- rows: a dump without es.streams' rows still brings its policy back
COPY es.user_objects (table_name, kind, object_name, definition, trigger_enabled) FROM stdin;
streams	row security	enable	ALTER TABLE es.streams ENABLE ROW LEVEL SECURITY	\N
streams	policy	restore_streams	CREATE POLICY restore_streams ON es.streams AS PERMISSIVE FOR SELECT TO es_reader USING (true)	\N
\.
SELECT relrowsecurity, (SELECT count(*) FROM pg_policy WHERE polname = 'restore_streams') AS policies
  FROM pg_class WHERE oid = 'es.streams'::regclass;
DROP POLICY restore_streams ON es.streams;
ALTER TABLE es.streams DISABLE ROW LEVEL SECURITY;

-- a restore COPY by another role cannot bring objects either
SET ROLE regress_restore_admin;
COPY es.user_objects (table_name, kind, object_name, definition, trigger_enabled) FROM stdin;
upcasters	index	restore_evil10	CREATE INDEX restore_evil10 ON es.upcasters (fn)	\N
\.
RESET ROLE;
SELECT count(*) AS restore_evil10 FROM es.user_objects WHERE object_name = 'restore_evil10';

-- identity sequences move past the restored rows, also when the dump did
-- not carry them (es_ext 0.1.0's dumps)
COPY es.outbox_groups (group_id, name, max_attempts, backoff_base, backoff_max, created_at) FROM stdin;
1000	rst-restored	10	00:00:01	00:05:00	2026-01-01 00:00:00+00
\.
SELECT es.es_outbox_create_group('rst-next') AS next_group_id;
SELECT es.es_outbox_drop_group('rst-next'), es.es_outbox_drop_group('rst-restored');

-- clean up: the markers of this simulated restore
ALTER TABLE es.user_objects DISABLE TRIGGER es_guard_write;
DELETE FROM es.user_objects;
ALTER TABLE es.user_objects ENABLE TRIGGER es_guard_write;
DROP TABLE public.restore_log;
DROP FUNCTION public.restore_log_row(), public.restore_handler(es.events);
DROP ROLE regress_restore_writer, regress_restore_admin;
