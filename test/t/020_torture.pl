
# Copyright (c) es_ext contributors
#
# test/t/020_torture.pl
#
# Concurrency torture.  Ten pgbench clients append for a fixed time to 4 hot
# and 200 cold streams (plus new ones), with exact, stale, "any", "must not
# exist" and "must exist" expected versions, idempotent retries, multi-stream
# transactions, transactions rolled back on purpose, savepoints rolled back
# and released, commits delayed by sleeps, transactions that take their xid
# early, under READ COMMITTED, REPEATABLE READ and SERIALIZABLE (scripts in
# EsTorture.pm).  Meanwhile, in this process: a subscriber follows the whole
# global log with es_read_all and its cursor, another follows one category,
# folds of a hot stream are probed, two outbox consumer groups claim and ack
# (one of them nacks and abandons leases at random), and a projection is
# rebuilt while the appends go on.
#
# At the end: every committed event was seen by each subscriber exactly
# once, in version order per stream, and no aborted one ever; every stream's
# versions are 1..N and es.streams agrees; every successful append is in the
# store in full, at the versions and positions it returned, and every failed
# one wrote nothing; every error of es_append was 40001 with constraint
# es_expected_version (or, under SERIALIZABLE, an SSI failure); the
# projections equal the events and a rebuild; folds agree; the outbox
# delivered each committed event exactly once per group, in order.

use strict;
use warnings;

use FindBin;
use lib $FindBin::RealBin;

use EsTorture;
use IPC::Run;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);

my $seconds = $ENV{ES_TORTURE_SECONDS} // 20;
my $clients = 10;

my $node = PostgreSQL::Test::Cluster->new('es_torture');
$node->init;
$node->append_conf(
	'postgresql.conf', qq{
max_connections = 50
log_statement = none
log_min_duration_statement = -1
es.snapshot_every = 25
});
$node->start;
$node->safe_psql('postgres', 'CREATE EXTENSION es_ext');
EsTorture::setup($node);

my $has_fold = EsTorture::has_fold($node);
my $has_outbox = EsTorture::has_outbox($node);
note "es_fold: " . ($has_fold ? 'checked' : 'absent') . "; outbox: "
  . ($has_outbox ? 'checked' : 'absent');

my $sub = EsTorture::Subscriber->new($node);
my $hot_sub = EsTorture::Subscriber->new($node, category => 'hot', page => 200);
my @consumers;
if ($has_outbox)
{
	push @consumers, EsTorture::Consumer->new($node, 'tg1');
	push @consumers, EsTorture::Consumer->new($node, 'tg2', flaky => 1);
}
my $probe = EsTorture::Session->new($node);

my $t0 = time;
my $bench = EsTorture::start_pgbench($node,
	[ "--client=$clients", '--jobs=2', "--time=$seconds", '--max-tries=20' ],
	'torture');

my ($rebuild, $rebuild_out, $rebuild_err) = (undef, '', '');
my ($polls, $fold_probes, @fold_problems) = (0, 0);
while (EsTorture::pgbench_running($bench))
{
	my $n = $sub->poll + $hot_sub->poll;
	$n += $_->poll for @consumers;
	$polls++;

	# halfway: rebuild the row projection while the appends go on
	if (!$rebuild && time - $t0 > $seconds / 2)
	{
		note sprintf('rebuild starts at %.1fs; %d events read, %s', time - $t0, $sub->{rows},
			join(', ', map { "$_->{group}: $_->{acks} acked" } @consumers));
		$rebuild = IPC::Run::start(
			[
				'psql', '-XAtq', '-v', 'ON_ERROR_STOP=1', '-d', $node->connstr('postgres'), '-c',
				"CALL es.es_rebuild_projection('torture_stream', 'TRUNCATE torture.proj_stream', 200)"
			],
			'>', \$rebuild_out, '2>', \$rebuild_err);
	}
	if ($has_fold && $polls % 5 == 0)
	{
		my $p = EsTorture::fold_probe($probe, 'hot-' . (1 + $polls % $EsTorture::HOT));
		push @fold_problems, $p if $p ne '' && @fold_problems < 10;
		$fold_probes++;
	}
	usleep(20_000) if $n == 0;
}
my ($status, $out, $err) = EsTorture::finish_pgbench($bench);
my $load_time = time - $t0;
my ($tx, $failed, $retried, $tps) = EsTorture::pgbench_summary($out);
note "pgbench output:\n$out";
note "pgbench: $tx transactions in ${seconds}s ($tps tps), $retried retried, $failed failed after 20 tries";
is($status, 0, 'pgbench ran to the end (no client aborted)')
  or diag "pgbench stdout:\n$out\nstderr:\n$err";
cmp_ok($tx, '>', 500, 'the load ran a few hundred transactions at least');

$rebuild->finish;
note sprintf('rebuild started and finished before %.1fs', time - $t0);
is($? >> 8, 0, 'a projection rebuild ran to the end during the load')
  or diag $rebuild_err;

# the subscribers catch up with the end of the log (nothing is appending)
my $total = $node->safe_psql('postgres', 'SELECT count(*) FROM es.events');
my $deadline = time + 60;
while (time < $deadline)
{
	my $n = $sub->poll + $hot_sub->poll;
	last if $n == 0 && $sub->{rows} >= $total;
	usleep(50_000) if $n == 0;
}
note sprintf('subscribers caught up after %.1fs', time - $t0);
EsTorture::drain_consumers(\@consumers, $node) if $has_outbox;
note sprintf('consumers drained after %.1fs', time - $t0);

my $appends = $node->safe_psql('postgres', 'SELECT count(*) FROM torture.append_log');
my $conflicts = $node->safe_psql('postgres',
	"SELECT count(*) FROM torture.conflict_log WHERE constraint_name = 'es_expected_version'");
note sprintf(
	"load held: %d clients, %.0fs, %d transactions, %d appends, %d events in %d streams, %d version conflicts; "
	  . "subscriber: %d reads, %d events",
	$clients, $load_time, $tx, $appends, $total,
	$node->safe_psql('postgres', 'SELECT count(*) FROM es.streams'),
	$conflicts, $sub->{reads}, $sub->{rows});

EsTorture::check_store($node, 'torture');
EsTorture::check_appends($node, 'torture');
EsTorture::check_conflicts($node, 'torture');
EsTorture::check_subscriber($node, $sub, 'torture');
EsTorture::check_subscriber($node, $hot_sub, 'torture');

is( $node->safe_psql(
		'postgres', q{
	SELECT count(*)
	  FROM (SELECT DISTINCT tag FROM torture.append_log ORDER BY tag LIMIT 200) AS l
	 WHERE (SELECT count(*) FROM es.es_events_by_correlation(l.tag)) <> 1}),
	'0',
	'torture: es_events_by_correlation finds the tagged first event of each append');

EsTorture::check_projections($node, 'torture');

SKIP:
{
	skip 'es_fold is not installed', 3 unless $has_fold;
	is(join("\n", @fold_problems), '',
		"torture: $fold_probes folds under load each saw a whole prefix of the stream");
	EsTorture::check_folds($node, 'torture');
}

SKIP:
{
	skip 'the outbox is not installed', 6 unless $has_outbox;
	EsTorture::check_consumers($node, \@consumers, 'torture');
}

$_->{session}->quit for ($sub, $hot_sub, @consumers);
$probe->quit;
EsTorture::check_log($node, 'torture');
$node->stop;
done_testing();
