-- lifecycle: archive, erasure and retention of streams (issue 15)

CREATE ROLE regress_lc_admin IN ROLE es_admin;
CREATE ROLE regress_lc_eraser IN ROLE es_eraser;
CREATE ROLE regress_lc_writer IN ROLE es_writer;
GRANT USAGE ON SCHEMA public TO regress_lc_admin, regress_lc_eraser, regress_lc_writer;

-- a projection: counts the events its trigger sees, per stream
CREATE TABLE public.lc_seen (stream_id text PRIMARY KEY, n bigint NOT NULL);
GRANT ALL ON public.lc_seen TO PUBLIC;
CREATE FUNCTION public.lc_count() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	IF NEW.event_type = 'es.stream_erased' THEN
		DELETE FROM public.lc_seen WHERE stream_id = NEW.stream_id;
	ELSE
		INSERT INTO public.lc_seen VALUES (NEW.stream_id, 1)
		ON CONFLICT (stream_id) DO UPDATE SET n = lc_seen.n + 1;
	END IF;
	RETURN NULL;
END $$;
CREATE TRIGGER lc_count AFTER INSERT ON es.events FOR EACH ROW
	WHEN (NEW.category IN ('lcorder', 'lcpay')) EXECUTE FUNCTION public.lc_count();

CREATE FUNCTION public.lc_sum(s jsonb, e jsonb) RETURNS jsonb LANGUAGE sql IMMUTABLE AS
$$ SELECT jsonb_build_object('n', coalesce((s->>'n')::int, 0) + (e->'data'->>'n')::int) $$;

SELECT (es.es_append('lcorder-1', 0, '[{"type":"placed","data":{"n":1}},{"type":"paid","data":{"n":2}},{"type":"shipped","data":{"n":4}}]')).version;
SELECT (es.es_append('lcorder-2', 0, '[{"type":"placed","data":{"n":1}},{"type":"paid","data":{"n":2}}]')).version;
CREATE TEMP TABLE lc_before AS
	SELECT global_position, stream_id, version, era, tx_id, hash FROM es.events
	 WHERE stream_id = 'lcorder-1';

-- Archive: es_admin moves the stream's events out of es.events
SET ROLE regress_lc_admin;
SELECT es.es_archive_stream('lcorder-1') AS moved;
RESET ROLE;
SELECT count(*) AS in_events FROM es.events WHERE stream_id = 'lcorder-1';
SELECT count(*) AS archived FROM es.archived_events WHERE stream_id = 'lcorder-1';
SELECT stream_id, version, archived_at IS NOT NULL AS archived FROM es.streams
 WHERE stream_id LIKE 'lcorder-%' ORDER BY 1;
-- the archived rows are the events as they were stored
SELECT count(*) AS same FROM lc_before b JOIN es.archived_events a USING (stream_id, version)
 WHERE a.global_position = b.global_position AND a.tx_id = b.tx_id AND a.era = b.era
   AND a.hash = b.hash;

-- Archive: out of the log and category reads, still in es_read_stream and es_fold
SELECT count(*) FILTER (WHERE stream_id = 'lcorder-1') AS archived_in_log,
       count(*) FILTER (WHERE stream_id = 'lcorder-2') AS live_in_log
  FROM es.es_read_all(NULL, 100000);
SELECT count(*) AS category_read FROM es.es_read_all(NULL, 100000, 'lcorder')
 WHERE stream_id = 'lcorder-1';
SELECT version, event_type FROM es.es_read_stream('lcorder-1');
SELECT version, event_type FROM es.es_read_stream('lcorder-1', 2, 1, 'backward');
SELECT version FROM es.es_read_stream('lcorder-1', 2);
SELECT es.es_fold('lcorder-1', 'public.lc_sum(jsonb,jsonb)', '{}');
SELECT es.es_stream_version('lcorder-1');

-- Archive: read-only, and archiving twice is an error
SELECT try($$SELECT es.es_append('lcorder-1', NULL, '[{"type":"x","data":{}}]')$$);
SELECT try($$SELECT es.es_archive_stream('lcorder-1')$$);
SELECT count(*) AS archived FROM es.archived_events WHERE stream_id = 'lcorder-1';

-- Unarchive: the events come back with their cursor, without firing projections
SELECT n AS seen_before FROM public.lc_seen WHERE stream_id = 'lcorder-1';
SET ROLE regress_lc_admin;
SELECT es.es_unarchive_stream('lcorder-1') AS moved;
RESET ROLE;
SELECT n AS seen_after FROM public.lc_seen WHERE stream_id = 'lcorder-1';
SELECT count(*) AS same FROM lc_before b JOIN es.events e USING (stream_id, version)
 WHERE e.global_position = b.global_position AND e.tx_id = b.tx_id AND e.era = b.era
   AND e.hash = b.hash AND e.category = 'lcorder';
SELECT count(*) AS archived FROM es.archived_events WHERE stream_id = 'lcorder-1';
SELECT try($$SELECT es.es_unarchive_stream('lcorder-1')$$);
-- the log (and its category index) finds the restored rows
SELECT count(*) AS in_log FROM es.es_read_all(NULL, 100000, 'lcorder') WHERE stream_id = 'lcorder-1';
SELECT (es.es_append('lcorder-1', 3, '[{"type":"delivered","data":{"n":8}}]')).version;
SELECT es.es_fold('lcorder-1', 'public.lc_sum(jsonb,jsonb)', '{}');

-- Archive: privileges (es_writer may not archive; the tables refuse direct writes)
SET ROLE regress_lc_writer;
SELECT try($$SELECT es.es_archive_stream('lcorder-2')$$);
SELECT try($$DELETE FROM es.archived_events$$);
RESET ROLE;
SET ROLE regress_lc_admin;
SELECT try($$INSERT INTO es.archived_events SELECT * FROM es.archived_events$$);
SELECT try($$DELETE FROM es.events WHERE stream_id = 'lcorder-2'$$);
RESET ROLE;

-- Erasure: a stream with outbox rows, deliveries, dead letters and snapshots
SELECT es.es_outbox_route('lcpay');
SELECT es.es_outbox_create_group('regress_lc_group', max_attempts => 1) IS NOT NULL AS group_created;
SELECT (es.es_append('lcpay-1', 0, '[{"type":"card","data":{"n":1,"pan":"4111"}},{"type":"card","data":{"n":2,"pan":"4222"}},{"type":"card","data":{"n":4,"pan":"4333"}}]')).version;
SELECT (es.es_append('lcpay-2', 0, '[{"type":"card","data":{"n":1,"pan":"5111"}}]')).version;
SELECT es.es_snapshot_save('lcpay-1', 'public.lc_sum(jsonb,jsonb)', '{}') IS NOT NULL AS snapshot_saved;
SELECT count(*) AS outbox FROM es.outbox WHERE aggregateid = 'lcpay-1';
SELECT count(*) AS deliveries FROM es.outbox_deliveries d JOIN es.outbox o USING (position)
 WHERE o.aggregateid = 'lcpay-1';
-- a dead letter of each stream (max_attempts 1: the first nack kills)
CREATE TEMP TABLE lc_claim AS SELECT * FROM es.es_outbox_claim('regress_lc_group', 10);
SELECT es.es_outbox_nack('regress_lc_group', (SELECT lease FROM lc_claim LIMIT 1),
                         ARRAY(SELECT position FROM lc_claim), 'boom') AS nacked;
SELECT o.aggregateid, count(*) AS dead FROM es.outbox_dead d JOIN es.outbox o USING (position)
 GROUP BY 1 ORDER BY 1;
CREATE TEMP TABLE lc_head AS SELECT hash FROM es.events WHERE stream_id = 'lcpay-1' AND version = 3;
GRANT SELECT ON lc_head TO PUBLIC;
SELECT n AS seen FROM public.lc_seen WHERE stream_id = 'lcpay-1';

-- Erasure: es_admin does not hold the privilege
SET ROLE regress_lc_admin;
SELECT try($$SELECT es.es_erase_stream('lcpay-1', 'customer request')$$);
SELECT try($$SELECT * FROM es.erasures$$) AS admin_reads_audit;
RESET ROLE;
SELECT count(*) AS still_there FROM es.events WHERE stream_id = 'lcpay-1';

-- Erasure: es_eraser erases in one call
SET ROLE regress_lc_eraser;
SELECT stream_id, erased_by, erased_as, reason, first_version, last_version, events,
       head_hash = (SELECT hash FROM lc_head) AS head_hash_ok
  FROM es.es_erase_stream('lcpay-1', 'customer request');
RESET ROLE;
SELECT r.tombstone_position = e.global_position AS tombstone_ok, e.version
  FROM es.erasures AS r JOIN es.events AS e USING (stream_id) WHERE r.stream_id = 'lcpay-1';
SELECT version, event_type, data - 'head_hash' AS data,
       data->>'head_hash' = encode((SELECT hash FROM lc_head), 'hex') AS data_head_hash_ok,
       metadata
  FROM es.events WHERE stream_id = 'lcpay-1';
SELECT version, first_version, base_hash = (SELECT hash FROM lc_head) AS base_hash_ok,
       erased_at IS NOT NULL AS erased, archived_at
  FROM es.streams WHERE stream_id = 'lcpay-1';
-- every copy is gone; the tombstone is routed like any event
SELECT count(*) AS snapshots FROM es.snapshots WHERE stream_id = 'lcpay-1';
SELECT type, stream_version FROM es.outbox WHERE aggregateid = 'lcpay-1';
SELECT count(*) AS deliveries FROM es.outbox_deliveries d JOIN es.outbox o USING (position)
 WHERE o.aggregateid = 'lcpay-1';
SELECT o.aggregateid, count(*) AS dead FROM es.outbox_dead d JOIN es.outbox o USING (position)
 GROUP BY 1 ORDER BY 1;
SELECT count(*) AS pans FROM es.outbox WHERE payload::text LIKE '%"pan": "4%';
SELECT count(*) AS other_stream FROM es.events WHERE stream_id = 'lcpay-2';
-- the projection saw the tombstone and dropped its row
SELECT count(*) AS seen FROM public.lc_seen WHERE stream_id = 'lcpay-1';
-- the log shows the tombstone in place of the stream (in log order; not
-- es_read_all, whose horizon a concurrent autovacuum may hold back)
SELECT stream_id, version, event_type FROM es.events WHERE category = 'lcpay'
 ORDER BY era, tx_id, global_position;
SELECT version, event_type FROM es.es_read_stream('lcpay-1');
SELECT es.es_stream_version('lcpay-1');
SELECT try($$SELECT es.es_fold('lcpay-1', 'public.lc_sum(jsonb,jsonb)', '{}')$$);

-- Erasure: the stream cannot be erased again, recreated, archived
SET ROLE regress_lc_eraser;
SELECT try($$SELECT es.es_erase_stream('lcpay-1', 'again')$$);
SELECT try($$SELECT es.es_append('lcpay-1', NULL, '[{"type":"card","data":{}}]')$$);
SELECT try($$SELECT es.es_append('lcpay-1', 0, '[{"type":"card","data":{}}]')$$);
SELECT try($$DELETE FROM es.events WHERE stream_id = 'lcpay-2'$$);
SELECT try($$INSERT INTO es.erasures SELECT * FROM es.erasures$$);
SELECT try($$DELETE FROM es.erasures$$);
RESET ROLE;
SELECT try($$SELECT es.es_archive_stream('lcpay-1')$$);
SELECT count(*) AS erasures FROM es.erasures;
SET ROLE regress_lc_writer;
SELECT try($$SELECT * FROM es.erasures$$);
RESET ROLE;

-- Erasure of an archived stream: its archived events go too
SELECT es.es_archive_stream('lcorder-2');
SET ROLE regress_lc_eraser;
SELECT stream_id, first_version, last_version, events FROM es.es_erase_stream('lcorder-2', 'test');
RESET ROLE;
SELECT count(*) AS archived FROM es.archived_events WHERE stream_id = 'lcorder-2';
SELECT version, event_type FROM es.events WHERE stream_id = 'lcorder-2';
SELECT archived_at, erased_at IS NOT NULL AS erased FROM es.streams WHERE stream_id = 'lcorder-2';
SELECT count(*) AS seen FROM public.lc_seen WHERE stream_id = 'lcorder-2';

-- Retention: a policy per stream (count) and per category (age)
SELECT (es.es_append('lcret-1', 0, '[{"type":"t","data":{"n":1}},{"type":"t","data":{"n":2}},{"type":"t","data":{"n":4}},{"type":"t","data":{"n":8}},{"type":"t","data":{"n":16}}]')).version;
SELECT (es.es_append('lcret-2', 0, '[{"type":"t","data":{"n":1}},{"type":"t","data":{"n":2}}]')).version;
SELECT (es.es_append('lcret-3', 0, '[{"type":"t","data":{"n":1}}]')).version;
SELECT es.es_snapshot_save('lcret-1', 'public.lc_sum(jsonb,jsonb)', '{}', 1) IS NOT NULL AS old_snapshot;
SELECT es.es_snapshot_save('lcret-1', 'public.lc_sum(jsonb,jsonb)', '{}', 3) IS NOT NULL AS usable_snapshot;
CREATE TEMP TABLE lc_ret AS SELECT version, hash FROM es.events WHERE stream_id = 'lcret-1';
SET ROLE regress_lc_admin;
SELECT es.es_set_retention(NULL, 'lcret-1', NULL, 2);
SELECT es.es_set_retention('lcret', NULL, '1 hour', NULL);
SELECT category, stream_id, max_age, max_count FROM es.retention_policies ORDER BY 1, 2;
-- nothing is an hour old: only the stream policy removes
SELECT * FROM es.es_apply_retention(2);
SELECT * FROM es.es_apply_retention();
SELECT * FROM es.es_apply_retention();
RESET ROLE;
SELECT stream_id, version, first_version,
       base_hash = (SELECT hash FROM lc_ret WHERE version = first_version - 1) AS base_hash_ok
  FROM es.streams WHERE category = 'lcret' ORDER BY 1;
SELECT version FROM es.es_read_stream('lcret-1');
SELECT version FROM es.es_read_stream('lcret-1', 1, 2);
SELECT es.es_stream_version('lcret-1');
SELECT version FROM es.snapshots WHERE stream_id = 'lcret-1' ORDER BY 1;
-- the fold starts from the snapshot at version 3 (first_version - 1)
SELECT es.es_fold('lcret-1', 'public.lc_sum(jsonb,jsonb)', '{}');
-- without a snapshot (another initial state) the fold cannot start
SELECT try($$SELECT es.es_fold('lcret-1', 'public.lc_sum(jsonb,jsonb)', '{"n":0}')$$);
-- time travel to a version whose events were removed cannot be answered
SELECT try($$SELECT es.es_fold('lcret-1', 'public.lc_sum(jsonb,jsonb)', '{}', 2)$$);
-- appends continue the chain and the versions
SELECT (es.es_append('lcret-1', 5, '[{"type":"t","data":{"n":32}}]')).version;
SELECT es.es_fold('lcret-1', 'public.lc_sum(jsonb,jsonb)', '{}');

-- Retention: an age policy; the stream keeps its last event whatever the policy
SET ROLE regress_lc_admin;
SELECT es.es_set_retention('lcret', NULL, '1 microsecond', NULL);
SELECT pg_sleep(0.01);
SELECT * FROM es.es_apply_retention();
RESET ROLE;
SELECT stream_id, version, first_version FROM es.streams WHERE category = 'lcret' ORDER BY 1;
SELECT stream_id, version FROM es.events WHERE category = 'lcret' ORDER BY 1, 2;
-- the stream's own policy wins over its category's
SELECT count(*) AS lcret_1_events FROM es.events WHERE stream_id = 'lcret-1';

-- Retention: removing a policy; archived and erased streams are left alone
SET ROLE regress_lc_admin;
SELECT es.es_set_retention(NULL, 'lcret-1', NULL, NULL);
SELECT es.es_set_retention('lcret', NULL, NULL, NULL);
SELECT count(*) AS policies FROM es.retention_policies;
SELECT es.es_set_retention('lcorder', NULL, NULL, 1);
SELECT es.es_archive_stream('lcorder-1');
SELECT * FROM es.es_apply_retention();
SELECT es.es_set_retention('lcorder', NULL, NULL, NULL);
SELECT es.es_unarchive_stream('lcorder-1');
RESET ROLE;
SELECT version FROM es.es_read_stream('lcorder-1');

-- Retention: direct writes of the policies are refused
SET ROLE regress_lc_admin;
SELECT try($$INSERT INTO es.retention_policies (category, max_count) VALUES ('x', 1)$$);
SELECT try($$DELETE FROM es.retention_policies$$);
RESET ROLE;

-- the outbox group and route of this file go, so that later files count only their own deliveries
SELECT es.es_outbox_drop_group('regress_lc_group');
SELECT es.es_outbox_unroute('lcpay');
DROP TRIGGER lc_count ON es.events;
DROP OWNED BY regress_lc_admin, regress_lc_eraser, regress_lc_writer;
DROP ROLE regress_lc_admin, regress_lc_eraser, regress_lc_writer;
