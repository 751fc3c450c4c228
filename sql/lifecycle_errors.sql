-- lifecycle_errors: every bad call of the lifecycle functions fails with its
-- SQLSTATE and changes nothing

CREATE ROLE regress_lce_admin IN ROLE es_admin;
CREATE ROLE regress_lce_eraser IN ROLE es_eraser;
CREATE ROLE regress_lce_reader IN ROLE es_reader;

SELECT (es.es_append('lce-1', 0, '[{"type":"a","data":{}},{"type":"b","data":{}},{"type":"c","data":{}}]')).version;
SELECT (es.es_append('lce-2', 0, '[{"type":"a","data":{}}]')).version;
SELECT es.es_archive_stream('lce-2');

-- everything the lifecycle functions write, as one digest
CREATE FUNCTION public.lce_state() RETURNS text LANGUAGE sql AS $$
	SELECT md5(concat_ws('|',
		(SELECT string_agg(concat_ws(',', stream_id, version, hash), ';' ORDER BY stream_id, version) FROM es.events),
		(SELECT string_agg(concat_ws(',', stream_id, version), ';' ORDER BY stream_id, version) FROM es.archived_events),
		(SELECT string_agg(concat_ws(',', stream_id, version, first_version, base_hash, archived_at, erased_at), ';' ORDER BY stream_id) FROM es.streams),
		(SELECT string_agg(concat_ws(',', stream_id, reason), ';' ORDER BY stream_id) FROM es.erasures),
		(SELECT string_agg(concat_ws(',', category, stream_id, max_age, max_count), ';' ORDER BY category, stream_id) FROM es.retention_policies)))
$$;
CREATE TEMP TABLE lce_before AS SELECT public.lce_state() AS s;
GRANT SELECT ON lce_before TO PUBLIC;
GRANT EXECUTE ON FUNCTION public.lce_state() TO PUBLIC;

-- es_archive_stream / es_unarchive_stream: null, empty, too long, unknown
SELECT try($$SELECT es.es_archive_stream(NULL)$$);
SELECT try($$SELECT es.es_archive_stream('')$$);
SELECT try($$SELECT es.es_archive_stream(repeat('x', 1025))$$);
SELECT try($$SELECT es.es_archive_stream('lce-nope')$$);
SELECT try($$SELECT es.es_unarchive_stream(NULL)$$);
SELECT try($$SELECT es.es_unarchive_stream('lce-nope')$$);
-- already archived, not archived
SELECT try($$SELECT es.es_archive_stream('lce-2')$$);
SELECT try($$SELECT es.es_unarchive_stream('lce-1')$$);

-- es_erase_stream: null stream, null or empty reason, unknown stream
SET ROLE regress_lce_eraser;
SELECT try($$SELECT es.es_erase_stream(NULL, 'r')$$);
SELECT try($$SELECT es.es_erase_stream('lce-1', NULL)$$);
SELECT try($$SELECT es.es_erase_stream('lce-1', '')$$);
SELECT try($$SELECT es.es_erase_stream('lce-nope', 'r')$$);
SELECT try($$SELECT es.es_erase_stream(repeat('x', 1025), 'r')$$);
RESET ROLE;
-- a reason over 1024 bytes (it is kept forever): 54000, and the stream is not erased
SET ROLE regress_lce_eraser;
SELECT try($$SELECT es.es_erase_stream('lce-1', repeat('r', 1025))$$);
RESET ROLE;
SELECT erased_at IS NULL AS not_erased FROM es.streams WHERE stream_id = 'lce-1';

-- es_set_retention: both or neither target, bad category, bad limits
SELECT try($$SELECT es.es_set_retention(NULL, NULL, '1 day', NULL)$$);
SELECT try($$SELECT es.es_set_retention('lce', 'lce-1', '1 day', NULL)$$);
SELECT try($$SELECT es.es_set_retention('lce-x', NULL, '1 day', NULL)$$);
SELECT try($$SELECT es.es_set_retention('', NULL, '1 day', NULL)$$);
SELECT try($$SELECT es.es_set_retention(NULL, repeat('x', 1025), NULL, 3)$$);
SELECT try($$SELECT es.es_set_retention('lce', NULL, '0', NULL)$$);
SELECT try($$SELECT es.es_set_retention('lce', NULL, '-1 day', NULL)$$);
SELECT try($$SELECT es.es_set_retention('lce', NULL, NULL, 0)$$);
SELECT try($$SELECT es.es_set_retention('lce', NULL, NULL, -5)$$);
-- removing a policy that does not exist is not an error
SELECT try($$SELECT es.es_set_retention('lce', NULL, NULL, NULL)$$);

-- es_apply_retention: null or out of range batch
SELECT try($$SELECT es.es_apply_retention(NULL)$$);
SELECT try($$SELECT es.es_apply_retention(0)$$);
SELECT try($$SELECT es.es_apply_retention(-1)$$);
SELECT try($$SELECT es.es_apply_retention(1000001)$$);

-- privileges: readers and admins call none of what they do not hold
SET ROLE regress_lce_reader;
SELECT try($$SELECT es.es_archive_stream('lce-1')$$);
SELECT try($$SELECT es.es_unarchive_stream('lce-2')$$);
SELECT try($$SELECT es.es_erase_stream('lce-1', 'r')$$);
SELECT try($$SELECT es.es_set_retention('lce', NULL, NULL, 1)$$);
SELECT try($$SELECT es.es_apply_retention()$$);
RESET ROLE;
SET ROLE regress_lce_admin;
SELECT try($$SELECT es.es_erase_stream('lce-1', 'r')$$);
SELECT try($$TRUNCATE es.archived_events$$);
SELECT try($$UPDATE es.archived_events SET data = '{}'$$);
SELECT try($$UPDATE es.streams SET first_version = 2 WHERE stream_id = 'lce-1'$$);
RESET ROLE;
-- es_eraser holds no more than it needs: no archive, no retention, no TRUNCATE
SET ROLE regress_lce_eraser;
SELECT try($$SELECT es.es_archive_stream('lce-1')$$);
SELECT try($$SELECT es.es_set_retention('lce', NULL, NULL, 1)$$);
SELECT try($$DELETE FROM es.snapshots$$);
SELECT try($$TRUNCATE es.events$$);
RESET ROLE;

-- in a read-only transaction
BEGIN READ ONLY;
SELECT try($$SELECT es.es_archive_stream('lce-1')$$);
SELECT try($$SELECT es.es_apply_retention()$$);
ROLLBACK;

-- nothing changed
SELECT public.lce_state() = (SELECT s FROM lce_before) AS unchanged;

DROP FUNCTION public.lce_state();
DROP OWNED BY regress_lce_admin, regress_lce_eraser, regress_lce_reader;
DROP ROLE regress_lce_admin, regress_lce_eraser, regress_lce_reader;
