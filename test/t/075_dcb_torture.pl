
# Copyright (c) es_ext contributors
#
# test/t/075_dcb_torture.pl
#
# Torture of the conditional append (issue 17, Dynamic Consistency Boundary).
# Ten pgbench clients enforce cross-stream rules with es_read_query and
# es_append(..., fail_if_events_match, after), the way the README tells an
# application to:
#
#   - "at most 4 students per course" ($CAP): read the course's Enrolled and
#     Unenrolled events (types + tag course:cX), and when fewer than 4
#     students are enrolled (and the student is not), append an Enrolled
#     event tagged course:cX and student:sY to the student's stream with the
#     condition = the same query, after = the last log_cursor read (NULL when
#     none), a random pause between the read and the append widening the race;
#   - unenrollments the same way (a student the read found enrolled);
#   - "a username is claimed once": the condition of an empty read (after
#     NULL: no matching event may exist at all);
#   - in one transaction, one client enrolls its own student in two courses,
#     the second condition also naming the client's own Enrolled events: it
#     matches the transaction's own first event, which must never conflict;
#   - unconditional noise: CourseViewed events tagged with a course (a type
#     outside the conditions: must never cause a refusal), events with
#     unrelated tags and untagged events, through the 3- and 5-argument calls.
#
# Every attempt records, in its own transaction, what it read, the position
# it gave and the outcome; a refusal records the error (caught in PL/pgSQL).
# A READ COMMITTED phase, then REPEATABLE READ and SERIALIZABLE phases.  At
# the end:
#
#   - no course ever had more than 4 students, at any point of the log
#     (running count in log order), and no student was enrolled or
#     unenrolled twice in a row; no username was claimed twice;
#   - attempts were refused and attempts succeeded (the race was run);
#   - every error was SQLSTATE 40001 with constraint es_append_condition (or,
#     under SERIALIZABLE, PostgreSQL's own serialization failure, the
#     condition's report of one, or es_append's es_expected_version report of
#     one for the new stream), and every other refusal was a real conflict:
#     the event its detail names is stored, matches the condition, has a log
#     cursor greater than the attempt's `after`, and was written by another
#     transaction; independently of the detail, such an event exists;
#   - a refused attempt wrote nothing, a successful one is stored at the
#     position it returned, and es_read_query returns exactly the events
#     es.events holds for each course (nothing lost, nothing extra).
#
# ES_DCB_TORTURE_SECONDS (default 30) sets the READ COMMITTED phase; the
# REPEATABLE READ phase runs for half of it, the SERIALIZABLE phase a third.

use strict;
use warnings;

use FindBin;
use lib $FindBin::RealBin;

use EsTorture;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $seconds = $ENV{ES_DCB_TORTURE_SECONDS} // 30;
my $clients = 10;
my $COURSES = 12;
my $CAP = 4;
my $STUDENTS = 60;
my $USERNAMES = 150;

my $node = PostgreSQL::Test::Cluster->new('es_dcb_torture');
$node->init;
$node->append_conf(
	'postgresql.conf', qq{
max_connections = 40
log_statement = none
log_min_duration_statement = -1
});
$node->start;
$node->safe_psql('postgres', 'CREATE EXTENSION es_ext');

$node->safe_psql(
	'postgres', q{
CREATE SCHEMA dcb;

-- one row per attempt, written in the attempt's transaction
CREATE TABLE dcb.attempts (
	id			bigint GENERATED ALWAYS AS IDENTITY,
	kind		text NOT NULL,		-- enroll, unenroll, claim, pair
	course		integer,
	student		integer,
	event_id	uuid,
	stream_id	text,
	query		jsonb,
	after		es.log_cursor,
	seen		integer,			-- students enrolled (claims: events) in the read
	outcome		text NOT NULL,		-- ok, refused, full, already, empty, taken
	xact		xid8 NOT NULL,
	iso			text NOT NULL,
	token		es.log_cursor,
	sqlstate	text,
	constraint_name text,
	message		text,
	detail		text);

-- the condition of a course: its Enrolled and Unenrolled events; with own,
-- also the Enrolled events tagged own (a tag only one client writes)
CREATE FUNCTION dcb.course_query(c integer, own text DEFAULT NULL)
RETURNS jsonb LANGUAGE sql IMMUTABLE AS $$
	SELECT jsonb_build_array(jsonb_build_object(
			   'types', jsonb_build_array('Enrolled', 'Unenrolled'),
			   'tags', jsonb_build_array('course:c' || c)))
		   || CASE WHEN own IS NULL THEN '[]'::jsonb
				   ELSE jsonb_build_array(jsonb_build_object(
						'types', jsonb_build_array('Enrolled'),
						'tags', jsonb_build_array(own))) END
$$;

-- does an event match a query (items OR'ed, types OR'ed, tags AND'ed)?
CREATE FUNCTION dcb.matches(q jsonb, etype text, etags text[])
RETURNS boolean LANGUAGE sql IMMUTABLE AS $$
	SELECT EXISTS (
		SELECT FROM jsonb_array_elements(q) AS i
		 WHERE (NOT i ? 'types' OR i->'types' ? etype)
		   AND (NOT i ? 'tags'
				OR COALESCE(etags, '{}') @> ARRAY(SELECT jsonb_array_elements_text(i->'tags'))))
$$;

-- One read of a course, in one statement (one snapshot): how many students
-- are enrolled, whether s is, one enrolled student at random, and the
-- position to give to the condition (the greatest log_cursor read).
CREATE FUNCTION dcb.course_state(q jsonb, c integer, s integer,
								 OUT n integer, OUT mine integer, OUT pick integer,
								 OUT after es.log_cursor)
LANGUAGE sql AS $$
	WITH r AS MATERIALIZED (SELECT * FROM es.es_read_query(q)),
	st AS (SELECT substr(t, 10)::integer AS s,
				  sum(CASE r.event_type WHEN 'Enrolled' THEN 1 ELSE -1 END) AS net
			 FROM r, unnest(r.tags) AS t
			WHERE r.tags @> ARRAY['course:c' || c] AND t LIKE 'student:s%'
			GROUP BY 1)
	SELECT (SELECT count(*) FROM st WHERE net > 0)::integer,
		   (SELECT COALESCE(max(net), 0) FROM st WHERE st.s = course_state.s)::integer,
		   (SELECT st.s FROM st WHERE net > 0 ORDER BY random() LIMIT 1),
		   (SELECT r.log_cursor FROM r ORDER BY r.log_cursor DESC LIMIT 1)
$$;

-- the conditional append of one event, recording the result or the error
CREATE FUNCTION dcb.try_append(kind text, c integer, s integer, stream text,
							   etype text, tags jsonb, q jsonb, aft es.log_cursor,
							   seen integer)
RETURNS text LANGUAGE plpgsql AS $$
DECLARE
	id		uuid := gen_random_uuid();
	res		es.append_result;
	e_state	text;
	e_con	text;
	e_msg	text;
	e_det	text;
BEGIN
	BEGIN
		SELECT * INTO res
		  FROM es.es_append(stream, NULL,
							jsonb_build_array(jsonb_build_object(
								'id', id, 'type', etype, 'tags', tags,
								'data', jsonb_build_object('course', c, 'student', s))),
							q, aft);
	EXCEPTION WHEN OTHERS THEN
		GET STACKED DIAGNOSTICS e_state = RETURNED_SQLSTATE, e_con = CONSTRAINT_NAME,
			e_msg = MESSAGE_TEXT, e_det = PG_EXCEPTION_DETAIL;
		INSERT INTO dcb.attempts (kind, course, student, event_id, stream_id, query, after,
								  seen, outcome, xact, iso, sqlstate, constraint_name,
								  message, detail)
		VALUES (kind, c, s, id, stream, q, aft, seen, 'refused', pg_current_xact_id(),
				current_setting('transaction_isolation'), e_state, NULLIF(e_con, ''), e_msg, e_det);
		RETURN 'refused';
	END;
	INSERT INTO dcb.attempts (kind, course, student, event_id, stream_id, query, after,
							  seen, outcome, xact, iso, token)
	VALUES (kind, c, s, id, stream, q, aft, seen, 'ok', pg_current_xact_id(),
			current_setting('transaction_isolation'), res.token);
	RETURN 'ok';
END $$;

CREATE FUNCTION dcb.note(kind text, c integer, s integer, q jsonb, aft es.log_cursor,
						 seen integer, outcome text)
RETURNS text LANGUAGE sql AS $$
	INSERT INTO dcb.attempts (kind, course, student, query, after, seen, outcome, xact, iso)
	VALUES (kind, c, s, q, aft, seen, outcome, pg_current_xact_id(),
			current_setting('transaction_isolation'));
	SELECT outcome;
$$;

-- the stream of an enrollment: the student's under READ COMMITTED, a new
-- one otherwise (under REPEATABLE READ a concurrent append to the same
-- stream is a serialization failure of its own, not a condition's refusal)
CREATE FUNCTION dcb.stream_for(s integer, stream text)
RETURNS text LANGUAGE sql AS $$
	SELECT COALESCE(stream,
					CASE current_setting('transaction_isolation')
						WHEN 'read committed' THEN 'student-s' || s
						ELSE 'rr-' || gen_random_uuid() END)
$$;

-- "at most cap students per course".  With stream (the pair script): the
-- events also carry the tag own:<stream>, and with with_own the condition
-- also names the Enrolled events tagged so -- the transaction's own first
-- enrollment.  (A tag only this client writes: a condition naming a tag the
-- transaction's earlier append wrote upgrades that append's SHARE lock to
-- EXCLUSIVE, which deadlocks against another writer of the tag waiting for
-- a lock the transaction holds; see the report of issue 17.)
CREATE FUNCTION dcb.enroll(c integer, s integer, cap integer, ms integer,
						   stream text DEFAULT NULL, with_own boolean DEFAULT false)
RETURNS text LANGUAGE plpgsql AS $$
DECLARE
	q		jsonb := dcb.course_query(c, CASE WHEN with_own THEN 'own:' || stream END);
	k		text := CASE WHEN stream IS NULL THEN 'enroll' ELSE 'pair' END;
	st		record;
BEGIN
	SELECT * INTO st FROM dcb.course_state(q, c, s);
	IF st.n >= cap THEN
		RETURN dcb.note(k, c, s, q, st.after, st.n, 'full');
	ELSIF st.mine > 0 THEN
		RETURN dcb.note(k, c, s, q, st.after, st.n, 'already');
	END IF;
	PERFORM pg_sleep(ms / 1000.0);
	RETURN dcb.try_append(k, c, s, dcb.stream_for(s, stream), 'Enrolled',
						  jsonb_build_array('course:c' || c, 'student:s' || s)
						  || CASE WHEN stream IS NULL THEN '[]'::jsonb
								  ELSE jsonb_build_array('own:' || stream) END,
						  q, st.after, st.n);
END $$;

CREATE FUNCTION dcb.unenroll(c integer, ms integer)
RETURNS text LANGUAGE plpgsql AS $$
DECLARE
	q		jsonb := dcb.course_query(c);
	st		record;
BEGIN
	SELECT * INTO st FROM dcb.course_state(q, c, NULL);
	IF st.pick IS NULL THEN
		RETURN dcb.note('unenroll', c, NULL, q, st.after, st.n, 'empty');
	END IF;
	PERFORM pg_sleep(ms / 1000.0);
	RETURN dcb.try_append('unenroll', c, st.pick, dcb.stream_for(st.pick, NULL), 'Unenrolled',
						  jsonb_build_array('course:c' || c, 'student:s' || st.pick),
						  q, st.after, st.n);
END $$;

-- "a username is claimed once": no matching event may exist at all
CREATE FUNCTION dcb.claim(u integer, ms integer)
RETURNS text LANGUAGE plpgsql AS $$
DECLARE
	q		jsonb := jsonb_build_array(jsonb_build_object(
					 'types', jsonb_build_array('UsernameClaimed'),
					 'tags', jsonb_build_array('username:u' || u)));
	st		record;
BEGIN
	SELECT count(*)::integer AS n, (array_agg(r.log_cursor ORDER BY r.log_cursor DESC))[1] AS after
	  INTO st FROM es.es_read_query(q) AS r;
	IF st.n > 0 THEN
		RETURN dcb.note('claim', NULL, u, q, st.after, st.n, 'taken');
	END IF;
	PERFORM pg_sleep(ms / 1000.0);
	RETURN dcb.try_append('claim', NULL, u, 'user-' || gen_random_uuid(), 'UsernameClaimed',
						  jsonb_build_array('username:u' || u), q, NULL, 0);
END $$;
});

# The pgbench scripts, name@weight => script; $phase keeps file names unique.
sub scripts
{
	my ($phase) = @_;
	return {
		"${phase}_enroll\@10" => qq{
\\set cid random(1, $COURSES)
\\set sid random(1, $STUDENTS)
\\set ms random(0, 15)
SELECT dcb.enroll(:cid, :sid, $CAP, :ms);
},
		"${phase}_unenroll\@4" => qq{
\\set cid random(1, $COURSES)
\\set ms random(0, 10)
SELECT dcb.unenroll(:cid, :ms);
},
		"${phase}_claim\@2" => qq{
\\set u random(1, $USERNAMES)
\\set ms random(0, 10)
SELECT dcb.claim(:u, :ms);
},
		# the client's own student (no other client enrolls it) in two
		# courses, in ascending order (no deadlock between pairs); the second
		# condition matches the first enrollment
		"${phase}_pair\@2" => qq{
\\set c1 random(1, $COURSES - 1)
\\set c2 random(:c1 + 1, $COURSES)
BEGIN;
SELECT dcb.enroll(:c1, 10000 + :client_id, $CAP, 0, 'pair-' || :client_id);
SELECT dcb.enroll(:c2, 10000 + :client_id, $CAP, 5, 'pair-' || :client_id, true);
COMMIT;
},
		# noise: a type outside every condition, tagged with a course (the
		# noise streams are the client's own: under REPEATABLE READ two
		# appends to one stream are a serialization failure).  pgbench
		# replaces :name even inside quotes (so 'course:' || 'c').
		"${phase}_view\@3" => qq{
\\set cid random(1, $COURSES)
\\set v random(1, 50)
SELECT es.es_append('viewer-' || :client_id || '-' || :v, NULL,
	jsonb_build_array(jsonb_build_object('type', 'CourseViewed', 'data', '{}'::jsonb,
		'tags', jsonb_build_array('course:' || 'c' || :cid))));
},
		# noise: unrelated tags (5-argument call, no condition), and untagged
		"${phase}_misc\@3" => qq{
\\set m random(1, 500)
\\set k random(0, 3)
SELECT es.es_append('misc-' || :client_id || '-' || :m, NULL,
	jsonb_build_array(jsonb_build_object('type', 'Noted', 'data', '{}'::jsonb,
		'tags', (SELECT jsonb_agg('misc:' || (:m + i)) FROM generate_series(1, :k) AS i))),
	NULL, NULL);
SELECT es.es_append('plain-' || :client_id || '-' || :m, NULL,
	jsonb_build_array(jsonb_build_object('type', 'Noted', 'data', '{}'::jsonb)));
},
	};
}

my $no_abort = qr/^((?!aborted|ERROR).)*$/s;
$node->pgbench(
	"--no-vacuum --client=$clients --jobs=2 --time=$seconds",
	0,
	[ qr/actually processed: \d+/, qr/number of failed transactions: 0 / ],
	[$no_abort],
	"pgbench: $clients clients for ${seconds}s under READ COMMITTED, no client aborted",
	scripts('rc'));
{
	local $ENV{PGOPTIONS} = '-c default_transaction_isolation=repeatable\ read';
	my $rr = int(($seconds + 1) / 2);
	$node->pgbench(
		"--no-vacuum --client=$clients --jobs=2 --time=$rr",
		0,
		[ qr/actually processed: \d+/, qr/number of failed transactions: 0 / ],
		[$no_abort],
		"pgbench: $clients clients for ${rr}s under REPEATABLE READ, no client aborted",
		scripts('rr'));
}
{
	# SSI's own serialization failures end transactions at commit too:
	# pgbench retries them (the attempts of a failed try are rolled back)
	local $ENV{PGOPTIONS} = '-c default_transaction_isolation=serializable';
	my $sr = int(($seconds + 2) / 3);
	$node->pgbench(
		"--no-vacuum --client=$clients --jobs=2 --time=$sr --max-tries=50",
		0,
		[qr/actually processed: \d+/],
		[$no_abort],
		"pgbench: $clients clients for ${sr}s under SERIALIZABLE, no client aborted",
		scripts('sr'));
}

note "attempts by isolation level, kind and outcome:\n"
  . $node->safe_psql(
	'postgres', q{
	SELECT iso || ' ' || kind || ' ' || outcome || ': ' || count(*)
	  FROM dcb.attempts GROUP BY iso, kind, outcome ORDER BY 1});

# --- the race was run ---------------------------------------------------
for my $iso ('read committed', 'repeatable read', 'serializable')
{
	my ($ok, $refused) = split /\|/, $node->safe_psql(
		'postgres', qq{
		SELECT count(*) FILTER (WHERE outcome = 'ok'), count(*) FILTER (WHERE outcome = 'refused')
		  FROM dcb.attempts WHERE iso = '$iso' AND kind IN ('enroll', 'unenroll')});
	cmp_ok($ok, '>', 0, "$iso: conditional enrollments and unenrollments succeeded ($ok)");
	cmp_ok($refused, '>', 0, "$iso: conditional enrollments and unenrollments were refused ($refused)");
}
cmp_ok(
	$node->safe_psql(
		'postgres', "SELECT count(*) FROM dcb.attempts WHERE kind = 'pair' AND outcome = 'ok'"),
	'>', 0,
	'a condition matching the transaction\'s own event let the append through');

# --- every error was a refusal of the condition -------------------------
note "errors of the conditional appends by isolation level, constraint and detail:\n"
  . $node->safe_psql(
	'postgres', q{
	SELECT k || ': ' || count(*)
	  FROM (SELECT iso || ' ' || sqlstate || ' ' || COALESCE(constraint_name, '-') || ' '
				   || CASE WHEN detail LIKE 'Event %' THEN 'names an event'
						   ELSE COALESCE(left(detail, 50), left(message, 50)) END AS k
			  FROM dcb.attempts WHERE outcome = 'refused') AS a
	 GROUP BY k ORDER BY k});
is( $node->safe_psql(
		'postgres', q{
	SELECT string_agg(DISTINCT sqlstate || ' ' || COALESCE(constraint_name, '-') || ' ' || message, '; ')
	  FROM dcb.attempts
	 WHERE outcome = 'refused'
	   AND NOT (sqlstate = '40001' AND constraint_name = 'es_append_condition')
	   AND NOT (iso = 'serializable' AND sqlstate = '40001'
				AND (constraint_name = 'es_expected_version'
					 OR (constraint_name IS NULL AND message LIKE 'could not serialize access%')))}),
	'',
	'every error of a conditional append was 40001 with constraint es_append_condition '
	  . '(or, under SERIALIZABLE, an SSI failure)');
is( $node->safe_psql(
		'postgres', q{
	SELECT count(*) FROM dcb.attempts
	 WHERE outcome = 'refused' AND constraint_name = 'es_append_condition'
	   AND message NOT LIKE 'append condition failed for stream "' || stream_id || '"'}),
	'0',
	'the message names the stream of the refused append');

# --- every refusal was a real conflict ----------------------------------
# The conflicting event the detail names: its stream and version, and its
# log cursor "(era,tx_id,global_position)".
$node->safe_psql(
	'postgres', q{
CREATE TABLE dcb.refusals AS
SELECT a.id, a.kind, a.course, a.query, a.after, a.xact, a.detail,
	   (regexp_match(a.detail, 'stream "([^"]+)"'))[1] AS c_stream,
	   (regexp_match(a.detail, '^Event (\d+) of stream'))[1]::bigint AS c_version,
	   (regexp_match(a.detail, '\((\d+),(\d+),(\d+)\)'))[1:3] AS c_cursor,
	   ARRAY(SELECT jsonb_array_elements_text(i->'tags')
			   FROM jsonb_array_elements(a.query) AS i) AS c_tags
  FROM dcb.attempts AS a
 WHERE a.outcome = 'refused' AND a.constraint_name = 'es_append_condition'
   AND a.detail NOT LIKE 'Serializable isolation found a read/write dependency%';
CREATE INDEX ON dcb.attempts (event_id);
ANALYZE dcb.refusals, dcb.attempts});

is( $node->safe_psql(
		'postgres', q{
	SELECT string_agg(DISTINCT detail, ' | ') FROM dcb.refusals
	 WHERE c_stream IS NULL OR c_version IS NULL OR c_cursor IS NULL}),
	'',
	'every refusal\'s detail names the conflicting event: version, stream, log cursor');

is( $node->safe_psql(
		'postgres', q{
	SELECT count(*) || ' refusals; the first: ' || min(f.detail)
	  FROM dcb.refusals AS f
	  LEFT JOIN es.events AS e ON e.stream_id = f.c_stream AND e.version = f.c_version
	 WHERE e.stream_id IS NULL
		OR ARRAY[e.era::text, e.tx_id::text, e.global_position::text] <> f.c_cursor
		OR NOT dcb.matches(f.query, e.event_type, e.tags)
		OR (f.after IS NOT NULL AND (e.era, e.tx_id, e.global_position) <= f.after)
		OR EXISTS (SELECT FROM dcb.attempts AS o
					WHERE o.event_id = e.event_id AND o.xact = f.xact)
	HAVING count(*) > 0}),
	'',
	'every refusal names a stored event that matches the condition, lies after the position '
	  . 'given, and was written by another transaction');

is( $node->safe_psql(
		'postgres', q{
	SELECT count(*) FROM dcb.refusals AS f
	 WHERE NOT EXISTS (
		SELECT FROM es.events AS e
		 WHERE e.tags && f.c_tags	-- every condition here names tags
		   AND dcb.matches(f.query, e.event_type, e.tags)
		   AND (f.after IS NULL OR (e.era, e.tx_id, e.global_position) > f.after)
		   AND NOT EXISTS (SELECT FROM dcb.attempts AS o
							WHERE o.event_id = e.event_id AND o.xact = f.xact))}),
	'0',
	'for every refusal, another transaction committed a matching event after the position given');

is( $node->safe_psql(
		'postgres', q{
	SELECT count(*) FROM dcb.refusals AS f JOIN es.events AS e
	  ON e.stream_id = f.c_stream AND e.version = f.c_version
	 WHERE e.event_type = 'CourseViewed' OR e.tags IS NULL OR e.tags[1] LIKE 'misc:%'}),
	'0',
	'no event outside the conditions (other types, other tags, no tags) caused a refusal');
cmp_ok(
	$node->safe_psql(
		'postgres', q{
	SELECT count(*) FROM es.events
	 WHERE event_type = 'CourseViewed' AND tags[1] ~ '^course:c[0-9]+$'}),
	'>', 0, 'the noise included events of another type tagged with a course');

# --- what was written ----------------------------------------------------
is( $node->safe_psql(
		'postgres', q{
	SELECT count(*) FROM dcb.attempts AS a JOIN es.events AS e ON e.event_id = a.event_id
	 WHERE a.outcome = 'refused'}),
	'0',
	'a refused append wrote nothing');
is( $node->safe_psql(
		'postgres', q{
	SELECT count(*) FROM dcb.attempts AS a
	 WHERE a.outcome = 'ok'
	   AND NOT EXISTS (SELECT FROM es.events AS e
					   WHERE e.event_id = a.event_id AND e.stream_id = a.stream_id
						 AND (e.era, e.tx_id, e.global_position) = a.token)}),
	'0',
	'every successful append is stored at the position it returned');
is( $node->safe_psql(
		'postgres', q{
	SELECT count(*) FROM es.events
	 WHERE event_type IN ('Enrolled', 'Unenrolled', 'UsernameClaimed')
	   AND event_id NOT IN (SELECT event_id FROM dcb.attempts WHERE outcome = 'ok')}),
	'0',
	'every stored enrollment, unenrollment and claim is an attempt that succeeded');

# --- the rules held ----------------------------------------------------------
# Running counts in log order (era, tx_id, global_position).
is( $node->safe_psql(
		'postgres', qq{
	WITH ev AS (
		SELECT substr(e.tags[1], 9)::integer AS course, substr(e.tags[2], 10)::integer AS student,
			   CASE e.event_type WHEN 'Enrolled' THEN 1 ELSE -1 END AS d,
			   e.era, e.tx_id, e.global_position
		  FROM es.events AS e WHERE e.event_type IN ('Enrolled', 'Unenrolled')),
	run AS (
		SELECT course, student,
			   sum(d) OVER (PARTITION BY course ORDER BY era, tx_id, global_position) AS in_course,
			   sum(d) OVER (PARTITION BY course, student ORDER BY era, tx_id, global_position) AS mine
		  FROM ev)
	SELECT string_agg(DISTINCT 'course ' || course || ' at ' || in_course, ', ')
	  FROM run WHERE in_course > $CAP OR in_course < 0}),
	'',
	"no course ever had more than $CAP students (running count in log order)");
is( $node->safe_psql(
		'postgres', q{
	WITH ev AS (
		SELECT e.tags[1] AS course, e.tags[2] AS student,
			   CASE e.event_type WHEN 'Enrolled' THEN 1 ELSE -1 END AS d,
			   e.era, e.tx_id, e.global_position
		  FROM es.events AS e WHERE e.event_type IN ('Enrolled', 'Unenrolled'))
	SELECT count(*) FROM (
		SELECT sum(d) OVER (PARTITION BY course, student ORDER BY era, tx_id, global_position) AS mine
		  FROM ev) AS r
	 WHERE mine NOT IN (0, 1)}),
	'0',
	'no student was enrolled twice in a course, nor unenrolled when not enrolled');
is( $node->safe_psql(
		'postgres', q{
	SELECT count(*) FROM (
		SELECT e.tags FROM es.events AS e WHERE e.event_type = 'UsernameClaimed'
		 GROUP BY e.tags HAVING count(*) > 1) AS d}),
	'0',
	'no username was claimed twice');
cmp_ok(
	$node->safe_psql('postgres', "SELECT count(*) FROM es.events WHERE event_type = 'UsernameClaimed'"),
	'>', 0, 'usernames were claimed');

# --- nothing lost: es_read_query agrees with es.events ---------------------
is( $node->safe_psql(
		'postgres', qq{
	SELECT string_agg(c || ': ' || q || ' read, ' || t || ' stored', ', ')
	  FROM (SELECT c,
				   (SELECT count(*) FROM es.es_read_query(dcb.course_query(c))) AS q,
				   (SELECT count(*) FROM es.events
					 WHERE event_type IN ('Enrolled', 'Unenrolled')
					   AND tags \@> ARRAY['course:c' || c]) AS t
			  FROM generate_series(1, $COURSES) AS c) AS x
	 WHERE q <> t}),
	'',
	'per course, es_read_query returns every enrollment and unenrollment es.events holds');
is( $node->safe_psql(
		'postgres', q{
	SELECT (SELECT count(*) FROM es.es_read_query('[{"types": ["CourseViewed", "Noted"]}]'))
		 = (SELECT count(*) FROM es.events WHERE event_type IN ('CourseViewed', 'Noted'))}),
	't',
	'es_read_query by types returns every noise event es.events holds');

EsTorture::check_log($node, 'dcb torture');
$node->stop;
done_testing();
