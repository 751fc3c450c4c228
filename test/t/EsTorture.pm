
# Copyright (c) es_ext contributors
#
# test/t/EsTorture.pm
#
# Shared by the torture TAP tests (020_torture.pl, 021_crash_torture.pl):
# the load (pgbench scripts), the schema that records what the load did, a
# global-log subscriber, outbox consumers, and the checks of the invariants.
#
# The load goes through torture.append(), a PL/pgSQL wrapper around
# es.es_append that tags every event of a call with one uuid (data->>'tag')
# and records, in the appending transaction, either the result
# (torture.append_log) or the error with its SQLSTATE and constraint name
# (torture.conflict_log).  The error is swallowed (the append ran in a
# subtransaction, so it is rolled back like a savepoint), which lets the
# test check afterwards that the failed append wrote nothing and how the
# conflict was reported.  Lock order is fixed to avoid deadlocks (which
# would be the test's fault, not the extension's): cold streams in
# ascending number first, hot streams last.

package EsTorture;

use strict;
use warnings;

use IPC::Run;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);

# streams: 4 hot ones that every client fights over, 200 cold ones
our $HOT = 4;
our $COLD = 200;

# the objects of the optional pieces (fold: issue 3, outbox: issue 5)
sub has_fold
{
	my ($node) = @_;
	return $node->safe_psql('postgres',
		"SELECT to_regprocedure('es.es_fold_state(text,regprocedure,jsonb,bigint,timestamptz)') IS NOT NULL"
	) eq 't';
}

sub has_outbox
{
	my ($node) = @_;
	return $node->safe_psql('postgres',
		"SELECT to_regprocedure('es.es_outbox_claim(text,integer,interval)') IS NOT NULL"
	) eq 't';
}

# The schema of the torture: the wrapper, its logs, two projections (a row
# trigger and a statement trigger with a transition table), a reducer, and
# the outbox routes and groups when the outbox exists.
sub setup
{
	my ($node, %opt) = @_;

	$node->safe_psql(
		'postgres', q{
CREATE SCHEMA torture;
CREATE TABLE torture.append_log (
	tag			text NOT NULL,
	stream_id	text NOT NULL,
	expected	bigint,
	etype		text NOT NULL,
	n			integer NOT NULL,
	version		bigint NOT NULL,
	positions	bigint[] NOT NULL,
	iso			text NOT NULL);
CREATE TABLE torture.conflict_log (
	tag			text NOT NULL,
	stream_id	text NOT NULL,
	expected	bigint,
	etype		text NOT NULL,
	iso			text NOT NULL,
	sqlstate	text NOT NULL,
	constraint_name text,
	message		text,
	detail		text);

-- es_append, recording the result or the error (see the file header)
CREATE FUNCTION torture.append(stream text, expected bigint, etype text, n integer,
							   ids uuid DEFAULT NULL)
RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
	tag		text := COALESCE(ids::text, gen_random_uuid()::text);
	evs		jsonb;
	r		es.append_result;
	st		text;
	con		text;
	msg		text;
	det		text;
BEGIN
	SELECT jsonb_agg(jsonb_build_object('type', etype,
										'data', jsonb_build_object('tag', tag, 'i', i),
										'metadata', CASE WHEN i = 1 THEN jsonb_build_object('correlation_id', tag) END)
					 || CASE WHEN ids IS NULL THEN '{}'::jsonb
							 ELSE jsonb_build_object('id', md5(tag || i)::uuid) END
					 ORDER BY i)
	  INTO evs FROM generate_series(1, n) AS i;
	BEGIN
		SELECT * INTO r FROM es.es_append(stream, expected, evs);
	EXCEPTION WHEN OTHERS THEN
		GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE, con = CONSTRAINT_NAME,
			msg = MESSAGE_TEXT, det = PG_EXCEPTION_DETAIL;
		INSERT INTO torture.conflict_log
			VALUES (tag, stream, expected, etype, current_setting('transaction_isolation'),
					st, NULLIF(con, ''), msg, det);
		RETURN -1;
	END;
	INSERT INTO torture.append_log
		VALUES (tag, stream, expected, etype, n, r.version, r.positions,
				current_setting('transaction_isolation'));
	RETURN r.version;
END $$;

-- an idempotent retry returned what the first call returned
CREATE FUNCTION torture.check_idem(u uuid) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
	IF (SELECT count(*) <> 2 OR count(DISTINCT (version, positions)) <> 1
		  FROM torture.append_log WHERE tag = u::text) THEN
		RAISE EXCEPTION 'idempotent retry % returned another result', u;
	END IF;
END $$;

-- projection 1: a row trigger keeping per-stream counters
CREATE TABLE torture.proj_stream (
	stream_id		text PRIMARY KEY,
	n				bigint NOT NULL,
	last_version	bigint NOT NULL,
	sum_versions	numeric NOT NULL,
	kept			bigint NOT NULL);
CREATE FUNCTION torture.proj_stream_fn() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	INSERT INTO torture.proj_stream AS p
	VALUES (NEW.stream_id, 1, NEW.version, NEW.version, (NEW.event_type = 'Kept')::int)
	ON CONFLICT (stream_id) DO UPDATE
		SET n = p.n + 1,
			last_version = greatest(p.last_version, excluded.last_version),
			sum_versions = p.sum_versions + excluded.sum_versions,
			kept = p.kept + excluded.kept;
	RETURN NULL;
END $$;
CREATE TRIGGER torture_stream AFTER INSERT ON es.events
	FOR EACH ROW EXECUTE FUNCTION torture.proj_stream_fn();

-- projection 2: a statement trigger copying each batch from its transition table
CREATE TABLE torture.proj_log (
	stream_id		text NOT NULL,
	version			bigint NOT NULL,
	event_id		uuid NOT NULL,
	global_position	bigint NOT NULL,
	PRIMARY KEY (stream_id, version));
CREATE FUNCTION torture.proj_log_fn() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	INSERT INTO torture.proj_log
	SELECT stream_id, version, event_id, global_position FROM new_events;
	RETURN NULL;
END $$;
CREATE TRIGGER torture_log AFTER INSERT ON es.events
	REFERENCING NEW TABLE AS new_events
	FOR EACH STATEMENT EXECUTE FUNCTION torture.proj_log_fn();

-- a reducer: counts the events and sums their versions
CREATE FUNCTION torture.count_fold(state jsonb, e jsonb) RETURNS jsonb
LANGUAGE sql IMMUTABLE AS $$
	SELECT jsonb_build_object('n', (state->>'n')::bigint + 1,
							  'sum', (state->>'sum')::bigint + (e->>'version')::bigint)
$$;
});

	if (has_outbox($node))
	{
		# every event goes to the outbox; two consumer groups
		$node->safe_psql(
			'postgres', q{
SELECT es.es_outbox_route();
SELECT es.es_outbox_create_group('tg1');
SELECT es.es_outbox_create_group('tg2', max_attempts => 1000);
});
	}

	# the hot streams exist from the start (version 3), so that expected
	# versions 0, 1 and 2 are always stale for them
	$node->safe_psql('postgres',
		join('', map { "SELECT torture.append('hot-$_', 0, 'Seed', 3);\n" } 1 .. $HOT));
	return;
}


# The pgbench scripts: name@weight => script.  Every transaction takes its
# stream locks in the same order: cold streams by ascending number, then a
# hot stream.
sub scripts
{
	my %s = (
		# any-version appends: never conflict under READ COMMITTED
		'any_cold@6' => q{
\set s random(1, 200)
\set n random(1, 4)
SELECT torture.append('cold-' || :s, NULL, 'Any', :n);
},
		'any_hot@6' => q{
\set h random(1, 4)
\set n random(1, 3)
SELECT torture.append('hot-' || :h, NULL, 'Any', :n);
},
		# read the version, append at exactly that version: conflicts when
		# someone else appended in between
		'exact_hot@5' => q{
\set h random(1, 4)
BEGIN;
SELECT es.es_stream_version('hot-' || :h) AS v \gset
SELECT torture.append('hot-' || :h, :v, 'Exact', 1);
COMMIT;
},
		# exact on a cold stream and any on a hot one, committed late
		'exact_pair@3' => q{
\set s random(1, 200)
\set h random(1, 4)
\set ms random(0, 40)
BEGIN;
SELECT es.es_stream_version('cold-' || :s) AS v \gset
SELECT torture.append('cold-' || :s, :v, 'Exact', 2);
SELECT torture.append('hot-' || :h, NULL, 'Any', 1);
SELECT pg_sleep(:ms / 1000.0);
COMMIT;
},
		# always stale: the hot streams are at version 3 or more
		'stale@2' => q{
\set h random(1, 4)
\set k random(0, 2)
SELECT torture.append('hot-' || :h, :k, 'Stale', 1);
},
		# a new stream (expected 0) and "the stream must exist" (-1):
		# cold-201..250 never exist
		'new_stream@2' => q{
\set k random(1, 1000000000)
SELECT torture.append('new-' || :k, 0, 'Created', 2);
},
		'must_exist@1' => q{
\set s random(150, 250)
SELECT torture.append('cold-' || :s, -1, 'MustExist', 1);
},
		# aborted on purpose after a pause
		'abort@2' => q{
\set s random(1, 200)
\set h random(1, 4)
\set ms random(0, 30)
BEGIN;
SELECT torture.append('cold-' || :s, NULL, 'Doomed', 3);
SELECT torture.append('hot-' || :h, NULL, 'Doomed', 1);
SELECT pg_sleep(:ms / 1000.0);
ROLLBACK;
},
		# savepoints: one rolled back, one released
		'savepoint@3' => q{
\set s random(1, 100)
\set t random(101, 200)
\set h random(1, 4)
BEGIN;
SELECT torture.append('cold-' || :s, NULL, 'Kept', 1);
SAVEPOINT a;
SELECT torture.append('cold-' || :t, NULL, 'RolledBack', 2);
SELECT torture.append('hot-' || :h, NULL, 'RolledBack', 1);
ROLLBACK TO SAVEPOINT a;
SAVEPOINT b;
SELECT torture.append('cold-' || :t, NULL, 'Kept', 1);
RELEASE SAVEPOINT b;
COMMIT;
},
		# sleeps before its commit: a late commit for the subscriber
		'sleepy@2' => q{
\set s random(1, 200)
\set ms random(50, 250)
BEGIN;
SELECT torture.append('cold-' || :s, NULL, 'Late', 2);
SELECT pg_sleep(:ms / 1000.0);
COMMIT;
},
		# takes its transaction id early, appends later
		'early_xid@2' => q{
\set h random(1, 4)
\set ms random(10, 100)
BEGIN;
SELECT pg_current_xact_id();
SELECT pg_sleep(:ms / 1000.0);
SELECT torture.append('hot-' || :h, NULL, 'EarlyXid', 1);
COMMIT;
},
		# an idempotent retry, with a stale expected version
		'idem@2' => q{
\set s random(1, 200)
\set k :client_id * 1000000000000 + random(1, 999999999999)
SELECT torture.append('cold-' || :s, NULL, 'Idem', 2, md5('idem' || :k)::uuid);
SELECT torture.append('cold-' || :s, 0, 'Idem', 2, md5('idem' || :k)::uuid);
SELECT torture.check_idem(md5('idem' || :k)::uuid);
},
		# the same under SERIALIZABLE and REPEATABLE READ
		'ser_exact@3' => q{
\set h random(1, 4)
BEGIN ISOLATION LEVEL SERIALIZABLE;
SELECT es.es_stream_version('hot-' || :h) AS v \gset
SELECT torture.append('hot-' || :h, :v, 'SerExact', 1);
COMMIT;
},
		'ser_any@3' => q{
\set s random(1, 200)
\set n random(1, 3)
BEGIN ISOLATION LEVEL SERIALIZABLE;
SELECT torture.append('cold-' || :s, NULL, 'SerAny', :n);
COMMIT;
},
		'ser_savepoint@1' => q{
\set s random(1, 100)
\set t random(101, 200)
BEGIN ISOLATION LEVEL SERIALIZABLE;
SELECT torture.append('cold-' || :s, NULL, 'Kept', 1);
SAVEPOINT a;
SELECT torture.append('cold-' || :t, NULL, 'RolledBack', 1);
ROLLBACK TO SAVEPOINT a;
COMMIT;
},
		'rr_exact@1' => q{
\set s random(1, 200)
BEGIN ISOLATION LEVEL REPEATABLE READ;
SELECT es.es_stream_version('cold-' || :s) AS v \gset
SELECT pg_sleep(0.01);
SELECT torture.append('cold-' || :s, :v, 'RrExact', 1);
COMMIT;
});
	return \%s;
}

# Start pgbench in the background; returns a handle for finish_pgbench.
sub start_pgbench
{
	my ($node, $args, $name) = @_;
	my $scripts = scripts();
	my @files;
	for my $k (sort keys %$scripts)
	{
		my ($base, $weight) = split /@/, $k;
		my $file = $node->basedir . "/$name-$base.sql";
		open my $fh, '>', $file or die "could not write $file: $!";
		print $fh $scripts->{$k};
		close $fh;
		push @files, '-f', "$file\@$weight";
	}
	my $h = { out => '', err => '' };
	$h->{run} = IPC::Run::start(
		[
			'pgbench', '--no-vacuum', @$args, '-h', $node->host,
			'-p', $node->port, @files, 'postgres'
		],
		'>', \$h->{out}, '2>', \$h->{err});
	return $h;
}

# Wait for a background pgbench; returns (exit status, stdout, stderr).
sub finish_pgbench
{
	my ($h) = @_;
	$h->{run}->finish;
	return ($? >> 8, $h->{out}, $h->{err});
}

sub pgbench_running
{
	my ($h) = @_;
	$h->{run}->pump_nb;
	return $h->{run}->pumpable;
}

# Transactions and failures from pgbench's report.
sub pgbench_summary
{
	my ($out) = @_;
	my ($tx) = $out =~ /number of transactions actually processed: (\d+)/;
	my ($failed) = $out =~ /number of failed transactions: (\d+)/;
	my ($retried) = $out =~ /number of transactions retried: (\d+)/;
	my ($tps) = $out =~ /tps = ([\d.]+)/;
	return ($tx // 0, $failed // 0, $retried // 0, $tps // 0);
}

# ---------------------------------------------------------------------
# A lean psql session: like BackgroundPsql, without logging every result
# ---------------------------------------------------------------------
package EsTorture::Session;

use PostgreSQL::Test::Utils;

sub new
{
	my ($class, $node) = @_;
	my $self = bless { in => '', out => '', err => '', n => 0 }, $class;
	$self->{timer} = IPC::Run::timer($PostgreSQL::Test::Utils::timeout_default);
	$self->{run} = IPC::Run::start(
		[
			'psql', '-XAtq', '-v', 'ON_ERROR_STOP=0', '-d',
			$node->connstr('postgres'), '-f', '-'
		],
		'<', \$self->{in}, '>', \$self->{out}, '2>', \$self->{err},
		$self->{timer});
	return $self;
}

# Run SQL; returns (stdout, stderr).  Dies when psql dies (a crash).
sub query
{
	my ($self, $sql) = @_;
	my $banner = '__es_torture_' . $self->{n}++ . '__';
	$self->{timer}->start($PostgreSQL::Test::Utils::timeout_default);
	$self->{in} .= "$sql\n;\n\\echo $banner\n\\warn $banner\n";
	while (!($self->{out} =~ /$banner\n/ && $self->{err} =~ /$banner\n/))
	{
		die "psql session ended: $self->{err}" unless $self->{run}->pumpable;
		$self->{run}->pump;
	}
	my ($out, $err) = ($self->{out}, $self->{err});
	$out =~ s/$banner\n//;
	$err =~ s/$banner\n//;
	$self->{out} = $self->{err} = '';
	chomp $out;
	return ($out, $err);
}

# Run SQL that must succeed; returns its output.
sub query_safe
{
	my ($self, $sql) = @_;
	my ($out, $err) = $self->query($sql);
	die "query failed: $sql\n$err" if $err =~ /ERROR|FATAL|PANIC/;
	return $out;
}

sub quit
{
	my ($self) = @_;
	$self->{in} .= "\\q\n";
	eval { $self->{run}->finish; };
	return;
}

# Forget a session whose server went away.
sub kill_session
{
	my ($self) = @_;
	eval { $self->{run}->kill_kill; };
	return;
}

# ---------------------------------------------------------------------
# A subscriber: follows the global log with es_read_all and its cursor
# ---------------------------------------------------------------------
package EsTorture::Subscriber;

sub new
{
	my ($class, $node, %opt) = @_;
	my $self = bless {
		node => $node,
		category => $opt{category},
		page => $opt{page} // 500,
		cursor => undef,
		seen => {},        # event_id => times seen
		last => {},        # stream_id => last version seen
		rows => 0,
		reads => 0,
		problems => [],
	}, $class;
	$self->connect;
	return $self;
}

sub connect
{
	my ($self) = @_;
	$self->{session} = EsTorture::Session->new($self->{node});
	return;
}

sub problem
{
	my ($self, $msg) = @_;
	push @{ $self->{problems} }, $msg if @{ $self->{problems} } < 20;
	return;
}

# Read one page; returns the number of rows, or -1 when the read failed.
sub poll
{
	my ($self) = @_;
	my $cur = defined $self->{cursor} ? "'$self->{cursor}'::es.log_cursor" : 'NULL';
	my $cat = defined $self->{category} ? "'$self->{category}'" : 'NULL';
	my ($out, $err) = $self->{session}->query(
		"SELECT event_id, stream_id, version, event_type, log_cursor FROM es.es_read_all($cur, $self->{page}, $cat)"
	);
	$self->{reads}++;
	if ($err =~ /ERROR/)
	{
		$self->problem("es_read_all failed: $err");
		return -1;
	}
	my $n = 0;
	for my $line (split /\n/, $out)
	{
		my ($id, $stream, $version, $type, $cursor) = split /\|/, $line;
		$n++;
		$self->{rows}++;
		$self->problem("event $id seen twice") if $self->{seen}{$id}++;
		$self->problem("aborted event $id ($type) seen")
		  if $type eq 'Doomed' || $type eq 'RolledBack';
		my $expect = ($self->{last}{$stream} // 0) + 1;
		$self->problem("stream $stream: version $version seen after " . ($expect - 1))
		  if $version != $expect;
		$self->{last}{$stream} = $version;
		$self->problem("cursor went backwards: $cursor after $self->{cursor}")
		  if defined $self->{cursor} && !cursor_after($cursor, $self->{cursor});
		$self->{cursor} = $cursor;
	}
	return $n;
}

# (era, tx_id, position) of a cursor's text form
sub cursor_parts
{
	my ($c) = @_;
	return $c =~ /^\((\d+),(\d+),(\d+)\)$/;
}

sub cursor_after
{
	my ($a, $b) = @_;
	my @a = cursor_parts($a);
	my @b = cursor_parts($b);
	for my $i (0 .. 2)
	{
		return 1 if $a[$i] > $b[$i];
		return 0 if $a[$i] < $b[$i];
	}
	return 0;
}

# ---------------------------------------------------------------------
# An outbox consumer: claims, acks (and, if flaky, nacks or abandons)
# ---------------------------------------------------------------------
package EsTorture::Consumer;

sub new
{
	my ($class, $node, $group, %opt) = @_;
	my $self = bless {
		node => $node,
		group => $group,
		flaky => $opt{flaky} // 0,
		acked => {},       # event_id => times acked
		last => {},        # stream_id => last version acked
		acks => 0,
		nacks => 0,
		abandoned => 0,
		problems => [],
	}, $class;
	$self->connect;
	return $self;
}

sub connect
{
	my ($self) = @_;
	$self->{session} = EsTorture::Session->new($self->{node});
	return;
}

sub problem
{
	my ($self, $msg) = @_;
	push @{ $self->{problems} }, $msg if @{ $self->{problems} } < 20;
	return;
}

# Claim a batch (of up to $max messages, default 100) and settle it;
# returns the number of messages claimed.
sub poll
{
	my ($self, $max) = @_;
	my $g = $self->{group};
	my $abandon = $self->{flaky} && rand() < 0.03;
	my $lease = $abandon ? '300 milliseconds' : '60 seconds';
	$max //= 100;
	my ($out, $err) = $self->{session}->query(
		"SELECT lease, position, event_id, stream_id, version, event_type FROM es.es_outbox_claim('$g', $max, '$lease')"
	);
	if ($err =~ /ERROR/)
	{
		$self->problem("claim failed: $err");
		return -1;
	}
	return 0 if $out eq '';
	my @rows = map { [ split /\|/ ] } split /\n/, $out;
	if ($abandon)
	{
		# a consumer that died holding its lease: redelivered later
		$self->{abandoned} += @rows;
		return scalar @rows;
	}
	my $lease_id = $rows[0][0];

	# a flaky consumer fails one message of a claim now and then: it nacks
	# it and the rest of its stream in this claim (it processes each stream
	# in order)
	my (@ack, @nack, %failed);
	my $fail_at = ($self->{flaky} && rand() < 0.25) ? int(rand(@rows)) : -1;
	my $i = 0;
	for my $r (@rows)
	{
		my (undef, $pos, $id, $stream, $version, $type) = @$r;
		$self->problem("aborted event $id ($type) claimed")
		  if $type eq 'Doomed' || $type eq 'RolledBack';
		if ($failed{$stream} || $i++ == $fail_at)
		{
			$failed{$stream} = 1;
			push @nack, $pos;
			next;
		}
		push @ack, $pos;
		$self->problem("event $id acked twice") if $self->{acked}{$id}++;
		my $expect = ($self->{last}{$stream} // 0) + 1;
		$self->problem("group $g stream $stream: version $version delivered after " . ($expect - 1))
		  if $version != $expect;
		$self->{last}{$stream} = $version;
	}
	if (@ack)
	{
		my $n = $self->{session}->query_safe(
			"SELECT es.es_outbox_ack('$g', '$lease_id', '{" . join(',', @ack) . "}')");
		$self->problem("ack of " . scalar(@ack) . " messages acked $n") if $n != @ack;
		$self->{acks} += @ack;
	}
	if (@nack)
	{
		my $n = $self->{session}->query_safe(
			"SELECT es.es_outbox_nack('$g', '$lease_id', '{" . join(',', @nack) . "}', 'torture', '0')");
		$self->problem("nack of " . scalar(@nack) . " messages nacked $n") if $n != @nack;
		$self->{nacks} += @nack;
	}
	return scalar @rows;
}

# ---------------------------------------------------------------------
# The checks
# ---------------------------------------------------------------------
package EsTorture;

# The store's own invariants.
sub check_store
{
	my ($node, $label) = @_;

	is( $node->safe_psql(
			'postgres', q{
		SELECT count(*)
		  FROM es.streams AS s
		  FULL JOIN (SELECT stream_id, count(*) AS n, max(version) AS max_version
					   FROM es.events GROUP BY stream_id) AS e USING (stream_id)
		 WHERE s.version IS DISTINCT FROM e.max_version OR s.version IS DISTINCT FROM e.n}),
		'0',
		"$label: es.streams agrees with the events: version = max(version) = count per stream"
	);
	is( $node->safe_psql(
			'postgres', q{
		SELECT count(*)
		  FROM (SELECT version, row_number() OVER (PARTITION BY stream_id ORDER BY version) AS rn
				  FROM es.events) AS t
		 WHERE version <> rn}),
		'0',
		"$label: every stream's versions are 1..N without gap or duplicate");
	is( $node->safe_psql(
			'postgres', q{
		SELECT (SELECT count(*) - count(DISTINCT global_position) FROM es.events)
			 + (SELECT count(*) - count(DISTINCT (stream_id, event_id)) FROM es.events)}),
		'0',
		"$label: global positions and event ids are unique");
	is( $node->safe_psql(
			'postgres',
			"SELECT count(*) FROM es.events WHERE event_type IN ('Doomed', 'RolledBack')"),
		'0',
		"$label: no event of an aborted transaction or a rolled-back savepoint");
	return;
}

# What the wrapper recorded agrees with the store: every successful append
# is there in full at the versions and positions it returned (no partial
# batch), and every failed one wrote nothing.
sub check_appends
{
	my ($node, $label) = @_;

	is( $node->safe_psql(
			'postgres', q{
		WITH l AS (SELECT DISTINCT ON (tag) * FROM torture.append_log ORDER BY tag),
			 e AS (SELECT data->>'tag' AS tag, stream_id,
						  array_agg(version ORDER BY version) AS versions,
						  array_agg(global_position ORDER BY version) AS positions
					 FROM es.events WHERE data ? 'tag' GROUP BY 1, 2)
		SELECT count(*)
		  FROM l FULL JOIN e USING (tag)
		 WHERE l.tag IS NULL OR e.tag IS NULL
			OR e.stream_id <> l.stream_id
			OR e.versions <> ARRAY(SELECT generate_series(l.version - l.n + 1, l.version))
			OR e.positions <> l.positions}),
		'0',
		"$label: every recorded append is in the store in full, at the versions and positions it returned, and nothing else is"
	);
	is( $node->safe_psql(
			'postgres', q{
		SELECT count(*) FROM es.events AS e
		 WHERE e.data->>'tag' IN (SELECT tag FROM torture.conflict_log)}),
		'0',
		"$label: no failed append wrote an event");
	return;
}

# How conflicts were reported.
sub check_conflicts
{
	my ($node, $label) = @_;

	my $summary = $node->safe_psql(
		'postgres', q{
		SELECT iso || ' ' || sqlstate || ' ' || COALESCE(constraint_name, '-') || ': ' || count(*)
		  FROM torture.conflict_log GROUP BY iso, sqlstate, constraint_name ORDER BY 1});
	note "$label: errors of es_append by isolation level, SQLSTATE, constraint:\n$summary";

	is( $node->safe_psql(
			'postgres', q{
		SELECT string_agg(DISTINCT sqlstate || ' ' || message, '; ')
		  FROM torture.conflict_log
		 WHERE NOT (sqlstate = '40001'
					AND (constraint_name = 'es_expected_version'
						 OR (iso = 'serializable' AND constraint_name IS NULL
							 AND message LIKE 'could not serialize access due to read/write dependencies%')))}),
		'',
		"$label: every error of es_append was 40001 es_expected_version (or, under SERIALIZABLE, an SSI failure)"
	);
	is( $node->safe_psql(
			'postgres', q{
		SELECT count(*) FROM torture.conflict_log
		 WHERE expected IS NULL AND iso = 'read committed'}),
		'0',
		"$label: any-version appends never failed under READ COMMITTED");
	cmp_ok(
		$node->safe_psql(
			'postgres', q{
		SELECT count(*) FROM torture.conflict_log
		 WHERE constraint_name = 'es_expected_version' AND expected IS NOT NULL
		   AND detail LIKE 'Expected version%'}),
		'>', 0,
		"$label: expected-version conflicts happened and name the versions in the detail");
	is( $node->safe_psql(
			'postgres', q{
		SELECT (SELECT count(*) FROM torture.append_log WHERE etype = 'Stale')
			 + (SELECT count(*) FROM torture.append_log WHERE etype = 'MustExist'
				   AND stream_id IN (SELECT 'cold-' || i FROM generate_series(201, 250) AS i))}),
		'0',
		"$label: appends with a stale expected version never succeeded");
	return;
}

# The subscriber saw every committed event exactly once.
sub check_subscriber
{
	my ($node, $sub, $label) = @_;
	my $where = defined $sub->{category} ? "WHERE category = '$sub->{category}'" : '';
	my @ids = split /\n/,
	  $node->safe_psql('postgres', "SELECT event_id FROM es.events $where");
	my %store = map { $_ => 1 } @ids;
	my @missing = grep { !$sub->{seen}{$_} } @ids;
	my @extra = grep { !$store{$_} } keys %{ $sub->{seen} };
	my @twice = grep { $sub->{seen}{$_} > 1 } keys %{ $sub->{seen} };
	my $what = defined $sub->{category} ? "category $sub->{category}" : 'the whole log';
	is( join(', ', scalar(@missing) . ' missed', scalar(@extra) . ' not in the store',
			scalar(@twice) . ' seen twice'),
		'0 missed, 0 not in the store, 0 seen twice',
		"$label: a subscriber of $what saw each of the " . scalar(@ids)
		  . " committed events exactly once");
	is(join("\n", @{ $sub->{problems} }), '',
		"$label: subscriber of $what: each stream in version order, cursor increasing, nothing aborted");
	return;
}

# Drain outbox consumers, then check: each committed event acked exactly
# once per group, in version order per stream; nothing else.
sub drain_consumers
{
	my ($consumers, $node) = @_;
	# statistics taken while the queue was small make es_outbox_claim's
	# plan quadratic in the backlog (seconds per claim; reported): give
	# the planner fresh ones, as autovacuum would within a minute
	$node->safe_psql('postgres', 'ANALYZE es.outbox, es.outbox_deliveries');
	my $deadline = time + 60;
	my ($rounds, $rows, $t0) = (0, 0, time);
	while (time < $deadline)
	{
		my $n = 0;
		$n += $_->poll(1000) for @$consumers;
		$rounds++;
		$rows += $n;
		last
		  if $n == 0
		  && $node->safe_psql('postgres', 'SELECT count(*) FROM es.outbox_deliveries') eq '0';
		usleep(50_000) if $n == 0;
	}
	note sprintf('drained the consumers in %d rounds, %d messages, %.1fs', $rounds, $rows, time - $t0);
	return;
}

sub check_consumers
{
	my ($node, $consumers, $label) = @_;

	is( $node->safe_psql(
			'postgres', q{
		SELECT count(*)
		  FROM es.events AS e FULL JOIN es.outbox AS o ON o.id = e.event_id AND o.aggregateid = e.stream_id
		 WHERE e.event_id IS NULL OR o.id IS NULL
			OR (o.stream_version, o.global_position, o.type) IS DISTINCT FROM (e.version, e.global_position, e.event_type)}),
		'0',
		"$label: the outbox holds exactly the committed events (one row each, same version, position and type)"
	);
	my @ids = split /\n/, $node->safe_psql('postgres', 'SELECT event_id FROM es.events');
	for my $c (@$consumers)
	{
		my @missing = grep { !$c->{acked}{$_} } @ids;
		my @twice = grep { $c->{acked}{$_} > 1 } keys %{ $c->{acked} };
		my %store = map { $_ => 1 } @ids;
		my @extra = grep { !$store{$_} } keys %{ $c->{acked} };
		is( join(', ', scalar(@missing) . ' missed', scalar(@extra) . ' not in the store',
				scalar(@twice) . ' twice'),
			'0 missed, 0 not in the store, 0 twice',
			"$label: group $c->{group} had each of the " . scalar(@ids)
			  . " committed events delivered exactly once ($c->{acks} acks, $c->{nacks} nacks, $c->{abandoned} abandoned)"
		);
		is(join("\n", @{ $c->{problems} }), '',
			"$label: group $c->{group}: each stream delivered in version order, nothing aborted");
	}
	is( $node->safe_psql(
			'postgres',
			'SELECT (SELECT count(*) FROM es.outbox_deliveries) + (SELECT count(*) FROM es.outbox_dead)'),
		'0',
		"$label: no delivery left, no dead letter");
	return;
}

# Both projections equal what the events say, and a rebuild of each gives
# the same read model.
sub check_projections
{
	my ($node, $label) = @_;
	my $derived_stream = q{
		SELECT stream_id, count(*)::bigint, max(version), sum(version)::numeric,
			   count(*) FILTER (WHERE event_type = 'Kept')::bigint FROM es.events GROUP BY 1};
	my $derived_log = 'SELECT stream_id, version, event_id, global_position FROM es.events';
	my $diff = sub {
		my ($a, $b) = @_;
		return $node->safe_psql('postgres',
			"SELECT (SELECT count(*) FROM (($a) EXCEPT ($b)) x) + (SELECT count(*) FROM (($b) EXCEPT ($a)) y)"
		);
	};
	is($diff->('SELECT * FROM torture.proj_stream', $derived_stream), '0',
		"$label: the row projection (inline) equals the events");
	is($diff->('SELECT * FROM torture.proj_log', $derived_log), '0',
		"$label: the statement projection with a transition table (inline) equals the events");

	$node->safe_psql(
		'postgres', q{
		CREATE TABLE torture.inline_stream AS SELECT * FROM torture.proj_stream;
		CREATE TABLE torture.inline_log AS SELECT * FROM torture.proj_log;
		SET client_min_messages = warning;
		CALL es.es_rebuild_projection('torture_stream', 'TRUNCATE torture.proj_stream', 500);
		CALL es.es_rebuild_projection('torture_log', 'TRUNCATE torture.proj_log', 333);
	});
	is( $diff->('SELECT * FROM torture.proj_stream',
			'SELECT * FROM torture.inline_stream'),
		'0',
		"$label: a rebuild of the row projection equals the inline one");
	is($diff->('SELECT * FROM torture.proj_log', 'SELECT * FROM torture.inline_log'),
		'0', "$label: a rebuild of the statement projection equals the inline one");
	$node->safe_psql('postgres',
		'DROP TABLE torture.inline_stream, torture.inline_log');
	return;
}

# Folds agree with the store (es_fold_state over every hot stream and some
# cold ones, es_fold_agg over all of them).
sub check_folds
{
	my ($node, $label) = @_;
	is( $node->safe_psql(
			'postgres', q{
		SELECT count(*)
		  FROM es.streams AS s
		 CROSS JOIN LATERAL es.es_fold_state(s.stream_id, 'torture.count_fold(jsonb,jsonb)',
											 '{"n": 0, "sum": 0}') AS f
		 WHERE f.version <> s.version OR (f.state->>'n')::bigint <> s.version
			OR (f.state->>'sum')::numeric <> s.version * (s.version + 1) / 2}),
		'0',
		"$label: es_fold_state of every stream equals its events (with automatic snapshots)");
	is( $node->safe_psql(
			'postgres', q{
		SELECT count(*)
		  FROM (SELECT e.stream_id,
					   es.es_fold_agg('torture.count_fold(jsonb,jsonb)', '{"n": 0, "sum": 0}', e ORDER BY e.version) AS st
				  FROM es.events AS e GROUP BY e.stream_id) AS a
		  JOIN es.streams AS s USING (stream_id)
		 WHERE (a.st->>'n')::bigint <> s.version}),
		'0',
		"$label: es_fold_agg over all streams equals their versions");
	return;
}

# A fold under load sees a whole prefix of the stream: its version, event
# count and version sum agree.  Returns a problem or ''.
sub fold_probe
{
	my ($session, $stream) = @_;
	my ($out, $err) = $session->query(
		"SELECT f.version, f.state->>'n', f.state->>'sum', COALESCE(f.snapshot_version, 0), s.version
		   FROM es.es_fold_state('$stream', 'torture.count_fold(jsonb,jsonb)', '{\"n\": 0, \"sum\": 0}') AS f,
				es.streams AS s WHERE s.stream_id = '$stream'");
	return "fold of $stream failed: $err" if $err =~ /ERROR/;
	my ($v, $n, $sum, $snap, $sv) = split /\|/, $out;
	return "fold of $stream: version $v, $n events, sum $sum, stream at $sv"
	  if $v != $n || $sum != $n * ($n + 1) / 2 || $v != $sv;
	return '';
}

# The server log holds no crash, no PANIC, no failed assertion.
sub check_log
{
	my ($node, $label, $offset) = @_;
	my $log = slurp_file($node->logfile, $offset // 0);
	my @bad = $log =~ /^.*(?:terminated by signal|PANIC:|TRAP:|server process .* was terminated).*$/mg;
	is(join("\n", @bad[0 .. ($#bad < 4 ? $#bad : 4)]), '',
		"$label: no backend crashed, no PANIC in the server log");
	return;
}

1;
