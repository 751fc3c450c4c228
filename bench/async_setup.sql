-- bench/async_setup.sql — read models of bench/async_run: per-stream
-- summaries kept by row triggers (ap_row_k, k = 1..3) or statement triggers
-- over a transition table (ap_stmt_k), and an unlogged table where the
-- first row projection records, per event, how long after its append it was
-- applied (the lag an asynchronous projection adds).
CREATE SCHEMA ap;
CREATE UNLOGGED TABLE ap.lag (global_position bigint, lag_ms double precision);
CREATE TABLE ap.measure (on_ boolean);	-- a row: the first row projection records its lag
DO $do$
BEGIN
	FOR k IN 1..3 LOOP
		EXECUTE format('CREATE TABLE ap.row_%s (stream_id text PRIMARY KEY, events bigint NOT NULL, total bigint NOT NULL, last_version bigint NOT NULL)', k);
		EXECUTE format($f$
			CREATE FUNCTION ap.row_%1$s() RETURNS trigger LANGUAGE plpgsql AS $b$
			BEGIN
				INSERT INTO ap.row_%1$s AS s VALUES (NEW.stream_id, 1, (NEW.data ->> 'n')::bigint, NEW.version)
				ON CONFLICT (stream_id) DO UPDATE
				   SET events = s.events + 1, total = s.total + excluded.total, last_version = excluded.last_version;
				IF %1$s = 1 AND EXISTS (SELECT FROM ap.measure) THEN
					INSERT INTO ap.lag VALUES (NEW.global_position,
						extract(epoch FROM clock_timestamp() - NEW.recorded_at) * 1000);
				END IF;
				RETURN NULL;
			END $b$ $f$, k);
		EXECUTE format('CREATE TABLE ap.stmt_%s (stream_id text PRIMARY KEY, events bigint NOT NULL, total bigint NOT NULL, last_version bigint NOT NULL)', k);
		EXECUTE format($f$
			CREATE FUNCTION ap.stmt_%1$s() RETURNS trigger LANGUAGE plpgsql AS $b$
			BEGIN
				INSERT INTO ap.stmt_%1$s AS s
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
