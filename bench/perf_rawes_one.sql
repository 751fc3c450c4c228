-- bench/perf_rawes_one.sql — bench/perf_run: one raw single-row INSERT into
-- rawes.events, a copy of es.events' schema with all its indexes and no
-- triggers, filled as es_append fills es.events (era 0, tx_id =
-- pg_current_xact_id()).  -D gencat=1 when es.events.category is a generated
-- column, 0 when the writer supplies it (split_part(stream_id, '-', 1)).
\set sid random(1, :streams)
\set ver random(1000, 1000000000000000)
\set amount random(1, 1000000)
\if :gencat
INSERT INTO rawes.events (stream_id, version, event_id, event_type, data, metadata,
						  recorded_at, era, tx_id)
VALUES ('account-' || :sid, :ver, gen_random_uuid(), 'Deposited',
		jsonb_build_object('amount', :amount::integer, 'currency', 'EUR'),
		jsonb_build_object('correlation_id', 'c-' || :amount),
		now(), 0, pg_current_xact_id());
\else
INSERT INTO rawes.events (stream_id, version, event_id, event_type, data, metadata,
						  recorded_at, era, tx_id, category)
VALUES ('account-' || :sid, :ver, gen_random_uuid(), 'Deposited',
		jsonb_build_object('amount', :amount::integer, 'currency', 'EUR'),
		jsonb_build_object('correlation_id', 'c-' || :amount),
		now(), 0, pg_current_xact_id(), 'account');
\endif
