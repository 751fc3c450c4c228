
# Copyright (c) es_ext contributors
#
# test/t/051_logical_replication.pl
#
# Logical replication of an event store.  An origin cluster with es_ext
# publishes es.events and es.streams; a subscriber cluster with es_ext, the
# same read-model tables and projection triggers (one through es_project
# with handlers that pin search_path, one plain trigger function with SET
# search_path), turns its projections on for replicated events with
# es_replica_projections() and subscribes.  Checked:
#
#  - after the initial sync, and after appends streamed (a multi-event
#    batch, several streams in one transaction, pgbench appenders on eight
#    streams), the subscriber's events, streams and read models equal the
#    origin's, and its log has no error from a replication worker;
#  - es_read_stream and es_fold give the origin's answers there;
#    es_read_all and es_append refuse with 55000 (also in a session that
#    read before the subscription existed), and the replication goes on;
#  - es_replica_projections refuses a trigger whose function does not pin
#    search_path and changes nothing; forcing such a trigger to ALWAYS
#    shows why: the apply worker fails on every retry until the function
#    pins its search_path;
#  - a projection created later fires for replicated events only after the
#    next call, which changes only it; false turns them all back, and the
#    read models stop following;
#  - with the subscription disabled, es_rebuild_projection rebuilds a read
#    model there (and leaves its trigger in the ordinary mode, so the
#    function is called again);
#  - after DROP SUBSCRIPTION the database is an event store of its own:
#    es_read_all returns the replicated history, and appends (a new era)
#    follow it.

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $origin = PostgreSQL::Test::Cluster->new('es_origin');
$origin->init(allows_streaming => 'logical');
$origin->start;

my $sub = PostgreSQL::Test::Cluster->new('es_subscriber');
$sub->init;
# %b names the replication workers in the log; a failed apply worker is
# restarted quickly
$sub->append_conf(
	'postgresql.conf', q{
log_line_prefix = '%m [%p] %b: '
wal_retrieve_retry_interval = 200ms
});
$sub->start;

# a session of the subscriber opened before it subscribes: its cached
# answer to "is es.events replicated here?" must be invalidated
my $early = $sub->background_psql('postgres', on_error_stop => 0);

# ---------------------------------------------------------------------
# The same schema on both sides: es_ext, read models, their projections
# ---------------------------------------------------------------------
my $schema = q{
CREATE EXTENSION es_ext;
CREATE SCHEMA app;

-- es_project: handlers that pin search_path and use unqualified names
CREATE TABLE app.accounts (stream_id text PRIMARY KEY, owner text NOT NULL, balance numeric NOT NULL,
						   events integer NOT NULL, last_version bigint NOT NULL);
CREATE FUNCTION app.on_opened(e es.events) RETURNS void LANGUAGE sql
SET search_path = app, pg_temp AS $$
	INSERT INTO accounts VALUES (e.stream_id, e.data->>'owner', 0, 1, e.version)
$$;
CREATE FUNCTION app.on_money(e es.events) RETURNS void LANGUAGE sql
SET search_path = app, pg_temp AS $$
	UPDATE accounts
	   SET balance = balance + CASE e.event_type WHEN 'Withdrawn' THEN -1 ELSE 1 END * (e.data->>'amount')::numeric,
		   events = events + 1, last_version = e.version
	 WHERE stream_id = e.stream_id
$$;
CREATE TRIGGER accounts AFTER INSERT ON es.events FOR EACH ROW WHEN (NEW.category = 'account')
	EXECUTE FUNCTION es.es_project('Opened', 'app.on_opened', 'Deposited', 'app.on_money',
								   'Withdrawn', 'app.on_money');

-- a plain trigger function with SET search_path
CREATE TABLE app.timeline (global_position bigint PRIMARY KEY, stream_id text NOT NULL,
						   version bigint NOT NULL, event_type text NOT NULL);
CREATE TABLE app.type_counts (event_type text PRIMARY KEY, n bigint NOT NULL);
CREATE FUNCTION app.project_timeline() RETURNS trigger LANGUAGE plpgsql
SET search_path = app, pg_temp AS $$
BEGIN
	INSERT INTO timeline VALUES (NEW.global_position, NEW.stream_id, NEW.version, NEW.event_type);
	INSERT INTO type_counts AS c VALUES (NEW.event_type, 1)
	ON CONFLICT (event_type) DO UPDATE SET n = c.n + 1;
	RETURN NULL;
END $$;
CREATE TRIGGER timeline AFTER INSERT ON es.events FOR EACH ROW EXECUTE FUNCTION app.project_timeline();

-- a reducer
CREATE FUNCTION app.summary(state jsonb, e jsonb) RETURNS jsonb LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp AS $$
	SELECT jsonb_build_object('n', coalesce((state->>'n')::int, 0) + 1, 'last', e->>'type',
							  'sum', coalesce((state->>'sum')::numeric, 0) + coalesce((e->'data'->>'amount')::numeric, 0))
$$;
};
$origin->safe_psql('postgres', $schema);
$sub->safe_psql('postgres', $schema);

# events, streams and read models, as one comparable text
my $store = q{
SELECT concat_ws(E'\n',
	(SELECT string_agg(concat_ws('|', global_position, stream_id, version, event_id, event_type, schema_version,
								 data, metadata, recorded_at, category, era, tx_id), E'\n' ORDER BY global_position)
	   FROM es.events),
	(SELECT string_agg(concat_ws('|', stream_id, version, category, created_at, updated_at, log_tx_id, metadata),
					   E'\n' ORDER BY stream_id) FROM es.streams))};
my $models = q{
SELECT concat_ws(E'\n',
	(SELECT string_agg(a::text, E'\n' ORDER BY a.stream_id) FROM app.accounts AS a),
	(SELECT string_agg(t::text, E'\n' ORDER BY t.global_position) FROM app.timeline AS t),
	(SELECT string_agg(c::text, E'\n' ORDER BY c.event_type) FROM app.type_counts AS c))};
my $triggers = q{
SELECT string_agg(c.relname || '.' || t.tgname || '=' || t.tgenabled::text, ',' ORDER BY c.relname, t.tgname)
  FROM pg_trigger AS t JOIN pg_class AS c ON c.oid = t.tgrelid
 WHERE c.relnamespace = 'es'::regnamespace AND NOT t.tgisinternal};
my $worker_error = qr/logical replication worker: (ERROR|FATAL|PANIC)/;

# the SQLSTATE of a failing statement ('ok' when it succeeds), and its message
sub sqlstate
{
	my ($node, $sql) = @_;
	my ($rc, $out, $err) = $node->psql('postgres', "\\set VERBOSITY verbose\n$sql");
	return ('ok', '') if $rc == 0;
	return ($1, $err) if $err =~ /ERROR:  ([0-9A-Z]{5}):/;
	return ('?', $err);
}

# ---------------------------------------------------------------------
# History on the origin, the publication
# ---------------------------------------------------------------------
$origin->safe_psql(
	'postgres', q{
SELECT es.es_append('account-' || i, 0,
	jsonb_build_array(jsonb_build_object('type', 'Opened', 'data', jsonb_build_object('owner', 'o' || i)),
					  jsonb_build_object('type', 'Deposited', 'data', jsonb_build_object('amount', 10 * i))))
  FROM generate_series(1, 8) AS i;
SELECT es.es_append('account-2', 2, '[{"type": "Withdrawn", "data": {"amount": 4}}]');
SELECT es.es_append('audit-1', NULL, '[{"type": "Checked", "data": {"ok": true}, "metadata": {"by": "x"}}]');
CREATE PUBLICATION es_pub FOR TABLE es.events, es.streams;
});

# ---------------------------------------------------------------------
# The subscriber: projections on for replicated events, then subscribe
# ---------------------------------------------------------------------
my $guards_before = $sub->safe_psql('postgres', "$triggers AND t.tgname LIKE 'es\\_%'");
is($sub->safe_psql('postgres', q{SELECT string_agg(n, ',' ORDER BY n) FROM es.es_replica_projections() AS n}),
	'accounts,timeline', 'es_replica_projections() turns on both projections and returns their names');
is($sub->safe_psql('postgres', "$triggers AND c.relname = 'events' AND t.tgname NOT LIKE 'es\\_%'"),
	'events.accounts=A,events.timeline=A', 'the projection triggers fire ALWAYS');
is($sub->safe_psql('postgres', "$triggers AND t.tgname LIKE 'es\\_%'"), $guards_before,
	"es_ext's own triggers are unchanged");
unlike($guards_before, qr/=[AR]/, "none of es_ext's own triggers fires for replicated rows");
is($sub->safe_psql('postgres', q{SELECT count(*) FROM es.es_replica_projections()}),
	'0', 'a second call changes nothing');

# before it subscribes, the early session reads the log and caches "no"
is($early->query(q{SELECT count(*) FROM es.es_read_all(NULL, 10)}), '0',
	'before the subscription, es_read_all works on the subscriber');

my $connstr = $origin->connstr . ' dbname=postgres';
$sub->safe_psql('postgres', "CREATE SUBSCRIPTION es_sub CONNECTION '$connstr' PUBLICATION es_pub");
$sub->wait_for_subscription_sync($origin, 'es_sub');

is($sub->safe_psql('postgres', $store), $origin->safe_psql('postgres', $store),
	'after the initial sync, events and streams equal the origin\'s');
is($sub->safe_psql('postgres', $models), $origin->safe_psql('postgres', $models),
	'after the initial sync, the read models equal the origin\'s');
is($sub->safe_psql('postgres', 'SELECT count(*) FROM app.timeline'), '18',
	'the initial copy was projected (18 events)');

# ---------------------------------------------------------------------
# Streaming
# ---------------------------------------------------------------------
$origin->safe_psql(
	'postgres', q{
-- a multi-event batch
SELECT es.es_append('account-1', 2, '[{"type": "Deposited", "data": {"amount": 5}},
									  {"type": "Withdrawn", "data": {"amount": 3}},
									  {"type": "Deposited", "data": {"amount": 7}}]');
});
$origin->safe_psql(
	'postgres', q{
-- several streams in one transaction, one of them new
BEGIN;
SELECT es.es_append('account-3', NULL, '[{"type": "Withdrawn", "data": {"amount": 1}}]');
SELECT es.es_append('account-9', 0, '[{"type": "Opened", "data": {"owner": "o9"}},
									  {"type": "Deposited", "data": {"amount": 90}}]');
SELECT es.es_append('audit-1', 1, '[{"type": "Checked", "data": {"ok": false}}]');
COMMIT;
});
# concurrent appenders: commits interleave across streams
$origin->pgbench(
	'--no-vacuum --client=4 --transactions=40 --max-tries=20',
	0,
	[qr{processed: 160/160}],
	[qr{^$}],
	'pgbench appends on the origin',
	{
		'051_append' => q{
\set s random(1, 8)
\set a random(1, 100)
SELECT es.es_append('account-' || :s, NULL, jsonb_build_array(jsonb_build_object('type', 'Deposited', 'data', jsonb_build_object('amount', :a))));
}
	});
$origin->wait_for_catchup('es_sub');

is($sub->safe_psql('postgres', $store), $origin->safe_psql('postgres', $store),
	'after streaming, events and streams equal the origin\'s');
is($sub->safe_psql('postgres', $models), $origin->safe_psql('postgres', $models),
	'after streaming, the read models equal the origin\'s');
is($sub->safe_psql('postgres', 'SELECT (SELECT count(*) FROM app.timeline) || \'/\' || (SELECT count(*) FROM es.events)'),
	'185/185', 'every event was projected once (185)');
ok(!$sub->log_contains($worker_error), 'the subscriber\'s log has no error from a replication worker');

# ---------------------------------------------------------------------
# Reads on the subscriber; what it refuses
# ---------------------------------------------------------------------
my $read_stream = q{SELECT string_agg(concat_ws('|', version, event_type, data), ',' ORDER BY version)
					  FROM es.es_read_stream('account-1')};
is($sub->safe_psql('postgres', $read_stream), $origin->safe_psql('postgres', $read_stream),
	'es_read_stream on the subscriber equals the origin\'s');
my $fold = q{SELECT string_agg(es.es_fold('account-' || i, 'app.summary(jsonb,jsonb)', '{}')::text, ',' ORDER BY i)
			   FROM generate_series(1, 9) AS i};
is($sub->safe_psql('postgres', $fold), $origin->safe_psql('postgres', $fold),
	'es_fold on the subscriber equals the origin\'s');

my ($state, $err) = sqlstate($sub, 'SELECT * FROM es.es_read_all(NULL, 10)');
is($state, '55000', 'es_read_all on the subscriber refuses with 55000');
like($err, qr/cannot read the global log on a logical replication subscriber.*subscription "es_sub".*HINT:  Read the global log on the origin, or read single streams here with es_read_stream/s,
	'... naming the subscription, with a hint');
is($early->query(q{SELECT count(*) FROM es.es_read_all(NULL, 10)}), '', 'a session that read before the subscription existed is refused too');
like($early->{stderr}, qr/cannot read the global log on a logical replication subscriber/, '... with the same error');
$early->quit;

# the lag of a cursor and a checkpoint are measured against the horizon
# the subscriber cannot have: refused the same way
($state) = sqlstate($sub, 'SELECT * FROM es.es_cursor_lag(NULL)');
is($state, '55000', 'es_cursor_lag on the subscriber refuses with 55000');
($state) = sqlstate($sub, q{SELECT es.es_checkpoint_save('sub-reader', NULL)});
is($state, '55000', 'es_checkpoint_save on the subscriber refuses with 55000');

my $before = $sub->safe_psql('postgres', $store);
($state, $err) = sqlstate($sub, q{SELECT es.es_append('account-1', NULL, '[{"type": "Deposited", "data": {"amount": 1}}]')});
is($state, '55000', 'es_append on the subscriber refuses with 55000');
like($err, qr/cannot append events on a logical replication subscriber.*HINT:  Append on the origin/s, '... with a hint');
($state) = sqlstate($sub, q{SELECT es.es_append('local-1', 0, '[{"type": "Local", "data": {}}]')});
is($state, '55000', '... also to a stream the origin does not have');
is($sub->safe_psql('postgres', $store), $before, '... and writes nothing');

# the replication goes on
$origin->safe_psql('postgres', q{SELECT es.es_append('account-1', NULL, '[{"type": "Deposited", "data": {"amount": 2}}]')});
$origin->wait_for_catchup('es_sub');
is($sub->safe_psql('postgres', $store) . $sub->safe_psql('postgres', $models),
	$origin->safe_psql('postgres', $store) . $origin->safe_psql('postgres', $models),
	'after the refused calls, the next append replicates and projects');

# ---------------------------------------------------------------------
# A trigger whose function does not pin search_path
# ---------------------------------------------------------------------
$sub->safe_psql(
	'postgres', q{
CREATE TABLE app.careless_log (stream_id text, version bigint);
CREATE FUNCTION app.careless_project() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	INSERT INTO careless_log VALUES (NEW.stream_id, NEW.version);
	RETURN NULL;
END $$;
CREATE TRIGGER careless AFTER INSERT ON es.events FOR EACH ROW WHEN (NEW.category = 'careless')
	EXECUTE FUNCTION app.careless_project();
});
my $states = $sub->safe_psql('postgres', $triggers);
($state, $err) = sqlstate($sub, 'SELECT * FROM es.es_replica_projections()');
is($state, '55000', 'es_replica_projections refuses a trigger function that does not pin search_path (55000)');
like($err, qr/function app\.careless_project\(\) does not set search_path.*HINT:  Pin it with ALTER FUNCTION app\.careless_project\(\) SET search_path/s,
	'... naming the function, with the ALTER FUNCTION fix');
is($sub->safe_psql('postgres', $triggers), $states, '... and changes nothing');

# why: forced to fire for replicated rows, it stops the replication
my $offset = -s $sub->logfile;
$sub->safe_psql('postgres', 'ALTER TABLE es.events ENABLE ALWAYS TRIGGER careless');
$origin->safe_psql('postgres', q{SELECT es.es_append('careless-1', 0, '[{"type": "Noted", "data": {}}]')});
$sub->wait_for_log(qr/logical replication worker: ERROR:  relation "careless_log" does not exist(.|\n)*logical replication worker: ERROR:  relation "careless_log" does not exist/, $offset);
pass('the apply worker fails with an empty search_path, and again after its restart');
is($sub->safe_psql('postgres', q{SELECT count(*) FROM es.events WHERE stream_id = 'careless-1'}),
	'0', '... and the event does not arrive');
$sub->safe_psql('postgres', 'ALTER FUNCTION app.careless_project() SET search_path = app, pg_temp');
$origin->wait_for_catchup('es_sub');
is($sub->safe_psql('postgres', q{SELECT string_agg(stream_id || ':' || version, ',') FROM app.careless_log}),
	'careless-1:1', 'once the function pins search_path, the worker applies and projects the event');

# ---------------------------------------------------------------------
# A projection created later; turning them off
# ---------------------------------------------------------------------
my $late = q{
CREATE TABLE app.late (stream_id text, version bigint, PRIMARY KEY (stream_id, version));
CREATE FUNCTION app.project_late() RETURNS trigger LANGUAGE plpgsql
SET search_path = app, pg_temp AS $$
BEGIN
	INSERT INTO late VALUES (NEW.stream_id, NEW.version);
	RETURN NULL;
END $$;
CREATE TRIGGER late AFTER INSERT ON es.events FOR EACH ROW EXECUTE FUNCTION app.project_late();
};
$origin->safe_psql('postgres', $late);
$sub->safe_psql('postgres', $late);
my $late_rows = q{SELECT coalesce(string_agg(stream_id || ':' || version, ',' ORDER BY stream_id, version), '') FROM app.late};
$origin->safe_psql('postgres', q{SELECT es.es_append('late-1', 0, '[{"type": "Early", "data": {}}]')});
$origin->wait_for_catchup('es_sub');
is($sub->safe_psql('postgres', $late_rows), '', 'a projection created later does not fire for replicated events yet');
is($sub->safe_psql('postgres', q{SELECT string_agg(n, ',' ORDER BY n) FROM es.es_replica_projections() AS n}),
	'late', 'the next call turns on only the new projection');
$origin->safe_psql('postgres', q{SELECT es.es_append('late-1', 1, '[{"type": "Later", "data": {}}]')});
$origin->wait_for_catchup('es_sub');
is($sub->safe_psql('postgres', $late_rows), 'late-1:2', 'then it does');

my $quiet = -s $sub->logfile;
is($sub->safe_psql('postgres', q{SELECT string_agg(n, ',' ORDER BY n) FROM es.es_replica_projections(false) AS n}),
	'accounts,careless,late,timeline', 'es_replica_projections(false) turns every projection back');
like($sub->safe_psql('postgres', $triggers), qr/^[^AR]*$/, 'no trigger fires for replicated rows any more');
my $frozen = $sub->safe_psql('postgres', $models);
$origin->safe_psql('postgres', q{SELECT es.es_append('account-4', NULL, '[{"type": "Deposited", "data": {"amount": 1000}}]')});
$origin->wait_for_catchup('es_sub');
is($sub->safe_psql('postgres', $store), $origin->safe_psql('postgres', $store), 'the events still arrive');
is($sub->safe_psql('postgres', $models), $frozen, 'the read models no longer follow');

# ---------------------------------------------------------------------
# Rebuilding the read models on the subscriber, its subscription disabled
# ---------------------------------------------------------------------
$sub->safe_psql('postgres', 'ALTER SUBSCRIPTION es_sub DISABLE');
$sub->poll_query_until('postgres',
	q{SELECT count(*) = 0 FROM pg_stat_subscription WHERE subname = 'es_sub' AND pid IS NOT NULL})
  or die 'the apply worker does not exit';
$origin->safe_psql('postgres', q{SELECT es.es_append('account-5', NULL, '[{"type": "Withdrawn", "data": {"amount": 1}}]')});
$sub->safe_psql('postgres', q{CALL es.es_rebuild_projection('accounts', 'TRUNCATE app.accounts')});
$sub->safe_psql('postgres', q{CALL es.es_rebuild_projection('timeline', 'TRUNCATE app.timeline, app.type_counts')});
is($sub->safe_psql('postgres', "$triggers AND t.tgname IN ('accounts', 'timeline')"),
	'events.accounts=O,events.timeline=O', 'a rebuild leaves its trigger in the ordinary mode');
is($sub->safe_psql('postgres', q{SELECT string_agg(n, ',' ORDER BY n) FROM es.es_replica_projections() AS n}),
	'accounts,careless,late,timeline', 'the next call turns the projections on again');
$sub->safe_psql('postgres', 'ALTER SUBSCRIPTION es_sub ENABLE');
$origin->wait_for_catchup('es_sub');
is($sub->safe_psql('postgres', $store), $origin->safe_psql('postgres', $store),
	'after the rebuild, the waiting event arrives');
is($sub->safe_psql('postgres', $models), $origin->safe_psql('postgres', $models),
	'the rebuilt read models equal the origin\'s again');
ok(!$sub->log_contains($worker_error, $quiet), 'no error from a replication worker since the fix');

# ---------------------------------------------------------------------
# After DROP SUBSCRIPTION, the database is an event store of its own
# ---------------------------------------------------------------------
$sub->safe_psql('postgres', 'DROP SUBSCRIPTION es_sub');
my $history = q{SELECT string_agg(stream_id || ':' || version, ',' ORDER BY global_position) FROM es.events};
is($sub->safe_psql('postgres', q{SELECT string_agg(stream_id || ':' || version, ',' ORDER BY log_cursor) FROM es.es_read_all(NULL, 100000)}),
	$origin->safe_psql('postgres', q{SELECT string_agg(stream_id || ':' || version, ',' ORDER BY log_cursor) FROM es.es_read_all(NULL, 100000)}),
	'es_read_all works again and returns the replicated history in the origin\'s order');
$sub->safe_psql('postgres', q{SELECT setval('es.events_global_position_seq', max(global_position)) FROM es.events});
is($sub->safe_psql('postgres', q{SELECT (es.es_append('account-1', NULL, '[{"type": "Deposited", "data": {"amount": 1}}]')).positions[1]
									 > (SELECT max(global_position) FROM es.events WHERE era = 0)}),
	't', 'es_append works again, with positions after the replicated ones');
is($sub->safe_psql('postgres', q{SELECT stream_id || ':' || version || ' era ' || (log_cursor).era
								   FROM es.es_read_all(NULL, 100000) ORDER BY log_cursor DESC LIMIT 1}),
	'account-1:' . $origin->safe_psql('postgres', q{SELECT es.es_stream_version('account-1') + 1}) . ' era 1',
	'... in a new era: the local append follows the replicated history in es_read_all');

$origin->stop;
$sub->stop;
done_testing();
