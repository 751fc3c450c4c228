/*-------------------------------------------------------------------------
 *
 * outbox_api.c
 *	  The SQL functions of the outbox that write its tables: routes, consumer
 *	  groups, claim, ack, nack, replay, discard and cleanup.
 *
 * Every outbox table has the guard triggers (guard.c): they refuse every
 * INSERT, UPDATE, DELETE, TRUNCATE, COPY and MERGE that es_ext's C code did
 * not ask for.  These functions run as their caller (no SECURITY DEFINER),
 * so the caller's table privileges still apply; each write statement is a
 * saved SPI plan, executed right after EsAllowNextWrite() names its table
 * and command (outbox_write).  The statements on es.outbox_deliveries and
 * the cleanup run generic plans (queue_plan explains why).  A statement
 * writes one table: where a function moves rows from one table to another
 * (to the dead letters and back) it deletes with RETURNING, then inserts
 * what was deleted, in the same transaction, under the row locks of the
 * delete.
 *
 * Locking.  es.outbox orders the writers that must agree on the set of
 * consumer groups: an append holds ROW EXCLUSIVE on it (its INSERT) before
 * it reads the groups, es_outbox_cleanup holds ROW EXCLUSIVE (its DELETE),
 * es_outbox_create_group and es_outbox_drop_group take SHARE, which
 * conflicts with both.  Whoever holds its lock reads with a snapshot taken
 * after the lock (GetLatestSnapshot), not with the transaction snapshot: a
 * REPEATABLE READ or SERIALIZABLE transaction's snapshot may predate a
 * commit that the lock waited for, and the lock alone would not make that
 * commit visible.  So a group created (or dropped) is seen by every append
 * that writes the outbox after it, and no cleanup ever reads a group's
 * deliveries from before the group was created.
 *
 * Memory: everything is allocated in the SPI procedure context and released
 * by SPI_finish, except the claim's result rows (the tuplestore of the
 * materialized result, in the per-query context).
 *
 * src/outbox_api.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "catalog/pg_collation.h"
#include "catalog/pg_type.h"
#include "commands/trigger.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "storage/lmgr.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"
#include "utils/tuplestore.h"
#include "utils/uuid.h"

#include "es_ext.h"

/*
 * EsOutboxLockGroups
 *		Take the lock on es.outbox that orders the appends and the cleanup
 *		against the creation and removal of consumer groups (ROW EXCLUSIVE
 *		or SHARE, see the file header), and return a snapshot taken after
 *		it, to read the groups and their deliveries with.  The snapshot is
 *		valid until the next GetLatestSnapshot(); SPI copies it.
 */
Snapshot
EsOutboxLockGroups(LOCKMODE mode)
{
	LockRelationOid(EsRelationOid("outbox"), mode);
	return GetLatestSnapshot();
}

/*
 * queue_plan
 *		Return p with its saved plan, prepared on first use as a generic plan
 *		(CURSOR_OPT_GENERIC_PLAN), in place of EsGetPlan's default.  For the
 *		statements that read es.outbox_deliveries by group and position: the
 *		queue's size swings from empty to a backlog faster than ANALYZE runs,
 *		and group_id has no statistics (see sql/install/50_outbox.sql), so a
 *		custom plan estimates a group at 0.5% of the table; for a claim's
 *		scan window (LIMIT 1000 and more) that makes a bitmap scan of the
 *		whole group and a sort look cheaper than the ordered index scan that
 *		stops after the window, and every claim then read the whole backlog
 *		(measured: 120 ms for the heads of a claim of 10 at a backlog of
 *		34,000, against 1-2 ms).  The generic plan, with the LIMIT unknown, keeps to the
 *		ordered index scans, and is not planned again at every call.
 *		Must be called inside SPI_connect().
 */
static EsPlan *
queue_plan(EsPlan *p)
{
	(void) EsGetGenericPlan(p);
	return p;
}

/* run a read-only statement: must return SPI_OK_SELECT */
static void
outbox_read(EsPlan *p, Datum *values, const char *nulls)
{
	int			rc = SPI_execute_plan(EsGetPlan(queue_plan(p)), values, nulls, false, 0);

	if (rc != SPI_OK_SELECT)
		elog(ERROR, "could not read the outbox: %s", SPI_result_code_string(rc));
}

/* the value of column col (1-based) of result row row, or isnull */
static Datum
result_value(uint64 row, int col, bool *isnull)
{
	return SPI_getbinval(SPI_tuptable->vals[row], SPI_tuptable->tupdesc, col, isnull);
}

static void
outbox_connect(void)
{
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
}

static void
outbox_finish(void)
{
	if (SPI_finish() != SPI_OK_FINISH)
		elog(ERROR, "SPI_finish failed");
}

static int
interval_compare(Datum a, Datum b)
{
	return DatumGetInt32(DirectFunctionCall2(interval_cmp, a, b));
}

static Datum
zero_interval(void)
{
	Interval   *zero = palloc0(sizeof(Interval));

	return IntervalPGetDatum(zero);
}

static Datum
new_lease(void)
{
	pg_uuid_t  *u = palloc(sizeof(pg_uuid_t));

	if (!pg_strong_random(u->data, UUID_LEN))
		ereport(ERROR,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("could not generate random values")));
	/* version 4, variant RFC 4122, as gen_random_uuid() */
	u->data[6] = (u->data[6] & 0x0f) | 0x40;
	u->data[8] = (u->data[8] & 0x3f) | 0x80;
	return UUIDPGetDatum(u);
}

/*
 * The group of a consumer function: group_id and max_attempts, or the error
 * undefined_object (with the hint of the claim when with_hint).
 */
static EsPlan group_plan = {
	NULL,
	"SELECT g.group_id, g.max_attempts, g.backoff_base, g.backoff_max"
	"  FROM es.outbox_groups AS g WHERE g.name OPERATOR(pg_catalog.=) $1",
	1, {TEXTOID}
};

typedef struct OutboxGroup
{
	int32		group_id;
	int32		max_attempts;
	Datum		backoff_base;
	Datum		backoff_max;
} OutboxGroup;

static void
find_group(text *name, bool with_hint, OutboxGroup *grp)
{
	Datum		values[1];
	bool		isnull;

	values[0] = PointerGetDatum(name);
	outbox_read(&group_plan, values, NULL);
	if (SPI_processed == 0)
	{
		if (with_hint)
			ereport(ERROR,
					(errcode(ERRCODE_UNDEFINED_OBJECT),
					 errmsg("consumer group \"%s\" does not exist", text_to_cstring(name)),
					 errhint("Create it with es.es_outbox_create_group().")));
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("consumer group \"%s\" does not exist", text_to_cstring(name))));
	}
	grp->group_id = DatumGetInt32(result_value(0, 1, &isnull));
	grp->max_attempts = DatumGetInt32(result_value(0, 2, &isnull));
	grp->backoff_base = result_value(0, 3, &isnull);
	grp->backoff_max = result_value(0, 4, &isnull);
}

/* ---------------------------------------------------------------- routes */

static EsPlan route_plan = {
	NULL,
	"INSERT INTO es.outbox_routes AS r (category, event_type) VALUES ($1, $2)"
	" ON CONFLICT ON CONSTRAINT outbox_routes_key DO NOTHING RETURNING true",
	2, {TEXTOID, TEXTOID}
};

PG_FUNCTION_INFO_V1(es_outbox_route);

/*
 * es_outbox_route(category text, event_type text) returns boolean
 *		Add a route (NULL matches any); false when it existed.
 */
Datum
es_outbox_route(PG_FUNCTION_ARGS)
{
	Datum		values[2];
	char		nulls[2] = {' ', ' '};
	int			i;
	bool		added;

	EsCheckWritable("es_outbox_route()");

	for (i = 0; i < 2; i++)
		if (!PG_ARGISNULL(i) && VARSIZE_ANY_EXHDR(PG_GETARG_TEXT_PP(i)) == 0)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("outbox route cannot have an empty category or event type"),
					 errhint("Use NULL to match any category or any event type.")));
	for (i = 0; i < 2; i++)
		if (!PG_ARGISNULL(i) && VARSIZE_ANY_EXHDR(PG_GETARG_TEXT_PP(i)) > ES_MAX_NAME_BYTES)
			ereport(ERROR,
					(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
					 errmsg("outbox route category or event type is too long"),
					 errdetail("Categories and event types are limited to %d bytes.",
							   ES_MAX_NAME_BYTES)));
	for (i = 0; i < 2; i++)
	{
		if (PG_ARGISNULL(i))
		{
			values[i] = (Datum) 0;
			nulls[i] = 'n';
		}
		else
			values[i] = PointerGetDatum(PG_GETARG_TEXT_PP(i));
	}

	outbox_connect();
	EsGuardedWrite(&route_plan, EsRelationOid("outbox_routes"), TRIGGER_EVENT_INSERT,
				   values, nulls, InvalidSnapshot, SPI_OK_INSERT_RETURNING);
	added = (SPI_processed > 0);
	outbox_finish();
	PG_RETURN_BOOL(added);
}

static EsPlan unroute_plan = {
	NULL,
	"DELETE FROM es.outbox_routes AS r"
	" WHERE r.category IS NOT DISTINCT FROM $1 AND r.event_type IS NOT DISTINCT FROM $2",
	2, {TEXTOID, TEXTOID}
};

PG_FUNCTION_INFO_V1(es_outbox_unroute);

/*
 * es_outbox_unroute(category text, event_type text) returns boolean
 *		Remove a route; false when there was none.
 */
Datum
es_outbox_unroute(PG_FUNCTION_ARGS)
{
	Datum		values[2];
	char		nulls[2] = {' ', ' '};
	int			i;
	bool		removed;

	EsCheckWritable("es_outbox_unroute()");

	for (i = 0; i < 2; i++)
	{
		if (PG_ARGISNULL(i))
		{
			values[i] = (Datum) 0;
			nulls[i] = 'n';
		}
		else
			values[i] = PointerGetDatum(PG_GETARG_TEXT_PP(i));
	}
	outbox_connect();
	EsGuardedWrite(&unroute_plan, EsRelationOid("outbox_routes"), TRIGGER_EVENT_DELETE,
				   values, nulls, InvalidSnapshot, SPI_OK_DELETE);
	removed = (SPI_processed > 0);
	outbox_finish();
	PG_RETURN_BOOL(removed);
}

/* ---------------------------------------------------------------- groups */

static EsPlan create_group_plan = {
	NULL,
	"INSERT INTO es.outbox_groups AS g (name, max_attempts, backoff_base, backoff_max)"
	" VALUES ($1, $2, $3, $4)"
	" ON CONFLICT ON CONSTRAINT outbox_groups_name_key DO NOTHING"
	" RETURNING g.group_id",
	4, {TEXTOID, INT4OID, INTERVALOID, INTERVALOID}
};

static EsPlan backfill_plan = {
	NULL,
	"INSERT INTO es.outbox_deliveries AS d (group_id, position, stream_key, visible_at)"
	" SELECT $1, o.position, pg_catalog.hashtextextended(o.aggregateid, 0), pg_catalog.clock_timestamp()"
	"   FROM es.outbox AS o"
	"  ORDER BY o.position",
	1, {INT4OID}
};

PG_FUNCTION_INFO_V1(es_outbox_create_group);

/*
 * es_outbox_create_group(consumer_group text, max_attempts integer,
 *		backoff_base interval, backoff_max interval, backfill boolean)
 *		returns integer
 *
 * Create a consumer group and return its id.  Takes SHARE on es.outbox
 * (waits for the appends and cleanups in flight, holds new ones back until
 * this transaction ends), then writes with a snapshot taken after the lock.
 * Every message that commits after this function returned is delivered to
 * the group by its append, which reads the groups under its own ROW
 * EXCLUSIVE lock on es.outbox with a fresh snapshot, whatever its isolation
 * level.  With backfill, the group also gets every message in the outbox
 * when the lock was granted, i.e. every message committed before it
 * returns, even when this transaction's snapshot is older.
 */
Datum
es_outbox_create_group(PG_FUNCTION_ARGS)
{
	text	   *name;
	Datum		values[4];
	bool		isnull;
	int32		gid;
	Snapshot	snap;

	EsCheckWritable("es_outbox_create_group()");

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("consumer group cannot be null")));
	if (PG_ARGISNULL(1) || PG_ARGISNULL(2) || PG_ARGISNULL(3) || PG_ARGISNULL(4))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("max_attempts, backoff_base, backoff_max and backfill cannot be null")));
	name = PG_GETARG_TEXT_PP(0);
	if (VARSIZE_ANY_EXHDR(name) == 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("consumer group name cannot be empty")));
	if (VARSIZE_ANY_EXHDR(name) > ES_OUTBOX_MAX_GROUP_NAME)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("consumer group name is too long"),
				 errdetail("Consumer group names are limited to %d bytes.", ES_OUTBOX_MAX_GROUP_NAME)));
	if (PG_GETARG_INT32(1) < 1)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("max_attempts must be at least 1")));
	if (interval_compare(PG_GETARG_DATUM(2), zero_interval()) <= 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("backoff_base must be positive")));
	if (interval_compare(PG_GETARG_DATUM(3), PG_GETARG_DATUM(2)) < 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("backoff_max cannot be less than backoff_base")));

	outbox_connect();
	snap = EsOutboxLockGroups(ShareLock);

	values[0] = PointerGetDatum(name);
	values[1] = PG_GETARG_DATUM(1);
	values[2] = PG_GETARG_DATUM(2);
	values[3] = PG_GETARG_DATUM(3);
	EsGuardedWrite(&create_group_plan, EsRelationOid("outbox_groups"), TRIGGER_EVENT_INSERT,
				   values, NULL, snap, SPI_OK_INSERT_RETURNING);
	if (SPI_processed == 0)
		ereport(ERROR,
				(errcode(ERRCODE_DUPLICATE_OBJECT),
				 errmsg("consumer group \"%s\" already exists", text_to_cstring(name))));
	gid = DatumGetInt32(result_value(0, 1, &isnull));

	if (PG_GETARG_BOOL(4))
	{
		values[0] = Int32GetDatum(gid);
		EsGuardedWrite(&backfill_plan, EsRelationOid("outbox_deliveries"), TRIGGER_EVENT_INSERT,
					   values, NULL, GetLatestSnapshot(), SPI_OK_INSERT);
		if (SPI_processed > 0)
			EsNotifyRequest();
	}
	outbox_finish();
	PG_RETURN_INT32(gid);
}

/* the group row, locked, with the settings after the change */
static EsPlan alter_group_plan = {
	NULL,
	"UPDATE es.outbox_groups AS g"
	"   SET max_attempts = COALESCE($2, g.max_attempts),"
	"       backoff_base = COALESCE($3, g.backoff_base),"
	"       backoff_max = COALESCE($4, g.backoff_max)"
	" WHERE g.name OPERATOR(pg_catalog.=) $1"
	"   AND COALESCE($4, g.backoff_max) OPERATOR(pg_catalog.>=) COALESCE($3, g.backoff_base)"
	" RETURNING g.group_id",
	4, {TEXTOID, INT4OID, INTERVALOID, INTERVALOID}
};

static EsPlan group_exists_plan = {
	NULL,
	"SELECT g.group_id FROM es.outbox_groups AS g WHERE g.name OPERATOR(pg_catalog.=) $1",
	1, {TEXTOID}
};

PG_FUNCTION_INFO_V1(es_outbox_alter_group);

/*
 * es_outbox_alter_group(consumer_group text, max_attempts integer,
 *		backoff_base interval, backoff_max interval) returns void
 *
 * Change the retry settings of a consumer group; a NULL setting is left as
 * it is.  They apply to the next nack of each message (attempts already
 * made count).  The guard refuses a direct UPDATE of es.outbox_groups, so
 * this is the way to change them.
 */
Datum
es_outbox_alter_group(PG_FUNCTION_ARGS)
{
	text	   *name;
	Datum		values[4];
	char		nulls[4] = {' ', ' ', ' ', ' '};
	int			i;

	EsCheckWritable("es_outbox_alter_group()");

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("consumer group cannot be null")));
	name = PG_GETARG_TEXT_PP(0);
	if (!PG_ARGISNULL(1) && PG_GETARG_INT32(1) < 1)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("max_attempts must be at least 1")));
	if (!PG_ARGISNULL(2) && interval_compare(PG_GETARG_DATUM(2), zero_interval()) <= 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("backoff_base must be positive")));

	values[0] = PointerGetDatum(name);
	for (i = 1; i < 4; i++)
	{
		values[i] = PG_ARGISNULL(i) ? (Datum) 0 : PG_GETARG_DATUM(i);
		if (PG_ARGISNULL(i))
			nulls[i] = 'n';
	}

	outbox_connect();
	EsGuardedWrite(&alter_group_plan, EsRelationOid("outbox_groups"), TRIGGER_EVENT_UPDATE,
				   values, nulls, InvalidSnapshot, SPI_OK_UPDATE_RETURNING);
	if (SPI_processed == 0)
	{
		int			rc = SPI_execute_plan(EsGetPlan(&group_exists_plan), values, NULL, false, 1);

		if (rc != SPI_OK_SELECT)
			elog(ERROR, "could not read es.outbox_groups: %s", SPI_result_code_string(rc));
		if (SPI_processed == 0)
			ereport(ERROR,
					(errcode(ERRCODE_UNDEFINED_OBJECT),
					 errmsg("consumer group \"%s\" does not exist", text_to_cstring(name))));
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("backoff_max cannot be less than backoff_base")));
	}
	outbox_finish();
	PG_RETURN_VOID();
}

static EsPlan drop_group_plan = {
	NULL,
	"DELETE FROM es.outbox_groups AS g WHERE g.name OPERATOR(pg_catalog.=) $1 RETURNING g.group_id",
	1, {TEXTOID}
};

static EsPlan drop_deliveries_plan = {
	NULL,
	"DELETE FROM es.outbox_deliveries AS d WHERE d.group_id OPERATOR(pg_catalog.=) $1",
	1, {INT4OID}
};

static EsPlan drop_dead_plan = {
	NULL,
	"DELETE FROM es.outbox_dead AS z WHERE z.group_id OPERATOR(pg_catalog.=) $1",
	1, {INT4OID}
};

PG_FUNCTION_INFO_V1(es_outbox_drop_group);

/*
 * es_outbox_drop_group(consumer_group text) returns bigint
 *		Drop a group with its deliveries and dead letters; returns how many
 *		of those it dropped.  Takes SHARE on es.outbox (no append adds
 *		deliveries for the group while it goes) and deletes with a snapshot
 *		taken after the lock, so that it also finds the deliveries of
 *		appends that committed after this transaction's snapshot.
 */
Datum
es_outbox_drop_group(PG_FUNCTION_ARGS)
{
	text	   *name;
	Datum		values[1];
	bool		isnull;
	int32		gid;
	int64		n;
	Snapshot	snap;

	EsCheckWritable("es_outbox_drop_group()");

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("consumer group cannot be null")));
	name = PG_GETARG_TEXT_PP(0);

	outbox_connect();
	snap = EsOutboxLockGroups(ShareLock);
	values[0] = PointerGetDatum(name);
	EsGuardedWrite(&drop_group_plan, EsRelationOid("outbox_groups"), TRIGGER_EVENT_DELETE,
				   values, NULL, snap, SPI_OK_DELETE_RETURNING);
	if (SPI_processed == 0)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("consumer group \"%s\" does not exist", text_to_cstring(name))));
	gid = DatumGetInt32(result_value(0, 1, &isnull));

	values[0] = Int32GetDatum(gid);
	EsGuardedWrite(queue_plan(&drop_deliveries_plan), EsRelationOid("outbox_deliveries"),
				   TRIGGER_EVENT_DELETE, values, NULL, GetLatestSnapshot(), SPI_OK_DELETE);
	n = SPI_processed;
	EsGuardedWrite(&drop_dead_plan, EsRelationOid("outbox_dead"), TRIGGER_EVENT_DELETE,
				   values, NULL, GetLatestSnapshot(), SPI_OK_DELETE);
	n += SPI_processed;
	outbox_finish();
	/* its es_wait_for_group sleepers learn at commit that it is gone */
	EsWaitWakeAtCommit();
	PG_RETURN_INT64(n);
}

/* ----------------------------------------------------------- dead letters */

/*
 * Move deliveries to the dead letters: the first plan deletes them (those
 * of group $1 at positions $2 -- with lease $3 and attempts >= $4 when the
 * nack plan) and returns them as arrays; move_to_dead() inserts them.
 */
static EsPlan claim_spent_plan = {
	NULL,
	"WITH m AS ("
	" DELETE FROM es.outbox_deliveries AS d"
	"  WHERE d.group_id OPERATOR(pg_catalog.=) $1"
	"    AND d.position OPERATOR(pg_catalog.=) ANY ($2)"
	" RETURNING d.position, d.stream_key, d.attempts, d.last_error)"
	" SELECT pg_catalog.array_agg(m.position), pg_catalog.array_agg(m.stream_key),"
	"        pg_catalog.array_agg(m.attempts), pg_catalog.array_agg(m.last_error)"
	"   FROM m",
	2, {INT4OID, INT8ARRAYOID}
};

static EsPlan nack_spent_plan = {
	NULL,
	"WITH m AS ("
	" DELETE FROM es.outbox_deliveries AS d"
	"  WHERE d.group_id OPERATOR(pg_catalog.=) $1"
	"    AND d.position OPERATOR(pg_catalog.=) ANY ($2)"
	"    AND d.lease OPERATOR(pg_catalog.=) $3"
	"    AND d.attempts OPERATOR(pg_catalog.>=) $4"
	" RETURNING d.position, d.stream_key, d.attempts, d.last_error)"
	" SELECT pg_catalog.array_agg(m.position), pg_catalog.array_agg(m.stream_key),"
	"        pg_catalog.array_agg(m.attempts), pg_catalog.array_agg(m.last_error)"
	"   FROM m",
	4, {INT4OID, INT8ARRAYOID, UUIDOID, INT4OID}
};

/* $5: the error to record when the delivery had none ($6 overrides it when not NULL) */
static EsPlan to_dead_plan = {
	NULL,
	"INSERT INTO es.outbox_dead AS z (group_id, position, stream_key, attempts, last_error, dead_at)"
	" SELECT $1, u.p, u.k, u.a, COALESCE($6, u.e, $5), $7"
	"   FROM ROWS FROM (pg_catalog.unnest($2), pg_catalog.unnest($3), pg_catalog.unnest($4),"
	"                   pg_catalog.unnest($8)) AS u(p, k, a, e)",
	8, {INT4OID, INT8ARRAYOID, INT8ARRAYOID, INT4ARRAYOID, TEXTOID, TEXTOID, TIMESTAMPTZOID,
		TEXTARRAYOID}
};

/*
 * move_to_dead
 *		Run spent (one of the *_spent_plan above, with its arguments), then
 *		insert the deliveries it deleted into es.outbox_dead of group gid,
 *		with last_error reason, else theirs, else fallback.  Returns how many
 *		moved.
 */
static int64
move_to_dead(EsPlan *spent, Datum *spent_values, int32 gid, Datum reason, bool reason_isnull,
			 const char *fallback, TimestampTz ts)
{
	Oid			deliveries = EsRelationOid("outbox_deliveries");
	Datum		values[8];
	char		nulls[8];
	bool		isnull;
	Datum		positions;
	int64		n;

	EsGuardedWrite(queue_plan(spent), deliveries, TRIGGER_EVENT_DELETE, spent_values, NULL,
				   InvalidSnapshot, SPI_OK_SELECT);
	positions = result_value(0, 1, &isnull);
	if (isnull)
		return 0;
	n = ArrayGetNItems(ARR_NDIM(DatumGetArrayTypeP(positions)),
					   ARR_DIMS(DatumGetArrayTypeP(positions)));

	memset(nulls, ' ', sizeof(nulls));
	values[0] = Int32GetDatum(gid);
	values[1] = positions;
	values[2] = result_value(0, 2, &isnull);
	values[3] = result_value(0, 3, &isnull);
	values[4] = CStringGetTextDatum(fallback);
	values[5] = reason;
	if (reason_isnull)
		nulls[5] = 'n';
	values[6] = TimestampTzGetDatum(ts);
	values[7] = result_value(0, 4, &isnull);
	EsGuardedWrite(queue_plan(&to_dead_plan), EsRelationOid("outbox_dead"), TRIGGER_EVENT_INSERT,
				   values, nulls, InvalidSnapshot, SPI_OK_INSERT);
	return n;
}

/* ----------------------------------------------------------------- claim */

/*
 * Citus (issue 16): messages held back after a shard move (see
 * outbox_handoff in outbox.c).  $1 group: the streams with held
 * deliveries here and the lowest held version of each.
 */
static EsPlan held_plan = {
	NULL,
	"SELECT o.aggregateid, pg_catalog.min(o.stream_version)"
	"  FROM es.outbox_deliveries AS d"
	"  JOIN es.outbox AS o ON o.position OPERATOR(pg_catalog.=) d.position"
	" WHERE d.group_id OPERATOR(pg_catalog.=) $1"
	"   AND d.visible_at OPERATOR(pg_catalog.=) 'infinity'::pg_catalog.timestamptz"
	" GROUP BY o.aggregateid"
	" LIMIT 1000",
	1, {INT4OID}
};

/*
 * $1 group name, $2 streams, $3 versions: the streams for which some node
 * has an older message undelivered to the group, asked of every node in one
 * round (all of them when a node does not answer).
 */
static EsPlan older_elsewhere_plan = {
	NULL,
	"SELECT pg_catalog.array_agg(DISTINCT b.s)"
	"  FROM pg_catalog.run_command_on_all_nodes("
	"         pg_catalog.format('SELECT pg_catalog.array_agg(u.s) FROM ROWS FROM (pg_catalog.unnest(%L::pg_catalog.text[]), pg_catalog.unnest(%L::pg_catalog.int8[])) AS u(s, v)"
	" WHERE es.es_outbox_undelivered(%L, u.s, u.v) OPERATOR(pg_catalog.>) 0', $2, $3, $1)) AS r,"
	"       LATERAL pg_catalog.unnest(CASE WHEN r.success"
	"                                      THEN COALESCE(NULLIF(r.result, ''), '{}')::pg_catalog.text[]"
	"                                      ELSE $2 END) AS b(s)",
	3, {TEXTOID, TEXTARRAYOID, INT8ARRAYOID}
};

/* $1 group, $2 stream, $3 now: release the stream's held deliveries */
static EsPlan release_held_plan = {
	NULL,
	"UPDATE es.outbox_deliveries AS d SET visible_at = $3"
	" WHERE d.group_id OPERATOR(pg_catalog.=) $1"
	"   AND d.visible_at OPERATOR(pg_catalog.=) 'infinity'::pg_catalog.timestamptz"
	"   AND d.stream_key OPERATOR(pg_catalog.=) pg_catalog.hashtextextended($2, 0)"
	"   AND d.position OPERATOR(pg_catalog.=) ANY (SELECT o.position FROM es.outbox AS o"
	"                                              WHERE o.aggregateid OPERATOR(pg_catalog.=) $2)",
	3, {INT4OID, TEXTOID, TIMESTAMPTZOID}
};

/*
 * release_held
 *		On a distributed event store, before a claim: release the held
 *		messages of each stream whose older messages were all delivered to
 *		the group on every node (a node that does not answer keeps them
 *		held).
 */
static void
release_held(const OutboxGroup *grp, text *name, TimestampTz ts)
{
	Datum		values[1];
	Datum		args[3];
	SPITupleTable *held;
	uint64		nheld;
	uint64		i;
	int			rc;
	bool		isnull;
	Datum	   *streams;
	Datum	   *versions;
	Datum		blocked;
	bool		blocked_null;
	Datum	   *blocked_streams = NULL;
	int			nblocked = 0;

	values[0] = Int32GetDatum(grp->group_id);
	rc = SPI_execute_plan(EsGetPlan(&held_plan), values, NULL, false, 0);
	if (rc != SPI_OK_SELECT)
		elog(ERROR, "could not read the held outbox messages: %s", SPI_result_code_string(rc));
	held = SPI_tuptable;
	nheld = SPI_processed;
	if (nheld == 0)
		return;

	/* one round to every node for all of them */
	streams = palloc(sizeof(Datum) * nheld);
	versions = palloc(sizeof(Datum) * nheld);
	for (i = 0; i < nheld; i++)
	{
		streams[i] = SPI_getbinval(held->vals[i], held->tupdesc, 1, &isnull);
		versions[i] = SPI_getbinval(held->vals[i], held->tupdesc, 2, &isnull);
	}
	args[0] = PointerGetDatum(name);
	args[1] = PointerGetDatum(construct_array(streams, (int) nheld, TEXTOID, -1, false, TYPALIGN_INT));
	args[2] = PointerGetDatum(construct_array(versions, (int) nheld, INT8OID, sizeof(int64),
											  FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
	rc = SPI_execute_plan(EsGetPlan(&older_elsewhere_plan), args, NULL, false, 1);
	if (rc != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "could not ask the other nodes for older outbox messages: %s",
			 SPI_result_code_string(rc));
	blocked = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &blocked_null);
	if (!blocked_null)
		deconstruct_array(DatumGetArrayTypeP(blocked), TEXTOID, -1, false, TYPALIGN_INT,
						  &blocked_streams, NULL, &nblocked);

	for (i = 0; i < nheld; i++)
	{
		bool		wait = false;
		int			j;

		CHECK_FOR_INTERRUPTS();
		for (j = 0; j < nblocked && !wait; j++)
			wait = DatumGetBool(DirectFunctionCall2Coll(texteq, C_COLLATION_OID,
														streams[i], blocked_streams[j]));
		if (wait)
			continue;
		args[0] = Int32GetDatum(grp->group_id);
		args[1] = streams[i];
		args[2] = TimestampTzGetDatum(ts);
		EsGuardedWrite(queue_plan(&release_held_plan), EsRelationOid("outbox_deliveries"),
					   TRIGGER_EVENT_UPDATE, args, NULL, InvalidSnapshot, SPI_OK_UPDATE);
	}
}

/*
 * 1, 2 of the claim: the heads, locked.  $1 group, $2 now, $3 scan window,
 * $4 max_count, $5 max_attempts.  Returns the heads to lease (positions and
 * stream keys in order) and the spent ones (lease expired after the last
 * attempt).
 */
static EsPlan claim_heads_plan = {
	NULL,
	"SELECT pg_catalog.array_agg(h.pos ORDER BY h.pos) FILTER (WHERE NOT h.spent),"
	"       pg_catalog.array_agg(h.skey ORDER BY h.pos) FILTER (WHERE NOT h.spent),"
	"       pg_catalog.array_agg(h.pos) FILTER (WHERE h.spent)"
	"  FROM (SELECT d.position AS pos,"
	"               d.stream_key AS skey,"
	"               (d.lease IS NOT NULL AND d.attempts OPERATOR(pg_catalog.>=) $5) AS spent"
	"          FROM (SELECT c.position FROM es.outbox_deliveries AS c"
	"                 WHERE c.group_id OPERATOR(pg_catalog.=) $1"
	"                   AND c.visible_at OPERATOR(pg_catalog.<=) $2"
	"                 ORDER BY c.position"
	"                 LIMIT $3) AS w"
	"          JOIN es.outbox_deliveries AS d"
	"            ON d.group_id OPERATOR(pg_catalog.=) $1"
	"           AND d.position OPERATOR(pg_catalog.=) w.position"
	"         WHERE d.visible_at OPERATOR(pg_catalog.<=) $2"
	"           AND NOT EXISTS (SELECT FROM es.outbox_deliveries AS p"
	"                            WHERE p.group_id OPERATOR(pg_catalog.=) $1"
	"                              AND p.stream_key OPERATOR(pg_catalog.=) d.stream_key"
	"                              AND p.position OPERATOR(pg_catalog.<) d.position)"
	"         ORDER BY w.position"
	"         LIMIT $4"
	"         FOR UPDATE OF d SKIP LOCKED) AS h",
	5, {INT4OID, TIMESTAMPTZOID, INT4OID, INT4OID, INT4OID}
};

/*
 * 3: the runs that follow the heads.  $1 group, $2 now, $3 head stream keys,
 * $4 head positions, $5 how many more at most, $6 max_attempts.
 */
static EsPlan claim_runs_plan = {
	NULL,
	"SELECT pg_catalog.array_agg(r.pos ORDER BY r.pos)"
	"  FROM (SELECT f.pos"
	"          FROM (SELECT x.position AS pos,"
	"                       pg_catalog.bool_and(x.ready)"
	"                         OVER (PARTITION BY h.skey ORDER BY x.position) AS ok"
	"                  FROM ROWS FROM (pg_catalog.unnest($3), pg_catalog.unnest($4)) AS h(skey, pos)"
	"                 CROSS JOIN LATERAL ("
	"                    SELECT d.position,"
	"                           d.visible_at OPERATOR(pg_catalog.<=) $2"
	"                           AND NOT (d.lease IS NOT NULL"
	"                                    AND d.attempts OPERATOR(pg_catalog.>=) $6) AS ready"
	"                      FROM es.outbox_deliveries AS d"
	"                     WHERE d.group_id OPERATOR(pg_catalog.=) $1"
	"                       AND d.stream_key OPERATOR(pg_catalog.=) h.skey"
	"                       AND d.position OPERATOR(pg_catalog.>) h.pos"
	"                     ORDER BY d.position"
	"                     LIMIT $5) AS x) AS f"
	"         WHERE f.ok"
	"         ORDER BY f.pos"
	"         LIMIT $5) AS r",
	6, {INT4OID, TIMESTAMPTZOID, INT8ARRAYOID, INT8ARRAYOID, INT4OID, INT4OID}
};

/*
 * 4: lease them and return them.  $1 group, $2 now, $3 lease_time, $4 the
 * lease, $5 head positions, $6 the runs' positions (NULL: none).
 */
static EsPlan claim_lease_plan = {
	NULL,
	"WITH leased AS ("
	" UPDATE es.outbox_deliveries AS d"
	"    SET visible_at = $2 OPERATOR(pg_catalog.+) $3,"
	"        attempts = d.attempts OPERATOR(pg_catalog.+) 1,"
	"        lease = $4"
	"  WHERE d.group_id OPERATOR(pg_catalog.=) $1"
	"    AND d.position OPERATOR(pg_catalog.=) ANY ($5 OPERATOR(pg_catalog.||) COALESCE($6, '{}'::pg_catalog.int8[]))"
	" RETURNING d.position, d.attempts)"
	" SELECT $4, l.position, l.attempts, o.id, o.aggregateid, o.stream_version, o.type,"
	"        o.schema_version, o.payload, o.metadata, o.global_position, o.created_at"
	"   FROM leased AS l"
	"   JOIN es.outbox AS o ON o.position OPERATOR(pg_catalog.=) l.position"
	"  ORDER BY l.position",
	6, {INT4OID, TIMESTAMPTZOID, INTERVALOID, UUIDOID, INT8ARRAYOID, INT8ARRAYOID}
};

PG_FUNCTION_INFO_V1(es_outbox_claim);

/*
 * es_outbox_claim(consumer_group text, max_count integer, lease_time interval)
 *		returns table (lease, position, attempts, event_id, stream_id, version,
 *		event_type, schema_version, data, metadata, global_position, recorded_at)
 *
 * Lease up to max_count undelivered messages of a group (see the comment of
 * the function in sql/install/50_outbox.sql for the four steps).  The rows
 * are returned materialized, in outbox order.
 */
Datum
es_outbox_claim(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	text	   *name;
	int32		max_count;
	Datum		lease_time;
	OutboxGroup grp;
	TimestampTz ts = GetCurrentTimestamp();
	Datum		tok;
	int32		scan_window;
	Datum		values[6];
	char		nulls[6];
	bool		isnull;
	Datum		head_pos;
	Datum		head_key;
	Datum		spent_pos;
	bool		spent_isnull;
	int			n;
	uint64		i;
	int64		dead = 0;
	int64		claimed;

	EsCheckWritable("es_outbox_claim()");

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("consumer group cannot be null")));
	if (PG_ARGISNULL(1) || PG_ARGISNULL(2))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("max_count and lease_time cannot be null")));
	name = PG_GETARG_TEXT_PP(0);
	max_count = PG_GETARG_INT32(1);
	lease_time = PG_GETARG_DATUM(2);
	if (max_count < 1 || max_count > ES_OUTBOX_MAX_CLAIM)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("max_count must be between 1 and %d", ES_OUTBOX_MAX_CLAIM),
				 errdetail("Got %d.", max_count)));
	if (interval_compare(lease_time, zero_interval()) <= 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("lease_time must be positive")));

	InitMaterializedSRF(fcinfo, 0);
	tok = new_lease();

	outbox_connect();
	find_group(name, true, &grp);
	if (EsDistributed())
		release_held(&grp, name, ts);
	scan_window = Max(max_count * ES_OUTBOX_SCAN_FACTOR, ES_OUTBOX_MIN_SCAN_WINDOW);

	/* 1, 2: the heads, locked */
	values[0] = Int32GetDatum(grp.group_id);
	values[1] = TimestampTzGetDatum(ts);
	values[2] = Int32GetDatum(scan_window);
	values[3] = Int32GetDatum(max_count);
	values[4] = Int32GetDatum(grp.max_attempts);
	outbox_read(&claim_heads_plan, values, NULL);
	head_pos = result_value(0, 1, &isnull);
	n = isnull ? 0 : ArrayGetNItems(ARR_NDIM(DatumGetArrayTypeP(head_pos)),
									ARR_DIMS(DatumGetArrayTypeP(head_pos)));
	head_key = result_value(0, 2, &isnull);
	spent_pos = result_value(0, 3, &spent_isnull);

	if (!spent_isnull)
	{
		Datum		spent_values[2];

		spent_values[0] = Int32GetDatum(grp.group_id);
		spent_values[1] = spent_pos;
		/* "lease expired" replaces the delivery's own last error */
		dead = move_to_dead(&claim_spent_plan, spent_values, grp.group_id,
							CStringGetTextDatum("lease expired"), false, "lease expired", ts);
		/* dead letters count as processed for es_wait_for_group */
		if (dead > 0)
			EsWaitWakeAtCommit();
	}

	if (n == 0)
	{
		outbox_finish();
		EsStatsOutbox(name, 0, 0, 0, dead);
		return (Datum) 0;
	}

	/* 3: the runs that follow the heads */
	memset(nulls, ' ', sizeof(nulls));
	values[5] = (Datum) 0;
	nulls[5] = 'n';
	if (n < max_count)
	{
		Datum		run_values[6];

		run_values[0] = Int32GetDatum(grp.group_id);
		run_values[1] = TimestampTzGetDatum(ts);
		run_values[2] = head_key;
		run_values[3] = head_pos;
		run_values[4] = Int32GetDatum(max_count - n);
		run_values[5] = Int32GetDatum(grp.max_attempts);
		outbox_read(&claim_runs_plan, run_values, NULL);
		values[5] = result_value(0, 1, &isnull);
		if (!isnull)
			nulls[5] = ' ';
	}

	/* 4: lease them and return them */
	values[0] = Int32GetDatum(grp.group_id);
	values[1] = TimestampTzGetDatum(ts);
	values[2] = lease_time;
	values[3] = tok;
	values[4] = head_pos;
	EsGuardedWrite(queue_plan(&claim_lease_plan), EsRelationOid("outbox_deliveries"), TRIGGER_EVENT_UPDATE,
				   values, nulls, InvalidSnapshot, SPI_OK_SELECT);
	for (i = 0; i < SPI_processed; i++)
	{
		Datum		row[12];
		bool		rownulls[12];

		heap_deform_tuple(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, row, rownulls);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, row, rownulls);
	}
	claimed = SPI_processed;
	outbox_finish();
	EsStatsOutbox(name, claimed, 0, 0, dead);
	return (Datum) 0;
}

/* ------------------------------------------------------------- ack, nack */

static EsPlan ack_plan = {
	NULL,
	"DELETE FROM es.outbox_deliveries AS d"
	" WHERE d.group_id OPERATOR(pg_catalog.=) $1"
	"   AND d.position OPERATOR(pg_catalog.=) ANY ($3)"
	"   AND d.lease OPERATOR(pg_catalog.=) $2",
	3, {INT4OID, UUIDOID, INT8ARRAYOID}
};

PG_FUNCTION_INFO_V1(es_outbox_ack);

/*
 * es_outbox_ack(consumer_group text, lease uuid, positions bigint[]) returns bigint
 *		Mark claimed messages delivered (delete their deliveries); returns
 *		how many still held that lease.
 */
Datum
es_outbox_ack(PG_FUNCTION_ARGS)
{
	OutboxGroup grp;
	Datum		values[3];
	int64		n;

	EsCheckWritable("es_outbox_ack()");

	if (PG_ARGISNULL(0) || PG_ARGISNULL(1) || PG_ARGISNULL(2))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("consumer group, lease and positions cannot be null")));
	outbox_connect();
	find_group(PG_GETARG_TEXT_PP(0), false, &grp);
	values[0] = Int32GetDatum(grp.group_id);
	values[1] = PG_GETARG_DATUM(1);
	values[2] = PG_GETARG_DATUM(2);
	EsGuardedWrite(queue_plan(&ack_plan), EsRelationOid("outbox_deliveries"), TRIGGER_EVENT_DELETE,
				   values, NULL, InvalidSnapshot, SPI_OK_DELETE);
	n = SPI_processed;
	outbox_finish();
	/* the group advanced: es_wait_for_group sleepers recheck at commit */
	if (n > 0)
		EsWaitWakeAtCommit();
	EsStatsOutbox(PG_GETARG_TEXT_PP(0), 0, n, 0, 0);
	PG_RETURN_INT64(n);
}

/*
 * The nacked deliveries that do not go to the dead letters: again after
 * retry_after ($6, when not NULL) or the backoff, base ($7) * 2^(attempts -
 * 1), at most max ($8).  $1 group, $2 lease, $3 positions, $4 now, $5 reason.
 */
static EsPlan nack_retry_plan = {
	NULL,
	"UPDATE es.outbox_deliveries AS d"
	"   SET visible_at = $4 OPERATOR(pg_catalog.+)"
	"           COALESCE($6,"
	"                    LEAST($7 OPERATOR(pg_catalog.*)"
	"                            pg_catalog.power(2::pg_catalog.float8,"
	"                                             LEAST(d.attempts OPERATOR(pg_catalog.-) 1, 30)::pg_catalog.float8),"
	"                          $8)),"
	"       lease = NULL,"
	"       last_error = COALESCE($5, d.last_error)"
	" WHERE d.group_id OPERATOR(pg_catalog.=) $1"
	"   AND d.position OPERATOR(pg_catalog.=) ANY ($3)"
	"   AND d.lease OPERATOR(pg_catalog.=) $2",
	8, {INT4OID, UUIDOID, INT8ARRAYOID, TIMESTAMPTZOID, TEXTOID, INTERVALOID, INTERVALOID,
		INTERVALOID}
};

PG_FUNCTION_INFO_V1(es_outbox_nack);

/*
 * es_outbox_nack(consumer_group text, lease uuid, positions bigint[],
 *		reason text, retry_after interval) returns bigint
 *		Give claimed messages back: those that used up their attempts go to
 *		the dead letters, the others are retried after retry_after or the
 *		group's backoff.  Returns how many still held that lease.
 */
Datum
es_outbox_nack(PG_FUNCTION_ARGS)
{
	OutboxGroup grp;
	TimestampTz ts = GetCurrentTimestamp();
	Datum		values[8];
	char		nulls[8];
	Datum		spent_values[4];
	int64		n;
	int64		dead;

	EsCheckWritable("es_outbox_nack()");

	if (PG_ARGISNULL(0) || PG_ARGISNULL(1) || PG_ARGISNULL(2))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("consumer group, lease and positions cannot be null"),
				 errhint("Only reason and retry_after may be NULL.")));
	if (!PG_ARGISNULL(4) && interval_compare(PG_GETARG_DATUM(4), zero_interval()) < 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("retry_after cannot be negative")));
	outbox_connect();
	find_group(PG_GETARG_TEXT_PP(0), false, &grp);

	/* attempts used up: to the dead letters */
	spent_values[0] = Int32GetDatum(grp.group_id);
	spent_values[1] = PG_GETARG_DATUM(2);
	spent_values[2] = PG_GETARG_DATUM(1);
	spent_values[3] = Int32GetDatum(grp.max_attempts);
	dead = move_to_dead(&nack_spent_plan, spent_values, grp.group_id,
						PG_ARGISNULL(3) ? (Datum) 0 : PG_GETARG_DATUM(3), PG_ARGISNULL(3),
						"nacked", ts);

	/* the others: again after the backoff */
	memset(nulls, ' ', sizeof(nulls));
	values[0] = Int32GetDatum(grp.group_id);
	values[1] = PG_GETARG_DATUM(1);
	values[2] = PG_GETARG_DATUM(2);
	values[3] = TimestampTzGetDatum(ts);
	values[4] = PG_ARGISNULL(3) ? (Datum) 0 : PG_GETARG_DATUM(3);
	if (PG_ARGISNULL(3))
		nulls[4] = 'n';
	values[5] = PG_ARGISNULL(4) ? (Datum) 0 : PG_GETARG_DATUM(4);
	if (PG_ARGISNULL(4))
		nulls[5] = 'n';
	values[6] = grp.backoff_base;
	values[7] = grp.backoff_max;
	EsGuardedWrite(queue_plan(&nack_retry_plan), EsRelationOid("outbox_deliveries"), TRIGGER_EVENT_UPDATE,
				   values, nulls, InvalidSnapshot, SPI_OK_UPDATE);
	n = dead + SPI_processed;
	outbox_finish();
	/* dead letters count as processed for es_wait_for_group */
	if (dead > 0)
		EsWaitWakeAtCommit();
	EsStatsOutbox(PG_GETARG_TEXT_PP(0), 0, 0, n - dead, dead);
	PG_RETURN_INT64(n);
}

/* ------------------------------------------------------ replay, discard */

static EsPlan replay_take_plan = {
	NULL,
	"WITH m AS ("
	" DELETE FROM es.outbox_dead AS z"
	"  WHERE z.group_id OPERATOR(pg_catalog.=) $1"
	"    AND ($2 IS NULL OR z.position OPERATOR(pg_catalog.=) ANY ($2))"
	" RETURNING z.position, z.stream_key, z.last_error)"
	" SELECT pg_catalog.array_agg(m.position), pg_catalog.array_agg(m.stream_key),"
	"        pg_catalog.array_agg(m.last_error)"
	"   FROM m",
	2, {INT4OID, INT8ARRAYOID}
};

static EsPlan replay_put_plan = {
	NULL,
	"INSERT INTO es.outbox_deliveries AS d"
	"  (group_id, position, stream_key, visible_at, attempts, lease, last_error)"
	" SELECT $1, u.p, u.k, pg_catalog.clock_timestamp(), 0, NULL, u.e"
	"   FROM ROWS FROM (pg_catalog.unnest($2), pg_catalog.unnest($3), pg_catalog.unnest($4))"
	"        AS u(p, k, e)",
	4, {INT4OID, INT8ARRAYOID, INT8ARRAYOID, TEXTARRAYOID}
};

/* positions argument of replay and discard: NULL means all */
static void
set_positions_arg(FunctionCallInfo fcinfo, Datum *values, char *nulls)
{
	if (PG_ARGISNULL(1))
	{
		values[1] = (Datum) 0;
		nulls[1] = 'n';
	}
	else
	{
		values[1] = PG_GETARG_DATUM(1);
		nulls[1] = ' ';
	}
}

PG_FUNCTION_INFO_V1(es_outbox_replay);

/*
 * es_outbox_replay(consumer_group text, positions bigint[]) returns bigint
 *		Put dead letters of a group (all, or those at positions) back to
 *		delivery with fresh attempts; returns how many.
 */
Datum
es_outbox_replay(PG_FUNCTION_ARGS)
{
	OutboxGroup grp;
	Datum		values[4];
	char		nulls[4] = {' ', ' ', ' ', ' '};
	bool		isnull;
	Datum		positions;
	int64		n = 0;

	EsCheckWritable("es_outbox_replay()");

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("consumer group cannot be null")));
	outbox_connect();
	find_group(PG_GETARG_TEXT_PP(0), false, &grp);
	values[0] = Int32GetDatum(grp.group_id);
	set_positions_arg(fcinfo, values, nulls);
	EsGuardedWrite(&replay_take_plan, EsRelationOid("outbox_dead"), TRIGGER_EVENT_DELETE,
				   values, nulls, InvalidSnapshot, SPI_OK_SELECT);
	positions = result_value(0, 1, &isnull);
	if (!isnull)
	{
		values[1] = positions;
		values[2] = result_value(0, 2, &isnull);
		values[3] = result_value(0, 3, &isnull);
		memset(nulls, ' ', sizeof(nulls));
		EsGuardedWrite(&replay_put_plan, EsRelationOid("outbox_deliveries"), TRIGGER_EVENT_INSERT,
					   values, nulls, InvalidSnapshot, SPI_OK_INSERT);
		n = SPI_processed;
		if (n > 0)
			EsNotifyRequest();
	}
	outbox_finish();
	PG_RETURN_INT64(n);
}

static EsPlan discard_plan = {
	NULL,
	"DELETE FROM es.outbox_dead AS z"
	" WHERE z.group_id OPERATOR(pg_catalog.=) $1"
	"   AND ($2 IS NULL OR z.position OPERATOR(pg_catalog.=) ANY ($2))",
	2, {INT4OID, INT8ARRAYOID}
};

PG_FUNCTION_INFO_V1(es_outbox_discard);

/*
 * es_outbox_discard(consumer_group text, positions bigint[]) returns bigint
 *		Delete dead letters of a group (all, or those at positions); returns
 *		how many.
 */
Datum
es_outbox_discard(PG_FUNCTION_ARGS)
{
	OutboxGroup grp;
	Datum		values[2];
	char		nulls[2] = {' ', ' '};
	int64		n;

	EsCheckWritable("es_outbox_discard()");

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("consumer group cannot be null")));
	outbox_connect();
	find_group(PG_GETARG_TEXT_PP(0), false, &grp);
	values[0] = Int32GetDatum(grp.group_id);
	set_positions_arg(fcinfo, values, nulls);
	EsGuardedWrite(&discard_plan, EsRelationOid("outbox_dead"), TRIGGER_EVENT_DELETE,
				   values, nulls, InvalidSnapshot, SPI_OK_DELETE);
	n = SPI_processed;
	outbox_finish();
	PG_RETURN_INT64(n);
}

/* --------------------------------------------------------------- cleanup */

/*
 * One statement, one snapshot: the bound (the oldest undelivered position of
 * any group), the dead letters, and the rows deleted.  $1 retention, $2
 * max_rows.
 */
/*
 * The cleanup: the bound is the oldest delivery of any group; GROUPS is
 * where the groups come from ($3 on a distributed store, see below).
 */
#define CLEANUP(groups) \
	"WITH b AS (" \
	" SELECT pg_catalog.min(m.position) AS bound" \
	"   FROM " groups \
	"  CROSS JOIN LATERAL (SELECT d.position FROM es.outbox_deliveries AS d" \
	"                       WHERE d.group_id OPERATOR(pg_catalog.=) g.group_id" \
	"                       ORDER BY d.position LIMIT 1) AS m)" \
	" DELETE FROM es.outbox AS o" \
	"  WHERE o.position OPERATOR(pg_catalog.=) ANY (ARRAY(" \
	"        SELECT x.position FROM es.outbox AS x, b" \
	"         WHERE (b.bound IS NULL OR x.position OPERATOR(pg_catalog.<) b.bound)" \
	"           AND x.created_at OPERATOR(pg_catalog.<)" \
	"               (pg_catalog.clock_timestamp() OPERATOR(pg_catalog.-) $1)" \
	"           AND NOT EXISTS (SELECT FROM es.outbox_dead AS z" \
	"                            WHERE z.position OPERATOR(pg_catalog.=) x.position)" \
	"         ORDER BY x.position" \
	"         LIMIT $2))"

static EsPlan cleanup_plan = {
	NULL,
	CLEANUP("es.outbox_groups AS g"),
	2, {INTERVALOID, INT4OID}
};

/*
 * Citus (issue 16): es.outbox_groups is a reference table, which Citus
 * cannot join laterally with this node's own tables; its ids are read first,
 * with the same snapshot, and given as $3.
 */
static EsPlan cleanup_given_groups_plan = {
	NULL,
	CLEANUP("pg_catalog.unnest($3::pg_catalog.int4[]) AS g(group_id)"),
	3, {INTERVALOID, INT4OID, INT4ARRAYOID}
};

static EsPlan cleanup_groups_plan = {
	NULL,
	"SELECT COALESCE(pg_catalog.array_agg(g.group_id), '{}') FROM es.outbox_groups AS g",
	0, {InvalidOid}
};

PG_FUNCTION_INFO_V1(es_outbox_cleanup);

/*
 * es_outbox_cleanup(retention interval, max_rows integer) returns bigint
 *
 * Delete up to max_rows outbox rows older than retention that every group
 * has received: below the oldest position that any group has a delivery
 * for, and that no dead letter refers to.  Returns how many.
 *
 * Why no group can still need a deleted row, at every isolation level:
 *  - The bound, the dead letters and the rows are read by one statement,
 *    i.e. in one snapshot.  An outbox row and its deliveries are written by
 *    the same transaction (the append), so a snapshot that sees the row
 *    sees its deliveries; a row whose append commits later is invisible to
 *    it and not deleted, whatever its position.  (Computing the bound in
 *    one statement and deleting in the next lost exactly those rows.)
 *  - A delivery only ever turns into a dead letter and back inside one
 *    transaction, so the snapshot sees one of the two.
 *  - The only other way a row can gain a delivery is the backfill of a new
 *    group.  The DELETE holds ROW EXCLUSIVE on es.outbox, which conflicts
 *    with the SHARE lock of es_outbox_create_group: the lock is taken first
 *    and the statement runs with a snapshot taken after it, so a group
 *    created before is seen with its backfill (also when this
 *    transaction's own snapshot is older: REPEATABLE READ, SERIALIZABLE),
 *    and a group created after waits for this transaction and does not
 *    find the deleted rows.
 * A row is deleted at most once: a concurrent cleanup that deleted it first
 * makes this one skip it (READ COMMITTED) or fail with a serialization
 * error (REPEATABLE READ, SERIALIZABLE).
 */
Datum
es_outbox_cleanup(PG_FUNCTION_ARGS)
{
	Datum		values[3];
	Snapshot	snap;
	int64		n;

	EsCheckWritable("es_outbox_cleanup()");

	if (PG_ARGISNULL(0) || PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("retention and max_rows cannot be null")));
	if (interval_compare(PG_GETARG_DATUM(0), zero_interval()) < 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("retention cannot be negative")));
	if (PG_GETARG_INT32(1) < 1)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("max_rows must be positive")));

	outbox_connect();
	snap = RegisterSnapshot(EsOutboxLockGroups(RowExclusiveLock));
	values[0] = PG_GETARG_DATUM(0);
	values[1] = PG_GETARG_DATUM(1);
	if (EsDistributed())
	{
		bool		isnull;
		int			rc = SPI_execute_snapshot(EsGetPlan(&cleanup_groups_plan), NULL, NULL,
											  snap, InvalidSnapshot, true, false, 1);

		if (rc != SPI_OK_SELECT || SPI_processed != 1)
			elog(ERROR, "could not read the consumer groups: %s", SPI_result_code_string(rc));
		values[2] = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
		EsGuardedWrite(queue_plan(&cleanup_given_groups_plan), EsRelationOid("outbox"),
					   TRIGGER_EVENT_DELETE, values, NULL, snap, SPI_OK_DELETE);
	}
	else
		EsGuardedWrite(queue_plan(&cleanup_plan), EsRelationOid("outbox"), TRIGGER_EVENT_DELETE,
					   values, NULL, snap, SPI_OK_DELETE);
	n = SPI_processed;
	UnregisterSnapshot(snap);
	outbox_finish();
	PG_RETURN_INT64(n);
}
