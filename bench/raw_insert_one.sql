-- bench/raw_insert_one.sql — raw ceiling for single-event appends: one plain
-- single-row INSERT into raw.events (same columns and indexes as es.events, no
-- triggers, no checks, no streams row to advance).  The stream is random among
-- :streams, the version random and huge (no version check: that is the
-- point of a ceiling; collisions are negligible), tx_id from
-- pg_current_xact_id() and era 0, as es_append stores them.
-- Variables: -D streams=N.
\set sid random(1, :streams)
\set ver random(1000, 1000000000000000)
\set amount random(1, 1000000)
INSERT INTO raw.events (stream_id, version, event_id, event_type, data, metadata,
						recorded_at, era, tx_id)
VALUES ('account-' || :sid, :ver, gen_random_uuid(), 'Deposited',
		jsonb_build_object('amount', :amount::integer, 'currency', 'EUR'),
		jsonb_build_object('correlation_id', 'c-' || :amount),
		now(), 0, pg_current_xact_id())
RETURNING global_position;
