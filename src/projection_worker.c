/*-------------------------------------------------------------------------
 *
 * projection_worker.c
 *	  The background workers that apply asynchronous projections, when
 *	  es_ext is in shared_preload_libraries.
 *
 * An asynchronous projection is advanced by es.es_projection_apply(name),
 * one batch per call in the caller's transaction, its checkpoint written in
 * the same transaction (async.c); anything that calls it in a loop keeps the
 * read model exactly-once, so the workers here are a convenience, never a
 * condition of correctness (CALL es.es_run_projections does the same from a
 * client or pg_cron).
 *
 * Per database, at most one projection worker: a dynamic background worker
 * connected to the database as the bootstrap superuser, started by the
 * launcher of notify.c (one launcher for both kinds of worker).  Its loop:
 * read the running projections from es.async_projections in a short
 * transaction; for each one that is due (no retry scheduled later), apply
 * up to ES_PROJECTION_ROUND_BATCHES batches, each in a transaction of its
 * own, as the projection's owner (the current user is the owner inside a
 * security-restricted operation, with search_path = pg_catalog, pg_temp and
 * every setting the code changes undone before the commit: user code never
 * runs with another role's privileges, and leaves nothing behind for the
 * next projection).  A failing batch is rolled back and reported, with its
 * message and SQLSTATE, to es.es_projection_failed(name, message, sqlstate)
 * in a new transaction, as the owner too, which schedules the retry or
 * applies the projection's policy.  Then the worker sleeps on its latch for
 * es.projection_naptime (or until the earliest retry is due), never inside
 * a transaction.  It exits when the database has no running projection (or
 * no es_ext, or a version without asynchronous projections), and after
 * es.projection_worker_idle_timeout without applying anything while no
 * projection has events after its checkpoint, so that it does not hold the
 * database forever (DROP DATABASE waits 5 seconds for other connections).
 *
 * Wake-ups: es_append calls EsProjectionWakeAtCommit(); at commit, the
 * database's worker is woken when it runs, and when it does not but the
 * database is known to have running projections (its slot says so: the
 * last worker found some), the slot is marked pending and the launcher
 * starts a worker.  EsProjectionWorkerRequest() (a projection created,
 * resumed, reset, a dead letter retried) marks the slot requested at
 * commit in any case; a worker that found nothing to do exits even when
 * appends keep marking its slot, but not when a request came in since it
 * read its registry.  A commit that has nothing to wake takes the spinlock
 * once, finds its database's slot (or its absence) in a per-backend cache
 * that holds until a slot changes hands, and makes no system call; one
 * whose worker has not yet taken the previous wake-up does not set its
 * latch again (bench/projection_wake_cost: 70 instructions per append).
 *
 * A worker that exits with a retry scheduled later leaves its time in the
 * slot (wake_at); one that dies (an error outside a batch) is started
 * again after ES_PROJECTION_RETRY_MS when its database still accepts
 * connections, and forgotten otherwise.
 *
 * Startup discovery: after the postmaster starts (or restarts after a
 * crash, which re-creates shared memory), no slot knows anything, and
 * projections must resume without waiting for an append.  The launcher has
 * a connection to the shared catalogs only; it reads pg_database and marks,
 * at most ES_PROJECTION_PROBES at a time, the slot of every database that
 * accepts connections and is not a template, so that a worker starts there;
 * a worker in a database without running projections exits at once.  This
 * costs one short-lived background process per database at each start of
 * the launcher (and when es.projection_workers is turned on again).
 *
 * Locking: the shared state is protected by one spinlock, held only for a
 * few assignments (never across a syscall, an allocation or a SetLatch).
 * The commit callback runs after the commit is durable and visible, where
 * an error would be fatal: it only takes the spinlock and sets a latch.
 * The launcher alone starts workers and reads their handles.
 *
 * src/projection_worker.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/heapam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_authid.h"
#include "catalog/pg_database.h"
#include "catalog/pg_type.h"
#include "commands/extension.h"
#include "executor/spi.h"
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
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/syscache.h"
#include "utils/timestamp.h"
#include "utils/wait_event.h"

#include "es_ext.h"

typedef enum EsProjectionSlotState
{
	PSLOT_IDLE,					/* no worker */
	PSLOT_STARTING,				/* the launcher registered a worker */
	PSLOT_RUNNING				/* a worker serves the slot */
} EsProjectionSlotState;

/*
 * One database.  A slot that is idle, has no pending start, no scheduled
 * start and no known projections holds no information and may be given to
 * another database.
 */
typedef struct EsProjectionSlot
{
	Oid			dbid;			/* InvalidOid: never used */
	bool		has_projections;	/* the last worker found running ones */
	bool		pending;		/* an append committed: wake or start the worker */
	bool		requested;		/* a projection became runnable: the same, and
								 * a worker that found nothing looks again */
	bool		clean_exit;		/* the last worker exited on purpose */
	EsProjectionSlotState state;
	pid_t		worker_pid;
	Latch	   *worker_latch;	/* set while RUNNING */
	TimestampTz wake_at;		/* start a worker then (a retry); 0: none */
	TimestampTz retry_after;	/* no worker before then (start failed) */
} EsProjectionSlot;

typedef struct EsProjectionShared
{
	slock_t		mutex;
	Latch	   *launcher_latch;
	uint64		assignments;	/* slots given to a database so far */
	EsProjectionSlot slots[ES_PROJECTION_SLOTS];
} EsProjectionShared;

/* NULL unless es_ext is in shared_preload_libraries */
static EsProjectionShared *projection_shared = NULL;

static shmem_request_hook_type prev_shmem_request_hook = NULL;
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;

/* this transaction's wake-up, done at commit */
static bool wake_at_commit = false;
static bool request_at_commit = false;
static bool xact_callback_registered = false;

/*
 * The slot of this backend's database (-1: none) when the shared count of
 * assignments was cached_assignments: still right while it is unchanged.
 */
static int	cached_slotno = -1;
static uint64 cached_assignments = PG_UINT64_MAX;

PGDLLEXPORT void es_projection_worker_main(Datum main_arg);

static void
projection_shmem_request(void)
{
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
	RequestAddinShmemSpace(MAXALIGN(sizeof(EsProjectionShared)));
}

static void
projection_shmem_startup(void)
{
	bool		found;

	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();

	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	projection_shared = ShmemInitStruct("es_ext projection workers",
										sizeof(EsProjectionShared), &found);
	if (!found)
	{
		memset(projection_shared, 0, sizeof(EsProjectionShared));
		SpinLockInit(&projection_shared->mutex);
	}
	LWLockRelease(AddinShmemInitLock);
}

/*
 * EsProjectionWorkerRegister
 *		Called by _PG_init while shared_preload_libraries are loaded: reserve
 *		the shared state.  The workers are started by the launcher of
 *		notify.c (EsNotifyRegister registers it).
 */
void
EsProjectionWorkerRegister(void)
{
	prev_shmem_request_hook = shmem_request_hook;
	shmem_request_hook = projection_shmem_request;
	prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = projection_shmem_startup;
}

/*
 * slot_reusable
 *		Whether slot holds nothing another database would lose.  Caller
 *		holds the spinlock.
 */
static inline bool
slot_reusable(const EsProjectionSlot *slot)
{
	return slot->state == PSLOT_IDLE && !slot->pending && !slot->requested &&
		!slot->has_projections && slot->wake_at == 0;
}

/*
 * find_slot
 *		The slot of database dbid; with assign, give it a reusable slot when
 *		it has none.  NULL when there is none.  Caller holds the spinlock.
 */
static EsProjectionSlot *
find_slot(Oid dbid, bool assign)
{
	EsProjectionSlot *reusable = NULL;
	int			i;

	/* the common case, an append: no scan */
	if (dbid == MyDatabaseId && cached_assignments == projection_shared->assignments &&
		(cached_slotno >= 0 || !assign))
		return cached_slotno >= 0 ? &projection_shared->slots[cached_slotno] : NULL;
	for (i = 0; i < ES_PROJECTION_SLOTS; i++)
	{
		EsProjectionSlot *slot = &projection_shared->slots[i];

		if (slot->dbid == dbid)
		{
			if (dbid == MyDatabaseId)
			{
				cached_slotno = i;
				cached_assignments = projection_shared->assignments;
			}
			return slot;
		}
		/* prefer a never-used slot to one another database may want back */
		if (assign && slot_reusable(slot) &&
			(reusable == NULL ||
			 (slot->dbid == InvalidOid && reusable->dbid != InvalidOid)))
			reusable = slot;
	}
	if (dbid == MyDatabaseId)
	{
		cached_slotno = -1;
		cached_assignments = projection_shared->assignments;
	}
	if (!assign || reusable == NULL)
		return NULL;
	/* a slot changes hands: every backend's cache is stale */
	projection_shared->assignments++;
	reusable->dbid = dbid;
	reusable->pending = false;
	reusable->requested = false;
	reusable->has_projections = false;
	reusable->clean_exit = true;
	reusable->wake_at = 0;
	reusable->retry_after = 0;
	return reusable;
}

/*
 * signal_at_commit
 *		Commit callback: wake this database's projection worker, or have the
 *		launcher start one.  With request, the database is marked as having
 *		projections (a projection was created, resumed, reset or retried);
 *		otherwise (an append) only a database already known to have some
 *		starts a worker.  Must not fail: the transaction is committed.
 */
static void
signal_at_commit(bool request)
{
	Latch	   *latch = NULL;
	EsProjectionSlot *slot;

	SpinLockAcquire(&projection_shared->mutex);
	slot = find_slot(MyDatabaseId, request);
	if (slot != NULL && (request || slot->has_projections || slot->state == PSLOT_RUNNING))
	{
		/* one not taken yet: whoever takes it has been woken already */
		bool		woken = slot->pending || slot->requested;

		if (request)
		{
			slot->requested = true;
			slot->has_projections = true;
		}
		else
			slot->pending = true;
		if (!woken || request)
			latch = (slot->state == PSLOT_RUNNING) ? slot->worker_latch :
				projection_shared->launcher_latch;
	}
	SpinLockRelease(&projection_shared->mutex);
	if (latch != NULL)
		SetLatch(latch);
}

static void
projection_xact_callback(XactEvent event, void *arg)
{
	switch (event)
	{
		case XACT_EVENT_COMMIT:
			if (projection_shared != NULL && (request_at_commit || wake_at_commit))
				signal_at_commit(request_at_commit);
			request_at_commit = false;
			wake_at_commit = false;
			break;
		case XACT_EVENT_ABORT:
		case XACT_EVENT_PREPARE:
			request_at_commit = false;
			wake_at_commit = false;
			break;
		default:
			break;
	}
}

static inline void
register_callback(void)
{
	if (!xact_callback_registered)
	{
		RegisterXactCallback(projection_xact_callback, NULL);
		xact_callback_registered = true;
	}
}

/*
 * EsProjectionWakeAtCommit
 *		Called by every append: when the transaction commits, wake this
 *		database's projection worker (see the file header).  A no-op unless
 *		preloaded.  A prepared transaction wakes nobody: its events are
 *		found by the worker's next round or the next append.
 */
void
EsProjectionWakeAtCommit(void)
{
	if (projection_shared == NULL)
		return;
	register_callback();
	wake_at_commit = true;
}

/*
 * EsProjectionWorkerRequest
 *		Called inside a transaction that made a projection runnable: at its
 *		commit, make sure this database's projection worker runs (the
 *		launcher starts it) and is woken.  A no-op unless preloaded.
 *		Warns when every slot is taken by other databases.
 */
void
EsProjectionWorkerRequest(void)
{
	bool		ok;

	if (projection_shared == NULL)
		return;
	register_callback();
	request_at_commit = true;

	SpinLockAcquire(&projection_shared->mutex);
	ok = (find_slot(MyDatabaseId, false) != NULL);
	if (!ok)
	{
		int			i;

		for (i = 0; i < ES_PROJECTION_SLOTS && !ok; i++)
			ok = slot_reusable(&projection_shared->slots[i]);
	}
	SpinLockRelease(&projection_shared->mutex);
	if (!ok)
		ereport(WARNING,
				(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
				 errmsg("no projection worker can be started for this database"),
				 errdetail("%d other databases have asynchronous projections.", ES_PROJECTION_SLOTS),
				 errhint("Run the projections with CALL es.es_run_projections(), from a client or pg_cron.")));
}

/* ------------------------------------------------------------------------
 * The launcher's part (called from notify.c's launcher)
 * ------------------------------------------------------------------------
 */

/* launcher state, in the launcher process only */
static BackgroundWorkerHandle *launcher_handles[ES_PROJECTION_SLOTS];
static bool launcher_probing[ES_PROJECTION_SLOTS];	/* started by discovery */
static Oid *probe_dbids = NULL;
static int	probe_count = 0;
static int	probe_next = 0;
static bool launcher_enabled = false;

static void
launcher_detach(int code, Datum arg)
{
	SpinLockAcquire(&projection_shared->mutex);
	if (projection_shared->launcher_latch == MyLatch)
		projection_shared->launcher_latch = NULL;
	SpinLockRelease(&projection_shared->mutex);
}

/*
 * list_databases
 *		Load probe_dbids with every database a projection worker can
 *		connect to: not a template (a connection to a template makes CREATE
 *		DATABASE fail), accepting connections and valid.  Needs the
 *		launcher's connection to the shared catalogs; runs a transaction.
 */
static void
list_databases(void)
{
	MemoryContext cxt = CurrentMemoryContext;
	Relation	rel;
	TableScanDesc scan;
	HeapTuple	tup;
	int			allocated = 16;

	if (probe_dbids != NULL)
		pfree(probe_dbids);
	probe_dbids = MemoryContextAlloc(TopMemoryContext, sizeof(Oid) * allocated);
	probe_count = 0;
	probe_next = 0;

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	(void) GetTransactionSnapshot();
	rel = table_open(DatabaseRelationId, AccessShareLock);
	scan = table_beginscan_catalog(rel, 0, NULL);
	while (HeapTupleIsValid(tup = heap_getnext(scan, ForwardScanDirection)))
	{
		Form_pg_database db = (Form_pg_database) GETSTRUCT(tup);

		if (db->datistemplate || !db->datallowconn || database_is_invalid_form(db))
			continue;
		if (probe_count == allocated)
		{
			allocated *= 2;
			probe_dbids = repalloc(probe_dbids, sizeof(Oid) * allocated);
		}
		probe_dbids[probe_count++] = db->oid;
	}
	table_endscan(scan);
	table_close(rel, AccessShareLock);
	CommitTransactionCommand();
	MemoryContextSwitchTo(cxt);
}

/*
 * database_connectable
 *		Whether a worker could connect to database dbid now (it exists,
 *		accepts connections and is valid).  Runs a transaction.
 */
static bool
database_connectable(Oid dbid)
{
	MemoryContext cxt = CurrentMemoryContext;
	HeapTuple	tup;
	bool		ok = false;

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	tup = SearchSysCache1(DATABASEOID, ObjectIdGetDatum(dbid));
	if (HeapTupleIsValid(tup))
	{
		Form_pg_database db = (Form_pg_database) GETSTRUCT(tup);

		ok = db->datallowconn && !database_is_invalid_form(db);
		ReleaseSysCache(tup);
	}
	CommitTransactionCommand();
	MemoryContextSwitchTo(cxt);
	return ok;
}

/*
 * EsProjectionLauncherBegin
 *		Called once by the launcher, connected to the shared catalogs: take
 *		the wake-ups, forget workers a previous launcher started but that
 *		never attached, and plan the discovery of the databases.
 */
void
EsProjectionLauncherBegin(void)
{
	int			i;

	memset(launcher_handles, 0, sizeof(launcher_handles));
	memset(launcher_probing, 0, sizeof(launcher_probing));

	SpinLockAcquire(&projection_shared->mutex);
	projection_shared->launcher_latch = MyLatch;
	for (i = 0; i < ES_PROJECTION_SLOTS; i++)
	{
		EsProjectionSlot *slot = &projection_shared->slots[i];

		/* its launcher is gone: start it again (a late one will not attach) */
		if (slot->state == PSLOT_STARTING)
		{
			slot->state = PSLOT_IDLE;
			slot->requested = true;
		}
	}
	SpinLockRelease(&projection_shared->mutex);
	before_shmem_exit(launcher_detach, (Datum) 0);

	launcher_enabled = es_projection_workers;
	if (launcher_enabled)
		list_databases();
}

/* Register the projection worker of slot slotno (database dbid). */
static bool
start_worker(int slotno, Oid dbid, BackgroundWorkerHandle **handle)
{
	BackgroundWorker worker;

	memset(&worker, 0, sizeof(worker));
	worker.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	worker.bgw_start_time = BgWorkerStart_RecoveryFinished;
	worker.bgw_restart_time = BGW_NEVER_RESTART;
	snprintf(worker.bgw_library_name, BGW_MAXLEN, "es_ext");
	snprintf(worker.bgw_function_name, BGW_MAXLEN, "es_projection_worker_main");
	snprintf(worker.bgw_name, BGW_MAXLEN, "es_ext projection worker for database %u", dbid);
	snprintf(worker.bgw_type, BGW_MAXLEN, "es_ext projection worker");
	worker.bgw_main_arg = Int32GetDatum(slotno);
	memcpy(worker.bgw_extra, &dbid, sizeof(Oid));
	worker.bgw_notify_pid = MyProcPid;
	return RegisterDynamicBackgroundWorker(&worker, handle);
}

/*
 * reap_worker
 *		The worker of slot i stopped (launcher_handles[i] says so): if it
 *		never attached, or died without meaning to, start one again after
 *		ES_PROJECTION_RETRY_MS when its database still accepts connections;
 *		forget the database otherwise.
 */
static void
reap_worker(int i, TimestampTz now)
{
	EsProjectionSlot *slot = &projection_shared->slots[i];
	bool		failed;
	bool		never_attached;
	Oid			dbid;

	pfree(launcher_handles[i]);
	launcher_handles[i] = NULL;
	launcher_probing[i] = false;

	SpinLockAcquire(&projection_shared->mutex);
	never_attached = (slot->state == PSLOT_STARTING);
	failed = never_attached || (slot->state == PSLOT_IDLE && !slot->clean_exit);
	if (never_attached)
		slot->state = PSLOT_IDLE;
	dbid = slot->dbid;
	SpinLockRelease(&projection_shared->mutex);
	if (!failed)
		return;

	if (database_connectable(dbid))
	{
		SpinLockAcquire(&projection_shared->mutex);
		if (slot->dbid == dbid && slot->state == PSLOT_IDLE)
		{
			slot->retry_after = TimestampTzPlusMilliseconds(now, ES_PROJECTION_RETRY_MS);
			slot->requested = true;
			slot->clean_exit = true;
		}
		SpinLockRelease(&projection_shared->mutex);
		ereport(LOG,
				(errmsg("es_ext projection worker for database %u exited unexpectedly", dbid),
				 errdetail("A new worker starts in %d seconds.", ES_PROJECTION_RETRY_MS / 1000)));
	}
	else
	{
		/* dropped, or not accepting connections: forget it */
		SpinLockAcquire(&projection_shared->mutex);
		if (slot->dbid == dbid && slot->state == PSLOT_IDLE)
		{
			slot->pending = false;
			slot->requested = false;
			slot->has_projections = false;
			slot->wake_at = 0;
			slot->clean_exit = true;
		}
		SpinLockRelease(&projection_shared->mutex);
	}
}

/*
 * start_discovery
 *		Mark the slots of the next databases of probe_dbids pending, so that
 *		at most ES_PROJECTION_PROBES workers started by discovery run at a
 *		time.
 */
static void
start_discovery(void)
{
	int			active = 0;
	int			i;

	for (i = 0; i < ES_PROJECTION_SLOTS; i++)
		if (launcher_probing[i])
			active++;
	while (probe_next < probe_count && active < ES_PROJECTION_PROBES)
	{
		Oid			dbid = probe_dbids[probe_next];
		EsProjectionSlot *slot;

		SpinLockAcquire(&projection_shared->mutex);
		slot = find_slot(dbid, true);
		if (slot != NULL && !slot->pending && !slot->requested &&
			slot->state == PSLOT_IDLE)
		{
			slot->requested = true;
			launcher_probing[slot - projection_shared->slots] = true;
			active++;
		}
		SpinLockRelease(&projection_shared->mutex);
		if (slot == NULL)
		{
			/* every slot holds a database with projections: try later */
			return;
		}
		probe_next++;
	}
}

/*
 * EsProjectionLauncherTick
 *		One round of the launcher: notice the workers that stopped, start a
 *		worker for every slot that is pending (or whose scheduled retry is
 *		due) and has none, go on with the discovery.  Workers that cannot be
 *		registered (max_worker_processes) are tried again after
 *		ES_PROJECTION_RETRY_MS.
 */
void
EsProjectionLauncherTick(TimestampTz now)
{
	int			i;

	/* es.projection_workers turned on: find the databases again */
	if (es_projection_workers && !launcher_enabled)
		list_databases();
	launcher_enabled = es_projection_workers;
	if (launcher_enabled)
		start_discovery();

	for (i = 0; i < ES_PROJECTION_SLOTS; i++)
	{
		EsProjectionSlot *slot = &projection_shared->slots[i];
		bool		start = false;
		Oid			dbid = InvalidOid;

		if (launcher_handles[i] != NULL)
		{
			pid_t		pid;

			if (GetBackgroundWorkerPid(launcher_handles[i], &pid) != BGWH_STOPPED)
				continue;
			reap_worker(i, now);
		}
		if (!launcher_enabled)
			continue;

		SpinLockAcquire(&projection_shared->mutex);
		if (slot->dbid != InvalidOid && slot->state == PSLOT_IDLE &&
			slot->retry_after <= now &&
			(slot->pending || slot->requested ||
			 (slot->wake_at != 0 && slot->wake_at <= now)))
		{
			/* the worker takes it: it looks at its registry in any case */
			slot->state = PSLOT_STARTING;
			slot->pending = false;
			slot->requested = false;
			slot->wake_at = 0;
			dbid = slot->dbid;
			start = true;
		}
		SpinLockRelease(&projection_shared->mutex);

		if (start && !start_worker(i, dbid, &launcher_handles[i]))
		{
			launcher_handles[i] = NULL;
			SpinLockAcquire(&projection_shared->mutex);
			slot->state = PSLOT_IDLE;
			slot->retry_after = TimestampTzPlusMilliseconds(now, ES_PROJECTION_RETRY_MS);
			SpinLockRelease(&projection_shared->mutex);
			ereport(WARNING,
					(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
					 errmsg("could not start the es_ext projection worker for database %u", dbid),
					 errdetail("The launcher tries again in %d seconds.",
							   ES_PROJECTION_RETRY_MS / 1000),
					 errhint("Raise \"max_worker_processes\".")));
		}
	}

}

/* ------------------------------------------------------------------------
 * The projection worker of one database
 * ------------------------------------------------------------------------
 */

/* one running projection, as the worker read it */
typedef struct EsWorkerProjection
{
	char	   *name;
	Oid			owner;
	bool		retry_scheduled;	/* retry_at is set */
	TimestampTz retry_at;
	bool		behind;			/* events after its checkpoint exist */
} EsWorkerProjection;

/* the running projections, with whether events after the checkpoint exist (visible or not) */
#define REGISTRY_SQL \
	"SELECT p.projection::pg_catalog.text, p.owner::pg_catalog.oid, p.retry_at," \
	"       CASE WHEN p.checkpoint IS NULL" \
	"            THEN EXISTS (SELECT FROM es.events AS e)" \
	"            ELSE EXISTS (SELECT FROM es.events AS e" \
	"                          WHERE (e.era, e.tx_id, e.global_position) OPERATOR(pg_catalog.>)" \
	"                                ((p.checkpoint).era, (p.checkpoint).tx_id, (p.checkpoint).global_position))" \
	"       END" \
	"  FROM es.async_projections AS p" \
	" WHERE p.state OPERATOR(pg_catalog.=) 'running'" \
	" ORDER BY p.projection"

static void
worker_detach(int code, Datum arg)
{
	EsProjectionSlot *slot = &projection_shared->slots[DatumGetInt32(arg)];

	SpinLockAcquire(&projection_shared->mutex);
	if (slot->worker_pid == MyProcPid)
	{
		slot->state = PSLOT_IDLE;
		slot->worker_pid = 0;
		slot->worker_latch = NULL;
	}
	SpinLockRelease(&projection_shared->mutex);
}

/*
 * registry_exists
 *		Whether this database has es_ext with es.async_projections.  Call in
 *		a transaction.
 */
static bool
registry_exists(void)
{
	Oid			nsp;

	if (!OidIsValid(get_extension_oid("es_ext", true)))
		return false;
	/* the extension is not relocatable: its schema is es */
	nsp = get_namespace_oid("es", true);
	return OidIsValid(nsp) && OidIsValid(get_relname_relid("async_projections", nsp));
}

/*
 * read_projections
 *		The running projections of this database, in cxt; *n their number,
 *		-1 when es_ext or its registry is not there.  Runs a transaction as
 *		the bootstrap superuser.
 */
static EsWorkerProjection *
read_projections(MemoryContext cxt, int *n)
{
	EsWorkerProjection *list = NULL;
	uint64		i;

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	pgstat_report_activity(STATE_RUNNING, "reading es.async_projections");
	if (!registry_exists())
	{
		*n = -1;
		CommitTransactionCommand();
		pgstat_report_activity(STATE_IDLE, NULL);
		return NULL;
	}
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	PushActiveSnapshot(GetTransactionSnapshot());
	if (SPI_execute(REGISTRY_SQL, true, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not read es.async_projections");
	*n = (int) SPI_processed;
	if (SPI_processed > 0)
		list = MemoryContextAllocZero(cxt, sizeof(EsWorkerProjection) * SPI_processed);
	for (i = 0; i < SPI_processed; i++)
	{
		HeapTuple	tup = SPI_tuptable->vals[i];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		bool		isnull;
		Datum		d;

		d = SPI_getbinval(tup, desc, 1, &isnull);
		list[i].name = MemoryContextStrdup(cxt, TextDatumGetCString(d));
		d = SPI_getbinval(tup, desc, 2, &isnull);
		list[i].owner = isnull ? InvalidOid : DatumGetObjectId(d);
		d = SPI_getbinval(tup, desc, 3, &isnull);
		list[i].retry_scheduled = !isnull;
		list[i].retry_at = isnull ? 0 : DatumGetTimestampTz(d);
		d = SPI_getbinval(tup, desc, 4, &isnull);
		list[i].behind = !isnull && DatumGetBool(d);
	}
	PopActiveSnapshot();
	SPI_finish();
	CommitTransactionCommand();
	pgstat_report_activity(STATE_IDLE, NULL);
	return list;
}

/* A user-code call in progress: the saved user and setting level. */
typedef struct EsWorkerRunAs
{
	Oid			save_userid;
	int			save_sec_context;
	int			save_nestlevel;
} EsWorkerRunAs;

/*
 * run_as_begin
 *		In the current transaction, make owner the current user inside a
 *		security-restricted operation with search_path = pg_catalog, pg_temp
 *		(as EsRunAsBegin, but always: the worker's user is never the
 *		owner's).  An error: the owner does not exist.
 */
static void
run_as_begin(EsWorkerRunAs *ra, Oid owner, const char *projection)
{
	if (!OidIsValid(owner) || !SearchSysCacheExists1(AUTHOID, ObjectIdGetDatum(owner)))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("the role that projection \"%s\" runs as does not exist", projection),
				 errhint("Create the projection again as an existing role.")));
	GetUserIdAndSecContext(&ra->save_userid, &ra->save_sec_context);
	SetUserIdAndSecContext(owner, ra->save_sec_context |
						   SECURITY_LOCAL_USERID_CHANGE |
						   SECURITY_RESTRICTED_OPERATION);
	ra->save_nestlevel = NewGUCNestLevel();
	(void) set_config_option("search_path", ES_SAFE_SEARCH_PATH,
							 PGC_USERSET, PGC_S_SESSION,
							 GUC_ACTION_SAVE, true, 0, false);
}

/*
 * run_as_commit
 *		Undo every setting the user code changed, commit as the owner (so
 *		that deferred triggers of the read model run as the owner too), then
 *		become the worker's user again.
 */
static void
run_as_commit(EsWorkerRunAs *ra)
{
	AtEOXact_GUC(false, ra->save_nestlevel);
	CommitTransactionCommand();
	SetUserIdAndSecContext(ra->save_userid, ra->save_sec_context);
}

/*
 * call_projection_function
 *		SELECT sql with the projection's name as $1 and, when given, message
 *		and sqlstate as $2 and $3, in a transaction of its own, as the owner;
 *		the first column of the one result row in *result (copied to cxt for
 *		text).  Errors propagate, with the transaction still open.
 */
static void
call_projection_function(const char *sql, EsWorkerProjection *p, bool as_owner,
						 const char *message, const char *sqlstate,
						 MemoryContext cxt, Datum *result, bool *isnull)
{
	EsWorkerRunAs ra;
	Oid			argtypes[3] = {NAMEOID, TEXTOID, TEXTOID};
	Datum		values[3];
	char	   *activity;
	int			nargs = (message != NULL) ? 3 : 1;

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	activity = psprintf("%s -- %s", sql, p->name);
	pgstat_report_activity(STATE_RUNNING, activity);
	if (as_owner)
		run_as_begin(&ra, p->owner, p->name);
	values[0] = DirectFunctionCall1(namein, CStringGetDatum(p->name));
	if (message != NULL)
	{
		values[1] = CStringGetTextDatum(message);
		values[2] = CStringGetTextDatum(sqlstate);
	}
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	PushActiveSnapshot(GetTransactionSnapshot());
	if (SPI_execute_with_args(sql, nargs, argtypes, values, NULL, false, 1) != SPI_OK_SELECT ||
		SPI_processed != 1)
		elog(ERROR, "unexpected result of \"%s\"", sql);
	*result = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, isnull);
	if (!*isnull && TupleDescAttr(SPI_tuptable->tupdesc, 0)->atttypid == TEXTOID)
	{
		MemoryContext old = MemoryContextSwitchTo(cxt);

		*result = PointerGetDatum(DatumGetTextPCopy(*result));
		MemoryContextSwitchTo(old);
	}
	PopActiveSnapshot();
	SPI_finish();
	if (as_owner)
		run_as_commit(&ra);
	else
		CommitTransactionCommand();
	pgstat_report_activity(STATE_IDLE, NULL);
}

/*
 * catch_error
 *		In a PG_CATCH block: copy the error to cxt, write it to the log,
 *		roll the transaction back and forget the error.
 */
static ErrorData *
catch_error(MemoryContext cxt)
{
	ErrorData  *edata;

	MemoryContextSwitchTo(cxt);
	edata = CopyErrorData();
	HOLD_INTERRUPTS();
	EmitErrorReport();
	AbortCurrentTransaction();
	FlushErrorState();
	RESUME_INTERRUPTS();
	MemoryContextSwitchTo(cxt);
	pgstat_report_activity(STATE_IDLE, NULL);
	return edata;
}

/*
 * report_failure
 *		es.es_projection_failed(name, message, sqlstate) in a new
 *		transaction, as the owner (as the worker's user when the owner is
 *		gone: the function runs no user code).  An error there is logged and
 *		false returned.
 */
static bool
report_failure(EsWorkerProjection *p, ErrorData *edata, MemoryContext cxt)
{
	bool		owner_exists;
	Datum		result;
	bool		isnull;
	volatile bool recorded = true;

	StartTransactionCommand();
	owner_exists = OidIsValid(p->owner) &&
		SearchSysCacheExists1(AUTHOID, ObjectIdGetDatum(p->owner));
	CommitTransactionCommand();
	MemoryContextSwitchTo(cxt);

	PG_TRY();
	{
		call_projection_function("SELECT es.es_projection_failed($1, $2, $3)", p, owner_exists,
								 edata->message ? edata->message : "",
								 unpack_sql_state(edata->sqlerrcode), cxt, &result, &isnull);
	}
	PG_CATCH();
	{
		ErrorData  *again = catch_error(cxt);

		ereport(LOG,
				(errmsg("es_ext projection worker could not record the failure of projection \"%s\"",
						p->name),
				 errdetail("The failure was: %s", again->message ? again->message : "")));
		FreeErrorData(again);
		recorded = false;
	}
	PG_END_TRY();
	return recorded;
}

/*
 * apply_batch
 *		es.es_projection_apply(name) in a transaction of its own, as the
 *		owner: the events applied (0: caught up, or not runnable now), -1
 *		when it failed and the failure is recorded, -2 when it could not be.
 */
static int
apply_batch(EsWorkerProjection *p, MemoryContext cxt)
{
	Datum		result = (Datum) 0;
	bool		isnull = true;
	ErrorData  *volatile edata = NULL;

	PG_TRY();
	{
		call_projection_function("SELECT es.es_projection_apply($1)", p, true,
								 NULL, NULL, cxt, &result, &isnull);
	}
	PG_CATCH();
	{
		edata = catch_error(cxt);
	}
	PG_END_TRY();

	if (edata != NULL)
	{
		bool		recorded = report_failure(p, edata, cxt);

		FreeErrorData(edata);
		return recorded ? -1 : -2;
	}
	return isnull ? 0 : DatumGetInt32(result);
}

/*
 * worker_exit
 *		Leave the slot and exit, unless a request (or, unless found_none, a
 *		wake-up) came in meanwhile: then return.  found_none: the database
 *		has no running projection (an append cannot change that, a request
 *		can).  force: exit in any case (es.projection_workers is off).
 *		has_projections and wake_at tell the launcher when to start a worker
 *		again without an append.
 */
static void
worker_exit(EsProjectionSlot *slot, bool found_none, bool force,
			bool has_projections, TimestampTz wake_at)
{
	bool		quit;

	SpinLockAcquire(&projection_shared->mutex);
	quit = force || (!slot->requested && (found_none || !slot->pending));
	if (quit)
	{
		slot->state = PSLOT_IDLE;
		slot->worker_pid = 0;
		slot->worker_latch = NULL;
		slot->clean_exit = true;
		slot->has_projections = has_projections;
		slot->wake_at = wake_at;
	}
	SpinLockRelease(&projection_shared->mutex);
	if (quit)
		proc_exit(0);
}

static void
process_config(void)
{
	if (ConfigReloadPending)
	{
		ConfigReloadPending = false;
		ProcessConfigFile(PGC_SIGHUP);
	}
}

/*
 * es_projection_worker_main
 *		Apply the running asynchronous projections of one database (see the
 *		file header).  main_arg is the slot number, bgw_extra the database's
 *		OID.
 */
void
es_projection_worker_main(Datum main_arg)
{
	int			slotno = DatumGetInt32(main_arg);
	EsProjectionSlot *slot = &projection_shared->slots[slotno];
	Oid			dbid;
	bool		attached = false;
	MemoryContext round_cxt;
	TimestampTz last_work;
	bool		rechecked = false;

	memcpy(&dbid, MyBgworkerEntry->bgw_extra, sizeof(Oid));
	pqsignal(SIGTERM, die);
	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	BackgroundWorkerUnblockSignals();
	BackgroundWorkerInitializeConnectionByOid(dbid, InvalidOid, 0);
	SetConfigOption("application_name", "es_ext projection worker", PGC_USERSET, PGC_S_SESSION);

	SpinLockAcquire(&projection_shared->mutex);
	if (slot->dbid == dbid && slot->state == PSLOT_STARTING)
	{
		slot->state = PSLOT_RUNNING;
		slot->worker_pid = MyProcPid;
		slot->worker_latch = MyLatch;
		slot->clean_exit = false;
		attached = true;
	}
	SpinLockRelease(&projection_shared->mutex);
	if (!attached)
		proc_exit(0);
	before_shmem_exit(worker_detach, Int32GetDatum(slotno));

	round_cxt = AllocSetContextCreate(TopMemoryContext, "es_ext projection worker round",
									  ALLOCSET_DEFAULT_SIZES);
	last_work = GetCurrentTimestamp();

	for (;;)
	{
		EsWorkerProjection *list;
		int			n;
		int			i;
		bool		progress = false;
		bool		saturated = false;
		bool		called = false;
		bool		behind;
		bool		retry_scheduled = false;
		TimestampTz next_retry = 0;
		TimestampTz now;
		long		timeout;

		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
		process_config();
		MemoryContextReset(round_cxt);
		MemoryContextSwitchTo(round_cxt);

		if (!es_projection_workers)
			worker_exit(slot, false, true, true, 0);

		SpinLockAcquire(&projection_shared->mutex);
		slot->pending = false;
		slot->requested = false;
		SpinLockRelease(&projection_shared->mutex);

		list = read_projections(round_cxt, &n);
		MemoryContextSwitchTo(round_cxt);
		if (n <= 0)
		{
			/* no es_ext, or nothing running: a request starts a worker again */
			worker_exit(slot, true, false, false, 0);
			continue;
		}
		SpinLockAcquire(&projection_shared->mutex);
		slot->has_projections = true;
		SpinLockRelease(&projection_shared->mutex);

		now = GetCurrentTimestamp();
		for (i = 0; i < n; i++)
		{
			EsWorkerProjection *p = &list[i];
			int			batches;

			if (p->retry_scheduled && p->retry_at > now)
			{
				if (!retry_scheduled || p->retry_at < next_retry)
					next_retry = p->retry_at;
				retry_scheduled = true;
				continue;
			}
			if (!p->behind)
				continue;
			called = true;
			for (batches = 0; batches < ES_PROJECTION_ROUND_BATCHES; batches++)
			{
				int			applied;

				CHECK_FOR_INTERRUPTS();
				process_config();
				applied = apply_batch(p, round_cxt);
				MemoryContextSwitchTo(round_cxt);
				if (applied <= 0)
				{
					/*
					 * Failed and recorded: its retry or policy is in the
					 * registry, read it again at once.  Not recorded: wait
					 * for the next round.
					 */
					if (applied == -1)
						progress = true;
					break;
				}
				progress = true;
				last_work = GetCurrentTimestamp();
			}
			if (batches >= ES_PROJECTION_ROUND_BATCHES)
				saturated = true;
		}
		pgstat_report_activity(STATE_IDLE, NULL);

		/*
		 * Something was applied (a projection may have more: the others had
		 * their turn), or a failure recorded: read the registry again at
		 * once.  Calls that applied nothing: read it once more at once too,
		 * since a projection whose filter skips every new event moves its
		 * checkpoint without applying anything; when the events after the
		 * checkpoints are still there, transactions in progress hold them
		 * back (below the horizon), and nothing wakes the worker when those
		 * end: poll every es.projection_naptime.
		 */
		if (progress)
		{
			rechecked = false;
			/* caught up: let the next appends accumulate into one batch */
			if (!saturated)
				(void) WaitLatch(MyLatch, WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
								 ES_PROJECTION_COALESCE_MS, PG_WAIT_EXTENSION);
			continue;
		}
		if (called && !rechecked)
		{
			rechecked = true;
			continue;
		}
		if (!called)
			rechecked = false;
		behind = called;

		/*
		 * Idle: exit when that lasted es.projection_worker_idle_timeout and
		 * no event waits; a scheduled retry is left to the launcher.
		 */
		now = GetCurrentTimestamp();
		if (!behind &&
			TimestampDifferenceExceeds(last_work, now, es_projection_worker_idle_timeout))
			worker_exit(slot, false, false, true, retry_scheduled ? next_retry : 0);

		timeout = es_projection_naptime;
		if (retry_scheduled)
			timeout = Min(timeout, TimestampDifferenceMilliseconds(now, next_retry));
		if (!behind)
			timeout = Min(timeout,
						  TimestampDifferenceMilliseconds(now,
														  TimestampTzPlusMilliseconds(last_work,
																					  es_projection_worker_idle_timeout)));
		timeout = Max(timeout, 1);
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 timeout, PG_WAIT_EXTENSION);
	}
}
