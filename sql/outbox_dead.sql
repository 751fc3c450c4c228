-- outbox_dead: how messages become dead letters: a nack after the last
-- attempt, and a lease that runs out on the last attempt; a dead letter no
-- longer blocks its stream; es.outbox_dead_letters and es.outbox_status.
--
-- Continues outbox_claim (see there), whose state it starts from: in
-- regress_g2 (3 attempts, backoff 1 hour up to 90 minutes) obq-1 v1 and
-- obq-2 v1 were nacked twice, obq-3 v1 once, obq-4 v1 was claimed and never
-- settled, and the later messages of obq-1 and obq-3 wait behind them;
-- regress_g1 has acked everything.

-- (setup) ob_claims, ob_claim, ob_last and ob_time_passes, as in outbox_claim
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

-- ob_time_passes(grp) stands for time going by: the group's deliveries
-- (unleased_only: those not leased) become visible now.  The guard refuses
-- an UPDATE of es.outbox_deliveries from anyone, so the owner lifts it for
-- this one statement.
CREATE FUNCTION ob_time_passes(grp text, unleased_only boolean DEFAULT false) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
	n	bigint;
BEGIN
	ALTER TABLE es.outbox_deliveries DISABLE TRIGGER es_guard_write;
	UPDATE es.outbox_deliveries AS d SET visible_at = now() - interval '1 second'
	  FROM es.outbox_groups AS g
	 WHERE g.group_id = d.group_id AND g.name = grp AND (NOT unleased_only OR d.lease IS NULL);
	GET DIAGNOSTICS n = ROW_COUNT;
	ALTER TABLE es.outbox_deliveries ENABLE TRIGGER es_guard_write;
	RETURN n;
END
$$;

-- dead letters: a nack after the last attempt (max_attempts 3) moves the
-- messages to the dead letters
SELECT ob_time_passes('regress_g2', unleased_only => true) AS made_visible;
SELECT * FROM ob_claim('regress_g2', 2);
SELECT es.es_outbox_nack('regress_g2', l.lease, l.positions, 'boom, third time') AS nacked
  FROM ob_last('regress_g2') AS l;
SELECT consumer_group, stream_id, version, event_type, attempts, last_error, data
  FROM es.outbox_dead_letters WHERE consumer_group = 'regress_g2' ORDER BY position;
-- a dead letter no longer blocks its stream: obq-1 goes on with version 2
SELECT * FROM ob_claim('regress_g2', 1);
SELECT es.es_outbox_ack('regress_g2', l.lease, l.positions) AS acked
  FROM ob_last('regress_g2') AS l;

-- a lease that runs out counts as an attempt: obq-3 v1 (1 attempt so far)
-- and obq-4 v1 (claimed in outbox_claim, never settled) are claimed with
-- short leases until their third attempt runs out; the next claim moves
-- them to the dead letters instead of returning them, the one after goes
-- on with obq-3 v2
SELECT ob_time_passes('regress_g2') AS made_visible;
SELECT * FROM ob_claim('regress_g2', 10, '10 milliseconds');
SELECT pg_sleep(0.05);
SELECT * FROM ob_claim('regress_g2', 10, '10 milliseconds');
SELECT pg_sleep(0.05);
SELECT * FROM ob_claim('regress_g2', 10);
SELECT * FROM ob_claim('regress_g2', 10);
SELECT es.es_outbox_ack('regress_g2', l.lease, l.positions) AS acked
  FROM ob_last('regress_g2') AS l;
SELECT stream_id, version, attempts, last_error FROM es.outbox_dead_letters
 WHERE consumer_group = 'regress_g2' ORDER BY position;
SELECT consumer_group, undelivered, in_flight, retrying, dead FROM es.outbox_status
 WHERE consumer_group = 'regress_g2';

-- (clean up) the helpers of this file; the groups, the route and the
-- messages go on to outbox_cleanup
DROP TABLE ob_claims;
DROP FUNCTION ob_claim(text, int, interval), ob_last(text, text[]), ob_time_passes(text, boolean);
