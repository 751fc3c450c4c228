-- outbox_groups: consumer groups: creating one (with the default settings,
-- and with max_attempts and backoff given), a group created with backfill,
-- dropping a group.  How a group receives every message routed after its
-- creation (fan-out) is in outbox_claim, which consumes those messages; the
-- errors of es_outbox_create_group and es_outbox_drop_group are in
-- outbox_errors.  No group, route or outbox row of this file is left at
-- its end.

-- create: regress_g1 with the defaults, regress_g2 with its own attempts
-- and backoff
SELECT es.es_outbox_create_group('regress_g1') > 0 AS created;
SELECT es.es_outbox_create_group('regress_g2', max_attempts => 3,
								 backoff_base => '1 hour', backoff_max => '90 minutes') > 0 AS created;
SELECT name, max_attempts, backoff_base, backoff_max FROM es.outbox_groups
 WHERE name LIKE 'regress_g%' ORDER BY name;

-- (setup) route the category obq; ob_deliveries shows the deliveries of the
-- groups whose name starts with regress_g
SELECT es.es_outbox_route('obq');
CREATE VIEW ob_deliveries AS
	SELECT g.name AS grp, o.aggregateid AS stream, o.stream_version AS version, d.attempts,
		   d.lease IS NOT NULL AS leased, d.last_error, d.visible_at, o.position
	  FROM es.outbox_deliveries AS d
	  JOIN es.outbox_groups AS g USING (group_id)
	  JOIN es.outbox AS o USING (position)
	 WHERE g.name LIKE 'regress_g%';

-- a group created with backfill gets the messages already in the outbox
SELECT version FROM es.es_append('obq-5', 0, '[{"type": "E1", "data": {}}]');
SELECT es.es_outbox_create_group('regress_g3', backfill => true) > 0 AS created;
SELECT grp, stream, version FROM ob_deliveries WHERE stream = 'obq-5' ORDER BY grp;
-- drop: the group goes with its deliveries; dropping it again is an error
SELECT es.es_outbox_drop_group('regress_g3') > 0 AS dropped;
SELECT try($$SELECT es.es_outbox_drop_group('regress_g3')$$);

-- alter: settings change through es_outbox_alter_group (NULL: unchanged);
-- the guard refuses a direct UPDATE, also for es_admin's owner
SELECT es.es_outbox_alter_group('regress_g2', max_attempts => 7);
SELECT es.es_outbox_alter_group('regress_g2', backoff_base => '2 seconds', backoff_max => '1 minute');
SELECT name, max_attempts, backoff_base, backoff_max FROM es.outbox_groups WHERE name = 'regress_g2';
SELECT try($$SELECT es.es_outbox_alter_group('regress_nope', 3)$$);
SELECT try($$SELECT es.es_outbox_alter_group(NULL, 3)$$);
SELECT try($$SELECT es.es_outbox_alter_group('regress_g2', 0)$$);
SELECT try($$SELECT es.es_outbox_alter_group('regress_g2', backoff_base => '0')$$);
SELECT try($$SELECT es.es_outbox_alter_group('regress_g2', backoff_max => '1 second')$$);
SELECT try($$UPDATE es.outbox_groups SET max_attempts = 1 WHERE name = 'regress_g2'$$);
SELECT name, max_attempts, backoff_base, backoff_max FROM es.outbox_groups WHERE name = 'regress_g2';
-- clean up: no group, no route of this file is left behind
SELECT es.es_outbox_drop_group('regress_g1') >= 0 AS dropped;
SELECT es.es_outbox_drop_group('regress_g2') >= 0 AS dropped;
SELECT es.es_outbox_unroute('obq');
SELECT count(*) AS routes_left FROM es.outbox_routes WHERE category LIKE 'ob%';
SELECT es.es_outbox_cleanup() >= 0 AS cleaned;
DROP VIEW ob_deliveries;
