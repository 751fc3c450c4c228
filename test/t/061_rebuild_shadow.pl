# Copyright (c) es_ext contributors
#
# A rebuild in a shadow under load: pgbench appends through an inline
# projection while CALL es.es_rebuild_projection(..., read_model => 'rm')
# replays the log into a shadow copy of the read model and switches it in;
# a reader checks that sum(total) never decreases (every event adds a
# positive amount), which a half-built model would break.  Afterwards the
# model equals the fold of the log and a fresh in-place rebuild.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use IPC::Run;
use Time::HiRes qw(time usleep);

my $node = PostgreSQL::Test::Cluster->new('rebuild_shadow');
$node->init;
$node->start;

$node->safe_psql(
	'postgres', q{
CREATE EXTENSION es_ext;
CREATE SCHEMA rm;
CREATE TABLE rm.totals (stream text PRIMARY KEY, total bigint NOT NULL, events int NOT NULL);
CREATE INDEX totals_by_total ON rm.totals (total);
CREATE FUNCTION public.on_added(e es.events) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
	INSERT INTO rm.totals AS t VALUES (e.stream_id, (e.data ->> 'n')::bigint, 1)
	ON CONFLICT (stream) DO UPDATE SET total = t.total + excluded.total, events = t.events + 1;
END
$$;
CREATE TRIGGER totals AFTER INSERT ON es.events
	FOR EACH ROW EXECUTE FUNCTION es.es_project('Added', 'public.on_added');
SELECT count(es.es_append('t-' || (i % 50), NULL,
		jsonb_build_array(jsonb_build_object('type', 'Added', 'data', jsonb_build_object('n', 1 + i % 7)))))
  FROM generate_series(1, 30000) AS i;
});

# appenders: one event each, any version, to one of 50 streams
my $script = $node->basedir . '/append.sql';
PostgreSQL::Test::Utils::append_to_file($script, q{
\set s random(0, 49)
\set n random(1, 9)
SELECT es.es_append('t-' || :s, NULL, jsonb_build_array(jsonb_build_object('type', 'Added', 'data', jsonb_build_object('n', :n))));
});
my ($bench_out, $bench_err) = ('', '');
my $bench = IPC::Run::start(
	[
		'pgbench', '--no-vacuum', '--client=4', '--jobs=2', '--time=6',
		'-h', $node->host, '-p', $node->port, '-f', $script, 'postgres'
	],
	'>', \$bench_out, '2>', \$bench_err);

# the model before the rebuild: the first value the reader compares with
my $before = $node->safe_psql('postgres', 'SELECT sum(total) FROM rm.totals');

my ($rebuild_out, $rebuild_err) = ('', '');
my $rebuild = IPC::Run::start(
	[
		'psql', '-XAtq', '-v', 'ON_ERROR_STOP=1', '-d', $node->connstr('postgres'), '-c',
		"CALL es.es_rebuild_projection('totals', batch_size => 500, read_model => 'rm')"
	],
	'>', \$rebuild_out, '2>', \$rebuild_err);

# the reader: one connection, sum(total) as often as it can while the rebuild runs
my ($reader_in, $reader_out, $reader_err) = ('', '', '');
my $reader = IPC::Run::start(
	[ 'psql', '-XAtq', '-d', $node->connstr('postgres') ],
	'<', \$reader_in, '>', \$reader_out, '2>', \$reader_err);
my @sums;
my $t0 = time;
while ($rebuild->pumpable && time - $t0 < 120)
{
	$reader_in .= "SELECT sum(total) FROM rm.totals;\n";
	$reader->pump while length $reader_in;
	usleep(20_000);
	$reader->pump_nb;
	$rebuild->pump_nb;
}
ok($rebuild->finish, 'the rebuild in a shadow succeeded') or diag $rebuild_err;
like($rebuild_err, qr/projection "totals" rebuilt: \d+ events replayed/, 'the rebuild reported its end');
$reader_in .= "\\q\n";
$reader->finish;
# an empty model reads as NULL (an empty line): as 0
@sums = ($before, map { $_ eq '' ? 0 : $_ } grep { /^\d*$/ } split /\n/, $reader_out);
note sprintf('%d reads during the rebuild (%.1fs)', scalar @sums, time - $t0);
cmp_ok(scalar @sums, '>=', 10, 'the reader read during the rebuild');
my @drops = grep { $sums[$_] < $sums[ $_ - 1 ] } 1 .. $#sums;
is(scalar @drops, 0, 'sum(total) never decreased during the rebuild')
  or diag join(', ', map { "$sums[$_ - 1] -> $sums[$_]" } @drops[ 0 .. ($#drops < 4 ? $#drops : 4) ]);

ok($bench->finish, 'pgbench appended without errors') or diag $bench_err;
like($bench_out, qr/number of failed transactions: 0/, 'no failed append');

is( $node->safe_psql('postgres',
		q{SELECT state, read_model, shadow IS NULL FROM es.projection_status WHERE projection = 'totals'}),
	'live|rm|t',
	'the projection is live again');
is( $node->safe_psql('postgres',
		q{SELECT count(*) FROM pg_namespace WHERE nspname LIKE 'es\_shadow\_%' OR nspname LIKE 'es\_live\_%'}),
	'0', 'no shadow left');

# the model is the fold of the log ...
my $fold = q{SELECT count(*) FROM (
	(SELECT stream, total, events FROM rm.totals
	 EXCEPT SELECT stream_id, sum((data ->> 'n')::bigint), count(*)::int FROM es.events WHERE event_type = 'Added' GROUP BY 1)
	UNION ALL
	(SELECT stream_id, sum((data ->> 'n')::bigint), count(*)::int FROM es.events WHERE event_type = 'Added' GROUP BY 1
	 EXCEPT SELECT stream, total, events FROM rm.totals)) AS d};
is($node->safe_psql('postgres', $fold), '0', 'the rebuilt model equals the fold of the log');

# ... and what a fresh in-place rebuild gives
$node->safe_psql('postgres', q{CREATE TABLE public.shadow_result AS SELECT * FROM rm.totals});
$node->safe_psql('postgres', q{CALL es.es_rebuild_projection('totals', 'TRUNCATE rm.totals')});
is( $node->safe_psql('postgres', q{SELECT count(*) FROM (
	(SELECT * FROM rm.totals EXCEPT SELECT * FROM public.shadow_result)
	UNION ALL (SELECT * FROM public.shadow_result EXCEPT SELECT * FROM rm.totals)) AS d}),
	'0', 'the model equals a fresh in-place rebuild');

$node->stop;
done_testing();
