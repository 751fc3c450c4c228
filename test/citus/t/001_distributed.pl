
# Copyright (c) es_ext contributors
#
# test/citus/t/001_distributed.pl
#
# es_ext distributed on a Citus cluster: a coordinator and two workers
# (EsCitus::cluster), es.distribute(8).
#
# - es.distribute ran: es.streams, es.events (and the other stream-keyed
#   tables) are hash-distributed by stream_id and co-located, with 8 shards
#   placed on both workers; the registries (es.upcasters, ...) are reference
#   tables; the per-stream functions are delegated by their first argument.
# - Appends through the coordinator with every expected-version form (NULL,
#   -1, 0, exact N) and in a transaction block; an idempotent retry with
#   given event ids returns the first result and writes no second copy; a
#   stale expected version fails with SQLSTATE 40001 and writes nothing.
# - 200 events over 50 streams: both workers hold events (counted per shard
#   placement), every global_position is unique across the cluster, and its
#   node part (global_position >> 48) is the group id of the worker that
#   holds the stream.
# - Immutability: direct INSERT, UPDATE, DELETE and TRUNCATE of es.events and
#   es.streams are refused with SQLSTATE 2F003 on the coordinator, on a
#   worker (the shell tables) and on a worker's shard itself; nothing changed.
# - es_read_stream, es_stream_version, es_fold through the coordinator, and
#   in a transaction block; es_verify of every stream and es_verify_all
#   report no problem.  A conditional append is refused (0A000), and so is
#   an es_append that Citus does not delegate (from a DO block, or in a
#   query over several rows), writing nothing.
# - The first append on a fresh worker inside a transaction block, and
#   es_fold, es_fold_state and es_snapshot_save inside a transaction block,
#   work (they failed with XX000, a distributed query inside a delegated
#   call, until a node's first append stopped reading es.events for its era).
# - es_read_log returns every event exactly once, page by page (7 a page,
#   resumed with the cursors of the last row), each stream in version order,
#   and the same as in one page.
# - es.distribute() again changes nothing (idempotent) and the store goes
#   on; a bad shard count fails with 22023, a non-superuser with 42501.

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use EsCitus;

my ($coord, @workers) = EsCitus::cluster('dist', workers => 2, shard_count => 8);

sub coord_sql { return $coord->safe_psql('postgres', $_[0]); }

# the group id of each worker
my %group_of_port = map { split /\|/ } split /\n/,
  coord_sql('SELECT nodeport, groupid FROM pg_dist_node WHERE groupid <> 0');
my @worker_groups = map { $group_of_port{ $_->port } } @workers;
is(scalar(grep { defined && $_ > 0 } @worker_groups), 2, 'two workers in the Citus metadata');

# ---------------------------------------------------------------------
# es.distribute ran
# ---------------------------------------------------------------------

is( coord_sql(
		q{SELECT string_agg(logicalrelid::text || ' ' || partmethod::text || ' ' || repmodel::text
							|| ' ' || coalesce(column_to_column_name(logicalrelid, partkey), '-'),
							', ' ORDER BY logicalrelid::text)
			FROM pg_dist_partition WHERE logicalrelid::text LIKE 'es.%'}),
	'es.archived_events h s stream_id, es.erasures h s stream_id, es.events h s stream_id, '
	  . 'es.outbox_groups n t -, es.outbox_routes n t -, es.snapshots h s stream_id, '
	  . 'es.streams h s stream_id, es.upcasters n t -',
	'the stream tables are hash-distributed by stream_id; the registries are reference tables'
);
is( coord_sql(
		q{SELECT count(DISTINCT colocationid) FROM pg_dist_partition
		   WHERE logicalrelid IN ('es.streams'::regclass, 'es.events'::regclass, 'es.snapshots'::regclass,
								  'es.archived_events'::regclass, 'es.erasures'::regclass)}),
	'1',
	'es.events and es.streams (and the other stream tables) are co-located');
is( coord_sql(
		q{SELECT count(*) || ' ' || count(DISTINCT p.groupid)
			FROM pg_dist_shard AS s JOIN pg_dist_placement AS p USING (shardid)
		   WHERE s.logicalrelid = 'es.events'::regclass}),
	'8 2',
	'es.events has 8 shards, placed on both workers');
is( coord_sql(
		q{SELECT count(*) FROM pg_dist_placement AS p JOIN pg_dist_shard AS s USING (shardid)
		   WHERE s.logicalrelid = 'es.upcasters'::regclass}),
	'3',
	'es.upcasters is a reference table: a placement on every node');
is( coord_sql(
		q{SELECT string_agg(objid::regprocedure::text || ' ' || distribution_argument_index
							|| ' ' || force_delegation, ', ' ORDER BY objid::regprocedure::text)
			FROM pg_dist_object
		   WHERE classid = 'pg_proc'::regclass AND distribution_argument_index IS NOT NULL
			 AND colocationid = (SELECT colocationid FROM pg_dist_partition
								  WHERE logicalrelid = 'es.events'::regclass)}),
	join(', ',
		'es.es_append(text,bigint,jsonb) 0 true',
		'es.es_append(text,bigint,jsonb,jsonb,es.log_cursor) 0 true',
		'es.es_fold(text,regprocedure,jsonb,bigint,timestamp with time zone) 0 true',
		'es.es_fold_state(text,regprocedure,jsonb,bigint,timestamp with time zone) 0 true',
		'es.es_read_stream(text,bigint,bigint,text) 0 true',
		'es.es_snapshot_delete(text,regprocedure) 0 true',
		'es.es_snapshot_save(text,regprocedure,jsonb,bigint) 0 true',
		'es.es_stream_version(text) 0 true',
		'es.es_verify(text) 0 true'),
	'the per-stream functions are distributed by their stream, delegated');

# ---------------------------------------------------------------------
# Appends through the coordinator
# ---------------------------------------------------------------------

# The very first append on a worker, in a transaction block (delegated
# there with force_delegation): es_append records the worker's era in its
# es.config without reading es.events (a distributed query, which Citus
# refuses inside a delegated call: XX000 "cannot execute a distributed
# query from a query on a shard", before that was fixed).
is( EsCitus::outcome(
		$coord, q{BEGIN;
SELECT es.es_append('first-tx', 0, '[{"type": "Opened", "data": {"n": 1}}]');
COMMIT;}),
	'ok',
	'the first append on a fresh worker, in a transaction block');
is($coord->safe_psql('postgres', q{SELECT es.es_stream_version('first-tx')}),
	'1', 'it appended version 1');
is( $coord->safe_psql(
		'postgres',
		q{SELECT string_agg(n.groupid || ':' || r.result, ',' ORDER BY n.groupid)
		    FROM run_command_on_all_nodes('SELECT count(*) FROM es.config') AS r
		    JOIN pg_dist_node AS n USING (nodeid) WHERE n.groupid > 0}),
	EsCitus::group_of($coord, 'first-tx') == 1 ? '1:1,2:0' : '1:0,2:1',
	'only the worker that appended has an es.config row (era 0, its own)');

sub append
{
	my ($stream, $expected, $events) = @_;
	return coord_sql(
		"SELECT version || ' ' || cardinality(positions) FROM es.es_append('$stream', $expected, '$events')"
	);
}
is(append('acct-1', 0, '[{"type": "Opened", "data": {"n": 1}}]'),
	'1 1', 'expected version 0 (no stream): version 1');
is(append('acct-1', -1, '[{"type": "Deposited", "data": {"n": 2}}]'),
	'2 1', 'expected version -1 (the stream exists): version 2');
is(append('acct-1', 'NULL', '[{"type": "Deposited", "data": {"n": 3}}]'),
	'3 1', 'expected version NULL (any): version 3');
is( append(
		'acct-1', 3,
		'[{"type": "Deposited", "data": {"n": 4}}, {"type": "Withdrawn", "data": {"n": 5}}]'),
	'5 2',
	'expected version 3 (exact), a batch of two: version 5');
is(append('acct-new', 'NULL', '[{"type": "Opened", "data": {"n": 1}}]'),
	'1 1', 'expected version NULL on a new stream: version 1');

# stale or wrong expected versions: 40001, nothing written
my $acct1_before = coord_sql(
	q{SELECT string_agg(version || ':' || event_type, ',' ORDER BY version) FROM es.events WHERE stream_id = 'acct-1'});
foreach my $case ([ 'acct-1', 3, 'a stale exact version (3, the stream is at 5)' ],
	[ 'acct-1', 0, 'expected version 0 (no stream) on an existing stream' ],
	[ 'acct-1', 6, 'an exact version ahead of the stream' ],
	[ 'acct-none', -1, 'expected version -1 (the stream exists) on no stream' ])
{
	my ($stream, $expected, $what) = @$case;
	like(
		EsCitus::outcome(
			$coord,
			"SELECT es.es_append('$stream', $expected, '[{\"type\": \"Late\", \"data\": {}}]')"),
		qr/^40001: wrong expected version for stream "$stream"/,
		"$what fails with 40001");
}
is( coord_sql(
		q{SELECT string_agg(version || ':' || event_type, ',' ORDER BY version) FROM es.events WHERE stream_id = 'acct-1'}),
	$acct1_before,
	'the failed appends wrote nothing to acct-1');
is(coord_sql(q{SELECT count(*) FROM es.streams WHERE stream_id = 'acct-none'}),
	'0', 'and made no stream acct-none');
is(coord_sql(q{SELECT count(*) FROM es.events WHERE event_type = 'Late'}),
	'0', 'no Late event anywhere');

# idempotent retries with given ids
my $ids_batch =
  '[{"type": "Opened", "data": {"n": 1}, "id": "22222222-2222-4222-8222-222222222221"}, '
  . '{"type": "Deposited", "data": {"n": 2}, "id": "22222222-2222-4222-8222-222222222222"}]';
my $first = coord_sql(
	"SELECT version, positions FROM es.es_append('acct-ids', 0, '$ids_batch')");
like($first, qr/^2\|\{\d+,\d+\}$/, 'an append with given ids');
is(coord_sql("SELECT version, positions FROM es.es_append('acct-ids', 0, '$ids_batch')"),
	$first, 'the retry (expected version 0 again) returns the first result');
is(coord_sql("SELECT version, positions FROM es.es_append('acct-ids', NULL, '$ids_batch')"),
	$first, 'the retry with expected version NULL returns the first result');
is( coord_sql(
		q{SELECT count(*) || ' ' || count(DISTINCT event_id) || ' ' || max(version) FROM es.events
		   WHERE stream_id = 'acct-ids'}),
	'2 2 2',
	'no second copy of the events');
like(
	EsCitus::outcome(
		$coord,
		q{SELECT es.es_append('acct-ids', NULL, '[{"type": "Other", "data": {"n": 9}, "id": "22222222-2222-4222-8222-222222222221"}]')}
	),
	qr/^42710: batch reuses the ids? of events? already in stream "acct-ids"/,
	'a different event with a used id is refused with 42710');
is(coord_sql(q{SELECT count(*) FROM es.events WHERE stream_id = 'acct-ids'}),
	'2', 'and not written');

# ---------------------------------------------------------------------
# 200 events over 50 streams: on both workers, positions unique, in the
# range of the node that holds the stream
# ---------------------------------------------------------------------

my $script = '';
my @streams = map { "load-$_" } 1 .. 50;
foreach my $round (1 .. 4)
{
	foreach my $s (@streams)
	{
		my $expected = $round - 1;
		$script .=
		  "SELECT '$s', positions[1] FROM es.es_append('$s', $expected, '[{\"type\": \"Loaded\", \"data\": {\"round\": $round}}]');\n";
	}
}
my %returned;
foreach my $line (split /\n/, coord_sql($script))
{
	my ($s, $pos) = split /\|/, $line;
	push @{ $returned{$s} }, $pos;
}
is(scalar(map { @$_ } values %returned), 200, '200 appends returned a position');

# in a transaction block (both workers have appended by now)
is( coord_sql(
		q{BEGIN;
		  SELECT version FROM es.es_append('acct-tx', 0, '[{"type": "Opened", "data": {"n": 1}}]');
		  SELECT version FROM es.es_append('acct-tx', 1, '[{"type": "Deposited", "data": {"n": 2}}]');
		  COMMIT;}),
	"1\n2",
	'two appends in one transaction block');

# the group that holds each stream (its shard's placement)
my $values = join(', ', map { "('$_')" } @streams, 'acct-1', 'acct-new', 'acct-tx', 'acct-ids', 'first-tx');
my %holder = map { split /\|/ } split /\n/, coord_sql(
	qq{SELECT v.s, p.groupid FROM (VALUES $values) AS v(s)
		 JOIN pg_dist_placement AS p ON p.shardid = get_shard_id_for_distribution_column('es.events', v.s)});
is(scalar(grep { $_ eq $worker_groups[0] } map { $holder{$_} } @streams) > 0
	  && scalar(grep { $_ eq $worker_groups[1] } map { $holder{$_} } @streams) > 0,
	1, 'the 50 streams are spread over both workers');

my @bad;
my %stored;
foreach my $line (
	split /\n/,
	coord_sql(
		q{SELECT stream_id, version, global_position FROM es.events ORDER BY stream_id, version}))
{
	my ($s, $v, $pos) = split /\|/, $line;
	$stored{$s}[ $v - 1 ] = $pos;
	# Perl integers are 64-bit: >> 48 is the node part
	push @bad, "$s\@$v: $pos >> 48 = " . ($pos >> 48) . ", held by group $holder{$s}"
	  if !defined $holder{$s} || ($pos >> 48) != $holder{$s};
}
is_deeply(\@bad, [],
	'every global_position >> 48 is the group id of the node that holds its stream');
is_deeply([ map { $stored{$_} } @streams ], [ map { $returned{$_} } @streams ],
	'the positions es_append returned are the stored ones');
is( coord_sql(
		q{SELECT count(*) = count(DISTINCT global_position) AND count(*) = count(DISTINCT event_id)
			FROM es.events}),
	't',
	'every global_position (and event id) is unique across the cluster');
is( coord_sql(
		q{SELECT count(*) || ' ' || count(DISTINCT stream_id) || ' ' || bool_and(version BETWEEN 1 AND 4)
			FROM es.events WHERE stream_id LIKE 'load-%'}),
	'200 50 true',
	'200 events over 50 streams, versions 1 to 4');

# events per worker, counted on each shard placement
my %per_port;
foreach my $line (
	split /\n/,
	coord_sql(
		q{SELECT nodeport, result FROM run_command_on_placements('es.events', 'SELECT count(*) FROM %s')}
	))
{
	my ($port, $n) = split /\|/, $line;
	$per_port{$port} += $n;
}
my $total = coord_sql('SELECT count(*) FROM es.events');
ok($per_port{ $workers[0]->port } > 0 && $per_port{ $workers[1]->port } > 0,
	'both workers hold events ('
	  . join(', ', map { "$_: $per_port{$_}" } sort keys %per_port) . ')');
is($per_port{ $workers[0]->port } + $per_port{ $workers[1]->port },
	$total, 'the shards of both workers hold every event');
# on each worker's own shards, the positions are in the worker's range
foreach my $i (0, 1)
{
	my $g = $worker_groups[$i];
	is( coord_sql(
			qq{SELECT string_agg(DISTINCT result, ',') FROM run_command_on_placements('es.events',
					'SELECT count(*) FILTER (WHERE global_position >> 48 <> $g) FROM %s')
			    WHERE nodeport = } . $workers[$i]->port),
		'0',
		"the shards on worker $i (group $g) hold only positions of its range");
}

# ---------------------------------------------------------------------
# Immutability: coordinator, worker (shell tables), worker shard
# ---------------------------------------------------------------------

my $digest = q{SELECT count(*), md5(string_agg(e::text, '|' ORDER BY global_position)) FROM es.events AS e};
my $streams_digest =
  q{SELECT count(*), md5(string_agg(s::text, '|' ORDER BY stream_id)) FROM es.streams AS s};
my $before = coord_sql($digest) . ' ' . coord_sql($streams_digest);

my %writes = (
	'es.events' => [
		q{INSERT INTO %s (stream_id, version, event_type, data) VALUES ('acct-1', 99, 'Forged', '{}')},
		q{UPDATE %s SET data = '{"forged": true}' WHERE stream_id = 'acct-1'},
		q{UPDATE %s SET data = '{"forged": true}'},
		q{DELETE FROM %s WHERE stream_id = 'acct-1'},
		q{DELETE FROM %s},
		q{TRUNCATE %s}
	],
	'es.streams' => [
		q{INSERT INTO %s (stream_id, version, log_tx_id) VALUES ('forged-1', 1, '1')},
		q{UPDATE %s SET version = version + 1 WHERE stream_id = 'acct-1'},
		q{UPDATE %s SET version = version + 1},
		q{DELETE FROM %s WHERE stream_id = 'acct-1'},
		q{DELETE FROM %s},
		q{TRUNCATE %s}
	]);
foreach my $where (
	[ 'the coordinator', $coord ],
	[ 'worker 1 (shell table)', $workers[0] ],
	[ 'worker 2 (shell table)', $workers[1] ])
{
	my ($name, $node) = @$where;
	foreach my $table (sort keys %writes)
	{
		foreach my $sql (@{ $writes{$table} })
		{
			my $stmt = sprintf($sql, $table);
			like(EsCitus::outcome($node, $stmt), qr/^2F003: /, "$name: $stmt: 2F003");
		}
	}
}

# a worker's shards themselves: a shard of acct-1 (it has rows), on the
# worker that holds it.  Citus refuses some writes to a shard by itself
# (TRUNCATE: XX000): allow them, so that the guard's own refusal is seen.
my $acct1_worker = $holder{'acct-1'} eq $worker_groups[0] ? $workers[0] : $workers[1];
foreach my $table ('es.events', 'es.streams')
{
	my $shard = coord_sql(
		"SELECT get_shard_id_for_distribution_column('$table', 'acct-1')");
	my $shard_table = "${table}_$shard";
	my $setup = "SET citus.override_table_visibility = off;\n";
	isnt(
		$acct1_worker->safe_psql(
			'postgres', "${setup}SELECT count(*) FROM $shard_table WHERE stream_id = 'acct-1'"),
		'0',
		"the shard $shard_table holds acct-1");
	my @shard_writes = (
		$table eq 'es.events'
		? q{INSERT INTO %s (stream_id, version, event_type, data)
			 SELECT stream_id, version + 1000, event_type, data FROM %s LIMIT 1}
		: q{INSERT INTO %s (stream_id, version, log_tx_id) VALUES ('acct-1-forged', 1, '1')},
		q{UPDATE %s SET metadata = '{"forged": true}'},
		q{DELETE FROM %s},
		q{TRUNCATE %s});
	foreach my $manual ('off', 'on')
	{
		foreach my $sql (@shard_writes)
		{
			(my $stmt = $sql) =~ s/%s/$shard_table/g;
			next if $manual eq 'off' && $stmt =~ /^(INSERT|TRUNCATE)/;
			like(
				EsCitus::outcome(
					$acct1_worker,
					"${setup}SET citus.enable_manual_changes_to_shards = $manual;\n$stmt"),
				qr/^2F003: /,
				"the worker's shard (citus.enable_manual_changes_to_shards = $manual): "
				  . ($stmt =~ s/\s+/ /gr) . ': 2F003');
		}
	}
}
is(coord_sql($digest) . ' ' . coord_sql($streams_digest),
	$before, 'es.events and es.streams are unchanged');

# ---------------------------------------------------------------------
# Reads through the coordinator
# ---------------------------------------------------------------------

is( coord_sql(
		q{SELECT string_agg(version || ':' || event_type || ':' || (data ->> 'n'), ',' ORDER BY version)
			FROM es.es_read_stream('acct-1')}),
	'1:Opened:1,2:Deposited:2,3:Deposited:3,4:Deposited:4,5:Withdrawn:5',
	'es_read_stream through the coordinator');
is( coord_sql(
		q{SELECT string_agg(version::text, ',' ORDER BY version DESC)
			FROM es.es_read_stream('acct-1', 4, 2, 'backward')}),
	'4,3', 'es_read_stream backward from a version');
is(coord_sql(q{SELECT es.es_stream_version('acct-1')}), '5', 'es_stream_version');
is(coord_sql(q{SELECT es.es_stream_version('load-17')}), '4', 'es_stream_version of a loaded stream');
is(coord_sql(q{SELECT es.es_stream_version('no-such-stream')}), '0',
	'es_stream_version of no stream: 0');

# a reducer created on the coordinator (Citus propagates the function)
coord_sql(
	q{CREATE FUNCTION public.balance(state jsonb, event jsonb) RETURNS jsonb LANGUAGE sql IMMUTABLE AS $$
		SELECT jsonb_build_object('n', (state ->> 'n')::int + 1,
								  'sum', (state ->> 'sum')::int
										 + CASE event ->> 'type' WHEN 'Withdrawn' THEN -1 ELSE 1 END
										 * (event -> 'data' ->> 'n')::int) $$});
is( coord_sql(
		q{SELECT es.es_fold('acct-1', 'public.balance(jsonb,jsonb)', '{"n": 0, "sum": 0}')}),
	'{"n": 5, "sum": 5}',
	'es_fold through the coordinator');
is( coord_sql(
		q{SELECT es.es_fold('acct-1', 'public.balance(jsonb,jsonb)', '{"n": 0, "sum": 0}', 3)}),
	'{"n": 3, "sum": 6}',
	'es_fold up to a version');
is( coord_sql(
		q{SELECT state::text || ' ' || version || ' ' || events_applied
			FROM es.es_fold_state('acct-1', 'public.balance(jsonb,jsonb)', '{"n": 0, "sum": 0}')}),
	'{"n": 5, "sum": 5} 5 5',
	'es_fold_state through the coordinator');

# in a transaction block (delegated too, force_delegation)
is( coord_sql(
		q{BEGIN;
		  SELECT count(*) FROM es.es_read_stream('acct-1');
		  SELECT es.es_stream_version('acct-1');
		  SELECT count(*) FROM es.es_verify('acct-1');
		  COMMIT;}),
	"5\n5\n0",
	'es_read_stream, es_stream_version and es_verify in a transaction block');
# The folds and es_snapshot_save inside a transaction block (they once ran a
# query Citus plans as a distributed one inside the delegated call: XX000)
{
	foreach my $case (
		[ 'es_fold', q{SELECT es.es_fold('acct-1', 'public.balance(jsonb,jsonb)', '{"n": 0, "sum": 0}')} ],
		[ 'es_fold_state', q{SELECT state FROM es.es_fold_state('acct-1', 'public.balance(jsonb,jsonb)', '{"n": 0, "sum": 0}')} ],
		[ 'es_snapshot_save', q{SELECT es.es_snapshot_save('acct-1', 'public.balance(jsonb,jsonb)', '{"n": 0, "sum": 0}')} ])
	{
		my ($what, $sql) = @$case;
		is(EsCitus::outcome($coord, "BEGIN;\n$sql;\nROLLBACK;"), 'ok', "$what in a transaction block");
	}
}
# a conditional append (a condition over every stream) is not supported on
# a distributed store: 0A000, at top level and in a transaction block
my $cond =
  q{SELECT es.es_append('acct-cond', 0, '[{"type": "Opened", "data": {"n": 1}}]', '[{"types": ["NoSuchType"]}]', NULL)};
like(EsCitus::outcome($coord, $cond),
	qr/^0A000: es_append\(\) with a condition is not supported on a distributed event store/,
	'a conditional es_append: 0A000');
like(EsCitus::outcome($coord, "BEGIN;\n$cond;\nCOMMIT;"),
	qr/^0A000: /, 'a conditional es_append in a transaction block: 0A000');
# es_append not delegated (from a function running on the coordinator, or
# in a query over several rows): 0A000, nothing written
like(
	EsCitus::outcome(
		$coord,
		q{DO $$ BEGIN PERFORM es.es_append('acct-do', NULL, '[{"type": "Opened", "data": {"n": 1}}]'); END $$}
	),
	qr/^0A000: es_append\(\) must run on the node that holds stream "acct-do"/,
	'es_append from a DO block on the coordinator (not delegated): 0A000');
like(
	EsCitus::outcome(
		$coord,
		q{SELECT es.es_append(s, NULL, '[{"type": "Opened", "data": {"n": 1}}]') FROM (VALUES ('acct-rows-1'), ('acct-rows-2')) AS v(s)}
	),
	qr/^0A000: es_append\(\) must run on the node that holds stream "acct-rows-\d"/,
	'es_append in a query over several rows (not delegated): 0A000');
is( coord_sql(q{SELECT count(*) FROM es.snapshots}) . ' '
	  . coord_sql(
		q{SELECT count(*) FROM es.streams WHERE stream_id IN ('acct-cond', 'acct-do', 'acct-rows-1', 'acct-rows-2')}),
	'0 0', 'nothing written by those: no snapshot, no stream acct-cond, acct-do, acct-rows-*');

# es_verify: every stream, one top-level call each (delegated to its worker)
my @all_streams = split /\n/, coord_sql('SELECT stream_id FROM es.streams ORDER BY 1');
is(scalar(@all_streams), 55, '55 streams');
my $verify = join('', map { "SELECT '$_', count(*) FROM es.es_verify('$_');\n" } @all_streams);
is(coord_sql($verify), join("\n", map { "$_|0" } @all_streams),
	'es_verify of every stream: no problem');
is(coord_sql('SELECT count(*) FROM es.es_verify_all()'), '0', 'es_verify_all: no problem');

# ---------------------------------------------------------------------
# es_read_log: the global log, every event exactly once, page by page
# ---------------------------------------------------------------------

my $all_events = coord_sql('SELECT global_position FROM es.events ORDER BY 1');
my $one_page = coord_sql(
	q{SELECT global_position, stream_id, version FROM es.es_read_log(NULL, 100000)});
my @log_rows;
my $cursors;
my $pages = 0;
my $too_big = 0;
for (;;)
{
	my $arg = defined $cursors ? "'$cursors'" : 'NULL';
	my $page = coord_sql(
		"SELECT global_position, stream_id, version, cursors FROM es.es_read_log($arg, 7)");
	last if $page eq '';
	$pages++;
	my @lines = split /\n/, $page;
	$too_big++ if @lines > 7;
	push @log_rows, map { join '|', (split /\|/)[ 0 .. 2 ] } @lines;
	$cursors = (split /\|/, $lines[-1])[3];
	last if $pages > 1000;
}
is($pages, int(($total + 6) / 7), "es_read_log: $pages pages of 7 events");
is($too_big, 0, 'no page has more than 7 events');
is( join("\n", sort { $a <=> $b } map { (split /\|/)[0] } @log_rows),
	$all_events, 'es_read_log page by page: every event of es.events exactly once');
# the node logs are interleaved row by row within a call, so pages
# interleave them differently from one long read; each node's log is the
# same sequence either way
sub by_node
{
	my %log;
	push @{ $log{ (split /\|/)[0] >> 48 } }, $_ foreach @_;
	return \%log;
}
is_deeply(by_node(@log_rows), by_node(split /\n/, $one_page),
	'each node log read page by page is the node log read in one page');
is(scalar(keys %{ by_node(@log_rows) }), 2, 'the log merges two node logs');
my (%last_version, @out_of_order);
foreach my $row (@log_rows)
{
	my ($pos, $s, $v) = split /\|/, $row;
	push @out_of_order, "$s\@$v" if ($last_version{$s} // 0) != $v - 1;
	$last_version{$s} = $v;
}
is_deeply(\@out_of_order, [], 'es_read_log: each stream in version order, no gap');
is(coord_sql("SELECT count(*) FROM es.es_read_log('$cursors', 7)"),
	'0', 'nothing after the last cursor');
append('acct-1', 5, '[{"type": "Deposited", "data": {"n": 6}}]');
is(coord_sql("SELECT stream_id || '\@' || version FROM es.es_read_log('$cursors', 7)"),
	'acct-1@6', 'a new append is read on from the last cursor');

# ---------------------------------------------------------------------
# es.distribute() again: nothing changes
# ---------------------------------------------------------------------

my $metadata = q{
	SELECT (SELECT string_agg(logicalrelid::text || ' ' || partmethod::text || ' ' || colocationid || ' ' || repmodel::text,
							  ', ' ORDER BY logicalrelid::text) FROM pg_dist_partition)
		   || ' / ' ||
		   (SELECT string_agg(s.logicalrelid::text || ' ' || s.shardid || ' ' || s.shardminvalue || ' '
							  || p.groupid, ', ' ORDER BY s.shardid)
			  FROM pg_dist_shard AS s JOIN pg_dist_placement AS p USING (shardid))
		   || ' / ' ||
		   (SELECT string_agg(objid::regprocedure::text || ' ' || coalesce(distribution_argument_index, -1),
							  ', ' ORDER BY objid::regprocedure::text)
			  FROM pg_dist_object WHERE classid = 'pg_proc'::regclass)};
my $sequences = q{
	SELECT string_agg(nodeid || ' ' || result, ', ' ORDER BY nodeid)
	  FROM run_command_on_all_nodes($$SELECT string_agg(sequencename || ' ' || coalesce(last_value, 0) || ' '
														 || min_value || ' ' || max_value, ', ' ORDER BY sequencename)
										  FROM pg_sequences WHERE schemaname = 'es'$$)};
my $state = coord_sql($metadata) . "\n" . coord_sql($sequences) . "\n" . coord_sql($digest);
is(EsCitus::outcome($coord, 'SELECT es.distribute(8)'), 'ok', 'es.distribute(8) again');
is(coord_sql($metadata) . "\n" . coord_sql($sequences) . "\n" . coord_sql($digest),
	$state, 'changed nothing: tables, shards, placements, functions, sequences, events');
is(EsCitus::outcome($coord, 'SELECT es.distribute(16)'),
	'ok', 'es.distribute(16) on a distributed store');
is(coord_sql($metadata) . "\n" . coord_sql($sequences) . "\n" . coord_sql($digest),
	$state, 'changed nothing either (still 8 shards)');
my $max_before = coord_sql(q{SELECT max(global_position) FROM es.events WHERE stream_id = 'load-1'});
is(append('load-1', 4, '[{"type": "Loaded", "data": {"round": 5}}]'),
	'5 1', 'the store appends after es.distribute() again');
is( coord_sql(
		qq{SELECT global_position > $max_before AND global_position >> 48 = $holder{'load-1'}
			FROM es.events WHERE stream_id = 'load-1' AND version = 5}),
	't',
	'at a new position of the range of the node that holds the stream');

# bad calls
foreach my $n ('0', '-1', '64001', 'NULL')
{
	like(EsCitus::outcome($coord, "SELECT es.distribute($n)"),
		qr/^22023: shard count .* is out of range/, "es.distribute($n): 22023");
}
coord_sql(
	q{CREATE ROLE es_citus_user LOGIN;
	  CREATE ROLE es_citus_granted LOGIN;
	  GRANT USAGE ON SCHEMA es TO es_citus_granted;
	  GRANT EXECUTE ON FUNCTION es.distribute(integer) TO es_citus_granted;});
like(
	EsCitus::outcome($coord, "SET ROLE es_citus_user;\nSELECT es.distribute(8)"),
	qr/^42501: /,
	'es.distribute() by a non-superuser: 42501');
is( EsCitus::outcome($coord, "SET ROLE es_citus_granted;\nSELECT es.distribute(8)"),
	'42501: permission denied to distribute the event store',
	'es.distribute() by a non-superuser granted EXECUTE: 42501, from es.distribute itself');
is(coord_sql($metadata), (split /\n/, $state)[0], 'the refused calls changed nothing');

done_testing();
