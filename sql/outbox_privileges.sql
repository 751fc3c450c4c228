-- outbox_privileges: who may do what with the outbox (the privilege
-- matrix: es_consumer consumes, es_writer appends and so writes the outbox,
-- es_reader reads, es_admin configures), nothing granted to PUBLIC, nothing
-- SECURITY DEFINER, and a hostile search_path that changes nothing (it
-- claims the messages the matrix appended, hence in this file).  No group,
-- route or role of this file is left at its end.

-- (setup) the route of obq, the groups regress_g1 and regress_g2, the view
-- ob_deliveries of their deliveries, and ob_claims, ob_claim and ob_last
-- (as in outbox_claim)
SELECT es.es_outbox_route('obq');
SELECT es.es_outbox_create_group('regress_g1') > 0 AS created;
SELECT es.es_outbox_create_group('regress_g2') > 0 AS created;
CREATE VIEW ob_deliveries AS
	SELECT g.name AS grp, o.aggregateid AS stream, o.stream_version AS version, d.attempts,
		   d.lease IS NOT NULL AS leased, d.last_error, d.visible_at, o.position
	  FROM es.outbox_deliveries AS d
	  JOIN es.outbox_groups AS g USING (group_id)
	  JOIN es.outbox AS o USING (position)
	 WHERE g.name LIKE 'regress_g%';
CREATE TABLE ob_claims (seq bigserial, grp text, lease uuid, position bigint, attempts int, stream text,
						version bigint, event_type text, data jsonb);
CREATE FUNCTION ob_claim(grp text, n int DEFAULT 10, lease interval DEFAULT '5 minutes')
RETURNS TABLE (stream text, version bigint, event_type text, attempts int)
LANGUAGE sql AS $$
	INSERT INTO ob_claims (grp, lease, position, attempts, stream, version, event_type, data)
	SELECT grp, c.lease, c.position, c.attempts, c.stream_id, c.version, c.event_type, c.data
	  FROM es.es_outbox_claim(grp, n, lease) AS c
	RETURNING stream, version, event_type, attempts
$$;
-- the lease of the last claim of a group, and the positions it claimed (of some streams)
CREATE FUNCTION ob_last(grp text, streams text[] DEFAULT NULL, OUT lease uuid, OUT positions bigint[])
LANGUAGE sql AS $$
	SELECT c.lease, array_agg(c.position ORDER BY c.position)
	  FROM ob_claims AS c
	 WHERE c.grp = ob_last.grp
	   AND c.lease = (SELECT l.lease FROM ob_claims AS l WHERE l.grp = ob_last.grp
					   ORDER BY l.seq DESC LIMIT 1)
	   AND (streams IS NULL OR c.stream = ANY (streams))
	 GROUP BY c.lease
$$;

-- (setup) two messages ahead of those the matrix appends: the claims of the
-- matrix (one message each, leased for an hour, by es_consumer and
-- es_admin) take these, and leave the matrix's own messages to the hostile
-- search_path case below
SELECT version FROM es.es_append('obq-held-1', 0, '[{"type": "H1", "data": {}}]');
SELECT version FROM es.es_append('obq-held-2', 0, '[{"type": "H2", "data": {}}]');

-- the privilege matrix: each action as each role
CREATE ROLE regress_ob_reader IN ROLE es_reader;
CREATE ROLE regress_ob_writer IN ROLE es_writer;
CREATE ROLE regress_ob_consumer IN ROLE es_consumer;
CREATE ROLE regress_ob_admin IN ROLE es_admin;
CREATE FUNCTION ob_priv(role text) RETURNS TABLE (action text, result text)
LANGUAGE plpgsql AS $$
DECLARE
	actions text[] := ARRAY[
		'append (routed)', 'SELECT es.es_append(''obq-' || role || ''', NULL, ''[{"type": "P", "data": {}}]'')',
		'claim', 'SELECT count(*) FROM es.es_outbox_claim(''regress_g1'', 1, ''1 hour'')',
		'ack', 'SELECT es.es_outbox_ack(''regress_g1'', gen_random_uuid(), ''{1}'')',
		'nack', 'SELECT es.es_outbox_nack(''regress_g1'', gen_random_uuid(), ''{1}'')',
		'replay', 'SELECT es.es_outbox_replay(''regress_g1'')',
		'cleanup', 'SELECT es.es_outbox_cleanup(''1 day'')',
		'dead letters', 'SELECT count(*) FROM es.outbox_dead_letters',
		'status', 'SELECT count(*) FROM es.outbox_status',
		'SELECT es.outbox', 'SELECT count(*) FROM es.outbox',
		'notify status', 'SELECT mode FROM es.es_outbox_notify_status()',
		'route', 'SELECT es.es_outbox_route(''obp'')',
		'create group', 'SELECT es.es_outbox_create_group(''regress_gp'')',
		'INSERT es.outbox', 'INSERT INTO es.outbox (id, aggregatetype, aggregateid, type, payload, stream_version, schema_version, global_position, created_at) VALUES (gen_random_uuid(), ''obp'', ''obp-1'', ''X'', ''{}'', 1, 1, 1, now())'];
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
SELECT * FROM ob_priv('regress_ob_reader');
SELECT * FROM ob_priv('regress_ob_writer');
SELECT * FROM ob_priv('regress_ob_consumer');
SELECT * FROM ob_priv('regress_ob_admin');
-- what the matrix left: es_admin's route and group (the group got no delivery,
-- nothing was appended after it), the messages of es_writer and es_admin in
-- both groups
SELECT es.es_outbox_unroute('obp');
SELECT es.es_outbox_drop_group('regress_gp') AS dropped;
SELECT grp, stream, version FROM ob_deliveries WHERE stream LIKE 'obq-regress%' ORDER BY grp, stream;
-- the claims of es_consumer and es_admin took the two held messages
SELECT grp, stream, leased FROM ob_deliveries WHERE stream LIKE 'obq-held-%' ORDER BY grp, stream;

-- nothing in the outbox schema is granted to PUBLIC, nothing is SECURITY DEFINER
SELECT count(*) AS public_grants FROM pg_class AS c, aclexplode(c.relacl) AS a
 WHERE c.relnamespace = 'es'::regnamespace AND c.relname LIKE 'outbox%' AND a.grantee = 0;
SELECT count(*) AS security_definer FROM pg_proc
 WHERE pronamespace = 'es'::regnamespace AND proname LIKE 'es_outbox%' AND prosecdef;

-- a hostile search_path changes nothing (a new session prepares the plans)
\c
CREATE SCHEMA ob_evil;
CREATE TABLE ob_evil.outbox_groups (group_id int);
CREATE FUNCTION ob_evil.hashtextextended(text, bigint) RETURNS bigint LANGUAGE sql AS 'SELECT 0::bigint';
CREATE FUNCTION ob_evil.bad_eq(bigint, bigint) RETURNS boolean LANGUAGE sql AS 'SELECT false';
CREATE OPERATOR ob_evil.= (FUNCTION = ob_evil.bad_eq, LEFTARG = bigint, RIGHTARG = bigint);
SET search_path = ob_evil, public, pg_catalog;
SELECT version FROM es.es_append('obq-7', 0, '[{"type": "G1", "data": {}}]');
SELECT stream, version, event_type FROM ob_claim('regress_g1');
SELECT es.es_outbox_ack('regress_g1', l.lease, l.positions) AS acked FROM ob_last('regress_g1') AS l;
RESET search_path;
SELECT count(*) AS stream_keys_ok FROM es.outbox_deliveries AS d JOIN es.outbox AS o USING (position)
 WHERE o.aggregateid = 'obq-7' AND d.stream_key = pg_catalog.hashtextextended('obq-7', 0);
DROP SCHEMA ob_evil CASCADE;

-- clean up: no group, route or role of this file is left behind
SELECT es.es_outbox_drop_group('regress_g1') >= 0 AS dropped;
SELECT es.es_outbox_drop_group('regress_g2') >= 0 AS dropped;
SELECT es.es_outbox_unroute('obq');
SELECT count(*) AS routes_left FROM es.outbox_routes WHERE category LIKE 'ob%';
SELECT es.es_outbox_cleanup() >= 0 AS cleaned;
DROP VIEW ob_deliveries;
DROP TABLE ob_claims;
DROP FUNCTION ob_claim(text, int, interval), ob_last(text, text[]), ob_priv(text);
DROP ROLE regress_ob_reader, regress_ob_writer, regress_ob_consumer, regress_ob_admin;
