
# Copyright (c) es_ext contributors
#
# test/t/052_stats.pl
#
# The statistics of es_ext on a server where it is preloaded
# (shared_preload_libraries): es.stats, es.category_stats, the throughput
# columns of es.outbox_status, es_stats_reset() and the settings
# es.track_stats and es.stats_max_categories.
#
#  - every counter moves by exactly what was done: appends, events, bytes,
#    expected-version conflicts, idempotent replays, refused batches, reads
#    of streams and of the log, folds and snapshot hits, outbox claims,
#    acks, nacks and dead letters; the latency percentiles are ordered;
#  - counts stay exact under concurrent appenders (pgbench);
#  - es.track_stats = off counts nothing; es_stats_reset() zeroes this
#    database only; a role without pg_read_all_stats sees only its own
#    database; past es.stats_max_categories a category is counted in the
#    database row only (untracked);
#  - a restart keeps the counters (the postmaster saves them when it shuts
#    down, even in immediate mode), a crash resets them (as
#    pg_stat_statements does).

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('es_stats');
$node->init;
$node->append_conf(
	'postgresql.conf', q{
shared_preload_libraries = 'es_ext'
es.stats_max_categories = 5
es.snapshot_every = 5
restart_after_crash = on
autovacuum = off
});
$node->start;
$node->safe_psql('postgres', 'CREATE EXTENSION es_ext');

sub sq { return $node->safe_psql('postgres', $_[0]); }

# one row of es.stats for this database, as "col=value" pairs
sub db_stats
{
	my ($cols) = @_;
	return sq("SELECT $cols FROM es.stats WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())");
}

sub cat_stats
{
	my ($cat, $cols) = @_;
	return sq("SELECT $cols FROM es.category_stats WHERE category = '$cat'");
}

is(sq('SHOW es.stats_max_categories'), '5', 'es.stats_max_categories is defined when preloaded');
is(db_stats('enabled'), 't', 'es.stats says the counters are on');
is(db_stats('appends || \'/\' || events || \'/\' || conflicts'), '0/0/0',
	'a new database starts from zero');

# ---------------------------------------------------------------- appends
sq(q{SELECT es.es_append('order-1', 0, '[{"type": "A", "data": {"n": 1}}, {"type": "B", "data": {"n": 2}}]')});
sq(q{SELECT es.es_append('order-2', NULL, '[{"type": "A", "data": {"n": 3}, "metadata": {"m": 1}}]')});
sq(q{SELECT es.es_append('cart-1', NULL, '[{"id": "00000000-0000-0000-0000-000000000001", "type": "A", "data": {}}]')});
# an idempotent replay of the same batch
sq(q{SELECT es.es_append('cart-1', NULL, '[{"id": "00000000-0000-0000-0000-000000000001", "type": "A", "data": {}}]')});
# an expected-version conflict
my ($rc, $out, $err) = $node->psql('postgres',
	q{SELECT es.es_append('order-1', 0, '[{"type": "A", "data": {}}]')});
like($err, qr/wrong expected version/, 'a conflict is raised');
# refused batches: a bad batch for a stream (counted in its category), a
# bad stream id (counted in the database only), a reused event id
$node->psql('postgres', q{SELECT es.es_append('order-3', NULL, '[{"type": "A"}]')});
$node->psql('postgres', q{SELECT es.es_append('', NULL, '[{"type": "A", "data": {}}]')});
$node->psql('postgres',
	q{SELECT es.es_append('cart-1', NULL, '[{"id": "00000000-0000-0000-0000-000000000001", "type": "A", "data": {"x": 1}}]')});

is(db_stats('appends || \'/\' || events || \'/\' || conflicts || \'/\' || idempotent_replays || \'/\' || refused_batches'),
	'3/4/1/1/3', 'database: appends, events, conflicts, replays, refused batches');
is(cat_stats('order', 'appends || \'/\' || events || \'/\' || conflicts || \'/\' || idempotent_replays || \'/\' || refused_batches'),
	'2/3/1/0/1', 'category order: appends, events, conflicts, replays, refused batches');
is(cat_stats('cart', 'appends || \'/\' || events || \'/\' || idempotent_replays || \'/\' || refused_batches'),
	'1/1/1/1', 'category cart: appends, events, replays, refused batches (a reused id)');
# (small values: a one-byte varlena header on disk, not counted)
is(db_stats('data_bytes'),
	sq(q{SELECT sum(pg_column_size(data) - 1 + coalesce(pg_column_size(metadata) - 1, 0)) FROM es.events}),
	'data_bytes is the size of the data and metadata written (jsonb)');
is(db_stats('mean_append_time > 0 AND p50_append_time > 0 AND p50_append_time <= p99_append_time
			 AND p99_append_time <= max_append_time * 1.07'),
	't', 'append latency: mean, p50 <= p99 <= max (within a bucket)');

# ---------------------------------------------------------------- reads, folds
sq(q{SELECT count(*) FROM es.es_read_stream('order-1')});
sq(q{SELECT count(*) FROM es.es_read_stream('order-1', 2)});
sq(q{SELECT count(*) FROM es.es_read_all(NULL, 10)});
sq(q{SELECT count(*) FROM es.es_read_all(NULL, 10, 'cart')});
sq(q{CREATE FUNCTION public.count_r(s jsonb, e es.events) RETURNS jsonb LANGUAGE sql IMMUTABLE
	AS $$ SELECT jsonb_build_object('n', coalesce((s->>'n')::int, 0) + 1) $$});
sq(q{SELECT es.es_append('acct-1', NULL, (SELECT jsonb_agg(jsonb_build_object('type', 'T', 'data', '{}')) FROM generate_series(1, 6)))});
# the first fold writes a snapshot (es.snapshot_every = 5), the second starts from it
is(sq(q{SELECT es.es_fold('acct-1', 'public.count_r(jsonb,es.events)', '{}')->>'n'}), '6', 'a fold');
is(sq(q{SELECT es.es_fold('acct-1', 'public.count_r(jsonb,es.events)', '{}')->>'n'}), '6', 'a fold from its snapshot');
is(db_stats('stream_reads || \'/\' || log_reads || \'/\' || folds || \'/\' || snapshot_hits'),
	'2/2/2/1', 'database: stream reads, log reads, folds, snapshot hits');
is(cat_stats('order', 'stream_reads'), '2', 'category: stream reads');
is(cat_stats('cart', 'log_reads'), '1', 'category: log reads filtered by that category');
is(cat_stats('acct', 'folds || \'/\' || snapshot_hits'), '2/1', 'category: folds and snapshot hits');
# reads of streams and categories that have no events count in the
# database only: they cannot fill the table with names that do not exist
sq(q{SELECT count(*) FROM es.es_read_stream('ghost-1')});
sq(q{SELECT count(*) FROM es.es_read_all(NULL, 10, 'phantom')});
sq(q{SELECT es.es_fold('spectre-1', 'public.count_r(jsonb,es.events)', '{}')});
is(sq(q{SELECT count(*) FROM es.category_stats WHERE category IN ('ghost', 'phantom', 'spectre')}), '0',
	'reads and folds that found nothing make no category row');
is(db_stats('stream_reads || \'/\' || log_reads || \'/\' || folds'), '3/3/3',
	'... and are counted in the database');

# ---------------------------------------------------------------- outbox
sq(q{SELECT es.es_outbox_route('ship')});
sq(q{SELECT es.es_outbox_create_group('shipper', max_attempts => 1)});
sq(q{SELECT es.es_append('ship-' || i, NULL, '[{"type": "S", "data": {}}]') FROM generate_series(1, 5) AS i});
sq(q{
	DO $$
	DECLARE l uuid; p bigint[];
	BEGIN
		SELECT min(lease::text)::uuid, array_agg(position ORDER BY position) INTO l, p
		  FROM es.es_outbox_claim('shipper', 3, '1 minute');
		PERFORM es.es_outbox_ack('shipper', l, p[1:2]);
		PERFORM es.es_outbox_nack('shipper', l, p[3:3], 'boom');
	END $$});
is(sq(q{SELECT claimed_since_reset || '/' || delivered_since_reset || '/' || (delivered_per_second > 0)
		 FROM es.outbox_status WHERE consumer_group = 'shipper'}),
	'3/2/true', 'es.outbox_status: claimed, delivered and throughput since reset');
is(db_stats('outbox_claimed || \'/\' || outbox_acked || \'/\' || outbox_nacked || \'/\' || outbox_dead'),
	'3/2/0/1', 'database: claims, acks, nacks, dead letters (max_attempts 1: the nack is dead)');
is(sq(q{SELECT oldest_undelivered_age >= '0' AND oldest_undelivered_age < '1 hour'
		 FROM es.outbox_status WHERE consumer_group = 'shipper'}),
	't', 'the age of the oldest undelivered message is an interval');

# ---------------------------------------------------------------- untracked
# es.stats_max_categories = 5, and order, cart, acct and the group shipper
# hold the four entries: another category is counted in the database only
sq(q{SELECT es.es_append('zeta-1', NULL, '[{"type": "Z", "data": {}}]')});
is(sq(q{SELECT count(*) FROM es.category_stats WHERE category = 'zeta'}), '0',
	'past es.stats_max_categories a category gets no row');
is(db_stats('untracked > 0 AND appends = 10'), 't',
	'... but is counted in its database, and untracked says so');

# ---------------------------------------------------------------- track_stats off
sq(q{ALTER SYSTEM SET es.track_stats = off});
sq('SELECT pg_reload_conf()');
sleep 1;
my $before = db_stats('appends');
sq(q{SELECT es.es_append('order-9', NULL, '[{"type": "A", "data": {}}]')});
is(db_stats('appends'), $before, 'es.track_stats = off: nothing is counted');
sq(q{ALTER SYSTEM RESET es.track_stats});
sq('SELECT pg_reload_conf()');
sleep 1;

# ---------------------------------------------------------------- concurrency
my $script = $node->basedir . '/append.sql';
PostgreSQL::Test::Utils::append_to_file($script,
	q{\set s random(1, 50)
SELECT es.es_append('conc-' || :s, NULL, '[{"type": "C", "data": {}}, {"type": "C", "data": {}}]');
});
$before = db_stats('appends');
$node->command_ok(
	[ 'pgbench', '-n', '-c', '4', '-j', '2', '-t', '250', '-f', $script, '-d', 'postgres',
	  '-h', $node->host, '-p', $node->port ],
	'pgbench: 4 clients append concurrently');
is(db_stats("appends - $before"), '1000', 'concurrent appends are all counted');
is(sq(q{SELECT count(*) FROM es.events WHERE category = 'conc'}), '2000', 'the events are there');

# ---------------------------------------------------------------- visibility
$node->safe_psql('postgres', 'CREATE DATABASE other');
$node->safe_psql('other', 'CREATE EXTENSION es_ext');
$node->safe_psql('other', q{SELECT es.es_append('order-1', NULL, '[{"type": "A", "data": {}}]')});
$node->safe_psql('postgres', q{
	CREATE ROLE stats_reader LOGIN IN ROLE es_reader;
	CREATE ROLE stats_monitor LOGIN IN ROLE es_reader, pg_read_all_stats;
	CREATE ROLE stats_admin LOGIN IN ROLE es_admin});
is($node->safe_psql('postgres', 'SELECT count(*) FROM es.stats', extra_params => [ '-U', 'stats_reader' ]),
	'1', 'a reader sees only its own database');
is($node->safe_psql('postgres', q{SELECT count(*) FROM es.stats WHERE datname IN ('postgres', 'other')},
		extra_params => [ '-U', 'stats_monitor' ]),
	'2', 'a member of pg_read_all_stats sees every database');
is($node->safe_psql('other', 'SELECT appends FROM es.stats WHERE datname = current_database()'),
	'1', 'each database has its own counters');

# ---------------------------------------------------------------- reset
my $reset = $node->safe_psql('postgres', 'SELECT es.es_stats_reset()', extra_params => [ '-U', 'stats_admin' ]);
ok($reset ne '', 'es_admin resets the statistics');
is(db_stats("appends || '/' || conflicts || '/' || folds || '/' || untracked || '/' || (stats_reset = '$reset')"),
	'0/0/0/0/true', 'the database row is zeroed, stats_reset is the time of the reset');
is(sq(q{SELECT count(*) FROM es.category_stats WHERE appends <> 0 OR folds <> 0 OR stream_reads <> 0}),
	'0', 'its categories are zeroed');
is($node->safe_psql('other', 'SELECT appends FROM es.stats WHERE datname = current_database()'),
	'1', 'another database keeps its counters');
is(sq(q{SELECT count(*) FROM es.category_stats}), '0',
	'the reset removed the rows of its categories and groups');
sq(q{SELECT es.es_append('zeta-1', NULL, '[{"type": "Z", "data": {}}]')});
is(cat_stats('zeta', 'appends'), '1', '... which frees their places: a new category gets a row again');

# a dropped database: its rows go at the next reset, wherever it runs
$node->safe_psql('other', q{SELECT es.es_append('cart-1', NULL, '[{"type": "A", "data": {}}]')});
$node->safe_psql('postgres', 'DROP DATABASE other');
is(sq(q{SELECT count(*) FROM es.es_stats_counters('database') AS s
		 WHERE NOT EXISTS (SELECT FROM pg_database AS d WHERE d.oid = s.dbid)}),
	'1', 'a dropped database keeps its entry until a reset (es.stats does not show it)');
sq('SELECT es.es_stats_reset()');
is(sq(q{SELECT count(*) FROM es.es_stats_counters('database') AS s
		 WHERE NOT EXISTS (SELECT FROM pg_database AS d WHERE d.oid = s.dbid)}),
	'0', 'es_stats_reset removes the entries of dropped databases');
$reset = sq(q{SELECT stats_reset FROM es.stats WHERE datname = current_database()});

# ---------------------------------------------------------------- restarts
sq(q{SELECT es.es_append('order-1', NULL, '[{"type": "A", "data": {}}]')});
$node->restart;
is(db_stats("appends || '/' || (stats_reset = '$reset')"), '1/true',
	'a clean restart keeps the counters and the reset time');
is(cat_stats('order', 'appends'), '1', '... and the categories');
ok(!-e $node->data_dir . '/pg_stat/es_ext.stat', 'the saved file is removed once read');

# a crash: SIGKILL of a backend, the postmaster reinitializes
my $bg = $node->background_psql('postgres');
my $pid = $bg->query_safe('SELECT pg_backend_pid()');
kill 'KILL', $pid;
$bg->quit;
$node->poll_query_until('postgres', 'SELECT true') or die 'no restart after the crash';
is(db_stats('appends'), '0', 'a crash resets the counters');

sq(q{SELECT es.es_append('order-1', NULL, '[{"type": "A", "data": {}}]')});
$node->stop('immediate');
$node->start;
is(db_stats('appends'), '1', 'an immediate shutdown of the postmaster saves them too');

$node->stop;
done_testing();
