/*-------------------------------------------------------------------------
 *
 * read.c
 *	  Read side: es_read_stream (one stream, in version order), es_read_all
 *	  (the global log, gap-safe), es_read_query (the global log filtered by
 *	  a query of event types and tags, gap-safe), es_log_horizon, and
 *	  es_cursor_lag (how far
 *	  a cursor is behind: what es.subscriptions and es.projection_progress
 *	  show).
 *
 * The global log is ordered by the cursor (era, tx_id, global_position),
 * never by global_position alone: a position is drawn from a sequence at
 * insert time but becomes visible at commit, so a reader that remembers "the
 * last position seen" skips every event whose transaction commits late.
 *
 * Instead, every event carries the top-level transaction id (tx_id) of its
 * append.  Any transaction with an xid below the xmin of a snapshot has
 * finished, and no transaction that starts later can get an xid below it, so
 * the set of events with tx_id < xmin is final: nothing can be added below
 * that horizon any more.
 *
 * One refinement keeps each stream's events in version order in the log: a
 * transaction that took its xid early (say 99, by writing elsewhere first)
 * can append version 2 of a stream after a transaction with xid 100 appended
 * version 1 and committed.  Ordered by raw xid, version 2 would come first.
 * So es_append stores tx_id = GREATEST(own top-level xid, the stream's
 * previous tx_id) (kept in es.streams.log_tx_id under the stream's row
 * lock).  The horizon argument still holds, because tx_id is never below the
 * appending transaction's own xid: an event whose tx_id is below the horizon
 * belongs to a finished transaction, and any transaction still running or
 * yet to start writes events with tx_id >= its own xid >= the horizon.  es_read_all computes the horizon from the very
 * snapshot its scan runs under (SPI in read-only mode uses the active
 * snapshot) and returns only events below it, in cursor order.  A subscriber
 * that checkpoints the cursor of the last row it processed therefore never
 * skips nor repeats an event.  The price: a transaction holding an xid
 * anywhere in the cluster holds readers back while it runs; the view
 * es.horizon_holders shows who.
 *
 * Memory: es_read_all fetches rows from an SPI cursor in batches and copies
 * them into the function's tuplestore (which spills to disk past work_mem);
 * each batch is freed before the next.  es_read_stream reads through
 * stream_scan.c and copies each row into its tuplestore once.
 *
 * src/read.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/detoast.h"
#include "access/htup_details.h"
#include "access/transam.h"
#include "access/xact.h"
#include "access/xlog.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "funcapi.h"
#include "lib/stringinfo.h"
#include "miscadmin.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/typcache.h"
#include "utils/xid8.h"

#include "es_ext.h"

#define LOG_COLUMNS \
	"SELECT e.global_position, e.stream_id, e.version, e.event_id, e.event_type," \
	"       e.data, e.metadata, e.recorded_at, e.era, e.tx_id, e.schema_version" \
	"  FROM es.events AS e" \
	" WHERE (e.era OPERATOR(pg_catalog.<) $4" \
	"        OR (e.era OPERATOR(pg_catalog.=) $4 AND e.tx_id OPERATOR(pg_catalog.<) $5))"
#define LOG_SELECT \
	LOG_COLUMNS \
	"   AND (e.era, e.tx_id, e.global_position) OPERATOR(pg_catalog.>) ($1, $2, $3)"
/*
 * The planner estimates a row comparison by its first column: (era, ...) >
 * (0, ...) or (era, tx_id) < (0, ...) looks like no row at all when every
 * event is in era 0, and the whole-log index then looked as cheap as the
 * category's for a read of a small category, which walked the log.  So the
 * horizon is spelt out era by era (a filter, estimated right), and a
 * category's cursor is compared together with the category: only the
 * category's index takes it as its range.
 */
#define LOG_SELECT_CATEGORY \
	LOG_COLUMNS \
	"   AND e.category OPERATOR(pg_catalog.=) $7" \
	"   AND (e.category, e.era, e.tx_id, e.global_position) OPERATOR(pg_catalog.>) ($7, $1, $2, $3)"
#define LOG_ORDER \
	" ORDER BY e.era, e.tx_id, e.global_position" \
	" LIMIT $6"
#define LOG_ARGTYPES INT4OID, XID8OID, INT8OID, INT4OID, XID8OID, INT8OID

/* indexed by (category given) + 2 * (event types given) */
static EsPlan log_plans[4] = {
	{NULL, LOG_SELECT LOG_ORDER, 6, {LOG_ARGTYPES}},
	{NULL, LOG_SELECT_CATEGORY LOG_ORDER, 7, {LOG_ARGTYPES, TEXTOID}},
	{NULL, LOG_SELECT " AND e.event_type OPERATOR(pg_catalog.=) ANY ($7)" LOG_ORDER,
	7, {LOG_ARGTYPES, TEXTARRAYOID}},
	{NULL, LOG_SELECT_CATEGORY " AND e.event_type OPERATOR(pg_catalog.=) ANY ($8)" LOG_ORDER,
	8, {LOG_ARGTYPES, TEXTOID, TEXTARRAYOID}},
};

/*
 * EsLogHorizon
 *		The global log horizon of snapshot snap, as a full transaction id:
 *		every event with tx_id below it belongs to a finished transaction.
 *		It is the snapshot's xmin, or this transaction's own xid if that is
 *		older (our own uncommitted events must not be returned either).
 */
FullTransactionId
EsLogHorizon(Snapshot snap)
{
	FullTransactionId next = ReadNextFullTransactionId();
	TransactionId xmin = snap->xmin;
	TransactionId own = GetTopTransactionIdIfAny();

	if (TransactionIdIsNormal(own) && TransactionIdPrecedes(own, xmin))
		xmin = own;

	/* widen the 32-bit xmin to 64 bits relative to next, which is newer */
	return FullTransactionIdFromU64(U64FromFullTransactionId(next) -
									(uint32) (XidFromFullTransactionId(next) - xmin));
}

/*
 * fetch_into_tuplestore
 *		Drain an SPI cursor into the SRF's tuplestore.  Each fetched row is
 *		turned into a result row by make_row.
 */
typedef HeapTuple (*EsRowMaker) (HeapTuple row, TupleDesc rowdesc, void *arg);

static void
fetch_into_tuplestore(Portal portal, ReturnSetInfo *rsinfo, EsRowMaker make_row, void *arg)
{
	for (;;)
	{
		uint64		i;

		CHECK_FOR_INTERRUPTS();
		SPI_cursor_fetch(portal, true, ES_FETCH_BATCH);
		if (SPI_processed == 0)
			break;

		for (i = 0; i < SPI_processed; i++)
		{
			HeapTuple	out = make_row(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, arg);

			tuplestore_puttuple(rsinfo->setResult, out);
			heap_freetuple(out);
		}
		SPI_freetuptable(SPI_tuptable);
	}
}

PG_FUNCTION_INFO_V1(es_read_stream);

/*
 * es_read_stream(stream text, from_version bigint, max_count bigint,
 *				  direction text) RETURNS SETOF es.events
 *
 * forward: versions >= from_version (default 1), ascending.
 * backward: versions <= from_version (default: the last), descending.
 * max_count NULL = all.  Runs under the caller's snapshot and privileges.
 *
 * The rows come from stream_scan.c (a direct scan of the primary key index,
 * or an SPI cursor when row level security or column privileges apply) and
 * go into the function's tuplestore once each, upcast on the way (upcast.c)
 * and with any out-of-line value fetched from TOAST: a stored result holds
 * no pointer into the table.  Per-row work happens in a context reset for
 * every row.
 */
Datum
es_read_stream(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	text	   *stream;
	bool		backward;
	int64		from;
	int64		max_count = -1;
	TupleDesc	desc;
	EsEventAttrs attrs;
	EsUpcaster *upcaster;
	EsStreamScan scan;
	Datum	   *values;
	bool	   *nulls;
	MemoryContext row_cxt;
	MemoryContext oldcxt;
	int			i;
	bool		found = false;

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("stream id cannot be null")));
	if (PG_ARGISNULL(3))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("direction cannot be null"),
				 errhint("Use 'forward' or 'backward'.")));
	else
	{
		char	   *dir = text_to_cstring(PG_GETARG_TEXT_PP(3));

		if (pg_strcasecmp(dir, "forward") == 0)
			backward = false;
		else if (pg_strcasecmp(dir, "backward") == 0)
			backward = true;
		else
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("invalid direction \"%s\"", dir),
					 errhint("Use 'forward' or 'backward'.")));
	}

	if (PG_ARGISNULL(1))
		from = backward ? PG_INT64_MAX : 1;
	else
	{
		from = PG_GETARG_INT64(1);
		if (from < 1)
			ereport(ERROR,
					(errcode(ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE),
					 errmsg("from_version " INT64_FORMAT " is out of range", from),
					 errdetail("Stream versions start at 1.")));
	}
	if (!PG_ARGISNULL(2))
	{
		max_count = PG_GETARG_INT64(2);
		if (max_count < 0)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("max_count cannot be negative"),
					 errhint("Use NULL to read all events.")));
	}
	stream = PG_GETARG_TEXT_PP(0);

	InitMaterializedSRF(fcinfo, MAT_SRF_BLESS);
	desc = rsinfo->setDesc;
	values = palloc(sizeof(Datum) * desc->natts);
	nulls = palloc(sizeof(bool) * desc->natts);
	row_cxt = AllocSetContextCreate(CurrentMemoryContext, "es_read_stream row",
									ALLOCSET_DEFAULT_SIZES);

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	upcaster = EsUpcasterBegin();
	if (upcaster != NULL)
		EsEventAttrsInit(&attrs, desc);
	if (backward)
		EsStreamScanBegin(&scan, desc, stream, PG_INT64_MIN, from, true, max_count);
	else
		EsStreamScanBegin(&scan, desc, stream, from, PG_INT64_MAX, false, max_count);

	while (EsStreamScanNext(&scan))
	{
		HeapTuple	tuple = EsStreamScanTuple(&scan);

		CHECK_FOR_INTERRUPTS();
		found = true;

		/*
		 * The common case: the stored row has every column and no value out
		 * of line.  It is copied as it is, or as an upcaster (upcast.c)
		 * raised it: deforming and forming it again costs more than the
		 * rest of the read.
		 */
		if (!HeapTupleHasExternal(tuple) &&
			HeapTupleHeaderGetNatts(tuple->t_data) == desc->natts)
		{
			tuplestore_puttuple(rsinfo->setResult, EsUpcastRow(upcaster, tuple, desc));
			continue;
		}

		MemoryContextReset(row_cxt);
		oldcxt = MemoryContextSwitchTo(row_cxt);
		EsStreamScanValues(&scan, values, nulls);

		/* otherwise the row is deformed, upcast and formed again */
		if (upcaster != NULL)
		{
			EsEventView ev;

			EsEventViewFromValues(&ev, &attrs, values, nulls);
			if (EsUpcastEvent(upcaster, &ev))
			{
				values[attrs.data - 1] = ev.data;
				values[attrs.schema_version - 1] = Int32GetDatum(ev.schema_version);
			}
		}

		/* the stored row must not point into the table (TOAST) */
		for (i = 0; i < desc->natts; i++)
		{
			if (!nulls[i] && TupleDescAttr(desc, i)->attlen == -1 &&
				VARATT_IS_EXTERNAL(DatumGetPointer(values[i])))
				values[i] = PointerGetDatum(detoast_external_attr((struct varlena *)
																  DatumGetPointer(values[i])));
		}

		MemoryContextSwitchTo(oldcxt);
		tuplestore_putvalues(rsinfo->setResult, desc, values, nulls);
	}
	EsStreamScanEnd(&scan);
	SPI_finish();
	MemoryContextDelete(row_cxt);

	EsStatsRead(VARDATA_ANY(stream), VARSIZE_ANY_EXHDR(stream), false, found);

	return (Datum) 0;
}

/* State for make_log_row. */
typedef struct EsLogRowState
{
	TupleDesc	outdesc;		/* es_read_all's or es_read_query's result */
	TupleDesc	cursordesc;		/* es.log_cursor */
	Datum		horizon;
	EsUpcaster *upcaster;		/* NULL when no upcaster is registered */
	bool		with_tags;		/* es_read_query: tags after event_type */
} EsLogRowState;

/*
 * make_log_row
 *		Result row of es_read_all from a row of the log query: the eight
 *		event columns (data upcast), the row's cursor and the horizon.  For
 *		es_read_query, the event's tags (the log query's twelfth column)
 *		follow its type.
 */
static HeapTuple
make_log_row(HeapTuple row, TupleDesc rowdesc, void *arg)
{
	EsLogRowState *st = (EsLogRowState *) arg;
	Datum		in[12];
	bool		innulls[12];
	Datum		out[11];
	bool		outnulls[11];
	Datum		cur[3];
	bool		curnulls[3] = {false, false, false};
	int			t = st->with_tags ? 1 : 0;	/* offset of the columns after the type */

	heap_deform_tuple(row, rowdesc, in, innulls);
	memcpy(out, in, sizeof(Datum) * 5);
	memcpy(outnulls, innulls, sizeof(bool) * 5);
	if (st->with_tags)
	{
		out[5] = in[11];
		outnulls[5] = innulls[11];
	}
	memcpy(out + 5 + t, in + 5, sizeof(Datum) * 3);
	memcpy(outnulls + 5 + t, innulls + 5, sizeof(bool) * 3);

	/* old event shapes are upcast on read (upcast.c): only data changes */
	if (st->upcaster != NULL)
	{
		EsEventView ev;

		ev.global_position = in[0];
		ev.stream_id = in[1];
		ev.version = in[2];
		ev.event_id = in[3];
		ev.event_type = in[4];
		ev.data = in[5];
		ev.metadata = in[6];
		ev.metadata_isnull = innulls[6];
		ev.recorded_at = in[7];
		ev.schema_version = DatumGetInt32(in[10]);
		if (EsUpcastEvent(st->upcaster, &ev))
			out[5 + t] = ev.data;
	}

	cur[0] = in[8];				/* era */
	cur[1] = in[9];				/* tx_id */
	cur[2] = in[0];				/* global_position */
	out[8 + t] = HeapTupleGetDatum(heap_form_tuple(st->cursordesc, cur, curnulls));
	outnulls[8 + t] = false;
	out[9 + t] = st->horizon;
	outnulls[9 + t] = false;

	return heap_form_tuple(st->outdesc, out, outnulls);
}

/*
 * EsParseCursor
 *		Split an es.log_cursor value into era, tx_id (an xid8 Datum) and
 *		global_position; every field must be non-null.
 */
void
EsParseCursor(HeapTupleHeader cursor, int32 *era, Datum *tx_id, int64 *position)
{
	bool		n1,
				n2,
				n3;
	Datum		d1 = GetAttributeByNum(cursor, 1, &n1);
	Datum		d2 = GetAttributeByNum(cursor, 2, &n2);
	Datum		d3 = GetAttributeByNum(cursor, 3, &n3);

	if (n1 || n2 || n3)
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("log cursor fields cannot be null"),
				 errhint("Pass the log_cursor of the last row read, or NULL to read from the start.")));
	*era = DatumGetInt32(d1);
	*tx_id = d2;
	*position = DatumGetInt64(d3);
}

PG_FUNCTION_INFO_V1(es_read_all);

/*
 * es_read_all(after es.log_cursor, max_count integer, category text,
 *			   event_types text[])
 *		RETURNS TABLE (..., log_cursor es.log_cursor, horizon xid8)
 *
 * Events after the cursor (NULL: from the start) and below the horizon of
 * the active snapshot, in cursor order, at most max_count of them.
 */
Datum
es_read_all(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	int32		after_era = -1;
	FullTransactionId after_tx = FullTransactionIdFromU64(0);
	int64		after_pos = 0;
	int32		max_count;
	bool		have_category = !PG_ARGISNULL(2);
	bool		have_types = !PG_ARGISNULL(3);
	Datum		values[8];
	FullTransactionId horizon;
	EsLogRowState st;
	Portal		portal;
	int			nargs = 6;

	/* a logical subscriber's events carry the origin's ids (replica.c) */
	EsCheckNotSubscriber(ES_LOG_READ_ALL);
	/* under Citus each node orders its own log (citus.c) */
	EsRefuseDistributed("es_read_all()", "Read the global log of a distributed event store with es.es_read_log().");

	if (!PG_ARGISNULL(0))
	{
		Datum		tx;

		EsParseCursor(PG_GETARG_HEAPTUPLEHEADER(0), &after_era, &tx, &after_pos);
		after_tx = DatumGetFullTransactionId(tx);
	}

	if (PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("max_count cannot be null")));
	max_count = PG_GETARG_INT32(1);
	if (max_count <= 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("max_count must be greater than zero")));

	if (have_category && VARSIZE_ANY_EXHDR(PG_GETARG_TEXT_PP(2)) == 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("category cannot be empty"),
				 errhint("Use NULL to read every category.")));
	if (have_types)
	{
		ArrayType  *types = PG_GETARG_ARRAYTYPE_P(3);

		if (ARR_NDIM(types) != 1 || ArrayGetNItems(ARR_NDIM(types), ARR_DIMS(types)) == 0)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("event_types must be a non-empty one-dimensional array"),
					 errhint("Use NULL to read every event type.")));
		if (array_contains_nulls(types))
			ereport(ERROR,
					(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
					 errmsg("event_types cannot contain null")));
	}

	InitMaterializedSRF(fcinfo, MAT_SRF_BLESS);

	st.outdesc = rsinfo->setDesc;
	st.cursordesc = lookup_rowtype_tupdesc_copy(TupleDescAttr(rsinfo->setDesc, 8)->atttypid, -1);
	st.cursordesc = BlessTupleDesc(st.cursordesc);
	st.upcaster = EsUpcasterBegin();
	st.with_tags = false;

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");

	/* horizon and scan under the same (active) snapshot */
	horizon = EsLogHorizon(GetActiveSnapshot());
	st.horizon = FullTransactionIdGetDatum(horizon);

	values[0] = Int32GetDatum(after_era);
	values[1] = FullTransactionIdGetDatum(after_tx);
	values[2] = Int64GetDatum(after_pos);
	values[3] = Int32GetDatum(EsCurrentEra());
	values[4] = st.horizon;
	values[5] = Int64GetDatum((int64) max_count);
	if (have_category)
		values[nargs++] = PG_GETARG_DATUM(2);
	if (have_types)
		values[nargs++] = PG_GETARG_DATUM(3);

	portal = SPI_cursor_open(NULL,
							 EsGetPlan(&log_plans[(have_category ? 1 : 0) + (have_types ? 2 : 0)]),
							 values, NULL, true);
	fetch_into_tuplestore(portal, rsinfo, make_log_row, &st);
	SPI_cursor_close(portal);
	SPI_finish();

	if (have_category)
	{
		text	   *category = PG_GETARG_TEXT_PP(2);

		EsStatsRead(VARDATA_ANY(category), VARSIZE_ANY_EXHDR(category), true,
					tuplestore_tuple_count(rsinfo->setResult) > 0);
	}
	else
		EsStatsRead(NULL, 0, true, false);

	return (Datum) 0;
}

/*
 * query_read_sql
 *		The log query of es_read_query for query q: es_read_all's statement
 *		with the event's tags as a twelfth column and the items OR'ed, their
 *		arrays as arguments from $7 on (argtypes[] and values[] get them).
 *		An item's tags are matched by the GIN index on es.events.tags, its
 *		types alone by the index on (event_type, log cursor).  The cursor
 *		and the horizon are spelt out era by era: the planner estimates a
 *		row comparison by its first column, and (era, ...) > (0, ...) with
 *		every event in era 0 looks like no row at all, so it would walk the
 *		whole log index instead of the query's indexes.
 */
static char *
query_read_sql(const EsQuery *q, Oid *argtypes, Datum *values, char *nulls, int *nargs)
{
	StringInfoData sql;
	int			i;

	initStringInfo(&sql);
	appendStringInfoString(&sql,
						   "SELECT e.global_position, e.stream_id, e.version, e.event_id, e.event_type,"
						   "       e.data, e.metadata, e.recorded_at, e.era, e.tx_id, e.schema_version,"
						   "       e.tags"
						   "  FROM es.events AS e"
						   " WHERE (e.era OPERATOR(pg_catalog.>) $1"
						   "        OR (e.era OPERATOR(pg_catalog.=) $1"
						   "            AND (e.tx_id, e.global_position) OPERATOR(pg_catalog.>) ($2, $3)))"
						   "   AND (e.era OPERATOR(pg_catalog.<) $4"
						   "        OR (e.era OPERATOR(pg_catalog.=) $4 AND e.tx_id OPERATOR(pg_catalog.<) $5))"
						   "   AND (");
	for (i = 0; i < q->nitems; i++)
	{
		const EsQueryItem *item = &q->items[i];
		bool		any = false;

		appendStringInfoString(&sql, i > 0 ? " OR (" : "(");
		if (item->tags != NULL)
		{
			argtypes[*nargs] = TEXTARRAYOID;
			values[*nargs] = PointerGetDatum(item->tags);
			nulls[*nargs] = ' ';
			(*nargs)++;
			appendStringInfo(&sql, "e.tags OPERATOR(pg_catalog.@>) $%d", *nargs);
			any = true;
		}
		if (item->types != NULL)
		{
			argtypes[*nargs] = TEXTARRAYOID;
			values[*nargs] = PointerGetDatum(item->types);
			nulls[*nargs] = ' ';
			(*nargs)++;
			appendStringInfo(&sql, "%se.event_type OPERATOR(pg_catalog.=) ANY ($%d)",
							 any ? " AND " : "", *nargs);
			any = true;
		}
		appendStringInfoString(&sql, any ? ")" : "true)");
	}
	appendStringInfoString(&sql, ") ORDER BY e.era, e.tx_id, e.global_position LIMIT $6");
	return sql.data;
}

/*
 * The statements of es_read_query, one per query shape (the statement text
 * depends on which items have tags and types, not on their values), kept
 * prepared for the life of the backend: planning one took most of a short
 * read.  At most ES_QUERY_PLANS shapes are kept; a statement of another
 * shape is prepared for the call only.  The plan cache re-plans a kept
 * statement when es.events changes or the role (row level security) does.
 */
typedef struct EsQueryPlan
{
	char	   *sql;			/* in TopMemoryContext */
	SPIPlanPtr	plan;			/* kept (SPI_keepplan) */
} EsQueryPlan;

static EsQueryPlan query_plans[ES_QUERY_PLANS];
static int	nquery_plans = 0;

static SPIPlanPtr
query_read_plan(const char *sql, int nargs, Oid *argtypes)
{
	SPIPlanPtr	plan;
	int			i;

	for (i = 0; i < nquery_plans; i++)
		if (strcmp(query_plans[i].sql, sql) == 0)
			return query_plans[i].plan;

	plan = SPI_prepare(sql, nargs, argtypes);
	if (plan == NULL)
		elog(ERROR, "could not prepare the query read: %s", SPI_result_code_string(SPI_result));
	if (nquery_plans < ES_QUERY_PLANS)
	{
		query_plans[nquery_plans].sql = MemoryContextStrdup(TopMemoryContext, sql);
		if (SPI_keepplan(plan) != 0)
			elog(ERROR, "could not keep the query read's plan");
		query_plans[nquery_plans].plan = plan;
		nquery_plans++;
	}
	return plan;
}

PG_FUNCTION_INFO_V1(es_read_query);

/*
 * es_read_query(query jsonb, after es.log_cursor, max_count integer)
 *		RETURNS TABLE (global_position, stream_id, version, event_id,
 *					   event_type, tags, data, metadata, recorded_at,
 *					   log_cursor, horizon)
 *
 * The events matching a query (query.c) after the cursor (NULL: from the
 * start), in log order, at most max_count (NULL: all) -- gap-safe as
 * es_read_all: only below the horizon of the snapshot the read runs under,
 * so a transaction that commits late is never behind a returned cursor, and
 * the caller's own uncommitted events are not returned.  The cursor of the
 * last row is the position a conditional append refers to (condition.c);
 * rows and cursor come from this one statement's snapshot (JasperFx/marten
 * #5300 read them in two).
 */
Datum
es_read_query(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	EsQuery    *q;
	int32		after_era = -1;
	Datum		after_tx = FullTransactionIdGetDatum(FullTransactionIdFromU64(0));
	int64		after_pos = 0;
	Oid			argtypes[6 + 2 * ES_MAX_QUERY_ITEMS] = {INT4OID, XID8OID, INT8OID, INT4OID,
	XID8OID, INT8OID};
	Datum		values[6 + 2 * ES_MAX_QUERY_ITEMS];
	char		nulls[6 + 2 * ES_MAX_QUERY_ITEMS];
	int			nargs = 6;
	char	   *sql;
	EsLogRowState st;
	Portal		portal;

	EsCheckNotSubscriber(ES_LOG_READ_ALL);
	EsRefuseDistributed("es_read_query()", "Read the global log of a distributed event store with es.es_read_log().");

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("query cannot be null")));
	q = EsParseQuery(PG_GETARG_JSONB_P(0), "query", false);
	if (!PG_ARGISNULL(1))
		EsParseCursor(PG_GETARG_HEAPTUPLEHEADER(1), &after_era, &after_tx, &after_pos);
	memset(nulls, ' ', sizeof(nulls));
	if (PG_ARGISNULL(2))
		nulls[5] = 'n';			/* LIMIT NULL: all */
	else
	{
		int32		max_count = PG_GETARG_INT32(2);

		if (max_count <= 0)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("max_count must be greater than zero"),
					 errhint("Use NULL to read every matching event.")));
		values[5] = Int64GetDatum((int64) max_count);
	}

	InitMaterializedSRF(fcinfo, MAT_SRF_BLESS);
	st.outdesc = rsinfo->setDesc;
	st.cursordesc = lookup_rowtype_tupdesc_copy(TupleDescAttr(rsinfo->setDesc, 9)->atttypid, -1);
	st.cursordesc = BlessTupleDesc(st.cursordesc);
	st.upcaster = EsUpcasterBegin();
	st.with_tags = true;

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");

	/* horizon and scan under the same (active) snapshot */
	st.horizon = FullTransactionIdGetDatum(EsLogHorizon(GetActiveSnapshot()));
	values[0] = Int32GetDatum(after_era);
	values[1] = after_tx;
	values[2] = Int64GetDatum(after_pos);
	values[3] = Int32GetDatum(EsCurrentEra());
	values[4] = st.horizon;
	sql = query_read_sql(q, argtypes, values, nulls, &nargs);

	portal = SPI_cursor_open(NULL, query_read_plan(sql, nargs, argtypes), values, nulls, true);
	fetch_into_tuplestore(portal, rsinfo, make_log_row, &st);
	SPI_cursor_close(portal);
	SPI_finish();

	EsStatsRead(NULL, 0, true, false);
	return (Datum) 0;
}

static EsPlan stream_version_plan = {
	NULL,
	"SELECT s.version FROM es.streams AS s"
	" WHERE s.stream_id OPERATOR(pg_catalog.=) $1",
	1, {TEXTOID}
};

PG_FUNCTION_INFO_V1(es_stream_version);

/*
 * es_stream_version(stream text) RETURNS bigint
 *		The stream's current version, 0 when it does not exist (STRICT).
 *		In C with a saved plan: a SQL function would be planned anew on every
 *		call, and command handlers call this once per command.
 */
Datum
es_stream_version(PG_FUNCTION_ARGS)
{
	Datum		stream = PG_GETARG_DATUM(0);
	int64		version = 0;
	int			rc;

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	rc = SPI_execute_plan(EsGetPlan(&stream_version_plan), &stream, NULL, true, 1);
	if (rc != SPI_OK_SELECT)
		elog(ERROR, "could not read stream version: %s", SPI_result_code_string(rc));
	if (SPI_processed == 1)
	{
		bool		isnull;

		version = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	}
	SPI_finish();
	PG_RETURN_INT64(version);
}

PG_FUNCTION_INFO_V1(es_log_horizon);

/*
 * es_log_horizon() RETURNS xid8
 *		The horizon of the active snapshot (see EsLogHorizon).
 */
Datum
es_log_horizon(PG_FUNCTION_ARGS)
{
	PG_RETURN_FULLTRANSACTIONID(EsLogHorizon(GetActiveSnapshot()));
}

/* events after the cursor $1..$3 and below the era and horizon $4, $5 */
static EsPlan lag_behind_plan = {
	NULL,
	"SELECT pg_catalog.count(*) FROM es.events AS e"
	" WHERE (e.era, e.tx_id, e.global_position) OPERATOR(pg_catalog.>) ($1, $2, $3)"
	"   AND (e.era, e.tx_id) OPERATOR(pg_catalog.<) ($4, $5)",
	5, {INT4OID, XID8OID, INT8OID, INT4OID, XID8OID}
};

/* events after the cursor $1..$3 (the caller passes the later bound) */
static EsPlan lag_after_plan = {
	NULL,
	"SELECT pg_catalog.count(*) FROM es.events AS e"
	" WHERE (e.era, e.tx_id, e.global_position) OPERATOR(pg_catalog.>) ($1, $2, $3)",
	3, {INT4OID, XID8OID, INT8OID}
};

/* the first event after the cursor $1..$3, readable or not */
static EsPlan lag_next_plan = {
	NULL,
	"SELECT e.recorded_at FROM es.events AS e"
	" WHERE (e.era, e.tx_id, e.global_position) OPERATOR(pg_catalog.>) ($1, $2, $3)"
	" ORDER BY e.era, e.tx_id, e.global_position"
	" LIMIT 1",
	3, {INT4OID, XID8OID, INT8OID}
};

/* run a count(*) plan, return the count */
static int64
count_events(EsPlan *plan, Datum *values)
{
	bool		isnull;
	int			rc;

	rc = SPI_execute_plan(EsGetPlan(plan), values, NULL, true, 1);
	if (rc != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "could not count events: %s", SPI_result_code_string(rc));
	return DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
}

PG_FUNCTION_INFO_V1(es_cursor_lag);

/*
 * es_cursor_lag(after es.log_cursor, OUT events_behind bigint,
 *				 OUT events_held_back bigint, OUT lag interval) RETURNS record
 *
 * How far the cursor after (NULL: the start of the log) is behind, under the
 * active snapshot: events_behind, the events after it that es_read_all would
 * return now (below the era and horizon, as in es_read_all); events_held_back,
 * the committed events after it at or above the horizon (es_read_all returns
 * them once the older transactions holding the horizon back have ended);
 * lag, now() minus the recorded_at of the first event after it in log order,
 * readable or not ('0' when there is none, and never negative).  Each count
 * is an index range scan of events_log_idx: its cost grows with the events
 * counted, never with the size of the log.
 */
Datum
es_cursor_lag(PG_FUNCTION_ARGS)
{
	int32		era = -1;
	FullTransactionId tx = FullTransactionIdFromU64(0);
	int64		position = 0;
	int32		current_era;
	FullTransactionId horizon;
	Datum		cursor[3];
	Datum		values[5];
	Datum		out[3];
	bool		outnulls[3] = {false, false, false};
	int64		behind = 0;
	int64		held_back;
	TupleDesc	tupdesc;
	Interval   *lag = (Interval *) palloc0(sizeof(Interval));
	int			rc;

	/* the lag is measured against this cluster's horizon, as es_read_all reads */
	EsCheckNotSubscriber(ES_LOG_READ_ALL);
	EsRefuseDistributed("es_cursor_lag()", "Read the global log of a distributed event store with es.es_read_log().");

	if (!PG_ARGISNULL(0))
	{
		Datum		d;

		EsParseCursor(PG_GETARG_HEAPTUPLEHEADER(0), &era, &d, &position);
		tx = DatumGetFullTransactionId(d);
	}
	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");
	tupdesc = BlessTupleDesc(tupdesc);

	cursor[0] = Int32GetDatum(era);
	cursor[1] = FullTransactionIdGetDatum(tx);
	cursor[2] = Int64GetDatum(position);

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");

	/* the era and horizon of the active snapshot, as es_read_all's */
	current_era = EsCurrentEra();
	horizon = EsLogHorizon(GetActiveSnapshot());

	if (era < current_era || (era == current_era && FullTransactionIdPrecedes(tx, horizon)))
	{
		/* readable now: after the cursor, below (era, horizon) */
		memcpy(values, cursor, sizeof(cursor));
		values[3] = Int32GetDatum(current_era);
		values[4] = FullTransactionIdGetDatum(horizon);
		behind = count_events(&lag_behind_plan, values);
		/* held back: from (era, horizon) on */
		values[0] = Int32GetDatum(current_era);
		values[1] = FullTransactionIdGetDatum(horizon);
		values[2] = Int64GetDatum(PG_INT64_MIN);
		held_back = count_events(&lag_after_plan, values);
	}
	else
		held_back = count_events(&lag_after_plan, cursor);	/* all held back */

	/* lag: since the first event after the cursor was appended */
	rc = SPI_execute_plan(EsGetPlan(&lag_next_plan), cursor, NULL, true, 1);
	if (rc != SPI_OK_SELECT)
		elog(ERROR, "could not read the global log: %s", SPI_result_code_string(rc));
	if (SPI_processed == 1)
	{
		bool		isnull;
		Datum		recorded = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
		Datum		since;

		since = DirectFunctionCall2(timestamp_mi,
									TimestampTzGetDatum(GetCurrentTransactionStartTimestamp()),
									recorded);
		if (DatumGetInt32(DirectFunctionCall2(interval_cmp, since, IntervalPGetDatum(lag))) > 0)
			memcpy(lag, DatumGetIntervalP(since), sizeof(Interval));
	}
	SPI_finish();

	out[0] = Int64GetDatum(behind);
	out[1] = Int64GetDatum(held_back);
	out[2] = IntervalPGetDatum(lag);
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(tupdesc, out, outnulls)));
}
