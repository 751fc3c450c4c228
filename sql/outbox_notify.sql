-- outbox_notify: how es_append wakes the outbox consumers, per es.notify:
-- pg_regress runs without shared_preload_libraries, so the default is
-- "commit", and "worker" falls back to it (with one WARNING); "off"; the
-- notify status; the errors of the settings.

-- (setup) a route and a group: an append that writes a delivery asks for a
-- wake-up
SELECT es.es_outbox_route('obq');
SELECT es.es_outbox_create_group('regress_g1') > 0 AS created;

-- the default: "commit", no worker
SHOW es.notify;
SELECT setting, mode, preloaded, worker_pid, wakeups_requested FROM es.es_outbox_notify_status();

-- "worker" without shared_preload_libraries: "commit" in effect, and one
-- WARNING, at the first append that asks for a wake-up
SET es.notify = worker;
SELECT setting, mode, preloaded FROM es.es_outbox_notify_status();
SELECT version FROM es.es_append('obq-6', 0, '[{"type": "F1", "data": {}}]');
SELECT version FROM es.es_append('obq-6', 1, '[{"type": "F2", "data": {}}]');

-- "off"
SET es.notify = off;
SELECT setting, mode FROM es.es_outbox_notify_status();
RESET es.notify;

-- a value that is not a mode is refused; the worker's idle timeout is set
-- at server start
SELECT try($$SET es.notify = 'sometimes'$$);
SELECT try($$SET es.notify_worker_idle_timeout = '1s'$$);
SHOW es.notify_worker_idle_timeout;

-- clean up: no group, no route of this file is left behind
SELECT es.es_outbox_drop_group('regress_g1') >= 0 AS dropped;
SELECT es.es_outbox_unroute('obq');
SELECT count(*) AS routes_left FROM es.outbox_routes WHERE category LIKE 'ob%';
SELECT es.es_outbox_cleanup() >= 0 AS cleaned;
