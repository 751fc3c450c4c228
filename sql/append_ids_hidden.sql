-- append_ids_hidden: event ids stay unique within a stream when row level
-- security hides some of the stream's events from the appender.  es_append
-- runs as its caller, so its lookups of the batch's ids see only the rows
-- the caller's SELECT policies let through; with no unique index on the
-- event id, the check under the stream row lock must not be blinded by
-- them (a unique index's check is not), or an id hidden from the caller
-- is appended a second time to the stream.
-- (After append_ids in the schedule: it adds events.)
CREATE ROLE regress_ids_w1 IN ROLE es_writer;
CREATE ROLE regress_ids_w2 IN ROLE es_writer;
ALTER TABLE es.events ENABLE ROW LEVEL SECURITY;
-- each writer reads only its own tenant's events (an insert's RETURNING
-- needs the new row to pass it too)
CREATE POLICY regress_ids_tenant ON es.events FOR SELECT TO es_reader
  USING (metadata ->> 'tenant' = current_user);
CREATE POLICY regress_ids_insert ON es.events FOR INSERT TO es_writer WITH CHECK (true);

-- w1 appends events with given ids; its retry is a retry
SET ROLE regress_ids_w1;
SELECT version FROM es.es_append('hid-1', NULL,
    '[{"id": "cccccccc-0000-4000-8000-000000000001", "type": "A", "data": 1, "metadata": {"tenant": "regress_ids_w1"}}]');
SELECT version FROM es.es_append('hid-1', NULL,
    '[{"id": "cccccccc-0000-4000-8000-000000000001", "type": "A", "data": 1, "metadata": {"tenant": "regress_ids_w1"}}]');
SELECT version FROM es.es_append('hid-2', 0,
    '[{"id": "cccccccc-0000-4000-8000-000000000002", "type": "A", "data": 1, "metadata": {"tenant": "regress_ids_w1"}},
      {"id": "cccccccc-0000-4000-8000-000000000003", "type": "A", "data": 2, "metadata": {"tenant": "regress_ids_w1"}}]');

-- w2 sees none of w1's events: an append of one of their ids to the same
-- stream is refused (duplicate_object: not a conflict that a retry would
-- resolve), whatever the expected version, alone or in a batch, and writes
-- nothing
SET ROLE regress_ids_w2;
SELECT count(*) AS w2_sees FROM es.events WHERE stream_id LIKE 'hid-%';
SELECT store_mark();
SELECT try($$SELECT es.es_append('hid-1', NULL,
    '[{"id": "cccccccc-0000-4000-8000-000000000001", "type": "B", "data": 2, "metadata": {"tenant": "regress_ids_w2"}}]')$$);
SELECT try($$SELECT es.es_append('hid-1', 1,
    '[{"id": "cccccccc-0000-4000-8000-000000000001", "type": "A", "data": 1, "metadata": {"tenant": "regress_ids_w2"}}]')$$);
SELECT try($$SELECT es.es_append('hid-2', -1,
    '[{"id": "cccccccc-0000-4000-8000-000000000004", "type": "B", "data": 3, "metadata": {"tenant": "regress_ids_w2"}},
      {"id": "cccccccc-0000-4000-8000-000000000003", "type": "B", "data": 4, "metadata": {"tenant": "regress_ids_w2"}}]')$$);
SELECT try($$SELECT es.es_append('hid-2', 2,
    '[{"id": "cccccccc-0000-4000-8000-000000000003", "type": "B", "data": 4, "metadata": {"tenant": "regress_ids_w2"}},
      {"type": "B", "data": 5, "metadata": {"tenant": "regress_ids_w2"}}]')$$);
SELECT * FROM store_counts();
-- ids that are not in the stream append; w1's id in another stream too
SELECT version FROM es.es_append('hid-2', 2,
    '[{"id": "cccccccc-0000-4000-8000-000000000004", "type": "B", "data": 3, "metadata": {"tenant": "regress_ids_w2"}}]');
SELECT version FROM es.es_append('hid-3', 0,
    '[{"id": "cccccccc-0000-4000-8000-000000000001", "type": "B", "data": 1, "metadata": {"tenant": "regress_ids_w2"}}]');
RESET ROLE;

-- what was stored: no id twice in a stream
SELECT stream_id, version, event_id, event_type, metadata ->> 'tenant' AS tenant FROM es.events
 WHERE stream_id LIKE 'hid-%' ORDER BY 1, 2;
SELECT stream_id, version FROM es.streams WHERE stream_id LIKE 'hid-%' ORDER BY 1;
SELECT count(*) AS duplicate_ids
  FROM (SELECT stream_id, event_id FROM es.events GROUP BY 1, 2 HAVING count(*) > 1) AS d;

DROP POLICY regress_ids_tenant ON es.events;
DROP POLICY regress_ids_insert ON es.events;
ALTER TABLE es.events DISABLE ROW LEVEL SECURITY;
DROP ROLE regress_ids_w1, regress_ids_w2;
