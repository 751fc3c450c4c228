-- test/sql/chain_reference.sql — an independent reference verifier of the
-- hash chain of es.events (issue 15), in plain SQL: it recomputes every
-- event's hash from its stored columns exactly as src/chain.c documents it,
--
--   h(v) = sha256('es_ext chain 1' || h(v - 1) || canonical(event v))
--   h(first_version - 1) = es.streams.base_hash, or 32 zero bytes when NULL
--   canonical = each field as int4 big-endian length || bytes (NULL: length
--     0xFFFFFFFF, no bytes): stream_id, version (int8 BE), event_id (16
--     bytes), event_type, schema_version (int4 BE), data::text,
--     metadata::text, tags (int4 BE count, then each tag as length || bytes;
--     NULL: 0xFFFFFFFF), recorded_at (int8 BE microseconds since 2000-01-01)
--
-- and shares no code with it (no es_ext function is called).  Each event is
-- checked against its stored predecessor (a chain whose every link holds is
-- the chain recomputed from base_hash); missing versions and a stream row
-- whose version is not its last stored event are reported too.
--
-- Used by the regression test chain_attack and by the TAP test
-- 090_chain_attack.pl (\i from psql); defines, in schema chain_ref:
--   chain_ref.event_hash(prev bytea, e es.events) -> bytea
--   chain_ref.problems(streams text DEFAULT '%') -> setof (stream_id, version,
--     problem), of the streams whose id is LIKE streams;
--     no row: every chain in the store verifies
CREATE SCHEMA IF NOT EXISTS chain_ref;

-- a field: int4 big-endian length, then its bytes; NULL as 0xFFFFFFFF
CREATE OR REPLACE FUNCTION chain_ref.field(b bytea) RETURNS bytea
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN CASE WHEN b IS NULL THEN '\xffffffff'::bytea
            ELSE pg_catalog.int4send(pg_catalog.octet_length(b)) OPERATOR(pg_catalog.||) b END;

-- the bytes of a text value in the database encoding (as the server stores it)
CREATE OR REPLACE FUNCTION chain_ref.raw(t text) RETURNS bytea
LANGUAGE sql STABLE PARALLEL SAFE
RETURN pg_catalog.convert_to(t, pg_catalog.getdatabaseencoding()::text);

CREATE OR REPLACE FUNCTION chain_ref.event_hash(prev bytea, e es.events) RETURNS bytea
LANGUAGE sql STABLE PARALLEL SAFE
RETURN pg_catalog.sha256(
	pg_catalog.convert_to('es_ext chain 1', 'UTF8')
	|| COALESCE(prev, '\x0000000000000000000000000000000000000000000000000000000000000000'::bytea)
	|| chain_ref.field(chain_ref.raw(e.stream_id))
	|| chain_ref.field(pg_catalog.int8send(e.version))
	|| chain_ref.field(pg_catalog.uuid_send(e.event_id))
	|| chain_ref.field(chain_ref.raw(e.event_type))
	|| chain_ref.field(pg_catalog.int4send(e.schema_version))
	|| chain_ref.field(chain_ref.raw(e.data::text))
	|| chain_ref.field(chain_ref.raw(e.metadata::text))
	|| CASE WHEN e.tags IS NULL THEN '\xffffffff'::bytea
	        ELSE pg_catalog.int4send(COALESCE(pg_catalog.cardinality(e.tags), 0))
	             || COALESCE((SELECT pg_catalog.string_agg(chain_ref.field(chain_ref.raw(t.tag)), ''::bytea ORDER BY t.n)
	                            FROM pg_catalog.unnest(e.tags) WITH ORDINALITY AS t(tag, n)), ''::bytea) END
	|| chain_ref.field(pg_catalog.timestamptz_send(e.recorded_at)));

-- every stored event: the log and the archive of archived streams
CREATE OR REPLACE FUNCTION chain_ref.all_events() RETURNS SETOF es.events
LANGUAGE sql STABLE
AS $$SELECT * FROM es.events UNION ALL SELECT * FROM es.archived_events$$;

CREATE OR REPLACE FUNCTION chain_ref.problems(streams text DEFAULT '%')
RETURNS TABLE (stream_id text, version bigint, problem text)
LANGUAGE sql STABLE
BEGIN ATOMIC
	WITH ev AS (
		SELECT s.stream_id AS sid, s.first_version, s.base_hash, e AS row, e.version AS v, e.hash,
		       pg_catalog.lag(e.hash) OVER w AS prev_hash,
		       pg_catalog.lag(e.version) OVER w AS prev_version
		  FROM es.streams AS s
		  JOIN chain_ref.all_events() AS e ON e.stream_id = s.stream_id AND e.version >= s.first_version
		 WHERE s.stream_id LIKE streams
		WINDOW w AS (PARTITION BY s.stream_id ORDER BY e.version)
	)
	SELECT sid, v,
	       CASE WHEN hash IS NULL THEN 'no hash'
	            WHEN v <> first_version AND prev_version IS DISTINCT FROM v - 1
	              THEN 'gap before this version'
	            ELSE 'hash mismatch: stored ' || pg_catalog.encode(hash, 'hex') || ' recomputed '
	                 || COALESCE(pg_catalog.encode(chain_ref.event_hash(
	                        CASE WHEN v = first_version THEN base_hash ELSE prev_hash END, row), 'hex'), 'NULL') END
	  FROM ev
	 WHERE hash IS NULL
	    OR (v <> first_version AND prev_version IS DISTINCT FROM v - 1)
	    OR hash IS DISTINCT FROM chain_ref.event_hash(
	           CASE WHEN v = first_version THEN base_hash ELSE prev_hash END, row)
	UNION ALL
	SELECT s.stream_id, s.version, 'stream row says version ' || s.version || ', stored events '
	       || COALESCE(pg_catalog.min(e.version)::text, 'none') || '..' || COALESCE(pg_catalog.max(e.version)::text, 'none')
	  FROM es.streams AS s
	  LEFT JOIN chain_ref.all_events() AS e ON e.stream_id = s.stream_id AND e.version >= s.first_version
	 WHERE s.stream_id LIKE streams
	 GROUP BY s.stream_id, s.version, s.first_version
	HAVING (s.version >= s.first_version AND pg_catalog.min(e.version) IS DISTINCT FROM s.first_version)
	    OR pg_catalog.max(e.version) IS DISTINCT FROM CASE WHEN s.version >= s.first_version THEN s.version END
	UNION ALL
	SELECT e.stream_id, e.version, 'event of no stream row'
	  FROM chain_ref.all_events() AS e
	 WHERE e.stream_id LIKE streams
	   AND NOT EXISTS (SELECT 1 FROM es.streams AS s WHERE s.stream_id = e.stream_id)
	ORDER BY 1, 2;
END;
