-- immutability: events cannot be changed; the tables are written only by es_append

SELECT store_mark();

SELECT version FROM es.es_append('imm-1', 0, '[{"type": "A", "data": {"v": 1}}]');
SELECT * FROM store_counts();

-- UPDATE, DELETE and TRUNCATE of events are refused (2F003), even for the owner
SELECT try($$UPDATE es.events SET data = '{"v": 2}' WHERE stream_id = 'imm-1'$$);
SELECT try($$DELETE FROM es.events WHERE stream_id = 'imm-1'$$);
SELECT try($$TRUNCATE es.events$$);
SELECT try($$TRUNCATE es.events CASCADE$$);

-- a plain INSERT that bypasses es_append is refused
SELECT try($$INSERT INTO es.events (stream_id, version, event_id, event_type, data, recorded_at, era, tx_id)
             VALUES ('imm-1', 2, gen_random_uuid(), 'B', '{}', now(), 0, pg_current_xact_id())$$);
SELECT try($$COPY es.events (stream_id, version, event_id, event_type, data, recorded_at, era, tx_id) FROM '/dev/null'$$);

-- es.streams and es.config are maintained by es_append only
SELECT try($$UPDATE es.streams SET version = 42 WHERE stream_id = 'imm-1'$$);
SELECT try($$INSERT INTO es.streams (stream_id, version) VALUES ('imm-2', 5)$$);
SELECT try($$DELETE FROM es.streams$$);
SELECT try($$TRUNCATE es.streams$$);
SELECT try($$UPDATE es.config SET era = 7$$);
SELECT try($$DELETE FROM es.config$$);

-- nothing changed
SELECT * FROM store_counts();
SELECT version, data FROM es.events WHERE stream_id = 'imm-1';
SELECT es.es_stream_version('imm-1');

-- a user trigger fired by an append cannot slip a plain INSERT through
CREATE FUNCTION sneaky() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	INSERT INTO es.events (stream_id, version, event_id, event_type, data, recorded_at, era, tx_id)
	VALUES ('imm-sneak', 1, gen_random_uuid(), 'X', '{}', now(), 0, pg_current_xact_id());
	RETURN NULL;
END
$$;
CREATE TRIGGER sneaky AFTER INSERT ON es.events FOR EACH STATEMENT EXECUTE FUNCTION sneaky();
SELECT try($$SELECT es.es_append('imm-3', 0, '[{"type": "A", "data": {}}]')$$);
DROP TRIGGER sneaky ON es.events;
SELECT es.es_stream_version('imm-3'), es.es_stream_version('imm-sneak');

-- but a trigger may append through es_append (e.g. a process manager)
CREATE FUNCTION follow_up() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	IF NEW.stream_id = 'imm-4' THEN
		PERFORM es.es_append('imm-4-log', NULL,
			jsonb_build_array(jsonb_build_object('type', 'Seen', 'data', jsonb_build_object('v', NEW.version))));
	END IF;
	RETURN NULL;
END
$$;
CREATE TRIGGER follow_up AFTER INSERT ON es.events FOR EACH ROW EXECUTE FUNCTION follow_up();
SELECT version FROM es.es_append('imm-4', 0, '[{"type": "A", "data": {}}, {"type": "B", "data": {}}]');
DROP TRIGGER follow_up ON es.events;
SELECT stream_id, version, data FROM es.events WHERE stream_id LIKE 'imm-4%' ORDER BY 1, 2;
