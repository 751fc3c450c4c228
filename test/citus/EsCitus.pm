
# Copyright (c) es_ext contributors
#
# test/citus/EsCitus.pm — a Citus cluster for the Citus test tier
# (test/citus/run, test/citus/t/*.pl), made of PostgreSQL::Test::Cluster
# nodes of the PostgreSQL tree that test/citus/build makes (it comes first
# in PATH).
#
#   my ($coord, @workers) = EsCitus::cluster('dist', workers => 2, shard_count => 8);
#
# Each node: wal_level = logical, shared_preload_libraries = 'citus,es_ext'
# (Citus first), max_prepared_transactions = 20, max_connections = 100,
# listening on 127.0.0.1 as well as on its Unix socket (Citus connects
# between the nodes by TCP: the node name of every node is 127.0.0.1);
# CREATE EXTENSION citus on each.  On the coordinator:
# citus_set_coordinator_host, citus_add_node for each worker,
# CREATE EXTENSION es_ext CASCADE (Citus propagates it to the workers),
# then SELECT es.distribute(shard_count).
#
# Options:
#   workers     => the number of workers (default 2)
#   shard_count => the shard count given to es.distribute() (default 8);
#                  0 or undef with distribute => 0: es_ext created, not distributed
#   distribute  => 0: stop after CREATE EXTENSION es_ext (default 1)
#   extension   => 0: stop before CREATE EXTENSION es_ext (default 1)
#   conf        => more postgresql.conf lines, for every node
#   port        => the port of the coordinator; worker i gets port + i.
#                  Default: $ENV{ES_CITUS_PORT} when set (then + 3 per
#                  cluster made in this test script), else a free port
#                  chosen by PostgreSQL::Test::Cluster.
#
# The nodes are started; PostgreSQL::Test::Cluster stops them at the end
# of the test script.  The node names are "${name}_coord", "${name}_w1", ...

package EsCitus;

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

# the clusters made so far in this script (for ES_CITUS_PORT)
my $made = 0;

sub cluster
{
	my ($name, %opt) = @_;
	my $nworkers = $opt{workers} // 2;
	my $shard_count = exists $opt{shard_count} ? $opt{shard_count} : 8;
	my $distribute = $opt{distribute} // 1;
	my $extension = $opt{extension} // 1;
	my $port = $opt{port};
	if (!defined $port && $ENV{ES_CITUS_PORT})
	{
		$port = $ENV{ES_CITUS_PORT} + $made * ($nworkers + 1);
	}
	$made++;

	my @nodes;
	foreach my $i (0 .. $nworkers)
	{
		my $node = PostgreSQL::Test::Cluster->new($i == 0 ? "${name}_coord" : "${name}_w$i",
			defined $port ? (port => $port + $i) : ());
		$node->init(allows_streaming => 'logical');
		$node->append_conf(
			'postgresql.conf', qq{
listen_addresses = '127.0.0.1'
shared_preload_libraries = 'citus,es_ext'
wal_level = logical
max_prepared_transactions = 20
max_connections = 100
max_wal_senders = 10
max_replication_slots = 10
} . ($opt{conf} // ''));
		$node->start;
		$node->safe_psql('postgres', 'CREATE EXTENSION citus');
		push @nodes, $node;
	}

	my ($coord, @workers) = @nodes;
	$coord->safe_psql('postgres',
		"SELECT citus_set_coordinator_host('127.0.0.1', " . $coord->port . ')');
	foreach my $w (@workers)
	{
		$coord->safe_psql('postgres', "SELECT citus_add_node('127.0.0.1', " . $w->port . ')');
	}
	if ($extension)
	{
		$coord->safe_psql('postgres', 'CREATE EXTENSION es_ext CASCADE');
		if ($distribute && $shard_count)
		{
			$coord->safe_psql('postgres', "SELECT es.distribute($shard_count)");
		}
	}
	return ($coord, @workers);
}

# outcome($node, $sql): "ok", or "SQLSTATE: message" of the first error of
# $sql (run by psql with VERBOSITY verbose, ON_ERROR_STOP)
sub outcome
{
	my ($node, $sql) = @_;
	my ($ret, $stdout, $stderr) =
	  $node->psql('postgres', "\\set VERBOSITY verbose\n$sql", on_error_stop => 1);
	return 'ok' if $ret == 0;
	return "$1: $2" if $stderr =~ /ERROR:\s+([0-9A-Z]{5}):\s+(.*)/;
	return "psql exit $ret: $stderr";
}

# sqlstate($node, $sql): the SQLSTATE of the error of $sql, or "ok"
sub sqlstate
{
	my $got = outcome(@_);
	return $got eq 'ok' ? 'ok' : ($got =~ /^([0-9A-Z]{5}):/ ? $1 : $got);
}

# group_of($coord, $stream_id): the group id of the node that holds the
# shard of $stream_id (es.streams)
sub group_of
{
	my ($coord, $stream) = @_;
	(my $q = $stream) =~ s/'/''/g;
	return $coord->safe_psql(
		'postgres', qq{
		SELECT p.groupid FROM pg_dist_placement AS p
		 WHERE p.shardid = get_shard_id_for_distribution_column('es.streams', '$q')});
}

1;
