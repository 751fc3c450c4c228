
# Copyright (c) es_ext contributors
#
# test/t/050_hot_standby.pl
#
# es_ext on a hot standby.  A primary holds streams, an inline projection
# with its read model, an upcaster, explicit and automatic snapshots and an
# outbox with a consumer group; a streaming standby is made from a base
# backup (pg_basebackup, then standby.signal and primary_conninfo, as
# pg_basebackup -R writes them).
#
# After catch-up the standby reads what the primary reads: the events and
# streams, the read model, es_read_stream, es_fold (also from a snapshot,
# checked by counting the reducer's calls; with es.snapshot_every = 1 the
# fold skips its automatic snapshot instead of failing), es_read_all from
# the start, from a cursor and page by page, es_read_query by types and
# tags, and es_read_log (the global log of a distributed store: here the one
# node log).
#
# Gap safety on the standby: while a transaction on the primary holds an xid
# and has not committed, a later commit replayed on the standby is not
# returned by es_read_all (the standby's snapshots count the primary's
# running transactions as running, so the horizon stays below the open
# xid); once it commits, reading on from the cursor the standby returned
# gives both events, none skipped.  Twice: the open transaction appends
# before the other commits, and it took its xid first but writes its first
# WAL record only after the other committed.
#
# Every function of the extension is classified from pg_proc: the readers
# must work on the standby, every other callable function (the writers,
# es_outbox_notify and the procedure es_rebuild_projection) must fail there
# with SQLSTATE 25006, and the test fails on a function in neither list.
# The functions that need Citus (es.distribute(), es_node_ranges) fail on
# the standby and on the primary as they do on any single node.
# Each writer's call is valid: it succeeds on the primary (rolled back).
# The standby's tables are unchanged by the attempts, and the primary still
# appends, projects and rebuilds, and the standby follows.

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $primary = PostgreSQL::Test::Cluster->new('es_primary');
$primary->init(allows_streaming => 1);
# autovacuum off: an autovacuum transaction holding an xid would move the
# horizon of the es_read_all checks below
# preloaded: the standby keeps statistics of its own (es.stats)
$primary->append_conf('postgresql.conf',
	"autovacuum = off\nshared_preload_libraries = 'es_ext'\n");
$primary->start;

my $initial = q{'{"balance": 0, "n": 0}'};
my $reducer = q{'hs.balance(jsonb,jsonb)'};

$primary->safe_psql(
	'postgres', q{
CREATE EXTENSION es_ext;
CREATE SCHEMA hs;
-- a read model that could be rebuilt in a shadow (es_read_model_check)
CREATE SCHEMA hs_read;
CREATE TABLE hs_read.totals (account text PRIMARY KEY, total numeric NOT NULL);

-- the read model, kept by an inline projection
CREATE TABLE hs.balances (account text PRIMARY KEY, balance numeric NOT NULL, events int NOT NULL,
						  last_position bigint NOT NULL);
CREATE FUNCTION hs.project_balance() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	INSERT INTO hs.balances AS b
	VALUES (NEW.stream_id,
			CASE NEW.event_type WHEN 'Withdrawn' THEN -1 ELSE 1 END
			* coalesce((NEW.data ->> 'amount')::numeric, 0),
			1, NEW.global_position)
	ON CONFLICT (account) DO UPDATE
	   SET balance = b.balance + excluded.balance, events = b.events + 1,
		   last_position = excluded.last_position;
	RETURN NULL;
END $$;
CREATE TRIGGER balances AFTER INSERT ON es.events
	FOR EACH ROW WHEN (NEW.category = 'acct') EXECUTE FUNCTION hs.project_balance();

-- a reducer that counts its calls in a session setting (set_config works
-- on a standby)
CREATE FUNCTION hs.balance(state jsonb, event jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
BEGIN
	PERFORM set_config('hs.calls',
					   (coalesce(nullif(current_setting('hs.calls', true), ''), '0')::int + 1)::text, false);
	RETURN jsonb_build_object(
		'balance', (state ->> 'balance')::numeric
				   + CASE event ->> 'type' WHEN 'Withdrawn' THEN -1 ELSE 1 END
				   * coalesce((event -> 'data' ->> 'amount')::numeric, 0),
		'n', (state ->> 'n')::int + 1,
		'currency', coalesce(event -> 'data' -> 'currency', state -> 'currency'));
END $$;

-- an upcaster: every read on either node raises Opened v1 to v2
CREATE FUNCTION hs.opened_v1_v2(data jsonb) RETURNS jsonb LANGUAGE sql IMMUTABLE
	AS $$ SELECT data || '{"currency": "EUR"}' $$;
SELECT es.es_register_upcaster('Opened', 1, 'hs.opened_v1_v2(jsonb)');

-- the outbox: a route and a consumer group
SELECT es.es_outbox_route('acct');
SELECT es.es_outbox_create_group('billing');

-- four accounts of 10 events in one batch each, and a note stream
SELECT es.es_append('acct-' || a, 0,
		(SELECT jsonb_agg(CASE WHEN i = 1
							   THEN jsonb_build_object('type', 'Opened', 'data', '{}'::jsonb,
													   'metadata', jsonb_build_object('correlation_id', 'c-' || a))
							   ELSE jsonb_build_object('type', CASE WHEN i % 3 = 0 THEN 'Withdrawn' ELSE 'Deposited' END,
													   'data', jsonb_build_object('amount', i * a),
													   'metadata', jsonb_build_object('correlation_id', 'c-' || a,
																					  'causation_id', 'k-' || i))
						  END ORDER BY i)
		   FROM generate_series(1, 10) AS i))
  FROM generate_series(1, 4) AS a;
SELECT es.es_append('note-1', NULL, '[{"type": "Noted", "data": {"text": "hello"}}]');
-- tagged events, for es_read_query
SELECT es.es_append('seat-' || s, NULL,
		jsonb_build_array(jsonb_build_object('type', 'SeatSold', 'data', jsonb_build_object('seat', s),
											 'tags', jsonb_build_array('show:1', 'seat:' || s))))
  FROM generate_series(1, 3) AS s;
});

# an explicit snapshot of acct-1 at version 8, an automatic one of acct-2 at
# version 10, then more events, one transaction each
$primary->safe_psql('postgres',
	"SELECT es.es_snapshot_save('acct-1', $reducer, $initial, 8)");
$primary->safe_psql('postgres',
	"SET es.snapshot_every = 5; SELECT es.es_fold('acct-2', $reducer, $initial)");
$primary->safe_psql(
	'postgres', q{
SELECT es.es_append('acct-' || (1 + i % 3), NULL,
		jsonb_build_array(jsonb_build_object('type', 'Deposited', 'data', jsonb_build_object('amount', i))))
  FROM generate_series(1, 9) AS i;
SELECT es.es_append('note-1', NULL, '[{"type": "Noted", "data": {"text": "again"}}]');
});
is( $primary->safe_psql(
		'postgres',
		'SELECT string_agg(stream_id || \'@\' || version || CASE WHEN automatic THEN \' auto\' ELSE \'\' END, \', \' ORDER BY stream_id) FROM es.snapshots'
	),
	'acct-1@8, acct-2@10 auto',
	'the primary holds an explicit and an automatic snapshot');

# a claim, so that ack and nack have a lease to present on the standby
my ($lease, $lease_position) = split /\|/,
  $primary->safe_psql('postgres',
	'SELECT lease, "position" FROM es.es_outbox_claim(\'billing\', 1)');

# a global-log subscriber's checkpoint (from the start)
$primary->safe_psql('postgres', q{SELECT es.es_checkpoint_save('hs-sub', NULL)});

# an asynchronous projection (trigger and declaration in one transaction:
# from the start of the log), applied up to the end by the procedure
$primary->safe_psql(
	'postgres', q{
CREATE TABLE hs.async_model (stream_id text, version bigint, PRIMARY KEY (stream_id, version));
-- an es_import source (replicated: the standby's call is refused before it is read)
CREATE TABLE hs.import_src (LIKE es.import_event);
INSERT INTO hs.import_src (stream_id, event_type, data) VALUES ('imp-1', 'Imported', '{}');
CREATE FUNCTION hs.project_async() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	INSERT INTO hs.async_model VALUES (NEW.stream_id, NEW.version);
	RETURN NULL;
END $$;
BEGIN;
CREATE TRIGGER hs_async AFTER INSERT ON es.events FOR EACH ROW EXECUTE FUNCTION hs.project_async();
SELECT es.es_create_async_projection('hs_async', 10);
COMMIT;
CALL es.es_run_projections('hs_async');
});
is( $primary->safe_psql(
		'postgres',
		q{SELECT (SELECT count(*) FROM hs.async_model) = (SELECT count(*) FROM es.events)
				 AND events_behind = 0 AND state = 'running'
			FROM es.projections WHERE projection = 'hs_async'}),
	't',
	'the primary applied its asynchronous projection');

# the standby
$primary->backup('es_backup');
my $standby = PostgreSQL::Test::Cluster->new('es_standby');
$standby->init_from_backup($primary, 'es_backup', has_streaming => 1);
$standby->start;
$primary->wait_for_catchup($standby);
is($standby->safe_psql('postgres', 'SELECT pg_is_in_recovery()'),
	't', 'the standby is in recovery');

# ---------------------------------------------------------------------
# What the standby reads equals what the primary reads
# ---------------------------------------------------------------------

# a digest of every es_ext table and the read model, one line per table
my $digest_sql = join(
	"\nUNION ALL\n",
	map {
		"SELECT '$_', count(*), md5(coalesce(string_agg(t::text, '|' ORDER BY t::text), '')) FROM $_ AS t"
	  } qw(es.config es.streams es.events es.snapshots es.upcasters es.projection_status
	  es.outbox_routes es.outbox_groups es.outbox es.outbox_deliveries es.outbox_dead
	  es.user_objects es.async_projections es.projection_dead_letters hs.balances hs.async_model));

my %same = (
	'tables' => $digest_sql,
	'es_read_stream, forward' => q{
		SELECT s.stream_id, r.version, r.event_id, r.event_type, r.schema_version, r.data, r.metadata
		  FROM es.streams AS s, es.es_read_stream(s.stream_id) AS r
		 ORDER BY s.stream_id, r.version},
	'es_read_stream, backward from a version' =>
	  q{SELECT version, data FROM es.es_read_stream('acct-1', 9, 3, 'backward')},
	'es_stream_version' =>
	  q{SELECT stream_id, es.es_stream_version(stream_id) FROM es.streams ORDER BY 1},
	'es_verify_all, es_heads and es_digest (the chains verify on the standby)' => q{
		SELECT 'problems', count(*)::text FROM es.es_verify_all()
		UNION ALL SELECT 'heads', string_agg(h.stream_id || ':' || h.version || ':' || h.head_hash, ',')
		  FROM es.es_heads() AS h
		UNION ALL SELECT 'digest', es.es_digest()::text},
	'es_fold_state of every account' => qq{
		SELECT s.stream_id, f.*
		  FROM es.streams AS s, es.es_fold_state(s.stream_id, $reducer, $initial) AS f
		 WHERE s.category = 'acct' ORDER BY 1},
	'es_fold up to a version' =>
	  qq{SELECT es.es_fold('acct-3', $reducer, $initial, 5)},
	'es_read_all from the start' => q{
		SELECT global_position, stream_id, version, event_id, event_type, data, metadata,
			   recorded_at, log_cursor
		  FROM es.es_read_all(NULL, 1000)},
	'es_read_all of a category and event types' => q{
		SELECT global_position, log_cursor
		  FROM es.es_read_all(NULL, 1000, 'acct', ARRAY['Opened', 'Withdrawn'])},
	'es_read_query by types and tags' => q{
		SELECT global_position, stream_id, version, event_type, tags, data, log_cursor
		  FROM es.es_read_query('[{"types": ["SeatSold"], "tags": ["show:1"]}, {"tags": ["nobody"]}]')},
	'es_read_log from the start (one node log, node 0)' => q{
		SELECT global_position, stream_id, version, event_id, event_type, data, metadata,
			   recorded_at, node, log_cursor, cursors
		  FROM es.es_read_log(NULL, 1000)},
	'es_read_log of a category and event types, from the cursors of its 3rd row' => q{
		SELECT global_position, log_cursor, cursors
		  FROM es.es_read_log((SELECT r.cursors FROM es.es_read_log(NULL, 3, 'acct') AS r OFFSET 2),
							  1000, 'acct', ARRAY['Opened', 'Withdrawn'])},
	'es_events_by_correlation and es_events_by_causation' => q{
		SELECT 'c', global_position FROM es.es_events_by_correlation('c-2')
		UNION ALL SELECT 'k', global_position FROM es.es_events_by_causation('k-3')},
	'es_upcast' => q{
		SELECT (es.es_upcast(e)).data FROM es.events AS e WHERE e.event_type = 'Opened'
		 ORDER BY e.global_position},
	'es.projections (inline and asynchronous)' => q{
		SELECT projection, mode, state, function, batch_size, checkpoint, events_behind, applied,
			   last_applied_at, attempts, last_error, dead_letters, owner
		  FROM es.projections ORDER BY projection},
	'es_fold_agg' => qq{
		SELECT e.stream_id, es.es_fold_agg($reducer, $initial, e ORDER BY e.version)
		  FROM es.events AS e WHERE e.category = 'acct' GROUP BY 1 ORDER BY 1},);

foreach my $name (sort keys %same)
{
	my $want = $primary->safe_psql('postgres', $same{$name});
	isnt($want, '', "the primary has rows: $name");
	is($standby->safe_psql('postgres', $same{$name}),
		$want, "the standby reads what the primary reads: $name");
}
is( $standby->safe_psql(
		'postgres',
		q{SELECT count(*) FROM es.events AS e JOIN es.es_read_all(NULL, 1000) AS r USING (event_id)}),
	$standby->safe_psql('postgres', 'SELECT count(*) FROM es.events'),
	'es_read_all on the standby returns every event');

# from a cursor the standby returned, and page by page
my $cursor7 = $standby->safe_psql('postgres',
	'SELECT log_cursor FROM es.es_read_all(NULL, 7) OFFSET 6');
my $from_cursor = qq{
	SELECT global_position, stream_id, version, data, log_cursor
	  FROM es.es_read_all('$cursor7', 1000)};
is( $standby->safe_psql('postgres', $from_cursor),
	$primary->safe_psql('postgres', $from_cursor),
	'es_read_all from a cursor: the standby reads what the primary reads');
is( $standby->safe_psql('postgres', "SELECT count(*) FROM es.es_read_all('$cursor7', 1000)"),
	$standby->safe_psql('postgres', 'SELECT count(*) - 7 FROM es.events'),
	'es_read_all from a cursor returns every later event');

# Page through the global log on $node, $size events at a time, from $cursor
# (undef: the start); returns the cursor of the last row and the rows.
sub read_pages
{
	my ($node, $cursor, $size) = @_;
	my @rows;
	for (;;)
	{
		my $arg = defined $cursor ? "'$cursor'" : 'NULL';
		my $page = $node->safe_psql('postgres',
			"SELECT global_position, stream_id, version, log_cursor FROM es.es_read_all($arg, $size)"
		);
		last if $page eq '';
		my @lines = split /\n/, $page;
		push @rows, @lines;
		($cursor) = (split /\|/, $lines[-1])[3];
		last if @lines < $size;
	}
	return ($cursor, @rows);
}
my ($cursor, @standby_pages) = read_pages($standby, undef, 5);
my (undef, @primary_pages) = read_pages($primary, undef, 5);
is_deeply(\@standby_pages, \@primary_pages,
	'es_read_all page by page (5 events a page): the standby reads what the primary reads');

# es_fold from a snapshot on the standby: the reducer is called only for the
# events after it
foreach my $case (['acct-1', 8], ['acct-2', 10])
{
	my ($stream, $snapshot) = @$case;
	is( $standby->safe_psql(
			'postgres', qq{
		SELECT set_config('hs.calls', '0', false);
		SELECT f.snapshot_version, f.events_applied = f.version - $snapshot,
			   current_setting('hs.calls')::bigint = f.events_applied, f.events_applied > 0
		  FROM es.es_fold_state('$stream', $reducer, $initial) AS f}),
		"0\n$snapshot|t|t|t",
		"es_fold_state of $stream on the standby starts from the snapshot at version $snapshot"
	);
}

# es.snapshot_every = 1: a fold that would write an automatic snapshot skips
# it on the standby and returns the primary's state
my $fold_acct3 = "SELECT es.es_fold('acct-3', $reducer, $initial)";
is( $standby->safe_psql('postgres', "SET es.snapshot_every = 1; $fold_acct3"),
	$primary->safe_psql('postgres', $fold_acct3),
	'es_fold with es.snapshot_every = 1 works on the standby');
is( $standby->safe_psql(
		'postgres', "SELECT count(*) FROM es.snapshots WHERE stream_id = 'acct-3'"),
	'0',
	'and wrote no snapshot');

# ---------------------------------------------------------------------
# Gap safety: es_read_all on the standby never skips a late commit
# ---------------------------------------------------------------------

my $session_a = $primary->background_psql('postgres');

# Case 1: A appends and stays open; B appends to another stream and commits.
$session_a->query_safe(
	q{BEGIN; SELECT es.es_append('gapa-1', 0, '[{"type": "Late", "data": {}}]')});
my $xid_a = $session_a->query_safe('SELECT pg_current_xact_id()');
$primary->safe_psql('postgres',
	q{SELECT es.es_append('gapb-1', 0, '[{"type": "Early", "data": {}}]')});
$primary->wait_for_catchup($standby);
is( $standby->safe_psql(
		'postgres', "SELECT count(*) FROM es.events WHERE stream_id = 'gapb-1'"),
	'1',
	'case 1: the standby replayed the commit of B');
is($standby->safe_psql('postgres', "SELECT count(*) FROM es.es_read_all('$cursor', 1000)"),
	'0', 'case 1: es_read_all on the standby does not return B while A is open');
is( $standby->safe_psql('postgres', "SELECT es.es_log_horizon() <= '$xid_a'::xid8"),
	't', "case 1: the standby's horizon is at or below A's xid");
$session_a->query_safe('COMMIT');
$primary->wait_for_catchup($standby);
is( $standby->safe_psql(
		'postgres', "SELECT stream_id FROM es.es_read_all('$cursor', 1000)"),
	"gapa-1\ngapb-1",
	'case 1: after A commits, reading on from the cursor returns A and B');
$cursor = $standby->safe_psql('postgres',
	"SELECT log_cursor FROM es.es_read_all('$cursor', 1000) OFFSET 1");

# Case 2: C commits; A takes an xid (no WAL yet); B appends and commits; only
# then does A write its first WAL record.
$primary->safe_psql('postgres',
	q{SELECT es.es_append('gapc-2', 0, '[{"type": "Before", "data": {}}]')});
$session_a->query_safe('BEGIN');
$xid_a = $session_a->query_safe('SELECT pg_current_xact_id()');
is( $primary->safe_psql(
		'postgres',
		q{SELECT pg_current_xact_id() > '} . $xid_a
		  . q{'::xid8, (es.es_append('gapb-2', 0, '[{"type": "Early", "data": {}}]')).version}
	),
	't|1',
	'case 2: B takes a later xid than A and commits');
$primary->wait_for_catchup($standby);
is( $standby->safe_psql(
		'postgres', "SELECT count(*) FROM es.events WHERE stream_id = 'gapb-2'"),
	'1',
	'case 2: the standby replayed the commit of B');
is( $standby->safe_psql(
		'postgres', "SELECT stream_id FROM es.es_read_all('$cursor', 1000)"),
	'gapc-2',
	'case 2: es_read_all on the standby returns C, not B, while A (no WAL yet) is open');
$cursor = $standby->safe_psql('postgres',
	"SELECT log_cursor FROM es.es_read_all('$cursor', 1000)");
$session_a->query_safe(
	q{SELECT es.es_append('gapa-2', 0, '[{"type": "Late", "data": {}}]')});
$primary->wait_for_catchup($standby);
is($standby->safe_psql('postgres', "SELECT count(*) FROM es.es_read_all('$cursor', 1000)"),
	'0', 'case 2: nothing more while A, now appending, is open');
$session_a->query_safe('COMMIT');
$primary->wait_for_catchup($standby);
is( $standby->safe_psql(
		'postgres', "SELECT stream_id FROM es.es_read_all('$cursor', 1000)"),
	"gapa-2\ngapb-2",
	'case 2: after A commits, reading on from the cursor C returned gives A and B');
$session_a->quit;

my ($end_cursor, @standby_all) = read_pages($standby, undef, 7);
my (undef, @primary_all) = read_pages($primary, undef, 7);
is_deeply(\@standby_all, \@primary_all,
	'after the gaps, the whole log read on the standby equals the primary\'s');

# an archived stream (issue 15), for es_unarchive_stream's valid call, and
# its events read on the standby from es.archived_events
$primary->safe_psql('postgres',
	q{SELECT es.es_append('hsarch-1', 0, '[{"type": "Noted", "data": {}}]'); SELECT es.es_archive_stream('hsarch-1')});
$primary->wait_for_catchup($standby);
is($standby->safe_psql('postgres', q{SELECT count(*) FROM es.es_read_stream('hsarch-1')}),
	'1', 'the standby reads an archived stream');

# ---------------------------------------------------------------------
# Every function of the extension: readers work, the rest fail with 25006
# ---------------------------------------------------------------------

# readers (and anything else allowed on a standby): a call each, which must
# work there
my %readers = (
	'es.es_read_stream(text,bigint,bigint,text)' =>
	  q{SELECT count(*) FROM es.es_read_stream('acct-1')},
	'es.es_stream_version(text)' => q{SELECT es.es_stream_version('acct-1')},
	# tamper evidence: an auditor checks a standby as well as the primary
	'es.es_verify(text)' => q{SELECT count(*) FROM es.es_verify('acct-1')},
	'es.es_verify_all()' => q{SELECT count(*) FROM es.es_verify_all()},
	'es.es_heads()' => q{SELECT count(*) FROM es.es_heads()},
	'es.es_digest(jsonb)' => q{SELECT es.es_digest()},
	'es.es_verify_heads(jsonb)' =>
	  q{SELECT count(*) FROM es.es_verify_heads((SELECT jsonb_agg(h) FROM es.es_heads() AS h))},
	'es.es_read_all(es.log_cursor,integer,text,text[])' =>
	  q{SELECT count(*) FROM es.es_read_all(NULL, 10, 'acct', ARRAY['Deposited'])},
	'es.es_log_horizon()' => q{SELECT es.es_log_horizon()},
	'es.max(es.log_cursor)' => q{SELECT es.max(r.log_cursor) FROM es.es_read_all(NULL, 10) AS r},
	'es.log_cursor_larger(es.log_cursor,es.log_cursor)' =>
	  q{SELECT es.log_cursor_larger('(0,1,1)', '(0,1,2)')},
	'es.es_read_query(jsonb,es.log_cursor,integer)' =>
	  q{SELECT count(*) FROM es.es_read_query('[{"types": ["SeatSold"], "tags": ["show:1"]}]', NULL, 10)},
	# the global log of a distributed store; on a single node, its one log
	'es.es_read_log(es.log_cursor[],integer,text,text[])' =>
	  q{SELECT count(*) FROM es.es_read_log(NULL, 10, 'acct', ARRAY['Deposited'])},
	'es.es_events_by_correlation(text)' =>
	  q{SELECT count(*) FROM es.es_events_by_correlation('c-1')},
	'es.es_events_by_causation(text)' =>
	  q{SELECT count(*) FROM es.es_events_by_causation('k-2')},
	'es.es_upcast(es.events)' =>
	  q{SELECT count((es.es_upcast(e)).data) FROM es.events AS e},
	'es.es_fold(text,regprocedure,jsonb,bigint,timestamp with time zone)' =>
	  qq{SELECT es.es_fold('acct-4', $reducer, $initial, NULL, now())},
	'es.es_fold_state(text,regprocedure,jsonb,bigint,timestamp with time zone)' =>
	  qq{SELECT es.es_fold_state('acct-1', $reducer, $initial)},
	'es.es_fold_agg(regprocedure,jsonb,es.events)' =>
	  qq{SELECT es.es_fold_agg($reducer, $initial, e ORDER BY e.version) FROM es.events AS e WHERE e.stream_id = 'acct-2'},
	'es.es_outbox_notify_status()' => q{SELECT * FROM es.es_outbox_notify_status()},
	# what es_outbox_claim asks every node of a distributed store
	'es.es_outbox_undelivered(text,text,bigint)' =>
	  q{SELECT es.es_outbox_undelivered('billing', 'acct-1', 100)},
	'es.es_user_objects()' => q{SELECT count(*) FROM es.es_user_objects()},
	'es.es_current_tenants()' => q{SELECT es.es_current_tenants()},
	# statistics live in the standby's own shared memory: reset works there
	'es.es_stats_counters(text)' =>
	  q{SELECT count(*) FROM es.es_stats_counters('database')},
	'es.es_stats_reset()' => q{SELECT es.es_stats_reset()},
	'es.es_checkpoint(text)' => q{SELECT es.es_checkpoint('hs-sub')},
	# decrypts with the keys replicated from the primary (SELECT only)
	'es.es_decrypt(jsonb)' => q{SELECT es.es_decrypt('{"a": 1}')},
	'es.es_cursor_lag(es.log_cursor)' => q{SELECT * FROM es.es_cursor_lag(NULL)},
	'es.es_read_model_check(name)' => q{SELECT * FROM es.es_read_model_check('hs_read')},
	# read-your-writes waits poll on a standby; a timeout of 0 checks once
	'es.es_wait_for(name,es.log_cursor,interval)' =>
	  q{SELECT es.es_wait_for('balances', (SELECT r.log_cursor FROM es.es_read_all(NULL, 1) AS r), '0')},
	'es.es_wait_for_checkpoint(text,es.log_cursor,interval)' =>
	  q{SELECT es.es_wait_for_checkpoint('hs-sub', (SELECT r.log_cursor FROM es.es_read_all(NULL, 1) AS r), '0')},
	'es.es_wait_for_group(text,es.log_cursor,interval)' =>
	  q{SELECT es.es_wait_for_group('billing', (SELECT r.log_cursor FROM es.es_read_all(NULL, 1) AS r), '0')},);

# writers (and the wake-up): a call each with valid arguments, which must
# fail on the standby with 25006
my %writers = (
	'es.es_append(text,bigint,jsonb)' =>
	  q{SELECT es.es_append('acct-1', NULL, '[{"type": "Deposited", "data": {"amount": 1}}]')},
	# the conditional append: its condition holds on the primary
	'es.es_append(text,bigint,jsonb,jsonb,es.log_cursor)' =>
	  q{SELECT es.es_append('seat-4', 0, '[{"type": "SeatSold", "data": {"seat": 4}, "tags": ["show:1", "seat:4"]}]',
							'[{"types": ["SeatSold"], "tags": ["seat:4"]}]', NULL)},
	'es.es_import(regclass,boolean)' => q{SELECT es.es_import('hs.import_src')},
	'es.es_snapshot_save(text,regprocedure,jsonb,bigint)' =>
	  qq{SELECT es.es_snapshot_save('acct-3', $reducer, $initial)},
	'es.es_snapshot_delete(text,regprocedure)' =>
	  q{SELECT es.es_snapshot_delete('acct-1')},
	'es.es_register_upcaster(text,integer,regprocedure)' =>
	  q{SELECT es.es_register_upcaster('Noted', 1, 'hs.opened_v1_v2(jsonb)')},
	'es.es_unregister_upcaster(text,integer)' =>
	  q{SELECT es.es_unregister_upcaster('Opened', 1)},
	'es.es_projection_replay(name,es.log_cursor,integer,boolean)' =>
	  q{SELECT * FROM es.es_projection_replay('balances', NULL, 10, false)},
	'es.es_rebuild_shadow_batch(name,integer,boolean)' =>
	  q{SELECT es.es_rebuild_shadow_batch('balances', 10, false)},
	'es.es_rebuild_projection(name,text,integer,boolean,name,text)' =>
	  q{CALL es.es_rebuild_projection('balances', 'TRUNCATE hs.balances')},
	'es.es_outbox_notify()' => q{SELECT es.es_outbox_notify()},
	'es.es_outbox_route(text,text)' => q{SELECT es.es_outbox_route('note')},
	'es.es_outbox_unroute(text,text)' => q{SELECT es.es_outbox_unroute('acct')},
	'es.es_outbox_create_group(text,integer,interval,interval,boolean)' =>
	  q{SELECT es.es_outbox_create_group('audit', backfill => true)},
	'es.es_outbox_alter_group(text,integer,interval,interval)' =>
	  q{SELECT es.es_outbox_alter_group('billing', max_attempts => 3)},
	'es.es_outbox_drop_group(text)' => q{SELECT es.es_outbox_drop_group('billing')},
	'es.es_outbox_claim(text,integer,interval)' =>
	  q{SELECT * FROM es.es_outbox_claim('billing', 10)},
	'es.es_outbox_ack(text,uuid,bigint[])' =>
	  qq{SELECT es.es_outbox_ack('billing', '$lease', ARRAY[$lease_position]::bigint[])},
	'es.es_outbox_nack(text,uuid,bigint[],text,interval)' =>
	  qq{SELECT es.es_outbox_nack('billing', '$lease', ARRAY[$lease_position]::bigint[], 'failed')},
	'es.es_outbox_replay(text,bigint[])' => q{SELECT es.es_outbox_replay('billing')},
	'es.es_outbox_discard(text,bigint[])' => q{SELECT es.es_outbox_discard('billing')},
	'es.es_outbox_cleanup(interval,integer)' => q{SELECT es.es_outbox_cleanup()},
	'es.es_replica_projections(boolean)' => q{SELECT * FROM es.es_replica_projections(false)},
	'es.es_checkpoint_save(text,es.log_cursor)' =>
	  q{SELECT es.es_checkpoint_save('hs-sub', es.es_checkpoint('hs-sub'))},
	'es.es_checkpoint_drop(text)' => q{SELECT es.es_checkpoint_drop('hs-sub')},
	# tenancy: policies are DDL
	'es.es_enable_tenancy(boolean)' => q{SELECT * FROM es.es_enable_tenancy()},
	'es.es_disable_tenancy()' => q{SELECT * FROM es.es_disable_tenancy()},
	# crypto-shredding: destroys a key
	'es.es_forget_subject(text)' => q{SELECT es.es_forget_subject('hs-subject')},
	# asynchronous projections
	'es.es_create_async_projection(name,integer,text[],text[],text,integer,boolean)' =>
	  q{SELECT es.es_create_async_projection('balances')},
	'es.es_projection_apply(name)' => q{SELECT es.es_projection_apply('hs_async')},
	'es.es_projection_failed(name,text,text)' =>
	  q{SELECT es.es_projection_failed('hs_async', 'boom', 'XX000')},
	'es.es_projection_pause(name)' => q{SELECT es.es_projection_pause('hs_async')},
	'es.es_projection_resume(name)' => q{SELECT es.es_projection_resume('hs_async')},
	'es.es_projection_reset(name,text)' =>
	  q{SELECT es.es_projection_reset('hs_async', 'TRUNCATE hs.async_model')},
	'es.es_projection_retry_dead(name,bigint)' => q{SELECT es.es_projection_retry_dead('hs_async')},
	'es.es_projection_discard_dead(name,bigint)' =>
	  q{SELECT es.es_projection_discard_dead('hs_async')},
	'es.es_projection_make_inline(name)' => q{SELECT es.es_projection_make_inline('hs_async')},
	'es.es_drop_projection(name)' => q{SELECT es.es_drop_projection('hs_async')},
	# data lifecycle (issue 15)
	'es.es_archive_stream(text)' => q{SELECT es.es_archive_stream('acct-1')},
	'es.es_unarchive_stream(text)' => q{SELECT es.es_unarchive_stream('hsarch-1')},
	'es.es_erase_stream(text,text)' => q{SELECT es.es_erase_stream('acct-2', 'hot standby test')},
	'es.es_set_retention(text,text,interval,bigint)' =>
	  q{SELECT es.es_set_retention('acct', NULL, NULL, 100)},
	'es.es_apply_retention(integer)' => q{SELECT es.es_apply_retention()},
	# on the standby: es_projection_apply fails, and so does the
	# es_projection_failed that records it
	'es.es_run_projections(name,integer,bigint,integer)' =>
	  q{CALL es.es_run_projections('hs_async')},);

# Citus (issue 16): they need a Citus cluster, and refuse on a single node,
# standby or primary, before reading or writing anything (superuser only;
# es_node_ranges is run on every node by es.distribute())
my %needs_citus = (
	'es.distribute(integer)' => [ q{SELECT es.distribute(4)}, qr/^55000: extension "citus" is not installed/ ],
	'es.es_node_ranges()' => [ q{SELECT es.es_node_ranges()}, qr/^55000: extension "citus" is not installed/ ],
);

# called only by PostgreSQL: trigger functions, the aggregate's support
# functions (they take internal)
my %internal = map { $_ => 1 } (
	'es.es_guard()', 'es.es_project()',
	'es.es_outbox_routes_changed()', 'es.es_upcasters_changed()',
	'es.es_subject_keys_changed()',
	'es.es_upcasters_stamp()', 'es.es_restored()',
	'es.es_user_objects_pending()',
	'es.es_fold_agg_step(internal,regprocedure,jsonb,es.events)',
	'es.es_fold_agg_final(internal)');

# $sql on $node: "ok", or "SQLSTATE: message" of its error
sub outcome
{
	my ($node, $sql) = @_;
	my ($ret, $stdout, $stderr) =
	  $node->psql('postgres', "\\set VERBOSITY verbose\n$sql");
	return 'ok' if $ret == 0;
	return "$1: $2" if $stderr =~ /ERROR:\s+([0-9A-Z]{5}):\s+(.*)/;
	return "psql exit $ret: $stderr";
}

my $functions = $standby->safe_psql(
	'postgres', q{
	SELECT p.oid::pg_catalog.regprocedure::text, l.lanname,
		   p.prorettype = 'pg_catalog.trigger'::pg_catalog.regtype
		   OR 'pg_catalog.internal'::pg_catalog.regtype = ANY (p.proargtypes::oid[])
	  FROM pg_catalog.pg_proc AS p
	  JOIN pg_catalog.pg_language AS l ON l.oid = p.prolang
	  JOIN pg_catalog.pg_depend AS d
		ON d.classid = 'pg_catalog.pg_proc'::pg_catalog.regclass AND d.objid = p.oid
	   AND d.deptype = 'e'
	  JOIN pg_catalog.pg_extension AS x ON x.oid = d.refobjid AND x.extname = 'es_ext'
	 ORDER BY 1});
my $before = $standby->safe_psql('postgres', $digest_sql);
my %seen;

foreach my $line (split /\n/, $functions)
{
	my ($fn, $lang, $not_callable) = split /\|/, $line;
	$seen{$fn} = 1;
	if (exists $readers{$fn})
	{
		is(outcome($standby, $readers{$fn}), 'ok', "reader $fn works on the standby");
	}
	elsif (exists $writers{$fn})
	{
		my $got = outcome($standby, $writers{$fn});
		like($got, qr/^25006: /, "$fn fails on the standby with 25006 ($got)");
		# a C function refuses by its own name, before anything else
		if ($lang eq 'c')
		{
			(my $name = $fn) =~ s/^es\.(\w+)\(.*$/$1/;
			is($got, "25006: cannot execute $name() during recovery",
				"$fn refuses by its name");
		}
	}
	elsif (exists $internal{$fn})
	{
		is($not_callable, 't', "$fn is called only by PostgreSQL");
	}
	elsif (exists $needs_citus{$fn})
	{
		my ($sql, $want) = @{ $needs_citus{$fn} };
		like(outcome($standby, $sql), $want, "$fn refuses on the standby without Citus");
		like(outcome($primary, "BEGIN;\n$sql;\nROLLBACK;"), $want, "$fn refuses on the primary without Citus");
	}
	else
	{
		fail("function $fn of the extension is neither a reader nor a writer: classify it in "
			  . __FILE__);
	}
}
foreach my $fn (sort(keys %readers, keys %writers, keys %internal, keys %needs_citus))
{
	ok($seen{$fn}, "$fn listed in this test exists in the extension");
}

# the subscriptions view on the standby: the checkpoint saved on the primary
is( $standby->safe_psql(
		'postgres',
		q{SELECT name || ' ' || (events_behind = (SELECT count(*) FROM es.events)) FROM es.subscriptions}),
	'hs-sub true',
	'es.subscriptions on the standby shows the primary\'s checkpoint and its lag');

# the statistics views on the standby: its own reads, counted there
$standby->safe_psql('postgres', q{SELECT count(*) FROM es.es_read_stream('acct-1')});
is( $standby->safe_psql(
		'postgres',
		q{SELECT enabled AND stream_reads >= 1 AND appends = 0
		    FROM es.stats WHERE datname = current_database()}),
	't',
	'es.stats on the standby counts its reads (and no appends)');
is( $standby->safe_psql(
		'postgres', q{SELECT stream_reads >= 1 FROM es.category_stats WHERE category = 'acct'}),
	't', 'es.category_stats on the standby');
is($standby->safe_psql('postgres', $digest_sql),
	$before, 'the attempts changed nothing on the standby');

# the writers' calls are valid: each succeeds on the primary (rolled back;
# the procedure commits by itself, it runs last, for real)
foreach my $fn (sort keys %writers)
{
	next if $writers{$fn} =~ /^CALL/;
	# needs a rebuild in a shadow in progress (sql/rebuild_shadow.sql runs it)
	next if $fn =~ /^es\.es_rebuild_shadow_batch\(/;
	is(outcome($primary, "BEGIN;\n$writers{$fn};\nROLLBACK;"),
		'ok', "the call of $fn succeeds on the primary");
}

# ---------------------------------------------------------------------
# The primary still works, and the standby follows
# ---------------------------------------------------------------------

my $balances = 'SELECT account, balance, events FROM hs.balances ORDER BY 1';
my $balances_before = $primary->safe_psql('postgres', $balances);
is( outcome($primary, $writers{'es.es_rebuild_projection(name,text,integer,boolean,name,text)'}),
	'ok', 'es_rebuild_projection succeeds on the primary');
is($primary->safe_psql('postgres', $balances),
	$balances_before, 'and rebuilds the same read model');
is( $primary->safe_psql(
		'postgres',
		q{SELECT (es.es_append('acct-1', NULL, '[{"type": "Deposited", "data": {"amount": 1000}}]')).version}
	),
	'14',
	'the primary appends');
is( outcome($primary, $writers{'es.es_run_projections(name,integer,bigint,integer)'}),
	'ok', 'es_run_projections succeeds on the primary');
$primary->wait_for_catchup($standby);
is($standby->safe_psql('postgres', $digest_sql),
	$primary->safe_psql('postgres', $digest_sql),
	'the standby follows: every table equals the primary\'s');
is( $standby->safe_psql(
		'postgres',
		q{SELECT p.state || ' ' || p.events_behind || ' ' || p.applied
					 || ' ' || ((SELECT count(*) FROM hs.async_model)
								= (SELECT count(*) FROM es.events) + (SELECT count(*) FROM es.archived_events))
			FROM es.projections AS p WHERE p.projection = 'hs_async'}),
	# the archived stream's event was applied before it was archived
	'running 0 '
	  . $primary->safe_psql('postgres',
		'SELECT (SELECT count(*) FROM es.events) + (SELECT count(*) FROM es.archived_events)')
	  . ' true',
	'es.projections on the standby: the asynchronous projection caught up with the primary\'s new event');
is( $standby->safe_psql(
		'postgres', "SELECT stream_id, version FROM es.es_read_all('$end_cursor', 1000)"),
	'acct-1|14',
	'the new event is read on from the standby\'s last cursor');
is( $standby->safe_psql(
		'postgres', "SELECT balance FROM hs.balances WHERE account = 'acct-1'"),
	$primary->safe_psql(
		'postgres', "SELECT balance FROM hs.balances WHERE account = 'acct-1'"),
	'the read model on the standby follows');
is( $standby->safe_psql(
		'postgres',
		q{SELECT count(*) FROM pg_stat_activity WHERE backend_type IN ('es_ext projection worker', 'es_ext notify launcher')}),
	'0',
	'no es_ext launcher or projection worker runs on the standby, which has an asynchronous projection');

# crypto-shredding: personal fields appended on the primary read in clear on
# the standby (the keys replicate with es.subject_keys); after a forget on
# the primary, the standby reads the redaction marker
$primary->safe_psql(
	'postgres', q{
CREATE EXTENSION IF NOT EXISTS pgcrypto;
SELECT es.es_append('hscust-1', NULL, '[{"type": "Registered", "data": {"email": "ann@example.org"},
	"personal": {"subject": "hs-ann", "fields": ["email"]}}]');
});
$primary->wait_for_catchup($standby);
is( $standby->safe_psql(
		'postgres', q{SELECT data ->> 'email' FROM es.es_read_stream('hscust-1')}),
	'ann@example.org', 'the standby decrypts personal fields');
$primary->safe_psql('postgres', q{SELECT es.es_forget_subject('hs-ann')});
$primary->wait_for_catchup($standby);
is( $standby->safe_psql(
		'postgres', q{SELECT data -> 'email' ->> '$es_redacted' FROM es.es_read_stream('hscust-1')}),
	'subject forgotten', 'after a forget on the primary, the standby reads the redaction marker');

$standby->stop;
$primary->stop;
done_testing();
