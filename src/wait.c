/*-------------------------------------------------------------------------
 *
 * wait.c
 *	  Read-your-writes: es_wait_for, es_wait_for_checkpoint and
 *	  es_wait_for_group wait until a projection, a global-log subscriber or
 *	  an outbox consumer group has processed everything up to a consistency
 *	  token (the es.log_cursor es_append returns).
 *
 * A wait is a loop: check the condition with a fresh snapshot (READ
 * COMMITTED: each check sees what committed before it), and if it does not
 * hold, sleep until woken or until a recheck is due, then check again, until
 * the condition holds (true) or the timeout passes (false).  A timeout of
 * zero or less checks once.
 *
 * Wake-ups: when es_ext is in shared_preload_libraries, the sleepers sleep
 * on one condition variable in shared memory.  A transaction that advanced
 * a projection checkpoint (async.c), a subscriber checkpoint
 * (es_checkpoint_save) or a consumer group's acks and dead letters
 * (outbox_api.c) calls EsWaitWakeAtCommit(); its commit callback broadcasts
 * the condition variable once the commit is visible, and every sleeper
 * rechecks.  The callback only takes the condition variable's spinlock and
 * sets latches: no allocation, no error.  A prepared transaction does not
 * wake anyone: PREPARE TRANSACTION forgets the wake-up, and the COMMIT
 * PREPARED that makes its work visible may run in another session, which
 * knows nothing of it (nor do commits on the primary, for sleepers on a hot
 * standby).  So a sleeper never sleeps longer than ES_WAIT_RECHECK_MS
 * between two checks: what such a commit did is seen within that time.
 * On a hot standby, and without preload, waits poll: they sleep on their
 * own latch for ES_WAIT_POLL_MIN_MS, doubling up to ES_WAIT_POLL_MAX_MS.
 *
 * A wait cannot see progress under REPEATABLE READ or SERIALIZABLE (one
 * snapshot for the whole transaction): there, a condition that does not
 * hold at once is an error (25001) rather than a sleep until the timeout.
 * Likewise a transaction that holds a transaction id holds the global log
 * horizon back: a token at or above its own id can never be reached while
 * it runs (its own uncommitted appends included), and is an error (25001).
 *
 * Locking: the checks are plain reads (SPI saved plans); nothing is locked.
 * Sleeping takes the condition variable's spinlock only.  Interrupts
 * (pg_cancel_backend, statement_timeout) are served while sleeping.
 *
 * Memory: each check's SPI result is freed after it; everything else is in
 * the SPI procedure context, released by SPI_finish.
 *
 * src/wait.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/transam.h"
#include "access/xact.h"
#include "access/xlog.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "storage/condition_variable.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"
#include "utils/builtins.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"
#include "utils/wait_event.h"
#include "utils/xid8.h"

#include "es_ext.h"

typedef struct EsWaitShared
{
	ConditionVariable cv;		/* broadcast at the commit of any progress */
} EsWaitShared;

/* NULL unless es_ext is in shared_preload_libraries */
static EsWaitShared *wait_shared = NULL;

static shmem_request_hook_type prev_shmem_request_hook = NULL;
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;

/* this transaction made progress: broadcast at its commit */
static bool wake_at_commit = false;
static bool xact_callback_registered = false;

/* a token, parsed */
typedef struct EsWaitToken
{
	int32		era;
	Datum		tx_id;			/* xid8 */
	int64		position;
} EsWaitToken;

/* what a check needs besides the token */
typedef enum EsWaitKind
{
	ES_WAIT_PROJECTION,
	ES_WAIT_CHECKPOINT,
	ES_WAIT_GROUP
} EsWaitKind;

static void
wait_shmem_request(void)
{
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
	RequestAddinShmemSpace(MAXALIGN(sizeof(EsWaitShared)));
}

static void
wait_shmem_startup(void)
{
	bool		found;

	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();

	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	wait_shared = ShmemInitStruct("es_ext wait", sizeof(EsWaitShared), &found);
	if (!found)
		ConditionVariableInit(&wait_shared->cv);
	LWLockRelease(AddinShmemInitLock);
}

/*
 * EsWaitRegister
 *		Called by _PG_init while shared_preload_libraries are loaded: reserve
 *		the condition variable of the sleepers.  Registers only.
 */
void
EsWaitRegister(void)
{
	prev_shmem_request_hook = shmem_request_hook;
	shmem_request_hook = wait_shmem_request;
	prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = wait_shmem_startup;
}

/*
 * wait_xact_callback
 *		At commit (the transaction's work is visible by then), wake every
 *		sleeper if this transaction asked for it.  Runs where an error would
 *		be fatal: takes a spinlock and sets latches, nothing else.  Abort and
 *		PREPARE forget the request (see the file header for prepared
 *		transactions).
 */
static void
wait_xact_callback(XactEvent event, void *arg)
{
	switch (event)
	{
		case XACT_EVENT_COMMIT:
		case XACT_EVENT_PARALLEL_COMMIT:
			if (wake_at_commit)
			{
				wake_at_commit = false;
				if (wait_shared != NULL)
					ConditionVariableBroadcast(&wait_shared->cv);
			}
			break;
		case XACT_EVENT_ABORT:
		case XACT_EVENT_PARALLEL_ABORT:
		case XACT_EVENT_PREPARE:
			wake_at_commit = false;
			break;
		default:
			break;
	}
}

/*
 * EsWaitWakeAtCommit
 *		Call inside a transaction that advanced a projection checkpoint, a
 *		subscriber checkpoint or a consumer group's deliveries: when it
 *		commits, every es_wait_for* sleeper rechecks.  Any number of calls
 *		make one wake-up; a call in a subtransaction that rolls back still
 *		wakes them (they find nothing new).  A no-op without preload
 *		(sleepers poll then).
 */
void
EsWaitWakeAtCommit(void)
{
	if (wait_shared == NULL)
		return;
	if (!xact_callback_registered)
	{
		RegisterXactCallback(wait_xact_callback, NULL);
		xact_callback_registered = true;
	}
	wake_at_commit = true;
}

/* ---------------------------------------------------------------- checks */

/* the trigger of an es_ext projection: what es.projections lists */
static EsPlan projection_plan = {
	NULL,
	"SELECT t.tgenabled OPERATOR(pg_catalog.<>) 'D' AS enabled,"
	"       a.projection IS NOT NULL AS async,"
	"       COALESCE(s.state OPERATOR(pg_catalog.=) 'rebuilding' AND s.read_model IS NULL,"
	"                false) AS rebuilding,"
	"       COALESCE(a.checkpoint OPERATOR(pg_catalog.>=) ROW($2, $3, $4)::es.log_cursor,"
	"                false) AS reached"
	"  FROM pg_catalog.pg_trigger AS t"
	"  LEFT JOIN es.async_projections AS a ON a.projection OPERATOR(pg_catalog.=) t.tgname"
	"  LEFT JOIN es.projection_status AS s ON s.projection OPERATOR(pg_catalog.=) t.tgname"
	" WHERE t.tgrelid OPERATOR(pg_catalog.=) 'es.events'::pg_catalog.regclass"
	"   AND t.tgname OPERATOR(pg_catalog.=) $1"
	"   AND NOT t.tgisinternal"
	"   AND (t.tgtype::integer OPERATOR(pg_catalog.&) 4) OPERATOR(pg_catalog.<>) 0"
	"   AND (t.tgtype::integer OPERATOR(pg_catalog.&) 66) OPERATOR(pg_catalog.=) 0"
	"   AND (t.tgfoid OPERATOR(pg_catalog.=) 'es.es_project()'::pg_catalog.regprocedure"
	"        OR NOT EXISTS (SELECT FROM pg_catalog.pg_depend AS dep"
	"                        WHERE dep.classid OPERATOR(pg_catalog.=) 'pg_catalog.pg_proc'::pg_catalog.regclass"
	"                          AND dep.objid OPERATOR(pg_catalog.=) t.tgfoid"
	"                          AND dep.refclassid OPERATOR(pg_catalog.=) 'pg_catalog.pg_extension'::pg_catalog.regclass"
	"                          AND dep.deptype OPERATOR(pg_catalog.=) 'e'))",
	4, {NAMEOID, INT4OID, XID8OID, INT8OID}
};

static EsPlan checkpoint_plan = {
	NULL,
	"SELECT COALESCE(c.cursor OPERATOR(pg_catalog.>=) ROW($2, $3, $4)::es.log_cursor, false)"
	"  FROM es.checkpoints AS c WHERE c.name OPERATOR(pg_catalog.=) $1",
	4, {TEXTOID, INT4OID, XID8OID, INT8OID}
};

static EsPlan group_plan = {
	NULL,
	"SELECT g.group_id FROM es.outbox_groups AS g WHERE g.name OPERATOR(pg_catalog.=) $1",
	1, {TEXTOID}
};

/*
 * An undelivered message of the group from an event at or before the
 * token: the group's deliveries (primary key range), each joined to its
 * outbox row and event by primary key.  Costs the group's backlog.
 */
static EsPlan group_pending_plan = {
	NULL,
	"SELECT EXISTS (SELECT FROM es.outbox_deliveries AS d"
	"                 JOIN es.outbox AS o ON o.position OPERATOR(pg_catalog.=) d.position"
	"                 JOIN es.events AS e ON e.stream_id OPERATOR(pg_catalog.=) o.aggregateid"
	"                                    AND e.version OPERATOR(pg_catalog.=) o.stream_version"
	"                WHERE d.group_id OPERATOR(pg_catalog.=) $1"
	"                  AND ROW(e.era, e.tx_id, e.global_position)::es.log_cursor"
	"                      OPERATOR(pg_catalog.<=) ROW($2, $3, $4)::es.log_cursor)",
	4, {INT4OID, INT4OID, XID8OID, INT8OID}
};

/*
 * run_check
 *		Run plan p with args under snapshot snap (InvalidSnapshot: the active
 *		one) and return its first column of its first row as a boolean;
 *		*found is false when it returned no row.
 */
static bool
run_check(EsPlan *p, Datum *args, Snapshot snap, bool *found)
{
	int			rc;
	bool		isnull;
	bool		result = false;

	rc = SPI_execute_snapshot(EsGetPlan(p), args, NULL, snap, InvalidSnapshot, true, false, 1);
	if (rc != SPI_OK_SELECT)
		elog(ERROR, "could not run a check of es_wait_for: %s", SPI_result_code_string(rc));
	*found = SPI_processed > 0;
	if (*found)
	{
		Datum		d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);

		result = !isnull && DatumGetBool(d);
	}
	SPI_freetuptable(SPI_tuptable);
	return result;
}

/*
 * check_projection
 *		Has projection name applied everything up to the token, as of snap?
 *		An asynchronous projection: its checkpoint is at or past the token
 *		(and no rebuild in place runs).  An inline one: at once, unless it is
 *		being rebuilt in place (then when the rebuild is over).  A rebuild in
 *		a shadow does not count: the live read model stays current.  Raises 42704 for a name
 *		that is not a projection, 55000 for a disabled inline projection
 *		(it applies nothing: rebuild it or declare it asynchronous).
 */
static bool
check_projection(Name name, const EsWaitToken *tok, Snapshot snap)
{
	Datum		args[4];
	bool		isnull;
	bool		enabled,
				async,
				rebuilding,
				reached;
	HeapTuple	tup;
	TupleDesc	desc;
	int			rc;

	args[0] = NameGetDatum(name);
	args[1] = Int32GetDatum(tok->era);
	args[2] = tok->tx_id;
	args[3] = Int64GetDatum(tok->position);
	rc = SPI_execute_snapshot(EsGetPlan(&projection_plan), args, NULL, snap, InvalidSnapshot,
							  true, false, 1);
	if (rc != SPI_OK_SELECT)
		elog(ERROR, "could not look up projection: %s", SPI_result_code_string(rc));
	if (SPI_processed == 0)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("projection \"%s\" does not exist", NameStr(*name)),
				 errdetail("A projection is an AFTER INSERT trigger on es.events (see the view es.projections).")));
	tup = SPI_tuptable->vals[0];
	desc = SPI_tuptable->tupdesc;
	enabled = DatumGetBool(SPI_getbinval(tup, desc, 1, &isnull));
	async = DatumGetBool(SPI_getbinval(tup, desc, 2, &isnull));
	rebuilding = DatumGetBool(SPI_getbinval(tup, desc, 3, &isnull));
	reached = DatumGetBool(SPI_getbinval(tup, desc, 4, &isnull));
	SPI_freetuptable(SPI_tuptable);

	if (rebuilding)
		return false;
	if (async)
		return reached;
	if (!enabled)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("projection \"%s\" is disabled", NameStr(*name)),
				 errdetail("Its trigger on es.events is disabled and it is neither asynchronous nor being rebuilt: it applies no events."),
				 errhint("Enable the trigger, rebuild the projection or declare it asynchronous with es_create_async_projection.")));
	return true;
}

/*
 * check_group
 *		Has consumer group name acked or dead-lettered every delivery of a
 *		message from an event at or before the token, as of snap?  Also
 *		requires the token's transaction to be below the global log horizon:
 *		an older transaction still running could yet add such events.
 *		Raises 42704 for a group that does not exist (any more).
 */
static bool
check_group(text *name, const EsWaitToken *tok, Snapshot snap)
{
	Datum		arg = PointerGetDatum(name);
	Datum		args[4];
	bool		found;
	bool		isnull;
	int			rc;
	int32		era;
	Snapshot	s = snap != InvalidSnapshot ? snap : GetActiveSnapshot();

	rc = SPI_execute_snapshot(EsGetPlan(&group_plan), &arg, NULL, snap, InvalidSnapshot,
							  true, false, 1);
	if (rc != SPI_OK_SELECT)
		elog(ERROR, "could not look up consumer group: %s", SPI_result_code_string(rc));
	if (SPI_processed == 0)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("consumer group \"%s\" does not exist", text_to_cstring(name))));
	args[0] = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
	SPI_freetuptable(SPI_tuptable);

	/* every transaction that could add an event before the token is over */
	era = EsCurrentEra();
	if (tok->era > era)
		return false;
	if (tok->era == era &&
		!FullTransactionIdPrecedes(DatumGetFullTransactionId(tok->tx_id), EsLogHorizon(s)))
		return false;

	args[1] = Int32GetDatum(tok->era);
	args[2] = tok->tx_id;
	args[3] = Int64GetDatum(tok->position);
	return !run_check(&group_pending_plan, args, snap, &found);
}

/*
 * check_once
 *		Run the check of kind on target under snap.
 */
static bool
check_once(EsWaitKind kind, Datum target, const EsWaitToken *tok, Snapshot snap)
{
	switch (kind)
	{
		case ES_WAIT_PROJECTION:
			return check_projection(DatumGetName(target), tok, snap);
		case ES_WAIT_CHECKPOINT:
			{
				Datum		args[4];
				bool		found;

				args[0] = target;
				args[1] = Int32GetDatum(tok->era);
				args[2] = tok->tx_id;
				args[3] = Int64GetDatum(tok->position);
				/* a checkpoint that does not exist yet may be created: wait */
				return run_check(&checkpoint_plan, args, snap, &found);
			}
		case ES_WAIT_GROUP:
			return check_group(DatumGetTextPP(target), tok, snap);
	}
	return false;				/* keep compiler quiet */
}

/* ------------------------------------------------------------------ wait */

/*
 * timeout_ms
 *		An interval as milliseconds, clamped to [0, PG_INT32_MAX] (a month
 *		counts 30 days, as interval comparisons do).
 */
static long
timeout_ms(Interval *iv)
{
	double		us = (double) iv->time +
		((double) iv->day + (double) iv->month * DAYS_PER_MONTH) * USECS_PER_DAY;

	if (us <= 0)
		return 0;
	if (us / 1000.0 >= (double) PG_INT32_MAX)
		return PG_INT32_MAX;
	return (long) (us / 1000.0);
}

/*
 * parse_token
 *		Check and split the token argument: NULL (22004), a NULL field
 *		(22004) or a negative era (22023) are refused.
 */
static void
parse_token(FunctionCallInfo fcinfo, EsWaitToken *tok)
{
	if (PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("token cannot be null"),
				 errhint("Pass the token of es_append's result, or a log_cursor es_read_all returned.")));
	EsParseCursor(PG_GETARG_HEAPTUPLEHEADER(1), &tok->era, &tok->tx_id, &tok->position);
	if (tok->era < 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("token era cannot be negative"),
				 errhint("Pass the token of es_append's result, or a log_cursor es_read_all returned.")));
}

/*
 * refuse_unreachable
 *		Called when a check failed: raise 25001 when waiting cannot help.
 *		Under REPEATABLE READ or SERIALIZABLE every check sees the same
 *		snapshot.  A transaction with a transaction id holds the global log
 *		horizon below that id until it ends, so no projection, subscriber or
 *		group gets past a token of the current era at or above it (which
 *		every token of the transaction's own appends is).
 */
static void
refuse_unreachable(const char *what, const EsWaitToken *tok)
{
	FullTransactionId own = GetTopFullTransactionIdIfAny();

	if (IsolationUsesXactSnapshot())
		ereport(ERROR,
				(errcode(ERRCODE_ACTIVE_SQL_TRANSACTION),
				 errmsg("cannot wait for %s in a transaction using isolation level %s",
						what, IsolationIsSerializable() ? "SERIALIZABLE" : "REPEATABLE READ"),
				 errdetail("The token has not been reached, and the transaction's snapshot would never show progress."),
				 errhint("Wait in a READ COMMITTED transaction, before the transaction that reads the result.")));
	if (FullTransactionIdIsValid(own) && tok->era >= EsCurrentEra() &&
		FullTransactionIdFollowsOrEquals(DatumGetFullTransactionId(tok->tx_id), own))
		ereport(ERROR,
				(errcode(ERRCODE_ACTIVE_SQL_TRANSACTION),
				 errmsg("cannot wait for %s inside the transaction the token belongs to", what),
				 errdetail("The token's transaction id " UINT64_FORMAT " is not below this transaction's id " UINT64_FORMAT ": it cannot be reached before this transaction ends.",
						   U64FromFullTransactionId(DatumGetFullTransactionId(tok->tx_id)),
						   U64FromFullTransactionId(own)),
				 errhint("Commit the transaction that appended the events, then wait.")));
}

/*
 * wait_for
 *		The loop shared by the three functions: check with a fresh snapshot
 *		(the transaction's own under REPEATABLE READ / SERIALIZABLE), and
 *		sleep between checks until the check holds (true) or timeout_ms
 *		passed (false).  See the file header for how sleepers are woken.
 *		Must be called inside SPI.
 */
static bool
wait_for(EsWaitKind kind, Datum target, const char *what, const EsWaitToken *tok, long timeout)
{
	TimestampTz deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), timeout);
	bool		use_cv = wait_shared != NULL && !RecoveryInProgress();
	long		backoff = ES_WAIT_POLL_MIN_MS;
	bool		reached = false;
	bool		first = true;

	/* in the wait list before the first check: a wake-up cannot slip by */
	if (use_cv)
		ConditionVariablePrepareToSleep(&wait_shared->cv);

	for (;;)
	{
		Snapshot	snap = InvalidSnapshot;
		long		remaining;

		CHECK_FOR_INTERRUPTS();

		if (!IsolationUsesXactSnapshot())
			snap = RegisterSnapshot(GetLatestSnapshot());
		reached = check_once(kind, target, tok, snap);
		if (snap != InvalidSnapshot)
			UnregisterSnapshot(snap);
		if (reached)
			break;
		if (first)
			refuse_unreachable(what, tok);
		first = false;

		remaining = TimestampDifferenceMilliseconds(GetCurrentTimestamp(), deadline);
		if (remaining <= 0)
			break;

		if (use_cv)
			(void) ConditionVariableTimedSleep(&wait_shared->cv,
											   Min(remaining, ES_WAIT_RECHECK_MS),
											   PG_WAIT_EXTENSION);
		else
		{
			(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
							 Min(remaining, backoff), PG_WAIT_EXTENSION);
			ResetLatch(MyLatch);
			backoff = Min(backoff * 2, ES_WAIT_POLL_MAX_MS);
		}
	}

	if (use_cv)
		ConditionVariableCancelSleep();
	return reached;
}

/*
 * wait_main
 *		Check the arguments of an es_wait_for* function (target, token,
 *		timeout: NULL is 22004, reported as null_message for the target),
 *		then wait.  target_what names the kind of target in messages.
 */
static Datum
wait_main(FunctionCallInfo fcinfo, EsWaitKind kind, const char *target_what,
		  const char *null_message)
{
	EsWaitToken tok;
	long		timeout;
	bool		reached;
	char	   *what;

	/* a token is a cursor of one node's log (citus.c) */
	EsRefuseDistributed("waiting for a log cursor", NULL);
	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("%s", null_message)));
	parse_token(fcinfo, &tok);
	if (PG_ARGISNULL(2))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("timeout cannot be null"),
				 errhint("Pass an interval; zero or less checks once without waiting.")));
	timeout = timeout_ms(PG_GETARG_INTERVAL_P(2));

	if (kind == ES_WAIT_PROJECTION)
		what = psprintf("projection \"%s\"", NameStr(*PG_GETARG_NAME(0)));
	else
		what = psprintf("%s \"%s\"", target_what, text_to_cstring(PG_GETARG_TEXT_PP(0)));

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	reached = wait_for(kind, PG_GETARG_DATUM(0), what, &tok, timeout);
	if (SPI_finish() != SPI_OK_FINISH)
		elog(ERROR, "SPI_finish failed");
	PG_RETURN_BOOL(reached);
}

PG_FUNCTION_INFO_V1(es_wait_for);

/*
 * es_wait_for(projection name, token es.log_cursor, timeout interval)
 *		RETURNS boolean
 *
 * True when the projection has applied everything up to the token, false
 * when timeout passed first.  Errors: 22004 (a NULL argument or token
 * field), 22023 (negative era), 42704 (no such projection), 55000 (a
 * disabled inline projection), 25001 (cannot be reached from this
 * transaction, see refuse_unreachable).
 */
Datum
es_wait_for(PG_FUNCTION_ARGS)
{
	return wait_main(fcinfo, ES_WAIT_PROJECTION, "projection",
					 "projection name cannot be null");
}

PG_FUNCTION_INFO_V1(es_wait_for_checkpoint);

/*
 * es_wait_for_checkpoint(checkpoint text, token es.log_cursor,
 *		timeout interval) RETURNS boolean
 *
 * True when the subscriber checkpoint (es.checkpoints) is at or past the
 * token.  A checkpoint that does not exist (yet) is waited for: it may be
 * created.  Errors: 22004, 22023, 25001 as es_wait_for.
 */
Datum
es_wait_for_checkpoint(PG_FUNCTION_ARGS)
{
	return wait_main(fcinfo, ES_WAIT_CHECKPOINT, "checkpoint",
					 "checkpoint name cannot be null");
}

PG_FUNCTION_INFO_V1(es_wait_for_group);

/*
 * es_wait_for_group(group_name text, token es.log_cursor, timeout interval)
 *		RETURNS boolean
 *
 * True when the consumer group has acked or dead-lettered every delivery
 * of a message from an event at or before the token (see check_group).
 * Errors: 22004, 22023, 25001 as es_wait_for; 42704 (no such group).
 */
Datum
es_wait_for_group(PG_FUNCTION_ARGS)
{
	return wait_main(fcinfo, ES_WAIT_GROUP, "consumer group",
					 "consumer group cannot be null");
}
