-- bench/projection_setup.sql — read models and projection functions for
-- bench/projection_run: per-stream summaries kept by a row trigger
-- (pj_row_k) or by a statement trigger over the transition table
-- (pj_stmt_k), k = 1..3.  bench/projection_run creates and drops the
-- triggers themselves for each configuration.
CREATE SCHEMA pj;
DO $do$
BEGIN
	FOR k IN 1..3 LOOP
		EXECUTE format('CREATE TABLE pj.row_%s (stream_id text PRIMARY KEY, events bigint NOT NULL, total bigint NOT NULL, last_version bigint NOT NULL)', k);
		EXECUTE format($f$
			CREATE FUNCTION pj.row_%1$s() RETURNS trigger LANGUAGE plpgsql AS $b$
			BEGIN
				INSERT INTO pj.row_%1$s AS s VALUES (NEW.stream_id, 1, (NEW.data ->> 'n')::bigint, NEW.version)
				ON CONFLICT (stream_id) DO UPDATE
				   SET events = s.events + 1, total = s.total + excluded.total, last_version = excluded.last_version;
				RETURN NULL;
			END $b$ $f$, k);
		EXECUTE format('CREATE TABLE pj.stmt_%s (stream_id text PRIMARY KEY, events bigint NOT NULL, total bigint NOT NULL, last_version bigint NOT NULL)', k);
		EXECUTE format($f$
			CREATE FUNCTION pj.stmt_%1$s() RETURNS trigger LANGUAGE plpgsql AS $b$
			BEGIN
				INSERT INTO pj.stmt_%1$s AS s
				SELECT stream_id, count(*), sum((data ->> 'n')::bigint), max(version)
				  FROM new_events GROUP BY stream_id
				ON CONFLICT (stream_id) DO UPDATE
				   SET events = s.events + excluded.events, total = s.total + excluded.total,
				       last_version = excluded.last_version;
				RETURN NULL;
			END $b$ $f$, k);
	END LOOP;
END
$do$;
