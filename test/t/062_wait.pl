
# Copyright (c) es_ext contributors
#
# test/t/062_wait.pl
#
# Read-your-writes waits on a server where es_ext is preloaded: the
# sleepers of es_wait_for_checkpoint, es_wait_for_group and es_wait_for
# sleep on a condition variable in shared memory and are woken by the
# commit that makes progress (es_checkpoint_save, an outbox ack, a batch of
# an asynchronous projection).
#
#  - a waiter with a long timeout sleeps (wait event type Extension), and
#    returns true soon after another session commits the progress, well
#    before its timeout; likewise for a consumer group and an asynchronous
#    projection;
#  - a checkpoint saved by a prepared transaction is seen after COMMIT
#    PREPARED, which wakes nobody (the periodic recheck finds it);
#  - pg_cancel_backend interrupts a wait, and the session goes on;
#  - several waiters are all woken by one commit.
#
# Only "before the timeout" is asserted about time: no speed bounds.

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('es_wait');
$node->init;
$node->append_conf(
	'postgresql.conf', q{
shared_preload_libraries = 'es_ext'
max_prepared_transactions = 5
});
$node->start;
$node->safe_psql('postgres', 'CREATE EXTENSION es_ext');

sub sq { return $node->safe_psql('postgres', $_[0]); }

# a committed append's token
sub append_token
{
	my ($stream) = @_;
	return sq(
		qq{SELECT (es.es_append('$stream', NULL, '[{"type": "T", "data": {}}]')).token});
}

# start $sql (a boolean) in background session $s; return once the backend
# sleeps in the wait
sub start_wait
{
	my ($s, $sql) = @_;
	my $pid = $s->query_safe('SELECT pg_backend_pid()');
	$s->query_until(qr/started/,
		"\\echo started\nSELECT ($sql) AS reached, clock_timestamp() AS done_at;\n");
	$node->poll_query_until('postgres',
		qq{SELECT wait_event_type = 'Extension' AND state = 'active' FROM pg_stat_activity WHERE pid = $pid})
	  or die "the waiter does not sleep";
	return $pid;
}

# the result of the wait started in $s: (reached, seconds since $since)
sub finish_wait
{
	my ($s, $since) = @_;
	my $out = $s->query_safe('SELECT 1');
	my ($reached, $done_at) = split /\|/, (split /\n/, $out)[0];
	my $secs = sq("SELECT extract(epoch FROM '$done_at'::timestamptz - '$since'::timestamptz)");
	note "the wait returned $reached, $secs s after the progress began";
	return ($reached, $secs);
}

# ---------------------------------------------------------------------
# a subscriber checkpoint: woken by the commit of es_checkpoint_save
# ---------------------------------------------------------------------
my $token = append_token('tw-1');
my $waiter = $node->background_psql('postgres');
start_wait($waiter, "es.es_wait_for_checkpoint('tw_sub', '$token', '300 s')");
my $t0 = sq('SELECT clock_timestamp()');
sq("SELECT es.es_checkpoint_save('tw_sub', '$token')");
my ($reached, $secs) = finish_wait($waiter, $t0);
is($reached, 't', 'the checkpoint waiter returns true after the commit');
cmp_ok($secs, '<', 300, 'it was woken before its timeout');

# ---------------------------------------------------------------------
# a consumer group: woken by the commit of the ack
# ---------------------------------------------------------------------
sq("SELECT es.es_outbox_route('twg')");
sq("SELECT es.es_outbox_create_group('tw_g')");
$token = append_token('twg-1');
start_wait($waiter, "es.es_wait_for_group('tw_g', '$token', '300 s')");
$t0 = sq('SELECT clock_timestamp()');
is( sq(
		q{SELECT es.es_outbox_ack('tw_g', c.lease, array_agg(c.position))
		    FROM es.es_outbox_claim('tw_g', 10, '1 minute') AS c GROUP BY c.lease}),
	'1',
	'the group acks its message');
($reached, $secs) = finish_wait($waiter, $t0);
is($reached, 't', 'the group waiter returns true after the ack commits');
cmp_ok($secs, '<', 300, 'it was woken before its timeout');

# ---------------------------------------------------------------------
# an asynchronous projection: woken by the commit of a batch
# ---------------------------------------------------------------------
sq(
	q{CREATE TABLE tw_seen (global_position bigint);
CREATE FUNCTION tw_on(e es.events) RETURNS void LANGUAGE sql
	AS $$ INSERT INTO public.tw_seen VALUES (e.global_position) $$;
BEGIN;
CREATE TRIGGER tw_proj AFTER INSERT ON es.events FOR EACH ROW EXECUTE FUNCTION es.es_project('public.tw_on');
SELECT es.es_create_async_projection('tw_proj', categories => ARRAY['twp']);
-- paused, so that the projection worker cannot apply the event before the waiter sleeps
SELECT es.es_projection_pause('tw_proj');
COMMIT;});
$token = append_token('twp-1');
start_wait($waiter, "es.es_wait_for('tw_proj', '$token', '300 s')");
$t0 = sq('SELECT clock_timestamp()');
# the worker (woken by the resume) or this call applies it: either commit wakes the waiter
sq(q{SELECT es.es_projection_resume('tw_proj')});
sq(q{CALL es.es_run_projections('tw_proj')});
($reached, $secs) = finish_wait($waiter, $t0);
is($reached, 't', 'the projection waiter returns true after the batch commits');
cmp_ok($secs, '<', 300, 'it was woken before its timeout');
is(sq('SELECT count(*) FROM tw_seen'), '1', 'the read model holds the event');

# ---------------------------------------------------------------------
# several waiters, one commit
# ---------------------------------------------------------------------
$token = append_token('tw-2');
my @waiters = map { $node->background_psql('postgres') } 1 .. 3;
start_wait($_, "es.es_wait_for_checkpoint('tw_sub', '$token', '300 s')") for @waiters;
$t0 = sq('SELECT clock_timestamp()');
sq("SELECT es.es_checkpoint_save('tw_sub', '$token')");
for my $i (0 .. $#waiters)
{
	($reached, $secs) = finish_wait($waiters[$i], $t0);
	is($reached, 't', "waiter $i of 3 returns true");
	cmp_ok($secs, '<', 300, "waiter $i of 3 was woken before its timeout");
}
$_->quit for @waiters;

# ---------------------------------------------------------------------
# a prepared transaction: COMMIT PREPARED wakes nobody, the recheck finds it
# ---------------------------------------------------------------------
$token = append_token('tw-3');
sq(
	qq{BEGIN;
SELECT es.es_checkpoint_save('tw_sub', '$token');
PREPARE TRANSACTION 'tw_prepared';});
start_wait($waiter, "es.es_wait_for_checkpoint('tw_sub', '$token', '300 s')");
$t0 = sq('SELECT clock_timestamp()');
sq(q{COMMIT PREPARED 'tw_prepared'});
($reached, $secs) = finish_wait($waiter, $t0);
is($reached, 't', 'the waiter sees the checkpoint of a committed prepared transaction');
cmp_ok($secs, '<', 300, 'before its timeout');

# ---------------------------------------------------------------------
# pg_cancel_backend interrupts a wait
# ---------------------------------------------------------------------
my $cancelled = $node->background_psql('postgres', on_error_stop => 0);
my $pid = start_wait($cancelled, "es.es_wait_for_checkpoint('tw_nobody', '$token', '300 s')");
is(sq("SELECT pg_cancel_backend($pid)"), 't', 'cancel the waiter');
my ($out, $failed) = $cancelled->query('SELECT 1');
like($cancelled->{stderr}, qr/canceling statement due to user request/,
	'the wait is cancelled');
$cancelled->{stderr} = '';
is($cancelled->query_safe('SELECT es.es_wait_for_checkpoint(\'tw_sub\', \'' . $token . '\', \'0\')'),
	't', 'the session goes on');
$cancelled->quit;
$waiter->quit;

$node->stop;
done_testing();
