-- outbox_replay: the ways out of the dead letters: es_outbox_discard (the
-- row goes with the next cleanup) and es_outbox_replay (back to delivery
-- with fresh attempts, in order), for one dead letter or all of them.
--
-- Continues outbox_cleanup (see outbox_claim): regress_g2 has four dead
-- letters, obq-1 v1 to obq-4 v1, whose rows are the only ones of obq left
-- in the outbox.  The last of the four files: it removes the groups and
-- the route.

-- (setup) ob_claims, ob_claim and ob_last, as in outbox_claim
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

-- discard a dead letter: its row goes with the next cleanup
SELECT es.es_outbox_discard('regress_g2', ARRAY[(SELECT position FROM es.outbox_dead_letters
												 WHERE consumer_group = 'regress_g2' AND stream_id = 'obq-3')]) AS discarded;
SELECT es.es_outbox_cleanup() > 0 AS cleaned;
SELECT aggregateid, stream_version, type FROM es.outbox WHERE aggregatetype = 'obq' ORDER BY position;

-- replay: one dead letter, then all the others, back to delivery with
-- fresh attempts, in order
SELECT es.es_outbox_replay('regress_g2', ARRAY[(SELECT position FROM es.outbox_dead_letters
												 WHERE consumer_group = 'regress_g2' AND stream_id = 'obq-2')]) AS replayed;
SELECT * FROM ob_claim('regress_g2', 10);
SELECT es.es_outbox_ack('regress_g2', l.lease, l.positions) AS acked
  FROM ob_last('regress_g2') AS l;
SELECT es.es_outbox_replay('regress_g2') AS replayed;
SELECT * FROM ob_claim('regress_g2', 10);
SELECT es.es_outbox_ack('regress_g2', l.lease, l.positions) AS acked
  FROM ob_last('regress_g2') AS l;
SELECT count(*) AS dead FROM es.outbox_dead_letters WHERE consumer_group = 'regress_g2';
SELECT es.es_outbox_discard('regress_g2') AS discarded_none;
SELECT es.es_outbox_cleanup() > 0 AS cleaned;
SELECT count(*) AS obq_rows FROM es.outbox WHERE aggregatetype = 'obq';

-- clean up: no group, no route of outbox_claim to outbox_replay is left
-- behind
SELECT es.es_outbox_drop_group('regress_g1') >= 0 AS dropped;
SELECT es.es_outbox_drop_group('regress_g2') >= 0 AS dropped;
SELECT es.es_outbox_unroute('obq');
SELECT count(*) AS routes_left FROM es.outbox_routes WHERE category LIKE 'ob%';
SELECT es.es_outbox_cleanup() >= 0 AS cleaned;
DROP TABLE ob_claims;
DROP FUNCTION ob_claim(text, int, interval), ob_last(text, text[]);
