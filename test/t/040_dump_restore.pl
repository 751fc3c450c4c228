
# Copyright (c) es_ext contributors
#
# test/t/040_dump_restore.pl
#
# Backups that restore.  A populated event store (events in several streams,
# snapshots, an upcaster, outbox routes and two consumer groups with acked,
# leased and undelivered messages, a dead letter, projections of every style
# with their read models, a disabled trigger, row level security with a
# policy, a user index, checkpoints of global-log subscribers, events with
# tags) is dumped
# with pg_dump in the custom, directory and plain formats and restored with
# pg_restore (serially, in one transaction and with -j 3) or psql, with no
# special flags, into a new database of the same cluster and of a second
# cluster that has used far fewer transaction ids.
#
# Each restore must exit 0 and give back every row of every es_ext table and
# read model, the sequences, and the user's objects on es_ext's tables; a
# subscriber reading es_read_all from the start must see the whole restored
# history in the source's order, and one going on from its restored
# checkpoint the rest; new appends must get positions after the restored
# ones, be projected exactly once, reach the consumer groups, and follow the
# restored history in es_read_all (a new era in the second cluster, whose
# transaction ids are below the restored ones).  The tagged events come back
# with their tags: es_read_query finds them, and an append condition sees
# them.

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $src = PostgreSQL::Test::Cluster->new('es_dump_src');
$src->init(allows_streaming => 1);
$src->append_conf('postgresql.conf', "autovacuum = off\n");
$src->start;

my $other = PostgreSQL::Test::Cluster->new('es_dump_other');
$other->init;
$other->append_conf('postgresql.conf', "autovacuum = off\n");
$other->start;

# burn transaction ids in the source cluster, so that the second cluster's
# ids are far below the restored ones
$src->safe_psql('postgres', join('', map { "SELECT pg_current_xact_id();\n" } 1 .. 3000));

$src->safe_psql('postgres', 'CREATE DATABASE shop');
$src->safe_psql(
	'shop', q{
CREATE EXTENSION es_ext;

-- read models and projections of every style
CREATE TABLE public.order_totals (stream_id text PRIMARY KEY, events int NOT NULL, total numeric NOT NULL);
CREATE FUNCTION public.project_row() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	INSERT INTO public.order_totals AS t VALUES (NEW.stream_id, 1, coalesce((NEW.data->>'amount')::numeric, 0))
	ON CONFLICT (stream_id) DO UPDATE SET events = t.events + 1, total = t.total + excluded.total;
	RETURN NULL;
END $$;
CREATE TRIGGER order_totals AFTER INSERT ON es.events FOR EACH ROW
	WHEN (NEW.category = 'order') EXECUTE FUNCTION public.project_row();

CREATE TABLE public.type_counts (event_type text PRIMARY KEY, n int NOT NULL);
CREATE FUNCTION public.project_batch() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	INSERT INTO public.type_counts AS t SELECT event_type, count(*) FROM new_events GROUP BY event_type
	ON CONFLICT (event_type) DO UPDATE SET n = t.n + excluded.n;
	RETURN NULL;
END $$;
CREATE TRIGGER type_counts AFTER INSERT ON es.events REFERENCING NEW TABLE AS new_events
	FOR EACH STATEMENT EXECUTE FUNCTION public.project_batch();

CREATE TABLE public.shipments (stream_id text PRIMARY KEY, shipped_at timestamptz);
CREATE FUNCTION public.on_shipped(e es.events) RETURNS void LANGUAGE sql AS $$
	INSERT INTO public.shipments VALUES (e.stream_id, e.recorded_at) ON CONFLICT DO NOTHING $$;
CREATE TRIGGER shipments AFTER INSERT ON es.events FOR EACH ROW
	EXECUTE FUNCTION es.es_project('Shipped', 'public.on_shipped');

-- a trigger kept disabled, row level security, a policy, an index
CREATE TRIGGER order_totals_paused AFTER INSERT ON es.events FOR EACH ROW EXECUTE FUNCTION public.project_row();
ALTER TABLE es.events DISABLE TRIGGER order_totals_paused;
ALTER TABLE es.events ENABLE ROW LEVEL SECURITY;
CREATE POLICY reader_sees_own_tenant ON es.events FOR SELECT TO es_reader
	USING (metadata->>'tenant' IS NULL OR metadata->>'tenant' = current_user);
CREATE INDEX events_amount_idx ON es.events (((data->>'amount')::numeric));

-- an upcaster: Placed v1 {"amt"} becomes v2 {"amount"}
CREATE FUNCTION public.placed_v1_v2(data jsonb, metadata jsonb) RETURNS jsonb LANGUAGE sql IMMUTABLE AS $$
	SELECT (data - 'amt') || jsonb_build_object('amount', data->'amt') $$;
SELECT es.es_register_upcaster('Placed', 1, 'public.placed_v1_v2(jsonb, jsonb)');

-- the outbox: a route, two groups
SELECT es.es_outbox_route('order');
SELECT es.es_outbox_create_group('billing');
SELECT es.es_outbox_create_group('mailer', max_attempts => 1);
});

$src->safe_psql(
	'shop', q{
SELECT es.es_append('order-' || i, 0,
	jsonb_build_array(jsonb_build_object('type', 'Placed', 'schema_version', 1, 'data', jsonb_build_object('amt', i)),
					  jsonb_build_object('type', 'Paid', 'data', jsonb_build_object('amount', i))))
  FROM generate_series(1, 20) AS i;
SELECT es.es_append('order-' || i, 2, '[{"type": "Shipped", "data": {}}]') FROM generate_series(1, 5) AS i;
SELECT es.es_append('audit-1', NULL, '[{"type": "Checked", "data": {"ok": true}, "metadata": {"tenant": "t1"}}]');
-- tagged events (tags with quotes, commas, braces, spaces and non-ASCII
-- letters, which every dump format must carry as they are)
SELECT es.es_append('seat-' || i, 0,
	jsonb_build_array(jsonb_build_object('type', 'SeatSold', 'data', jsonb_build_object('seat', i),
										 'tags', jsonb_build_array('show:s1', 'seat:' || i, 'it''s "{a,b}" \ é'))))
  FROM generate_series(1, 3) AS i;
SELECT es.es_append('seat-4', 0, '[{"type": "SeatHeld", "data": {"seat": 4}, "tags": ["seat:4"]}]');
});

# folds and a snapshot
$src->safe_psql(
	'shop', q{
CREATE FUNCTION public.count_events(state jsonb, event jsonb) RETURNS jsonb LANGUAGE sql IMMUTABLE AS $$
	SELECT jsonb_build_object('n', coalesce((state->>'n')::int, 0) + 1) $$;
SELECT es.es_snapshot_save('order-1', 'public.count_events(jsonb, jsonb)', '{}');
});

# consumer groups: billing acks some, leases some; mailer dead-letters one
$src->safe_psql(
	'shop', q{
SELECT es.es_outbox_ack('billing', c.lease, array_agg(c.position))
  FROM es.es_outbox_claim('billing', 10) AS c GROUP BY c.lease;
SELECT count(*) FROM es.es_outbox_claim('billing', 3, lease_time => '1 hour');
});
$src->safe_psql('shop', q{
SELECT es.es_outbox_nack('mailer', c.lease, ARRAY[c.position], 'broken')
  FROM es.es_outbox_claim('mailer', 1) AS c;
});
# a projection rebuild leaves its status row
$src->safe_psql('shop', q{CALL es.es_rebuild_projection('order_totals', 'TRUNCATE public.order_totals')});
# an asynchronous projection (trigger and declaration in one transaction),
# applied up to the middle of the log: two batches of 10 of its 45 events
$src->safe_psql('shop', q{
CREATE TABLE public.order_log (stream_id text, version bigint);
CREATE FUNCTION public.project_log() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	INSERT INTO public.order_log VALUES (NEW.stream_id, NEW.version);
	RETURN NULL;
END $$;
BEGIN;
CREATE TRIGGER order_log AFTER INSERT ON es.events FOR EACH ROW
	WHEN (NEW.category = 'order') EXECUTE FUNCTION public.project_log();
SELECT es.es_create_async_projection('order_log', 10);
COMMIT;
SET client_min_messages = warning;
CALL es.es_run_projections('order_log', 2);
});
is($src->safe_psql('shop', q{SELECT count(*) || '|' || (SELECT applied FROM es.async_projections) FROM public.order_log}),
	'20|20', 'the asynchronous projection applied 20 of its events before the dump');
# checkpoints of two global-log subscribers: one after the first 10 events,
# one that has not started
$src->safe_psql('shop', q{
SELECT es.es_checkpoint_save('shop-sub',
	(SELECT r.log_cursor FROM es.es_read_all(NULL, 10) AS r ORDER BY r.log_cursor DESC LIMIT 1));
SELECT es.es_checkpoint_save('shop-new', NULL);
});

# the data lifecycle (issue 15): an archived stream, an erased one (its
# tombstone and audit row), a retained one (first_version and base_hash
# raised) and a retention policy
$src->safe_psql('shop', q{
SELECT es.es_append('life-' || s, 0, '[{"type": "LifeNoted", "data": {"n": 1}}, {"type": "LifeNoted", "data": {"n": 2}}, {"type": "LifeNoted", "data": {"n": 3}}]')
  FROM unnest(ARRAY['arch-1', 'erase-1', 'ret-1']) AS s;
SELECT es.es_archive_stream('life-arch-1');
SELECT es.es_erase_stream('life-erase-1', 'dump test');
SELECT es.es_set_retention(NULL, 'life-ret-1', NULL, 1);
SELECT es.es_apply_retention();
});
is($src->safe_psql('shop', q{
	SELECT string_agg(concat_ws('|', stream_id, version, first_version, archived_at IS NOT NULL, erased_at IS NOT NULL), ',' ORDER BY stream_id)
	  FROM es.streams WHERE category = 'life'}),
	'life-arch-1|3|1|t|f,life-erase-1|4|4|f|t,life-ret-1|3|3|f|f',
	'the source has an archived, an erased and a retained stream');

# everything a restore must give back, as one comparable text
my $contents = q{
SELECT concat_ws(E'\n',
	(SELECT string_agg(concat_ws('|', stream_id, first_version, base_hash, archived_at, erased_at), E'\n' ORDER BY stream_id)
	   FROM es.streams),
	(SELECT string_agg(a::text, E'\n' ORDER BY a.stream_id, a.version) FROM es.archived_events AS a),
	(SELECT string_agg(r::text, E'\n' ORDER BY r.stream_id) FROM es.erasures AS r),
	(SELECT string_agg(p::text, E'\n' ORDER BY p::text) FROM es.retention_policies AS p),
	(SELECT string_agg(concat_ws('|', stream_id, version, hash), E'\n' ORDER BY stream_id, version) FROM es.events),
	(SELECT string_agg(concat_ws('|', global_position, stream_id, version, event_id, event_type, schema_version,
								 data, metadata, recorded_at, category, era, tx_id, coalesce(tags::text, '-')),
					   E'\n' ORDER BY global_position)
	   FROM es.events),
	(SELECT string_agg(concat_ws('|', stream_id, version, category, created_at, updated_at, log_tx_id, metadata),
					   E'\n' ORDER BY stream_id) FROM es.streams),
	(SELECT string_agg(concat_ws('|', era, system_identifier), ',') FROM es.config),
	(SELECT string_agg(s::text, E'\n' ORDER BY s::text) FROM es.snapshots AS s),
	(SELECT string_agg(u::text, E'\n' ORDER BY u::text) FROM es.upcasters AS u),
	(SELECT string_agg(r::text, E'\n' ORDER BY r::text) FROM es.outbox_routes AS r),
	(SELECT string_agg(g::text, E'\n' ORDER BY g::text) FROM es.outbox_groups AS g),
	(SELECT string_agg(o::text, E'\n' ORDER BY o.position) FROM es.outbox AS o),
	(SELECT string_agg(d::text, E'\n' ORDER BY d::text) FROM es.outbox_deliveries AS d),
	(SELECT string_agg(d::text, E'\n' ORDER BY d::text) FROM es.outbox_dead AS d),
	(SELECT string_agg(concat_ws('|', projection, state, replayed, last_cursor), E'\n' ORDER BY projection)
	   FROM es.projection_status),
	(SELECT string_agg(concat_ws('|', name, cursor, owner, created_at, saved_at), E'\n' ORDER BY name)
	   FROM es.checkpoints),
	(SELECT string_agg(t::text, E'\n' ORDER BY t::text) FROM public.order_totals AS t),
	(SELECT string_agg(t::text, E'\n' ORDER BY t::text) FROM public.type_counts AS t),
	(SELECT string_agg(t::text, E'\n' ORDER BY t::text) FROM public.shipments AS t),
	(SELECT string_agg(a::text, E'\n' ORDER BY a.projection) FROM es.async_projections AS a),
	(SELECT string_agg(d::text, E'\n' ORDER BY d::text) FROM es.projection_dead_letters AS d),
	(SELECT string_agg(t::text, E'\n' ORDER BY t::text) FROM public.order_log AS t),
	(SELECT string_agg(t.tgname || '=' || t.tgenabled::text, ',' ORDER BY t.tgname)
	   FROM pg_trigger AS t WHERE t.tgrelid = 'es.events'::regclass AND NOT t.tgisinternal),
	(SELECT string_agg(u::text, E'\n' ORDER BY u::text) FROM es.es_user_objects() AS u),
	(SELECT string_agg(concat_ws('|', c.relname, c.relrowsecurity, c.relforcerowsecurity), ',' ORDER BY c.relname)
	   FROM pg_class AS c WHERE c.relnamespace = 'es'::regnamespace AND c.relkind = 'r'),
	(SELECT concat_ws(',', (SELECT last_value FROM es.events_global_position_seq),
					  (SELECT last_value FROM es.outbox_position_seq),
					  (SELECT last_value FROM es.outbox_groups_group_id_seq))))};
my $log_order = q{
SELECT string_agg(concat_ws('|', r.global_position, r.stream_id, r.version, r.data), ',' ORDER BY r.log_cursor)
  FROM es.es_read_all(NULL, 100000) AS r};

my $query_read = q{
SELECT string_agg(concat_ws('|', r.stream_id, r.version, r.event_type, r.tags), ',' ORDER BY r.log_cursor)
  FROM es.es_read_query('[{"types": ["SeatSold"], "tags": ["show:s1"]}, {"tags": ["seat:4"]}]') AS r};

my $expected = $src->safe_psql('shop', $contents);
my $expected_log = $src->safe_psql('shop', $log_order);
my $expected_query = $src->safe_psql('shop', $query_read);
is($src->safe_psql('shop', "SELECT count(*) FROM es.events WHERE tags IS NOT NULL"), '4',
	'the source has 4 tagged events');
like($expected_query, qr/^seat-1\|1\|SeatSold\|\{show:s1,seat:1,.*seat-4\|1\|SeatHeld\|\{seat:4\}$/,
	'es_read_query finds the tagged events in the source');
my $expected_objects = $src->safe_psql('shop', 'SELECT count(*) FROM es.es_user_objects()');
is($expected_objects, '8', 'the source has 8 user objects on es_ext\'s tables');
my $max_xid = $src->safe_psql('shop', 'SELECT max(tx_id) FROM es.events');
# tamper evidence: the hashes and the heads an auditor exported before the dump
is($src->safe_psql('shop', 'SELECT count(*) FROM es.es_verify_all()'), '0',
	'the chains of the source verify');
my $expected_hashes = $src->safe_psql('shop',
	q{SELECT count(hash) || '|' || md5(string_agg(encode(hash, 'hex'), ',' ORDER BY stream_id, version)) FROM es.events});
my $expected_digest = $src->safe_psql('shop', 'SELECT es.es_digest()');
my $export = $src->safe_psql('shop', 'SELECT jsonb_agg(h) FROM es.es_heads() AS h');

my $dumpdir = PostgreSQL::Test::Utils::tempdir;
$src->command_ok([ 'pg_dump', '-Fc', '-f', "$dumpdir/shop.dump", '-d', $src->connstr('shop') ],
	'pg_dump -Fc exits 0');
$src->command_ok([ 'pg_dump', '-Fd', '-f', "$dumpdir/shop.dir", '-d', $src->connstr('shop') ],
	'pg_dump -Fd exits 0');
$src->command_ok([ 'pg_dump', '-Fp', '-f', "$dumpdir/shop.sql", '-d', $src->connstr('shop') ],
	'pg_dump -Fp exits 0');

my $n = 0;
for my $target ([ 'same cluster', $src ], [ 'second cluster', $other ])
{
	my ($where, $node) = @$target;
	for my $format (
		[ 'custom', [ 'pg_restore', "$dumpdir/shop.dump" ] ],
		[ 'custom, one transaction', [ 'pg_restore', '--single-transaction', "$dumpdir/shop.dump" ] ],
		[ 'directory, -j 3', [ 'pg_restore', '-j', '3', "$dumpdir/shop.dir" ] ],
		[ 'plain', [ 'psql', '-X', '-q', '-v', 'ON_ERROR_STOP=1', '-f', "$dumpdir/shop.sql" ] ])
	{
		my ($fmt, $cmd) = @$format;
		my $label = "$where, $fmt";
		my $db = 'restored' . $n++;

		$node->safe_psql('postgres', "CREATE DATABASE $db");
		$node->command_ok([ @$cmd, '-d', $node->connstr($db) ], "$label: the restore exits 0");

		is($node->safe_psql($db, $contents), $expected,
			"$label: every row, read model, sequence and user object is back");
		is($node->safe_psql($db,
				"SELECT count(*) FROM es.user_objects WHERE kind NOT IN ('restored rows', 'foreign era')"),
			'0', "$label: no user object is left pending");
		is($node->safe_psql($db, $log_order), $expected_log,
			"$label: es_read_all from the start returns the restored history in order, upcast");
		is($node->safe_psql($db, $query_read), $expected_query,
			"$label: es_read_query finds the restored tagged events, with their tags, in order");
		is($node->safe_psql($db, q{
			SELECT count(*) FROM pg_index AS i
			 WHERE i.indexrelid = 'es.events_tags_idx'::regclass AND i.indisvalid AND i.indisready}),
			'1', "$label: the tags index is back and valid");

		is($node->safe_psql($db,
				q{SELECT count(hash) || '|' || md5(string_agg(encode(hash, 'hex'), ',' ORDER BY stream_id, version)) FROM es.events}),
			$expected_hashes, "$label: every event's chain hash is back");
		is($node->safe_psql($db, 'SELECT count(*) FROM es.es_verify_all()'), '0',
			"$label: the chain of every stream verifies");
		is($node->safe_psql($db, 'SELECT es.es_digest()'), $expected_digest,
			"$label: the digest of the stream heads is the source's");
		is($node->safe_psql($db, qq{SELECT count(*) FROM es.es_verify_heads('$export')}), '0',
			"$label: the heads exported before the dump are on the restored chains");
		# the lifecycle states work after the restore
		is($node->safe_psql($db, q{SELECT string_agg(version::text, ',' ORDER BY version) FROM es.es_read_stream('life-arch-1')}),
			'1,2,3', "$label: the archived stream reads from the restored archive");
		my ($lres, $lout, $lerr) = $node->psql($db,
			q{SELECT es.es_append('life-erase-1', 0, '[{"type": "LifeNoted", "data": {}}]')});
		like($lerr, qr/stream "life-erase-1" was erased/, "$label: the erased stream still cannot be recreated");
		is($node->safe_psql($db, q{SELECT string_agg(version::text, ',' ORDER BY version) FROM es.es_read_stream('life-ret-1')}),
			'3', "$label: the retained stream starts at its first_version");

		my $max_outbox = $node->safe_psql($db, 'SELECT max(position) FROM es.outbox');

		# new appends after the restore
		my ($res, $out, $err) = $node->psql($db, q{
			SELECT (es.es_append('order-1', 3, '[{"type": "Paid", "data": {"amount": 100}}]')).positions[1];
			SELECT (es.es_append('order-99', 0, '[{"type": "Placed", "schema_version": 2, "data": {"amount": 7}}]')).positions[1];});
		is($res, 0, "$label: appends work") or diag($err);
		is($node->safe_psql($db, 'SELECT count(*) FROM es.es_verify_all()'), '0',
			"$label: appends after the restore continue the chains");
		my ($p1, $p2) = split /\n/, $out;
		my $max_restored = $node->safe_psql($db, 'SELECT max(global_position) FROM es.events WHERE stream_id <> \'order-99\' AND NOT (stream_id = \'order-1\' AND version = 4)');
		ok($p1 > $max_restored && $p2 > $p1, "$label: positions continue after the restored ones ($p1, $p2 > $max_restored)");

		is($node->safe_psql($db, "SELECT events || '|' || total FROM public.order_totals WHERE stream_id = 'order-1'"),
			'4|101', "$label: the row projection applied the new event once, on top of the restored read model");
		is($node->safe_psql($db, "SELECT n FROM public.type_counts WHERE event_type = 'Paid'"),
			'21', "$label: the batch projection fires");
		# the asynchronous projection: its trigger stayed disabled (the new
		# events are not applied inline), its checkpoint is kept, and it goes
		# on from there: every event of its category once
		is($node->safe_psql($db, q{
			SELECT t.tgenabled::text || '|' || (SELECT count(*) FROM public.order_log) || '|' || p.applied
			  FROM pg_trigger AS t, es.projections AS p
			 WHERE t.tgrelid = 'es.events'::regclass AND t.tgname = 'order_log' AND p.projection = 'order_log'}),
			'D|20|20', "$label: the asynchronous projection is still disabled, with its read model and checkpoint");
		$node->safe_psql($db, q{SET client_min_messages = warning; CALL es.es_run_projections('order_log')});
		is($node->safe_psql($db, q{
			SELECT count(*) || '|' || count(DISTINCT (l.stream_id, l.version)) || '|' || count(e.stream_id)
				   || '|' || (SELECT count(*) FROM es.events WHERE category = 'order')
				   || '|' || (SELECT events_behind FROM es.projections WHERE projection = 'order_log')
			  FROM public.order_log AS l LEFT JOIN es.events AS e USING (stream_id, version)}),
			'47|47|47|47|0',
			"$label: after the restore it applies the rest of the log and the new events, each once");
		is($node->safe_psql($db, q{
			SELECT string_agg(concat_ws('|', r.global_position, r.stream_id, r.version, r.data), ',' ORDER BY r.log_cursor)
			  FROM es.es_read_all(NULL, 100000) AS r}),
			"$expected_log,$p1|order-1|4|{\"amount\": 100},$p2|order-99|1|{\"amount\": 7}",
			"$label: a subscriber from the start sees the restored history, then the new events");
		is($node->safe_psql($db, q{
			SELECT count(*) || '|' || (SELECT s.events_behind FROM es.subscriptions AS s WHERE s.name = 'shop-sub')
			  FROM es.es_read_all(es.es_checkpoint('shop-sub'), 100000)}),
			$node->safe_psql($db, q{SELECT count(*) - 10 || '|' || count(*) - 10 FROM es.events}),
			"$label: a restored checkpoint goes on after its first 10 events, new events included");
		is($node->safe_psql($db, q{
			SELECT es.es_checkpoint_save('shop-sub',
				(SELECT r.log_cursor FROM es.es_read_all(es.es_checkpoint('shop-sub'), 100000) AS r
				  ORDER BY r.log_cursor DESC LIMIT 1));
			SELECT s.events_behind FROM es.subscriptions AS s WHERE s.name = 'shop-sub'}),
			"\n0", "$label: the subscriber catches up and saves its checkpoint");

		if ($node == $other)
		{
			is($node->safe_psql($db, 'SELECT era FROM es.config'), '1',
				"$label: the first append in the other cluster started a new era");
			ok($node->safe_psql($db, "SELECT tx_id < '$max_xid' FROM es.events WHERE stream_id = 'order-99'") eq 't',
				"$label: the new events' transaction ids are below the restored ones, yet they are read after them");
		}
		else
		{
			is($node->safe_psql($db, 'SELECT era FROM es.config'), '0', "$label: the same cluster keeps its era");
		}

		# the outbox: positions, groups, undelivered messages
		is($node->safe_psql($db, "SELECT count(*) FROM es.outbox WHERE position > $max_outbox"), '2',
			"$label: outbox positions continue after the restored ones");
		is($node->safe_psql($db, "SELECT es.es_outbox_create_group('analytics', backfill => true) > 2"), 't',
			"$label: a new consumer group gets a new id");
		is($node->safe_psql($db, q{
			SELECT count(*) FROM es.outbox_deliveries AS d JOIN es.outbox_groups AS g USING (group_id)
			 WHERE g.name = 'billing'}),
			$node->safe_psql($db, q{SELECT count(*) FROM es.outbox}) - 10,
			"$label: billing still has every message it did not ack, and the new ones");
		is($node->safe_psql($db, q{
			SELECT count(*) FROM es.es_outbox_claim('mailer', 1000)}),
			$node->safe_psql($db, q{SELECT count(*) FROM es.outbox}) - 1,
			"$label: mailer claims every message but the dead letter");
		is($node->safe_psql($db, q{SELECT count(*) FROM es.outbox_dead_letters}), '1',
			"$label: the dead letter is back");

		# folds: the restored snapshot is used
		is($node->safe_psql($db, q{
			SELECT concat_ws('|', s.state->>'n', s.snapshot_version, s.events_applied)
			  FROM es.es_fold_state('order-1', 'public.count_events(jsonb, jsonb)', '{}') AS s}),
			'4|3|1', "$label: es_fold_state folds from the restored snapshot");

		# an append condition sees the restored events: seat 2 is sold
		# (after NULL: no matching event may exist), seat 5 is free
		my ($cret, $cout, $cerr) = $node->psql($db, q{
			\set VERBOSITY verbose
			SELECT es.es_append('seat-2b', 0, '[{"type": "SeatSold", "data": {}, "tags": ["show:s1", "seat:2"]}]',
								'[{"types": ["SeatSold", "SeatHeld"], "tags": ["seat:2"]}]', NULL)});
		like($cerr, qr/ERROR:  40001: append condition failed/,
			"$label: a conditional append conflicts with a restored event");
		is($node->safe_psql($db, q{
			SELECT (es.es_append('seat-5', 0, '[{"type": "SeatSold", "data": {}, "tags": ["show:s1", "seat:5"]}]',
								 '[{"types": ["SeatSold", "SeatHeld"], "tags": ["seat:5"]}]',
								 (SELECT r.log_cursor FROM es.es_read_query('[{"tags": ["seat:5"]}]') AS r
								   ORDER BY r.log_cursor DESC LIMIT 1))).version}),
			'1', "$label: a conditional append on a free tag succeeds after the restore");
	}
}

# a dump of a physical copy of the source cluster (same system identifier,
# transaction ids of its own, beyond the source's) restored into the source:
# the restored history is readable at once and new events sort after it
$src->backup('base');
my $copy = PostgreSQL::Test::Cluster->new('es_dump_copy');
$copy->init_from_backup($src, 'base');
$copy->start;
$copy->safe_psql('postgres', join('', map { "SELECT pg_current_xact_id();\n" } 1 .. 3000));
$copy->safe_psql('postgres', 'CREATE DATABASE fromcopy');
$copy->safe_psql('fromcopy', q{
	CREATE EXTENSION es_ext;
	SELECT es.es_append('c-' || i, 0, '[{"type": "OnTheCopy", "data": {}}]') FROM generate_series(1, 3) AS i;});
$copy->command_ok([ 'pg_dump', '-Fc', '-f', "$dumpdir/copy.dump", '-d', $copy->connstr('fromcopy') ],
	'physical copy: pg_dump exits 0');
$copy->stop;
$src->safe_psql('postgres', 'CREATE DATABASE backhome');
$src->command_ok([ 'pg_restore', '-d', $src->connstr('backhome'), "$dumpdir/copy.dump" ],
	'physical copy: the restore into the source cluster exits 0');
is($src->safe_psql('backhome',
	'SELECT max(tx_id) >= pg_snapshot_xmax(pg_current_snapshot()) FROM es.events'), 't',
	'physical copy: the restored events carry transaction ids the source has not reached');
is($src->safe_psql('backhome', 'SELECT count(*) FROM es.es_read_all(NULL, 1000)'), '3',
	'physical copy: the restored history is readable at once');
$src->safe_psql('backhome', q{SELECT es.es_append('c-1', 1, '[{"type": "BackHome", "data": {}}]')});
is($src->safe_psql('backhome', q{
	SELECT string_agg(r.stream_id || '/' || r.version, ',' ORDER BY r.log_cursor) FROM es.es_read_all(NULL, 1000) AS r}),
	'c-1/1,c-2/1,c-3/1,c-1/2', 'physical copy: a new event sorts after the restored history, in a new era');
is($src->safe_psql('backhome', 'SELECT era FROM es.config'), '1', 'physical copy: the first append started era 1');

# a restore COPY into a table that already has a user trigger is refused:
# the trigger would apply the restored rows again
$other->safe_psql('postgres', 'CREATE DATABASE busy');
$other->safe_psql('busy', q{
	CREATE EXTENSION es_ext;
	CREATE FUNCTION public.noop() RETURNS trigger LANGUAGE plpgsql AS 'BEGIN RETURN NULL; END';
	CREATE TRIGGER early AFTER INSERT ON es.events FOR EACH ROW EXECUTE FUNCTION public.noop();});
my ($ret, $stdout, $stderr) = $other->psql('busy',
	"COPY es.events (global_position, stream_id, version, event_id, event_type, data, recorded_at, era, tx_id) FROM stdin;\n"
	  . "1\tx-1\t1\t00000000-0000-0000-0000-000000000001\tT\t{}\t2026-01-01\t0\t5\n\\.\n");
like($stderr, qr/cannot restore rows into table "es\.events" while it has user triggers/,
	'a restore COPY into es.events with a user trigger in place is refused');

$src->stop;
$other->stop;
done_testing();
