
# Copyright (c) es_ext contributors
#
# test/t/010_fold_memory.pl
#
# es_fold over a stream of 1,000,000 events: memory stays flat, the fold can
# be interrupted (statement_timeout, cancel), and an automatic snapshot makes
# the next fold of the long stream apply no event at all.
#
# Memory is measured from inside the fold: the reducer itself, every 100,000
# events, records the backend's total of pg_backend_memory_contexts in the
# state.  A fold that kept per-event memory would grow by tens of megabytes
# between the first and the last sample (about 84 bytes per event without
# the per-event reset); es_fold must stay within 1 MB.  The same is checked
# for the row form of the reducer and for the es_fold_agg aggregate.

use strict;
use warnings;

use IPC::Run;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time);

my $events = 1_000_000;
my $batch = 10_000;
my $allowed_growth = 1024 * 1024;

my $node = PostgreSQL::Test::Cluster->new('es_fold_memory');
$node->init;
$node->append_conf(
	'postgresql.conf', q{
log_statement = none
log_min_duration_statement = -1
});
$node->start;
$node->safe_psql('postgres', 'CREATE EXTENSION es_ext');

# 1,000,000 events in batches of 10,000, one transaction per batch
my $t0 = time;
$node->safe_psql(
	'postgres', qq{
DO \$\$
BEGIN
	FOR b IN 0 .. $events / $batch - 1 LOOP
		PERFORM es.es_append('mem-1', NULL,
			(SELECT jsonb_agg(jsonb_build_object('type', 'Tick',
												 'data', jsonb_build_object('i', b * $batch + i)))
			   FROM generate_series(1, $batch) AS i));
		COMMIT;
	END LOOP;
END
\$\$});
is($node->safe_psql('postgres', "SELECT es.es_stream_version('mem-1')"),
	$events, 'the stream has 1,000,000 events');
note(sprintf('appended in %.1f s', time - $t0));

# Reducers that count the events and sample the backend's memory every
# 100,000 events: one taking the event as jsonb, one as an es.events row.
$node->safe_psql(
	'postgres', q{
CREATE FUNCTION mem_json(state jsonb, event jsonb) RETURNS jsonb
LANGUAGE plpgsql AS $$
BEGIN
	IF (event->>'version')::bigint % 100000 = 0 THEN
		state := jsonb_set(state, '{mem}', (state->'mem') ||
			to_jsonb((SELECT sum(total_bytes) FROM pg_backend_memory_contexts)));
	END IF;
	RETURN jsonb_set(jsonb_set(state, '{n}', to_jsonb((state->>'n')::bigint + 1)),
					 '{sum}', to_jsonb((state->>'sum')::bigint + (event->'data'->>'i')::bigint));
END $$;
CREATE FUNCTION mem_row(state jsonb, e es.events) RETURNS jsonb
LANGUAGE plpgsql AS $$
BEGIN
	IF e.version % 100000 = 0 THEN
		state := jsonb_set(state, '{mem}', (state->'mem') ||
			to_jsonb((SELECT sum(total_bytes) FROM pg_backend_memory_contexts)));
	END IF;
	RETURN jsonb_set(jsonb_set(state, '{n}', to_jsonb((state->>'n')::bigint + 1)),
					 '{sum}', to_jsonb((state->>'sum')::bigint + (e.data->>'i')::bigint));
END $$;
});

# Run a fold whose result is such a state; returns the event count, the
# number of samples, and the first, smallest, largest and last sample.
sub fold_memory
{
	my ($label, $fold_sql) = @_;
	my $t = time;
	my $out = $node->safe_psql(
		'postgres', qq{
SET es.snapshot_every = 0;
SELECT s->>'n', s->>'sum', jsonb_array_length(s->'mem'),
	   (s->'mem'->>0)::bigint, m.lo, m.hi, (s->'mem'->>-1)::bigint, s->'mem'
  FROM ($fold_sql) AS f(s),
	   LATERAL (SELECT min(x::bigint), max(x::bigint)
				  FROM jsonb_array_elements_text(s->'mem') AS x) AS m(lo, hi)});
	my ($n, $sum, $samples, $first, $lo, $hi, $last, $all) = split /\|/, $out;
	note(sprintf('%s: %.1f s, memory samples (bytes) %s', $label, time - $t, $all));
	is($n, $events, "$label: folded every event");
	is($sum, $events * ($events + 1) / 2, "$label: in full (the sum of the data is right)");
	is($samples, 10, "$label: 10 memory samples taken during the fold");
	cmp_ok($hi - $first, '<=', $allowed_growth,
		"$label: memory never grows more than 1 MB above the first sample");
	cmp_ok($last - $first, '<=', $allowed_growth,
		"$label: memory at the end is within 1 MB of the first sample");
	return;
}

fold_memory('es_fold, jsonb event',
	q{SELECT es.es_fold('mem-1', 'mem_json(jsonb,jsonb)', '{"n": 0, "sum": 0, "mem": []}')});
fold_memory('es_fold, es.events row',
	q{SELECT es.es_fold('mem-1', 'mem_row(jsonb,es.events)', '{"n": 0, "sum": 0, "mem": []}')});
fold_memory('es_fold_agg',
	q{SELECT es.es_fold_agg('mem_row(jsonb,es.events)', '{"n": 0, "sum": 0, "mem": []}', e ORDER BY e.version)
		FROM es.events AS e WHERE e.stream_id = 'mem-1'});

# statement_timeout interrupts a long fold
my $t = time;
my ($ret, $stdout, $stderr) = $node->psql('postgres',
	q{SET statement_timeout = '1s';
	  SELECT es.es_fold('mem-1', 'mem_row(jsonb,es.events)', '{"n": 0, "sum": 0, "mem": []}')});
my $elapsed = time - $t;
isnt($ret, 0, 'statement_timeout: the fold fails');
like($stderr, qr/canceling statement due to statement timeout/,
	'statement_timeout: canceled by the timeout');
cmp_ok($elapsed, '<', 30, 'statement_timeout: stopped long before the end');

# pg_cancel_backend interrupts a long fold
my ($out, $err) = ('', '');
my $h = IPC::Run::start(
	[
		$node->installed_command('psql'), '-X', '-d', $node->connstr('postgres'),
		'-c', q{SELECT es.es_fold('mem-1', 'mem_row(jsonb,es.events)', '{"n": 0, "sum": 0, "mem": [], "cancel": true}')}
	],
	'>', \$out, '2>', \$err);
$node->poll_query_until('postgres',
	q{SELECT count(*) = 1 FROM pg_stat_activity
	   WHERE state = 'active' AND query LIKE 'SELECT es.es_fold(%"cancel"%'})
  or die 'the fold to cancel did not start';
$node->safe_psql('postgres',
	q{SELECT pg_cancel_backend(pid) FROM pg_stat_activity
	   WHERE state = 'active' AND query LIKE 'SELECT es.es_fold(%"cancel"%'});
$h->finish;
like($err, qr/canceling statement due to user request/, 'cancel: the fold is canceled');

# An automatic snapshot (es.snapshot_every, default 1000) after the full
# fold: the next fold of the 1,000,000-event stream applies no event.
my $first = $node->safe_psql('postgres',
	q{SELECT snapshot_version IS NULL, events_applied, version
		FROM es.es_fold_state('mem-1', 'mem_row(jsonb,es.events)', '{"n": 0, "sum": 0, "mem": []}')});
is($first, "t|$events|$events", 'first fold: no snapshot, every event applied');
is( $node->safe_psql(
		'postgres',
		q{SELECT version, automatic FROM es.snapshots WHERE stream_id = 'mem-1'}),
	"$events|t",
	'first fold: it wrote an automatic snapshot at the head');
$t = time;
my $second = $node->safe_psql('postgres',
	q{SELECT snapshot_version, events_applied, version, state->>'n'
		FROM es.es_fold_state('mem-1', 'mem_row(jsonb,es.events)', '{"n": 0, "sum": 0, "mem": []}')});
note(sprintf('fold from the snapshot: %.3f s', time - $t));
is($second, "$events|0|$events|$events",
	'second fold: starts from the snapshot, applies nothing, same state');

$node->stop;
done_testing();
