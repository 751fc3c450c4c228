
# Copyright (c) es_ext contributors
#
# test/t/032_outbox_notify_worker.pl
#
# The worker notify mode, with es_ext in shared_preload_libraries: it is the
# default; appending transactions never NOTIFY themselves, the notify worker
# of their database does, one notification for many commits; a relay that
# polls only every minute is woken at once; the worker exits when idle, so
# DROP DATABASE is not held up; prepared transactions can write the outbox.

use strict;
use warnings;

use IPC::Run;
use Time::HiRes qw(usleep);
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $relay_bin =
  (defined $ENV{TESTDIR} && -x "$ENV{TESTDIR}/src/relay/es_relay")
  ? "$ENV{TESTDIR}/src/relay/es_relay"
  : 'es_relay';

my $node = PostgreSQL::Test::Cluster->new('es_notify');
$node->init;
$node->append_conf(
	'postgresql.conf', q{
shared_preload_libraries = 'es_ext'
es.notify_worker_idle_timeout = '3s'
max_prepared_transactions = 5
max_connections = 40
log_statement = none
});
$node->start;
$node->safe_psql(
	'postgres', q{
CREATE EXTENSION es_ext;
SELECT es.es_outbox_route('wk');
SELECT es.es_outbox_create_group('wk');
});

sub wait_until
{
	my ($cond, $timeout) = @_;
	my $deadline = time + ($timeout // 60);
	while (time < $deadline)
	{
		return 1 if $cond->();
		usleep(100_000);
	}
	return 0;
}

sub undelivered
{
	return $node->safe_psql(
		'postgres', q{
		SELECT count(*) FROM es.outbox_deliveries AS d
		  JOIN es.outbox_groups AS g USING (group_id) WHERE g.name = 'wk'});
}

is($node->safe_psql('postgres', 'SHOW es.notify'), 'worker',
	'with shared_preload_libraries, es.notify defaults to worker');
is( $node->safe_psql(
		'postgres', 'SELECT setting, mode, preloaded FROM es.es_outbox_notify_status()'),
	'worker|worker|t',
	'the worker mode is in effect');

# ---------------------------------------------------------------------
# the notification comes from the notify worker, not from the appender
# ---------------------------------------------------------------------
my $listener = $node->background_psql('postgres');
$listener->query_safe('LISTEN es_outbox');
my $appender = $node->background_psql('postgres');
my $appender_pid = $appender->query_safe('SELECT pg_backend_pid()');
$appender->query_safe(
	q{BEGIN;
SELECT es.es_append('wk-1', NULL, '[{"type": "A", "data": {}}]');
SELECT es.es_append('wk-2', NULL, '[{"type": "B", "data": {}}]');
COMMIT;});

my $notified = '';
ok( wait_until(
		sub {
			$notified .= $listener->query_safe('SELECT 1');
			return $notified =~ /Asynchronous notification "es_outbox" received/;
		}),
	'the listener is notified');
my ($sender) = $notified =~ /received from server process with PID (\d+)/;
my ($worker_pid, $requested, $sent) = split /\|/,
  $node->safe_psql('postgres',
	'SELECT worker_pid, wakeups_requested, notifications_sent FROM es.es_outbox_notify_status()');
isnt($sender, $appender_pid, 'the appending session did not notify');
is($sender, $worker_pid, 'the notify worker did');
is( $node->safe_psql(
		'postgres', "SELECT backend_type FROM pg_stat_activity WHERE pid = $worker_pid"),
	'es_ext notify worker',
	'it is the es_ext notify worker of this database');
is("$requested|$sent", '1|1', 'one commit, one wake-up, one notification');
unlike($notified, qr/with payload/, 'the notification carries no payload');

# es.notify = commit in a session: that session notifies itself
$appender->query_safe(
	q{SET es.notify = commit;
SELECT es.es_append('wk-3', NULL, '[{"type": "C", "data": {}}]');});
$notified = '';
ok( wait_until(
		sub {
			$notified .= $listener->query_safe('SELECT 1');
			return $notified =~ /Asynchronous notification "es_outbox" received/;
		}),
	'notified in commit mode');
($sender) = $notified =~ /received from server process with PID (\d+)/;
is($sender, $appender_pid, 'with es.notify = commit, the appending session notifies');
$appender->query_safe('RESET es.notify');

# ---------------------------------------------------------------------
# a relay that polls once a minute is woken by the worker's notification;
# many commits, few notifications, all from the worker
# ---------------------------------------------------------------------
my $out = PostgreSQL::Test::Utils::tempdir() . '/wk.jsonl';
my $relay = IPC::Run::start(
	[
		$relay_bin, '-d', $node->connstr('postgres'), '-g', 'wk', '-p', '60', '-v'
	],
	'<', \undef, '>', $out, '2>', "$out.log");
ok(wait_until(sub { undelivered() == 0 }), 'the relay delivered what was there');
ok(wait_until(sub { -e "$out.log" && slurp_file("$out.log") =~ /delivering consumer group/ }),
	'the relay listens');

my $t0 = time;
$node->safe_psql('postgres',
	q{SELECT es.es_append('wk-4', NULL, '[{"type": "D", "data": {}}]')});
ok(wait_until(sub { undelivered() == 0 }, 20), 'a new event is delivered');
cmp_ok(time - $t0, '<', 20, 'well before the relay would have polled');

my ($req0, $sent0) = split /\|/, $node->safe_psql('postgres',
	'SELECT wakeups_requested, notifications_sent FROM es.es_outbox_notify_status()');
my $log_before = -s "$out.log";
$node->pgbench(
	'--no-vacuum --client=4 --jobs=2 --transactions=100',
	0,
	[qr{actually processed: 400/400}],
	[qr{^$}],
	'400 appending transactions',
	{
		'wk@1' => q{
\set s random(1, 50)
SELECT es.es_append('wk-' || :s, NULL, '[{"type": "Load", "data": {}}]');
}
	});
my ($pid_load, $req1, $sent1) = split /\|/, $node->safe_psql('postgres',
	'SELECT worker_pid, wakeups_requested, notifications_sent FROM es.es_outbox_notify_status()');
ok(wait_until(sub { undelivered() == 0 }), 'the relay delivered the load');
note sprintf('400 commits requested %d wake-ups; the worker sent %d notifications',
	$req1 - $req0, $sent1 - $sent0);
is($req1 - $req0, 400, 'every committing append asked for a wake-up');
cmp_ok($sent1 - $sent0, '<=', 400, 'the worker sent at most one notification per commit');
cmp_ok($sent1 - $sent0, '>=', 1, 'and at least one');
my $log = substr(slurp_file("$out.log"), $log_before);
my %senders = map { $_ => 1 } $log =~ /woken by a notification from server process (\d+)/g;
is(join(',', sort keys %senders), $pid_load,
	'every notification the relay got during the load came from the notify worker');

$relay->signal('TERM');
$relay->finish;

# ---------------------------------------------------------------------
# prepared transactions write the outbox (in both modes); nothing is
# notified at PREPARE
# ---------------------------------------------------------------------
foreach my $mode ('worker', 'commit')
{
	$node->safe_psql(
		'postgres', qq{
SET es.notify = $mode;
BEGIN;
SELECT es.es_append('wk-prep-$mode', 0, '[{"type": "Prepared", "data": {}}]');
PREPARE TRANSACTION 'wk_$mode';
});
	$node->safe_psql('postgres', "COMMIT PREPARED 'wk_$mode'");
	is( $node->safe_psql(
			'postgres', "SELECT count(*) FROM es.outbox WHERE aggregateid = 'wk-prep-$mode'"),
		'1',
		"es.notify = $mode: a prepared transaction wrote its outbox row");
}

# ---------------------------------------------------------------------
# the worker exits when idle, and does not hold up DROP DATABASE
# ---------------------------------------------------------------------
$node->safe_psql('postgres', q{ALTER SYSTEM SET es.notify_worker_idle_timeout = '3s'});
$node->reload;
$node->safe_psql('postgres', 'CREATE DATABASE wkdb');
$node->safe_psql(
	'wkdb', q{
CREATE EXTENSION es_ext;
SELECT es.es_outbox_route('wk');
SELECT es.es_outbox_create_group('wk');
SELECT es.es_append('wk-1', 0, '[{"type": "A", "data": {}}]');
});
ok( wait_until(
		sub {
			$node->safe_psql('postgres',
				q{SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'es_ext notify worker' AND datname = 'wkdb'}
			) eq '1';
		},
		10),
	'a notify worker started for the second database');
$node->safe_psql('postgres', 'DROP DATABASE wkdb');
pass('DROP DATABASE of a database with a notify worker succeeds');
ok( wait_until(
		sub {
			$node->safe_psql('postgres',
				q{SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'es_ext notify worker'})
			  eq '0';
		},
		10),
	'idle notify workers exit');

# after the idle exit, a new commit starts a new worker
$listener->query_safe('SELECT 1');
$node->safe_psql('postgres',
	q{SELECT es.es_append('wk-5', NULL, '[{"type": "E", "data": {}}]')});
$notified = '';
ok( wait_until(
		sub {
			$notified .= $listener->query_safe('SELECT 1');
			return $notified =~ /Asynchronous notification "es_outbox" received/;
		}),
	'after an idle exit, the next commit is notified by a new worker');

$listener->quit;
$appender->quit;
$node->stop;
done_testing();
