-- outbox_errors: every error of the outbox functions, with its SQLSTATE:
-- es_outbox_route, es_outbox_create_group and es_outbox_drop_group, and
-- the consumer functions (claim, ack, nack, replay, discard, cleanup).
-- Elsewhere: direct writes to es.outbox in outbox_routes, dropping a
-- dropped group in outbox_groups, the es.notify settings in outbox_notify,
-- the privilege errors in outbox_privileges.

-- (setup) the group regress_g1, which exists in the cases below
SELECT es.es_outbox_create_group('regress_g1') > 0 AS created;

-- route errors
SELECT try($$SELECT es.es_outbox_route('')$$);
SELECT try($$SELECT es.es_outbox_route('obz', '')$$);
SELECT try($$SELECT es.es_outbox_route(repeat('x', 1025))$$);

-- group errors
SELECT try($$SELECT es.es_outbox_create_group('regress_g1')$$);
SELECT try($$SELECT es.es_outbox_create_group(NULL)$$);
SELECT try($$SELECT es.es_outbox_create_group('regress_gx', max_attempts => NULL)$$);
SELECT try($$SELECT es.es_outbox_create_group('')$$);
SELECT try($$SELECT es.es_outbox_create_group(repeat('g', 64))$$);
SELECT try($$SELECT es.es_outbox_create_group('regress_gx', max_attempts => 0)$$);
SELECT try($$SELECT es.es_outbox_create_group('regress_gx', backoff_base => '0')$$);
SELECT try($$SELECT es.es_outbox_create_group('regress_gx', backoff_base => '1 minute', backoff_max => '1 second')$$);
SELECT try($$SELECT es.es_outbox_drop_group('regress_gx')$$);
SELECT try($$SELECT es.es_outbox_drop_group(NULL)$$);

-- errors of the consumer functions
SELECT try($$SELECT * FROM es.es_outbox_claim(NULL)$$);
SELECT try($$SELECT * FROM es.es_outbox_claim('regress_g1', NULL)$$);
SELECT try($$SELECT * FROM es.es_outbox_claim('regress_nope')$$);
SELECT try($$SELECT * FROM es.es_outbox_claim('regress_g1', 0)$$);
SELECT try($$SELECT * FROM es.es_outbox_claim('regress_g1', 10001)$$);
SELECT try($$SELECT * FROM es.es_outbox_claim('regress_g1', 10, '0')$$);
SELECT try($$SELECT es.es_outbox_ack('regress_g1', NULL, '{1}')$$);
SELECT try($$SELECT es.es_outbox_ack('regress_g1', gen_random_uuid(), NULL)$$);
SELECT try($$SELECT es.es_outbox_ack('regress_nope', gen_random_uuid(), '{1}')$$);
SELECT try($$SELECT es.es_outbox_nack('regress_g1', gen_random_uuid(), NULL)$$);
SELECT try($$SELECT es.es_outbox_nack('regress_g1', gen_random_uuid(), '{1}', 'x', '-1 second')$$);
SELECT try($$SELECT es.es_outbox_nack('regress_nope', gen_random_uuid(), '{1}')$$);
SELECT try($$SELECT es.es_outbox_replay(NULL)$$);
SELECT try($$SELECT es.es_outbox_replay('regress_nope')$$);
SELECT try($$SELECT es.es_outbox_discard(NULL)$$);
SELECT try($$SELECT es.es_outbox_discard('regress_nope')$$);
SELECT try($$SELECT es.es_outbox_cleanup(NULL)$$);
SELECT try($$SELECT es.es_outbox_cleanup('-1 second')$$);
SELECT try($$SELECT es.es_outbox_cleanup('0', 0)$$);

-- clean up: nothing of this file is left behind
SELECT es.es_outbox_drop_group('regress_g1') >= 0 AS dropped;
SELECT count(*) AS routes_left FROM es.outbox_routes WHERE category LIKE 'ob%';
