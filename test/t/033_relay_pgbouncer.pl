
# Copyright (c) es_ext contributors
#
# test/t/033_relay_pgbouncer.pl
#
# es_relay behind a transaction-pooling PgBouncer (started and stopped by
# this test, on its own port): consecutive transactions of one client run
# in different server sessions, so named prepared statements, session-level
# SET and LISTEN cannot work there.
#
#  1. Three relays of one group and four pgbench appenders, all through
#     PgBouncer (pool_mode = transaction, two server connections for all of
#     them): every event delivered, each stream in version order per relay,
#     duplicates only from batches that lost their lease; the relays saw
#     the pooler and poll instead of LISTENing; no "prepared statement"
#     error.
#  2. No setting leaks: a client of the same pool samples
#     synchronous_commit (and prepared statements, LISTEN channels) in the
#     server sessions it gets, over and over, while the relays run.
#  3. --listen=always through the pooler: the relay notices that its
#     transactions run in other server sessions than the one that LISTENs,
#     says so, and still delivers everything, by polling.
#
# Skipped when the pgbouncer program is not installed (Debian package
# pgbouncer; test/lib.sh installs it).

use strict;
use warnings;

use IPC::Run;
use JSON::PP;
use Time::HiRes qw(usleep);
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

use FindBin;
use lib $FindBin::RealBin;
use EsRelayTest qw(wait_until read_lines);

my ($pgbouncer) =
  grep { -x $_ } ((map { "$_/pgbouncer" } split /:/, ($ENV{PATH} // '')),
	'/usr/sbin/pgbouncer', '/usr/bin/pgbouncer');
plan skip_all => 'pgbouncer is not installed (Debian package pgbouncer)'
  unless defined $pgbouncer;

# the relay built in this tree, else the installed one
my $relay_bin =
  (defined $ENV{TESTDIR} && -x "$ENV{TESTDIR}/src/relay/es_relay")
  ? "$ENV{TESTDIR}/src/relay/es_relay"
  : 'es_relay';

my $batch = 20;
my $node = PostgreSQL::Test::Cluster->new('relay_pgbouncer');
$node->init;
$node->append_conf(
	'postgresql.conf', q{
max_connections = 40
log_min_messages = warning
});
$node->start;
$node->safe_psql(
	'postgres', q{
CREATE EXTENSION es_ext;
SELECT es.es_outbox_route('pb');
SELECT es.es_outbox_create_group('pool');
SELECT es.es_outbox_create_group('always');
});
my $user = $node->safe_psql('postgres', 'SELECT current_user');

# ---------------------------------------------------------------------
# PgBouncer: transaction pooling, two server connections per database and
# user, for every client of this test
# ---------------------------------------------------------------------
my $dir = PostgreSQL::Test::Utils::tempdir;
my $bport = PostgreSQL::Test::Cluster::get_free_port();
my $ini = "$dir/pgbouncer.ini";
PostgreSQL::Test::Utils::append_to_file("$dir/users.txt", qq{"$user" ""\n});
PostgreSQL::Test::Utils::append_to_file(
	$ini, sprintf(q{
[databases]
postgres = host=%s port=%d dbname=postgres
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = %d
unix_socket_dir =
auth_type = trust
auth_file = %s/users.txt
pool_mode = transaction
default_pool_size = 2
max_client_conn = 100
logfile = %s/pgbouncer.log
pidfile = %s/pgbouncer.pid
}, $node->host, $node->port, $bport, $dir, $dir, $dir));
my $bouncer = IPC::Run::start([ $pgbouncer, $ini ],
	'<', \undef, '>', "$dir/pgbouncer.out", '2>&1');
my $bouncer_pid = $bouncer->{KIDS}[0]{PID};
END { kill 'TERM', $bouncer_pid if $bouncer_pid; }

my $pooled = "host=127.0.0.1 port=$bport dbname=postgres user=$user";


sub pooled_psql
{
	my ($sql) = @_;
	my ($out, $err) = ('', '');
	IPC::Run::run([ 'psql', '-XAtq', '-d', $pooled, '-c', $sql ],
		'<', \undef, '>', \$out, '2>', \$err);
	chomp $out;
	return ($? == 0, $out, $err);
}
ok(wait_until(sub { (pooled_psql('SELECT 1'))[0] }, 30),
	"PgBouncer $pgbouncer accepts connections on port $bport");
note "pgbouncer pid $bouncer_pid";

# Start a relay through PgBouncer appending its output to $file; its log
# goes to $file.log.
sub start_relay
{
	my ($file, $group, @extra) = @_;
	return IPC::Run::start(
		[
			$relay_bin, '-d', $pooled, '-g', $group, '-b', $batch, '-l', '10',
			'-p', '0.3', '-v', @extra
		],
		'<', \undef, '>>', $file, '2>>', "$file.log");
}


sub undelivered
{
	my ($group) = @_;
	return $node->safe_psql(
		'postgres', qq{
		SELECT count(*) FROM es.outbox_deliveries AS d
		  JOIN es.outbox_groups AS g USING (group_id) WHERE g.name = '$group'});
}

# The events of category "pb": "stream:version" => 1.
sub db_events
{
	return map { $_ => 1 } split /\n/,
	  $node->safe_psql('postgres',
		"SELECT stream_id || ':' || version FROM es.events WHERE category = 'pb'");
}

# (missing, duplicates, unknown, backwards) of the relays' outputs: backwards
# counts lines of a relay whose version is not above that relay's previous
# line of the stream
sub check_delivery
{
	my ($parts, $events) = @_;
	my %seen;
	my ($dups, $unknown, $backwards) = (0, 0, 0);
	foreach my $part (@$parts)
	{
		my %last;
		foreach my $r (@$part)
		{
			my $key = "$r->{stream_id}:$r->{version}";
			$dups++ if $seen{$key}++;
			$unknown++ unless $events->{$key};
			$backwards++ if $r->{version} <= ($last{ $r->{stream_id} } // 0);
			$last{ $r->{stream_id} } = $r->{version};
		}
	}
	my $missing = grep { !$seen{$_} } keys %$events;
	return ($missing, $dups, $unknown, $backwards);
}

# messages the relays reported as lost leases (they may come twice)
sub lost_leases
{
	my $lost = 0;
	foreach my $log (@_)
	{
		$lost += $1 while slurp_file($log) =~ /(\d+) of \d+ messages of the batch had lost their lease/g;
	}
	return $lost;
}

my $script = "$dir/append.sql";
PostgreSQL::Test::Utils::append_to_file(
	$script, q{
\set s random(1, 40)
\set n random(1, 3)
SELECT es.es_append('pb-' || :s, NULL,
       (SELECT jsonb_agg(jsonb_build_object('type', 'Tick', 'data', jsonb_build_object('i', i)) ORDER BY i)
          FROM generate_series(1, :n) AS i));
});

# ---------------------------------------------------------------------
# 1. and 2.: three relays, four appenders, a sampler, one pool of two
# ---------------------------------------------------------------------
my $t0 = time;
my @files = map { "$dir/pool_$_.jsonl" } 1 .. 3;
my @relays = map { start_relay($_, 'pool') } @files;

my $sampler_sql = "$dir/sample.sql";
PostgreSQL::Test::Utils::append_to_file($sampler_sql,
	join('',
		map {
			"SELECT current_setting('synchronous_commit'), pg_backend_pid(),"
			  . " (SELECT count(*) FROM pg_prepared_statements),"
			  . " (SELECT count(*) FROM pg_listening_channels());\n"
			  . "SELECT pg_sleep(0.01) \\g /dev/null\n"
		} 1 .. 400));
my $samples = '';
my $sampler = IPC::Run::start([ 'psql', '-XAtq', '-F', ' ', '-d', $pooled, '-f', $sampler_sql ],
	'<', \undef, '>', \$samples, '2>', \my $sampler_err);

my ($bench_out, $bench_err) = ('', '');
my $bench = IPC::Run::start(
	[
		'pgbench', '--no-vacuum', '-c', '4', '-j', '2', '-t', '150',
		'-f', $script, $pooled
	],
	'<', \undef, '>', \$bench_out, '2>', \$bench_err);
$bench->finish;
is($? >> 8, 0, 'pgbench through PgBouncer finished');
like($bench_out, qr{actually processed: 600/600}, 'four appenders made 600 appends through PgBouncer');

my %events = db_events();
my $total = scalar keys %events;
ok($total >= 600, "$total events appended");
ok(wait_until(sub { undelivered('pool') == 0 }, 120),
	'three relays through PgBouncer delivered the group');
$sampler->finish;
my $relay_time = time - $t0;

my @parts = map { [ read_lines($_) ] } @files;
my ($missing, $dups, $unknown, $backwards) = check_delivery(\@parts, \%events);
note sprintf('relays delivered %s lines in about %d s', join('/', map { scalar @$_ } @parts),
	$relay_time);
is("$missing/$unknown/$backwards", '0/0/0',
	'every event delivered, nothing unknown, each relay got each stream in increasing versions');
my $lost = lost_leases(map { "$_.log" } @files);
cmp_ok($dups, '<=', $lost, "duplicates ($dups) only from messages whose lease ran out ($lost)");
# which relay wins the claims depends on the scheduling of a loaded machine:
# at least two of them shared the work, and every relay ran its claims
# through the pooler (checked in its log below)
cmp_ok(scalar(grep { @$_ > 0 } @parts), '>=', 2, 'the relays shared the group');

my $logs = join '', map { slurp_file("$_.log") } @files;
is(scalar(() = $logs =~ /through a connection pooler; polling, no LISTEN/g),
	3, 'each relay saw the pooler and polls instead of LISTENing');
is(scalar(() = $logs =~ /prepared statement/gi), 0, 'no prepared statement errors');
is(scalar(() = $logs =~ /failed:/g), 0, 'no failed statement at all');

# 2. what the sampler saw in the server sessions of the pool
my @samples = map { [ split / / ] } grep { /\S/ } split /\n/, $samples;
is(scalar @samples, 400, 'the sampler ran 400 times') or diag $sampler_err;
my %sessions = map { $_->[1] => 1 } @samples;
cmp_ok(scalar keys %sessions, '>=', 2, 'the sampler got several server sessions of the pool');
is(scalar(grep { $_->[0] ne 'on' } @samples), 0,
	'synchronous_commit stayed "on" in every server session the sampler got');
is(scalar(grep { $_->[2] != 0 || $_->[3] != 0 } @samples),
	0, 'no prepared statement and no LISTEN left in any server session');

$_->signal('TERM') foreach @relays;
$_->finish foreach @relays;
is(join(',', map { $_->result(0) } @relays), '0,0,0', 'SIGTERM stops the three relays, status 0');

# ---------------------------------------------------------------------
# 3. --listen=always through a transaction pooler: noticed, and polling
#    delivers everything
# ---------------------------------------------------------------------
my $always = "$dir/always.jsonl";
my $relay = start_relay($always, 'always', '--listen=always');
$bench = IPC::Run::start(
	[
		'pgbench', '--no-vacuum', '-c', '2', '-j', '1', '-t', '50',
		'-f', $script, $pooled
	],
	'<', \undef, '>', \$bench_out, '2>', \$bench_err);
$bench->finish;
%events = db_events();
ok(wait_until(sub { undelivered('always') == 0 }, 60),
	'a relay with --listen=always delivered the group');
($missing, $dups, $unknown, $backwards) = check_delivery([ [ read_lines($always) ] ], \%events);
is("$missing/$dups/$unknown/$backwards", '0/0/0/0', 'every event once, in stream order');
my $log = slurp_file("$always.log");
like($log, qr/through a connection pooler; LISTEN \(--listen=always\)/, 'it LISTENed as told');
like($log, qr/not in \d+ that LISTENs: a transaction pooler is in between and notifications cannot arrive; polling/,
	'and noticed that its transactions run in other server sessions');
$relay->signal('TERM');
$relay->finish;

# ---------------------------------------------------------------------
# stop PgBouncer by its pid
# ---------------------------------------------------------------------
kill 'TERM', $bouncer_pid;
$bouncer->finish;
$bouncer_pid = undef;
ok(!(pooled_psql('SELECT 1'))[0], 'PgBouncer stopped');
note "relays and appenders through PgBouncer: $relay_time s for part 1";

$node->stop;
done_testing();
