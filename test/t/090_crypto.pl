
# Copyright (c) es_ext contributors
#
# test/t/090_crypto.pl
#
# Crypto-shredding outside one session (src/crypto.c):
#  - keys never reach the server log: with log_statement = all,
#    log_min_duration_statement = 0, auto_explain of nested statements and
#    log_min_error_statement = debug5, appends that make keys, reads that use
#    them, a forget and errors around them leave no key in the log (hex or
#    base64) -- es_ext's NOTIFY payloads are always empty (notify.c);
#  - a dump restores the keys with the events: encrypted fields decrypt in
#    the restored database, forgotten subjects stay forgotten there (reads
#    show the redaction marker, appends for them are refused).

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('es_crypto');
$node->init;
$node->append_conf(
	'postgresql.conf', q{
shared_preload_libraries = 'es_ext,auto_explain'
log_statement = all
log_min_duration_statement = 0
log_min_error_statement = debug5
log_error_verbosity = verbose
auto_explain.log_min_duration = 0
auto_explain.log_nested_statements = on
auto_explain.log_analyze = on
auto_explain.log_verbose = on
es.notify = commit
});
$node->start;

$node->safe_psql('postgres', 'CREATE DATABASE shop');
$node->safe_psql(
	'shop', q{
CREATE EXTENSION es_ext;
CREATE EXTENSION pgcrypto;
SELECT es.es_outbox_route('cust');
SELECT es.es_outbox_create_group('mailer');
});

my $log_start = -s $node->logfile;

# appends that make keys (one batch, two subjects, a nested field), reads,
# an outbox claim, failures, a forget
$node->safe_psql(
	'shop', q{
SELECT es.es_append('cust-' || i, NULL, jsonb_build_array(jsonb_build_object(
	'type', 'Registered',
	'data', jsonb_build_object('email', 'person' || i || '@example.org',
							   'address', jsonb_build_object('street', 'Street ' || i, 'city', 'Oslo')),
	'personal', jsonb_build_object('subject', 'subj-' || i, 'fields', jsonb_build_array('email', 'address.street')))))
  FROM generate_series(1, 5) AS i;
});
my ($ret, $out, $err) = $node->psql(
	'shop', q{
LISTEN es_outbox;
SELECT count(*) FROM es.es_read_stream('cust-1');
SELECT count(*) FROM es.es_read_all();
SELECT count(*) FROM es.es_outbox_claim('mailer', 100);
SELECT es.es_decrypt(jsonb_set(data, '{email,subject}', '"subj-2"')) FROM es.events WHERE stream_id = 'cust-1';
});
like($err, qr/does not authenticate/, 'a marker moved to another subject is refused');
is( $node->safe_psql(
		'shop', q{SELECT data ->> 'email' FROM es.es_read_stream('cust-1')}),
	'person1@example.org', 'personal fields decrypt');
$node->safe_psql('shop', q{SELECT es.es_forget_subject('subj-1')});
($ret, $out, $err) = $node->psql(
	'shop', q{
SELECT es.es_append('cust-1', NULL, '[{"type": "Moved", "data": {"street": "x"},
	"personal": {"subject": "subj-1", "fields": ["street"]}}]');
});
like($err, qr/data subject "subj-1" was forgotten/, 'an append for a forgotten subject is refused');

my $keys = $node->safe_psql('shop',
	q{SELECT string_agg(encode(key, 'hex') || ' ' || encode(key, 'base64'), ' ') FROM es.subject_keys WHERE key IS NOT NULL});
my @keys = split / /, $keys;
is(scalar(@keys), 8, 'four live keys to look for, in hex and in base64');
my $log = slurp_file($node->logfile, $log_start);
like($log, qr/es_append/, 'the log holds the statements');
like($log, qr/subject_keys/, 'the log holds the nested statements on es.subject_keys (auto_explain)');
my @found = grep { index($log, $_) >= 0 } @keys;
is(join(' ', @found), '', 'no key appears in the server log');
my @hex_in_log = ($log =~ /\\\\x[0-9a-f]{64}/g);
is(scalar(@hex_in_log), 0, 'no 32-byte bytea literal appears in the server log');

# a dump restores keys and forgotten subjects
my $dumpdir = PostgreSQL::Test::Utils::tempdir;
$node->command_ok([ 'pg_dump', '-Fc', '-f', "$dumpdir/shop.dump", '-d', $node->connstr('shop') ],
	'pg_dump -Fc exits 0');
$node->command_ok([ 'pg_dump', '-Fp', '-f', "$dumpdir/shop.sql", '-d', $node->connstr('shop') ],
	'pg_dump -Fp exits 0');
my $n = 0;
for my $format (
	[ 'custom', [ 'pg_restore', "$dumpdir/shop.dump" ] ],
	[ 'plain', [ 'psql', '-X', '-q', '-v', 'ON_ERROR_STOP=1', '-f', "$dumpdir/shop.sql" ] ])
{
	my ($fmt, $cmd) = @$format;
	my $db = 'restored' . $n++;
	$node->safe_psql('postgres', "CREATE DATABASE $db");
	$node->command_ok([ @$cmd, '-d', $node->connstr($db) ], "$fmt: the restore exits 0");
	is( $node->safe_psql(
			$db, q{SELECT string_agg(r.data ->> 'email', ',' ORDER BY r.stream_id)
					 FROM es.streams AS s, es.es_read_stream(s.stream_id) AS r WHERE s.stream_id <> 'cust-1'}),
		'person2@example.org,person3@example.org,person4@example.org,person5@example.org',
		"$fmt: encrypted fields decrypt in the restored database");
	is( $node->safe_psql(
			$db, q{SELECT r.data -> 'email' ->> '$es_redacted' FROM es.es_read_stream('cust-1') AS r}),
		'subject forgotten', "$fmt: a forgotten subject stays forgotten");
	($ret, $out, $err) = $node->psql(
		$db, q{
SELECT es.es_append('cust-1', NULL, '[{"type": "Moved", "data": {"street": "x"},
	"personal": {"subject": "subj-1", "fields": ["street"]}}]');
});
	like($err, qr/was forgotten/, "$fmt: an append for the forgotten subject is refused");
	is( $node->safe_psql(
			$db, q{
SELECT es.es_append('cust-6', NULL, '[{"type": "Registered", "data": {"email": "p6@example.org"},
	"personal": {"subject": "subj-6", "fields": ["email"]}}]') IS NOT NULL;
SELECT data ->> 'email' FROM es.es_read_stream('cust-6');}),
		"t\np6\@example.org", "$fmt: new subjects get keys after the restore");
}

$node->stop;
done_testing();
