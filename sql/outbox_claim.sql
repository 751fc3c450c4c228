-- outbox_claim: consuming the messages of a consumer group: fan-out (each
-- group gets a delivery of every message routed after its creation), claim
-- (a batch in order, under one lease), ack, nack, stale leases, attempts,
-- per-stream order, retries when due, and the backoff between attempts.
--
-- outbox_claim, outbox_dead, outbox_cleanup and outbox_replay are one story
-- told in four files that run in this order: an event cannot be appended
-- twice, so the messages of the streams obq-1 to obq-4 appended here go on,
-- with their delivery state in the groups regress_g1 and regress_g2, from
-- one file to the next.  This file creates the two groups and the route of
-- obq, outbox_replay removes them; each file makes and drops its own
-- helpers.

-- (setup) the groups: regress_g1 with the defaults (10 attempts), regress_g2
-- with 3 attempts and a backoff of 1 hour, doubling up to 90 minutes
SELECT es.es_outbox_create_group('regress_g1') > 0 AS created;
SELECT es.es_outbox_create_group('regress_g2', max_attempts => 3,
								 backoff_base => '1 hour', backoff_max => '90 minutes') > 0 AS created;

-- fan-out: each group gets a delivery of every message routed from now on
SELECT es.es_outbox_route('obq');
SELECT version FROM es.es_append('obq-1', 0, '[{"type": "A1", "data": {}}, {"type": "A2", "data": {}}]');
SELECT version FROM es.es_append('obq-2', 0, '[{"type": "B1", "data": {}}]');
CREATE VIEW ob_deliveries AS
	SELECT g.name AS grp, o.aggregateid AS stream, o.stream_version AS version, d.attempts,
		   d.lease IS NOT NULL AS leased, d.last_error, d.visible_at, o.position
	  FROM es.outbox_deliveries AS d
	  JOIN es.outbox_groups AS g USING (group_id)
	  JOIN es.outbox AS o USING (position)
	 WHERE g.name LIKE 'regress_g%';
SELECT grp, stream, version, attempts, leased FROM ob_deliveries ORDER BY grp, position;
SELECT consumer_group, undelivered, in_flight, retrying, dead FROM es.outbox_status
 WHERE consumer_group LIKE 'regress_g%' ORDER BY 1;

-- (setup) ob_claims records every claim made through ob_claim; ob_last
-- gives the lease of a group's last claim and the positions it claimed
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

-- claim: a batch in order, each stream's messages in version order, one lease
SELECT * FROM ob_claim('regress_g1');
SELECT count(DISTINCT lease) AS leases FROM ob_claims WHERE grp = 'regress_g1';
-- claimed messages are not claimed again while leased
SELECT * FROM ob_claim('regress_g1');
SELECT grp, stream, version, attempts, leased FROM ob_deliveries WHERE grp = 'regress_g1' ORDER BY position;

-- ack: deletes the deliveries that still hold the lease
SELECT es.es_outbox_ack('regress_g1', l.lease, l.positions) AS acked
  FROM ob_last('regress_g1', '{obq-1}') AS l;
SELECT es.es_outbox_ack('regress_g1', l.lease, l.positions) AS acked_again
  FROM ob_last('regress_g1', '{obq-1}') AS l;

-- nack: back after retry_after, with one more attempt when claimed again
SELECT es.es_outbox_nack('regress_g1', l.lease, l.positions, 'downstream timeout', '0') AS nacked
  FROM ob_last('regress_g1', '{obq-2}') AS l;
SELECT grp, stream, version, attempts, leased, last_error FROM ob_deliveries WHERE grp = 'regress_g1';
SELECT * FROM ob_claim('regress_g1');
-- the old lease no longer settles anything; the new one does
SELECT es.es_outbox_ack('regress_g1', c.lease, ARRAY[c.position]) AS stale_ack
  FROM ob_claims AS c WHERE c.grp = 'regress_g1' AND c.stream = 'obq-2' AND c.attempts = 1;
SELECT es.es_outbox_nack('regress_g1', c.lease, ARRAY[c.position]) AS stale_nack
  FROM ob_claims AS c WHERE c.grp = 'regress_g1' AND c.stream = 'obq-2' AND c.attempts = 1;
SELECT es.es_outbox_ack('regress_g1', l.lease, l.positions) AS acked
  FROM ob_last('regress_g1') AS l;
SELECT count(*) AS undelivered FROM ob_deliveries WHERE grp = 'regress_g1';

-- per-stream order: while a stream's oldest message is leased or waits for
-- its retry, the stream's later messages are not claimable
SELECT version FROM es.es_append('obq-3', 0,
	'[{"type": "C1", "data": {}}, {"type": "C2", "data": {}}, {"type": "C3", "data": {}}]');
SELECT version FROM es.es_append('obq-4', 0, '[{"type": "D1", "data": {}}]');
SELECT * FROM ob_claim('regress_g1', 1);
SELECT * FROM ob_claim('regress_g1', 10);
SELECT es.es_outbox_ack('regress_g1', l.lease, l.positions) AS acked_obq4
  FROM ob_last('regress_g1', '{obq-4}') AS l;
SELECT es.es_outbox_nack('regress_g1', c.lease, ARRAY[c.position], 'not yet', '1 hour') AS nacked
  FROM ob_claims AS c WHERE c.grp = 'regress_g1' AND c.stream = 'obq-3' AND c.version = 1;
SELECT * FROM ob_claim('regress_g1', 10);
-- retry due (an hour later): the head and the rest of its stream come as
-- one run, in order
SELECT ob_time_passes('regress_g1') AS made_visible;
SELECT * FROM ob_claim('regress_g1', 10);
SELECT es.es_outbox_ack('regress_g1', l.lease, l.positions) AS acked
  FROM ob_last('regress_g1') AS l;

-- backoff: base * 2^(attempts - 1), at most backoff_max (regress_g2: 1 h,
-- 90 min); while a stream's oldest message waits, the stream waits
SELECT * FROM ob_claim('regress_g2', 3);
SELECT es.es_outbox_nack('regress_g2', l.lease, l.positions, 'boom') AS nacked
  FROM ob_last('regress_g2') AS l;
SELECT stream, version, attempts, leased, last_error,
	   visible_at BETWEEN now() + interval '59 minutes' AND now() + interval '61 minutes' AS in_1h
  FROM ob_deliveries WHERE grp = 'regress_g2' AND stream IN ('obq-1', 'obq-2') ORDER BY position;
SELECT * FROM ob_claim('regress_g2', 3);
-- (each UPDATE below stands for the backoff going by)
SELECT ob_time_passes('regress_g2', unleased_only => true) AS made_visible;
SELECT * FROM ob_claim('regress_g2', 2);
SELECT es.es_outbox_nack('regress_g2', l.lease, l.positions, 'boom again') AS nacked
  FROM ob_last('regress_g2') AS l;
SELECT stream, version, attempts, last_error,
	   visible_at BETWEEN now() + interval '89 minutes' AND now() + interval '91 minutes' AS in_90min
  FROM ob_deliveries WHERE grp = 'regress_g2' AND attempts = 2 ORDER BY position;

-- (clean up) the helpers of this file; the groups, the route and the
-- messages go on to outbox_dead
DROP VIEW ob_deliveries;
DROP TABLE ob_claims;
DROP FUNCTION ob_claim(text, int, interval), ob_last(text, text[]), ob_time_passes(text, boolean);
