-- setup: helpers shared by the regression tests that follow
--
-- try(sql) runs a statement and returns "ok" or the error it raised as
-- "SQLSTATE: message [constraint]" plus the detail, so every test states the
-- exact SQLSTATE it expects.
CREATE FUNCTION public.try(sql text) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
	st text;
	msg text;
	con text;
	det text;
BEGIN
	EXECUTE sql;
	RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
	GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE, msg = MESSAGE_TEXT,
		con = CONSTRAINT_NAME, det = PG_EXCEPTION_DETAIL;
	RETURN st || ': ' || msg
		|| CASE WHEN con <> '' THEN ' [' || con || ']' ELSE '' END
		|| CASE WHEN det <> '' THEN E'\n' || det ELSE '' END;
END
$$;

-- rows added to the store since store_mark() was called in this session, to
-- assert that a failed call wrote nothing (independent of earlier test files)
CREATE FUNCTION public.store_mark() RETURNS void
LANGUAGE sql AS $$
	SELECT pg_catalog.set_config('regress.events', (SELECT count(*) FROM es.events)::text, false),
	       pg_catalog.set_config('regress.streams', (SELECT count(*) FROM es.streams)::text, false)
$$;
CREATE FUNCTION public.store_counts(OUT events bigint, OUT streams bigint)
LANGUAGE sql AS $$
	SELECT (SELECT count(*) FROM es.events) - current_setting('regress.events')::bigint,
	       (SELECT count(*) FROM es.streams) - current_setting('regress.streams')::bigint
$$;

SELECT extname, extversion FROM pg_extension WHERE extname = 'es_ext';
