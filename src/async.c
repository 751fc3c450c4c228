/*-------------------------------------------------------------------------
 *
 * async.c
 *	  Asynchronous projections: their registry (es.async_projections), the
 *	  batch that applies them (es_projection_apply), their failure policy
 *	  and dead letters, pause, resume, reset, and the switch back to inline.
 *
 * An asynchronous projection is an AFTER INSERT trigger on es.events, as an
 * inline projection is, kept disabled so that appends never fire it.
 * es_projection_apply feeds the next events of the global log to it, the
 * way es_projection_replay does (projection.c: row triggers once per event
 * after their WHEN condition, statement triggers once per batch with the
 * batch as their transition table), and moves the projection's checkpoint
 * in the same transaction: whether that transaction commits or not (an
 * error, kill -9 of the process or of the postmaster), every event affects
 * the read model exactly once.  It reads only below the log horizon, in
 * cursor order (era, tx_id, global_position), so an event that commits late
 * is never behind the checkpoint.  A projection with a category or type
 * filter moves its checkpoint over the events it skips too (to the last
 * event below the horizon once it has seen them all), so that es_wait_for
 * can compare it with the token of any append.  An idle call writes nothing.
 *
 * Concurrency: the applier locks the projection's row FOR UPDATE SKIP
 * LOCKED, so one transaction at a time applies a projection and the others
 * (a background worker, es_run_projections in another session) skip it.
 * Pause, reset and the switch to inline lock the row FOR UPDATE and so wait
 * for the batch being applied.
 *
 * Failures: es_projection_apply lets the error propagate (its transaction
 * rolls back, read model and checkpoint together); the caller then calls
 * es_projection_failed in a new transaction.  The first failure of a batch
 * only switches the projection to one event at a time, at once, up to the
 * last event of that batch (isolate_until), so that the failing event is
 * found; each failure of one event counts an attempt on it and delays the
 * next by ES_ASYNC_RETRY_BASE_MS doubled per attempt (at most
 * ES_ASYNC_RETRY_MAX_MS).  After max_retries attempts the policy applies:
 * stop (state failed, until es_projection_resume) or park the event in
 * es.projection_dead_letters and move on.
 *
 * Who runs what: every function here runs as its caller (no SECURITY
 * DEFINER) and is granted to es_admin.  A trigger function runs as the
 * caller, es_project handlers as their owners (projection.c); the background
 * worker runs a projection as the role that declared it (owner).  The
 * registry and dead-letter tables have the guard triggers: only these
 * functions write them (EsGuardedWrite).  Disabling, enabling and dropping a
 * projection trigger is done here for callers who hold TRIGGER on
 * es.events (es_admin), not only for the owner of es.events; es_ext's own
 * triggers are never touched.
 *
 * Memory: everything is allocated in the SPI procedure context and released
 * by SPI_finish.
 *
 * src/async.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <math.h>

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "access/xact.h"
#include "catalog/dependency.h"
#include "catalog/objectaddress.h"
#include "catalog/pg_trigger.h"
#include "catalog/pg_type.h"
#include "commands/trigger.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "utils/acl.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/datum.h"
#include "utils/fmgroids.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"
#include "utils/xid8.h"

#include "es_ext.h"

/* One row of es.async_projections, as the functions here need it. */
typedef struct EsAsync
{
	Oid			owner;
	char	   *state;
	int32		batch_size;
	Datum		categories;		/* text[] or 0 */
	Datum		event_types;	/* text[] or 0 */
	char	   *on_error;
	int32		max_retries;
	bool		has_checkpoint;
	int32		era;
	Datum		tx_id;
	int64		position;
	bool		isolating;		/* isolate_until is set */
	int32		iso_era;
	Datum		iso_tx;
	int64		iso_pos;
	int32		attempts;
	bool		due;			/* retry_at has passed (or is NULL) */
} EsAsync;

#define ASYNC_COLUMNS \
	"SELECT a.owner, a.state, a.batch_size, a.categories, a.event_types, a.on_error," \
	" a.max_retries, (a.checkpoint).era, (a.checkpoint).tx_id, (a.checkpoint).global_position," \
	" a.isolate_until IS NOT NULL, (a.isolate_until).era, (a.isolate_until).tx_id," \
	" (a.isolate_until).global_position, a.attempts," \
	" a.retry_at IS NULL OR a.retry_at OPERATOR(pg_catalog.<=) pg_catalog.clock_timestamp()" \
	" FROM es.async_projections AS a WHERE a.projection OPERATOR(pg_catalog.=) $1"

static EsPlan lock_skip_plan = {
	NULL, ASYNC_COLUMNS " FOR UPDATE SKIP LOCKED", 1, {NAMEOID}
};

static EsPlan lock_wait_plan = {
	NULL, ASYNC_COLUMNS " FOR UPDATE", 1, {NAMEOID}
};

static EsPlan read_plan = {
	NULL, ASYNC_COLUMNS, 1, {NAMEOID}
};

static EsPlan exists_plan = {
	NULL,
	"SELECT FROM es.async_projections AS a WHERE a.projection OPERATOR(pg_catalog.=) $1",
	1, {NAMEOID}
};

/*
 * The next events of a projection: after its checkpoint ($1, $2, $3), below
 * the horizon ($4, $5), in its categories ($6) and types ($7), at most $8.
 */
static EsPlan next_events_plan = {
	NULL,
	"SELECT e, e.era, e.tx_id, e.global_position, e.stream_id, e.version, e.event_type"
	"  FROM es.events AS e"
	" WHERE (e.era, e.tx_id, e.global_position) OPERATOR(pg_catalog.>) ($1, $2, $3)"
	"   AND (e.era, e.tx_id) OPERATOR(pg_catalog.<) ($4, $5)"
	"   AND ($6::text[] IS NULL OR e.category OPERATOR(pg_catalog.=) ANY ($6))"
	"   AND ($7::text[] IS NULL OR e.event_type OPERATOR(pg_catalog.=) ANY ($7))"
	" ORDER BY e.era, e.tx_id, e.global_position LIMIT $8",
	8, {INT4OID, XID8OID, INT8OID, INT4OID, XID8OID, TEXTARRAYOID, TEXTARRAYOID, INT8OID}
};

/* the last event after a cursor ($1, $2, $3) below the horizon ($4, $5) */
static EsPlan last_below_plan = {
	NULL,
	"SELECT e.era, e.tx_id, e.global_position FROM es.events AS e"
	" WHERE (e.era, e.tx_id, e.global_position) OPERATOR(pg_catalog.>) ($1, $2, $3)"
	"   AND (e.era, e.tx_id) OPERATOR(pg_catalog.<) ($4, $5)"
	" ORDER BY e.era DESC, e.tx_id DESC, e.global_position DESC LIMIT 1",
	5, {INT4OID, XID8OID, INT8OID, INT4OID, XID8OID}
};

/* every event after a cursor, with appenders locked out (to inline) */
static EsPlan rest_events_plan = {
	NULL,
	"SELECT e, e.era, e.tx_id, e.global_position FROM es.events AS e"
	" WHERE (e.era, e.tx_id, e.global_position) OPERATOR(pg_catalog.>) ($1, $2, $3)"
	" ORDER BY e.era, e.tx_id, e.global_position",
	3, {INT4OID, XID8OID, INT8OID}
};

/* the last event of the log (appenders locked out) */
static EsPlan head_plan = {
	NULL,
	"SELECT e.era, e.tx_id, e.global_position FROM es.events AS e"
	" ORDER BY e.era DESC, e.tx_id DESC, e.global_position DESC LIMIT 1",
	0, {InvalidOid}
};

static EsPlan insert_plan = {
	NULL,
	"INSERT INTO es.async_projections (projection, owner, state, batch_size, categories,"
	" event_types, on_error, max_retries, checkpoint, created_at)"
	" VALUES ($1, $2, 'running', $3, $4, $5, $6, $7,"
	"         CASE WHEN $8 IS NULL THEN NULL::es.log_cursor ELSE ROW($8, $9, $10)::es.log_cursor END,"
	"         pg_catalog.clock_timestamp())",
	10, {NAMEOID, REGROLEOID, INT4OID, TEXTARRAYOID, TEXTARRAYOID, TEXTOID, INT4OID,
	INT4OID, XID8OID, INT8OID}
};

static EsPlan advance_plan = {
	NULL,
	"UPDATE es.async_projections AS a"
	"   SET checkpoint = ROW($2, $3, $4)::es.log_cursor,"
	"       applied = a.applied OPERATOR(pg_catalog.+) $5,"
	"       last_applied_at = CASE WHEN $5 OPERATOR(pg_catalog.>) 0"
	"                              THEN pg_catalog.clock_timestamp() ELSE a.last_applied_at END,"
	"       isolate_until = CASE WHEN $6 THEN NULL ELSE a.isolate_until END,"
	"       attempts = 0, retry_at = NULL"
	" WHERE a.projection OPERATOR(pg_catalog.=) $1",
	6, {NAMEOID, INT4OID, XID8OID, INT8OID, INT8OID, BOOLOID}
};

static EsPlan failed_plan = {
	NULL,
	"UPDATE es.async_projections AS a"
	"   SET state = CASE WHEN a.state OPERATOR(pg_catalog.=) 'paused' THEN a.state ELSE $2 END,"
	"       isolate_until = CASE WHEN $3 THEN ROW($9, $10, $11)::es.log_cursor ELSE a.isolate_until END,"
	"       attempts = $4,"
	"       retry_at = pg_catalog.clock_timestamp() OPERATOR(pg_catalog.+) pg_catalog.make_interval(secs => $5),"
	"       last_error = $6, last_error_sqlstate = $7, last_error_at = pg_catalog.clock_timestamp(),"
	"       last_error_position = $8"
	" WHERE a.projection OPERATOR(pg_catalog.=) $1",
	11, {NAMEOID, TEXTOID, BOOLOID, INT4OID, FLOAT8OID, TEXTOID, TEXTOID, INT8OID,
	INT4OID, XID8OID, INT8OID}
};

static EsPlan park_plan = {
	NULL,
	"INSERT INTO es.projection_dead_letters AS d (projection, global_position, log_cursor,"
	" stream_id, version, event_type, error, sqlstate, attempts, parked_at)"
	" VALUES ($1, $4, ROW($2, $3, $4)::es.log_cursor, $5, $6, $7, $8, $9, $10,"
	"         pg_catalog.clock_timestamp())"
	" ON CONFLICT ON CONSTRAINT projection_dead_letters_pkey DO NOTHING",
	10, {NAMEOID, INT4OID, XID8OID, INT8OID, TEXTOID, INT8OID, TEXTOID, TEXTOID, TEXTOID, INT4OID}
};

static EsPlan state_plan = {
	NULL,
	"UPDATE es.async_projections AS a SET state = $2, attempts = 0,"
	"       retry_at = CASE WHEN $2 OPERATOR(pg_catalog.=) 'running' THEN NULL ELSE a.retry_at END"
	" WHERE a.projection OPERATOR(pg_catalog.=) $1",
	2, {NAMEOID, TEXTOID}
};

static EsPlan reset_plan = {
	NULL,
	"UPDATE es.async_projections AS a"
	"   SET checkpoint = NULL, applied = 0, last_applied_at = NULL, isolate_until = NULL, attempts = 0,"
	"       retry_at = NULL, last_error = NULL, last_error_sqlstate = NULL, last_error_at = NULL,"
	"       last_error_position = NULL,"
	"       state = CASE WHEN a.state OPERATOR(pg_catalog.=) 'failed' THEN 'running' ELSE a.state END"
	" WHERE a.projection OPERATOR(pg_catalog.=) $1",
	1, {NAMEOID}
};

static EsPlan delete_plan = {
	NULL,
	"DELETE FROM es.async_projections AS a WHERE a.projection OPERATOR(pg_catalog.=) $1",
	1, {NAMEOID}
};

static EsPlan dead_list_plan = {
	NULL,
	"SELECT e, e.era, e.tx_id, e.global_position FROM es.projection_dead_letters AS d"
	"  JOIN es.events AS e ON e.stream_id OPERATOR(pg_catalog.=) d.stream_id"
	"                     AND e.version OPERATOR(pg_catalog.=) d.version"
	" WHERE d.projection OPERATOR(pg_catalog.=) $1"
	"   AND ($2::bigint IS NULL OR d.global_position OPERATOR(pg_catalog.=) $2)"
	" ORDER BY d.log_cursor FOR UPDATE OF d",
	2, {NAMEOID, INT8OID}
};

static EsPlan dead_delete_plan = {
	NULL,
	"DELETE FROM es.projection_dead_letters AS d"
	" WHERE d.projection OPERATOR(pg_catalog.=) $1"
	"   AND ($2::bigint IS NULL OR d.global_position OPERATOR(pg_catalog.=) $2)",
	2, {NAMEOID, INT8OID}
};

static EsPlan status_delete_plan = {
	NULL,
	"DELETE FROM es.projection_status AS s WHERE s.projection OPERATOR(pg_catalog.=) $1",
	1, {NAMEOID}
};

static EsPlan rebuilding_plan = {
	NULL,
	"SELECT FROM es.projection_status AS s WHERE s.projection OPERATOR(pg_catalog.=) $1"
	"   AND s.state OPERATOR(pg_catalog.=) 'rebuilding'",
	1, {NAMEOID}
};

/*
 * projection_arg
 *		The projection name argument, which cannot be NULL.
 */
static Name
projection_arg(FunctionCallInfo fcinfo)
{
	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("projection cannot be null")));
	return PG_GETARG_NAME(0);
}

/*
 * check_trigger_privilege
 *		Only roles holding TRIGGER on es.events (es_admin) may turn a
 *		projection trigger on or off, or drop it.
 */
static void
check_trigger_privilege(Oid events)
{
	if (pg_class_aclcheck(events, GetUserId(), ACL_TRIGGER) != ACLCHECK_OK)
		aclcheck_error(ACLCHECK_NO_PRIV, OBJECT_TABLE, "events");
}

/*
 * fetch_async
 *		Read (and lock, per plan) the registry row of projection into *a.
 *		Returns false when no row came back.  Must be called inside SPI.
 */
static bool
fetch_async(EsPlan *plan, Name projection, EsAsync *a)
{
	Datum		values[1];
	HeapTuple	row;
	TupleDesc	desc;
	bool		isnull;
	Datum		d;

	values[0] = NameGetDatum(projection);
	if (SPI_execute_plan(EsGetPlan(plan), values, NULL, false, 1) != SPI_OK_SELECT)
		elog(ERROR, "could not read es.async_projections");
	if (SPI_processed == 0)
		return false;
	row = SPI_tuptable->vals[0];
	desc = SPI_tuptable->tupdesc;
	memset(a, 0, sizeof(*a));
	a->owner = DatumGetObjectId(SPI_getbinval(row, desc, 1, &isnull));
	a->state = TextDatumGetCString(SPI_getbinval(row, desc, 2, &isnull));
	a->batch_size = DatumGetInt32(SPI_getbinval(row, desc, 3, &isnull));
	d = SPI_getbinval(row, desc, 4, &isnull);
	a->categories = isnull ? (Datum) 0 : d;
	d = SPI_getbinval(row, desc, 5, &isnull);
	a->event_types = isnull ? (Datum) 0 : d;
	a->on_error = TextDatumGetCString(SPI_getbinval(row, desc, 6, &isnull));
	a->max_retries = DatumGetInt32(SPI_getbinval(row, desc, 7, &isnull));
	d = SPI_getbinval(row, desc, 8, &isnull);
	a->has_checkpoint = !isnull;
	a->era = isnull ? -1 : DatumGetInt32(d);
	d = SPI_getbinval(row, desc, 9, &isnull);
	a->tx_id = isnull ? FullTransactionIdGetDatum(FullTransactionIdFromU64(0)) : d;
	d = SPI_getbinval(row, desc, 10, &isnull);
	a->position = isnull ? 0 : DatumGetInt64(d);
	a->isolating = DatumGetBool(SPI_getbinval(row, desc, 11, &isnull));
	if (a->isolating)
	{
		a->iso_era = DatumGetInt32(SPI_getbinval(row, desc, 12, &isnull));
		a->iso_tx = SPI_getbinval(row, desc, 13, &isnull);
		a->iso_pos = DatumGetInt64(SPI_getbinval(row, desc, 14, &isnull));
	}
	a->attempts = DatumGetInt32(SPI_getbinval(row, desc, 15, &isnull));
	a->due = DatumGetBool(SPI_getbinval(row, desc, 16, &isnull));
	return true;
}

static void
report_missing(Name projection)
{
	ereport(ERROR,
			(errcode(ERRCODE_UNDEFINED_OBJECT),
			 errmsg("asynchronous projection \"%s\" does not exist", NameStr(*projection)),
			 errhint("Declare it with es.es_create_async_projection().")));
}

/*
 * lock_async
 *		Lock and read the registry row of projection, waiting for a batch
 *		being applied; an error if there is none.
 */
static void
lock_async(Name projection, EsAsync *a)
{
	if (!fetch_async(&lock_wait_plan, projection, a))
		report_missing(projection);
}

/*
 * cursor_after
 *		Is (era1, tx1, pos1) after (era2, tx2, pos2) in log order?
 */
static bool
cursor_after(int32 era1, Datum tx1, int64 pos1, int32 era2, Datum tx2, int64 pos2)
{
	FullTransactionId t1 = DatumGetFullTransactionId(tx1);
	FullTransactionId t2 = DatumGetFullTransactionId(tx2);

	if (era1 != era2)
		return era1 > era2;
	if (!FullTransactionIdEquals(t1, t2))
		return FullTransactionIdFollows(t1, t2);
	return pos1 > pos2;
}

/*
 * Set while this backend feeds events to a projection: the projection's
 * code must not apply, pause, reset, switch or drop projections (applying
 * its own projection again from inside a batch would apply events twice).
 */
static int	applying = 0;

static void
check_not_applying(const char *what)
{
	if (applying > 0)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("cannot call %s while a projection is being applied", what),
				 errdetail("The code of a projection must not change projections.")));
}

/*
 * replay_portal
 *		Run plan (values, nulls) as a cursor and feed its rows (column 1 the
 *		event, 2 to 4 its log cursor), fetched ES_FETCH_BATCH at a time, through
 *		the trigger of projection in one replay (a statement trigger sees them
 *		all as one transition table; each_alone: every event in a replay of
 *		its own, as a batch of one), as the role run_as (registered code runs
 *		as the role that declared it, see routine.c).  Sets cur[] to the
 *		cursor of the last row (by-value datums) and returns how many rows.
 *		Must be called inside SPI.
 */
static uint64
replay_portal(Relation rel, Name projection, Oid run_as, EsPlan *plan, Datum *values,
			  const char *nulls, Datum *cur, bool each_alone)
{
	Portal		portal = SPI_cursor_open(NULL, EsGetPlan(plan), values, nulls, false);
	volatile uint64 n = 0;

	applying++;
	PG_TRY();
	{
		EsReplay   *r = NULL;
		EsRunAs		runas;

		EsRunAsBegin(&runas, run_as);
		for (;;)
		{
			uint64		i;
			bool		isnull;
			HeapTuple	last;

			SPI_cursor_fetch(portal, true, ES_FETCH_BATCH);
			if (SPI_processed == 0)
				break;
			for (i = 0; i < SPI_processed; i++)
			{
				if (r == NULL)
					r = EsReplayBegin(rel, NameStr(*projection));
				EsReplayEvent(r, DatumGetHeapTupleHeader(SPI_getbinval(SPI_tuptable->vals[i],
																		SPI_tuptable->tupdesc, 1, &isnull)));
				if (each_alone)
				{
					EsReplayEnd(r);
					r = NULL;
				}
			}
			last = SPI_tuptable->vals[SPI_processed - 1];
			cur[0] = SPI_getbinval(last, SPI_tuptable->tupdesc, 2, &isnull);
			cur[1] = SPI_getbinval(last, SPI_tuptable->tupdesc, 3, &isnull);
			cur[2] = SPI_getbinval(last, SPI_tuptable->tupdesc, 4, &isnull);
			n += SPI_processed;
			SPI_freetuptable(SPI_tuptable);
		}
		if (r != NULL)
			EsReplayEnd(r);
		EsRunAsEnd(&runas);
	}
	PG_FINALLY();
	{
		applying--;
	}
	PG_END_TRY();
	SPI_cursor_close(portal);
	return n;
}

/*
 * open_next_events
 *		Run the query of the next events of a (at most limit), below the
 *		horizon of the active snapshot.  Results in SPI_tuptable.
 */
static void
next_events_args(const EsAsync *a, int64 limit, int32 *era, FullTransactionId *horizon,
				 Datum *values, char *nulls)
{
	memset(nulls, ' ', 8);
	*era = EsCurrentEra();
	*horizon = EsLogHorizon(GetActiveSnapshot());
	values[0] = Int32GetDatum(a->era);
	values[1] = a->tx_id;
	values[2] = Int64GetDatum(a->position);
	values[3] = Int32GetDatum(*era);
	values[4] = FullTransactionIdGetDatum(*horizon);
	values[5] = a->categories;
	nulls[5] = a->categories == (Datum) 0 ? 'n' : ' ';
	values[6] = a->event_types;
	nulls[6] = a->event_types == (Datum) 0 ? 'n' : ' ';
	values[7] = Int64GetDatum(limit);
}

/*
 * next_events
 *		Run the query of the next events of a (at most limit), below the
 *		horizon of the active snapshot.  Results in SPI_tuptable.
 */
static void
next_events(const EsAsync *a, int64 limit, int32 *era, FullTransactionId *horizon)
{
	Datum		values[8];
	char		nulls[8];

	next_events_args(a, limit, era, horizon, values, nulls);
	if (SPI_execute_plan(EsGetPlan(&next_events_plan), values, nulls, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not read es.events");
}

/*
 * open_events_checked
 *		Open es.events for a replay through projection's trigger, checking
 *		that the trigger exists and is disabled (an enabled trigger would
 *		apply appended events a second time).
 */
static Relation
open_events_checked(Name projection, LOCKMODE lockmode)
{
	Relation	rel = table_open(EsRelationOid("events"), lockmode);
	Trigger    *tg = EsFindProjectionTrigger(rel, NameStr(*projection));

	if (tg->tgenabled != TRIGGER_DISABLED)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("trigger \"%s\" of asynchronous projection \"%s\" is enabled",
						tg->tgname, NameStr(*projection)),
				 errdetail("Appends fire it: applying the log through it too would apply events twice."),
				 errhint("Disable the trigger (ALTER TABLE es.events DISABLE TRIGGER %s), or make the projection inline with es.es_projection_make_inline().",
						 quote_identifier(tg->tgname))));
	return rel;
}

/*
 * set_trigger
 *		Enable or disable the projection trigger tgname on rel (opened with
 *		ShareRowExclusiveLock, the lock ALTER TABLE ... ENABLE TRIGGER takes).
 */
static void
set_trigger(Relation rel, const char *tgname, bool enable)
{
	(void) EsFindProjectionTrigger(rel, tgname);
	EnableDisableTrigger(rel, tgname, enable ? TRIGGER_FIRES_ON_ORIGIN : TRIGGER_DISABLED,
						 false, ShareRowExclusiveLock);
	CommandCounterIncrement();
}

/*
 * check_text_array
 *		A filter array: NULL (no filter), or a non-empty one-dimensional array
 *		without NULL or empty elements.
 */
static void
check_text_array(FunctionCallInfo fcinfo, int argno, const char *what)
{
	ArrayType  *arr;
	Datum	   *elems;
	bool	   *nulls;
	int			n;
	int			i;

	if (PG_ARGISNULL(argno))
		return;
	arr = PG_GETARG_ARRAYTYPE_P(argno);
	if (ARR_NDIM(arr) > 1)
		ereport(ERROR,
				(errcode(ERRCODE_ARRAY_SUBSCRIPT_ERROR),
				 errmsg("%s must be a one-dimensional array", what)));
	deconstruct_array(arr, TEXTOID, -1, false, TYPALIGN_INT, &elems, &nulls, &n);
	if (n == 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s cannot be empty", what),
				 errhint("Pass NULL for no filter.")));
	for (i = 0; i < n; i++)
		if (nulls[i] || VARSIZE_ANY_EXHDR(DatumGetPointer(elems[i])) == 0)
			ereport(ERROR,
					(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
					 errmsg("%s cannot contain null or empty elements", what)));
}

/*
 * trigger_created_here
 *		Was the trigger tgoid created by the current transaction?  If so,
 *		*cmin is the command that created it.
 */
static bool
trigger_created_here(Oid tgoid, CommandId *cmin)
{
	Relation	tgrel = table_open(TriggerRelationId, AccessShareLock);
	ScanKeyData key;
	SysScanDesc scan;
	HeapTuple	tup;
	bool		result = false;

	ScanKeyInit(&key, Anum_pg_trigger_oid, BTEqualStrategyNumber, F_OIDEQ,
				ObjectIdGetDatum(tgoid));
	scan = systable_beginscan(tgrel, TriggerOidIndexId, true, NULL, 1, &key);
	tup = systable_getnext(scan);
	if (HeapTupleIsValid(tup))
	{
		result = TransactionIdIsCurrentTransactionId(HeapTupleHeaderGetXmin(tup->t_data));
		if (result)
			*cmin = HeapTupleHeaderGetCmin(tup->t_data);
	}
	systable_endscan(scan);
	table_close(tgrel, AccessShareLock);
	return result;
}

/*
 * registered_owner
 *		The role an asynchronous projection runs as (InvalidOid: not
 *		asynchronous, it runs as the caller).  Must be called inside SPI.
 */
static Oid
registered_owner(Name projection)
{
	EsAsync		a;

	if (fetch_async(&read_plan, projection, &a))
		return a.owner;
	return InvalidOid;
}

/*
 * check_no_concurrent_append
 *		Called under ShareRowExclusiveLock on es.events, before reading the
 *		events that decide a switch between inline and asynchronous.  At READ
 *		COMMITTED each statement sees what committed before the lock.  At
 *		REPEATABLE READ or SERIALIZABLE the transaction's snapshot may predate
 *		an append that committed while this waited for the lock: that append
 *		would be lost or applied twice, so the switch fails with a
 *		serialization failure instead.  Must be called inside SPI.
 */
static void
check_no_concurrent_append(void)
{
	bool		isnull;
	Datum		mine[3] = {0, 0, 0};
	Datum		latest[3] = {0, 0, 0};
	bool		have_mine;
	bool		have_latest;
	int			i;

	if (!IsolationUsesXactSnapshot())
		return;
	if (SPI_execute_plan(EsGetPlan(&head_plan), NULL, NULL, false, 1) != SPI_OK_SELECT)
		elog(ERROR, "could not read es.events");
	have_mine = SPI_processed > 0;
	for (i = 0; have_mine && i < 3; i++)
		mine[i] = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, i + 1, &isnull);
	if (SPI_execute_snapshot(EsGetPlan(&head_plan), NULL, NULL, GetLatestSnapshot(),
							 InvalidSnapshot, true, false, 1) != SPI_OK_SELECT)
		elog(ERROR, "could not read es.events");
	have_latest = SPI_processed > 0;
	for (i = 0; have_latest && i < 3; i++)
		latest[i] = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, i + 1, &isnull);
	if (have_mine != have_latest ||
		(have_mine && (cursor_after(DatumGetInt32(latest[0]), latest[1], DatumGetInt64(latest[2]),
									DatumGetInt32(mine[0]), mine[1], DatumGetInt64(mine[2])))))
		ereport(ERROR,
				(errcode(ERRCODE_T_R_SERIALIZATION_FAILURE),
				 errmsg("could not serialize access due to a concurrent append"),
				 errdetail("Events were appended after this transaction's snapshot was taken; switching the projection now would lose them or apply them twice."),
				 errhint("Retry the transaction.")));
}

/* events appended by the current transaction from ($1, $2) on */
static EsPlan mine_plan = {
	NULL,
	"SELECT e.xmin, e.cmin FROM es.events AS e"
	" WHERE (e.era, e.tx_id) OPERATOR(pg_catalog.>=) ($1, $2)",
	2, {INT4OID, XID8OID}
};

/*
 * appended_here
 *		Has the current transaction appended events after its command
 *		after (the creation of a trigger, which fired for them)?  They carry its top
 *		transaction id, or a later one (es_append orders them at or after
 *		their stream's previous append), in the current era.  Inside SPI.
 */
static bool
appended_here(CommandId after)
{
	FullTransactionId top = GetTopFullTransactionIdIfAny();
	Datum		values[2];
	uint64		i;

	if (!FullTransactionIdIsValid(top))
		return false;
	values[0] = Int32GetDatum(EsCurrentEra());
	values[1] = FullTransactionIdGetDatum(top);
	if (SPI_execute_plan(EsGetPlan(&mine_plan), values, NULL, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not read es.events");
	for (i = 0; i < SPI_processed; i++)
	{
		bool		isnull;
		TransactionId xmin = DatumGetTransactionId(SPI_getbinval(SPI_tuptable->vals[i],
																 SPI_tuptable->tupdesc, 1, &isnull));

		CommandId	cid = DatumGetCommandId(SPI_getbinval(SPI_tuptable->vals[i],
												  SPI_tuptable->tupdesc, 2, &isnull));

		if (TransactionIdIsCurrentTransactionId(xmin) && cid > after)
			return true;
	}
	return false;
}

/*
 * run_reset
 *		Run the reset statement(s) of projection as the caller, in a GUC
 *		nest level of their own (a SET in them does not outlive the reset),
 *		and, like the projection's own code, without leave to apply, reset
 *		or drop projections (a batch applied there would survive the reset
 *		and be applied again).  Inside SPI.
 */
static void
run_reset(Name projection, const char *sql)
{
	volatile int rc = 0;
	int			save_nestlevel = NewGUCNestLevel();

	applying++;
	PG_TRY();
	{
		rc = SPI_execute(sql, false, 0);
	}
	PG_FINALLY();
	{
		applying--;
	}
	PG_END_TRY();
	AtEOXact_GUC(false, save_nestlevel);
	if (rc < 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("could not run the reset statement of projection \"%s\"",
						NameStr(*projection)),
				 errdetail("%s", SPI_result_code_string(rc)),
				 errhint("The reset statement empties the read model; it cannot control transactions or copy to the client.")));
}

PG_FUNCTION_INFO_V1(es_create_async_projection);

/*
 * es_create_async_projection(projection name, batch_size int,
 *							  categories text[], event_types text[],
 *							  on_error text, max_retries int,
 *							  from_start boolean) RETURNS void
 *
 * Registers the projection trigger of that name as asynchronous and
 * disables it, holding ShareRowExclusiveLock on es.events (appenders wait)
 * until the caller's transaction ends.  Where it starts: a trigger created
 * in this transaction (it never fired) or found disabled starts at the
 * beginning of the log; an enabled one, an inline projection whose read
 * model holds every committed event, continues after the last event of the
 * log (no appender can be in flight under that lock).  from_start true or
 * false overrides that choice (true: the caller empties the read model in
 * the same transaction; false: the read model already holds every event).
 */
Datum
es_create_async_projection(PG_FUNCTION_ARGS)
{
	Name		projection = projection_arg(fcinfo);
	int32		batch_size;
	int32		max_retries;
	char	   *on_error;
	Oid			events = EsRelationOid("events");
	Relation	rel;
	Trigger    *tg;
	bool		from_start;
	Datum		values[10];
	char		nulls[10] = "          ";
	EsAsync		a;

	EsCheckWritable("es_create_async_projection()");
	EsRefuseDistributed("es_create_async_projection()", "Asynchronous projections read the global log; on a distributed event store follow es.es_read_log() instead.");
	check_not_applying("es_create_async_projection()");
	if (PG_ARGISNULL(1) || PG_ARGISNULL(4) || PG_ARGISNULL(5))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("batch_size, on_error and max_retries cannot be null")));
	batch_size = PG_GETARG_INT32(1);
	if (batch_size < 1 || batch_size > ES_ASYNC_MAX_BATCH)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("batch_size must be between 1 and %d", ES_ASYNC_MAX_BATCH)));
	check_text_array(fcinfo, 2, "categories");
	check_text_array(fcinfo, 3, "event_types");
	on_error = text_to_cstring(PG_GETARG_TEXT_PP(4));
	if (strcmp(on_error, "stop") != 0 && strcmp(on_error, "park") != 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid value for on_error: \"%s\"", on_error),
				 errhint("Valid values are \"stop\" and \"park\".")));
	max_retries = PG_GETARG_INT32(5);
	if (max_retries < 0 || max_retries > ES_ASYNC_MAX_RETRIES)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("max_retries must be between 0 and %d", ES_ASYNC_MAX_RETRIES)));
	check_trigger_privilege(events);

	rel = table_open(events, ShareRowExclusiveLock);
	tg = EsFindProjectionTrigger(rel, NameStr(*projection));

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");

	if (fetch_async(&lock_wait_plan, projection, &a))
		ereport(ERROR,
				(errcode(ERRCODE_DUPLICATE_OBJECT),
				 errmsg("projection \"%s\" is already asynchronous", NameStr(*projection))));
	values[0] = NameGetDatum(projection);
	if (SPI_execute_plan(EsGetPlan(&rebuilding_plan), values, NULL, false, 1) != SPI_OK_SELECT)
		elog(ERROR, "could not read es.projection_status");
	if (SPI_processed > 0)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("projection \"%s\" is being rebuilt", NameStr(*projection)),
				 errhint("Finish the rebuild (CALL es.es_rebuild_projection) first.")));

	/* a trigger this transaction created has never fired */
	if (!PG_ARGISNULL(6))
		from_start = PG_GETARG_BOOL(6);
	else
	{
		CommandId	created_at = InvalidCommandId;
		bool		created_here = trigger_created_here(tg->tgoid, &created_at);

		from_start = tg->tgenabled == TRIGGER_DISABLED || created_here;
		if (created_here && tg->tgenabled != TRIGGER_DISABLED && appended_here(created_at))
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("cannot make projection \"%s\" asynchronous from the start of the log",
							NameStr(*projection)),
					 errdetail("This transaction created its trigger and then appended events, which the trigger may have applied already."),
					 errhint("Declare the projection before appending, or pass from_start => false (or true after emptying its read model).")));
	}

	values[0] = NameGetDatum(projection);
	values[1] = ObjectIdGetDatum(GetUserId());
	values[2] = Int32GetDatum(batch_size);
	values[3] = PG_ARGISNULL(2) ? (Datum) 0 : PG_GETARG_DATUM(2);
	nulls[3] = PG_ARGISNULL(2) ? 'n' : ' ';
	values[4] = PG_ARGISNULL(3) ? (Datum) 0 : PG_GETARG_DATUM(3);
	nulls[4] = PG_ARGISNULL(3) ? 'n' : ' ';
	values[5] = PG_GETARG_DATUM(4);
	values[6] = Int32GetDatum(max_retries);
	nulls[7] = nulls[8] = nulls[9] = 'n';
	values[7] = values[8] = values[9] = (Datum) 0;
	if (!from_start)
	{
		check_no_concurrent_append();
		if (SPI_execute_plan(EsGetPlan(&head_plan), NULL, NULL, false, 1) != SPI_OK_SELECT)
			elog(ERROR, "could not read es.events");
		if (SPI_processed > 0)
		{
			bool		isnull;

			values[7] = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
			values[8] = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull);
			values[9] = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 3, &isnull);
			nulls[7] = nulls[8] = nulls[9] = ' ';
		}
	}
	EsGuardedWrite(&insert_plan, EsRelationOid("async_projections"), TRIGGER_EVENT_INSERT,
				   values, nulls, InvalidSnapshot, SPI_OK_INSERT);

	if (tg->tgenabled != TRIGGER_DISABLED)
		set_trigger(rel, NameStr(*projection), false);

	SPI_finish();
	table_close(rel, NoLock);

	ereport(NOTICE,
			(errmsg("projection \"%s\" is asynchronous", NameStr(*projection)),
			 from_start ?
			 errdetail("It starts at the beginning of the log.") :
			 errdetail("It continues after the last event it applied inline.")));
	EsProjectionWorkerRequest();
	PG_RETURN_VOID();
}

PG_FUNCTION_INFO_V1(es_projection_apply);

/*
 * es_projection_apply(projection name) RETURNS integer
 *
 * Applies the next batch of the projection (one event while retrying) and
 * writes its checkpoint, in the caller's transaction.  Returns how many
 * events were applied: 0 when the projection is caught up, paused, failed,
 * waiting for a retry, or being applied by another transaction (its row is
 * locked: skipped, not waited for).
 */
Datum
es_projection_apply(PG_FUNCTION_ARGS)
{
	Name		projection = projection_arg(fcinfo);
	EsAsync		a;
	Relation	rel;
	int32		era;
	FullTransactionId horizon;
	int64		limit;
	uint64		n;
	int32		new_era;
	Datum		new_tx;
	int64		new_pos;
	bool		moved;

	EsCheckWritable("es_projection_apply()");
	check_not_applying("es_projection_apply()");

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	if (!fetch_async(&lock_skip_plan, projection, &a))
	{
		Datum		values[1];

		values[0] = NameGetDatum(projection);
		if (SPI_execute_plan(EsGetPlan(&exists_plan), values, NULL, false, 1) != SPI_OK_SELECT)
			elog(ERROR, "could not read es.async_projections");
		if (SPI_processed == 0)
			report_missing(projection);
		SPI_finish();
		PG_RETURN_INT32(0);		/* another transaction applies it */
	}
	if (strcmp(a.state, "running") != 0 || !a.due)
	{
		SPI_finish();
		PG_RETURN_INT32(0);
	}

	rel = open_events_checked(projection, AccessShareLock);
	limit = a.isolating ? 1 : a.batch_size;
	{
		Datum		values[8];
		char		nulls[8];
		Datum		cur[3];

		next_events_args(&a, limit, &era, &horizon, values, nulls);
		cur[0] = Int32GetDatum(a.era);
		cur[1] = a.tx_id;
		cur[2] = Int64GetDatum(a.position);
		n = replay_portal(rel, projection, a.owner, &next_events_plan, values, nulls, cur, false);
		new_era = DatumGetInt32(cur[0]);
		new_tx = cur[1];
		new_pos = DatumGetInt64(cur[2]);
	}
	if ((int64) n < limit && (a.categories != (Datum) 0 || a.event_types != (Datum) 0))
	{
		/* seen everything below the horizon: pass the events filtered out */
		Datum		values[5];

		values[0] = Int32GetDatum(new_era);
		values[1] = new_tx;
		values[2] = Int64GetDatum(new_pos);
		values[3] = Int32GetDatum(era);
		values[4] = FullTransactionIdGetDatum(horizon);
		if (SPI_execute_plan(EsGetPlan(&last_below_plan), values, NULL, false, 1) != SPI_OK_SELECT)
			elog(ERROR, "could not read es.events");
		if (SPI_processed > 0)
		{
			bool		isnull;

			new_era = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
			new_tx = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull);
			new_pos = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 3, &isnull));
		}
	}

	/* (no checkpoint is era -1: any cursor is after it) */
	moved = cursor_after(new_era, new_tx, new_pos, a.era, a.tx_id, a.position);
	if (moved || (a.isolating && n == 0))
	{
		Datum		values[6];

		values[0] = NameGetDatum(projection);
		values[1] = Int32GetDatum(new_era);
		values[2] = new_tx;
		values[3] = Int64GetDatum(new_pos);
		values[4] = Int64GetDatum((int64) n);
		/* past the last event of the batch that failed: whole batches again */
		values[5] = BoolGetDatum(a.isolating &&
								 (n == 0 || !cursor_after(a.iso_era, a.iso_tx, a.iso_pos,
														  new_era, new_tx, new_pos)));
		if (moved)
			EsGuardedWrite(&advance_plan, EsRelationOid("async_projections"), TRIGGER_EVENT_UPDATE,
						   values, NULL, InvalidSnapshot, SPI_OK_UPDATE);
		if (moved)
			EsWaitWakeAtCommit();
	}

	SPI_finish();
	table_close(rel, AccessShareLock);
	PG_RETURN_INT32((int32) n);
}

PG_FUNCTION_INFO_V1(es_projection_failed);

/*
 * es_projection_failed(projection name, message text, sqlstate text)
 *		RETURNS text
 *
 * Records a failed es_projection_apply (whose transaction rolled back).
 * Returns 'retry' (applied again one event at a time, when retry_at comes),
 * 'parked' (the event is in the dead letters and the checkpoint past it) or
 * 'failed' (the projection stopped).  A projection paused meanwhile (pause
 * waited for the failing batch, then committed) stays paused.
 */
Datum
es_projection_failed(PG_FUNCTION_ARGS)
{
	Name		projection = projection_arg(fcinfo);
	EsAsync		a;
	text	   *message;
	text	   *sqlstate;
	const char *outcome;
	Datum		values[11];
	char		nulls[11] = "           ";
	int32		era;
	FullTransactionId horizon;
	bool		have_event;
	bool		isolate = false;
	bool		transient = false;
	Datum		iso[3] = {0, 0, 0};
	Datum		ev[6];			/* era, tx_id, position, stream, version, type */
	bool		isnull;
	int			i;
	double		delay = 0;
	int32		attempts;

	EsCheckWritable("es_projection_failed()");
	check_not_applying("es_projection_failed()");
	if (PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("message cannot be null")));
	message = PG_GETARG_TEXT_PP(1);
	sqlstate = PG_ARGISNULL(2) ? NULL : PG_GETARG_TEXT_PP(2);
	if (sqlstate != NULL)
	{
		char	   *code = text_to_cstring(sqlstate);

		if (strlen(code) != 5 || strspn(code, "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ") != 5)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("invalid SQLSTATE code: \"%s\"", code)));
		/* a conflict with another transaction says nothing about the events */
		transient = strcmp(code, "40001") == 0 || strcmp(code, "40P01") == 0 ||
			strcmp(code, "55P03") == 0;
	}

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	lock_async(projection, &a);

	/* the event a retry applies: the first after the checkpoint */
	next_events(&a, 1, &era, &horizon);
	have_event = SPI_processed > 0;
	for (i = 0; have_event && i < 6; i++)
		ev[i] = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, i + 2, &isnull);

	attempts = a.isolating ? a.attempts + 1 : 0;
	if (transient && strcmp(a.state, "failed") != 0)
	{
		/* retried as it was, after the first delay; no attempt counted */
		outcome = "retry";
		attempts = a.attempts;
		delay = ES_ASYNC_RETRY_BASE_MS / 1000.0;
	}
	else if (strcmp(a.state, "failed") == 0)
	{
		/* already stopped (a late report): record the error, nothing more */
		outcome = "failed";
		attempts = a.attempts;
	}
	else if (!a.isolating)
	{
		/* a batch failed: apply its events one at a time, at once */
		outcome = "retry";
		next_events(&a, a.batch_size, &era, &horizon);
		if (SPI_processed > 0)
		{
			HeapTuple	last = SPI_tuptable->vals[SPI_processed - 1];

			iso[0] = SPI_getbinval(last, SPI_tuptable->tupdesc, 2, &isnull);
			iso[1] = SPI_getbinval(last, SPI_tuptable->tupdesc, 3, &isnull);
			iso[2] = SPI_getbinval(last, SPI_tuptable->tupdesc, 4, &isnull);
		}
		else if (have_event)
		{
			iso[0] = ev[0];
			iso[1] = ev[1];
			iso[2] = ev[2];
		}
		isolate = SPI_processed > 0 || have_event;
	}
	else if (attempts <= a.max_retries)
	{
		outcome = "retry";
		delay = Min((double) ES_ASYNC_RETRY_BASE_MS * pow(2.0, attempts - 1),
					(double) ES_ASYNC_RETRY_MAX_MS) / 1000.0;
	}
	else if (strcmp(a.on_error, "park") == 0 && have_event)
		outcome = "parked";
	else
		outcome = "failed";

	if (strcmp(outcome, "parked") == 0)
	{
		values[0] = NameGetDatum(projection);
		for (i = 0; i < 6; i++)
			values[i + 1] = ev[i];
		values[7] = PointerGetDatum(message);
		values[8] = sqlstate ? PointerGetDatum(sqlstate) : (Datum) 0;
		nulls[8] = sqlstate ? ' ' : 'n';
		values[9] = Int32GetDatum(attempts);
		EsGuardedWrite(&park_plan, EsRelationOid("projection_dead_letters"), TRIGGER_EVENT_INSERT,
					   values, nulls, InvalidSnapshot, SPI_OK_INSERT);
		{
			Datum		adv[6];

			adv[0] = NameGetDatum(projection);
			adv[1] = values[1];
			adv[2] = values[2];
			adv[3] = values[3];
			adv[4] = Int64GetDatum(0);
			adv[5] = BoolGetDatum(false);
			EsGuardedWrite(&advance_plan, EsRelationOid("async_projections"), TRIGGER_EVENT_UPDATE,
						   adv, NULL, InvalidSnapshot, SPI_OK_UPDATE);
		}
	}

	memset(nulls, ' ', sizeof(nulls));
	values[0] = NameGetDatum(projection);
	values[1] = CStringGetTextDatum(strcmp(outcome, "failed") == 0 ? "failed" : "running");
	values[2] = BoolGetDatum(isolate);
	values[3] = Int32GetDatum(strcmp(outcome, "parked") == 0 ? 0 : attempts);
	values[4] = Float8GetDatum(delay);
	values[5] = PointerGetDatum(message);
	values[6] = sqlstate ? PointerGetDatum(sqlstate) : (Datum) 0;
	nulls[6] = sqlstate ? ' ' : 'n';
	/* the failing event is known when one was applied alone */
	values[7] = have_event && a.isolating ? ev[2] : (Datum) 0;
	nulls[7] = have_event && a.isolating ? ' ' : 'n';
	values[8] = iso[0];
	values[9] = iso[1];
	values[10] = iso[2];
	EsGuardedWrite(&failed_plan, EsRelationOid("async_projections"), TRIGGER_EVENT_UPDATE,
				   values, nulls, InvalidSnapshot, SPI_OK_UPDATE);
	if (strcmp(outcome, "parked") == 0)
		EsWaitWakeAtCommit();
	if (strcmp(outcome, "failed") != 0)
		EsProjectionWorkerRequest();

	SPI_finish();
	PG_RETURN_TEXT_P(cstring_to_text(outcome));
}

/*
 * set_state
 *		Pause (running, failed -> paused) or resume (paused, failed ->
 *		running) a projection, waiting for a batch being applied.
 */
static void
set_state(FunctionCallInfo fcinfo, bool pause)
{
	Name		projection = projection_arg(fcinfo);
	EsAsync		a;
	Datum		values[2];

	EsCheckWritable(pause ? "es_projection_pause()" : "es_projection_resume()");
	check_not_applying(pause ? "es_projection_pause()" : "es_projection_resume()");
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	lock_async(projection, &a);
	/* a resume also cancels a pending retry delay */
	if (!pause || strcmp(a.state, "paused") != 0)
	{
		values[0] = NameGetDatum(projection);
		values[1] = CStringGetTextDatum(pause ? "paused" : "running");
		EsGuardedWrite(&state_plan, EsRelationOid("async_projections"), TRIGGER_EVENT_UPDATE,
					   values, NULL, InvalidSnapshot, SPI_OK_UPDATE);
	}
	SPI_finish();
	if (!pause)
		EsProjectionWorkerRequest();
}

PG_FUNCTION_INFO_V1(es_projection_pause);

/*
 * es_projection_pause(projection name) RETURNS void
 *		Once the caller commits, no batch of the projection is applied until
 *		es_projection_resume.  Waits for a batch being applied.
 */
Datum
es_projection_pause(PG_FUNCTION_ARGS)
{
	set_state(fcinfo, true);
	PG_RETURN_VOID();
}

PG_FUNCTION_INFO_V1(es_projection_resume);

/*
 * es_projection_resume(projection name) RETURNS void
 *		A paused or failed projection runs again; a failed one retries its
 *		failing event at once, with its attempts counted from zero.  On a
 *		running projection it cancels a pending retry delay.
 */
Datum
es_projection_resume(PG_FUNCTION_ARGS)
{
	set_state(fcinfo, false);
	PG_RETURN_VOID();
}

PG_FUNCTION_INFO_V1(es_projection_reset);

/*
 * es_projection_reset(projection name, reset text) RETURNS void
 *		Runs the reset statement(s) (as the caller: they empty the read
 *		model), moves the checkpoint back to the beginning of the log and
 *		drops the projection's dead letters, in the caller's transaction:
 *		the projection is rebuilt in place by the next batches.  A failed
 *		projection runs again; a paused one stays paused.
 */
Datum
es_projection_reset(PG_FUNCTION_ARGS)
{
	Name		projection = projection_arg(fcinfo);
	EsAsync		a;
	Datum		values[2];
	char		nulls[2] = "  ";

	EsCheckWritable("es_projection_reset()");
	check_not_applying("es_projection_reset()");
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	lock_async(projection, &a);
	if (!PG_ARGISNULL(1))
		run_reset(projection, text_to_cstring(PG_GETARG_TEXT_PP(1)));
	values[0] = NameGetDatum(projection);
	EsGuardedWrite(&reset_plan, EsRelationOid("async_projections"), TRIGGER_EVENT_UPDATE,
				   values, NULL, InvalidSnapshot, SPI_OK_UPDATE);
	values[1] = (Datum) 0;
	nulls[1] = 'n';
	EsGuardedWrite(&dead_delete_plan, EsRelationOid("projection_dead_letters"), TRIGGER_EVENT_DELETE,
				   values, nulls, InvalidSnapshot, SPI_OK_DELETE);
	SPI_finish();
	EsProjectionWorkerRequest();
	PG_RETURN_VOID();
}

/*
 * dead_letters
 *		es_projection_retry_dead (apply) and es_projection_discard_dead: the
 *		dead letters of projection, all or the one at global_position.
 */
static int32
dead_letters(FunctionCallInfo fcinfo, bool apply)
{
	Name		projection = projection_arg(fcinfo);
	Datum		values[2];
	char		nulls[2] = "  ";
	int32		n;
	Relation	rel = NULL;

	EsCheckWritable(apply ? "es_projection_retry_dead()" : "es_projection_discard_dead()");
	check_not_applying(apply ? "es_projection_retry_dead()" : "es_projection_discard_dead()");
	values[0] = NameGetDatum(projection);
	values[1] = PG_ARGISNULL(1) ? (Datum) 0 : PG_GETARG_DATUM(1);
	nulls[1] = PG_ARGISNULL(1) ? 'n' : ' ';

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	if (apply)
	{
		Oid			owner = registered_owner(projection);
		Datum		cur[3];

		/* each parked event alone, as the failing batch of one was */
		rel = table_open(EsRelationOid("events"), AccessShareLock);
		n = (int32) replay_portal(rel, projection, OidIsValid(owner) ? owner : GetUserId(),
								  &dead_list_plan, values, nulls, cur, true);
	}
	else
	{
		if (SPI_execute_plan(EsGetPlan(&dead_list_plan), values, nulls, false, 0) != SPI_OK_SELECT)
			elog(ERROR, "could not read es.projection_dead_letters");
		n = (int32) SPI_processed;
	}
	if (n == 0)
	{
		/* nothing parked: say so if there is no such projection either */
		Relation	events = table_open(EsRelationOid("events"), AccessShareLock);

		(void) EsFindProjectionTrigger(events, NameStr(*projection));
		table_close(events, AccessShareLock);
	}
	if (n > 0)
		EsGuardedWrite(&dead_delete_plan, EsRelationOid("projection_dead_letters"),
					   TRIGGER_EVENT_DELETE, values, nulls, InvalidSnapshot, SPI_OK_DELETE);
	SPI_finish();
	if (rel != NULL)
		table_close(rel, AccessShareLock);
	return n;
}

PG_FUNCTION_INFO_V1(es_projection_retry_dead);

/*
 * es_projection_retry_dead(projection name, global_position bigint)
 *		RETURNS integer
 *		Applies the parked events (all, or the one at global_position) through
 *		the projection's trigger, in log order, each alone, and removes them
 *		from the dead letters, in the caller's transaction: an error leaves
 *		them all parked.  They are applied now, after events that followed
 *		them in the log.
 */
Datum
es_projection_retry_dead(PG_FUNCTION_ARGS)
{
	PG_RETURN_INT32(dead_letters(fcinfo, true));
}

PG_FUNCTION_INFO_V1(es_projection_discard_dead);

/*
 * es_projection_discard_dead(projection name, global_position bigint)
 *		RETURNS integer
 *		Removes parked events without applying them.
 */
Datum
es_projection_discard_dead(PG_FUNCTION_ARGS)
{
	PG_RETURN_INT32(dead_letters(fcinfo, false));
}

PG_FUNCTION_INFO_V1(es_projection_make_inline);

/*
 * es_projection_make_inline(projection name) RETURNS integer
 *
 * Holds appenders off (ShareRowExclusiveLock on es.events, until the
 * caller's transaction ends), waits for a batch being applied, applies every
 * event after the checkpoint, enables the trigger and removes the
 * asynchronous settings: from the next append on, the projection is inline,
 * without an event lost or applied twice.  Returns the events applied.  The
 * lock is held while the backlog is applied: catch up first (CALL
 * es.es_run_projections(projection)).  A projection with a category or type
 * filter cannot become inline (a trigger has no such filter: express it in
 * its WHEN clause instead).
 */
Datum
es_projection_make_inline(PG_FUNCTION_ARGS)
{
	Name		projection = projection_arg(fcinfo);
	Oid			events = EsRelationOid("events");
	Relation	rel;
	EsAsync		a;
	Datum		values[3];
	Datum		cur[3];
	int32		n = 0;

	EsCheckWritable("es_projection_make_inline()");
	check_not_applying("es_projection_make_inline()");
	check_trigger_privilege(events);
	rel = table_open(events, ShareRowExclusiveLock);
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	lock_async(projection, &a);
	if (a.categories != (Datum) 0 || a.event_types != (Datum) 0)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("projection \"%s\" has a category or event type filter", NameStr(*projection)),
				 errdetail("An inline projection is applied to every event its trigger's WHEN condition accepts."),
				 errhint("Re-create the trigger with a WHEN condition instead of the filter.")));
	table_close(open_events_checked(projection, ShareRowExclusiveLock), NoLock);

	values[0] = Int32GetDatum(a.era);
	values[1] = a.tx_id;
	values[2] = Int64GetDatum(a.position);
	check_no_concurrent_append();
	n = (int32) replay_portal(rel, projection, a.owner, &rest_events_plan, values, NULL, cur, false);

	set_trigger(rel, NameStr(*projection), true);
	values[0] = NameGetDatum(projection);
	EsGuardedWrite(&delete_plan, EsRelationOid("async_projections"), TRIGGER_EVENT_DELETE,
				   values, NULL, InvalidSnapshot, SPI_OK_DELETE);
	SPI_finish();
	table_close(rel, NoLock);
	EsWaitWakeAtCommit();
	PG_RETURN_INT32(n);
}

PG_FUNCTION_INFO_V1(es_drop_projection);

/*
 * es_drop_projection(projection name) RETURNS void
 *
 * Drops the projection trigger (as DROP TRIGGER would, RESTRICT), its
 * asynchronous settings, dead letters and rebuild status.  The read model
 * is the caller's to drop.
 */
Datum
es_drop_projection(PG_FUNCTION_ARGS)
{
	Name		projection = projection_arg(fcinfo);
	Oid			events = EsRelationOid("events");
	Relation	rel;
	Trigger    *tg;
	ObjectAddress obj;
	EsAsync		a;
	Datum		values[2];
	char		nulls[2] = " n";

	EsCheckWritable("es_drop_projection()");
	check_not_applying("es_drop_projection()");
	check_trigger_privilege(events);
	rel = table_open(events, ShareRowExclusiveLock);
	tg = EsFindProjectionTrigger(rel, NameStr(*projection));
	ObjectAddressSet(obj, TriggerRelationId, tg->tgoid);

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	values[0] = NameGetDatum(projection);
	values[1] = (Datum) 0;
	if (fetch_async(&lock_wait_plan, projection, &a))
		EsGuardedWrite(&delete_plan, EsRelationOid("async_projections"), TRIGGER_EVENT_DELETE,
					   values, NULL, InvalidSnapshot, SPI_OK_DELETE);
	EsGuardedWrite(&dead_delete_plan, EsRelationOid("projection_dead_letters"), TRIGGER_EVENT_DELETE,
				   values, nulls, InvalidSnapshot, SPI_OK_DELETE);
	if (SPI_execute_plan(EsGetPlan(&status_delete_plan), values, NULL, false, 0) != SPI_OK_DELETE)
		elog(ERROR, "could not delete from es.projection_status");
	SPI_finish();

	performDeletion(&obj, DROP_RESTRICT, 0);
	table_close(rel, NoLock);
	PG_RETURN_VOID();
}

/* the events of a projection after a cursor ($1, $2, $3), filtered, to the head */
static EsPlan next_events_head_plan = {
	NULL,
	"SELECT e, e.era, e.tx_id, e.global_position FROM es.events AS e"
	" WHERE (e.era, e.tx_id, e.global_position) OPERATOR(pg_catalog.>) ($1, $2, $3)"
	"   AND ($4::text[] IS NULL OR e.category OPERATOR(pg_catalog.=) ANY ($4))"
	"   AND ($5::text[] IS NULL OR e.event_type OPERATOR(pg_catalog.=) ANY ($5))"
	" ORDER BY e.era, e.tx_id, e.global_position LIMIT $6",
	6, {INT4OID, XID8OID, INT8OID, TEXTARRAYOID, TEXTARRAYOID, INT8OID}
};

/*
 * EsAsyncReplayRange
 *		EsReplayRange (projection.c) for a projection that may be
 *		asynchronous: the events after cur[] that its category and type
 *		filter accept (all of them for an inline projection), at most
 *		max_count, below the horizon or (to_head) every visible one.  Sets
 *		cur[] to the cursor of the last one (in the caller's memory context)
 *		and returns how many.  Used by rebuilds in a shadow (rebuild.c).
 */
int32
EsAsyncReplayRange(const char *projection, Datum *cur, int32 max_count, bool to_head)
{
	NameData	name;
	EsAsync		a;
	Relation	rel;
	uint64		n;
	Datum		values[8];
	char		nulls[8];

	namestrcpy(&name, projection);
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	if (!fetch_async(&read_plan, &name, &a))
	{
		SPI_finish();
		return EsReplayRange(projection, cur, max_count, to_head);
	}

	rel = table_open(EsRelationOid("events"), AccessShareLock);
	a.era = DatumGetInt32(cur[0]);
	a.tx_id = cur[1];
	a.position = DatumGetInt64(cur[2]);
	if (to_head)
	{
		memset(nulls, ' ', sizeof(nulls));
		values[0] = cur[0];
		values[1] = cur[1];
		values[2] = cur[2];
		values[3] = a.categories;
		nulls[3] = a.categories == (Datum) 0 ? 'n' : ' ';
		values[4] = a.event_types;
		nulls[4] = a.event_types == (Datum) 0 ? 'n' : ' ';
		values[5] = Int64GetDatum((int64) max_count);
		n = replay_portal(rel, &name, a.owner, &next_events_head_plan, values, nulls, cur, false);
	}
	else
	{
		int32		era;
		FullTransactionId horizon;

		next_events_args(&a, max_count, &era, &horizon, values, nulls);
		n = replay_portal(rel, &name, a.owner, &next_events_plan, values, nulls, cur, false);
	}
	table_close(rel, AccessShareLock);
	SPI_finish();
	return (int32) n;
}

static EsPlan register_plan = {
	NULL,
	"INSERT INTO es.async_projections (projection, owner, state, batch_size, on_error,"
	" max_retries, checkpoint, created_at)"
	" VALUES ($1, $2, 'running', 100, 'stop', 3,"
	"         CASE WHEN $3 IS NULL THEN NULL::es.log_cursor ELSE ROW($3, $4, $5)::es.log_cursor END,"
	"         pg_catalog.clock_timestamp())",
	5, {NAMEOID, REGROLEOID, INT4OID, XID8OID, INT8OID}
};

static EsPlan rebuilt_plan = {
	NULL,
	"UPDATE es.async_projections AS a"
	"   SET checkpoint = CASE WHEN $2 IS NULL THEN NULL::es.log_cursor ELSE ROW($2, $3, $4)::es.log_cursor END,"
	"       isolate_until = NULL, attempts = 0, retry_at = NULL,"
	"       state = CASE WHEN a.state OPERATOR(pg_catalog.=) 'failed' THEN 'running' ELSE a.state END"
	" WHERE a.projection OPERATOR(pg_catalog.=) $1",
	4, {NAMEOID, INT4OID, XID8OID, INT8OID}
};

/*
 * EsAsyncSwitchMode
 *		The end of a rebuild (rebuild.c): the read model now holds every event
 *		up to cur[] (era -1: none).  to_async: the projection becomes (or
 *		stays) asynchronous with that checkpoint (a new one gets the default
 *		settings, owned by the current user, and its trigger disabled);
 *		otherwise it becomes (or stays) inline: its asynchronous settings go
 *		and its trigger is enabled.  The caller holds ShareRowExclusiveLock on
 *		es.events whenever the trigger changes, and the registry row locked.
 *		Must be called inside SPI.
 */
void
EsAsyncSwitchMode(const char *projection, bool to_async, const Datum *cur)
{
	NameData	name;
	EsAsync		a;
	bool		registered;
	Datum		values[5];
	char		nulls[5] = "     ";
	Relation	rel;

	namestrcpy(&name, projection);
	registered = fetch_async(&lock_wait_plan, &name, &a);
	if (to_async)
	{
		values[0] = NameGetDatum(&name);
		if (registered)
		{
			values[1] = cur[0];
			values[2] = cur[1];
			values[3] = cur[2];
			if (DatumGetInt32(cur[0]) < 0)
				nulls[1] = nulls[2] = nulls[3] = 'n';
			EsGuardedWrite(&rebuilt_plan, EsRelationOid("async_projections"), TRIGGER_EVENT_UPDATE,
						   values, nulls, InvalidSnapshot, SPI_OK_UPDATE);
		}
		else
		{
			values[1] = ObjectIdGetDatum(GetUserId());
			values[2] = cur[0];
			values[3] = cur[1];
			values[4] = cur[2];
			if (DatumGetInt32(cur[0]) < 0)
				nulls[2] = nulls[3] = nulls[4] = 'n';
			EsGuardedWrite(&register_plan, EsRelationOid("async_projections"), TRIGGER_EVENT_INSERT,
						   values, nulls, InvalidSnapshot, SPI_OK_INSERT);
			rel = table_open(EsRelationOid("events"), ShareRowExclusiveLock);
			set_trigger(rel, projection, false);
			table_close(rel, NoLock);
		}
		EsWaitWakeAtCommit();
		EsProjectionWorkerRequest();
	}
	else if (registered)
	{
		values[0] = NameGetDatum(&name);
		EsGuardedWrite(&delete_plan, EsRelationOid("async_projections"), TRIGGER_EVENT_DELETE,
					   values, NULL, InvalidSnapshot, SPI_OK_DELETE);
		rel = table_open(EsRelationOid("events"), ShareRowExclusiveLock);
		set_trigger(rel, projection, true);
		table_close(rel, NoLock);
		EsWaitWakeAtCommit();
	}
}

/*
 * EsAsyncIsRegistered
 *		Is projection asynchronous?  Locks its registry row (waiting for a
 *		batch being applied) when lock is true.  Must be called inside SPI.
 */
bool
EsAsyncIsRegistered(const char *projection, bool lock)
{
	NameData	name;
	EsAsync		a;
	Datum		values[1];

	namestrcpy(&name, projection);
	if (lock)
		return fetch_async(&lock_wait_plan, &name, &a);
	values[0] = NameGetDatum(&name);
	if (SPI_execute_plan(EsGetPlan(&exists_plan), values, NULL, false, 1) != SPI_OK_SELECT)
		elog(ERROR, "could not read es.async_projections");
	return SPI_processed > 0;
}
