
# Copyright (c) es_ext contributors
#
# test/t/021_crash_torture.pl
#
# Crash recovery under the torture load of 020_torture.pl (EsTorture.pm),
# with es_ext preloaded (the outbox wake-ups then come from its background
# worker, which must survive the crashes too).  A subscriber follows the
# global log and two outbox consumer groups claim and ack throughout; they
# keep their cursor and what they received across the crashes.
#
#  1. The load, then an immediate stop while it runs (a marker batch is
#     committed just before), and a restart: crash recovery.
#  2. kill -9 of a backend in the middle of a 2,000-event append: the batch
#     stops in a trigger on its last event, so 1,999 rows are already
#     inserted when the backend dies; the postmaster restarts the cluster.
#  3. kill -9, twice, of a random backend running an append under the load.
#  4. The load again for a few seconds, then everyone catches up.
#
# After each fault: no partial batch (every append recorded as committed is
# there in full, the killed batch is absent), nothing committed lost (every
# event the subscriber saw and every message a consumer acked is still
# there, no stream went back), the store's invariants hold.  At the end, the
# subscriber saw every committed event exactly once across the crashes, each
# consumer group got each committed event exactly once, and the projections
# and folds agree with the events.

use strict;
use warnings;

use FindBin;
use lib $FindBin::RealBin;

use EsTorture;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);

my $node = PostgreSQL::Test::Cluster->new('es_crash_torture');
$node->init;
$node->append_conf(
	'postgresql.conf', q{
max_connections = 50
shared_preload_libraries = 'es_ext'
restart_after_crash = on
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

# a trigger that stops an append on its event of type Stall
$node->safe_psql(
	'postgres', q{
CREATE FUNCTION torture.stall() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	PERFORM pg_sleep(600);
	RETURN NULL;
END $$;
CREATE TRIGGER torture_stall AFTER INSERT ON es.events
	FOR EACH ROW WHEN (NEW.event_type = 'Stall') EXECUTE FUNCTION torture.stall();
});

my $sub = EsTorture::Subscriber->new($node);
my @consumers;
if ($has_outbox)
{
	push @consumers, EsTorture::Consumer->new($node, 'tg1');
	push @consumers, EsTorture::Consumer->new($node, 'tg2', flaky => 1);
}
my @clients = ($sub, @consumers);
my ($faults, $kills) = (0, 0);
my $t_start = time;

# Poll the subscriber and the consumers for $seconds (or until $until
# returns true).
sub follow
{
	my ($seconds, $until) = @_;
	my $end = time + $seconds;
	while (time < $end)
	{
		my $n = 0;
		$n += $_->poll for @clients;
		last if $until && $until->();
		usleep(20_000) if $n == 0;
	}
	return;
}

# After a restart: new sessions for the subscriber and the consumers, which
# keep their cursor and what they received.
sub reconnect_clients
{
	for my $c (@clients)
	{
		$c->{session}->kill_session;
		$c->connect;
	}
	return;
}

# What was committed before a fault, to compare with after it.
sub committed_state
{
	return $node->safe_psql('postgres',
		"SELECT string_agg(stream_id || '=' || version, ',' ORDER BY stream_id) FROM es.streams"
	);
}

# The checks after each fault.
sub check_after_fault
{
	my ($label, $before) = @_;
	EsTorture::check_store($node, $label);
	EsTorture::check_appends($node, $label);

	is( $node->safe_psql(
			'postgres', qq{
		SELECT count(*)
		  FROM unnest(string_to_array('$before', ',')) AS b(entry)
		  LEFT JOIN es.streams AS s ON s.stream_id = split_part(b.entry, '=', 1)
		 WHERE s.version IS NULL OR s.version < split_part(b.entry, '=', 2)::bigint}),
		'0',
		"$label: no stream lost an append committed before the fault");

	# everything a client was given is still there
	my %store = map { $_ => 1 } split /\n/,
	  $node->safe_psql('postgres', 'SELECT event_id FROM es.events');
	for my $c (@clients)
	{
		my $got = $c->{seen} // $c->{acked};
		my @lost = grep { !$store{$_} } keys %$got;
		my $who = $c->{group} ? "group $c->{group}" : 'the subscriber';
		is(scalar(@lost), 0,
			"$label: each of the " . scalar(keys %$got) . " events $who received is still there");
	}
	return;
}

# ---------------------------------------------------------------------
# 1. The load, then an immediate stop
# ---------------------------------------------------------------------
my @bench_args = ('--client=8', '--jobs=2', '--time=120', '--max-tries=20');
my $bench = EsTorture::start_pgbench($node, \@bench_args, 'crash1');
follow(8);

is( $node->safe_psql(
		'postgres', q{
	SELECT (es.es_append('marker-1', 0,
			(SELECT jsonb_agg(jsonb_build_object('type', 'Marker', 'data', jsonb_build_object('i', i))
							  ORDER BY i)
			   FROM generate_series(1, 25) AS i))).version}),
	'25',
	'marker batch of 25 events committed under load');
my $before = committed_state();
my $events_before = $node->safe_psql('postgres', 'SELECT count(*) FROM es.events');

$node->stop('immediate');
$faults++;
my ($status) = EsTorture::finish_pgbench($bench);
note "pgbench lost its server (exit status $status) after $events_before events";
$node->start;
ok( $node->log_contains(
		qr/database system was not properly shut down; automatic recovery in progress/),
	'immediate stop: the restart ran crash recovery');
reconnect_clients();

check_after_fault('immediate stop', $before);
is( $node->safe_psql(
		'postgres', q{
	SELECT count(*), string_agg(version::text, ',' ORDER BY version)
		   = (SELECT string_agg(i::text, ',') FROM generate_series(1, 25) AS i),
		   bool_and((data->>'i')::bigint = version)
	  FROM es.events WHERE stream_id = 'marker-1'}),
	'25|t|t',
	'immediate stop: the marker batch committed before the stop is there in full, in order');

# ---------------------------------------------------------------------
# 2. kill -9 in the middle of a 2,000-event append
# ---------------------------------------------------------------------
$bench = EsTorture::start_pgbench($node, \@bench_args, 'crash2');
follow(2);
$before = committed_state();

my $big = $node->background_psql('postgres', on_error_stop => 0);
$big->query_until(
	qr/starting/, q{
\echo starting
SELECT es.es_append('big-1', 0,
	(SELECT jsonb_agg(jsonb_build_object('type', CASE WHEN i = 2000 THEN 'Stall' ELSE 'Big' END,
										 'data', jsonb_build_object('i', i)) ORDER BY i)
	   FROM generate_series(1, 2000) AS i));
});
$node->poll_query_until('postgres',
	"SELECT count(*) = 1 FROM pg_stat_activity WHERE query LIKE '%big-1%' AND wait_event = 'PgSleep'"
) or die 'the big append does not stall';
my $pid = $node->safe_psql('postgres',
	"SELECT pid FROM pg_stat_activity WHERE query LIKE '%big-1%' AND wait_event = 'PgSleep'");
my $offset = -s $node->logfile;
kill 'KILL', $pid or die "could not kill backend $pid: $!";
$faults++;
$kills++;
$node->wait_for_log(qr/all server processes terminated; reinitializing/, $offset);
$node->poll_query_until('postgres', 'SELECT true')
  or die 'the server does not come back after the crash';
ok($node->log_contains(qr/server process \(PID $pid\) was terminated by signal 9/, $offset),
	'kill -9 mid-append: the postmaster saw the killed backend and reinitialized');
eval { $big->quit; };
($status) = EsTorture::finish_pgbench($bench);
reconnect_clients();

check_after_fault('kill -9 mid-append', $before);
is( $node->safe_psql(
		'postgres', q{
	SELECT (SELECT count(*) FROM es.events WHERE stream_id = 'big-1' OR event_type IN ('Big', 'Stall'))
		 + (SELECT count(*) FROM es.streams WHERE stream_id = 'big-1')}),
	'0',
	'kill -9 mid-append: none of the 1,999 rows the killed append had inserted is there');
$node->safe_psql('postgres', 'DROP TRIGGER torture_stall ON es.events');

# ---------------------------------------------------------------------
# 3. kill -9 of random appending backends under the load
# ---------------------------------------------------------------------
for my $round (1 .. 2)
{
	$bench = EsTorture::start_pgbench($node, \@bench_args, "crash3$round");
	follow(3);
	$before = committed_state();
	my $victim = '';
	for (1 .. 100)
	{
		$victim = $node->safe_psql(
			'postgres', q{
			SELECT pid FROM pg_stat_activity
			 WHERE state = 'active' AND query LIKE 'SELECT torture.append(%'
			 ORDER BY random() LIMIT 1});
		last if $victim ne '';
		usleep(10_000);
	}
	die 'no appending backend to kill' if $victim eq '';
	$offset = -s $node->logfile;
	kill 'KILL', $victim or die "could not kill backend $victim: $!";
	$faults++;
	$kills++;
	$node->wait_for_log(qr/all server processes terminated; reinitializing/, $offset);
	$node->poll_query_until('postgres', 'SELECT true')
	  or die 'the server does not come back after the crash';
	($status) = EsTorture::finish_pgbench($bench);
	reconnect_clients();
	check_after_fault("random kill -9 $round", $before);
}

# ---------------------------------------------------------------------
# 4. The load once more, then everyone catches up and the full checks
# ---------------------------------------------------------------------
$bench = EsTorture::start_pgbench($node,
	[ '--client=8', '--jobs=2', '--time=4', '--max-tries=20' ], 'crash4');
follow(60, sub { !EsTorture::pgbench_running($bench) });
my ($out, $err);
($status, $out, $err) = EsTorture::finish_pgbench($bench);
is($status, 0, 'after the crashes, the load runs again without error')
  or diag "$out\n$err";

my $total = $node->safe_psql('postgres', 'SELECT count(*) FROM es.events');
my $deadline = time + 60;
while (time < $deadline)
{
	my $n = $sub->poll;
	last if $n == 0 && $sub->{rows} >= $total;
	usleep(50_000) if $n == 0;
}
EsTorture::drain_consumers(\@consumers, $node) if $has_outbox;

note sprintf('faults injected: %d (1 immediate stop, %d kill -9); %d events, %d appends recorded, %.0fs',
	$faults, $kills, $total,
	$node->safe_psql('postgres', 'SELECT count(*) FROM torture.append_log'),
	time - $t_start);

EsTorture::check_store($node, 'after the crashes');
EsTorture::check_appends($node, 'after the crashes');
EsTorture::check_conflicts($node, 'after the crashes');
EsTorture::check_subscriber($node, $sub, 'after the crashes');
EsTorture::check_projections($node, 'after the crashes');
SKIP:
{
	skip 'es_fold is not installed', 2 unless $has_fold;
	EsTorture::check_folds($node, 'after the crashes');
}
SKIP:
{
	skip 'the outbox is not installed', 7 unless $has_outbox;
	EsTorture::check_consumers($node, \@consumers, 'after the crashes');
	is($node->safe_psql('postgres', 'SELECT mode FROM es.es_outbox_notify_status()'),
		'worker', 'after the crashes: wake-ups still come from the notify worker');
}

# the only crashes were the ones injected
my @signals = slurp_file($node->logfile) =~ /terminated by signal (\d+)/g;
is(join(',', @signals), join(',', (9) x $kills),
	"the server log shows exactly the $kills backends killed with signal 9");
ok(!$node->log_contains(qr/PANIC:|TRAP:/), 'no PANIC, no failed assertion in the server log');

$_->{session}->quit for @clients;
$node->stop;
done_testing();
