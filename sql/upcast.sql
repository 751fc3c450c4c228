-- upcast: upcasters per event type and schema version, applied on every
-- read (es_read_stream, es_read_all, es_fold, es_fold_agg, es_upcast);
-- stored events never change
SET es.snapshot_every = 0;

-- "Placed" in its three shapes, and a type without upcasters
--   v1: {"amount": euros}
--   v2: {"amount_cents": n, "currency": c}
--   v3: {"total": {"cents": n, "currency": c}}
SELECT version FROM es.es_append('up-1', 0, '[
  {"type": "Placed", "data": {"amount": 10}, "schema_version": 1},
  {"type": "Placed", "data": {"amount_cents": 2000, "currency": "USD"}, "schema_version": 2},
  {"type": "Placed", "data": {"total": {"cents": 3000, "currency": "GBP"}}, "schema_version": 3},
  {"type": "Noted", "data": {"text": "hello"}},
  {"type": "Placed", "data": {"amount": 0.5}}
]');
SELECT version, event_type, schema_version, data FROM es.es_read_stream('up-1');

-- v1 -> v2 in SQL, taking the data only
CREATE FUNCTION placed_v1_v2(data jsonb) RETURNS jsonb LANGUAGE sql IMMUTABLE AS $$
  SELECT jsonb_build_object('amount_cents', ((data->>'amount')::numeric * 100)::int, 'currency', 'EUR')
$$;
-- v2 -> v3 in PL/pgSQL, taking the data and the event
CREATE FUNCTION placed_v2_v3(data jsonb, event jsonb) RETURNS jsonb LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
  IF event->>'schema_version' <> '2' OR event->'data' <> data OR event->>'type' <> 'Placed' THEN
    RAISE EXCEPTION 'unexpected event %', event;
  END IF;
  RETURN jsonb_build_object('total', jsonb_build_object('cents', data->'amount_cents', 'currency', data->'currency'));
END $$;

SELECT es.es_register_upcaster('Placed', 1, 'placed_v1_v2(jsonb)');
SELECT event_type, from_version, fn, fn::regprocedure AS fn_regprocedure FROM es.upcasters;
SELECT version, schema_version, data FROM es.es_read_stream('up-1');

-- the chain v1 -> v2 -> v3: every reader sees the newest shape only
SELECT es.es_register_upcaster('Placed', 2, 'placed_v2_v3(jsonb,jsonb)');
SELECT version, event_type, schema_version, data FROM es.es_read_stream('up-1');
SELECT version, schema_version, data FROM es.es_read_stream('up-1', NULL, 2, 'backward');
SELECT version, event_type, data FROM es.es_read_all(NULL, 100, 'up');
SELECT version, data FROM es.es_read_all(NULL, 100, event_types => ARRAY['Placed']);
SELECT (es.es_upcast(e)).schema_version, (es.es_upcast(e)).data
  FROM es.events AS e WHERE e.stream_id = 'up-1' ORDER BY e.version;

-- folds see it too, with a jsonb event or an es.events row
CREATE FUNCTION total_cents(state jsonb, event jsonb) RETURNS jsonb LANGUAGE sql IMMUTABLE AS $$
  SELECT CASE WHEN event->>'type' = 'Placed'
    THEN jsonb_build_object('cents', (state->>'cents')::int + (event->'data'->'total'->>'cents')::int,
                            'versions', state->'versions' || to_jsonb(event->'schema_version'))
    ELSE state END
$$;
CREATE FUNCTION total_cents_row(state jsonb, e es.events) RETURNS jsonb LANGUAGE sql IMMUTABLE AS $$
  SELECT CASE WHEN e.event_type = 'Placed'
    THEN jsonb_build_object('cents', (state->>'cents')::int + (e.data->'total'->>'cents')::int,
                            'versions', state->'versions' || to_jsonb(e.schema_version))
    ELSE state END
$$;
SELECT es.es_fold('up-1', 'total_cents(jsonb,jsonb)', '{"cents": 0, "versions": []}');
SELECT es.es_fold('up-1', 'total_cents_row(jsonb,es.events)', '{"cents": 0, "versions": []}');
SELECT es.es_fold_agg('total_cents(jsonb,jsonb)', '{"cents": 0, "versions": []}', e ORDER BY e.version)
  FROM es.events AS e WHERE e.stream_id = 'up-1';
SELECT es.es_fold_agg('total_cents_row(jsonb,es.events)', '{"cents": 0, "versions": []}', e ORDER BY e.version)
  FROM es.events AS e WHERE e.stream_id = 'up-1';

-- stored events never change
SELECT version, schema_version, data FROM es.events WHERE stream_id = 'up-1' ORDER BY version;

-- a version with no upcaster ends the chain: without v1 -> v2, v1 events
-- stay v1 and v2 events still go to v3
SELECT es.es_unregister_upcaster('Placed', 1);
SELECT es.es_unregister_upcaster('Placed', 1) AS again;
SELECT version, schema_version, data FROM es.es_read_stream('up-1') WHERE event_type = 'Placed';
-- registering it again completes the chain
SELECT es.es_register_upcaster('Placed', 1, 'placed_v1_v2(jsonb)');
SELECT version, schema_version FROM es.es_read_stream('up-1') WHERE event_type = 'Placed';

-- replacing the upcaster of a version
CREATE FUNCTION placed_v1_v2_usd(data jsonb) RETURNS jsonb LANGUAGE sql IMMUTABLE AS $$
  SELECT jsonb_build_object('amount_cents', ((data->>'amount')::numeric * 100)::int, 'currency', 'USD')
$$;
SELECT es.es_register_upcaster('Placed', 1, 'placed_v1_v2_usd(jsonb)');
SELECT event_type, from_version, fn FROM es.upcasters ORDER BY 1, 2;
SELECT version, data FROM es.es_read_stream('up-1', 1, 1);
SELECT es.es_register_upcaster('Placed', 1, 'placed_v1_v2(jsonb)');

-- a new body of the function takes effect at once
CREATE OR REPLACE FUNCTION placed_v1_v2(data jsonb) RETURNS jsonb LANGUAGE sql IMMUTABLE AS $$
  SELECT jsonb_build_object('amount_cents', ((data->>'amount')::numeric * 100)::int, 'currency', 'CHF')
$$;
SELECT version, data FROM es.es_read_stream('up-1', 1, 1);

-- registrations are transactional
BEGIN;
SELECT es.es_unregister_upcaster('Placed', 2);
SELECT version, schema_version FROM es.es_read_stream('up-1', 1, 1);
ROLLBACK;
SELECT version, schema_version FROM es.es_read_stream('up-1', 1, 1);

-- direct writes to es.upcasters (an admin's) are seen as well
DELETE FROM es.upcasters WHERE event_type = 'Placed' AND from_version = 2;
SELECT version, schema_version FROM es.es_read_stream('up-1', 1, 1);
INSERT INTO es.upcasters (event_type, from_version, fn) VALUES ('Placed', 2, 'public.placed_v2_v3(pg_catalog.jsonb,pg_catalog.jsonb)');
SELECT version, schema_version FROM es.es_read_stream('up-1', 1, 1);

-- an upcaster whose function is dropped: reads of that type fail, others do not
DROP FUNCTION placed_v2_v3(jsonb, jsonb);
SELECT try($$SELECT * FROM es.es_read_stream('up-1')$$);
SELECT try($$SELECT * FROM es.es_read_all(NULL, 100, 'up')$$);
SELECT try($$SELECT es.es_fold('up-1', 'total_cents(jsonb,jsonb)', '{"cents": 0, "versions": []}')$$);
SELECT version, data FROM es.es_read_stream('up-1', 4, 1);
-- ... until it exists again
CREATE FUNCTION placed_v2_v3(data jsonb, event jsonb) RETURNS jsonb LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
  RETURN jsonb_build_object('total', jsonb_build_object('cents', data->'amount_cents', 'currency', data->'currency'));
END $$;
SELECT es.es_fold('up-1', 'total_cents(jsonb,jsonb)', '{"cents": 0, "versions": []}');

-- an upcaster that raises: its error, with the event in the context
CREATE FUNCTION placed_v3_raises(data jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
BEGIN
  RAISE EXCEPTION 'cannot upcast %', data USING ERRCODE = 'P0001';
END $$;
SELECT es.es_register_upcaster('Placed', 3, 'placed_v3_raises(jsonb)');
SELECT * FROM es.es_read_stream('up-1', 3, 1);
-- an upcaster that returns SQL NULL
CREATE FUNCTION placed_v3_null(data jsonb) RETURNS jsonb LANGUAGE sql AS $$ SELECT NULL::jsonb $$;
SELECT es.es_register_upcaster('Placed', 3, 'placed_v3_null(jsonb)');
SELECT es.es_fold('up-1', 'total_cents(jsonb,jsonb)', '{"cents": 0, "versions": []}');
SELECT es.es_unregister_upcaster('Placed', 3);

-- privileges: admins register; readers need EXECUTE on the upcaster
CREATE ROLE regress_up_reader IN ROLE es_reader;
CREATE ROLE regress_up_writer IN ROLE es_writer;
CREATE ROLE regress_up_admin IN ROLE es_admin;
SET ROLE regress_up_reader;
SELECT try($$SELECT es.es_register_upcaster('Placed', 7, 'placed_v1_v2(jsonb)')$$);
SELECT count(*) AS reader_reads_registry FROM es.upcasters;
RESET ROLE;
SET ROLE regress_up_writer;
SELECT try($$SELECT es.es_register_upcaster('Placed', 7, 'placed_v1_v2(jsonb)')$$);
SELECT try($$INSERT INTO es.upcasters VALUES ('Placed', 7, 'x')$$);
RESET ROLE;
SET ROLE regress_up_admin;
SELECT try($$SELECT es.es_register_upcaster('Placed', 7, 'placed_v1_v2(jsonb)')$$);
SELECT try($$SELECT es.es_unregister_upcaster('Placed', 7)$$);
RESET ROLE;
REVOKE EXECUTE ON FUNCTION placed_v1_v2(jsonb) FROM PUBLIC;
SET ROLE regress_up_reader;
SELECT try($$SELECT * FROM es.es_read_stream('up-1')$$);
SELECT version, data FROM es.es_read_stream('up-1', 4, 1);
RESET ROLE;
GRANT EXECUTE ON FUNCTION placed_v1_v2(jsonb) TO PUBLIC;

-- bad registrations
CREATE FUNCTION up_text(data text) RETURNS jsonb LANGUAGE sql AS $$ SELECT data::jsonb $$;
CREATE FUNCTION up_returns_text(data jsonb) RETURNS text LANGUAGE sql AS $$ SELECT data::text $$;
CREATE FUNCTION up_row(data jsonb, e es.events) RETURNS jsonb LANGUAGE sql AS $$ SELECT data $$;
CREATE FUNCTION up_three(data jsonb, event jsonb, x int) RETURNS jsonb LANGUAGE sql AS $$ SELECT data $$;
CREATE FUNCTION up_setof(data jsonb) RETURNS SETOF jsonb LANGUAGE sql AS $$ SELECT data $$;
CREATE PROCEDURE up_proc(data jsonb) LANGUAGE sql AS $$ SELECT 1 $$;
SELECT try($$SELECT es.es_register_upcaster(NULL, 1, 'placed_v1_v2(jsonb)')$$);
SELECT try($$SELECT es.es_register_upcaster('Placed', NULL, 'placed_v1_v2(jsonb)')$$);
SELECT try($$SELECT es.es_register_upcaster('Placed', 1, NULL)$$);
SELECT try($$SELECT es.es_register_upcaster('', 1, 'placed_v1_v2(jsonb)')$$);
SELECT try($$SELECT es.es_register_upcaster(repeat('x', 1025), 1, 'placed_v1_v2(jsonb)')$$);
SELECT try($$SELECT es.es_register_upcaster('Placed', 0, 'placed_v1_v2(jsonb)')$$);
SELECT try($$SELECT es.es_register_upcaster('Placed', 2147483647, 'placed_v1_v2(jsonb)')$$);
SELECT try($$SELECT es.es_register_upcaster('Placed', 5, 'up_text(text)')$$);
SELECT try($$SELECT es.es_register_upcaster('Placed', 5, 'up_returns_text(jsonb)')$$);
SELECT try($$SELECT es.es_register_upcaster('Placed', 5, 'up_row(jsonb,es.events)')$$);
SELECT try($$SELECT es.es_register_upcaster('Placed', 5, 'up_three(jsonb,jsonb,integer)')$$);
SELECT try($$SELECT es.es_register_upcaster('Placed', 5, 'up_setof(jsonb)')$$);
SELECT try($$SELECT es.es_register_upcaster('Placed', 5, 'up_proc(jsonb)')$$);
SELECT try($$SELECT es.es_unregister_upcaster(NULL, 1)$$);
SELECT try($$SELECT es.es_unregister_upcaster('Placed', NULL)$$);
SELECT event_type, from_version, fn::regprocedure FROM es.upcasters ORDER BY 1, 2;

-- a hostile search_path changes nothing
CREATE SCHEMA evil_up;
CREATE FUNCTION evil_up.text_eq(text, text) RETURNS boolean LANGUAGE sql IMMUTABLE AS 'SELECT true';
CREATE OPERATOR evil_up.= (LEFTARG = text, RIGHTARG = text, PROCEDURE = evil_up.text_eq);
CREATE TABLE evil_up.upcasters (LIKE es.upcasters);
SET search_path = evil_up, public, es, pg_catalog;
SELECT es_register_upcaster('Noted', 1, 'placed_v1_v2(jsonb)');
SELECT es_unregister_upcaster('Noted', 1);
SELECT version, schema_version FROM es_read_stream('up-1');
RESET search_path;
SELECT count(*) AS evil_rows FROM evil_up.upcasters;
DROP SCHEMA evil_up CASCADE;

-- clean up: no upcaster left, events read as stored
SELECT es.es_unregister_upcaster('Placed', 1), es.es_unregister_upcaster('Placed', 2);
SELECT version, schema_version, data FROM es.es_read_stream('up-1');
DROP ROLE regress_up_reader, regress_up_writer, regress_up_admin;
RESET es.snapshot_every;
