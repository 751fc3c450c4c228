
# Copyright (c) es_ext contributors
#
# test/t/060_async_worker.pl
#
# The background workers of asynchronous projections, with es_ext in
# shared_preload_libraries: a projection is applied without any client
# call, as the role that declared it; an append wakes the worker at once
# (the nap is an hour); pause stops it, resume restarts it; the failure
# policies run through the worker (retries with backoff visible in the
# registry, then stop; park a dead letter and go on); the worker exits when
# idle and the next append starts a new one; kill -9 of the worker, an
# immediate stop and SIGKILL of the postmaster in the middle of a batch
# leave the read model equal to exactly one application of every event,
# and the projection resumes after the restart without any new append;
# the outbox notify worker of the same launcher still notifies.

use strict;
use warnings;

use Time::HiRes qw(usleep);
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('es_async_worker');
$node->init;
# autovacuum off: an autovacuum transaction holding an xid would hold back
# the log horizon the projections read below
$node->append_conf(
	'postgresql.conf', q{
shared_preload_libraries = 'es_ext'
es.projection_naptime = '1h'
es.projection_worker_idle_timeout = '1h'
restart_after_crash = on
autovacuum = off
max_connections = 40
log_statement = none
});
$node->start;

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

sub sql
{
	my ($query) = @_;
	return $node->safe_psql('postgres', $query);
}

sub worker_pids
{
	return sql(
		q{SELECT coalesce(string_agg(pid::text, ','), '') FROM pg_stat_activity
		   WHERE backend_type = 'es_ext projection worker' AND datname = 'postgres'});
}

# the read model of a category equals exactly one application of each of its events
sub exact
{
	my ($schema, $category) = @_;
	return sql(
		qq{SELECT (SELECT count(*) FROM $schema.seen) = (SELECT count(*) FROM es.events WHERE category = '$category')
		      AND (SELECT count(DISTINCT global_position) FROM $schema.seen) = (SELECT count(*) FROM $schema.seen)
		      AND NOT EXISTS (SELECT stream_id, count(*) FROM es.events WHERE category = '$category' GROUP BY stream_id
		                      EXCEPT SELECT stream_id, n FROM $schema.counts)
		      AND NOT EXISTS (SELECT stream_id, n FROM $schema.counts
		                      EXCEPT SELECT stream_id, count(*) FROM es.events WHERE category = '$category' GROUP BY stream_id)}
	);
}

# A read model in schema $s fed by projection $s (the trigger's name) on
# category $s, declared by role alice.  The handler records who ran it,
# raises on an event whose data has "poison" while $s.cure is empty, and
# sleeps an hour on an event of type Marker while $s.gate is closed.
sub create_projection
{
	my ($s, $options) = @_;
	sql(
		qq{
SET ROLE alice;
CREATE SCHEMA $s;
CREATE TABLE $s.seen (global_position bigint, stream_id text, version bigint, who text);
CREATE TABLE $s.counts (stream_id text PRIMARY KEY, n bigint NOT NULL);
CREATE TABLE $s.cure (x int);
CREATE TABLE $s.gate (open boolean NOT NULL);
INSERT INTO $s.gate VALUES (false);
CREATE FUNCTION $s.on_event(e es.events) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS \$\$
BEGIN
	IF e.data ? 'poison' AND NOT EXISTS (SELECT FROM $s.cure) THEN
		RAISE EXCEPTION 'poisoned event % of %', e.version, e.stream_id USING ERRCODE = 'data_exception';
	END IF;
	IF e.event_type = 'Marker' AND NOT (SELECT open FROM $s.gate) THEN
		PERFORM pg_sleep(3600);
	END IF;
	INSERT INTO $s.seen VALUES (e.global_position, e.stream_id, e.version, current_user);
	INSERT INTO $s.counts VALUES (e.stream_id, 1)
	ON CONFLICT (stream_id) DO UPDATE SET n = $s.counts.n + 1;
END
\$\$;
BEGIN;
CREATE TRIGGER $s AFTER INSERT ON es.events
	FOR EACH ROW EXECUTE FUNCTION es.es_project('$s.on_event');
SELECT es.es_create_async_projection('$s', categories => '{$s}' $options);
COMMIT;
});
}

sub append
{
	my ($stream, $events) = @_;
	$events //= '[{"type": "E", "data": {}}]';
	sql("SELECT es.es_append('$stream', NULL, '$events')");
}

sub state
{
	my ($p) = @_;
	return sql("SELECT state FROM es.async_projections WHERE projection = '$p'");
}

sql(
	q{
CREATE EXTENSION es_ext;
CREATE ROLE alice IN ROLE es_admin;
GRANT CREATE ON DATABASE postgres TO alice;
});

# ---------------------------------------------------------------------
# a projection is applied by the worker, as its owner, without any call;
# appends wake the worker at once (its nap is an hour)
# ---------------------------------------------------------------------
append("pa-$_", '[{"type": "E", "data": {}}, {"type": "E", "data": {}}]') for 1 .. 3;
create_projection('pa', ', batch_size => 2');
ok(wait_until(sub { exact('pa', 'pa') eq 't' }, 30),
	'the worker applied the history of a new projection without any client call');
is(sql(q{SELECT string_agg(DISTINCT who, ',') FROM pa.seen}),
	'alice', 'the handler ran as the role that declared the projection');
my $pid = worker_pids();
like($pid, qr/^\d+$/, 'one projection worker runs for the database');
is( sql(
		"SELECT application_name, backend_type FROM pg_stat_activity WHERE pid = $pid"),
	'es_ext projection worker|es_ext projection worker',
	'it shows as the es_ext projection worker');
is(sql(q{SELECT count(*) FROM pg_stat_activity WHERE pid = } . $pid . q{ AND xact_start IS NOT NULL}),
	'0', 'it holds no transaction open while it sleeps');

my $t0 = time;
append('pa-4');
ok(wait_until(sub { exact('pa', 'pa') eq 't' }, 20), 'an append is applied');
cmp_ok(time - $t0, '<', 20, 'woken by the append, well before its nap ends');
is(worker_pids(), $pid, 'by the same worker');

# ---------------------------------------------------------------------
# pause stops the worker from applying; resume restarts it
# ---------------------------------------------------------------------
sql(q{SET ROLE alice; SELECT es.es_projection_pause('pa')});
append('pa-5');
sleep 2;
is(sql(q{SELECT count(*) FROM pa.seen WHERE stream_id = 'pa-5'}),
	'0', 'a paused projection is not applied');
sql(q{SET ROLE alice; SELECT es.es_projection_resume('pa')});
ok(wait_until(sub { exact('pa', 'pa') eq 't' }, 20), 'resumed, it catches up');

# ---------------------------------------------------------------------
# failures through the worker: retries with backoff, then stop
# ---------------------------------------------------------------------
create_projection('pstop', ', on_error => \'stop\', max_retries => 6');
append('pstop-1');
ok(wait_until(sub { exact('pstop', 'pstop') eq 't' }, 20), 'pstop is applied');
append('pstop-1', '[{"type": "E", "data": {"poison": true}}]');
ok( wait_until(
		sub {
			sql(
				q{SELECT state = 'running' AND attempts >= 2 AND retry_at > now()
				    FROM es.async_projections WHERE projection = 'pstop'}) eq 't';
		},
		30),
	'a failing event is retried with backoff: attempts and retry_at in the registry');
ok(wait_until(sub { state('pstop') eq 'failed' }, 60),
	'after max_retries, the stop policy stops the projection');
is( sql(
		q{SELECT attempts, last_error_sqlstate, last_error LIKE 'poisoned event 2 of pstop-1%'
		    FROM es.async_projections WHERE projection = 'pstop'}),
	'7|22000|t',
	'the registry has the attempts (the first try and max_retries retries), the SQLSTATE and the message');
like(
	sql(q{SELECT state || ' ' || last_error FROM es.projections WHERE projection = 'pstop'}),
	qr/^failed poisoned event/,
	'the view es.projections shows it');
like(slurp_file($node->logfile), qr/ERROR:  poisoned event 2 of pstop-1/,
	'the worker wrote the error to the server log');
append('pstop-2');
sleep 1;
is(sql(q{SELECT count(*) FROM pstop.seen WHERE stream_id = 'pstop-2'}),
	'0', 'a failed projection is not applied');
sql(q{INSERT INTO pstop.cure VALUES (1)});
sql(q{SET ROLE alice; SELECT es.es_projection_resume('pstop')});
ok(wait_until(sub { exact('pstop', 'pstop') eq 't' }, 20),
	'after a fix and resume, it applies the event and goes on');

# ---------------------------------------------------------------------
# the park policy: a dead letter, and the projection goes on
# ---------------------------------------------------------------------
create_projection('ppark', ', on_error => \'park\', max_retries => 1');
append('ppark-1',
	'[{"type": "E", "data": {}}, {"type": "E", "data": {"poison": 1}}, {"type": "E", "data": {}}]');
append('ppark-2');
ok( wait_until(
		sub {
			sql(q{SELECT count(*) FROM ppark.seen}) eq '3';
		},
		30),
	'park: the events around the failing one are applied');
is( sql(
		q{SELECT d.stream_id, d.version, d.sqlstate FROM es.projection_dead_letters AS d
		   WHERE d.projection = 'ppark'}),
	'ppark-1|2|22000',
	'the failing event is a dead letter');
is(state('ppark'), 'running', 'and the projection still runs');
sql(q{INSERT INTO ppark.cure VALUES (1)});
sql(q{SET ROLE alice; SELECT es.es_projection_retry_dead('ppark')});
ok(wait_until(sub { exact('ppark', 'ppark') eq 't' }, 20),
	'a dead letter retried after a fix is applied by the worker');

# ---------------------------------------------------------------------
# idle exit, and a new worker on the next append
# ---------------------------------------------------------------------
sql(q{ALTER SYSTEM SET es.projection_worker_idle_timeout = '1s'});
$node->reload;
append('pa-6');    # the worker reads the setting when it wakes
ok(wait_until(sub { worker_pids() eq '' }, 30), 'an idle projection worker exits')
  or diag(sql(q{SELECT projection, state, checkpoint, retry_at, isolate_until FROM es.async_projections}) . "\n"
	  . sql(q{SELECT era, tx_id, global_position, stream_id FROM es.events ORDER BY 1 DESC, 2 DESC, 3 DESC LIMIT 5}) . "\n"
	  . sql(q{SELECT pid, backend_type, backend_xid, backend_xmin, state, query FROM pg_stat_activity}));
append('pa-7');
ok(wait_until(sub { exact('pa', 'pa') eq 't' }, 20),
	'the next append starts a new worker, which applies it');
isnt(worker_pids(), $pid, 'a new worker');

# a worker that exits idle while a retry is scheduled leaves its time to the
# launcher, which starts a worker when it is due (backoff 200 ms doubling:
# the later retries come after the 1 s idle timeout)
create_projection('pidle', ', on_error => \'stop\', max_retries => 5');
append('pidle-1', '[{"type": "E", "data": {"poison": true}}]');
my %pids;
ok( wait_until(
		sub {
			my $p = worker_pids();
			$pids{$p} = 1 if $p ne '';
			state('pidle') eq 'failed';
		},
		60),
	'retries scheduled after an idle exit happen: the projection reaches its stop policy');
cmp_ok(scalar(keys %pids), '>=', 2, 'the launcher started workers for the retries');
is(sql(q{SELECT attempts FROM es.async_projections WHERE projection = 'pidle'}),
	'6', 'every retry was attempted');
sql(q{ALTER SYSTEM SET es.projection_worker_idle_timeout = '1h'});
$node->reload;

# es.projection_workers = off: no worker; on: they run again
sql(q{ALTER SYSTEM SET es.projection_workers = off});
$node->reload;
append('pa-8');
ok(wait_until(sub { worker_pids() eq '' }, 20), 'es.projection_workers = off stops the worker');
append('pa-9');
sleep 1;
is(sql(q{SELECT count(*) FROM pa.seen WHERE stream_id = 'pa-9'}), '0', 'and nothing is applied');
sql(q{ALTER SYSTEM RESET es.projection_workers});
$node->reload;
ok(wait_until(sub { exact('pa', 'pa') eq 't' }, 20), 'turned on again, the workers catch up');

# ---------------------------------------------------------------------
# crashes in the middle of a batch: exactly once, and resumed without any
# append.  The Marker event makes the handler sleep while the gate of the
# projection is closed; the test opens the gate (committed, so the batch
# passes after the restart) and crashes the worker while it sleeps.
# ---------------------------------------------------------------------
create_projection('pcrash', ', batch_size => 50');
append('pcrash-1');
ok(wait_until(sub { exact('pcrash', 'pcrash') eq 't' }, 20), 'pcrash is applied');

sub sleeping_worker
{
	return wait_until(
		sub {
			sql(
				q{SELECT count(*) FROM pg_stat_activity
				   WHERE backend_type = 'es_ext projection worker' AND wait_event = 'PgSleep'}) eq '1';
		},
		30);
}

sub batch_in_the_middle
{
	my ($label) = @_;
	sql(q{UPDATE pcrash.gate SET open = false});
	# one transaction: events, the marker, more events, on two streams
	append('pcrash-1',
		'[{"type": "E", "data": {}}, {"type": "E", "data": {}}, {"type": "Marker", "data": {}}, {"type": "E", "data": {}}]'
	);
	ok(sleeping_worker(), "$label: the worker sleeps in the middle of a batch");
	sql(q{UPDATE pcrash.gate SET open = true; CHECKPOINT});
	return sql(
		q{SELECT pid FROM pg_stat_activity
		   WHERE backend_type = 'es_ext projection worker' AND wait_event = 'PgSleep'});
}

sub resumed
{
	my ($label) = @_;
	ok(wait_until(sub { exact('pcrash', 'pcrash') eq 't' }, 60),
		"$label: after the restart, without any append, the read model equals exactly one application of every event");
	is(sql(q{SELECT count(*) FROM pcrash.seen WHERE stream_id = 'pcrash-1'}),
		sql(q{SELECT count(*) FROM es.events WHERE stream_id = 'pcrash-1'}),
		"$label: every event of the stream once");
	ok(exact('pa', 'pa') eq 't' && exact('pstop', 'pstop') eq 't' && exact('ppark', 'ppark') eq 't',
		"$label: the other projections are exact too");
}

# kill -9 of the worker: the postmaster restarts the cluster
my $victim = batch_in_the_middle('kill -9 of the worker');
my $events_before = sql(q{SELECT count(*) FROM es.events});
kill 'KILL', $victim;
ok( wait_until(
		sub {
			my ($ok) = $node->psql('postgres', 'SELECT 1');
			$ok == 0 && slurp_file($node->logfile) =~ /all server processes terminated; reinitializing/;
		},
		60),
	'kill -9 of the worker: the cluster restarted');
resumed('kill -9 of the worker');
is(sql(q{SELECT count(*) FROM es.events}), $events_before, 'no event was appended meanwhile');

# immediate stop of the postmaster in the middle of a batch
batch_in_the_middle('immediate stop');
$node->stop('immediate');
$node->start;
resumed('immediate stop');

# SIGKILL of the postmaster in the middle of a batch (its children exit
# when they notice; the next start waits for them)
batch_in_the_middle('SIGKILL of the postmaster');
my $postmaster = $node->{_pid};
$node->kill9;
ok(wait_until(sub { !kill(0, $postmaster) }, 30), 'SIGKILL of the postmaster: it is gone');
ok( wait_until(
		sub {
			return 1 if $node->start(fail_ok => 1);
			# its children still hold the shared memory: try again
			delete $node->{_pid};
			return 0;
		},
		60),
	'SIGKILL of the postmaster: the cluster starts again');
resumed('SIGKILL of the postmaster');

# ---------------------------------------------------------------------
# a database without es_ext or without projections holds no worker; the
# notify worker of the same launcher still notifies
# ---------------------------------------------------------------------
$node->safe_psql('postgres', 'CREATE DATABASE plain');
$node->restart;
ok(wait_until(sub { exact('pa', 'pa') eq 't' && worker_pids() ne '' }, 30),
	'after a restart, the worker of the database with projections runs again');
sleep 2;
is( sql(
		q{SELECT count(*) FROM pg_stat_activity
		   WHERE backend_type = 'es_ext projection worker' AND datname = 'plain'}),
	'0',
	'no projection worker stays in a database without es_ext');
$node->safe_psql('postgres', 'DROP DATABASE plain');
pass('DROP DATABASE of a database that was probed succeeds');

sql(q{SELECT es.es_outbox_route('nt'); SELECT es.es_outbox_create_group('nt')});
my $listener = $node->background_psql('postgres');
$listener->query_safe('LISTEN es_outbox');
append('nt-1');
my $notified = '';
ok( wait_until(
		sub {
			$notified .= $listener->query_safe('SELECT 1');
			return $notified =~ /Asynchronous notification "es_outbox" received/;
		}),
	'the outbox listener is notified');
my ($sender) = $notified =~ /received from server process with PID (\d+)/;
is( sql(q{SELECT worker_pid FROM es.es_outbox_notify_status()}),
	$sender, 'by the notify worker');
$listener->quit;

$node->stop;
done_testing();
