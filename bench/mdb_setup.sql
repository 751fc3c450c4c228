-- bench/mdb_setup.sql — data for the Message DB contender, in its own
-- message_store database (installed by bench/run with Message DB's
-- install.sh from the npm package).  Run as postgres with -v streams=N
-- -v per_stream=M after the install:
--   account-1 .. account-N   M messages each (positions 0 .. M-1), the same
--                            data as es.events; loaded with one INSERT into
--                            message_store.messages (a setup shortcut; the
--                            timed runs go through write_message only)
--   read-1 .. read-100       100 messages each, read with get_stream_messages
--   bench_mdb.write_exact    write_message with an expected version (read by
--                            the client beforehand with stream_version), its
--                            "Wrong expected version" P0001 turned into
--                            SQLSTATE 40001 so that pgbench retries it
--                            (Message DB raises P0001 matched by message text)
\set ON_ERROR_STOP on
SET client_min_messages = warning;

-- Message DB's functions call each other unqualified: its clients connect
-- with message_store on the search path
ALTER ROLE message_store IN DATABASE message_store SET search_path = message_store, public;

INSERT INTO message_store.messages (stream_name, position, type, data, metadata)
SELECT 'account-' || s, i - 1, 'Deposited',
	   jsonb_build_object('amount', i, 'currency', 'EUR'),
	   jsonb_build_object('correlation_id', 'setup-' || s || '-' || i)
  FROM generate_series(1, :streams) AS s, generate_series(1, :per_stream) AS i;
INSERT INTO message_store.messages (stream_name, position, type, data, metadata)
SELECT 'read-' || s, i - 1, 'Sold',
	   jsonb_build_object('amount', i % 100, 'sku', 'A' || i % 50),
	   jsonb_build_object('correlation_id', 'r-' || s || '-' || i)
  FROM generate_series(1, 100) AS s, generate_series(1, 100) AS i;

CREATE SCHEMA bench_mdb;
GRANT USAGE ON SCHEMA bench_mdb TO message_store;
CREATE FUNCTION bench_mdb.write_exact(stream varchar, expected bigint, data jsonb, metadata jsonb)
RETURNS bigint LANGUAGE plpgsql AS $$
BEGIN
	RETURN message_store.write_message(gen_random_uuid()::varchar, stream, 'Deposited', data, metadata, expected);
EXCEPTION WHEN raise_exception THEN
	IF SQLERRM LIKE 'Wrong expected version%' THEN
		RAISE EXCEPTION '%', SQLERRM USING ERRCODE = '40001';
	END IF;
	RAISE;
END
$$;
GRANT EXECUTE ON FUNCTION bench_mdb.write_exact(varchar, bigint, jsonb, jsonb) TO message_store;

VACUUM ANALYZE;
CHECKPOINT;
