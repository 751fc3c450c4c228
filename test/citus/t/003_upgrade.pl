# Copyright (c) es_ext contributors
#
# test/citus/t/003_upgrade.pl — upgrades on a Citus cluster (issue 16):
# es_ext 0.1.0 created on the coordinator (Citus propagates it), events
# appended, ALTER EXTENSION es_ext UPDATE (propagated: every node at 0.2.0),
# es.distribute() of the store that has events, appends continue each
# stream's version and chain; then a next release's upgrade script
# (test/citus/es_ext--0.2.0--0.2.1citustest.sql, installed by
# test/citus/run) on the distributed store: every shard of es.events and
# every placement of a reference table gets the new column.

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use EsCitus;

my ($coord, @workers) = EsCitus::cluster('upg', workers => 2, extension => 0);

# the version of es_ext on every node, in node order
sub versions
{
	return $_[0]->safe_psql(
		'postgres',
		q{SELECT string_agg(result, ',' ORDER BY nodeid) FROM run_command_on_all_nodes(
		  $$SELECT extversion FROM pg_extension WHERE extname = 'es_ext'$$)});
}


$coord->safe_psql('postgres', q{CREATE EXTENSION es_ext VERSION '0.1.0' CASCADE});
is(versions($coord),
	'0.1.0,0.1.0,0.1.0',
	'CREATE EXTENSION es_ext VERSION 0.1.0 reaches every node');

# events before the update, on the coordinator (a 0.1.0 store is local)
foreach my $i (1 .. 6)
{
	$coord->safe_psql('postgres',
		qq{SELECT es.es_append('upg-$i', 0, '[{"type": "Opened", "data": {"n": $i}}]')});
}

$coord->safe_psql('postgres', 'ALTER EXTENSION es_ext UPDATE');
is(versions($coord),
	'0.2.0,0.2.0,0.2.0',
	'ALTER EXTENSION es_ext UPDATE reaches every node');
is($coord->safe_psql('postgres', q{SELECT count(*) FROM es.es_verify_all()}),
	'0', 'the updated store verifies (hashes backfilled)');

$coord->safe_psql('postgres', q{SELECT es.distribute(4)});
is( $coord->safe_psql(
		'postgres',
		q{SELECT count(*) FROM pg_dist_partition WHERE logicalrelid = 'es.events'::regclass}),
	'1', 'the updated store with events is distributed');

# the streams go on where they were
foreach my $i (1 .. 6)
{
	$coord->safe_psql('postgres',
		qq{SELECT es.es_append('upg-$i', 1, '[{"type": "Noted", "data": {"n": $i}}]')});
}
is( $coord->safe_psql(
		'postgres',
		q{SELECT string_agg(stream_id || ':' || version, ',' ORDER BY stream_id, version)
		    FROM es.events WHERE stream_id LIKE 'upg-%'}),
	join(',', map { ("upg-$_:1", "upg-$_:2") } 1 .. 6),
	'appends after the distribution continue every stream');
is($coord->safe_psql('postgres', q{SELECT count(*) FROM es.es_verify_all()}),
	'0', 'every chain verifies across the distribution');
is($coord->safe_psql('postgres', q{SELECT count(*) FROM es.es_read_log()}),
	'12', 'es_read_log returns the events from before and after the distribution');
like(
	EsCitus::outcome($coord, q{SELECT es.es_append('upg-1', 1, '[{"type": "Late", "data": {}}]')}),
	qr/^40001/, 'a stale expected version is still a conflict');

# the next release's script on the distributed store
$coord->safe_psql('postgres', q{ALTER EXTENSION es_ext UPDATE TO '0.2.1citustest'});
is(versions($coord),
	'0.2.1citustest,0.2.1citustest,0.2.1citustest',
	'a later upgrade reaches every node');

# every shard of es.events, and every placement of es.upcasters, has the column
foreach my $w (@workers)
{
	my $missing = $w->safe_psql(
		'postgres', q{
		SET citus.override_table_visibility = off;
		SELECT count(*) FROM pg_class c
		 WHERE c.relnamespace = 'es'::regnamespace AND c.relkind = 'r'
		   AND (c.relname ~ '^events_[0-9]+$' OR c.relname ~ '^upcasters_[0-9]+$')
		   AND NOT EXISTS (SELECT FROM pg_attribute a WHERE a.attrelid = c.oid
		                    AND a.attname = 'citustest_col' AND NOT a.attisdropped)});
	is($missing, '0', 'no shard on ' . $w->name . ' lacks the column the upgrade added');
	my $shards = $w->safe_psql(
		'postgres', q{
		SET citus.override_table_visibility = off;
		SELECT count(*) FROM pg_class c
		 WHERE c.relnamespace = 'es'::regnamespace AND c.relkind = 'r' AND c.relname ~ '^events_[0-9]+$'});
	cmp_ok($shards, '>', 0, 'worker ' . $w->name . ' holds shards of es.events');
}
is($coord->safe_psql('postgres', q{SELECT es.es_citustest()}), '1',
	'the function the upgrade created works');

# the store still works after the later upgrade
$coord->safe_psql('postgres',
	q{SELECT es.es_append('upg-1', 2, '[{"type": "After", "data": {}}]')});
is($coord->safe_psql('postgres', q{SELECT es.es_stream_version('upg-1')}),
	'3', 'appends work after the later upgrade');
is($coord->safe_psql('postgres', q{SELECT count(*) FROM es.es_verify_all()}),
	'0', 'and every chain verifies');

# a rerun of the same DDL (the script is re-runnable): nothing changes
$coord->safe_psql('postgres', q{
	ALTER TABLE es.events ADD COLUMN IF NOT EXISTS citustest_col integer;
	ALTER TABLE es.upcasters ADD COLUMN IF NOT EXISTS citustest_col integer});
pass('the upgrade DDL runs again on the distributed tables');

done_testing();
