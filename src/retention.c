/*-------------------------------------------------------------------------
 *
 * retention.c
 *	  Retention policies (es_set_retention) and their application
 *	  (es_apply_retention): the oldest events of a stream beyond a maximum
 *	  age and/or count are removed, keeping version numbers.
 *
 * A policy is per category or per stream (the stream's own wins).  Applying
 * removes, per stream, the events older than max_age and those beyond the
 * newest max_count, but never the stream's last event (a stream keeps its
 * head, so its version, its chain and its tombstone-free state stay
 * readable).  The stream row records where the stream now starts:
 * first_version (the lowest version still stored) and base_hash (the chain
 * hash of the last removed event), so es_verify still verifies what is
 * left.  Snapshots below the new start, which no fold can use any more, are
 * removed too; snapshots at or after first_version - 1 stay.
 *
 * Locks and concurrency: each stream is handled under its row lock in
 * es.streams, taken with SKIP LOCKED: a stream being appended to right now
 * is left for the next run instead of holding up the appender (or the
 * retention).  The lock comes first, as in es_append, and the events
 * removed are below the head that the lock protects: an append never waits
 * for a DELETE of events and never loses one.  The log read (es_read_all)
 * orders by (era, tx_id, global_position): removing rows behind a cursor
 * cannot make a reader skip a row after it.  Archived and erased streams are
 * left alone.
 *
 * One call removes at most batch_size events, in one transaction; "more"
 * tells the caller to call again (pg_cron: a loop; the launcher does it).
 *
 * src/retention.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "catalog/pg_type.h"
#include "commands/trigger.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/timestamp.h"

#include "es_ext.h"

/* the largest max_age of a retention policy */
#define ES_RETENTION_MAX_AGE_YEARS 1000

static EsPlan upsert_policy_plan = {
	NULL,
	"INSERT INTO es.retention_policies AS r (category, stream_id, max_age, max_count)"
	" VALUES ($1, $2, $3, $4)"
	" ON CONFLICT ON CONSTRAINT retention_policies_key DO UPDATE"
	"   SET max_age = EXCLUDED.max_age, max_count = EXCLUDED.max_count,"
	"       updated_at = pg_catalog.now()",
	4, {TEXTOID, TEXTOID, INTERVALOID, INT8OID}
};

static EsPlan delete_policy_plan = {
	NULL,
	"DELETE FROM es.retention_policies AS r"
	" WHERE r.category IS NOT DISTINCT FROM $1 AND r.stream_id IS NOT DISTINCT FROM $2",
	2, {TEXTOID, TEXTOID}
};

/*
 * The streams with something to remove, at most $1 of them: under a policy
 * (their own, else their category's), neither archived nor erased, and
 * either more events than max_count or a first event older than max_age.
 */
static EsPlan candidates_plan = {
	NULL,
	"SELECT s.stream_id, p.max_age, p.max_count"
	"  FROM es.streams AS s"
	"  CROSS JOIN LATERAL (SELECT r.max_age, r.max_count FROM es.retention_policies AS r"
	"                       WHERE r.stream_id OPERATOR(pg_catalog.=) s.stream_id"
	"                          OR (r.stream_id IS NULL AND r.category OPERATOR(pg_catalog.=) s.category)"
	"                       ORDER BY r.stream_id IS NULL LIMIT 1) AS p"
	" WHERE (s.stream_id IN (SELECT r.stream_id FROM es.retention_policies AS r"
	"                         WHERE r.stream_id IS NOT NULL)"
	"        OR s.category IN (SELECT r.category FROM es.retention_policies AS r"
	"                           WHERE r.category IS NOT NULL))"
	"   AND s.erased_at IS NULL AND s.archived_at IS NULL"
	"   AND s.version OPERATOR(pg_catalog.>) s.first_version"
	"   AND ((s.version OPERATOR(pg_catalog.-) p.max_count) OPERATOR(pg_catalog.>=) s.first_version"
	"        OR EXISTS (SELECT FROM es.events AS e"
	"                    WHERE e.stream_id OPERATOR(pg_catalog.=) s.stream_id"
	"                      AND e.version OPERATOR(pg_catalog.=) s.first_version"
	"                      AND e.recorded_at OPERATOR(pg_catalog.<)"
	"                          (pg_catalog.now() OPERATOR(pg_catalog.-) p.max_age)))"
	" ORDER BY s.stream_id"
	" LIMIT $1",
	1, {INT8OID}
};

/* the last version in [$2, $3] of stream $1 recorded before now() - $4 */
static EsPlan age_cutoff_plan = {
	NULL,
	"SELECT max(e.version) FROM es.events AS e"
	" WHERE e.stream_id OPERATOR(pg_catalog.=) $1"
	"   AND e.version OPERATOR(pg_catalog.>=) $2 AND e.version OPERATOR(pg_catalog.<=) $3"
	"   AND e.recorded_at OPERATOR(pg_catalog.<) (pg_catalog.now() OPERATOR(pg_catalog.-) $4)",
	4, {TEXTOID, INT8OID, INT8OID, INTERVALOID}
};

static EsPlan delete_range_plan = {
	NULL,
	"DELETE FROM es.events AS e"
	" WHERE e.stream_id OPERATOR(pg_catalog.=) $1"
	"   AND e.version OPERATOR(pg_catalog.>=) $2 AND e.version OPERATOR(pg_catalog.<=) $3",
	3, {TEXTOID, INT8OID, INT8OID}
};

static EsPlan raise_first_plan = {
	NULL,
	"UPDATE es.streams AS s SET first_version = $2, base_hash = $3"
	" WHERE s.stream_id OPERATOR(pg_catalog.=) $1",
	3, {TEXTOID, INT8OID, BYTEAOID}
};

static EsPlan delete_old_snapshots_plan = {
	NULL,
	"DELETE FROM es.snapshots AS s"
	" WHERE s.stream_id OPERATOR(pg_catalog.=) $1 AND s.version OPERATOR(pg_catalog.<) $2",
	2, {TEXTOID, INT8OID}
};

/*
 * upsert_policy
 *		Insert or update a policy row, past the guard of retention_policies
 *		(an upsert fires its INSERT and UPDATE statement triggers).  In SPI.
 */
static void
upsert_policy(Oid relid, Datum *args, const char *nulls)
{
	SPIPlanPtr	plan = EsGetPlan(&upsert_policy_plan);
	volatile int rc = 0;

	EsAllowNextUpsert(relid);
	PG_TRY();
	{
		rc = SPI_execute_plan(plan, args, nulls, false, 0);
	}
	PG_FINALLY();
	{
		EsClearAllowedWrite();
	}
	PG_END_TRY();
	if (rc != SPI_OK_INSERT)
		elog(ERROR, "could not write \"es.retention_policies\": %s", SPI_result_code_string(rc));
}

PG_FUNCTION_INFO_V1(es_set_retention);

/*
 * es_set_retention(category text, stream text, max_age interval,
 *					max_count bigint) returns void
 *		Set (or, with both limits NULL, remove) the retention policy of a
 *		category or of a stream: exactly one of them is given.  Errors:
 *		both or neither target, a category with "-", a limit not positive
 *		(22023), a target too long (22023).
 */
Datum
es_set_retention(PG_FUNCTION_ARGS)
{
	Datum		args[4];
	char		nulls[4] = {' ', ' ', ' ', ' '};
	Oid			relid;
	int			i;

	EsRefuseDistributed("es_set_retention()", NULL);
	if (PG_ARGISNULL(0) == PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("a retention policy applies to either a category or a stream"),
				 errhint("Give exactly one of category and stream.")));
	for (i = 0; i < 2; i++)
	{
		text	   *t;

		if (PG_ARGISNULL(i))
		{
			nulls[i] = 'n';
			continue;
		}
		t = PG_GETARG_TEXT_PP(i);
		if (VARSIZE_ANY_EXHDR(t) == 0 || VARSIZE_ANY_EXHDR(t) > ES_MAX_NAME_BYTES)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("%s must be between 1 and %d bytes long",
							i == 0 ? "category" : "stream id", ES_MAX_NAME_BYTES)));
		if (i == 0 && memchr(VARDATA_ANY(t), '-', VARSIZE_ANY_EXHDR(t)) != NULL)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("category \"%s\" contains \"-\"", text_to_cstring(t)),
					 errdetail("A stream's category is its id up to the first \"-\".")));
		args[i] = PointerGetDatum(t);
	}
	if (!PG_ARGISNULL(2))
	{
		Interval   *age = PG_GETARG_INTERVAL_P(2);
		Interval	zero;
		Interval	most;

		memset(&zero, 0, sizeof(zero));
		if (DatumGetInt32(DirectFunctionCall2(interval_cmp, IntervalPGetDatum(age),
											  IntervalPGetDatum(&zero))) <= 0)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("max_age must be positive")));

		/*
		 * es_apply_retention computes now() - max_age: beyond the range of
		 * timestamptz (4713 BC) that fails with 22008 on every run, and one
		 * such policy would stop retention for all of them.
		 */
		memset(&most, 0, sizeof(most));
		most.month = ES_RETENTION_MAX_AGE_YEARS * MONTHS_PER_YEAR;
		if (DatumGetInt32(DirectFunctionCall2(interval_cmp, IntervalPGetDatum(age),
											  IntervalPGetDatum(&most))) > 0)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("max_age must be at most %d years", ES_RETENTION_MAX_AGE_YEARS)));
		args[2] = IntervalPGetDatum(age);
	}
	else
		nulls[2] = 'n';
	if (!PG_ARGISNULL(3))
	{
		if (PG_GETARG_INT64(3) < 1)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("max_count must be at least 1"),
					 errdetail("A stream always keeps its last event.")));
		args[3] = Int64GetDatum(PG_GETARG_INT64(3));
	}
	else
		nulls[3] = 'n';

	EsCheckWritable("es_set_retention()");
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	relid = EsRelationOid("retention_policies");

	if (nulls[2] == 'n' && nulls[3] == 'n')
		EsGuardedWrite(&delete_policy_plan, relid, TRIGGER_EVENT_DELETE, args, nulls,
					   InvalidSnapshot, SPI_OK_DELETE);
	else
		upsert_policy(relid, args, nulls);
	SPI_finish();
	PG_RETURN_VOID();
}

/*
 * retain_stream
 *		Apply one stream's policy, removing at most budget events.  Returns
 *		the events removed (0: the stream was locked, gone, or had nothing
 *		to remove) and adds the snapshots removed to *snapshots; *capped:
 *		the budget stopped it short.  Inside SPI.
 */
static int64
retain_stream(text *stream, bool age_null, Datum max_age, bool count_null, int64 max_count,
			  int64 budget, int64 *snapshots, bool *capped)
{
	EsStreamState st;
	Datum		args[4];
	char		nulls[4] = {' ', ' ', ' ', ' '};
	int64		limit;
	int64		cut;
	int64		removed;
	bool		isnull;
	int			rc;

	*capped = false;
	if (!EsLockStream(stream, true, &st) || st.archived || st.erased)
		return 0;

	/* never the head; at most budget events */
	limit = st.version - 1;
	if (limit - st.first_version + 1 > budget)
		limit = st.first_version - 1 + budget;
	cut = st.first_version - 1;
	if (!count_null && st.version - max_count > cut)
		cut = st.version - max_count;
	if (!age_null && cut < limit)
	{
		args[0] = PointerGetDatum(stream);
		args[1] = Int64GetDatum(cut + 1);
		args[2] = Int64GetDatum(limit);
		args[3] = max_age;
		rc = SPI_execute_plan(EsGetPlan(&age_cutoff_plan), args, NULL, true, 1);
		if (rc != SPI_OK_SELECT)
			elog(ERROR, "could not read es.events: %s", SPI_result_code_string(rc));
		{
			Datum		d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1,
										  &isnull);

			if (!isnull && DatumGetInt64(d) > cut)
				cut = DatumGetInt64(d);
		}
	}
	if (cut > limit)
	{
		cut = limit;
		*capped = true;
	}
	if (cut < st.first_version)
		return 0;

	/* the hash of the last event removed: the new base of the chain */
	args[0] = PointerGetDatum(stream);
	{
		uint8		h[ES_HASH_LENGTH];

		if (!EsStoredEventHash(args[0], cut, h))
			ereport(ERROR,
					(errcode(ERRCODE_DATA_CORRUPTED),
					 errmsg("event %lld of stream \"%s\" has no valid chain hash",
							(long long) cut, text_to_cstring(stream)),
					 errhint("Run es.es_verify() on the stream; retention keeps the chain verifiable and cannot start it from a damaged event.")));
		args[2] = EsHashDatum(h);
	}
	{
		Datum		del[3];

		del[0] = args[0];
		del[1] = Int64GetDatum(st.first_version);
		del[2] = Int64GetDatum(cut);
		EsGuardedWrite(&delete_range_plan, EsRelationOid("events"), TRIGGER_EVENT_DELETE, del,
					   NULL, InvalidSnapshot, SPI_OK_DELETE);
		removed = (int64) SPI_processed;
	}
	if (removed != cut - st.first_version + 1)
		elog(ERROR, "retention of stream \"%s\" removed %lld events, expected %lld",
			 text_to_cstring(stream), (long long) removed,
			 (long long) (cut - st.first_version + 1));

	args[1] = Int64GetDatum(cut + 1);
	EsGuardedWrite(&raise_first_plan, EsRelationOid("streams"), TRIGGER_EVENT_UPDATE, args,
				   nulls, InvalidSnapshot, SPI_OK_UPDATE);

	/* snapshots no fold can start from any more: below version cut */
	args[1] = Int64GetDatum(cut);
	EsGuardedWrite(&delete_old_snapshots_plan, EsRelationOid("snapshots"), TRIGGER_EVENT_DELETE,
				   args, NULL, InvalidSnapshot, SPI_OK_DELETE);
	*snapshots += (int64) SPI_processed;
	return removed;
}

PG_FUNCTION_INFO_V1(es_apply_retention);

/*
 * es_apply_retention(batch_size integer) returns (streams, events,
 *		snapshots, more)
 *		Apply the retention policies, removing at most batch_size events in
 *		the calling transaction.  more: there may be more to remove (call
 *		again).  Errors: NULL (22004) or out of range (22023) batch_size.
 */
Datum
es_apply_retention(PG_FUNCTION_ARGS)
{
	int64		budget;
	int64		streams = 0;
	int64		events = 0;
	int64		snapshots = 0;
	bool		more = false;
	Datum		arg;
	SPITupleTable *cands;
	uint64		ncands;
	uint64		i;
	TupleDesc	rdesc;
	Datum		values[4];
	bool		rnulls[4] = {false, false, false, false};
	MemoryContext cxt;
	int			rc;

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("batch_size cannot be null")));
	budget = PG_GETARG_INT32(0);
	if (budget < 1 || budget > ES_RETENTION_MAX_BATCH)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("batch_size must be between 1 and %d", ES_RETENTION_MAX_BATCH)));
	if (get_call_result_type(fcinfo, NULL, &rdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");

	EsCheckWritable("es_apply_retention()");
	EsRefuseDistributed("es_apply_retention()", NULL);
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");

	arg = Int64GetDatum(budget);
	rc = SPI_execute_plan(EsGetPlan(&candidates_plan), &arg, NULL, false, 0);
	if (rc != SPI_OK_SELECT)
		elog(ERROR, "could not read the retention candidates: %s", SPI_result_code_string(rc));
	cands = SPI_tuptable;
	ncands = SPI_processed;
	if (ncands == (uint64) budget)
		more = true;

	cxt = AllocSetContextCreate(CurrentMemoryContext, "es_apply_retention stream",
								ALLOCSET_DEFAULT_SIZES);
	for (i = 0; i < ncands && budget > 0; i++)
	{
		HeapTuple	t = cands->vals[i];
		bool		sn;
		bool		an;
		bool		cn;
		Datum		s = SPI_getbinval(t, cands->tupdesc, 1, &sn);
		Datum		age = SPI_getbinval(t, cands->tupdesc, 2, &an);
		Datum		cnt = SPI_getbinval(t, cands->tupdesc, 3, &cn);
		bool		capped;
		int64		n;
		MemoryContext old;

		CHECK_FOR_INTERRUPTS();
		old = MemoryContextSwitchTo(cxt);
		n = retain_stream(DatumGetTextPP(s), an, age, cn, cn ? 0 : DatumGetInt64(cnt), budget,
						  &snapshots, &capped);
		MemoryContextSwitchTo(old);
		MemoryContextReset(cxt);
		if (n > 0)
		{
			streams++;
			events += n;
			budget -= n;
		}
		if (capped)
			more = true;
	}
	if (i < ncands)
		more = true;
	MemoryContextDelete(cxt);
	SPI_finish();

	values[0] = Int64GetDatum(streams);
	values[1] = Int64GetDatum(events);
	values[2] = Int64GetDatum(snapshots);
	values[3] = BoolGetDatum(more);
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(BlessTupleDesc(rdesc), values, rnulls)));
}
