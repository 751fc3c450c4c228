
# Copyright (c) es_ext contributors
#
# test/t/063_lifecycle.pl
#
# The data lifecycle (issue 15) across crashes and in the background:
#   1. a backend killed with SIGKILL in the middle of an erasure (the events
#      deleted, the tombstone appended, not committed) and in the middle of a
#      retention run: after the crash restart nothing is half-done — the
#      stream has all its events, no tombstone, no audit row, its old
#      first_version and base_hash, its snapshots and outbox rows;
#   2. the same for an archive;
#   3. the retention worker (es_ext preloaded, es.retention_interval = 1s,
#      es.retention_role set): it applies a policy by itself, as that role,
#      and without es.retention_role it does not run.

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('es_lifecycle');
$node->init;
$node->append_conf('postgresql.conf', qq{
shared_preload_libraries = 'es_ext'
restart_after_crash = on
});
$node->start;
$node->safe_psql('postgres', q{
CREATE EXTENSION es_ext;
CREATE ROLE ret_worker LOGIN IN ROLE es_admin;
SELECT es.es_outbox_route('crash');
SELECT es.es_outbox_create_group('crash_group');
SELECT es.es_append('crash-' || i, 0,
	'[{"type": "A", "data": {"n": 1}}, {"type": "A", "data": {"n": 2}}, {"type": "A", "data": {"n": 3}}, {"type": "A", "data": {"n": 4}}]')
  FROM generate_series(1, 3) AS i;
CREATE FUNCTION public.count_events(state jsonb, event jsonb) RETURNS jsonb LANGUAGE sql IMMUTABLE AS $$
	SELECT jsonb_build_object('n', coalesce((state->>'n')::int, 0) + 1) $$;
SELECT es.es_snapshot_save('crash-1', 'public.count_events(jsonb, jsonb)', '{}', 2);
SELECT es.es_snapshot_save('crash-2', 'public.count_events(jsonb, jsonb)', '{}', 1);
SELECT es.es_set_retention(NULL, 'crash-2', NULL, 1);
});

# everything the lifecycle functions write, for the streams crash-*
my $state = q{
SELECT concat_ws(E'\n',
	(SELECT string_agg(concat_ws('|', stream_id, version, first_version, base_hash, archived_at, erased_at), E'\n' ORDER BY stream_id)
	   FROM es.streams WHERE category = 'crash'),
	(SELECT string_agg(concat_ws('|', stream_id, version, event_type, hash), E'\n' ORDER BY stream_id, version)
	   FROM es.events WHERE category = 'crash'),
	(SELECT count(*) FROM es.archived_events),
	(SELECT count(*) FROM es.erasures),
	(SELECT string_agg(concat_ws('|', stream_id, version), ',' ORDER BY stream_id, version) FROM es.snapshots),
	(SELECT count(*) FROM es.outbox WHERE aggregatetype = 'crash'),
	(SELECT count(*) FROM es.outbox_deliveries))};
my $before = $node->safe_psql('postgres', $state);

# run $sql (which must end by echoing "done") in a session, wait until it
# sleeps inside its transaction, and kill its backend with SIGKILL
sub kill_in_the_middle
{
	my ($label, $sql) = @_;
	my $doomed = $node->background_psql('postgres', on_error_stop => 0);
	$doomed->query_until(qr/done/, "BEGIN;\n$sql\n\\echo done\nSELECT pg_sleep(600);\n");
	$node->poll_query_until('postgres',
		"SELECT count(*) = 1 FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(600);' AND state = 'active'")
	  or die "$label: the session does not sleep";
	my $pid = $node->safe_psql('postgres',
		"SELECT pid FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(600);' AND state = 'active'");
	my $log_offset = -s $node->logfile;
	kill 'KILL', $pid or die "could not kill backend $pid: $!";
	$node->wait_for_log(qr/all server processes terminated; reinitializing/, $log_offset);
	$node->poll_query_until('postgres', 'SELECT true')
	  or die "$label: the server does not come back after the crash";
	ok($node->log_contains(qr/server process \(PID $pid\) was terminated by signal 9/, $log_offset),
		"$label: the backend was killed and the server restarted");
	eval { $doomed->quit; };
	is($node->safe_psql('postgres', $state), $before, "$label: nothing is half-done after the crash");
	return;
}

# the erasure has deleted and appended its tombstone in the doomed transaction
kill_in_the_middle('SIGKILL in the middle of an erasure', q{
SELECT events FROM es.es_erase_stream('crash-1', 'crash test');
SELECT count(*) FROM es.events WHERE stream_id = 'crash-1';});
kill_in_the_middle('SIGKILL in the middle of a retention run', q{
SELECT * FROM es.es_apply_retention(2);});
kill_in_the_middle('SIGKILL in the middle of an archive', q{
SELECT es.es_archive_stream('crash-3');});

# the same calls, committed, after the crashes: they do what they say
is($node->safe_psql('postgres', q{
	SELECT (SELECT events FROM es.es_erase_stream('crash-1', 'after the crash')) || '|'
		|| (SELECT events FROM es.es_apply_retention()) || '|'
		|| es.es_archive_stream('crash-3')}),
	'4|3|4', 'after the crashes, erasure, retention and archive work');
is($node->safe_psql('postgres', q{
	SELECT string_agg(concat_ws('|', stream_id, version, first_version, archived_at IS NOT NULL, erased_at IS NOT NULL), ',' ORDER BY stream_id)
	  FROM es.streams WHERE category = 'crash'}),
	'crash-1|5|5|f|t,crash-2|4|4|f|f,crash-3|4|1|t|f', 'the streams are erased, retained and archived');
is($node->safe_psql('postgres', q{SELECT count(*) FROM es.outbox WHERE aggregateid = 'crash-1' AND type <> 'es.stream_erased'}),
	'0', 'the erased stream\'s outbox messages are gone');

# ---------------------------------------------------------------------
# The retention worker
# ---------------------------------------------------------------------

# without es.retention_role it does not run
$node->append_conf('postgresql.conf', "es.retention_interval = 1\n");
my $offset = -s $node->logfile;
$node->restart;
$node->safe_psql('postgres', q{
SELECT es.es_append('worker-1', 0,
	'[{"type": "A", "data": {}}, {"type": "A", "data": {}}, {"type": "A", "data": {}}, {"type": "A", "data": {}}, {"type": "A", "data": {}}]');
SELECT es.es_set_retention(NULL, 'worker-1', NULL, 2);});
ok($node->poll_query_until('postgres', q{SELECT true}), 'the server runs with es.retention_interval set');
ok($node->wait_for_log(qr/es_ext retention worker exits: es.retention_role is not set/, $offset),
	'without es.retention_role the worker says why it does not run');
sleep(3);
is($node->safe_psql('postgres', q{SELECT first_version FROM es.streams WHERE stream_id = 'worker-1'}),
	'1', 'and nothing was removed');

# with it, the worker applies the policy by itself, as that role
$node->append_conf('postgresql.conf', "es.retention_role = 'ret_worker'\n");
$node->restart;
ok($node->poll_query_until('postgres',
		q{SELECT first_version = 4 FROM es.streams WHERE stream_id = 'worker-1'}),
	'the retention worker applied the policy');
is($node->safe_psql('postgres', q{
	SELECT usename || '|' || datname FROM pg_stat_activity WHERE backend_type = 'es_ext retention worker'}),
	'ret_worker|postgres', 'it runs as es.retention_role in es.retention_database');
# a new append beyond the policy is retained at the next interval
$node->safe_psql('postgres', q{SELECT es.es_append('worker-1', 5, '[{"type": "A", "data": {}}]')});
ok($node->poll_query_until('postgres',
		q{SELECT first_version = 5 FROM es.streams WHERE stream_id = 'worker-1'}),
	'and goes on applying it');

# a reload to 0 pauses it
$node->append_conf('postgresql.conf', "es.retention_interval = 0\n");
$node->reload;
sleep(2);
$node->safe_psql('postgres', q{SELECT es.es_append('worker-1', 6, '[{"type": "A", "data": {}}, {"type": "A", "data": {}}]')});
sleep(3);
is($node->safe_psql('postgres', q{SELECT first_version FROM es.streams WHERE stream_id = 'worker-1'}),
	'5', 'es.retention_interval = 0 pauses the worker');

$node->stop;
done_testing();
