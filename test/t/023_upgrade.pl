
# Copyright (c) es_ext contributors
#
# test/t/023_upgrade.pl
#
# The upgrade path.  For every installable version of es_ext older than the
# default one that has an update path to it (an es_ext--A--B.sql chain):
# install that version, write events with it, ALTER EXTENSION es_ext UPDATE,
# and check that the default version is reached, the events are intact and
# still appendable, and the catalog (routines, relations, columns, indexes,
# constraints, triggers, types, privileges, dumped tables) is exactly what a
# fresh install of the default version creates.
#
# Only 0.1.0 exists today, so the upgrade part skips; the scaffolding, and
# the checks of the default version that it relies on, run already.

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('es_upgrade');
$node->init;
$node->start;

# everything the extension creates, in one comparable text
my $catalog = q{
WITH ext AS (SELECT oid FROM pg_extension WHERE extname = 'es_ext'),
objs AS (
	SELECT concat_ws(' ', 'routine', p.oid::regprocedure, p.prokind, p.prorettype::regtype,
					 p.provolatile, p.proisstrict, p.prosecdef, p.proparallel, p.proconfig, p.proacl,
					 md5(concat(p.prosrc, p.probin))) AS o
	  FROM pg_proc AS p WHERE p.pronamespace = 'es'::regnamespace
	UNION ALL
	SELECT concat_ws(' ', 'relation', c.relname, c.relkind, c.relacl, c.reloptions, c.relrowsecurity)
	  FROM pg_class AS c WHERE c.relnamespace = 'es'::regnamespace
	UNION ALL
	SELECT concat_ws(' ', 'column', c.relname || '.' || a.attname, format_type(a.atttypid, a.atttypmod),
					 a.attnotnull, a.attidentity, a.attgenerated, pg_get_expr(d.adbin, d.adrelid))
	  FROM pg_attribute AS a JOIN pg_class AS c ON c.oid = a.attrelid
	  LEFT JOIN pg_attrdef AS d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
	 WHERE c.relnamespace = 'es'::regnamespace AND a.attnum > 0 AND NOT a.attisdropped
	UNION ALL
	SELECT concat_ws(' ', 'index', pg_get_indexdef(i.indexrelid)) FROM pg_index AS i
	  JOIN pg_class AS c ON c.oid = i.indrelid WHERE c.relnamespace = 'es'::regnamespace
	UNION ALL
	SELECT concat_ws(' ', 'constraint', conname, pg_get_constraintdef(oid)) FROM pg_constraint
	 WHERE connamespace = 'es'::regnamespace
	UNION ALL
	SELECT concat_ws(' ', 'trigger', pg_get_triggerdef(t.oid), t.tgenabled) FROM pg_trigger AS t
	  JOIN pg_class AS c ON c.oid = t.tgrelid WHERE c.relnamespace = 'es'::regnamespace AND NOT t.tgisinternal
	UNION ALL
	SELECT concat_ws(' ', 'type', t.oid::regtype, t.typtype, t.typacl)
	  FROM pg_type AS t WHERE t.typnamespace = 'es'::regnamespace
	UNION ALL
	SELECT concat_ws(' ', 'dumped', x::regclass) FROM pg_extension AS e, unnest(e.extconfig) AS x
	 WHERE e.extname = 'es_ext'
	UNION ALL
	SELECT concat_ws(' ', 'member', pg_describe_object(d.classid, d.objid, d.objsubid))
	  FROM pg_depend AS d, ext WHERE d.refobjid = ext.oid AND d.deptype = 'e')
SELECT string_agg(o, E'\n' ORDER BY o) FROM objs};

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
cmp_ok(scalar(split /\n/, $reference), '>', 50, 'the reference catalog lists the extension\'s objects');

# an install is repeatable: a second fresh install has the same catalog
$node->safe_psql('postgres', 'CREATE DATABASE fresh2');
$node->safe_psql('fresh2', 'CREATE EXTENSION es_ext');
is($node->safe_psql('fresh2', $catalog), $reference, 'two fresh installs create the same catalog');

# the update paths to the default version
my @paths = split /\n/, $node->safe_psql('postgres',
	"SELECT source || '|' || path FROM pg_extension_update_paths('es_ext')
	  WHERE target = '$default' AND path IS NOT NULL AND source <> '$default' ORDER BY source");
note 'update paths: ' . (@paths ? join('; ', @paths) : 'none');

SKIP:
{
	skip "only $default exists: nothing to upgrade from yet", 1 unless @paths;

	for my $p (@paths)
	{
		my ($from, $path) = split /\|/, $p;
		my $db = "from_" . ($from =~ s/\W/_/gr);
		$node->safe_psql('postgres', "CREATE DATABASE $db");
		$node->safe_psql($db, "CREATE EXTENSION es_ext VERSION '$from'");
		$node->safe_psql($db, q{
			SELECT es.es_append('up-' || s, NULL,
				(SELECT jsonb_agg(jsonb_build_object('type', 'Old', 'data', jsonb_build_object('i', i)) ORDER BY i)
				   FROM generate_series(1, 10) AS i))
			  FROM generate_series(1, 5) AS s});
		my $before = $node->safe_psql($db,
			"SELECT string_agg(stream_id || ':' || version || ':' || event_id || ':' || data::text, ',' ORDER BY stream_id, version) FROM es.events");
		$node->safe_psql($db, 'ALTER EXTENSION es_ext UPDATE');
		is($node->safe_psql($db, "SELECT extversion FROM pg_extension WHERE extname = 'es_ext'"),
			$default, "$from -> $default ($path): the update reaches the default version");
		is($node->safe_psql($db,
				"SELECT string_agg(stream_id || ':' || version || ':' || event_id || ':' || data::text, ',' ORDER BY stream_id, version) FROM es.events"),
			$before, "$from -> $default: the events are intact");
		is($node->safe_psql($db, "SELECT (es.es_append('up-1', 10, '[{\"type\": \"New\", \"data\": {}}]')).version"),
			'11', "$from -> $default: the streams continue");
		is($node->safe_psql($db, $catalog), $reference,
			"$from -> $default: the catalog equals a fresh install of $default");
	}
}

$node->stop;
done_testing();
