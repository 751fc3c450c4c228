-- outbox_tables: the outbox tables change only through es_append and the
-- es_outbox_* functions, as es.events does.  Every direct write -- INSERT,
-- UPDATE, DELETE, TRUNCATE, COPY FROM, and MERGE with each of its actions
-- -- is refused for every role: 42501 (insufficient_privilege) where the
-- role lacks the table privilege, 2F003 (prohibited_sql_statement_attempted,
-- the guard trigger) where it holds it because the functions it may call
-- need it (they run as their caller), and 2F003 for the owner too.  (The
-- owner's restore COPY is the one write that passes: see restore.)  No
-- group, route or role of this file is left at its end.

-- (setup) a route, a group, a message with its delivery, and a dead letter,
-- so that every table has rows to forge, re-deliver or delete
SELECT es.es_outbox_route('obt');
SELECT es.es_outbox_create_group('regress_gt', max_attempts => 1) > 0 AS created;
SELECT version FROM es.es_append('obt-1', 0, '[{"type": "T1", "data": {}}, {"type": "T2", "data": {}}]');
SELECT es.es_outbox_nack('regress_gt', c.lease, ARRAY[c.position], 'given up') AS nacked
  FROM es.es_outbox_claim('regress_gt', 1) AS c;
CREATE FUNCTION ot_rows() RETURNS TABLE (tbl text, n bigint)
LANGUAGE sql AS $$
	SELECT 'outbox', count(*) FROM es.outbox
	UNION ALL SELECT 'outbox_deliveries', count(*) FROM es.outbox_deliveries
	UNION ALL SELECT 'outbox_dead', count(*) FROM es.outbox_dead
	UNION ALL SELECT 'outbox_groups', count(*) FROM es.outbox_groups
	UNION ALL SELECT 'outbox_routes', count(*) FROM es.outbox_routes
$$;
CREATE TABLE ot_before AS SELECT * FROM ot_rows();

-- the matrix: role x table x operation; each cell is the SQLSTATE of the
-- refusal ("ok" would be a write that went through)
CREATE ROLE regress_ot_reader IN ROLE es_reader, pg_read_server_files;
CREATE ROLE regress_ot_writer IN ROLE es_writer, pg_read_server_files;
CREATE ROLE regress_ot_consumer IN ROLE es_consumer, pg_read_server_files;
CREATE ROLE regress_ot_admin IN ROLE es_admin, pg_read_server_files;
CREATE FUNCTION ot_matrix(role text)
RETURNS TABLE (tbl text, ins text, upd text, del text, trunc text, copy text,
			   merge_ins text, merge_upd text, merge_del text)
LANGUAGE plpgsql AS $$
DECLARE
	-- per table: the columns and values of a forged row, and an assignment
	t	text[] := ARRAY[
		'outbox',
		'(id, aggregatetype, aggregateid, type, payload, stream_version, schema_version, global_position, created_at)',
		'(gen_random_uuid(), ''obt'', ''obt-x'', ''X'', ''{}'', 1, 1, 1, now())',
		'payload = ''{}''',
		'outbox_deliveries',
		'(group_id, position, stream_key, visible_at)',
		'(1, 1, 0, ''infinity'')',
		'visible_at = ''infinity''',
		'outbox_dead',
		'(group_id, position, stream_key, attempts, dead_at)',
		'(1, 1, 0, 1, now())',
		'attempts = 0',
		'outbox_groups',
		'(name)',
		'(''regress_forged'')',
		'max_attempts = 1000',
		'outbox_routes',
		'(category)',
		'(''obx'')',
		'created_at = now()'];
	i	int;
	q	text;
	c	text;
	v	text;
	s	text;
	merge_head text;
BEGIN
	FOR i IN 0 .. array_length(t, 1) / 4 - 1 LOOP
		tbl := t[4 * i + 1];
		c := t[4 * i + 2];
		v := t[4 * i + 3];
		s := t[4 * i + 4];
		q := 'es.' || tbl;
		merge_head := 'MERGE INTO ' || q || ' AS t USING (SELECT 1) AS s(x) ON false ';
		IF role IS NOT NULL THEN
			EXECUTE format('SET LOCAL ROLE %I', role);
		END IF;
		ins := left(public.try('INSERT INTO ' || q || ' ' || c || ' VALUES ' || v), 5);
		upd := left(public.try('UPDATE ' || q || ' SET ' || s), 5);
		del := left(public.try('DELETE FROM ' || q), 5);
		trunc := left(public.try('TRUNCATE ' || q), 5);
		copy := left(public.try('COPY ' || q || ' ' || c || ' FROM ''/dev/null'''), 5);
		merge_ins := left(public.try(merge_head || 'WHEN NOT MATCHED THEN INSERT ' || c || ' VALUES ' || v), 5);
		merge_upd := left(public.try(merge_head || 'WHEN MATCHED THEN UPDATE SET ' || s), 5);
		merge_del := left(public.try(merge_head || 'WHEN MATCHED THEN DELETE'), 5);
		RESET ROLE;
		RETURN NEXT;
	END LOOP;
END
$$;
SELECT * FROM ot_matrix('regress_ot_reader');
SELECT * FROM ot_matrix('regress_ot_writer');
SELECT * FROM ot_matrix('regress_ot_consumer');
SELECT * FROM ot_matrix('regress_ot_admin');
-- the owner (the superuser running this file)
SELECT * FROM ot_matrix(NULL);

-- the attacks of the 0.1.0 review, with their messages: a writer forging a
-- delivery that blocks a stream forever, a consumer deleting the outbox and
-- rewriting or deleting any group's deliveries
SET ROLE regress_ot_writer;
SELECT try($$INSERT INTO es.outbox_deliveries (group_id, position, stream_key, visible_at)
			 SELECT g.group_id, 1, 0, 'infinity' FROM es.outbox_groups AS g$$);
SET ROLE regress_ot_consumer;
SELECT try($$DELETE FROM es.outbox$$);
SELECT try($$UPDATE es.outbox_deliveries SET attempts = 0$$);
SELECT try($$DELETE FROM es.outbox_deliveries$$);
RESET ROLE;

-- nothing changed
SELECT b.tbl, b.n = r.n AS unchanged FROM ot_before AS b JOIN ot_rows() AS r USING (tbl) ORDER BY 1;

-- the functions still write: as es_consumer, replay the dead letter, claim
-- and ack everything, clean up
SET ROLE regress_ot_consumer;
SELECT es.es_outbox_replay('regress_gt') AS replayed;
SELECT es.es_outbox_ack('regress_gt', c.lease, array_agg(c.position)) AS acked
  FROM es.es_outbox_claim('regress_gt', 10) AS c GROUP BY c.lease;
SELECT es.es_outbox_cleanup() > 0 AS cleaned;
RESET ROLE;
SELECT count(*) AS obt_rows_left FROM es.outbox WHERE aggregatetype = 'obt';

-- the guard triggers of each outbox table, and their events
SELECT c.relname, t.tgname, pg_get_triggerdef(t.oid) LIKE '%BEFORE INSERT OR DELETE OR UPDATE%' AS ins_upd_del,
	   pg_get_triggerdef(t.oid) LIKE '%BEFORE TRUNCATE%' AS trunc
  FROM pg_trigger AS t JOIN pg_class AS c ON c.oid = t.tgrelid
 WHERE c.relnamespace = 'es'::regnamespace AND c.relname LIKE 'outbox%'
   AND t.tgfoid = 'es.es_guard()'::regprocedure
 ORDER BY 1, 2;

-- clean up: no group, route or role of this file is left behind
SELECT es.es_outbox_drop_group('regress_gt') >= 0 AS dropped;
SELECT es.es_outbox_unroute('obt');
DROP FUNCTION ot_matrix(text), ot_rows();
DROP TABLE ot_before;
DROP ROLE regress_ot_reader, regress_ot_writer, regress_ot_consumer, regress_ot_admin;
