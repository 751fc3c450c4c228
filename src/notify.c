/*-------------------------------------------------------------------------
 *
 * notify.c
 *	  Wake-ups of the outbox consumers: NOTIFY on channel "es_outbox", with
 *	  an empty payload, at most once per committing transaction.
 *
 * A consumer LISTENs on es_outbox and, when woken, claims from the outbox
 * tables; the notification carries no data.  When a transaction wrote outbox
 * deliveries, EsNotifyRequest() arranges its wake-up according to
 * es.notify:
 *
 *	off		nothing; consumers find the messages when they poll.
 *	commit	the transaction sends NOTIFY es_outbox itself, from its
 *			pre-commit callback: once however many appends it made, and not
 *			at all if it is prepared (PREPARE TRANSACTION refuses a pending
 *			NOTIFY; a prepared transaction's messages are found by polling).
 *			Costly under concurrency: PostgreSQL holds a cluster-wide lock
 *			from queueing the notification until the commit record is
 *			flushed, so committing appenders serialize on the WAL flush.
 *	worker	the transaction never notifies: its commit callback marks its
 *			database's slot in shared memory and sets the latch of the
 *			notify worker of that database, a background worker that sends
 *			one NOTIFY for all the commits that marked the slot since its
 *			last one (with synchronous_commit off: a NOTIFY needs no
 *			durability).  Needs shared_preload_libraries; without it, or
 *			when the worker cannot run, the backend falls back to commit.
 *
 * The worker machinery: a launcher (a background worker registered by
 * _PG_init, connected to the shared catalogs only) starts one notify worker
 * per database on demand, as a dynamic background worker, when a commit
 * marks a slot that has no worker.  The same launcher starts the projection
 * workers of projection_worker.c, which keeps their slots: each round it
 * calls EsProjectionLauncherTick, and its connection lets that code read
 * pg_database to find the databases with asynchronous projections after a
 * start.  After each NOTIFY, a notify worker waits
 * es.notify_worker_interval before the next one, so that under load one
 * notification covers the commits of that interval.  It exits after
 * es.notify_worker_idle_timeout without work, so that it never holds a
 * database (DROP DATABASE waits 5 seconds for other connections to go).
 *
 * Locking: the shared state is protected by one spinlock, held only for a
 * few assignments (never across a syscall, an allocation or a SetLatch).
 * The commit callback runs after the commit is durable and visible, where
 * an error would be fatal: it only takes the spinlock and sets a latch.
 *
 * src/notify.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "commands/async.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/lwlock.h"
#include "storage/proc.h"
#include "storage/shmem.h"
#include "storage/spin.h"
#include "tcop/tcopprot.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/timestamp.h"
#include "utils/wait_event.h"

#include "es_ext.h"

typedef enum EsNotifySlotState
{
	SLOT_IDLE,					/* no worker */
	SLOT_STARTING,				/* the launcher registered a worker */
	SLOT_RUNNING				/* a worker serves the slot */
} EsNotifySlotState;

/*
 * One database.  A slot that is idle and has no pending wake-up holds no
 * information and may be given to another database.
 */
typedef struct EsNotifySlot
{
	Oid			dbid;			/* InvalidOid: never used */
	bool		pending;		/* a commit asked for a wake-up */
	EsNotifySlotState state;
	pid_t		worker_pid;
	Latch	   *worker_latch;	/* set while RUNNING */
	TimestampTz retry_after;	/* no worker before then (start failed) */
	uint64		requested;		/* commits that asked for a wake-up */
	uint64		sent;			/* NOTIFYs sent by workers */
} EsNotifySlot;

typedef struct EsNotifyShared
{
	slock_t		mutex;
	pid_t		launcher_pid;
	Latch	   *launcher_latch;
	EsNotifySlot slots[ES_NOTIFY_SLOTS];
} EsNotifyShared;

/* NULL unless es_ext is in shared_preload_libraries */
static EsNotifyShared *notify_shared = NULL;

static shmem_request_hook_type prev_shmem_request_hook = NULL;
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;

/* this transaction's wake-up: NOTIFY at pre-commit, or the worker at commit */
static bool notify_at_pre_commit = false;
static bool wake_worker_at_commit = false;
static bool xact_callback_registered = false;
static bool fallback_warned = false;

PGDLLEXPORT void es_notify_launcher_main(Datum main_arg);
PGDLLEXPORT void es_notify_worker_main(Datum main_arg);

static const char *
mode_name(int mode)
{
	switch (mode)
	{
		case ES_NOTIFY_OFF:
			return "off";
		case ES_NOTIFY_COMMIT:
			return "commit";
		case ES_NOTIFY_WORKER:
			return "worker";
	}
	return "unknown";
}

static void
notify_shmem_request(void)
{
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
	RequestAddinShmemSpace(MAXALIGN(sizeof(EsNotifyShared)));
}

static void
notify_shmem_startup(void)
{
	bool		found;

	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();

	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	notify_shared = ShmemInitStruct("es_ext notify", sizeof(EsNotifyShared), &found);
	if (!found)
	{
		memset(notify_shared, 0, sizeof(EsNotifyShared));
		SpinLockInit(&notify_shared->mutex);
	}
	LWLockRelease(AddinShmemInitLock);
}

/*
 * EsNotifyRegister
 *		Called by _PG_init while shared_preload_libraries are loaded: reserve
 *		the shared state and register the launcher.  Registers only.
 */
void
EsNotifyRegister(void)
{
	BackgroundWorker worker;

	prev_shmem_request_hook = shmem_request_hook;
	shmem_request_hook = notify_shmem_request;
	prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = notify_shmem_startup;

	memset(&worker, 0, sizeof(worker));
	/* connected to no database: to read pg_database (projection_worker.c) */
	worker.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	worker.bgw_start_time = BgWorkerStart_RecoveryFinished;
	worker.bgw_restart_time = 5;
	snprintf(worker.bgw_library_name, BGW_MAXLEN, "es_ext");
	snprintf(worker.bgw_function_name, BGW_MAXLEN, "es_notify_launcher_main");
	snprintf(worker.bgw_name, BGW_MAXLEN, "es_ext notify launcher");
	snprintf(worker.bgw_type, BGW_MAXLEN, "es_ext notify launcher");
	worker.bgw_main_arg = (Datum) 0;
	worker.bgw_notify_pid = 0;
	RegisterBackgroundWorker(&worker);
}

/*
 * find_slot
 *		The slot of database dbid; with assign, give it a reusable slot when
 *		it has none.  NULL when there is none.  Caller holds the spinlock.
 */
static EsNotifySlot *
find_slot(Oid dbid, bool assign)
{
	EsNotifySlot *reusable = NULL;
	int			i;

	for (i = 0; i < ES_NOTIFY_SLOTS; i++)
	{
		EsNotifySlot *slot = &notify_shared->slots[i];

		if (slot->dbid == dbid)
			return slot;
		/* prefer a never-used slot to one another database may want back */
		if (slot->state == SLOT_IDLE && !slot->pending &&
			(reusable == NULL ||
			 (slot->dbid == InvalidOid && reusable->dbid != InvalidOid)))
			reusable = slot;
	}
	if (!assign || reusable == NULL)
		return NULL;
	reusable->dbid = dbid;
	reusable->retry_after = 0;
	reusable->requested = 0;
	reusable->sent = 0;
	return reusable;
}

/*
 * effective_mode
 *		The mode a wake-up of this backend uses now: es.notify, except that
 *		"worker" falls back to "commit" when the library was not preloaded,
 *		the launcher does not run, no slot is free, or starting this
 *		database's worker failed recently.  With assign, reserves the slot.
 */
static int
effective_mode(bool assign)
{
	TimestampTz now;
	bool		ok;

	if (es_notify_mode != ES_NOTIFY_WORKER)
		return es_notify_mode;
	if (notify_shared == NULL)
		return ES_NOTIFY_COMMIT;

	now = GetCurrentTimestamp();
	SpinLockAcquire(&notify_shared->mutex);
	ok = (notify_shared->launcher_pid != 0);
	if (ok)
	{
		EsNotifySlot *slot = find_slot(MyDatabaseId, assign);

		ok = (slot != NULL && slot->retry_after <= now) || (slot == NULL && !assign);
	}
	SpinLockRelease(&notify_shared->mutex);
	return ok ? ES_NOTIFY_WORKER : ES_NOTIFY_COMMIT;
}

/*
 * wake_worker
 *		Commit callback of worker mode: mark this database's slot and set the
 *		latch of its worker, or of the launcher when it has none.  Must not
 *		fail: the transaction is already committed.  If no slot can be had
 *		(more busy databases than slots), the wake-up is lost and consumers
 *		find the messages when they poll.
 */
static void
wake_worker(void)
{
	Latch	   *latch = NULL;
	EsNotifySlot *slot;

	if (notify_shared == NULL)
		return;
	SpinLockAcquire(&notify_shared->mutex);
	slot = find_slot(MyDatabaseId, true);
	if (slot != NULL)
	{
		slot->pending = true;
		slot->requested++;
		if (slot->state == SLOT_RUNNING)
			latch = slot->worker_latch;
		else
			latch = notify_shared->launcher_latch;
	}
	SpinLockRelease(&notify_shared->mutex);
	if (latch != NULL)
		SetLatch(latch);
}

static void
notify_xact_callback(XactEvent event, void *arg)
{
	switch (event)
	{
		case XACT_EVENT_PRE_COMMIT:
			if (notify_at_pre_commit)
			{
				notify_at_pre_commit = false;
				Async_Notify(ES_NOTIFY_CHANNEL, "");
			}
			break;
		case XACT_EVENT_COMMIT:
			notify_at_pre_commit = false;
			if (wake_worker_at_commit)
			{
				wake_worker_at_commit = false;
				wake_worker();
			}
			break;
		case XACT_EVENT_ABORT:
		case XACT_EVENT_PREPARE:
			notify_at_pre_commit = false;
			wake_worker_at_commit = false;
			break;
		default:
			break;
	}
}

/*
 * EsNotifyRequest
 *		Ask for a wake-up of the outbox consumers when the current
 *		transaction commits, per es.notify.  Any number of requests in a
 *		transaction make one wake-up.  A request made in a subtransaction
 *		that rolls back still wakes the consumers (they find nothing new).
 */
void
EsNotifyRequest(void)
{
	int			mode;

	if (es_notify_mode == ES_NOTIFY_OFF)
		return;

	if (!xact_callback_registered)
	{
		RegisterXactCallback(notify_xact_callback, NULL);
		xact_callback_registered = true;
	}

	mode = effective_mode(true);
	if (es_notify_mode == ES_NOTIFY_WORKER && notify_shared == NULL && !fallback_warned)
	{
		fallback_warned = true;
		ereport(WARNING,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("es.notify = worker needs es_ext in shared_preload_libraries"),
				 errdetail("This session sends the outbox wake-ups at commit instead, as with es.notify = commit."),
				 errhint("Add es_ext to shared_preload_libraries and restart the server, or set es.notify to commit or off.")));
	}

	if (mode == ES_NOTIFY_WORKER)
		wake_worker_at_commit = true;
	else
		notify_at_pre_commit = true;
}

PG_FUNCTION_INFO_V1(es_outbox_notify);

/*
 * es_outbox_notify()
 *		SQL access to EsNotifyRequest(): wake the consumers when this
 *		transaction commits.  Refused on a hot standby (25006), as NOTIFY is
 *		(a notification needs a transaction id); allowed in a read-only
 *		transaction, as NOTIFY is.
 */
Datum
es_outbox_notify(PG_FUNCTION_ARGS)
{
	PreventCommandDuringRecovery("es_outbox_notify()");
	EsNotifyRequest();
	PG_RETURN_VOID();
}

PG_FUNCTION_INFO_V1(es_outbox_notify_status);

/*
 * es_outbox_notify_status()
 *		RETURNS (setting text, mode text, preloaded boolean, worker_pid
 *		integer, wakeups_requested bigint, notifications_sent bigint)
 *
 * setting is es.notify, mode the mode a wake-up of this session uses now.
 * The last three describe this database's notify worker slot; NULL when
 * the library is not preloaded (no slot: 0 and NULL pid).
 */
Datum
es_outbox_notify_status(PG_FUNCTION_ARGS)
{
	TupleDesc	tupdesc;
	Datum		values[6];
	bool		nulls[6];

	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");

	memset(nulls, 0, sizeof(nulls));
	values[0] = CStringGetTextDatum(mode_name(es_notify_mode));
	values[1] = CStringGetTextDatum(mode_name(effective_mode(false)));
	values[2] = BoolGetDatum(notify_shared != NULL);
	if (notify_shared == NULL)
	{
		nulls[3] = nulls[4] = nulls[5] = true;
	}
	else
	{
		EsNotifySlot *slot;
		pid_t		pid = 0;
		uint64		requested = 0;
		uint64		sent = 0;

		SpinLockAcquire(&notify_shared->mutex);
		slot = find_slot(MyDatabaseId, false);
		if (slot != NULL)
		{
			pid = slot->worker_pid;
			requested = slot->requested;
			sent = slot->sent;
		}
		SpinLockRelease(&notify_shared->mutex);
		if (pid != 0)
			values[3] = Int32GetDatum((int32) pid);
		else
			nulls[3] = true;
		values[4] = Int64GetDatum((int64) requested);
		values[5] = Int64GetDatum((int64) sent);
	}
	tupdesc = BlessTupleDesc(tupdesc);
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(tupdesc, values, nulls)));
}

/* ------------------------------------------------------------------------
 * The launcher
 * ------------------------------------------------------------------------
 */

static void
launcher_detach(int code, Datum arg)
{
	SpinLockAcquire(&notify_shared->mutex);
	if (notify_shared->launcher_pid == MyProcPid)
	{
		notify_shared->launcher_pid = 0;
		notify_shared->launcher_latch = NULL;
	}
	SpinLockRelease(&notify_shared->mutex);
}

/* Register the notify worker of slot slotno (database dbid). */
static bool
start_worker(int slotno, Oid dbid, BackgroundWorkerHandle **handle)
{
	BackgroundWorker worker;

	memset(&worker, 0, sizeof(worker));
	worker.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	worker.bgw_start_time = BgWorkerStart_RecoveryFinished;
	worker.bgw_restart_time = BGW_NEVER_RESTART;
	snprintf(worker.bgw_library_name, BGW_MAXLEN, "es_ext");
	snprintf(worker.bgw_function_name, BGW_MAXLEN, "es_notify_worker_main");
	snprintf(worker.bgw_name, BGW_MAXLEN, "es_ext notify worker for database %u", dbid);
	snprintf(worker.bgw_type, BGW_MAXLEN, "es_ext notify worker");
	worker.bgw_main_arg = Int32GetDatum(slotno);
	memcpy(worker.bgw_extra, &dbid, sizeof(Oid));
	worker.bgw_notify_pid = MyProcPid;
	return RegisterDynamicBackgroundWorker(&worker, handle);
}

/*
 * es_notify_launcher_main
 *		Start a notify worker for every slot with a pending wake-up and no
 *		worker; notice the workers that stopped; do the same for the
 *		projection workers (EsProjectionLauncherTick).  Woken by commits
 *		(latch), by its workers starting and stopping (bgw_notify_pid), and
 *		every second.
 */
void
es_notify_launcher_main(Datum main_arg)
{
	BackgroundWorkerHandle *handles[ES_NOTIFY_SLOTS];

	memset(handles, 0, sizeof(handles));
	pqsignal(SIGTERM, SignalHandlerForShutdownRequest);
	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	BackgroundWorkerUnblockSignals();
	BackgroundWorkerInitializeConnection(NULL, NULL, 0);

	SpinLockAcquire(&notify_shared->mutex);
	notify_shared->launcher_pid = MyProcPid;
	notify_shared->launcher_latch = MyLatch;
	SpinLockRelease(&notify_shared->mutex);
	before_shmem_exit(launcher_detach, (Datum) 0);
	EsProjectionLauncherBegin();

	while (!ShutdownRequestPending)
	{
		TimestampTz now;
		int			i;

		ResetLatch(MyLatch);
		/* absorbs ProcSignalBarriers (DROP DATABASE waits for them) */
		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
		}

		now = GetCurrentTimestamp();
		for (i = 0; i < ES_NOTIFY_SLOTS; i++)
		{
			EsNotifySlot *slot = &notify_shared->slots[i];
			bool		start = false;
			bool		died = false;
			Oid			dbid = InvalidOid;

			if (handles[i] != NULL)
			{
				pid_t		pid;

				if (GetBackgroundWorkerPid(handles[i], &pid) == BGWH_STOPPED)
				{
					pfree(handles[i]);
					handles[i] = NULL;
					SpinLockAcquire(&notify_shared->mutex);
					if (slot->state == SLOT_STARTING)
					{
						/*
						 * It stopped before it served the slot: its database
						 * is gone, or it could not connect.  Drop the
						 * wake-up and let the backends of that database
						 * notify at commit for a while.
						 */
						slot->state = SLOT_IDLE;
						slot->pending = false;
						slot->retry_after = TimestampTzPlusMilliseconds(now, ES_NOTIFY_RETRY_MS);
						died = true;
						dbid = slot->dbid;
					}
					SpinLockRelease(&notify_shared->mutex);
					if (died)
						ereport(LOG,
								(errmsg("es_ext notify worker for database %u exited before it started", dbid),
								 errdetail("Sessions of that database notify at commit for the next %d seconds.",
										   ES_NOTIFY_RETRY_MS / 1000)));
				}
			}

			if (handles[i] != NULL)
				continue;
			SpinLockAcquire(&notify_shared->mutex);
			if (slot->dbid != InvalidOid && slot->pending &&
				slot->state == SLOT_IDLE && slot->retry_after <= now)
			{
				slot->state = SLOT_STARTING;
				dbid = slot->dbid;
				start = true;
			}
			SpinLockRelease(&notify_shared->mutex);

			if (start && !start_worker(i, dbid, &handles[i]))
			{
				handles[i] = NULL;
				SpinLockAcquire(&notify_shared->mutex);
				slot->state = SLOT_IDLE;
				slot->retry_after = TimestampTzPlusMilliseconds(now, ES_NOTIFY_RETRY_MS);
				SpinLockRelease(&notify_shared->mutex);
				ereport(WARNING,
						(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
						 errmsg("could not start the es_ext notify worker for database %u", dbid),
						 errdetail("Sessions of that database notify at commit for the next %d seconds.",
								   ES_NOTIFY_RETRY_MS / 1000),
						 errhint("Raise \"max_worker_processes\".")));
			}
		}

		EsProjectionLauncherTick(now);

		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 ES_NOTIFY_LAUNCHER_NAP_MS, PG_WAIT_EXTENSION);
	}
	proc_exit(0);
}

/* ------------------------------------------------------------------------
 * The notify worker of one database
 * ------------------------------------------------------------------------
 */

static void
worker_detach(int code, Datum arg)
{
	EsNotifySlot *slot = &notify_shared->slots[DatumGetInt32(arg)];

	SpinLockAcquire(&notify_shared->mutex);
	if (slot->worker_pid == MyProcPid)
	{
		slot->state = SLOT_IDLE;
		slot->worker_pid = 0;
		slot->worker_latch = NULL;
	}
	SpinLockRelease(&notify_shared->mutex);
}

/* Send NOTIFY es_outbox in a transaction of its own. */
static void
send_notify(void)
{
	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	pgstat_report_activity(STATE_RUNNING, "NOTIFY " ES_NOTIFY_CHANNEL);
	Async_Notify(ES_NOTIFY_CHANNEL, "");
	CommitTransactionCommand();
	pgstat_report_activity(STATE_IDLE, NULL);
}

/*
 * es_notify_worker_main
 *		Serve one database's slot: whenever it is marked, clear the mark and
 *		send one NOTIFY; exit after es.notify_worker_idle_timeout without a
 *		mark.  main_arg is the slot number, bgw_extra the database's OID.
 */
void
es_notify_worker_main(Datum main_arg)
{
	int			slotno = DatumGetInt32(main_arg);
	EsNotifySlot *slot = &notify_shared->slots[slotno];
	Oid			dbid;
	bool		attached = false;

	memcpy(&dbid, MyBgworkerEntry->bgw_extra, sizeof(Oid));
	pqsignal(SIGTERM, die);
	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	BackgroundWorkerUnblockSignals();
	BackgroundWorkerInitializeConnectionByOid(dbid, InvalidOid, 0);

	/* losing a wake-up in a crash loses nothing: consumers reconnect and claim */
	SetConfigOption("synchronous_commit", "off", PGC_SUSET, PGC_S_OVERRIDE);

	SpinLockAcquire(&notify_shared->mutex);
	if (slot->dbid == dbid && slot->state == SLOT_STARTING)
	{
		slot->state = SLOT_RUNNING;
		slot->worker_pid = MyProcPid;
		slot->worker_latch = MyLatch;
		attached = true;
	}
	SpinLockRelease(&notify_shared->mutex);
	if (!attached)
		proc_exit(0);
	before_shmem_exit(worker_detach, Int32GetDatum(slotno));

	for (;;)
	{
		bool		pending;
		int			rc;

		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
		}

		SpinLockAcquire(&notify_shared->mutex);
		pending = slot->pending;
		slot->pending = false;
		SpinLockRelease(&notify_shared->mutex);

		if (pending)
		{
			send_notify();
			SpinLockAcquire(&notify_shared->mutex);
			slot->sent++;
			SpinLockRelease(&notify_shared->mutex);

			/*
			 * Let the commits of the next es.notify_worker_interval gather
			 * behind one notification: under load, consumers are woken (and
			 * claim) at most that often, instead of once per commit.
			 */
			if (es_notify_worker_interval > 0)
				(void) WaitLatch(MyLatch, WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
								 es_notify_worker_interval, PG_WAIT_EXTENSION);
			continue;
		}

		rc = WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
					   es_notify_worker_idle_timeout, PG_WAIT_EXTENSION);
		if (rc & WL_TIMEOUT)
		{
			bool		quit;

			SpinLockAcquire(&notify_shared->mutex);
			quit = !slot->pending;
			if (quit)
			{
				slot->state = SLOT_IDLE;
				slot->worker_pid = 0;
				slot->worker_latch = NULL;
			}
			SpinLockRelease(&notify_shared->mutex);
			if (quit)
				proc_exit(0);
		}
	}
}
