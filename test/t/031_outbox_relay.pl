
# Copyright (c) es_ext contributors
#
# test/t/031_outbox_relay.pl
#
# es_relay end to end.  Events are appended by several pgbench sessions to
# twenty streams of the routed category "rl"; es_relay delivers the
# consumer group "tap" to a file, one JSON line per event.
#
#  1. Every event arrives exactly once, each stream in version order; two
#     relays sharing the group "duo" together deliver every event once,
#     each in stream order.
#  2. kill -9 of the relay while appends go on, then a restart: nothing is
#     lost; duplicates only from the batch that was output but not acked.
#     Then kill -9 exactly between output and ack (a command that wrote
#     the batch and sleeps): that batch, and only it, is delivered twice.
#  3. A server restart under the relay: it reconnects and goes on.
#  4. SIGTERM stops it cleanly (exit status 0).
#  5. Command mode: a failing command gets its batches retried, then
#     dead-lettered; after a replay a succeeding command gets them once.
#  6. Connection strings that cannot work (syntax error, unknown option,
#     no such database or role, a wrong or missing password) and a bad
#     --retention end the relay at once with status 2 and libpq's (or the
#     server's) message, with --once and without; a server that is not
#     running is retried.

use strict;
use warnings;

use IPC::Run;
use JSON::PP;
use Time::HiRes qw(usleep time);
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

use FindBin;
use lib $FindBin::RealBin;
use EsRelayTest qw(wait_until read_lines);

# the relay built in this tree, else the installed one
my $relay_bin =
  (defined $ENV{TESTDIR} && -x "$ENV{TESTDIR}/src/relay/es_relay")
  ? "$ENV{TESTDIR}/src/relay/es_relay"
  : 'es_relay';

my $batch = 20;
my $node = PostgreSQL::Test::Cluster->new('es_relay');
$node->init;
$node->append_conf(
	'postgresql.conf', q{
max_connections = 40
log_statement = none
log_min_messages = warning
});
$node->start;
$node->safe_psql(
	'postgres', q{
CREATE EXTENSION es_ext;
SELECT es.es_outbox_route('rl');
SELECT es.es_outbox_create_group('tap');
SELECT es.es_outbox_create_group('duo');
});

my $out_dir = PostgreSQL::Test::Utils::tempdir;
my $connstr = $node->connstr('postgres');

# Start a relay appending its output to $file; its log goes to $file.log.
sub start_relay
{
	my ($file, $group, @extra) = @_;
	return IPC::Run::start(
		[
			$relay_bin, '-d', $connstr, '-g', $group, '-b', $batch, '-l', '3',
			'-p', '0.5', '-v', @extra
		],
		'<', \undef, '>>', $file, '2>>', "$file.log");
}



# The events of category "rl" in the database: "stream:version" => 1.
sub db_events
{
	my %events = map { $_ => 1 } split /\n/,
	  $node->safe_psql('postgres',
		"SELECT stream_id || ':' || version FROM es.events WHERE category = 'rl'");
	return %events;
}

sub undelivered
{
	my ($group) = @_;
	return $node->safe_psql(
		'postgres', qq{
		SELECT count(*) FROM es.outbox_deliveries AS d
		  JOIN es.outbox_groups AS g USING (group_id) WHERE g.name = '$group'});
}

# Check delivered rows against the database.  Returns (missing, duplicates,
# unknown, out_of_order): out_of_order counts first deliveries of a stream
# that do not follow the previous first delivery of that stream by one.
sub check_delivery
{
	my ($rows, $events) = @_;
	my (%seen, %last);
	my ($dups, $unknown, $disorder) = (0, 0, 0);
	foreach my $r (@$rows)
	{
		my $key = "$r->{stream_id}:$r->{version}";
		if ($seen{$key}++)
		{
			$dups++;
			next;
		}
		$unknown++ unless $events->{$key};
		$disorder++
		  if ($r->{version} != ($last{ $r->{stream_id} } // 0) + 1);
		$last{ $r->{stream_id} } = $r->{version};
	}
	my $missing = grep { !$seen{$_} } keys %$events;
	return ($missing, $dups, $unknown, $disorder);
}

my $script = $node->basedir . '/append.sql';
PostgreSQL::Test::Utils::append_to_file(
	$script, q{
\set s random(1, 20)
\set n random(1, 3)
SELECT es.es_append('rl-' || :s, NULL,
       (SELECT jsonb_agg(jsonb_build_object('type', 'Tick', 'data', jsonb_build_object('i', i)) ORDER BY i)
          FROM generate_series(1, :n) AS i));
});

# pgbench in the background, appending at about $rate transactions/s for
# $seconds seconds
sub start_load
{
	my ($seconds, $rate) = @_;
	return IPC::Run::start(
		[
			'pgbench', '--no-vacuum', '-c', '4', '-j', '2',
			'-T', $seconds, '-R', $rate, '-f', $script,
			'-h', $node->host, '-p', $node->port, 'postgres'
		],
		'<', \undef, '>', \my $out, '2>', \my $err);
}

# ---------------------------------------------------------------------
# 1. exactly once, in order per stream; two relays sharing a group
# ---------------------------------------------------------------------
my $out = "$out_dir/tap.jsonl";
my $relay = start_relay($out, 'tap');
my $duo_a = start_relay("$out_dir/duo_a.jsonl", 'duo');
my $duo_b = start_relay("$out_dir/duo_b.jsonl", 'duo');

$node->pgbench(
	'--no-vacuum --client=4 --jobs=2 --transactions=60',
	0,
	[qr{actually processed: 240/240}],
	[qr{^$}],
	'four sessions append to twenty streams',
	{ 'append@1' => slurp_file($script) });

my %events = db_events();
my $total = scalar keys %events;
ok($total >= 240, "$total events appended");

ok(wait_until(sub { undelivered('tap') == 0 && scalar(read_lines($out)) >= $total }),
	'the relay delivered the group');
my @rows = read_lines($out);
my ($missing, $dups, $unknown, $disorder) = check_delivery(\@rows, \%events);
is(scalar(@rows), $total, 'one line per event');
is("$missing/$dups/$unknown/$disorder", '0/0/0/0',
	'every event exactly once, nothing unknown, each stream in version order');
is_deeply(
	[ sort keys %{ $rows[0] } ],
	[
		qw(attempt data event_id global_position group metadata position recorded_at schema_version stream_id type version)
	],
	'a line carries the event and its delivery');

ok(wait_until(sub { undelivered('duo') == 0 }), 'two relays delivered group duo');
my @duo_a = read_lines("$out_dir/duo_a.jsonl");
my @duo_b = read_lines("$out_dir/duo_b.jsonl");
($missing, $dups, $unknown) = check_delivery([ @duo_a, @duo_b ], \%events);
is("$missing/$dups/$unknown", '0/0/0', 'together, the two relays delivered every event once');
my (undef, undef, undef, $disorder_a) = check_delivery(\@duo_a, {});
my (undef, undef, undef, $disorder_b) = check_delivery(\@duo_b, {});
note sprintf('relay a delivered %d events, relay b %d', scalar @duo_a, scalar @duo_b);
# each relay sees a stream's events in increasing versions (not all of them)
my $backwards = 0;
foreach my $part (\@duo_a, \@duo_b)
{
	my %last;
	foreach my $r (@$part)
	{
		$backwards++ if $r->{version} <= ($last{ $r->{stream_id} } // 0);
		$last{ $r->{stream_id} } = $r->{version};
	}
}
is($backwards, 0, 'each relay of group duo got every stream in increasing versions');
$duo_a->signal('TERM');
$duo_b->signal('TERM');
$duo_a->finish;
$duo_b->finish;
$node->safe_psql('postgres', "SELECT es.es_outbox_drop_group('duo')");

# ---------------------------------------------------------------------
# 2. kill -9 while appends go on, restart: nothing lost
# ---------------------------------------------------------------------
my $load = start_load(6, 100);
ok(wait_until(sub { scalar(read_lines($out)) >= $total + 40 }, 30),
	'the relay delivers while appends go on');
$relay->signal('KILL');
$relay->finish;
my $at_kill = scalar(read_lines($out));
note "relay killed after $at_kill lines";
usleep(500_000);
$relay = start_relay($out, 'tap');
$load->finish;

%events = db_events();
$total = scalar keys %events;
ok(wait_until(sub { undelivered('tap') == 0 }), 'the restarted relay delivered the rest');
@rows = read_lines($out);
($missing, $dups, $unknown, $disorder) = check_delivery(\@rows, \%events);
is("$missing/$unknown/$disorder", '0/0/0',
	'after kill -9: no event lost, nothing unknown, first deliveries in stream order');
cmp_ok($dups, '<=', $batch, "duplicates ($dups) only from the batch not acked");
my $dups_before_window = $dups;
my $log = slurp_file("$out.log");
like($log, qr/delivering consumer group "tap"/, 'the second relay started');

# kill -9 exactly between output and ack: a command that writes the batch
# to the same file, then sleeps; the relay waits for it and is killed
$relay->signal('TERM');
$relay->finish;
$node->safe_psql('postgres',
	q{SELECT es.es_append('rl-' || i, NULL, '[{"type": "Window", "data": {}}]') FROM generate_series(1, 7) AS i});
my $mark = "$out_dir/window.pid";
$relay = IPC::Run::start(
	[
		$relay_bin, '-d', $connstr, '-g', 'tap', '-b', $batch, '-l', '3', '-v',
		'--', 'sh', '-c', 'cat >> "$0"; echo $$ > "$1"; exec sleep 60', $out, $mark
	],
	'<', \undef, '>>', $out, '2>>', "$out.log");
ok(wait_until(sub { -s $mark }, 30), 'the command wrote the batch and sleeps');
$relay->signal('KILL');
$relay->finish;
my ($sleeper) = slurp_file($mark) =~ /(\d+)/;
kill 'KILL', $sleeper;
$relay = start_relay($out, 'tap');
%events = db_events();
ok(wait_until(sub { undelivered('tap') == 0 }), 'the batch output but not acked is delivered again');
@rows = read_lines($out);
($missing, $dups, $unknown, $disorder) = check_delivery(\@rows, \%events);
is("$missing/$unknown/$disorder", '0/0/0', 'nothing lost, first deliveries in stream order');
# (the file already holds the duplicates of the kill above)
is($dups - $dups_before_window, 7, 'the 7 events of the unacknowledged batch were delivered twice');

# ---------------------------------------------------------------------
# 3. server restart under the relay
# ---------------------------------------------------------------------
$node->pgbench(
	'--no-vacuum --client=2 --jobs=1 --transactions=10',
	0, [qr{actually processed: 20/20}], [qr{^$}],
	'appends before the restart', { 'before_restart@1' => slurp_file($script) });
$node->restart;
$node->pgbench(
	'--no-vacuum --client=2 --jobs=1 --transactions=10',
	0, [qr{actually processed: 20/20}], [qr{^$}],
	'appends after the restart', { 'after_restart@1' => slurp_file($script) });
%events = db_events();
$total = scalar keys %events;
ok(wait_until(sub { undelivered('tap') == 0 }), 'the relay went on after the server restart');
@rows = read_lines($out);
($missing, $dups, $unknown, $disorder) = check_delivery(\@rows, \%events);
is("$missing/$unknown/$disorder", '0/0/0', 'after the server restart: no event lost, in order');
cmp_ok($dups, '<=', 2 * $batch, 'duplicates only from unacked batches');
$log = slurp_file("$out.log");
like($log, qr/connection lost; reconnecting/, 'the relay noticed the lost connection');
like($log, qr/reconnected; delivering consumer group "tap"/, 'the relay reconnected');

# ---------------------------------------------------------------------
# 4. SIGTERM: a clean stop
# ---------------------------------------------------------------------
$relay->signal('TERM');
$relay->finish;
is($relay->result(0), 0, 'SIGTERM stops the relay with exit status 0');
like(slurp_file("$out.log"), qr/stopped$/m, 'the relay says it stopped');

# ---------------------------------------------------------------------
# 5. command mode: retries, dead letters, replay
# ---------------------------------------------------------------------
$node->safe_psql(
	'postgres', q{
SELECT es.es_outbox_create_group('cmd', max_attempts => 2, backoff_base => '10 milliseconds');
SELECT es.es_append('rl-cmd', 0,
       (SELECT jsonb_agg(jsonb_build_object('type', 'Cmd', 'data', jsonb_build_object('i', i)) ORDER BY i)
          FROM generate_series(1, 5) AS i));
});
my $fail_log = "$out_dir/cmd_fail";
IPC::Run::run(
	[
		$relay_bin, '-d', $connstr, '-g', 'cmd', '-b', '5', '-p', '0.2', '--once',
		'--', 'sh', '-c', 'cat > /dev/null; exit 3'
	],
	'<', \undef, '>', \my $cmd_out, '2>', $fail_log);
is($? >> 8, 0, 'es_relay --once with a failing command exits 0 when nothing is left');
like(slurp_file($fail_log), qr/could not deliver 5 messages .*command exited with status 3/,
	'the failure is logged');
is( $node->safe_psql(
		'postgres',
		"SELECT count(*), min(attempts), max(last_error) FROM es.outbox_dead_letters WHERE consumer_group = 'cmd'"),
	'5|2|command exited with status 3',
	'after max_attempts, the messages are dead letters with the command\'s status');

$node->safe_psql('postgres', "SELECT es.es_outbox_replay('cmd')");
my $cmd_file = "$out_dir/cmd.jsonl";
IPC::Run::run(
	[
		$relay_bin, '-d', $connstr, '-g', 'cmd', '-b', '2', '--once',
		'--', 'sh', '-c', "test \"\$ES_RELAY_GROUP\" = cmd && cat >> $cmd_file"
	],
	'<', \undef, '>', \$cmd_out, '2>', "$out_dir/cmd_ok");
is($? >> 8, 0, 'es_relay --once with a succeeding command exits 0');
my @cmd_rows = read_lines($cmd_file);
is( join(',', map { $_->{version} } @cmd_rows),
	'1,2,3,4,5', 'the command got the replayed events once, in order, in batches of 2');
is(undelivered('cmd'), '0', 'and they were acked');

# usage errors
IPC::Run::run([ $relay_bin, '--help' ], '>', \my $help);
like($help, qr/Usage:.*--group=NAME/s, '--help prints the usage');
IPC::Run::run([ $relay_bin, '-d', $connstr ], '>', \my $o1, '2>', \my $e1);
is($? >> 8, 1, 'no group: exit status 1');
IPC::Run::run([ $relay_bin, '-d', $connstr, '-g', 'nope', '--once' ], '>', \my $o2, '2>', \my $e2);
is($? >> 8, 2, 'an unknown group: exit status 2');
like($e2, qr/consumer group "nope" does not exist/, 'and the server\'s error');

# ---------------------------------------------------------------------
# 6. hopeless connection strings exit 2 at once; a missing server is retried
# ---------------------------------------------------------------------
# a role that must give a password (scram-sha-256), checked before the
# other lines of pg_hba.conf
$node->safe_psql('postgres',
	"SET password_encryption = 'scram-sha-256'; CREATE ROLE relay_pw LOGIN PASSWORD 'right' IN ROLE es_consumer");
my $hba = $node->data_dir . '/pg_hba.conf';
my $hba_text = slurp_file($hba);
open my $hba_fh, '>', $hba or die "could not write $hba: $!";
print $hba_fh "local all relay_pw scram-sha-256\n", $hba_text;
close $hba_fh;
$node->reload;

my $base = 'host=' . $node->host . ' port=' . $node->port;
my @hopeless = (
	[ "$base dbname", qr/missing "=" after "dbname" in connection info string/, 'a syntax error' ],
	[ "$base dbname=postgres bogus=1", qr/invalid connection option "bogus"/, 'an unknown option' ],
	[ 'postgresql:///postgres?nosuchparam=1', qr/invalid URI query parameter: "nosuchparam"/,
		'an unknown URI parameter' ],
	[ "$base dbname=postgres sslmode=sometimes", qr/invalid sslmode value: "sometimes"/,
		'a bad option value' ],
	[ "$base dbname=no_such_db", qr/FATAL:  database "no_such_db" does not exist/, 'no such database' ],
	[ "$base dbname=postgres user=no_such_role", qr/FATAL:  role "no_such_role" does not exist/,
		'no such role' ],
	[ "$base dbname=postgres user=relay_pw password=wrong",
		qr/FATAL:  password authentication failed for user "relay_pw"/, 'a wrong password' ],
	[ "$base dbname=postgres user=relay_pw", qr/fe_sendauth: no password supplied/, 'no password' ]);
foreach my $case (@hopeless)
{
	my ($conn, $message, $what) = @$case;
	foreach my $once ([], ['--once'])
	{
		my $label = "$what" . (@$once ? ' (--once)' : '');
		my $start = time;
		my ($o, $e) = ('', '');
		IPC::Run::run([ $relay_bin, '-d', $conn, '-g', 'tap', @$once ],
			'<', \undef, '>', \$o, '2>', \$e, IPC::Run::timeout(30));
		my $elapsed = time - $start;
		is($? >> 8, 2, "$label: exit status 2");
		like($e, qr/could not connect \(not retrying\): .*$message/, "$label: libpq's message");
		cmp_ok($elapsed, '<', 3, sprintf('%s: at once (%.2f s)', $label, $elapsed));
		unlike($e, qr/retrying in/, "$label: no retry");
	}
}
# the right password works, also for this role
IPC::Run::run([ $relay_bin, '-d', "$base dbname=postgres user=relay_pw password=right", '-g', 'tap', '--once' ],
	'<', \undef, '>', \my $pw_out, '2>', \my $pw_err, IPC::Run::timeout(60));
is($? >> 8, 0, 'the right password: it delivers') or diag $pw_err;

# a bad --retention: rejected at startup, not at the first cleanup
foreach my $retention ('garbage', '-1 day')
{
	IPC::Run::run([ $relay_bin, '-d', $connstr, '-g', 'tap', '-r', $retention ],
		'<', \undef, '>', \my $r_out, '2>', \my $r_err, IPC::Run::timeout(30));
	is($? >> 8, 2, "--retention '$retention': exit status 2 at startup");
	like($r_err, qr/invalid retention "\Q$retention\E"/, "--retention '$retention': the reason");
}

# no server on that port: retried (still running after 3 s), with and
# without --once, until SIGTERM stops it
my $no_server = 'host=' . $node->host . ' port=' . PostgreSQL::Test::Cluster::get_free_port() . ' dbname=postgres';
foreach my $once ([], ['--once'])
{
	my $label = 'no server' . (@$once ? ' (--once)' : '');
	my $err_file = "$out_dir/no_server" . scalar(@$once) . '.log';
	my $h = IPC::Run::start([ $relay_bin, '-d', $no_server, '-g', 'tap', @$once ],
		'<', \undef, '>', '/dev/null', '2>', $err_file);
	sleep 3;
	$h->signal('TERM');
	$h->finish;
	is($h->result(0), 0, "$label: still retrying after 3 s, then stopped by SIGTERM (status 0)");
	my $retries = () = slurp_file($err_file) =~ /could not connect: .*No such file or directory; retrying in/g;
	cmp_ok($retries, '>=', 3, "$label: $retries attempts with backoff");
}

$node->stop;
done_testing();
