-- outbox_cleanup: es_outbox_cleanup deletes the outbox rows that every
-- consumer group has delivered, older than the retention, and keeps those
-- of dead letters (outbox_replay shows the next cleanup taking them once
-- they are discarded, or replayed and delivered).
--
-- Continues outbox_dead (see outbox_claim): the seven messages of obq-1 to
-- obq-4 are delivered by both groups, except the four that regress_g2 gave
-- up on (obq-1 v1 to obq-4 v1, its dead letters).

-- cleanup: deletes the rows every group has delivered, older than the
-- retention, except those of dead letters
SELECT count(*) AS obq_rows FROM es.outbox WHERE aggregatetype = 'obq';
SELECT es.es_outbox_cleanup('1 hour') AS cleaned_with_retention;
SELECT count(*) AS obq_rows FROM es.outbox WHERE aggregatetype = 'obq';
SELECT es.es_outbox_cleanup() > 0 AS cleaned;
SELECT aggregateid, stream_version, type FROM es.outbox WHERE aggregatetype = 'obq' ORDER BY position;
