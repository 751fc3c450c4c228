
# Copyright (c) es_ext contributors
#
# test/t/070_import.pl
#
# es_import at some scale, from another session's point of view:
#
#   1. its progress shows in pg_stat_activity.query while it runs
#      ("es_import: N of M events imported"), and the query text is given
#      back when it ends;
#   2. a cancel in the middle leaves nothing behind: no event, no stream
#      row, and the next import of the same source succeeds;
#   3. the imported log is whole: contiguous versions, one (era, tx_id),
#      positions increasing in source order, the stream rows at their last
#      version, and es_read_all returns the events in source order.
#
# Set ES_IMPORT_TAP_EVENTS to change the size of the source (default 300000).

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep);

my $events = $ENV{ES_IMPORT_TAP_EVENTS} // 300000;
my $streams = int($events / 10);

my $node = PostgreSQL::Test::Cluster->new('es_import');
$node->init;
$node->append_conf('postgresql.conf', "shared_preload_libraries = 'es_ext'\n");
$node->start;
$node->safe_psql('postgres', 'CREATE EXTENSION es_ext');

# the source: a regular table, streams interleaved as a global log is, in order
$node->safe_psql(
	'postgres', qq{
CREATE TABLE src (LIKE es.import_event);
INSERT INTO src (stream_id, version, event_type, data, recorded_at)
SELECT 'tap_acct-' || (i % $streams), i / $streams + 1, 'Deposited',
	   jsonb_build_object('i', i), timestamptz '2021-01-01' + i * interval '1 ms'
  FROM generate_series(0, $events - 1) AS i
 ORDER BY i;
});

# 1. progress, seen from another session
my $importer = $node->background_psql('postgres', on_error_stop => 0);
my $pid = $importer->query_safe('SELECT pg_backend_pid()');
$importer->query_until(qr/started/, q{
\echo started
SELECT events FROM es.es_import('src');
});
my $seen = '';
for (my $i = 0; $i < 6000; $i++)
{
	my $q = $node->safe_psql('postgres',
		"SELECT query FROM pg_stat_activity WHERE pid = $pid AND query LIKE 'es_import:%'");
	if ($q =~ /^es_import: (\d+) of (\d+) events imported$/ && $1 > 0)
	{
		$seen = $q;
		last;
	}
	usleep(10_000);
}
like($seen, qr/^es_import: \d+ of $events events imported$/,
	"pg_stat_activity shows the import's progress ($seen)");
like($importer->query_safe('SELECT 1'), qr/^$events\n1$/, 'the import ended');
is($node->safe_psql('postgres', "SELECT count(*) FROM es.events"), $events, 'every event imported');
unlike($node->safe_psql('postgres', "SELECT query FROM pg_stat_activity WHERE pid = $pid"),
	qr/^es_import:/, 'the query text is given back after the import');

# 3. the imported log is whole
is( $node->safe_psql(
		'postgres', q{
SELECT count(DISTINCT (era, tx_id)) = 1
   AND bool_and(e.version = s.version_in_src)
  FROM es.events AS e
  JOIN (SELECT stream_id, version AS version_in_src,
			   row_number() OVER (ORDER BY ctid) AS n FROM src) AS s
	ON s.stream_id = e.stream_id AND s.version_in_src = e.version
}), 't', 'one transaction, the versions of the source');
is( $node->safe_psql(
		'postgres', q{
SELECT count(*) FROM (
	SELECT e.global_position, lag(e.global_position) OVER (ORDER BY s.n) AS prev
	  FROM es.events AS e
	  JOIN (SELECT stream_id, version, row_number() OVER (ORDER BY ctid) AS n FROM src) AS s
		USING (stream_id, version)) AS x
 WHERE x.global_position <= x.prev
}), '0', 'positions increase in source order');
is( $node->safe_psql(
		'postgres', q{
SELECT count(*) FROM es.streams AS s
 WHERE s.version <> (SELECT max(e.version) FROM es.events AS e WHERE e.stream_id = s.stream_id)
	OR s.version <> (SELECT count(*) FROM es.events AS e WHERE e.stream_id = s.stream_id)
}), '0', 'stream rows at their last version, versions contiguous');
is( $node->safe_psql(
		'postgres', q{
SELECT string_agg(stream_id || ':' || version, ' ' ORDER BY log_cursor)
  FROM es.es_read_all(NULL, 3)
}), "tap_acct-0:1 tap_acct-1:1 tap_acct-2:1", 'es_read_all reads them in source order');

# 2. a cancel in the middle imports nothing
$node->safe_psql('postgres', q{
CREATE TABLE src2 (LIKE es.import_event);
INSERT INTO src2 SELECT stream_id, NULL, NULL, event_type, schema_version, data, metadata, NULL FROM src;
});
my ($events_before, $streams_before) = split /\|/,
  $node->safe_psql('postgres', 'SELECT (SELECT count(*) FROM es.events), (SELECT count(*) FROM es.streams)');
$importer->query_until(qr/started/, q{
\echo started
SELECT events FROM es.es_import('src2');
});
my $cancelled = 0;
for (my $i = 0; $i < 6000 && !$cancelled; $i++)
{
	$cancelled = $node->safe_psql('postgres',
		"SELECT pg_cancel_backend($pid) FROM pg_stat_activity WHERE pid = $pid AND query ~ '^es_import: [1-9][0-9]* of'")
	  eq 't';
	usleep(10_000) unless $cancelled;
}
ok($cancelled, 'cancelled the second import in the middle');
$importer->quit;
is( $node->safe_psql('postgres', 'SELECT (SELECT count(*) FROM es.events), (SELECT count(*) FROM es.streams)'),
	"$events_before|$streams_before", 'the cancelled import left nothing behind');
is($node->safe_psql('postgres', q{SELECT events FROM es.es_import('src2')}), $events,
	'the same import succeeds afterwards');
is($node->safe_psql('postgres', q{SELECT max(version) FROM es.streams}), '20',
	'continuing every stream');

$node->stop;
done_testing();
