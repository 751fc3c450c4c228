-- append_triggers: BEFORE INSERT row triggers on es.events cannot change what
-- es_append writes.  es_append refuses to run while such a trigger would fire,
-- and checks every row its insert returns (stream, version, event id,
-- position, era, tx_id, recorded_at) before it uses one.  Every case: a clear
-- error, nothing written, es.streams agrees with es.events, the server alive.

CREATE SCHEMA at;
GRANT USAGE ON SCHEMA at TO PUBLIC;
-- es_admin holds TRIGGER on es.events (for projections): no superuser needed
CREATE ROLE regress_at_admin IN ROLE es_admin;

CREATE FUNCTION at.shift_version() RETURNS trigger LANGUAGE plpgsql AS
$$BEGIN NEW.version := NEW.version + 1000; RETURN NEW; END$$;
CREATE FUNCTION at.shift_version_far() RETURNS trigger LANGUAGE plpgsql AS
$$BEGIN NEW.version := NEW.version + 1000000000000; RETURN NEW; END$$;
CREATE FUNCTION at.same_position() RETURNS trigger LANGUAGE plpgsql AS
$$BEGIN NEW.global_position := 1; RETURN NEW; END$$;
CREATE FUNCTION at.other_stream() RETURNS trigger LANGUAGE plpgsql AS
$$BEGIN NEW.stream_id := NEW.stream_id || '-x'; RETURN NEW; END$$;
CREATE FUNCTION at.other_id() RETURNS trigger LANGUAGE plpgsql AS
$$BEGIN NEW.event_id := '99999999-9999-4999-8999-999999999999'; RETURN NEW; END$$;
CREATE FUNCTION at.other_order() RETURNS trigger LANGUAGE plpgsql AS
$$BEGIN NEW.tx_id := '1'; RETURN NEW; END$$;
CREATE FUNCTION at.other_era() RETURNS trigger LANGUAGE plpgsql AS
$$BEGIN NEW.era := NEW.era + 1; RETURN NEW; END$$;
CREATE FUNCTION at.other_time() RETURNS trigger LANGUAGE plpgsql AS
$$BEGIN NEW.recorded_at := '2000-01-01'; RETURN NEW; END$$;
CREATE FUNCTION at.other_data() RETURNS trigger LANGUAGE plpgsql AS
$$BEGIN NEW.data := '{"forged": true}'; RETURN NEW; END$$;
CREATE FUNCTION at.unchanged() RETURNS trigger LANGUAGE plpgsql AS
$$BEGIN RETURN NEW; END$$;
CREATE FUNCTION at.skip() RETURNS trigger LANGUAGE plpgsql AS
$$BEGIN RETURN NULL; END$$;
CREATE FUNCTION at.reject_b() RETURNS trigger LANGUAGE plpgsql AS
$$BEGIN
	IF NEW.event_type = 'B' THEN
		RAISE EXCEPTION 'events of type B are not allowed' USING ERRCODE = 'P0001';
	END IF;
	RETURN NULL;
END$$;

-- streams and events agree: every stream's version is its event count and
-- its last event's version
CREATE FUNCTION at.consistent() RETURNS boolean LANGUAGE sql AS $$
	SELECT NOT EXISTS (
		SELECT FROM es.streams s
		  FULL JOIN (SELECT stream_id, count(*) AS n, max(version) AS v
					   FROM es.events GROUP BY stream_id) e USING (stream_id)
		 WHERE s.version IS DISTINCT FROM e.n OR s.version IS DISTINCT FROM e.v)
$$;

SELECT version FROM es.es_append('trg-1', 0, '[{"type": "A", "data": {}}]');
SELECT store_mark();

-- a BEFORE INSERT row trigger that moves the version, created by es_admin:
-- refused (55000), for a single event and for a batch, nothing written
SET ROLE regress_at_admin;
CREATE TRIGGER at_shift BEFORE INSERT ON es.events FOR EACH ROW EXECUTE FUNCTION at.shift_version();
RESET ROLE;
SELECT try($$SELECT es.es_append('trg-1', NULL, '[{"type": "B", "data": {}}]')$$);
SELECT try($$SELECT es.es_append('trg-1', 1, '[{"type": "B", "data": {}}, {"type": "C", "data": {}}, {"type": "D", "data": {}}]')$$);
SELECT try($$SELECT es.es_append('trg-new', 0, '[{"type": "B", "data": {}}]')$$);
SELECT * FROM store_counts();
SELECT at.consistent();
DROP TRIGGER at_shift ON es.events;

-- moved far outside the batch: still a clean error, and the server is alive
CREATE TRIGGER at_shift_far BEFORE INSERT ON es.events FOR EACH ROW EXECUTE FUNCTION at.shift_version_far();
SELECT try($$SELECT es.es_append('trg-1', NULL, '[{"type": "B", "data": {}}, {"type": "C", "data": {}}]')$$);
SELECT 1 AS alive;
SELECT * FROM store_counts();
SELECT at.consistent();
DROP TRIGGER at_shift_far ON es.events;

-- any column: positions, stream, ids, log order, time, data
CREATE TRIGGER at_t BEFORE INSERT ON es.events FOR EACH ROW EXECUTE FUNCTION at.same_position();
SELECT try($$SELECT es.es_append('trg-1', NULL, '[{"type": "B", "data": {}}, {"type": "C", "data": {}}]')$$);
DROP TRIGGER at_t ON es.events;
CREATE TRIGGER at_t BEFORE INSERT ON es.events FOR EACH ROW EXECUTE FUNCTION at.other_stream();
SELECT try($$SELECT es.es_append('trg-1', NULL, '[{"type": "B", "data": {}}]')$$);
DROP TRIGGER at_t ON es.events;
CREATE TRIGGER at_t BEFORE INSERT ON es.events FOR EACH ROW EXECUTE FUNCTION at.other_id();
SELECT try($$SELECT es.es_append('trg-1', NULL, '[{"type": "B", "data": {}}]')$$);
DROP TRIGGER at_t ON es.events;
CREATE TRIGGER at_t BEFORE INSERT ON es.events FOR EACH ROW EXECUTE FUNCTION at.other_order();
SELECT try($$SELECT es.es_append('trg-1', NULL, '[{"type": "B", "data": {}}]')$$);
DROP TRIGGER at_t ON es.events;
CREATE TRIGGER at_t BEFORE INSERT ON es.events FOR EACH ROW EXECUTE FUNCTION at.other_data();
SELECT try($$SELECT es.es_append('trg-1', NULL, '[{"type": "B", "data": {}}]')$$);
DROP TRIGGER at_t ON es.events;
-- one that changes nothing, or skips the row: refused all the same
CREATE TRIGGER at_t BEFORE INSERT ON es.events FOR EACH ROW EXECUTE FUNCTION at.unchanged();
SELECT try($$SELECT es.es_append('trg-1', NULL, '[{"type": "B", "data": {}}]')$$);
DROP TRIGGER at_t ON es.events;
CREATE TRIGGER at_t BEFORE INSERT ON es.events FOR EACH ROW EXECUTE FUNCTION at.skip();
SELECT try($$SELECT es.es_append('trg-1', NULL, '[{"type": "B", "data": {}}, {"type": "C", "data": {}}]')$$);
-- ENABLE ALWAYS fires too: refused
ALTER TABLE es.events ENABLE ALWAYS TRIGGER at_t;
SELECT try($$SELECT es.es_append('trg-1', NULL, '[{"type": "B", "data": {}}]')$$);
SELECT * FROM store_counts();
SELECT at.consistent();

-- a disabled BEFORE trigger, or one that fires only on a replica, does not
-- fire: appends work
ALTER TABLE es.events DISABLE TRIGGER at_t;
SELECT version FROM es.es_append('trg-1', 1, '[{"type": "B", "data": {}}]');
ALTER TABLE es.events ENABLE REPLICA TRIGGER at_t;
SELECT version FROM es.es_append('trg-1', 2, '[{"type": "C", "data": {}}, {"type": "D", "data": {}}]');
DROP TRIGGER at_t ON es.events;

-- statement-level BEFORE triggers and AFTER row triggers are fine; an AFTER
-- trigger validates just as well: its error aborts the append
CREATE TRIGGER at_stmt BEFORE INSERT ON es.events FOR EACH STATEMENT EXECUTE FUNCTION at.skip();
SET ROLE regress_at_admin;
CREATE TRIGGER at_validate AFTER INSERT ON es.events FOR EACH ROW EXECUTE FUNCTION at.reject_b();
RESET ROLE;
SELECT store_mark();
-- one event written, then none
SELECT version FROM es.es_append('trg-1', 4, '[{"type": "E", "data": {}}]');
SELECT try($$SELECT es.es_append('trg-1', 5, '[{"type": "F", "data": {}}, {"type": "B", "data": {}}]')$$);
SELECT * FROM store_counts();
DROP TRIGGER at_stmt ON es.events;
DROP TRIGGER at_validate ON es.events;

-- the error names the trigger and says what to do
\set VERBOSITY default
CREATE TRIGGER at_shift BEFORE INSERT ON es.events FOR EACH ROW EXECUTE FUNCTION at.shift_version();
SELECT es.es_append('trg-1', NULL, '[{"type": "B", "data": {}}]');
DROP TRIGGER at_shift ON es.events;

-- second line: a BEFORE row trigger that fires anyway (here: a superuser's
-- statement trigger switches to replica mode after es_append's check, so a
-- replica-only row trigger fires) is caught by the checks on the rows the
-- insert returns (27000) before es_append uses them: nothing written, no
-- crash
CREATE FUNCTION at.to_replica() RETURNS trigger LANGUAGE plpgsql AS
$$BEGIN PERFORM set_config('session_replication_role', 'replica', true); RETURN NULL; END$$;
CREATE TRIGGER zz_to_replica BEFORE INSERT ON es.events FOR EACH STATEMENT EXECUTE FUNCTION at.to_replica();
SELECT store_mark();
CREATE TRIGGER at_t BEFORE INSERT ON es.events FOR EACH ROW EXECUTE FUNCTION at.shift_version();
ALTER TABLE es.events ENABLE REPLICA TRIGGER at_t;
SELECT try($$SELECT es.es_append('trg-1', NULL, '[{"type": "B", "data": {}}]')$$);
SELECT try($$SELECT es.es_append('trg-1', NULL, '[{"type": "B", "data": {}}, {"type": "C", "data": {}}]')$$);
DROP TRIGGER at_t ON es.events;
CREATE TRIGGER at_t BEFORE INSERT ON es.events FOR EACH ROW EXECUTE FUNCTION at.shift_version_far();
ALTER TABLE es.events ENABLE REPLICA TRIGGER at_t;
SELECT try($$SELECT es.es_append('trg-1', NULL, '[{"type": "B", "data": {}}, {"type": "C", "data": {}}]')$$);
SELECT 1 AS alive;
DROP TRIGGER at_t ON es.events;
CREATE TRIGGER at_t BEFORE INSERT ON es.events FOR EACH ROW EXECUTE FUNCTION at.same_position();
ALTER TABLE es.events ENABLE REPLICA TRIGGER at_t;
SELECT try($$SELECT es.es_append('trg-1', NULL, '[{"type": "B", "data": {}}, {"type": "C", "data": {}}]')$$);
DROP TRIGGER at_t ON es.events;
CREATE TRIGGER at_t BEFORE INSERT ON es.events FOR EACH ROW EXECUTE FUNCTION at.other_stream();
ALTER TABLE es.events ENABLE REPLICA TRIGGER at_t;
SELECT try($$SELECT es.es_append('trg-1', NULL, '[{"type": "B", "data": {}}]')$$);
DROP TRIGGER at_t ON es.events;
CREATE TRIGGER at_t BEFORE INSERT ON es.events FOR EACH ROW EXECUTE FUNCTION at.other_id();
ALTER TABLE es.events ENABLE REPLICA TRIGGER at_t;
SELECT try($$SELECT es.es_append('trg-1', NULL, '[{"type": "B", "data": {}}]')$$);
DROP TRIGGER at_t ON es.events;
CREATE TRIGGER at_t BEFORE INSERT ON es.events FOR EACH ROW EXECUTE FUNCTION at.other_order();
ALTER TABLE es.events ENABLE REPLICA TRIGGER at_t;
SELECT try($$SELECT es.es_append('trg-1', NULL, '[{"type": "B", "data": {}}]')$$);
DROP TRIGGER at_t ON es.events;
CREATE TRIGGER at_t BEFORE INSERT ON es.events FOR EACH ROW EXECUTE FUNCTION at.other_era();
ALTER TABLE es.events ENABLE REPLICA TRIGGER at_t;
SELECT try($$SELECT es.es_append('trg-1', NULL, '[{"type": "B", "data": {}}]')$$);
DROP TRIGGER at_t ON es.events;
CREATE TRIGGER at_t BEFORE INSERT ON es.events FOR EACH ROW EXECUTE FUNCTION at.other_time();
ALTER TABLE es.events ENABLE REPLICA TRIGGER at_t;
SELECT try($$SELECT es.es_append('trg-1', NULL, '[{"type": "B", "data": {}}]')$$);
DROP TRIGGER at_t ON es.events;
CREATE TRIGGER at_t BEFORE INSERT ON es.events FOR EACH ROW EXECUTE FUNCTION at.skip();
ALTER TABLE es.events ENABLE REPLICA TRIGGER at_t;
SELECT try($$SELECT es.es_append('trg-1', NULL, '[{"type": "B", "data": {}}, {"type": "C", "data": {}}]')$$);
DROP TRIGGER at_t ON es.events;
DROP TRIGGER zz_to_replica ON es.events;
SELECT * FROM store_counts();
SELECT at.consistent();
SELECT 1 AS alive;

-- after all that, appends work as before
SELECT version, cardinality(positions) FROM es.es_append('trg-1', 5, '[{"type": "G", "data": {}}, {"type": "H", "data": {}}]');
SELECT at.consistent();

SET client_min_messages = warning;
DROP SCHEMA at CASCADE;
RESET client_min_messages;
DROP ROLE regress_at_admin;

-- a BEFORE row trigger on es.streams (only its owner may create one) could
-- shift versions: es_append refuses to run while one would fire
CREATE FUNCTION public.shift_stream_version() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	NEW.version := NEW.version + 5;
	RETURN NEW;
END $$;
CREATE TRIGGER shift_stream BEFORE INSERT OR UPDATE ON es.streams
	FOR EACH ROW EXECUTE FUNCTION public.shift_stream_version();
SELECT store_mark();
SELECT try($$SELECT es.es_append('apt-streams', NULL, '[{"type": "X", "data": {}}]')$$);
SELECT * FROM store_counts();
ALTER TABLE es.streams DISABLE TRIGGER shift_stream;
SELECT version FROM es.es_append('apt-streams', NULL, '[{"type": "X", "data": {}}]');
DROP TRIGGER shift_stream ON es.streams;
DROP FUNCTION public.shift_stream_version();
