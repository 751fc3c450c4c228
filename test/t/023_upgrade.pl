
# Copyright (c) es_ext contributors
#
# test/t/023_upgrade.pl
#
# The upgrade path.  For every installable version of es_ext older than the
# default one that has an update path to it (an es_ext--A--B.sql chain,
# found through pg_extension_update_paths): install that version, write
# events, an outbox route and consumer group, a snapshot with it, then
# ALTER EXTENSION es_ext UPDATE, and check that
#
#  - the default version is reached and the catalog is exactly what a fresh
#    install of the default version creates: routines (full definitions,
#    aggregates' pg_aggregate rows, ACLs, comments), relations (kind,
#    options, persistence, replica identity, row security, ACLs, comments),
#    views' definitions, sequences' parameters, columns (types, defaults,
#    identity, generation, statistics targets, ACLs, comments), indexes,
#    constraints, triggers, policies, event triggers, types, the schema,
#    the dumped tables with their conditions, the extension's members, and
#    the es_* roles with their memberships;
#  - the old events got their chain hashes (es_verify_all finds nothing);
#  - the old data keeps working: the events are intact, an old stream and a
#    new one take appends, es_read_all from the start returns every event in
#    log order, es_fold folds an old stream (from the old snapshot), and an
#    event appended after the update reaches the old consumer group and can
#    be claimed and acked.
#
# Two fresh installs of the default version must also create the same
# catalog.  On a mismatch the lines found on one side only are printed.

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('es_upgrade');
$node->init;
$node->start;

# everything the extension creates, in one comparable text: one line per
# object or property (newlines inside definitions are written as \n).
# Column options leave out pg_attver, which this server sets per install.
my $catalog = q{
WITH ext AS (SELECT oid FROM pg_extension WHERE extname = 'es_ext'),
rels AS (SELECT c.* FROM pg_class AS c WHERE c.relnamespace = 'es'::regnamespace),
objs AS (
	SELECT concat_ws(' ', 'schema', n.nspname, n.nspowner::regrole, n.nspacl,
					 obj_description(n.oid, 'pg_namespace')) AS o
	  FROM pg_namespace AS n WHERE n.oid = 'es'::regnamespace
	UNION ALL
	SELECT concat_ws(' ', 'routine', p.oid::regprocedure, p.prokind, p.prorettype::regtype,
					 p.provolatile, p.proisstrict, p.prosecdef, p.proparallel, p.proconfig, p.proacl,
					 md5(concat(p.prosrc, p.probin)))
	  FROM pg_proc AS p WHERE p.pronamespace = 'es'::regnamespace
	UNION ALL
	SELECT concat_ws(' ', 'routine-definition', p.oid::regprocedure,
					 replace(pg_get_functiondef(p.oid), E'\n', '\n'))
	  FROM pg_proc AS p WHERE p.pronamespace = 'es'::regnamespace AND p.prokind <> 'a'
	UNION ALL
	SELECT concat_ws(' ', 'aggregate', a.aggfnoid::regprocedure, a.aggkind, a.aggnumdirectargs,
					 a.aggtransfn::regprocedure, a.aggfinalfn, a.aggcombinefn, a.aggserialfn,
					 a.aggdeserialfn, a.aggmtransfn, a.aggminvtransfn, a.aggmfinalfn,
					 a.aggfinalextra, a.aggmfinalextra, a.aggfinalmodify, a.aggmfinalmodify,
					 a.aggsortop::regoperator, a.aggtranstype::regtype, a.aggtransspace,
					 a.aggmtranstype::regtype, a.aggmtransspace, a.agginitval, a.aggminitval,
					 p.proparallel, p.proacl)
	  FROM pg_aggregate AS a JOIN pg_proc AS p ON p.oid = a.aggfnoid
	 WHERE p.pronamespace = 'es'::regnamespace
	UNION ALL
	SELECT concat_ws(' ', 'relation', c.relname, c.relkind, c.relowner::regrole, c.relacl, c.reloptions,
					 'persistence=' || c.relpersistence::text, 'replident=' || c.relreplident::text,
					 'rls=' || c.relrowsecurity, 'forcerls=' || c.relforcerowsecurity,
					 'am=' || (SELECT amname FROM pg_am WHERE oid = c.relam),
					 'tablespace=' || c.reltablespace, 'checks=' || c.relchecks,
					 'triggers=' || c.relhastriggers, 'rules=' || c.relhasrules,
					 'ispartition=' || c.relispartition)
	  FROM rels AS c
	UNION ALL
	SELECT concat_ws(' ', 'view', c.relname, replace(pg_get_viewdef(c.oid), E'\n', '\n'))
	  FROM rels AS c WHERE c.relkind IN ('v', 'm')
	UNION ALL
	SELECT concat_ws(' ', 'sequence', c.relname, s.seqtypid::regtype, 'start=' || s.seqstart,
					 'increment=' || s.seqincrement, 'min=' || s.seqmin, 'max=' || s.seqmax,
					 'cycle=' || s.seqcycle, 'cache=' || s.seqcache, c.relacl,
					 'owned-by=' || (SELECT d.refobjid::regclass || '.' || d.refobjsubid || '/' || d.deptype::text
									   FROM pg_depend AS d
									  WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid
										AND d.refclassid = 'pg_class'::regclass))
	  FROM rels AS c JOIN pg_sequence AS s ON s.seqrelid = c.oid
	UNION ALL
	SELECT concat_ws(' ', 'column', c.relname || '.' || a.attname, 'at=' || a.attnum,
					 format_type(a.atttypid, a.atttypmod), a.attnotnull, a.attidentity, a.attgenerated,
					 pg_get_expr(d.adbin, d.adrelid), 'collation=' || a.attcollation::regcollation,
					 'stattarget=' || a.attstattarget, 'storage=' || a.attstorage::text,
					 'compression=' || a.attcompression::text,
					 (SELECT array_agg(x ORDER BY x) FROM unnest(a.attoptions) AS x
					   WHERE x NOT LIKE 'pg\_attver=%'), a.attacl)
	  FROM pg_attribute AS a JOIN rels AS c ON c.oid = a.attrelid
	  LEFT JOIN pg_attrdef AS d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
	 WHERE a.attnum > 0 AND NOT a.attisdropped
	UNION ALL
	SELECT concat_ws(' ', 'index', pg_get_indexdef(i.indexrelid), i.indisprimary, i.indisunique,
					 i.indisclustered, i.indisreplident, i.indnullsnotdistinct)
	  FROM pg_index AS i JOIN rels AS c ON c.oid = i.indrelid
	UNION ALL
	SELECT concat_ws(' ', 'constraint', conrelid::regclass, contypid::regtype, conname, contype,
					 condeferrable, condeferred, convalidated, pg_get_constraintdef(oid))
	  FROM pg_constraint WHERE connamespace = 'es'::regnamespace
	UNION ALL
	SELECT concat_ws(' ', 'trigger', pg_get_triggerdef(t.oid), t.tgenabled)
	  FROM pg_trigger AS t JOIN rels AS c ON c.oid = t.tgrelid WHERE NOT t.tgisinternal
	UNION ALL
	SELECT concat_ws(' ', 'policy', c.relname, p.polname, p.polcmd, p.polpermissive,
					 p.polroles::regrole[], pg_get_expr(p.polqual, p.polrelid),
					 pg_get_expr(p.polwithcheck, p.polrelid))
	  FROM pg_policy AS p JOIN rels AS c ON c.oid = p.polrelid
	UNION ALL
	SELECT concat_ws(' ', 'rule', c.relname, r.rulename, r.ev_type, r.ev_enabled, r.is_instead)
	  FROM pg_rewrite AS r JOIN rels AS c ON c.oid = r.ev_class
	UNION ALL
	SELECT concat_ws(' ', 'event-trigger', e.evtname, e.evtevent, e.evtfoid::regprocedure, e.evttags,
					 e.evtenabled, obj_description(e.oid, 'pg_event_trigger'))
	  FROM pg_event_trigger AS e JOIN pg_proc AS p ON p.oid = e.evtfoid
	 WHERE p.pronamespace = 'es'::regnamespace
	UNION ALL
	SELECT concat_ws(' ', 'type', t.oid::regtype, t.typtype, t.typacl, t.typnotnull,
					 t.typbasetype::regtype, t.typdefault)
	  FROM pg_type AS t WHERE t.typnamespace = 'es'::regnamespace
	UNION ALL
	SELECT concat_ws(' ', 'comment', i.type, i.identity, d.description)
	  FROM pg_description AS d, pg_identify_object(d.classoid, d.objoid, d.objsubid) AS i
	 WHERE i.schema = 'es'
		OR (d.classoid = 'pg_trigger'::regclass
			AND EXISTS (SELECT FROM pg_trigger AS t JOIN rels AS c ON c.oid = t.tgrelid
						 WHERE t.oid = d.objoid))
	UNION ALL
	SELECT concat_ws(' ', 'dumped', x.rel::regclass, 'where=' || quote_literal(x.cond))
	  FROM pg_extension AS e, unnest(e.extconfig, e.extcondition) AS x(rel, cond)
	 WHERE e.extname = 'es_ext'
	UNION ALL
	SELECT concat_ws(' ', 'extension', e.extname, e.extnamespace::regnamespace, e.extrelocatable,
					 e.extowner::regrole)
	  FROM pg_extension AS e WHERE e.extname = 'es_ext'
	UNION ALL
	SELECT concat_ws(' ', 'member', pg_describe_object(d.classid, d.objid, d.objsubid))
	  FROM pg_depend AS d, ext WHERE d.refobjid = ext.oid AND d.deptype = 'e'
	UNION ALL
	SELECT concat_ws(' ', 'role', r.rolname, r.rolsuper, r.rolinherit, r.rolcreaterole, r.rolcreatedb,
					 r.rolcanlogin, r.rolreplication, r.rolbypassrls, r.rolconnlimit, r.rolvaliduntil,
					 r.rolconfig)
	  FROM pg_roles AS r WHERE r.rolname LIKE 'es\_%'
	UNION ALL
	SELECT concat_ws(' ', 'membership', m.member::regrole, 'in', m.roleid::regrole,
					 'admin=' || m.admin_option)
	  FROM pg_auth_members AS m
	 WHERE m.roleid IN (SELECT oid FROM pg_roles WHERE rolname LIKE 'es\_%')
		OR m.member IN (SELECT oid FROM pg_roles WHERE rolname LIKE 'es\_%'))
SELECT string_agg(o, E'\n' ORDER BY o) FROM objs};

# is() for two catalog texts; on a mismatch, the lines found on one side only
sub catalog_is
{
	my ($got, $expected, $name) = @_;
	my $ok = is($got eq $expected ? 'same' : 'different', 'same', $name);
	unless ($ok)
	{
		my (%g, %e);
		$g{$_}++ for split /\n/, $got;
		$e{$_}++ for split /\n/, $expected;
		diag("only in the upgraded/second catalog:\n"
			  . join('', map { "+ $_\n" } grep { ($g{$_} // 0) > ($e{$_} // 0) } sort keys %g));
		diag("only in the reference catalog:\n"
			  . join('', map { "- $_\n" } grep { ($e{$_} // 0) > ($g{$_} // 0) } sort keys %e));
	}
	return $ok;
}

my $default = $node->safe_psql('postgres',
	"SELECT default_version FROM pg_available_extensions WHERE name = 'es_ext'");
my @versions = split /\n/, $node->safe_psql('postgres',
	"SELECT version FROM pg_available_extension_versions WHERE name = 'es_ext' ORDER BY version");
note 'installable versions: ' . join(', ', @versions) . "; default $default";

# the default version installs, and its catalog is the reference
$node->safe_psql('postgres', 'CREATE DATABASE fresh');
$node->safe_psql('fresh', 'CREATE EXTENSION es_ext');
is($node->safe_psql('fresh', "SELECT extversion FROM pg_extension WHERE extname = 'es_ext'"),
	$default, "CREATE EXTENSION installs the default version $default");
my $reference = $node->safe_psql('fresh', $catalog);
my %kinds;
$kinds{ (split / /, $_)[0] }++ for split /\n/, $reference;
note 'reference catalog: ' . join(', ', map { "$kinds{$_} $_" } sort keys %kinds);
cmp_ok(scalar(split /\n/, $reference), '>', 300, 'the reference catalog lists the extension\'s objects');
for my $kind (qw(schema routine routine-definition aggregate relation view sequence column index
	constraint trigger type comment dumped member role membership))
{
	ok($kinds{$kind}, "the reference catalog describes: $kind");
}

# an install is repeatable: a second fresh install has the same catalog
$node->safe_psql('postgres', 'CREATE DATABASE fresh2');
$node->safe_psql('fresh2', 'CREATE EXTENSION es_ext');
catalog_is($node->safe_psql('fresh2', $catalog), $reference, 'two fresh installs create the same catalog');

# the optional correlation and causation indexes (README): a fresh install
# has none; one that created them as documented is what an update from
# 0.1.0 (which created them) must equal
is($node->safe_psql('fresh', q{SELECT count(*) FROM pg_indexes WHERE schemaname = 'es'
	AND indexname IN ('events_correlation_idx', 'events_causation_idx')}),
	'0', 'a fresh install leaves the correlation and causation indexes to the deployment');
$node->safe_psql('postgres', 'CREATE DATABASE fresh_lookup');
$node->safe_psql('fresh_lookup', q{
	CREATE EXTENSION es_ext;
	CREATE INDEX events_correlation_idx ON es.events ((metadata ->> 'correlation_id'))
	  WHERE metadata ? 'correlation_id';
	CREATE INDEX events_causation_idx ON es.events ((metadata ->> 'causation_id'))
	  WHERE metadata ? 'causation_id';});
my $reference_lookup = $node->safe_psql('fresh_lookup', $catalog);

# the update paths to the default version
my @paths = split /\n/, $node->safe_psql('postgres',
	"SELECT source || '|' || path FROM pg_extension_update_paths('es_ext')
	  WHERE target = '$default' AND path IS NOT NULL AND source <> '$default' ORDER BY source");
note 'update paths: ' . (@paths ? join('; ', @paths) : 'none');
ok(scalar(@paths) >= 1 || scalar(@versions) == 1,
	'every older installable version has an update path to the default');

my $events_q =
  "SELECT string_agg(stream_id || ':' || version || ':' || event_id || ':' || data::text, ',' ORDER BY stream_id, version) FROM es.events";
my $log_q = q{
	SELECT string_agg(r.stream_id || ':' || r.version, ',' ORDER BY r.ord)
	  FROM es.es_read_all(NULL, 10000) WITH ORDINALITY AS r(global_position, stream_id, version, event_id,
			event_type, data, metadata, recorded_at, log_cursor, horizon, ord)};
my $log_expected_q = q{
	SELECT string_agg(stream_id || ':' || version, ',' ORDER BY era, tx_id, global_position) FROM es.events};

for my $p (@paths)
{
	my ($from, $path) = split /\|/, $p;
	my $db = "from_" . ($from =~ s/\W/_/gr);
	$node->safe_psql('postgres', "CREATE DATABASE $db");
	$node->safe_psql($db, "CREATE EXTENSION es_ext VERSION '$from'");
	is($node->safe_psql($db, "SELECT extversion FROM pg_extension WHERE extname = 'es_ext'"),
		$from, "$from installs");

	# data written with the old version: an outbox route and group, 5
	# streams of 10 events in 5 transactions, a reducer and a snapshot;
	# the group consumes everything before the update
	$node->safe_psql($db, q{
		SELECT es.es_outbox_route('up');
		SELECT es.es_outbox_create_group('g_old');
		CREATE FUNCTION public.sum_i(state jsonb, event jsonb) RETURNS jsonb
		LANGUAGE sql IMMUTABLE AS $$
			SELECT jsonb_build_object('n', (state->>'n')::int + 1,
									  'sum', (state->>'sum')::int + coalesce((event->'data'->>'i')::int, 0))
		$$;});
	for my $s (1 .. 5)
	{
		$node->safe_psql($db, qq{
			SELECT es.es_append('up-$s', 0,
				(SELECT jsonb_agg(jsonb_build_object('type', 'Old', 'data', jsonb_build_object('i', i)) ORDER BY i)
				   FROM generate_series(1, 10) AS i))});
	}
	is($node->safe_psql($db,
			"SELECT es.es_snapshot_save('up-3', 'public.sum_i(jsonb,jsonb)', '{\"n\": 0, \"sum\": 0}')"),
		'10', "$from: a snapshot is saved before the update");
	is($node->safe_psql($db, q{
			WITH c AS (SELECT * FROM es.es_outbox_claim('g_old', 1000))
			SELECT count(*) || ':' || es.es_outbox_ack('g_old', (array_agg(c.lease))[1], array_agg(c.position)) FROM c}),
		'50:50', "$from: the old group consumes the 50 old events");
	my $before = $node->safe_psql($db, $events_q);
	my $log_before = $node->safe_psql($db, $log_q);

	$node->safe_psql($db, 'ALTER EXTENSION es_ext UPDATE');
	is($node->safe_psql($db, "SELECT extversion FROM pg_extension WHERE extname = 'es_ext'"),
		$default, "$from -> $default ($path): the update reaches the default version");
	my $lookup = $node->safe_psql($db, q{SELECT count(*) FROM pg_indexes WHERE schemaname = 'es'
		AND indexname IN ('events_correlation_idx', 'events_causation_idx')});
	is($lookup, $from eq '0.1.0' ? '2' : $lookup,
		"$from -> $default: the correlation and causation indexes the old version created are kept");
	catalog_is($node->safe_psql($db, $catalog), $lookup eq '2' ? $reference_lookup : $reference,
		"$from -> $default: the catalog equals a fresh install of $default"
		  . ($lookup eq '2' ? ' with the optional correlation and causation indexes' : ''));
	is($node->safe_psql($db, $events_q), $before, "$from -> $default: the events are intact");
	# tamper evidence: the update computed the chain of every old event
	is($node->safe_psql($db, q{SELECT count(*) || ':' || count(hash) || ':' || count(DISTINCT hash) FROM es.events}),
		'50:50:50', "$from -> $default: every old event has a chain hash");
	is($node->safe_psql($db, q{SELECT count(*) FROM es.es_verify_all()}),
		'0', "$from -> $default: the chain of every old stream verifies");
	is($node->safe_psql($db, q{SELECT count(*) FROM pg_proc WHERE proname = 'es_rechain_internal'}),
		'0', "$from -> $default: the function that computed the chains is gone");

	# the old data keeps working
	is($node->safe_psql($db, q{SELECT (es.es_append('up-1', 10, '[{"type": "New", "data": {"i": 100}}]')).version}),
		'11', "$from -> $default: an old stream takes appends");
	is($node->safe_psql($db, q{SELECT (es.es_append('up-new', 0, '[{"type": "New", "data": {"i": 1}}]')).version}),
		'1', "$from -> $default: a new stream takes appends");
	my $log_after = $node->safe_psql($db, $log_q);
	is($log_after, $node->safe_psql($db, $log_expected_q),
		"$from -> $default: es_read_all from the start returns every event in log order");
	is($log_after, "$log_before,up-1:11,up-new:1",
		"$from -> $default: the old events come first, in their old order, then the new ones");
	is($node->safe_psql($db, q{SELECT count(*) FROM es.es_verify_all()}),
		'0', "$from -> $default: appends after the update continue the old chains");
	is($node->safe_psql($db, q{SELECT count(*) FROM es.es_read_all(NULL, 10000)}), '52',
		"$from -> $default: es_read_all returns all 52 events");
	is($node->safe_psql($db, q{SELECT es.es_fold('up-1', 'public.sum_i(jsonb,jsonb)', '{"n": 0, "sum": 0}')}),
		'{"n": 11, "sum": 155}', "$from -> $default: es_fold folds an old stream");
	is($node->safe_psql($db, q{
			SELECT (f.state->>'sum') || ':' || f.version || ':' || f.snapshot_version || ':' || f.events_applied
			  FROM es.es_fold_state('up-3', 'public.sum_i(jsonb,jsonb)', '{"n": 0, "sum": 0}') AS f}),
		'55:10:10:0', "$from -> $default: es_fold starts from the snapshot saved before the update");
	is($node->safe_psql($db, q{
			SELECT string_agg(c.stream_id || ':' || c.version || ':' || c.event_type, ',' ORDER BY c.position)
			  FROM es.es_outbox_claim('g_old', 100, '1 minute') AS c}),
		'up-1:11:New,up-new:1:New',
		"$from -> $default: events appended after the update are claimable by the old group");
	is($node->safe_psql($db, q{
			SELECT es.es_outbox_ack('g_old', d.lease, array_agg(d.position))
			  FROM es.outbox_deliveries AS d JOIN es.outbox_groups AS g USING (group_id)
			 WHERE g.name = 'g_old' GROUP BY d.lease}),
		'2', "$from -> $default: and ackable");
	is($node->safe_psql($db, q{
			SELECT count(*) || ':' || (SELECT undelivered FROM es.outbox_status WHERE consumer_group = 'g_old')
			  FROM es.es_outbox_claim('g_old', 100)}),
		'0:0', "$from -> $default: nothing is left to deliver");
}

$node->stop;
done_testing();
