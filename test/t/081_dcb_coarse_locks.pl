
# Copyright (c) es_ext contributors
#
# test/t/081_dcb_coarse_locks.pl
#
# Conditional appends of large batches (more than ES_DCB_FINE_KEYS keys:
# their writer keys become SHARE locks on coarse buckets) running
# concurrently.  Each append also takes ROW EXCLUSIVE on the bucket of its
# condition key; when that bucket is one of its own writer buckets (always,
# when the batch carries the condition's tag), taking SHARE and then ROW
# EXCLUSIVE deadlocked two such appends (each held SHARE, each waited for
# ROW EXCLUSIVE): about 5% of the transactions died with 40P01 although
# their conditions were disjoint.  One SHARE ROW EXCLUSIVE lock per bucket
# serializes them instead.  Then the same with conditions on the batches'
# own course tags and a cap of 100 events per course: every course ends at
# exactly 100, never above.

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('es_dcb_coarse');
$node->init;
$node->append_conf(
	'postgresql.conf', q{
max_connections = 30
autovacuum = off
deadlock_timeout = 50ms
});
$node->start;
$node->safe_psql('postgres', 'CREATE EXTENSION es_ext');
$node->safe_psql('postgres',
	q{SELECT es.es_append('seed-1', NULL, '[{"type": "Seed", "data": 1}]')});

my $log_offset = -s $node->logfile;

# disjoint conditions (tags nobody writes), 22 writer keys per batch
$node->pgbench(
	'-n -c 8 -j 2 -t 40',
	0,
	[qr{processed: 320/320}],
	[qr{^$}],
	'concurrent coarse conditional appends with disjoint conditions all commit',
	{
		'081_disjoint' => q{
\set c random(1, 2)
SELECT es.es_append('co-' || :client_id || '-' || md5(random()::text), NULL,
	(SELECT jsonb_agg(jsonb_build_object('type', 'CoEnrolled', 'data', i,
										 'tags', jsonb_build_array('co:course:' || :c, 'co:s:' || i || md5(random()::text))))
	   FROM generate_series(1, 20) AS i),
	jsonb_build_array(jsonb_build_object('tags', jsonb_build_array('co:course:' || :c || ':never'))));
}
	});
ok(!$node->log_contains(qr/deadlock detected/, $log_offset),
	'no deadlock between the coarse appends');

# conditions on the batches' own course tag, at most 100 events per course
$node->pgbench(
	'-n -c 8 -j 2 -t 30 --max-tries=1000',
	0,
	[qr{processed: 240/240}],
	[qr{^$}],
	'capped coarse conditional appends',
	{
		'081_capped' => q{
\set c random(1, 3)
SELECT coalesce(es.max(log_cursor)::text, '') AS cur, count(*) AS n
  FROM es.es_read_query(jsonb_build_array(jsonb_build_object('tags', jsonb_build_array('cap:course:' || :c)))) \gset
\if :n < 100
SELECT es.es_append('cap-' || :client_id || '-' || md5(random()::text), NULL,
	(SELECT jsonb_agg(jsonb_build_object('type', 'CapEnrolled', 'data', i,
										 'tags', jsonb_build_array('cap:course:' || :c, 'cap:s:' || i || md5(random()::text))))
	   FROM generate_series(1, 20) AS i),
	jsonb_build_array(jsonb_build_object('tags', jsonb_build_array('cap:course:' || :c))),
	NULLIF(':cur', '')::es.log_cursor);
\endif
}
	});
is( $node->safe_psql(
		'postgres', q{
	SELECT string_agg(t || '=' || n, ',' ORDER BY t)
	  FROM (SELECT t, count(*) AS n FROM es.events, unnest(tags) AS t
			 WHERE t LIKE 'cap:course:%' GROUP BY t) AS c}),
	'cap:course:1=100,cap:course:2=100,cap:course:3=100',
	'every course holds exactly 100 events');
ok(!$node->log_contains(qr/deadlock detected/, $log_offset),
	'still no deadlock');

$node->stop;
done_testing();
