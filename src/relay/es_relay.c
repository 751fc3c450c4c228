/*-------------------------------------------------------------------------
 *
 * es_relay.c
 *	  es_relay: deliver the outbox messages of one es_ext consumer group,
 *	  one JSON line per message, to standard output or to a command.
 *
 * The relay connects with a libpq connection string, LISTENs on es_outbox
 * (unless it is connected through a connection pooler, see below) and claims
 * batches with es.es_outbox_claim().  A batch goes to standard
 * output in one write(2) (acknowledged once it returned) or, when a command
 * is given after "--", to the command's standard input (acknowledged when
 * the command exits with status 0, given back with es_outbox_nack()
 * otherwise, to be retried after the group's backoff).  After a full batch
 * it claims again at once; otherwise it waits for a notification, a signal
 * or the poll interval.
 *
 * Delivery is at least once: a relay killed between output and ack leaves
 * the batch leased; when the lease ends, the batch is claimed again and
 * delivered a second time.  Nothing is acknowledged before it was output.
 * Within a group, each stream's messages are output in version order, also
 * with several relays (the claim takes a stream's messages only from the
 * one that holds its oldest undelivered message).
 *
 * Poolers: the relay works through a transaction-pooling PgBouncer, where
 * consecutive transactions of one client may run in different server
 * sessions.  It uses only unnamed statements (PQexecParams), no session
 * state: its claims, acks and nacks run in explicit transactions that set
 * synchronous_commit = off with SET LOCAL.  LISTEN cannot work there (the
 * notification goes to a server session the relay no longer has), so with
 * --listen=auto (the default) the relay does not LISTEN when it sees a
 * pooler -- PgBouncer and most poolers answer with a process id of their
 * own, not the server's -- and polls; the poll interval bounds the latency
 * in every mode.
 *
 * Citus (issue 16): on a distributed event store the outbox is per node.
 * With --all-nodes the relay asks the coordinator for the nodes and runs
 * one relay process per node (the coordinator included), each with the
 * connection string plus that node's host and port.  A stream's messages
 * stay in version order across the nodes: the claim on a stream's new node
 * holds its messages until the older ones were acknowledged on the others.
 * Writes to standard output are serialized between the processes with a
 * lock, so batches never interleave.  The parent forwards SIGTERM and
 * SIGINT and exits when every child has, with the worst status.
 *
 * When the server goes away, the relay reconnects with exponential backoff
 * (100 ms doubling to 10 s, with jitter).  A connection attempt that cannot
 * succeed by retrying (a bad connection string, a missing database or
 * role, an authentication failure) ends the relay at once with status 2
 * and libpq's message, as psql does.  SIGTERM and SIGINT stop it
 * cleanly: the batch in progress is finished (output, ack) and it exits
 * with status 0.  A self-pipe makes signals interrupt the wait at once.
 *
 * src/relay/es_relay.c
 *
 *-------------------------------------------------------------------------
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/select.h>
#include <sys/time.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "libpq-fe.h"

#ifndef ES_RELAY_VERSION
#define ES_RELAY_VERSION "unknown"
#endif

#define NOTIFY_CHANNEL		"es_outbox"
#define BACKOFF_MIN_MS		100
#define BACKOFF_MAX_MS		10000
#define PROBE_TIMEOUT_S		10	/* a classifying connection attempt */

/* the statements, all unnamed (no prepared statement outlives a transaction) */
#define CLAIM_SQL \
	"SELECT c.lease, c.position, pg_catalog.jsonb_build_object(" \
	" 'group', $1::text, 'position', c.position, 'attempt', c.attempts," \
	" 'event_id', c.event_id, 'stream_id', c.stream_id, 'version', c.version," \
	" 'type', c.event_type, 'schema_version', c.schema_version, 'data', c.data," \
	" 'metadata', c.metadata, 'global_position', c.global_position," \
	" 'recorded_at', c.recorded_at)::text" \
	"  FROM es.es_outbox_claim($1::text, $2::integer, $3::interval) AS c"
#define ACK_SQL		"SELECT es.es_outbox_ack($1::text, $2::uuid, $3::bigint[])"
#define NACK_SQL	"SELECT es.es_outbox_nack($1::text, $2::uuid, $3::bigint[], $4::text)"
#define CLEANUP_SQL "SELECT es.es_outbox_cleanup($1::interval)"

/*
 * What starts each transaction of the relay: synchronous_commit = off for
 * it alone (a lost claim or ack only means a redelivery), and the server
 * process it runs in, to notice a transaction pooler.
 */
#define BEGIN_SQL \
	"BEGIN; SET LOCAL synchronous_commit = off; SELECT pg_catalog.pg_backend_pid()"

/* exit statuses */
#define EXIT_USAGE			1
#define EXIT_FATAL			2

/* --listen */
typedef enum ListenMode
{
	LISTEN_AUTO,				/* unless connected through a pooler */
	LISTEN_ALWAYS,
	LISTEN_NEVER
} ListenMode;

typedef struct RelayOptions
{
	const char *conninfo;		/* NULL: libpq defaults (PG* environment) */
	const char *group;
	int			batch_size;
	int			lease_s;
	double		poll_s;
	int			cleanup_s;		/* 0: never */
	const char *retention;
	bool		create_group;
	bool		all_nodes;		/* --all-nodes */
	const char *node_host;		/* --all-nodes, in a child: its node */
	const char *node_port;
	bool		once;
	ListenMode	listen;
	int			verbose;
	char	  **command;		/* NULL: standard output */
} RelayOptions;

/* what the relay knows about its current connection */
typedef struct RelayConn
{
	PGconn	   *conn;
	int			server_pid;		/* pg_backend_pid() when it connected */
	bool		pooler;			/* PQbackendPID() is not the server's */
	bool		listening;		/* LISTENing, and notifications can arrive */
} RelayConn;

/* what serve() ended with */
typedef enum ServeResult
{
	SERVE_RECONNECT,			/* the connection broke */
	SERVE_STOP,					/* SIGTERM/SIGINT */
	SERVE_DONE,					/* --once: nothing left */
	SERVE_FATAL					/* give up */
} ServeResult;

static volatile sig_atomic_t stop_requested = 0;
static int	wake_pipe[2] = {-1, -1};
static const char *progname = "es_relay";

/* --all-nodes: the lock file serializing standard output, the node */
static int	output_lock_fd = -1;
static char node_label[300] = "";

static void relay_log(const char *fmt,...) __attribute__((format(printf, 1, 2)));

static void
relay_log(const char *fmt,...)
{
	va_list		ap;
	char		buf[64];
	struct timeval tv;
	struct tm	tm;

	gettimeofday(&tv, NULL);
	localtime_r(&tv.tv_sec, &tm);
	strftime(buf, sizeof(buf), "%Y-%m-%d %H:%M:%S", &tm);
	fprintf(stderr, "%s.%03d %s%s: ", buf, (int) (tv.tv_usec / 1000), progname, node_label);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	fflush(stderr);
}

static void
handle_stop(int signo)
{
	int			save_errno = errno;

	stop_requested = 1;
	if (wake_pipe[1] >= 0)
	{
		ssize_t		rc = write(wake_pipe[1], "x", 1);

		(void) rc;
	}
	errno = save_errno;
}

static void
usage(void)
{
	printf("%s delivers the outbox messages of an es_ext consumer group, one JSON line\n"
		   "per message, to standard output or to a command, at least once and in\n"
		   "order per stream.\n\n", progname);
	printf("Usage:\n"
		   "  %s [OPTION]... -g GROUP [-- COMMAND [ARG]...]\n\n", progname);
	printf("Options:\n"
		   "  -d, --dbname=CONNSTR          connection string or URI (default: the PG*\n"
		   "                                environment variables, as psql)\n"
		   "  -g, --group=NAME              consumer group to deliver (required)\n"
		   "  -b, --batch-size=N            messages per claim, 1..10000 (default: 100)\n"
		   "  -l, --lease=SECONDS           lease of a claimed batch; it is claimed again\n"
		   "                                when not acknowledged by then (default: 60)\n"
		   "  -p, --poll-interval=SECONDS   claim at least this often without a\n"
		   "                                notification, e.g. 0.5 (default: 1)\n"
		   "  -c, --cleanup-interval=SECONDS  run es_outbox_cleanup() this often,\n"
		   "                                0 = never (default: 60)\n"
		   "  -r, --retention=INTERVAL      keep delivered outbox rows this long before\n"
		   "                                cleanup deletes them (default: 0)\n"
		   "      --create-group            create the group if it does not exist\n"
		   "      --all-nodes               on a distributed event store (Citus), ask the\n"
		   "                                coordinator for its nodes and deliver the\n"
		   "                                outbox of each (one process per node)\n"
		   "      --once                    exit when a claim finds nothing\n"
		   "      --listen=WHEN             LISTEN for wake-ups: auto (unless connected\n"
		   "                                through a connection pooler), always, never\n"
		   "                                (default: auto)\n"
		   "      --no-listen               the same as --listen=never: poll only\n"
		   "  -v, --verbose                 log batches and wake-ups to standard error\n"
		   "  -V, --version                 print the version and exit\n"
		   "  -h, --help                    show this help and exit\n\n");
	printf("Output:\n"
		   "  One JSON object per line and message, in claim order (version order within\n"
		   "  a stream): group, position, attempt, event_id, stream_id, version, type,\n"
		   "  schema_version, data, metadata, global_position, recorded_at.\n"
		   "  Without COMMAND, lines go to standard output and a batch is acknowledged\n"
		   "  once they are flushed.  With COMMAND (run without a shell; use\n"
		   "  -- sh -c '...' for one), each batch is written to the standard input of a\n"
		   "  new COMMAND process, with ES_RELAY_GROUP and ES_RELAY_COUNT in its\n"
		   "  environment; it is acknowledged when COMMAND exits with status 0 and\n"
		   "  given back for a retry after the group's backoff otherwise (the next\n"
		   "  batches are then halved, to isolate a failing message).\n\n");
	printf("Delivery is at least once: a batch output but not acknowledged (the relay\n"
		   "was killed, the connection broke) is delivered again when its lease ends.\n"
		   "Wake-ups come from LISTEN %s and the poll interval.  Through a\n"
		   "transaction-pooling PgBouncer, LISTEN receives nothing: with --listen=auto\n"
		   "the relay sees the pooler and only polls (use --listen=always behind a\n"
		   "session-pooling one).  The relay reconnects with backoff when the server\n"
		   "is not there or goes away; SIGTERM or SIGINT finishes the batch in progress\n"
		   "and stops it.  Its role needs es_consumer (or es_admin).\n\n", NOTIFY_CHANNEL);
	printf("Exit status: 0 when stopped by a signal or done (--once), 1 for bad\n"
		   "usage, 2 when it cannot go on: a connection that retrying cannot fix (bad\n"
		   "connection string, no such database or role, authentication failed), a bad\n"
		   "--retention, no such group, output failed.\n");
}

static bool
parse_int(const char *s, int min, int max, int *out)
{
	char	   *end;
	long		v;

	errno = 0;
	v = strtol(s, &end, 10);
	if (errno != 0 || end == s || *end != '\0' || v < min || v > max)
		return false;
	*out = (int) v;
	return true;
}

static bool
parse_seconds(const char *s, double min, double *out)
{
	char	   *end;
	double		v;

	errno = 0;
	v = strtod(s, &end);
	if (errno != 0 || end == s || *end != '\0' || v < min || v > 86400.0)
		return false;
	*out = v;
	return true;
}

static int64_t
now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void
drain_wake_pipe(void)
{
	char		buf[64];

	while (read(wake_pipe[0], buf, sizeof(buf)) > 0)
		;
}

/*
 * wait_for
 *		Wait up to timeout_ms for input on sock (-1: none) or a signal.
 *		Returns 1 when sock is readable, 0 otherwise.
 */
static int
wait_for(int sock, int64_t timeout_ms)
{
	fd_set		rfds;
	struct timeval tv;
	int			maxfd = wake_pipe[0];
	int			rc;

	if (stop_requested)
		return 0;
	if (timeout_ms < 0)
		timeout_ms = 0;
	FD_ZERO(&rfds);
	FD_SET(wake_pipe[0], &rfds);
	if (sock >= 0)
	{
		FD_SET(sock, &rfds);
		if (sock > maxfd)
			maxfd = sock;
	}
	tv.tv_sec = timeout_ms / 1000;
	tv.tv_usec = (timeout_ms % 1000) * 1000;
	rc = select(maxfd + 1, &rfds, NULL, NULL, &tv);
	if (rc <= 0)
		return 0;
	if (FD_ISSET(wake_pipe[0], &rfds))
		drain_wake_pipe();
	return (sock >= 0 && FD_ISSET(sock, &rfds)) ? 1 : 0;
}

/* the next reconnection delay: doubling from 100 ms to 10 s, +-25% jitter */
static int64_t
next_backoff(int64_t *backoff_ms)
{
	int64_t		delay;

	*backoff_ms = (*backoff_ms == 0) ? BACKOFF_MIN_MS : *backoff_ms * 2;
	if (*backoff_ms > BACKOFF_MAX_MS)
		*backoff_ms = BACKOFF_MAX_MS;
	delay = *backoff_ms * 3 / 4 + random() % (*backoff_ms / 2 + 1);
	return delay;
}

static const char *
result_sqlstate(const PGresult *res)
{
	const char *s = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;

	return s ? s : "";
}

/* first line of an error message, for one-line logs */
static const char *
one_line(const char *msg, char *buf, size_t len)
{
	size_t		n = strcspn(msg, "\n");

	if (n >= len)
		n = len - 1;
	memcpy(buf, msg, n);
	buf[n] = '\0';
	return buf;
}

static void
log_result_error(const char *what, PGconn *conn, const PGresult *res)
{
	char		buf[512];
	const char *msg = res ? PQresultErrorMessage(res) : PQerrorMessage(conn);

	relay_log("%s failed: %s", what, one_line(msg, buf, sizeof(buf)));
}

/* ROLLBACK the transaction left open by a failed statement, if any */
static void
rollback_if_open(PGconn *conn)
{
	PGTransactionStatusType ts = PQtransactionStatus(conn);

	if (PQstatus(conn) == CONNECTION_OK && (ts == PQTRANS_INTRANS || ts == PQTRANS_INERROR))
		PQclear(PQexec(conn, "ROLLBACK"));
}

/*
 * exec_in_xact
 *		Run one statement (unnamed, with parameters) in a transaction of its
 *		own with synchronous_commit = off, set with SET LOCAL: no session
 *		state, so that it also works through a transaction pooler, where the
 *		next transaction may run in another server session (of another
 *		client before).  Returns the statement's result, PGRES_TUPLES_OK when
 *		it committed; otherwise an error result (of BEGIN, the statement or
 *		COMMIT), or NULL, with the transaction rolled back.
 *
 *		While it LISTENs, the relay checks that the transaction runs in the
 *		server process that LISTENed: if not, a transaction pooler is in
 *		between and notifications cannot arrive (only the poll is left).
 */
static PGresult *
exec_in_xact(RelayConn *rc, const RelayOptions *opt, const char *sql, int nparams,
			 const char *const *params)
{
	PGconn	   *conn = rc->conn;
	PGresult   *res;
	PGresult   *commit;

	res = PQexec(conn, BEGIN_SQL);
	if (PQresultStatus(res) != PGRES_TUPLES_OK)
	{
		rollback_if_open(conn);
		return res;
	}
	if (rc->listening && atoi(PQgetvalue(res, 0, 0)) != rc->server_pid)
	{
		relay_log("this transaction runs in server process %s, not in %d that LISTENs: a transaction "
				  "pooler is in between and notifications cannot arrive; polling every %g s",
				  PQgetvalue(res, 0, 0), rc->server_pid, opt->poll_s);
		rc->listening = false;
	}
	PQclear(res);

	res = PQexecParams(conn, sql, nparams, NULL, params, NULL, NULL, 0);
	if (PQresultStatus(res) != PGRES_TUPLES_OK)
	{
		rollback_if_open(conn);
		return res;
	}
	commit = PQexec(conn, "COMMIT");
	if (PQresultStatus(commit) != PGRES_COMMAND_OK)
	{
		PQclear(res);
		rollback_if_open(conn);
		return commit;
	}
	PQclear(commit);
	return res;
}

/*
 * setup
 *		Prepare a new connection: find out whether a pooler is in between,
 *		check --retention (first connection only), the group
 *		(--create-group), LISTEN (see --listen).  Nothing else: no session
 *		state, no prepared statement.  Returns SERVE_RECONNECT to retry,
 *		SERVE_FATAL to give up, SERVE_DONE when ready.
 */
static ServeResult
setup(RelayConn *rc, const RelayOptions *opt)
{
	static bool retention_checked = false;
	PGconn	   *conn = rc->conn;
	PGresult   *res;
	const char *params[1];

	/*
	 * PgBouncer (and most poolers) answer the client with a process id and
	 * cancel key of their own: a server process id that differs from the
	 * one libpq got means a pooler.  In session mode LISTEN would work, in
	 * transaction mode not; that cannot be told apart from here.
	 */
	res = PQexec(conn, "SELECT pg_catalog.pg_backend_pid()");
	if (PQresultStatus(res) != PGRES_TUPLES_OK)
	{
		log_result_error("connection check", conn, res);
		PQclear(res);
		return SERVE_RECONNECT;
	}
	rc->server_pid = atoi(PQgetvalue(res, 0, 0));
	rc->pooler = (rc->server_pid != PQbackendPID(conn));
	rc->listening = false;
	PQclear(res);

	if (!retention_checked)
	{
		params[0] = opt->retention;
		res = PQexecParams(conn, "SELECT $1::pg_catalog.interval OPERATOR(pg_catalog.<) '0'::pg_catalog.interval",
						   1, NULL, params, NULL, NULL, 0);
		if (PQresultStatus(res) != PGRES_TUPLES_OK || strcmp(PQgetvalue(res, 0, 0), "t") == 0)
		{
			char		buf[512];

			if (PQstatus(conn) != CONNECTION_OK)
			{
				log_result_error("checking the retention", conn, res);
				PQclear(res);
				return SERVE_RECONNECT;
			}
			relay_log("invalid retention \"%s\": %s", opt->retention,
					  PQresultStatus(res) == PGRES_TUPLES_OK ? "it cannot be negative" :
					  one_line(PQresultErrorMessage(res), buf, sizeof(buf)));
			PQclear(res);
			rollback_if_open(conn);
			return SERVE_FATAL;
		}
		PQclear(res);
		retention_checked = true;
	}

	if (opt->create_group)
	{
		params[0] = opt->group;
		res = PQexecParams(conn, "SELECT es.es_outbox_create_group($1)", 1, NULL, params,
						   NULL, NULL, 0);
		if (PQresultStatus(res) == PGRES_TUPLES_OK)
			relay_log("created consumer group \"%s\"", opt->group);
		else if (strcmp(result_sqlstate(res), "42710") != 0)
		{
			log_result_error("creating the consumer group", conn, res);
			PQclear(res);
			return PQstatus(conn) == CONNECTION_OK ? SERVE_FATAL : SERVE_RECONNECT;
		}
		PQclear(res);
	}

	if (opt->listen == LISTEN_ALWAYS || (opt->listen == LISTEN_AUTO && !rc->pooler))
	{
		res = PQexec(conn, "LISTEN " NOTIFY_CHANNEL);
		if (PQresultStatus(res) != PGRES_COMMAND_OK)
		{
			log_result_error("LISTEN", conn, res);
			PQclear(res);
			return SERVE_RECONNECT;
		}
		PQclear(res);
		rc->listening = true;
	}
	return SERVE_DONE;
}

/*
 * Connecting.  A failed attempt is retried only when the server is not there
 * or going away: no connection (refused, no socket file, unreachable, a
 * timeout, a name that does not resolve), a connection that broke, or an
 * error of the server with a SQLSTATE of class 08 (connection exception;
 * PgBouncer's errors, except those that say a database or role does not
 * exist or authentication failed), 53 (too many connections, out of
 * resources), 57P01, 57P02 or 57P03 (shutting down, starting up, in
 * recovery).  Anything else cannot get better by retrying: a connection
 * string that does not parse, an unknown option, a bad option value, no such
 * database or role, an authentication failure, no CONNECT privilege.
 *
 * libpq gives no SQLSTATE for a failed connection, only the message, and a
 * server's message may be in its language.  So the relay connects
 * asynchronously with PQERRORS_VERBOSE, which puts the SQLSTATE into the
 * message ("FATAL:  3D000: database ..."; it is taken out again for the
 * log); libpq's own messages are in English (the relay never calls
 * setlocale()).  connect_timeout bounds the attempt, as in libpq, except
 * with several hosts, where libpq moves on to the next host when it expires,
 * which only PQconnectdbParams() can do: then the relay uses it, and repeats
 * a failed attempt whose message shows no network failure once verbosely,
 * for the SQLSTATE.
 */

/* libpq's messages of a server that is not there or went away */
static const char *const network_failures[] = {
	"Connection refused",
	"failed: No such file or directory",	/* no socket file */
	"Connection timed out",
	"timeout expired",
	"could not translate host name",
	"Network is unreachable",
	"No route to host",
	"Host is down",
	"Connection reset by peer",
	"Resource temporarily unavailable", /* full listen queue */
	"server closed the connection unexpectedly",
	"could not receive data from server",
	"could not send data to server",
	"could not send startup packet",
	"SSL SYSCALL error",
	"SSL connection has been closed unexpectedly",
	NULL
};

static bool
network_failure(const char *msg)
{
	int			i;

	for (i = 0; network_failures[i] != NULL; i++)
		if (strstr(msg, network_failures[i]) != NULL)
			return true;
	return false;
}

/*
 * PgBouncer sends every error of its own, and the server's errors at login
 * it passes on, with SQLSTATE 08P01; its messages are in English.  These
 * are the ones retrying cannot fix.
 */
static const char *const pooler_hopeless[] = {
	"does not exist",			/* a database or role, from the server */
	"o such database",			/* "No such database" (no "*" entry) */
	"o such user",
	"authentication failed",
	"not allowed",
	NULL
};

/* Is the error with this SQLSTATE and text (up to a newline) worth a retry? */
static bool
transient_error(const char *code, const char *text)
{
	size_t		len = strcspn(text, "\n");
	int			i;

	if (strncmp(code, "08P01", 5) == 0)
	{
		for (i = 0; pooler_hopeless[i] != NULL; i++)
		{
			const char *hit = strstr(text, pooler_hopeless[i]);

			if (hit != NULL && hit < text + len)
				return false;
		}
		return true;
	}
	return strncmp(code, "08", 2) == 0 || strncmp(code, "53", 2) == 0 ||
		strncmp(code, "57P01", 5) == 0 || strncmp(code, "57P02", 5) == 0 ||
		strncmp(code, "57P03", 5) == 0;
}

/*
 * The SQLSTATEs in a verbose connection error message ("SEVERITY:  CODE:
 * text", one per host tried): true when one is transient; *found when there
 * was one at all.
 */
static bool
verbose_message_transient(const char *msg, bool *found)
{
	const char *p = msg;

	*found = false;
	while ((p = strstr(p, ":  ")) != NULL)
	{
		const char *c = p + 3;
		int			i;

		p = c;
		for (i = 0; i < 5; i++)
			if (!((c[i] >= '0' && c[i] <= '9') || (c[i] >= 'A' && c[i] <= 'Z')))
				break;
		if (i < 5 || c[5] != ':')
			continue;
		*found = true;
		if (transient_error(c, c + 6))
			return true;
	}
	return false;
}

/* Wait until sock is ready for reading or writing; false on timeout or signal. */
static bool
wait_socket(int sock, bool for_write, int64_t timeout_ms)
{
	fd_set		rfds;
	fd_set		wfds;
	struct timeval tv;
	int			maxfd = wake_pipe[0] > sock ? wake_pipe[0] : sock;

	if (stop_requested || timeout_ms <= 0 || sock < 0)
		return false;
	FD_ZERO(&rfds);
	FD_ZERO(&wfds);
	FD_SET(wake_pipe[0], &rfds);
	FD_SET(sock, for_write ? &wfds : &rfds);
	tv.tv_sec = timeout_ms / 1000;
	tv.tv_usec = (timeout_ms % 1000) * 1000;
	if (select(maxfd + 1, &rfds, &wfds, NULL, &tv) <= 0)
		return false;
	if (FD_ISSET(wake_pipe[0], &rfds))
		drain_wake_pipe();
	return FD_ISSET(sock, for_write ? &wfds : &rfds) != 0;
}

/*
 * finish_connect
 *		Drive conn, started by PQconnectStartParams(), to success or failure,
 *		for at most timeout_s (0: no limit); *timed_out when that ran out or
 *		a signal came.
 */
static void
finish_connect(PGconn *conn, int timeout_s, bool *timed_out)
{
	int64_t		deadline = now_ms() + (int64_t) timeout_s * 1000;
	PostgresPollingStatusType st = PGRES_POLLING_WRITING;

	*timed_out = false;
	while (PQstatus(conn) != CONNECTION_BAD && st != PGRES_POLLING_OK &&
		   st != PGRES_POLLING_FAILED)
	{
		if (!wait_socket(PQsocket(conn), st == PGRES_POLLING_WRITING,
						 timeout_s > 0 ? deadline - now_ms() : (int64_t) 60000))
		{
			if (timeout_s == 0 && !stop_requested)
				continue;
			*timed_out = true;
			return;
		}
		st = PQconnectPoll(conn);
	}
}

/* the connect_timeout in effect for conn, as libpq takes it (0: none); *several_hosts */
static int
connect_timeout_of(PGconn *conn, bool *several_hosts)
{
	PQconninfoOption *opts = PQconninfo(conn);
	PQconninfoOption *o;
	int			t = 0;

	*several_hosts = false;
	for (o = opts; o != NULL && o->keyword != NULL; o++)
	{
		if (o->val == NULL)
			continue;
		if (strcmp(o->keyword, "connect_timeout") == 0)
			t = atoi(o->val);
		else if ((strcmp(o->keyword, "host") == 0 || strcmp(o->keyword, "hostaddr") == 0) &&
				 strchr(o->val, ',') != NULL)
			*several_hosts = true;
	}
	PQconninfoFree(opts);
	return t <= 0 ? 0 : (t < 2 ? 2 : t);
}

/*
 * plain_message
 *		A connection error as libpq words it with its default verbosity:
 *		without the SQLSTATE after the severity and the LOCATION lines of a
 *		verbose message, without the trailing newline.  Malloc'd.
 */
static char *
plain_message(const char *msg)
{
	size_t		len = strlen(msg);
	char	   *out = malloc(len + 1);
	const char *p = msg;
	char	   *q = out;

	if (out == NULL)
	{
		relay_log("out of memory");
		exit(EXIT_FATAL);
	}
	while (*p != '\0')
	{
		size_t		n = strcspn(p, "\n");
		const char *line_end = p + n;

		if (strncmp(p, "LOCATION:  ", 11) != 0)
		{
			while (p < line_end)
			{
				/* "SEVERITY:  CODE: " -> "SEVERITY:  " */
				if (strncmp(p, ":  ", 3) == 0 && line_end - p >= 9 && p[8] == ':' && p[9] == ' ' &&
					strspn(p + 3, "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ") >= 5)
				{
					memcpy(q, ":  ", 3);
					q += 3;
					p += 10;
					continue;
				}
				*q++ = *p++;
			}
			if (*line_end == '\n')
				*q++ = '\n';
		}
		p = (*line_end == '\n') ? line_end + 1 : line_end;
	}
	while (q > out && q[-1] == '\n')
		q--;
	*q = '\0';
	return out;
}

static void
log_connect_error(const char *what, const char *msg)
{
	char	   *plain = plain_message(msg);

	relay_log("%s: %s", what, plain);
	free(plain);
}

/* Is the failure of conn worth a retry?  conn's message is verbose when verbose. */
static bool
failure_is_transient(PGconn *conn, bool verbose)
{
	const char *msg = PQerrorMessage(conn);
	bool		found;

	if (PQconnectionNeedsPassword(conn))
		return false;
	if (verbose && verbose_message_transient(msg, &found))
		return true;
	if (verbose && found)
		return false;
	return network_failure(msg);
}

/*
 * relay_connect
 *		One connection attempt.  NULL when it failed: *hopeless when
 *		retrying cannot help (then it logged libpq's message), else the first
 *		line of the message in errbuf.
 */
static PGconn *
relay_connect(const RelayOptions *opt, bool *hopeless, char *errbuf, size_t errlen)
{
	const char *keys[5];
	const char *vals[5];
	PGconn	   *conn;
	bool		timed_out = false;
	bool		several_hosts;
	bool		verbose = true;
	bool		transient;
	int			timeout_s;

	keys[0] = "dbname";
	vals[0] = opt->conninfo;
	keys[1] = "fallback_application_name";
	vals[1] = "es_relay";
	keys[2] = NULL;
	vals[2] = NULL;
	if (opt->node_host != NULL)
	{
		/* after dbname: they override the connection string's host and port */
		keys[2] = "host";
		vals[2] = opt->node_host;
		keys[3] = "port";
		vals[3] = opt->node_port;
		keys[4] = NULL;
		vals[4] = NULL;
	}

	*hopeless = false;
	conn = PQconnectStartParams(keys, vals, 1);
	if (conn == NULL)
	{
		snprintf(errbuf, errlen, "out of memory");
		return NULL;
	}
	timeout_s = connect_timeout_of(conn, &several_hosts);
	if (PQstatus(conn) != CONNECTION_BAD && timeout_s > 0 && several_hosts)
	{
		/* connect_timeout for each host: only libpq's own loop has that */
		PQfinish(conn);
		conn = PQconnectdbParams(keys, vals, 1);
		if (conn == NULL)
		{
			snprintf(errbuf, errlen, "out of memory");
			return NULL;
		}
		verbose = false;
	}
	else
	{
		PQsetErrorVerbosity(conn, PQERRORS_VERBOSE);
		finish_connect(conn, timeout_s, &timed_out);
	}
	if (PQstatus(conn) == CONNECTION_OK)
	{
		PQsetErrorVerbosity(conn, PQERRORS_DEFAULT);
		return conn;
	}

	if (timed_out)
	{
		snprintf(errbuf, errlen, "%s", stop_requested ? "interrupted" : "timeout expired");
		PQfinish(conn);
		return NULL;
	}
	{
		char	   *plain = plain_message(PQerrorMessage(conn));

		one_line(plain, errbuf, errlen);
		free(plain);
	}
	transient = failure_is_transient(conn, verbose);
	if (!transient && !verbose && !PQconnectionNeedsPassword(conn))
	{
		/* the server (or a pooler) said no, or a bad option: why? */
		PGconn	   *probe = PQconnectStartParams(keys, vals, 1);

		if (probe != NULL)
		{
			PQsetErrorVerbosity(probe, PQERRORS_VERBOSE);
			finish_connect(probe, timeout_s < PROBE_TIMEOUT_S ? timeout_s : PROBE_TIMEOUT_S,
						   &timed_out);
			if (PQstatus(probe) == CONNECTION_OK)
			{
				/* it works now (the server finished starting up) */
				PQsetErrorVerbosity(probe, PQERRORS_DEFAULT);
				PQfinish(conn);
				return probe;
			}
			transient = timed_out || failure_is_transient(probe, true);
		}
		else
			transient = true;
		PQfinish(probe);
	}

	if (!transient)
	{
		log_connect_error("could not connect (not retrying)", PQerrorMessage(conn));
		*hopeless = true;
	}
	PQfinish(conn);
	return NULL;
}

/*
 * drain_notifications
 *		Consume input and take the notifications received, logging them
 *		(verbose).  Notifications also arrive during other commands (the
 *		claim, the ack) and then wait in libpq, not in the socket, so this
 *		must run before every wait.  Returns how many it took, -1 when the
 *		connection broke.  When the relay does not listen, a notification
 *		(of a LISTEN of another client of a pooler's server session) is no
 *		wake-up: it is dropped and not counted.
 */
static int
drain_notifications(RelayConn *rc, const RelayOptions *opt)
{
	PGnotify   *n;
	int			count = 0;

	if (!PQconsumeInput(rc->conn))
		return -1;
	while ((n = PQnotifies(rc->conn)) != NULL)
	{
		if (rc->listening)
		{
			if (opt->verbose)
				relay_log("woken by a notification from server process %d", n->be_pid);
			count++;
		}
		PQfreemem(n);
	}
	return count;
}

/* Write all of buf to fd; false on error (errno set). */
static bool
write_all(int fd, const char *buf, size_t len)
{
	while (len > 0)
	{
		ssize_t		n = write(fd, buf, len);

		if (n < 0)
		{
			if (errno == EINTR)
				continue;
			return false;
		}
		buf += n;
		len -= (size_t) n;
	}
	return true;
}

/*
 * batch_text
 *		The batch as JSON lines, malloc'd; its length in *len.
 */
static char *
batch_text(PGresult *res, size_t *len)
{
	int			n = PQntuples(res);
	size_t		total = 0;
	char	   *buf;
	char	   *p;
	int			i;

	for (i = 0; i < n; i++)
		total += PQgetlength(res, i, 2) + 1;
	buf = malloc(total + 1);
	if (buf == NULL)
	{
		relay_log("out of memory");
		exit(EXIT_FATAL);
	}
	p = buf;
	for (i = 0; i < n; i++)
	{
		int			l = PQgetlength(res, i, 2);

		memcpy(p, PQgetvalue(res, i, 2), l);
		p += l;
		*p++ = '\n';
	}
	*p = '\0';
	*len = total;
	return buf;
}

/*
 * deliver_stdout
 *		Write the batch to standard output in one write (a relay killed in
 *		the middle leaves whole lines in a file).  False when that fails
 *		(the reader went away): the batch is not acknowledged.
 */
static bool
output_lock(short type)
{
	struct flock fl;

	if (output_lock_fd < 0)
		return true;
	memset(&fl, 0, sizeof(fl));
	fl.l_type = type;
	fl.l_whence = SEEK_SET;
	while (fcntl(output_lock_fd, F_SETLKW, &fl) != 0)
		if (errno != EINTR)
			return false;
	return true;
}

static bool
deliver_stdout(PGresult *res)
{
	size_t		len;
	char	   *buf = batch_text(res, &len);
	bool		ok;

	/* --all-nodes: one batch at a time on the shared standard output */
	if (!output_lock(F_WRLCK))
	{
		relay_log("could not lock standard output: %s", strerror(errno));
		free(buf);
		return false;
	}
	ok = write_all(STDOUT_FILENO, buf, len);
	(void) output_lock(F_UNLCK);

	if (!ok)
		relay_log("could not write to standard output: %s", strerror(errno));
	free(buf);
	return ok;
}

/*
 * deliver_command
 *		Run the command with the batch on its standard input.  Returns true
 *		when it exited with status 0; otherwise sets reason.
 */
static bool
deliver_command(PGresult *res, const RelayOptions *opt, char *reason, size_t reason_len)
{
	int			n = PQntuples(res);
	int			fds[2];
	pid_t		pid;
	int			status;
	bool		write_ok;

	if (pipe(fds) != 0)
	{
		snprintf(reason, reason_len, "could not create a pipe: %s", strerror(errno));
		return false;
	}
	fflush(stdout);
	fflush(stderr);
	pid = fork();
	if (pid < 0)
	{
		snprintf(reason, reason_len, "could not fork: %s", strerror(errno));
		close(fds[0]);
		close(fds[1]);
		return false;
	}
	if (pid == 0)
	{
		char		count[32];

		signal(SIGPIPE, SIG_DFL);
		signal(SIGTERM, SIG_DFL);
		signal(SIGINT, SIG_DFL);
		close(fds[1]);
		if (dup2(fds[0], STDIN_FILENO) < 0)
			_exit(127);
		close(fds[0]);
		snprintf(count, sizeof(count), "%d", n);
		setenv("ES_RELAY_GROUP", opt->group, 1);
		setenv("ES_RELAY_COUNT", count, 1);
		execvp(opt->command[0], opt->command);
		fprintf(stderr, "%s: could not execute \"%s\": %s\n", progname, opt->command[0],
				strerror(errno));
		_exit(127);
	}

	close(fds[0]);
	{
		size_t		len;
		char	   *buf = batch_text(res, &len);

		write_ok = write_all(fds[1], buf, len);
		free(buf);
	}
	close(fds[1]);

	/* a stop request lets the command finish: its batch is then acked or given back */
	while (waitpid(pid, &status, 0) < 0)
	{
		if (errno != EINTR)
		{
			snprintf(reason, reason_len, "could not wait for the command: %s", strerror(errno));
			return false;
		}
	}
	if (WIFEXITED(status) && WEXITSTATUS(status) == 0 && write_ok)
		return true;
	if (WIFEXITED(status))
		snprintf(reason, reason_len, "command exited with status %d", WEXITSTATUS(status));
	else if (WIFSIGNALED(status))
		snprintf(reason, reason_len, "command was terminated by signal %d", WTERMSIG(status));
	else
		snprintf(reason, reason_len, "command did not read its input");
	return false;
}

/* "{p1,p2,...}" of the batch's positions, malloc'd */
static char *
positions_array(PGresult *res)
{
	int			n = PQntuples(res);
	size_t		len = 3;
	char	   *buf;
	char	   *p;
	int			i;

	for (i = 0; i < n; i++)
		len += strlen(PQgetvalue(res, i, 1)) + 1;
	buf = malloc(len);
	if (buf == NULL)
	{
		relay_log("out of memory");
		exit(EXIT_FATAL);
	}
	p = buf;
	*p++ = '{';
	for (i = 0; i < n; i++)
	{
		const char *v = PQgetvalue(res, i, 1);
		size_t		l = strlen(v);

		if (i > 0)
			*p++ = ',';
		memcpy(p, v, l);
		p += l;
	}
	*p++ = '}';
	*p = '\0';
	return buf;
}

/*
 * settle
 *		Ack (ok) or nack the batch.  False when the connection broke: the
 *		batch stays leased and is delivered again when its lease ends.
 */
static bool
settle(RelayConn *rc, const RelayOptions *opt, PGresult *batch, bool ok, const char *reason)
{
	PGconn	   *conn = rc->conn;
	char	   *positions = positions_array(batch);
	const char *params[4];
	PGresult   *res;
	int			n = PQntuples(batch);
	bool		result = true;

	params[0] = opt->group;
	params[1] = PQgetvalue(batch, 0, 0);
	params[2] = positions;
	params[3] = reason;
	res = exec_in_xact(rc, opt, ok ? ACK_SQL : NACK_SQL, ok ? 3 : 4, params);
	if (PQresultStatus(res) != PGRES_TUPLES_OK)
	{
		log_result_error(ok ? "ack" : "nack", conn, res);
		result = (PQstatus(conn) == CONNECTION_OK);
	}
	else
	{
		long		settled = strtol(PQgetvalue(res, 0, 0), NULL, 10);

		if (settled < n)
			relay_log("%d of %d messages of the batch had lost their lease (they were or will be delivered again)",
					  n - (int) settled, n);
	}
	PQclear(res);
	free(positions);
	return result;
}

static void
run_cleanup(RelayConn *rc, const RelayOptions *opt, bool *enabled)
{
	const char *params[1];
	PGresult   *res;

	params[0] = opt->retention;
	res = exec_in_xact(rc, opt, CLEANUP_SQL, 1, params);
	if (PQresultStatus(res) != PGRES_TUPLES_OK)
	{
		log_result_error("outbox cleanup", rc->conn, res);
		if (strcmp(result_sqlstate(res), "42501") == 0)
		{
			relay_log("cleanup disabled (the role may not delete from es.outbox)");
			*enabled = false;
		}
	}
	else if (opt->verbose)
		relay_log("cleanup deleted %s delivered outbox rows", PQgetvalue(res, 0, 0));
	PQclear(res);
}

/*
 * serve
 *		Claim, deliver and settle batches until the connection breaks, a
 *		stop is requested, or (--once) a claim comes back empty.  Claims
 *		again at once after a non-empty batch; after an empty one, waits for
 *		a notification, a signal or the poll interval.
 */
static ServeResult
serve(RelayConn *rc, const RelayOptions *opt)
{
	PGconn	   *conn = rc->conn;
	int			batch = opt->batch_size;
	char		batch_str[16];
	char		lease_str[32];
	bool		cleanup_enabled = (opt->cleanup_s > 0);
	int64_t		next_cleanup = now_ms() + (int64_t) opt->cleanup_s * 1000;

	snprintf(lease_str, sizeof(lease_str), "%d seconds", opt->lease_s);

	for (;;)
	{
		PGresult   *res;
		const char *params[3];
		int			n;

		if (stop_requested)
			return SERVE_STOP;
		if (drain_notifications(rc, opt) < 0)
			return SERVE_RECONNECT;

		snprintf(batch_str, sizeof(batch_str), "%d", batch);
		params[0] = opt->group;
		params[1] = batch_str;
		params[2] = lease_str;
		res = exec_in_xact(rc, opt, CLAIM_SQL, 3, params);
		if (PQresultStatus(res) != PGRES_TUPLES_OK)
		{
			const char *state = result_sqlstate(res);

			log_result_error("claim", conn, res);
			PQclear(res);
			if (PQstatus(conn) != CONNECTION_OK)
				return SERVE_RECONNECT;
			/* no such group, function or schema, or no privilege: give up */
			if (strcmp(state, "42704") == 0 || strcmp(state, "42883") == 0 ||
				strcmp(state, "3F000") == 0 || strcmp(state, "42501") == 0)
				return SERVE_FATAL;
			wait_for(-1, (int64_t) (opt->poll_s * 1000));
			continue;
		}

		n = PQntuples(res);
		if (n > 0)
		{
			char		reason[256];
			bool		ok;

			reason[0] = '\0';
			if (opt->command == NULL)
			{
				if (!deliver_stdout(res))
				{
					PQclear(res);
					return SERVE_FATAL;
				}
				ok = true;
			}
			else
				ok = deliver_command(res, opt, reason, sizeof(reason));

			if (opt->verbose || !ok)
				relay_log("%s %d messages (lease %s)%s%s", ok ? "delivered" : "could not deliver",
						  n, PQgetvalue(res, 0, 0), ok ? "" : ": ", reason);
			if (!settle(rc, opt, res, ok, reason))
			{
				PQclear(res);
				return SERVE_RECONNECT;
			}
			PQclear(res);

			/* a failing batch: halve the next ones, to isolate the culprit */
			if (!ok)
				batch = batch > 1 ? batch / 2 : 1;
			else if (batch < opt->batch_size)
				batch = batch * 2 < opt->batch_size ? batch * 2 : opt->batch_size;

			/*
			 * A full batch: more is probably waiting, claim again at once.
			 * Otherwise wait: a notification that came in the meantime ends
			 * the wait at once, and without one there is most likely
			 * nothing new (messages that waited behind a stream held by
			 * another relay of the group are found at the next poll).
			 */
			if (ok && n == atoi(batch_str))
				continue;
		}
		else
			PQclear(res);

		if (cleanup_enabled && now_ms() >= next_cleanup)
		{
			run_cleanup(rc, opt, &cleanup_enabled);
			next_cleanup = now_ms() + (int64_t) opt->cleanup_s * 1000;
			if (PQstatus(conn) != CONNECTION_OK)
				return SERVE_RECONNECT;
		}

		if (n == 0 && opt->once)
			return SERVE_DONE;

		/*
		 * Nothing more claimable now: wait for a wake-up, a signal or the
		 * poll interval -- unless a notification came in the meantime (it
		 * may already sit in libpq, read with the claim or the ack).
		 */
		{
			int			got = drain_notifications(rc, opt);

			if (got < 0)
				return SERVE_RECONNECT;
			if (got > 0)
				continue;
		}
		if (wait_for(PQsocket(conn), (int64_t) (opt->poll_s * 1000)) == 1 &&
			!PQconsumeInput(conn))
			return SERVE_RECONNECT;
	}
}

/* --all-nodes: the children, for the parent's signal handler */
static pid_t *children = NULL;
static int	nchildren = 0;

static void
forward_stop(int signo)
{
	int			save_errno = errno;
	int			i;

	stop_requested = 1;
	for (i = 0; i < nchildren; i++)
		if (children[i] > 0)
			kill(children[i], signo);
	errno = save_errno;
}

/*
 * run_all_nodes
 *		--all-nodes: ask the coordinator opt names for the Citus nodes, then
 *		fork one relay per node.  Returns -1 in a child, which goes on as a
 *		relay of its node (opt->node_host and node_port set); in the parent,
 *		waits for the children and returns the exit status.
 */
static int
run_all_nodes(RelayOptions *opt)
{
	PGconn	   *conn;
	PGresult   *res;
	bool		hopeless;
	char		buf[512];
	char		lockpath[] = "/tmp/es_relay.lock.XXXXXX";
	int			n;
	int			i;
	int			status = 0;
	int			alive;
	struct sigaction sa;

	conn = relay_connect(opt, &hopeless, buf, sizeof(buf));
	if (conn == NULL)
	{
		relay_log("could not connect to the coordinator: %s", buf);
		return EXIT_FATAL;
	}
	if (opt->create_group)
	{
		const char *params[1] = {opt->group};

		res = PQexecParams(conn, "SELECT es.es_outbox_create_group($1)", 1, NULL, params,
						   NULL, NULL, 0);
		if (PQresultStatus(res) != PGRES_TUPLES_OK)
		{
			relay_log("could not create consumer group \"%s\": %s", opt->group,
					  PQresultErrorMessage(res));
			PQclear(res);
			PQfinish(conn);
			return EXIT_FATAL;
		}
		PQclear(res);
		opt->create_group = false;
	}
	res = PQexec(conn,
				 "SELECT n.nodename, n.nodeport::text FROM pg_catalog.pg_dist_node AS n"
				 " WHERE n.isactive AND n.noderole OPERATOR(pg_catalog.=) 'primary'"
				 " UNION ALL SELECT NULL, NULL"
				 " WHERE NOT EXISTS (SELECT FROM pg_catalog.pg_dist_node AS c"
				 "                    WHERE c.groupid OPERATOR(pg_catalog.=) 0)");
	if (PQresultStatus(res) != PGRES_TUPLES_OK)
	{
		relay_log("--all-nodes needs the coordinator of a Citus cluster: %s",
				  PQresultErrorMessage(res));
		PQclear(res);
		PQfinish(conn);
		return EXIT_FATAL;
	}
	n = PQntuples(res);

	/* fcntl locks belong to a process: every child locks the one file */
	output_lock_fd = mkstemp(lockpath);
	if (output_lock_fd < 0)
	{
		relay_log("could not create a lock file: %s", strerror(errno));
		PQclear(res);
		PQfinish(conn);
		return EXIT_FATAL;
	}
	unlink(lockpath);

	children = calloc(n, sizeof(pid_t));
	if (children == NULL)
	{
		relay_log("out of memory");
		return EXIT_FATAL;
	}
	fflush(stdout);
	fflush(stderr);
	for (i = 0; i < n; i++)
	{
		pid_t		pid = fork();

		if (pid < 0)
		{
			relay_log("could not fork: %s", strerror(errno));
			status = EXIT_FATAL;
			break;
		}
		if (pid == 0)
		{
			/* the child: a relay of node i; the parent's connection is not ours */
			if (!PQgetisnull(res, i, 0))
			{
				opt->node_host = strdup(PQgetvalue(res, i, 0));
				opt->node_port = strdup(PQgetvalue(res, i, 1));
				snprintf(node_label, sizeof(node_label), " [%s:%s]", opt->node_host, opt->node_port);
			}
			else
				snprintf(node_label, sizeof(node_label), " [coordinator]");
			free(children);
			children = NULL;
			nchildren = 0;
			return -1;
		}
		children[nchildren++] = pid;
	}
	PQclear(res);
	PQfinish(conn);
	relay_log("delivering consumer group \"%s\" from %d nodes", opt->group, nchildren);

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = forward_stop;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	if (status != 0)
		forward_stop(SIGTERM);

	/* a child that fails stops the others: the group would stall there */
	alive = nchildren;
	while (alive > 0)
	{
		int			st;
		pid_t		pid = waitpid(-1, &st, 0);
		int			code;

		if (pid < 0)
		{
			if (errno == EINTR)
				continue;
			break;
		}
		for (i = 0; i < nchildren; i++)
			if (children[i] == pid)
				children[i] = 0;
		alive--;
		code = WIFEXITED(st) ? WEXITSTATUS(st) : EXIT_FATAL;
		if (code > status)
			status = code;
		if (code != 0 && !stop_requested)
		{
			relay_log("a node's relay failed; stopping the others");
			forward_stop(SIGTERM);
		}
	}
	return status;
}

int
main(int argc, char **argv)
{
	static struct option long_options[] = {
		{"dbname", required_argument, NULL, 'd'},
		{"group", required_argument, NULL, 'g'},
		{"batch-size", required_argument, NULL, 'b'},
		{"lease", required_argument, NULL, 'l'},
		{"poll-interval", required_argument, NULL, 'p'},
		{"cleanup-interval", required_argument, NULL, 'c'},
		{"retention", required_argument, NULL, 'r'},
		{"create-group", no_argument, NULL, 1},
		{"once", no_argument, NULL, 2},
		{"listen", required_argument, NULL, 3},
		{"no-listen", no_argument, NULL, 4},
		{"all-nodes", no_argument, NULL, 5},
		{"verbose", no_argument, NULL, 'v'},
		{"version", no_argument, NULL, 'V'},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0}
	};
	RelayOptions opt;
	struct sigaction sa;
	int			c;
	int64_t		backoff_ms = 0;
	bool		ever_connected = false;
	int			exit_status = 0;

	memset(&opt, 0, sizeof(opt));
	opt.batch_size = 100;
	opt.lease_s = 60;
	opt.poll_s = 1.0;
	opt.cleanup_s = 60;
	opt.retention = "0";
	opt.listen = LISTEN_AUTO;

	while ((c = getopt_long(argc, argv, "d:g:b:l:p:c:r:vVh", long_options, NULL)) != -1)
	{
		switch (c)
		{
			case 'd':
				opt.conninfo = optarg;
				break;
			case 'g':
				opt.group = optarg;
				break;
			case 'b':
				if (!parse_int(optarg, 1, 10000, &opt.batch_size))
				{
					fprintf(stderr, "%s: invalid batch size \"%s\": must be between 1 and 10000\n",
							progname, optarg);
					exit(EXIT_USAGE);
				}
				break;
			case 'l':
				if (!parse_int(optarg, 1, 86400, &opt.lease_s))
				{
					fprintf(stderr, "%s: invalid lease \"%s\": must be between 1 and 86400 seconds\n",
							progname, optarg);
					exit(EXIT_USAGE);
				}
				break;
			case 'p':
				if (!parse_seconds(optarg, 0.01, &opt.poll_s))
				{
					fprintf(stderr, "%s: invalid poll interval \"%s\": must be between 0.01 and 86400 seconds\n",
							progname, optarg);
					exit(EXIT_USAGE);
				}
				break;
			case 'c':
				if (!parse_int(optarg, 0, 86400, &opt.cleanup_s))
				{
					fprintf(stderr, "%s: invalid cleanup interval \"%s\": must be between 0 and 86400 seconds\n",
							progname, optarg);
					exit(EXIT_USAGE);
				}
				break;
			case 'r':
				opt.retention = optarg;
				break;
			case 1:
				opt.create_group = true;
				break;
			case 2:
				opt.once = true;
				break;
			case 3:
				if (strcmp(optarg, "auto") == 0)
					opt.listen = LISTEN_AUTO;
				else if (strcmp(optarg, "always") == 0 || strcmp(optarg, "on") == 0)
					opt.listen = LISTEN_ALWAYS;
				else if (strcmp(optarg, "never") == 0 || strcmp(optarg, "off") == 0)
					opt.listen = LISTEN_NEVER;
				else
				{
					fprintf(stderr, "%s: invalid --listen \"%s\": must be auto, always or never\n",
							progname, optarg);
					exit(EXIT_USAGE);
				}
				break;
			case 4:
				opt.listen = LISTEN_NEVER;
				break;
			case 5:
				opt.all_nodes = true;
				break;
			case 'v':
				opt.verbose++;
				break;
			case 'V':
				printf("es_relay (es_ext) %s\n", ES_RELAY_VERSION);
				exit(0);
			case 'h':
				usage();
				exit(0);
			default:
				fprintf(stderr, "Try \"%s --help\" for more information.\n", progname);
				exit(EXIT_USAGE);
		}
	}
	if (optind < argc)
		opt.command = &argv[optind];
	if (opt.group == NULL || opt.group[0] == '\0')
	{
		fprintf(stderr, "%s: no consumer group given (-g)\n", progname);
		fprintf(stderr, "Try \"%s --help\" for more information.\n", progname);
		exit(EXIT_USAGE);
	}

	/*
	 * A connection string that does not parse (a syntax error, an unknown
	 * option) cannot work: say so before trying.  -d takes a plain database
	 * name too, as libpq does ("=" or a URI prefix makes a connection string).
	 */
	if (opt.conninfo != NULL &&
		(strchr(opt.conninfo, '=') != NULL || strncmp(opt.conninfo, "postgresql://", 13) == 0 ||
		 strncmp(opt.conninfo, "postgres://", 11) == 0))
	{
		char	   *err = NULL;
		PQconninfoOption *parsed = PQconninfoParse(opt.conninfo, &err);

		if (parsed == NULL)
		{
			log_connect_error("could not connect (not retrying)", err ? err : "out of memory");
			PQfreemem(err);
			exit(EXIT_FATAL);
		}
		PQconninfoFree(parsed);
	}

	if (opt.all_nodes)
	{
		int			st = run_all_nodes(&opt);

		if (st >= 0)
			return st;
		/* a child: a relay of its node, from here on */
	}

	if (pipe(wake_pipe) != 0 ||
		fcntl(wake_pipe[0], F_SETFL, O_NONBLOCK) != 0 ||
		fcntl(wake_pipe[1], F_SETFL, O_NONBLOCK) != 0 ||
		fcntl(wake_pipe[0], F_SETFD, FD_CLOEXEC) != 0 ||
		fcntl(wake_pipe[1], F_SETFD, FD_CLOEXEC) != 0)
	{
		fprintf(stderr, "%s: could not create a pipe: %s\n", progname, strerror(errno));
		exit(EXIT_FATAL);
	}
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = handle_stop;
	sigemptyset(&sa.sa_mask);
	sa.sa_flags = 0;			/* no SA_RESTART: a signal interrupts the wait */
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);
	srandom((unsigned int) (getpid() ^ now_ms()));

	while (!stop_requested)
	{
		RelayConn	rc;
		ServeResult r;
		bool		hopeless;
		char		buf[512];

		memset(&rc, 0, sizeof(rc));
		rc.conn = relay_connect(&opt, &hopeless, buf, sizeof(buf));
		if (rc.conn == NULL)
		{
			int64_t		delay;

			if (hopeless)
			{
				exit_status = EXIT_FATAL;
				break;
			}
			if (stop_requested)
				break;
			delay = next_backoff(&backoff_ms);
			relay_log("could not connect: %s; retrying in %d ms", buf, (int) delay);
			wait_for(-1, delay);
			continue;
		}

		r = setup(&rc, &opt);
		if (r == SERVE_DONE)
		{
			if (rc.pooler)
				relay_log("%s consumer group \"%s\" (server process %d, through a connection pooler; %s)",
						  ever_connected ? "reconnected; delivering" : "delivering",
						  opt.group, rc.server_pid,
						  rc.listening ? "LISTEN (--listen=always)" : "polling, no LISTEN");
			else
				relay_log("%s consumer group \"%s\" (server process %d%s)",
						  ever_connected ? "reconnected; delivering" : "delivering",
						  opt.group, rc.server_pid, rc.listening ? "" : "; polling, no LISTEN");
			ever_connected = true;
			backoff_ms = 0;
			r = serve(&rc, &opt);
		}
		PQfinish(rc.conn);

		if (r == SERVE_STOP || r == SERVE_DONE)
			break;
		if (r == SERVE_FATAL)
		{
			exit_status = EXIT_FATAL;
			break;
		}
		{
			int64_t		delay = next_backoff(&backoff_ms);

			relay_log("connection lost; reconnecting in %d ms", (int) delay);
			wait_for(-1, delay);
		}
	}

	if (exit_status == 0)
		relay_log("stopped");
	return exit_status;
}
