-- privileges: roles es_reader, es_writer, es_admin; nothing for PUBLIC;
-- no SECURITY DEFINER

-- no function of the extension is SECURITY DEFINER
SELECT count(*) AS security_definer FROM pg_proc
 WHERE pronamespace = 'es'::regnamespace AND prosecdef;

-- nothing in schema es is granted to PUBLIC
SELECT count(*) AS public_routines FROM pg_proc p, aclexplode(p.proacl) a
 WHERE p.pronamespace = 'es'::regnamespace AND a.grantee = 0;
SELECT count(*) AS routines_without_acl FROM pg_proc p
 WHERE p.pronamespace = 'es'::regnamespace AND p.proacl IS NULL;
SELECT count(*) AS public_relations FROM pg_class c, aclexplode(c.relacl) a
 WHERE c.relnamespace = 'es'::regnamespace AND a.grantee = 0;
SELECT count(*) AS public_schema FROM pg_namespace n, aclexplode(n.nspacl) a
 WHERE n.nspname = 'es' AND a.grantee = 0;

-- the role hierarchy
SELECT r.rolname, array_agg(m.rolname ORDER BY m.rolname) AS member_of
  FROM pg_roles r JOIN pg_auth_members am ON am.member = r.oid JOIN pg_roles m ON m.oid = am.roleid
 WHERE r.rolname IN ('es_reader', 'es_writer', 'es_admin')
 GROUP BY r.rolname ORDER BY r.rolname;

CREATE ROLE regress_es_nobody;
CREATE ROLE regress_es_reader IN ROLE es_reader;
CREATE ROLE regress_es_writer IN ROLE es_writer;
CREATE ROLE regress_es_admin IN ROLE es_admin;

SELECT version FROM es.es_append('priv-1', 0, '[{"type": "A", "data": {}}]');

-- the matrix: each role x each entry point
CREATE FUNCTION priv_matrix(role text) RETURNS TABLE (action text, result text)
LANGUAGE plpgsql AS $$
DECLARE
	actions text[] := ARRAY[
		'es_append', 'SELECT es.es_append(''priv-' || role || ''', NULL, ''[{"type": "A", "data": {}}]'')',
		'es_read_stream', 'SELECT count(*) FROM es.es_read_stream(''priv-1'')',
		'es_stream_version', 'SELECT es.es_stream_version(''priv-1'')',
		'es_read_all', 'SELECT count(*) FROM es.es_read_all(NULL, 10, ''priv'')',
		'es_log_horizon', 'SELECT es.es_log_horizon()',
		'es_events_by_correlation', 'SELECT count(*) FROM es.es_events_by_correlation(''x'')',
		'es_events_by_causation', 'SELECT count(*) FROM es.es_events_by_causation(''x'')',
		'SELECT es.events', 'SELECT count(*) FROM es.events',
		'SELECT es.streams', 'SELECT count(*) FROM es.streams',
		'SELECT es.horizon_holders', 'SELECT count(*) FROM es.horizon_holders',
		'SELECT es.projection_status', 'SELECT count(*) FROM es.projection_status',
		'es_projection_replay', 'SELECT * FROM es.es_projection_replay(''no_such_trigger'', NULL, 1, false)',
		'es_rebuild_projection', 'CALL es.es_rebuild_projection(''no_such_trigger'', NULL)',
		'CREATE TRIGGER es_project', 'CREATE TRIGGER regress_p AFTER INSERT ON es.events FOR EACH ROW EXECUTE FUNCTION es.es_project(''x'')',
		'INSERT es.events', 'INSERT INTO es.events (stream_id, version, event_id, event_type, data, recorded_at, era, tx_id) VALUES (''priv-x'', 1, gen_random_uuid(), ''A'', ''{}'', now(), 0, pg_current_xact_id())',
		'UPDATE es.streams', 'UPDATE es.streams SET version = 99',
		'UPDATE es.config', 'UPDATE es.config SET era = 9',
		'DELETE es.events', 'DELETE FROM es.events',
		'TRUNCATE es.events', 'TRUNCATE es.events'];
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

SELECT * FROM priv_matrix('regress_es_nobody');
SELECT * FROM priv_matrix('regress_es_reader');
SELECT * FROM priv_matrix('regress_es_writer');
SELECT * FROM priv_matrix('regress_es_admin');
DROP TRIGGER regress_p ON es.events;

-- appends made by the roles that may append; nothing else changed
SELECT stream_id, version FROM es.events WHERE stream_id LIKE 'priv-%' ORDER BY 1, 2;

-- functions run as the caller: row level security on es.events applies to reads
ALTER TABLE es.events ENABLE ROW LEVEL SECURITY;
CREATE POLICY regress_tenant ON es.events FOR SELECT TO regress_es_reader
	USING (stream_id <> 'priv-regress_es_admin');
SET ROLE regress_es_reader;
SELECT stream_id FROM es.es_read_all(NULL, 100, 'priv') ORDER BY 1;
SELECT count(*) FROM es.es_read_stream('priv-regress_es_admin');
RESET ROLE;
DROP POLICY regress_tenant ON es.events;
ALTER TABLE es.events DISABLE ROW LEVEL SECURITY;

DROP FUNCTION priv_matrix(text);
DROP ROLE regress_es_nobody, regress_es_reader, regress_es_writer, regress_es_admin;
