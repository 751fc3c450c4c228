
# Copyright (c) es_ext contributors
#
# test/t/090_chain_attack.pl
#
# The hash chain of issue 15 (es.events.hash) against failures, checked by
# the independent reference verifier in plain SQL
# (test/sql/chain_reference.sql, which shares no code with src/chain.c):
#
# 1. an append waiting for a PREPARED transaction that holds the stream
#    row: after COMMIT PREPARED it chains to the prepared events, after
#    ROLLBACK PREPARED to the old head (the isolation tester cannot see such
#    a wait: a prepared transaction has no backend);
# 2. pgbench load of every shape (single events with tags, metadata and
#    unicode, batches of 10, exact-version appends retried on 40001,
#    appends rolled back in savepoints and in aborted transactions, large
#    TOASTed events), then more of it in the background cut by SIGKILL of
#    the postmaster and of every server process; after the restart (crash
#    recovery) every stream's chain verifies and appends go on chaining.

use strict;
use warnings;

use IPC::Run;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep);

my $node = PostgreSQL::Test::Cluster->new('es_chain_attack');
$node->init;
$node->append_conf(
	'postgresql.conf', q{
max_connections = 40
max_prepared_transactions = 5
autovacuum = off
log_statement = none
});
$node->start;
$node->safe_psql('postgres', 'CREATE EXTENSION es_ext');
$node->safe_psql('postgres',
	slurp_file("$ENV{TESTDIR}/test/sql/chain_reference.sql"));

sub chain_problems
{
	my ($label) = @_;
	my $problems = $node->safe_psql('postgres',
		q{SELECT string_agg(stream_id || ' v' || version || ': ' || problem, E'\n')
		    FROM chain_ref.problems()});
	is($problems, '', "$label: every chain verifies (reference verifier)");
	is( $node->safe_psql('postgres',
			'SELECT count(*) FROM es.events WHERE hash IS NULL'),
		'0', "$label: every event has a hash");
}

# ---------------------------------------------------------------------
# 1. an append waiting for a prepared transaction
# ---------------------------------------------------------------------
foreach my $finish ('COMMIT PREPARED', 'ROLLBACK PREPARED')
{
	my $s = $finish eq 'COMMIT PREPARED' ? 'p2c-1' : 'p2r-1';
	$node->safe_psql('postgres',
		qq{SELECT es.es_append('$s', 0, '[{"type": "Start", "data": {}}]')});
	$node->safe_psql(
		'postgres', qq{
		BEGIN;
		SELECT es.es_append('$s', 1, '[{"type": "Prepared", "data": 1, "tags": ["p:1"]},
		                               {"type": "Prepared", "data": 2}]');
		PREPARE TRANSACTION 'chain_p';});

	my $waiter = $node->background_psql('postgres', on_error_stop => 0);
	$waiter->query_until(
		qr/started/, qq{
\\echo started
SELECT 'waiter appended version ' || (es.es_append('$s', NULL, '[{"type": "Waiter", "data": 3}]')).version;
});
	$node->poll_query_until('postgres',
		q{SELECT count(*) = 1 FROM pg_stat_activity
		   WHERE query LIKE '%Waiter%' AND wait_event_type = 'Lock'})
	  or die 'the waiting append does not wait';
	is( $node->safe_psql('postgres',
			"SELECT count(*) FROM es.events WHERE stream_id = '$s'"),
		'1', "$finish: the prepared events are not visible while the append waits");

	$node->safe_psql('postgres', "$finish 'chain_p'");
	my $want = $finish eq 'COMMIT PREPARED' ? 4 : 2;
	like($waiter->query_safe('SELECT 1'), qr/1/, "$finish: the waiter's session is alive");
	$waiter->quit;
	is( $node->safe_psql('postgres',
			"SELECT string_agg(version || ':' || event_type, ',' ORDER BY version) FROM es.events WHERE stream_id = '$s'"),
		$finish eq 'COMMIT PREPARED'
		? '1:Start,2:Prepared,3:Prepared,4:Waiter'
		: '1:Start,2:Waiter',
		"$finish: the waiting append took version $want");
	is($node->safe_psql('postgres', "SELECT count(*) FROM chain_ref.problems('$s')"),
		'0', "$finish: the chain of $s verifies");
}

# ---------------------------------------------------------------------
# 2. pgbench load, then SIGKILL of the whole server under load
# ---------------------------------------------------------------------
my %scripts = (
	# one event with tags, metadata, unicode and numbers jsonb keeps as written
	'ch_single@4' => q{
\set s random(1, 40)
\set a random(1, 1000000)
SELECT es.es_append('chk-' || :s, NULL, jsonb_build_array(jsonb_build_object(
       'type', 'Single', 'data', jsonb_build_object('amount', (:a || '.10')::numeric, 'name', 'Zoë 日本 "q"\'),
       'metadata', jsonb_build_object('c', 'c-' || :a), 'tags', jsonb_build_array('t:' || :s % 5, 'ü'))));
},
	# a batch of 10
	'ch_batch@3' => q{
\set s random(1, 40)
SELECT es.es_append('chk-' || :s, NULL,
       (SELECT jsonb_agg(jsonb_build_object('type', 'Batch', 'data', jsonb_build_object('i', i, 'f', i / 7.0)))
          FROM generate_series(1, 10) AS i));
},
	# read the version, append at exactly that version (40001 retried)
	'ch_exact@2' => q{
\set s random(1, 40)
BEGIN;
SELECT es.es_stream_version('chk-' || :s) AS v \gset
SELECT es.es_append('chk-' || :s, :v, '[{"type": "Exact", "data": {}}]');
COMMIT;
},
	# an append rolled back in a savepoint, then another one
	'ch_savepoint@1' => q{
\set s random(1, 40)
BEGIN;
SAVEPOINT a;
SELECT es.es_append('chk-' || :s, NULL, '[{"type": "Gone", "data": {}}]');
ROLLBACK TO SAVEPOINT a;
SELECT es.es_append('chk-' || :s, NULL, '[{"type": "AfterSavepoint", "data": {}}]');
COMMIT;
},
	# an aborted append
	'ch_abort@1' => q{
\set s random(1, 40)
BEGIN;
SELECT es.es_append('chk-' || :s, NULL, '[{"type": "Gone", "data": {}}]');
ROLLBACK;
},
	# a large event (TOASTed, compressed)
	'ch_big@1' => q{
\set s random(1, 40)
SELECT es.es_append('chk-' || :s, NULL, jsonb_build_array(jsonb_build_object(
       'type', 'Big', 'data', jsonb_build_object('s', repeat(md5(:s::text), 200)))));
});

$node->pgbench(
	'--no-vacuum --client=8 --jobs=4 --transactions=100 --max-tries=100',
	0,
	[
		qr{actually processed: 800/800},
		qr{number of failed transactions: 0 \(0\.000%\)}
	],
	[qr{^$}],
	'pgbench: appends of every shape',
	\%scripts);
chain_problems('after pgbench');
is($node->safe_psql('postgres', q{SELECT count(*) FROM es.events WHERE event_type = 'Gone'}),
	'0', 'no rolled back event is stored');

# more of the same in the background, cut by SIGKILL
my ($bench_out, $bench_err) = ('', '');
my @bench_files =
  map { ('-f', $node->basedir . '/' . $_) } sort keys %scripts;
my $bench = IPC::Run::start(
	[
		'pgbench', '--no-vacuum', '--client=8', '--jobs=4',
		'--time=60', '--max-tries=100', '-h', $node->host, '-p', $node->port,
		@bench_files, 'postgres'
	],
	'>', \$bench_out, '2>', \$bench_err);
my $events_before = $node->safe_psql('postgres', 'SELECT count(*) FROM es.events');
$node->poll_query_until('postgres',
	"SELECT count(*) >= $events_before + 1000 FROM es.events")
  or die 'background pgbench does not append';

# SIGKILL of the postmaster, then of every server process it had (a
# postmaster killed alone leaves its backends running until their clients
# go): the store is left as by a power cut without data loss at the OS
my $pidfile = $node->data_dir . '/postmaster.pid';
my ($pmpid) = split /\n/, slurp_file($pidfile);
my @children;
if (open my $fh, '<', "/proc/$pmpid/task/$pmpid/children")
{
	@children = split ' ', (<$fh> // '');
	close $fh;
}
ok(@children > 8, 'the server has its processes under load (' . scalar(@children) . ')');
$node->kill9;
kill 'KILL', @children;
$bench->finish;    # pgbench lost its connections: its failure is expected
note "background pgbench exited with status " . ($? >> 8);
# wait until every killed process is gone
foreach my $c (@children)
{
	for (my $i = 0; $i < 100 && -e "/proc/$c"; $i++) { usleep(100_000); }
}

$node->start;
ok( $node->log_contains(
		qr/database system was interrupted|not properly shut down; automatic recovery in progress/),
	'the restart ran crash recovery');
chain_problems('after SIGKILL and crash recovery');

# appends go on chaining after the recovery, to every stream
$node->safe_psql('postgres', q{
	SELECT es.es_append('chk-' || i, NULL, '[{"type": "AfterCrash", "data": {}}]')
	  FROM generate_series(1, 40) AS i});
chain_problems('after appends following the recovery');
is( $node->safe_psql('postgres',
		q{SELECT count(*) FROM es.events WHERE event_type = 'AfterCrash'}),
	'40', 'every stream took an append after the recovery');

# the verifier can fail: a superuser's edit past the guards is caught
$node->safe_psql('postgres', q{
	SET session_replication_role = replica;
	UPDATE es.events SET data = '{"i": 2}' WHERE stream_id = 'chk-1' AND version = 3});
like( $node->safe_psql('postgres', 'SELECT stream_id || version || problem FROM chain_ref.problems()'),
	qr/^chk-13hash mismatch/, 'the reference verifier catches an edited event');

$node->stop;
done_testing();
