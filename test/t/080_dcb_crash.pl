
# Copyright (c) es_ext contributors
#
# test/t/080_dcb_crash.pl
#
# Crashes around conditional appends (issue 17).  A backend killed with
# SIGKILL while it holds a condition's keys, with a second conditional
# append waiting for them: the postmaster restarts, nothing of either is
# left, and the keys are free (the next conditional append on the tag
# commits).  A prepared transaction that holds a condition's keys keeps them
# across an immediate shutdown (the locks are in its two-phase state): a
# condition on its tag still waits for it, then sees its event.

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('es_dcb_crash');
$node->init;
$node->append_conf(
	'postgresql.conf', q{
max_connections = 20
max_prepared_transactions = 5
autovacuum = off
restart_after_crash = on
});
$node->start;
$node->safe_psql('postgres', 'CREATE EXTENSION es_ext');
# the database's first append (its era) outside the races below
$node->safe_psql('postgres',
	q{SELECT es.es_append('seed-1', NULL, '[{"type": "Seed", "data": 1}]')});

sub cond_append
{
	my ($stream, $tag) = @_;
	return qq{SELECT (es.es_append('$stream', NULL,
		'[{"type": "Enrolled", "data": 1, "tags": ["$tag"]}, {"type": "Enrolled", "data": 2, "tags": ["$tag", "x"]}]',
		'[{"tags": ["$tag"]}]')).version};
}

# 1. SIGKILL while holding the keys, another conditional append waiting
my $holder = $node->background_psql('postgres', on_error_stop => 0);
$holder->query_until(qr/held/, "BEGIN;\n" . cond_append('holder-1', 'course:c1') . ";\n\\echo held\nSELECT pg_sleep(600);\n");
$node->poll_query_until('postgres',
	"SELECT count(*) = 1 FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(600);' AND state = 'active'"
) or die 'the holder does not sleep';
my $pid = $node->safe_psql('postgres',
	"SELECT pid FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(600);' AND state = 'active'");
is( $node->safe_psql(
		'postgres',
		"SELECT count(*) FROM pg_locks WHERE pid = $pid AND locktype = 'advisory' AND mode = 'ExclusiveLock' AND objsubid = 101"
	),
	'1',
	'the holder has the EXCLUSIVE key of its condition');

my $waiter = $node->background_psql('postgres', on_error_stop => 0);
$waiter->query_until(qr/waiting/, "\\echo waiting\n" . cond_append('waiter-1', 'course:c1') . ";\n");
$node->poll_query_until('postgres',
	"SELECT count(*) = 1 FROM pg_locks WHERE locktype = 'advisory' AND NOT granted")
  or die 'the waiter does not wait for the key';
pass('the second conditional append waits for the holder');

my $log_offset = -s $node->logfile;
kill 'KILL', $pid or die "could not kill backend $pid: $!";
$node->wait_for_log(qr/all server processes terminated; reinitializing/, $log_offset);
$node->poll_query_until('postgres', 'SELECT true')
  or die 'the server does not come back after the crash';
eval { $holder->quit; };
eval { $waiter->quit; };

is( $node->safe_psql(
		'postgres', q{
	SELECT (SELECT count(*) FROM es.events WHERE stream_id IN ('holder-1', 'waiter-1')),
		   (SELECT count(*) FROM es.streams WHERE stream_id IN ('holder-1', 'waiter-1')),
		   (SELECT count(*) FROM es.es_read_query('[{"tags": ["course:c1"]}]')),
		   (SELECT count(*) FROM pg_locks WHERE locktype = 'advisory')}),
	'0|0|0|0',
	'after the crash: no event, no stream, no key of either append');
is($node->safe_psql('postgres', cond_append('after-1', 'course:c1')),
	'2', 'a conditional append on the tag commits after the crash');
my ($rc, $out, $err) = $node->psql('postgres', cond_append('after-2', 'course:c1'));
like($err, qr/append condition failed for stream "after-2"/,
	'and the next one sees its events: conflict');

# 2. a prepared transaction keeps its keys across an immediate shutdown
$node->safe_psql('postgres',
	"BEGIN;\n" . cond_append('prep-1', 'seat:s1') . ";\nPREPARE TRANSACTION 'dcb_prep';");
$node->stop('immediate');
$node->start;
is( $node->safe_psql(
		'postgres',
		"SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND mode = 'ExclusiveLock' AND objsubid = 101 AND virtualtransaction LIKE '-1/%'"
	),
	'1',
	'after recovery the prepared transaction holds its condition key');
($rc, $out, $err) = $node->psql('postgres',
	"SET lock_timeout = '200ms';\n" . cond_append('prep-2', 'seat:s1'));
like($err, qr/lock timeout/, 'a condition on its tag waits for it');
$node->safe_psql('postgres', "COMMIT PREPARED 'dcb_prep'");
($rc, $out, $err) = $node->psql('postgres', cond_append('prep-2', 'seat:s1'));
like($err, qr/append condition failed for stream "prep-2"/,
	'after COMMIT PREPARED it sees the prepared event: conflict');
is( $node->safe_psql(
		'postgres',
		q{SELECT string_agg(stream_id, ',' ORDER BY global_position) FROM es.es_read_query('[{"tags": ["seat:s1"]}]')}),
	'prep-1,prep-1',
	'only the prepared transaction\'s events carry the tag');

$node->stop;
done_testing();
