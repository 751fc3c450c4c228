# Copyright (c) es_ext contributors
#
# test/citus/t/004_null_stream.pl — bad input to the delegated functions on
# a distributed store.  Citus 13.2.2 crashes the coordinator (SIGSEGV,
# hashing a null datum in its function delegation) when a distributed
# function is called with a NULL distribution argument; es_ext's planner
# hook (src/citus.c) refuses such a call before Citus routes it, with the
# function's own error, whatever form the NULL takes (a constant, an
# expression folded to NULL, a named argument, a bound parameter, a CTE or
# subquery that the planner pulls up).  The coordinator never restarts.

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use EsCitus;

my ($coord, @workers) = EsCitus::cluster('nul', workers => 2, shard_count => 4);

my $started = $coord->safe_psql('postgres', 'SELECT pg_postmaster_start_time()');
$coord->safe_psql('postgres',
	q{SELECT es.es_append('nul-1', 0, '[{"type": "Opened", "data": {}}]')});
$coord->safe_psql('postgres',
	q{CREATE FUNCTION public.n(s jsonb, e jsonb) RETURNS jsonb LANGUAGE sql IMMUTABLE
	  AS $$ SELECT jsonb_build_object('n', coalesce((s->>'n')::int, 0) + 1) $$});

my @null_calls = (
	q{SELECT es.es_append(NULL, 0, '[{"type": "A", "data": {}}]')},
	q{SELECT es.es_append(NULL::text, NULL, '[{"type": "A", "data": {}}]')},
	q{SELECT es.es_append(NULLIF('a', 'a'), 0, '[{"type": "A", "data": {}}]')},
	q{SELECT es.es_append(CASE WHEN false THEN 'x' END, 0, '[{"type": "A", "data": {}}]')},
	q{SELECT es.es_append(lower(NULL), 0, '[{"type": "A", "data": {}}]')},
	q{SELECT es.es_append(events => '[{"type": "A", "data": {}}]', expected_version => 0, stream => NULL)},
	q{SELECT (es.es_append(NULL, 0, '[{"type": "A", "data": {}}]')).version},
	q{WITH s AS (SELECT NULL::text AS x) SELECT es.es_append(x, 0, '[{"type": "A", "data": {}}]') FROM s},
	q{SELECT es.es_append((SELECT NULL::text), 0, '[{"type": "A", "data": {}}]')},
	q{BEGIN; SELECT es.es_append(NULL, 0, '[{"type": "A", "data": {}}]'); COMMIT},
	q{SELECT es.es_read_stream(NULL)},
	q{SELECT * FROM es.es_read_stream(NULL, 1)},
	q{SELECT * FROM (SELECT NULL::text AS x) AS s, LATERAL es.es_read_stream(s.x) AS r},
	q{SELECT es.es_read_stream(stream => NULL)},
	q{SELECT es.es_stream_version(NULL)},
	q{SELECT es.es_fold(NULL, 'public.n(jsonb,jsonb)', '{}')},
	q{SELECT es.es_fold_state(NULLIF('a', 'a'), 'public.n(jsonb,jsonb)', '{}')},
	q{SELECT es.es_snapshot_save(NULL, 'public.n(jsonb,jsonb)', '{}')},
	q{SELECT * FROM es.es_verify(NULL)},
	q{PREPARE p(text) AS SELECT es.es_append($1, NULL, '[{"type": "A", "data": {}}]');
	  EXECUTE p('nul-2'); EXECUTE p('nul-3'); EXECUTE p('nul-4'); EXECUTE p('nul-5');
	  EXECUTE p('nul-6'); EXECUTE p('nul-7'); EXECUTE p(NULL)},);
foreach my $sql (@null_calls)
{
	like(EsCitus::outcome($coord, $sql), qr/^22004: stream id cannot be null/,
		"22004, no crash: $sql");
}
like(EsCitus::outcome($coord, q{SELECT es.es_snapshot_delete(NULL)}),
	qr/^0A000: es_snapshot_delete\(\) of every stream is not supported/,
	'es_snapshot_delete(NULL): 0A000, no crash');

is($coord->safe_psql('postgres', 'SELECT pg_postmaster_start_time()'),
	$started, 'the coordinator never restarted');
is( $coord->safe_psql(
		'postgres', q{SELECT string_agg(stream_id || ':' || version, ',' ORDER BY stream_id)
		                FROM es.events}),
	'nul-1:1,nul-2:1,nul-3:1,nul-4:1,nul-5:1,nul-6:1,nul-7:1',
	'nothing but the valid appends was written');

# a stream computed by the query is not delegated (it could fold to NULL
# only after planning): an append refuses (0A000), a read still works
like(
	EsCitus::outcome(
		$coord,
		q{WITH s AS (SELECT 'nul-1'::text AS x) SELECT es.es_append(x, NULL, '[{"type": "A", "data": {}}]') FROM s}),
	qr/^0A000: es_append\(\) must run on the node that holds stream "nul-1"/,
	'an append whose stream comes from a CTE: 0A000');
is( $coord->safe_psql(
		'postgres',
		q{SELECT count(*) FROM (VALUES ('nul-1'), ('nul-2')) AS v(s), LATERAL es.es_read_stream(v.s) AS r}),
	'2', 'reads of streams from a VALUES list work');
is($coord->safe_psql('postgres', q{SELECT es.es_stream_version(s) IS NULL FROM (SELECT NULL::text AS s) AS x}),
	't', 'a strict read of a NULL stream from a subquery is NULL, as on one node');
is($coord->safe_psql('postgres', 'SELECT pg_postmaster_start_time()'),
	$started, 'the coordinator still never restarted');

done_testing();
