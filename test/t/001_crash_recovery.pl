
# Copyright (c) es_ext contributors
#
# test/t/001_crash_recovery.pl
#
# Crash safety of es_append.  Streams and events are written in one
# transaction, so after any crash every stream's version equals its event
# count, versions are contiguous 1..N, every committed append is there in
# full and no uncommitted one left a trace.
#
# Scenario 1: concurrent appends with pgbench (any-version single events and
# small batches, exact-version appends retried on 40001), then an immediate
# shutdown while more appends run, with a marker batch committed just
# before it.  Scenario 2: a backend killed with SIGKILL in the middle of an
# append transaction; the postmaster restarts the cluster.

use strict;
use warnings;

use IPC::Run;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('es_crash');
$node->init;
# autovacuum off: an autovacuum transaction holding an xid would hold back
# the horizon of the es_read_all checks below
$node->append_conf(
	'postgresql.conf', q{
max_connections = 40
autovacuum = off
restart_after_crash = on
log_statement = none
});
$node->start;
$node->safe_psql('postgres', 'CREATE EXTENSION es_ext');

# Check the invariants of the event store; $label names the moment.
sub check_invariants
{
	my ($label) = @_;

	is( $node->safe_psql(
			'postgres', q{
		SELECT count(*) FROM es.streams AS s
		 WHERE s.version <> (SELECT count(*) FROM es.events AS e
							  WHERE e.stream_id = s.stream_id)}),
		'0',
		"$label: every stream's version equals its event count");

	is( $node->safe_psql(
			'postgres', q{
		SELECT count(*)
		  FROM (SELECT version,
					   row_number() OVER (PARTITION BY stream_id ORDER BY version) AS rn
				  FROM es.events) AS t
		 WHERE version <> rn}),
		'0',
		"$label: versions are contiguous 1..N in every stream");

	is( $node->safe_psql(
			'postgres', q{
		SELECT count(*)
		  FROM es.streams AS s
		  FULL JOIN (SELECT stream_id, max(version) AS max_version
					   FROM es.events GROUP BY stream_id) AS e USING (stream_id)
		 WHERE s.version IS DISTINCT FROM e.max_version}),
		'0',
		"$label: no stream's max(version) differs from es.streams.version, no events without a stream"
	);

	is( $node->safe_psql(
			'postgres',
			'SELECT count(*) - count(DISTINCT global_position) FROM es.events'),
		'0',
		"$label: global positions are unique");

	# A subscriber paging through the whole log from the start, 100 events at
	# a time, gets every event exactly once.
	is( $node->safe_psql(
			'postgres', q{
		DO $$
		DECLARE
			cur		es.log_cursor;
			r		record;
			n		bigint := 0;
			got		boolean;
		BEGIN
			CREATE TEMP TABLE seen (event_id uuid, stream_id text);
			LOOP
				got := false;
				FOR r IN SELECT * FROM es.es_read_all(cur, 100) LOOP
					INSERT INTO seen VALUES (r.event_id, r.stream_id);
					cur := r.log_cursor;
					got := true;
				END LOOP;
				EXIT WHEN NOT got;
			END LOOP;
		END
		$$;
		SELECT (SELECT count(*) FROM es.events) - count(*),
			   count(*) - count(DISTINCT (stream_id, event_id))
		  FROM seen}),
		'0|0',
		"$label: es_read_all paged from the start returns every event exactly once"
	);
	return;
}

# ---------------------------------------------------------------------
# Scenario 1: pgbench, then an immediate shutdown under load
# ---------------------------------------------------------------------

my %scripts = (
	# one event, any version
	'es_single@4' => q{
\set s random(1, 50)
SELECT es.es_append('crash-' || :s, NULL, '[{"type": "Single", "data": {"k": 1}}]');
},
	# a batch of 2 to 5 events, any version
	'es_batch@3' => q{
\set s random(1, 50)
\set n random(2, 5)
SELECT es.es_append('crash-' || :s, NULL,
       (SELECT jsonb_agg(jsonb_build_object('type', 'Batch', 'data', jsonb_build_object('i', i)))
          FROM generate_series(1, :n) AS i));
},
	# read the version, then append at exactly that version: conflicts with
	# the concurrent appends raise 40001 and pgbench retries the transaction
	'es_exact@3' => q{
\set s random(1, 50)
BEGIN;
SELECT es.es_stream_version('crash-' || :s) AS v \gset
SELECT es.es_append('crash-' || :s, :v, '[{"type": "Exact", "data": {}}]');
COMMIT;
});

$node->pgbench(
	'--no-vacuum --client=8 --jobs=4 --transactions=150 --max-tries=100',
	0,
	[
		qr{actually processed: 1200/1200},
		qr{number of failed transactions: 0 \(0\.000%\)}
	],
	[qr{^$}],
	'concurrent appends with pgbench',
	\%scripts);

# The exact-version script did run into conflicts (each one is logged as an
# ERROR by the server) and pgbench retried them all: no failed transaction.
my $conflicts = () =
  slurp_file($node->logfile) =~ /ERROR:  wrong expected version for stream "crash-/g;
note "pgbench retried $conflicts expected-version conflicts";
cmp_ok($conflicts, '>', 0,
	'exact-version appends conflicted (40001) and were retried');

check_invariants('after pgbench');

is( $node->safe_psql(
		'postgres',
		"SELECT count(*) FROM es.streams WHERE stream_id LIKE 'crash-%'"),
	'50',
	'pgbench appended to all 50 streams');

# More appends in the background, to be cut short by the immediate stop.
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

# wait until the background run has committed a few hundred more events
my $events_before = $node->safe_psql('postgres', 'SELECT count(*) FROM es.events');
$node->poll_query_until('postgres',
	"SELECT count(*) >= $events_before + 300 FROM es.events")
  or die 'background pgbench does not append';

# the marker batch: committed (safe_psql returns after COMMIT) right before
# the crash
is( $node->safe_psql(
		'postgres', q{
	SELECT (es.es_append('marker-1', 0,
			(SELECT jsonb_agg(jsonb_build_object('type', 'Marker', 'data', jsonb_build_object('i', i))
							  ORDER BY i)
			   FROM generate_series(1, 25) AS i))).version}),
	'25',
	'marker batch of 25 events committed');

# what was committed before the crash (in-flight appends may still commit
# between this query and the stop, so the versions after the restart can
# only be higher)
my $versions_before = $node->safe_psql('postgres',
	"SELECT string_agg(stream_id || '=' || version, ',' ORDER BY stream_id) FROM es.streams"
);

$node->stop('immediate');
$bench->finish;    # pgbench lost its connections: its failure is expected
note "background pgbench exited with status " . ($? >> 8);

$node->start;
ok( $node->log_contains(
		qr/database system was not properly shut down; automatic recovery in progress/),
	'the restart after the immediate stop ran crash recovery');

check_invariants('after immediate stop');

is( $node->safe_psql(
		'postgres', q{
	SELECT s.version, count(e.*),
		   string_agg(e.version::text, ',' ORDER BY e.version)
			 = (SELECT string_agg(i::text, ',' ORDER BY i) FROM generate_series(1, 25) AS i),
		   bool_and(e.data->>'i' = e.version::text AND e.event_type = 'Marker')
	  FROM es.streams AS s JOIN es.events AS e USING (stream_id)
	 WHERE s.stream_id = 'marker-1'
	 GROUP BY s.version}),
	'25|25|t|t',
	'the marker batch committed before the crash is there in full, in order');

my $lost = $node->safe_psql(
	'postgres', qq{
	SELECT count(*)
	  FROM unnest(string_to_array('$versions_before', ',')) AS b(entry)
	  LEFT JOIN es.streams AS s ON s.stream_id = split_part(b.entry, '=', 1)
	 WHERE s.version IS NULL OR s.version < split_part(b.entry, '=', 2)::bigint});
is($lost, '0', 'no stream lost an append committed before the crash');

# appending still works and takes fresh positions and versions
my $max_position =
  $node->safe_psql('postgres', 'SELECT max(global_position) FROM es.events');
my $crash1_version =
  $node->safe_psql('postgres', "SELECT es.es_stream_version('crash-1')");
is( $node->safe_psql(
		'postgres', qq{
	SELECT r.version = $crash1_version + 2, r.positions[1] > $max_position
	  FROM es.es_append('crash-1', $crash1_version,
			'[{"type": "After", "data": {}}, {"type": "After", "data": {}}]') AS r}),
	't|t',
	'an append after recovery continues the stream and takes new positions');

# ---------------------------------------------------------------------
# Scenario 2: SIGKILL of a backend in the middle of an append transaction
# ---------------------------------------------------------------------

my $crash7_version =
  $node->safe_psql('postgres', "SELECT es.es_stream_version('crash-7')");
my $events_total = $node->safe_psql('postgres', 'SELECT count(*) FROM es.events');

my $doomed = $node->background_psql('postgres', on_error_stop => 0);
$doomed->query_until(
	qr/appended/, q{
BEGIN;
SELECT es.es_append('doomed-1', 0,
       (SELECT jsonb_agg(jsonb_build_object('type', 'Doomed', 'data', jsonb_build_object('i', i)))
          FROM generate_series(1, 10) AS i));
SELECT es.es_append('crash-7', NULL, '[{"type": "Doomed", "data": {}}, {"type": "Doomed", "data": {}}]');
\echo appended
SELECT pg_sleep(600);
});

# the sleeping backend, found in pg_stat_activity, holds the horizon
$node->poll_query_until('postgres',
	"SELECT count(*) = 1 FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(600);' AND state = 'active'"
) or die 'the appending session does not sleep';
my $pid = $node->safe_psql('postgres',
	"SELECT pid FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(600);' AND state = 'active'"
);
is( $node->safe_psql(
		'postgres', "SELECT count(*) FROM es.horizon_holders WHERE pid = $pid"),
	'1',
	'the open append transaction is listed in es.horizon_holders');

# an append committed while the doomed one is open: not readable yet
is( $node->safe_psql(
		'postgres',
		q{SELECT (es.es_append('later-1', 0, '[{"type": "Later", "data": {}}]')).version}),
	'1',
	'an append commits while the doomed transaction is open');
is( $node->safe_psql(
		'postgres', "SELECT count(*) FROM es.es_read_all(NULL, 1000, 'later')"),
	'0',
	'es_read_all holds back the later commit while the doomed transaction is open');

my $log_offset = -s $node->logfile;
kill 'KILL', $pid or die "could not kill backend $pid: $!";

$node->wait_for_log(qr/all server processes terminated; reinitializing/,
	$log_offset);
$node->poll_query_until('postgres', 'SELECT true')
  or die 'the server does not come back after the crash';
ok( $node->log_contains(
		qr/server process \(PID $pid\) was terminated by signal 9/, $log_offset),
	'the postmaster saw the killed backend and restarted');

# psql lost its connection; reap it
eval { $doomed->quit; };

is( $node->safe_psql(
		'postgres', q{
	SELECT es.es_stream_version('doomed-1'),
		   (SELECT count(*) FROM es.events WHERE stream_id = 'doomed-1'),
		   (SELECT count(*) FROM es.streams WHERE stream_id = 'doomed-1'),
		   (SELECT count(*) FROM es.events WHERE event_type = 'Doomed')}),
	'0|0|0|0',
	'the uncommitted batch of the killed backend is absent');
is($node->safe_psql('postgres', "SELECT es.es_stream_version('crash-7')"),
	$crash7_version,
	'the killed append did not advance the existing stream');
is( $node->safe_psql('postgres', 'SELECT count(*) FROM es.events'),
	$events_total + 1,
	'only the committed later append was added');
is( $node->safe_psql(
		'postgres',
		"SELECT string_agg(stream_id || ':' || version || ':' || event_type, ',') FROM es.es_read_all(NULL, 1000, 'later')"
	),
	'later-1:1:Later',
	'once the killed transaction is gone, es_read_all returns the later commit');

check_invariants('after backend crash');

$node->stop;
done_testing();
