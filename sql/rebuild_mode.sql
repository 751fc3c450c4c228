-- rebuild_mode: rebuilds that change a projection from inline to
-- asynchronous and back, in place and in a shadow of its read model, and
-- rebuilds of asynchronous projections: no event lost or applied twice, and
-- the mode, the trigger and the checkpoint change with the read model.
-- (Concurrent appends and readers during a switch: test/t/061_rebuild_shadow.pl.)

\set SHOW_CONTEXT never
SET client_min_messages = warning;

CREATE SCHEMA rmo_read;
CREATE TABLE rmo_read.seen (global_position bigint NOT NULL, stream_id text NOT NULL);
CREATE FUNCTION public.rmo_on(e es.events) RETURNS void LANGUAGE sql
	AS $$ INSERT INTO rmo_read.seen VALUES (e.global_position, e.stream_id) $$;
-- applied / events of the category, and how many were applied more than once
CREATE FUNCTION public.rmo_exact() RETURNS text LANGUAGE sql AS $$
	SELECT pg_catalog.format('%s/%s applied, %s twice',
		(SELECT count(*) FROM rmo_read.seen),
		(SELECT count(*) FROM es.events WHERE category = 'rmo'),
		(SELECT count(*) FROM (SELECT global_position FROM rmo_read.seen GROUP BY 1 HAVING count(*) > 1) AS d))
$$;
CREATE FUNCTION public.rmo_append(n int) RETURNS void LANGUAGE sql AS $$
	SELECT NULL::void FROM es.es_append('rmo-' || (n % 3), NULL,
		jsonb_build_array(jsonb_build_object('type', 'T', 'data', jsonb_build_object('n', n))))
$$;
CREATE FUNCTION public.rmo_mode() RETURNS text LANGUAGE sql AS $$
	SELECT pg_catalog.format('%s %s, trigger %s, checkpoint %s', p.mode, p.state, t.tgenabled,
		CASE WHEN a.checkpoint IS NULL THEN 'none'
			 WHEN a.checkpoint = (SELECT ROW(era, tx_id, global_position)::es.log_cursor FROM es.events
								   ORDER BY era DESC, tx_id DESC, global_position DESC LIMIT 1) THEN 'at the head'
			 ELSE 'behind' END)
	  FROM es.projections AS p
	  JOIN pg_trigger AS t ON t.tgname = p.projection
	  LEFT JOIN es.async_projections AS a ON a.projection = p.projection
	 WHERE p.projection = 'rmo_p'
$$;
CREATE TRIGGER rmo_p AFTER INSERT ON es.events
	FOR EACH ROW WHEN (NEW.category = 'rmo') EXECUTE FUNCTION es.es_project('public.rmo_on');
SELECT count(rmo_append(i)) FROM generate_series(1, 20) AS i;
SELECT rmo_mode(), rmo_exact();

-- 1. inline -> asynchronous, in place: reset, then applied from the start
CALL es.es_rebuild_projection('rmo_p', 'TRUNCATE rmo_read.seen', batch_size => 7, mode => 'async');
SELECT rmo_mode(), rmo_exact();
SELECT count(rmo_append(i)) FROM generate_series(21, 25) AS i;
SELECT rmo_exact() AS appended_not_applied;
CALL es.es_run_projections('rmo_p');
SELECT rmo_exact();
SELECT state, mode FROM es.projection_status WHERE projection = 'rmo_p';

-- 2. asynchronous, in place (the mode stays)
CALL es.es_rebuild_projection('rmo_p', 'TRUNCATE rmo_read.seen', batch_size => 7);
SELECT rmo_mode(), rmo_exact();

-- 3. asynchronous, in a shadow: the events appended meanwhile wait for the
-- worker; the shadow catches up below the horizon and takes over with its
-- own checkpoint (appenders are not held off)
SELECT count(rmo_append(i)) FROM generate_series(26, 30) AS i;
SELECT rmo_exact() AS backlog;
CALL es.es_rebuild_projection('rmo_p', read_model => 'rmo_read', batch_size => 7);
SELECT rmo_mode(), rmo_exact();
SELECT to_regnamespace('es_shadow_rmo_p') IS NULL AS shadow_gone;
SELECT count(rmo_append(i)) FROM generate_series(31, 33) AS i;
CALL es.es_run_projections('rmo_p');
SELECT rmo_exact();

-- 4. asynchronous -> inline, in a shadow: the trigger is enabled at the switch
CALL es.es_rebuild_projection('rmo_p', read_model => 'rmo_read', batch_size => 7, mode => 'inline');
SELECT rmo_mode(), rmo_exact();
SELECT count(rmo_append(i)) FROM generate_series(34, 35) AS i;
SELECT rmo_exact() AS applied_inline;

-- 5. inline -> asynchronous, in a shadow: the checkpoint is the head of the log
CALL es.es_rebuild_projection('rmo_p', read_model => 'rmo_read', batch_size => 7, mode => 'async');
SELECT rmo_mode(), rmo_exact();
SELECT owner = current_user::regrole AS mine, batch_size, on_error, categories FROM es.async_projections WHERE projection = 'rmo_p';
SELECT count(rmo_append(i)) FROM generate_series(36, 38) AS i;
CALL es.es_run_projections('rmo_p');
SELECT rmo_exact();

-- 6. asynchronous -> inline, in place
SELECT count(rmo_append(i)) FROM generate_series(39, 40) AS i;
CALL es.es_rebuild_projection('rmo_p', 'TRUNCATE rmo_read.seen', batch_size => 7, mode => 'inline');
SELECT rmo_mode(), rmo_exact();
SELECT count(rmo_append(i)) FROM generate_series(41, 42) AS i;
SELECT rmo_exact();

-- 7. an asynchronous projection with a filter cannot become inline
CALL es.es_rebuild_projection('rmo_p', 'TRUNCATE rmo_read.seen', mode => 'async');
SELECT es.es_drop_projection('rmo_p');
BEGIN;
CREATE TRIGGER rmo_p AFTER INSERT ON es.events FOR EACH ROW EXECUTE FUNCTION es.es_project('public.rmo_on');
SELECT es.es_create_async_projection('rmo_p', categories => '{rmo}');
COMMIT;
SELECT try($$CALL es.es_rebuild_projection('rmo_p', 'TRUNCATE rmo_read.seen', mode => 'inline')$$);
SELECT try($$CALL es.es_rebuild_projection('rmo_p', read_model => 'rmo_read', mode => 'inline')$$);
-- ... but it is rebuilt in a shadow with its filter
TRUNCATE rmo_read.seen;
CALL es.es_rebuild_projection('rmo_p', read_model => 'rmo_read', batch_size => 7);
SELECT rmo_mode(), rmo_exact();

SELECT es.es_drop_projection('rmo_p');
DROP SCHEMA rmo_read CASCADE;
DROP FUNCTION rmo_on(es.events), rmo_exact(), rmo_append(int), rmo_mode();
