
# Copyright (c) es_ext contributors
#
# test/t/EsRelayTest.pm
#
# Helpers shared by the es_relay TAP tests (031_outbox_relay.pl,
# 033_relay_pgbouncer.pl): polling for a condition, and reading the JSON
# lines a relay writes.

package EsRelayTest;

use strict;
use warnings;

use Exporter 'import';
use JSON::PP;
use Time::HiRes qw(usleep time);

our @EXPORT_OK = qw(wait_until read_lines);

# Poll $cond every 200 ms until it returns true (1) or $timeout seconds
# (default 90) pass (0).
sub wait_until
{
	my ($cond, $timeout) = @_;
	my $deadline = time + ($timeout // 90);
	while (time < $deadline)
	{
		return 1 if $cond->();
		usleep(200_000);
	}
	return 0;
}

# The rows of a relay's output file, one decoded JSON object per line; none
# when the file does not exist yet.
sub read_lines
{
	my ($file) = @_;
	my @rows;
	return @rows unless -e $file;
	open my $fh, '<', $file or die "could not open $file: $!";
	while (my $line = <$fh>)
	{
		chomp $line;
		push @rows, decode_json($line);
	}
	close $fh;
	return @rows;
}

1;
