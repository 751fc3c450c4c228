
# Copyright (c) es_ext contributors
#
# test/t/053_monitoring.pl
#
# The monitoring recipe, examples/monitoring/queries.yaml (a queries file
# for postgres_exporter), on a preloaded server with data in every view:
#
#  - every query of the file runs as a role in pg_monitor and es_reader only,
#    returns rows, and returns exactly the columns its metrics declare (a
#    renamed view column breaks this test, not the user's dashboard);
#  - when postgres_exporter is installed (Debian: prometheus-postgres-
#    exporter, which test/lib.sh installs), the exporter itself loads the
#    file, scrapes the server and publishes a metric of every query with
#    the values the views show.

use strict;
use warnings;

use HTTP::Tiny;
use Time::HiRes qw(sleep time);
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $queries_file = "$ENV{TESTDIR}/examples/monitoring/queries.yaml";
ok(-f $queries_file, 'examples/monitoring/queries.yaml exists');

# A small reader of the file's YAML subset: top-level keys, a "query: |"
# block, and "- column:" entries with a "usage:" line.
sub read_queries
{
	my ($path) = @_;
	my (%q, $cur, $in_query, $col);
	open my $fh, '<', $path or die "$path: $!";
	while (my $line = <$fh>)
	{
		chomp $line;
		next if $line =~ /^\s*#/;
		if ($line =~ /^(\w+):\s*$/)
		{
			$cur = $1;
			$q{$cur} = { query => '', columns => [], usage => {} };
			$in_query = 0;
			next;
		}
		next unless defined $cur;
		if ($line =~ /^  query: \|\s*$/) { $in_query = 1; next; }
		if ($in_query && $line =~ /^    (.*)$/) { $q{$cur}{query} .= "$1\n"; next; }
		$in_query = 0;
		if ($line =~ /^    - (\w+):\s*$/)
		{
			$col = $1;
			push @{ $q{$cur}{columns} }, $col;
			next;
		}
		if ($line =~ /^        usage: "(\w+)"/) { $q{$cur}{usage}{$col} = $1; next; }
	}
	close $fh;
	return \%q;
}

my $queries = read_queries($queries_file);
ok(scalar(keys %$queries) >= 6, 'the file has queries: ' . join(', ', sort keys %$queries));
for my $name (sort keys %$queries)
{
	ok($queries->{$name}{query} =~ /\S/ && @{ $queries->{$name}{columns} },
		"$name has a query and metrics");
	is(scalar(grep { !defined $queries->{$name}{usage}{$_} } @{ $queries->{$name}{columns} }),
		0, "$name: every metric has a usage");
}

my $node = PostgreSQL::Test::Cluster->new('es_monitoring');
$node->init;
$node->append_conf('postgresql.conf', q{shared_preload_libraries = 'es_ext'});
$node->start;

# data in every view: appends (a conflict), a category, an undelivered
# outbox message, a subscriber checkpoint, a finished rebuild
$node->safe_psql(
	'postgres', q{
	CREATE EXTENSION es_ext;
	CREATE ROLE monitor LOGIN IN ROLE pg_monitor, es_reader;
	SELECT es.es_outbox_route('order');
	SELECT es.es_outbox_create_group('mailer');
	SELECT es.es_append('order-1', 0, '[{"type": "Placed", "data": {"n": 1}}]');
	SELECT es.es_append('order-2', NULL, '[{"type": "Placed", "data": {"n": 2}}]');
	SELECT count(*) FROM es.es_read_stream('order-1');
});
$node->psql('postgres', q{SELECT es.es_append('order-1', 0, '[{"type": "Placed", "data": {}}]')});
$node->safe_psql('postgres', $_) for @{ extra_setup() };
$node->safe_psql('postgres',
	q{CALL es.es_rebuild_projection('order_count', 'UPDATE public.order_count SET n = 0')});

# every query, as the monitoring role
for my $name (sort keys %$queries)
{
	my $sql = $queries->{$name}{query};
	my ($ret, $stdout, $stderr) = $node->psql(
		'postgres', "\\pset tuples_only off\n\\pset footer off\n\\pset format unaligned\n$sql",
		extra_params => [ '-U', 'monitor' ]);
	is($ret, 0, "$name runs as a member of pg_monitor and es_reader") or diag $stderr;
	my ($header, @rows) = split /\n/, $stdout;
	ok(@rows >= 1, "$name returns rows");
	is(join(',', sort split /\|/, ($header // '')),
		join(',', sort @{ $queries->{$name}{columns} }),
		"$name returns exactly the columns its metrics declare");
}

# a subscriber checkpoint and a projection, rebuilt below
sub extra_setup
{
	my @s;
	push @s, q{SELECT es.es_checkpoint_save('mailer-sub', NULL)};
	push @s, q{
		CREATE TABLE public.order_count (n bigint);
		INSERT INTO public.order_count VALUES (0);
		CREATE FUNCTION public.order_count_fn() RETURNS trigger LANGUAGE plpgsql
			SET search_path = pg_catalog AS $$
			BEGIN UPDATE public.order_count SET n = n + 1; RETURN NULL; END $$;
		CREATE TRIGGER order_count AFTER INSERT ON es.events
			FOR EACH ROW EXECUTE FUNCTION public.order_count_fn();};
	return \@s;
}
# the exporter itself, when installed
my $exporter = '/usr/bin/prometheus-postgres-exporter';
SKIP:
{
	skip 'postgres_exporter is not installed (Debian package prometheus-postgres-exporter)', 4
	  unless -x $exporter;

	my $port = PostgreSQL::Test::Cluster::get_free_port();
	my $dsn = 'postgresql://monitor@:' . $node->port . '/postgres?host=' . $node->host . '&sslmode=disable';
	my $log = $node->basedir . '/exporter.log';
	my $h = IPC::Run::start(
		[ $exporter, "--extend.query-path=$queries_file", '--disable-default-metrics',
		  '--disable-settings-metrics', "--web.listen-address=127.0.0.1:$port" ],
		'>', $log, '2>&1',
		# lib/pq (the exporter's driver) panics on some libpq variables that
		# pg_virtualenv sets (PGSYSCONFDIR): the DSN says everything
		init => sub {
			delete $ENV{$_} for grep { /^PG/ } keys %ENV;
			$ENV{DATA_SOURCE_NAME} = $dsn;
		});
	# until the exporter listens and has scraped (Time::HiRes: a core
	# sleep(0.2) does not sleep at all, and the loop gave up within
	# milliseconds on a loaded machine)
	my $body = '';
	my $deadline = time() + $PostgreSQL::Test::Utils::timeout_default;
	while (time() < $deadline)
	{
		my $r = HTTP::Tiny->new(timeout => 5)->get("http://127.0.0.1:$port/metrics");
		if ($r->{success} && $r->{content} =~ /^es_stats_appends/m)
		{
			$body = $r->{content};
			last;
		}
		sleep 0.2;
	}
	$h->kill_kill;
	ok($body ne '', 'postgres_exporter serves the es_ext metrics') or diag slurp_file($log);
	like($body, qr/^es_stats_appends\{[^}]*datname="postgres"[^}]*\} 2$/m,
		'es_stats_appends is the number of appends');
	like($body, qr/^es_outbox_undelivered\{[^}]*consumer_group="mailer"[^}]*\} 2$/m,
		'es_outbox_undelivered per consumer group');
	my @missing = grep { $body !~ /^${_}_/m } sort keys %$queries;
	is("@missing", '', 'every query of the file produced metrics');
}

$node->stop;
done_testing();
