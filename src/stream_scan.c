/*-------------------------------------------------------------------------
 *
 * stream_scan.c
 *	  The events of one stream, in version order (forward or backward),
 *	  within a version range and up to a count, under the caller's active
 *	  snapshot and privileges: what es_read_stream (read.c) and es_fold
 *	  (fold.c) read.
 *
 * Two ways to read, the same rows either way:
 *	- a direct scan of the primary key index (stream_id, version) when the
 *	  caller holds SELECT on es.events, no row level security applies to
 *	  it (or only the tenancy policies, which let all of a stream's rows
 *	  through or none: tenant.c decides once for the stream), the table is a plain table without children, and Citus is not
 *	  installed (under Citus the local table is an empty shell; only the
 *	  executor sees the shards).  No executor, no plan, no copy of a row
 *	  before the caller sees it: the cheap path of a stream read.
 *	- otherwise an SPI cursor over a saved plan, opened in read-only mode,
 *	  which applies the caller's privileges (column privileges, an error
 *	  without SELECT) and policies and uses the same active snapshot.
 *
 * An archived stream's events are in es.archived_events (lifecycle.c): when
 * es.events holds no row of the stream in the range, the scan reads that
 * table, through SPI, as rows of es.events' type.  Only a read that finds
 * nothing in es.events pays for the second look, and only a lseek when the
 * archive never held a row.  When row level security
 * applies to es.events for the caller, the archive is read only if it has
 * row level security too.
 *
 * Locks: AccessShareLock on es.events and its primary key index, held to
 * the end of the transaction as the executor would.  Memory: the scan's
 * state is allocated in the memory context current at EsStreamScanBegin and
 * must stay there until EsStreamScanEnd; a row returned by EsStreamScanNext
 * is valid until the next call.  Must be used inside SPI_connect.
 *
 * src/stream_scan.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/stratnum.h"
#include "access/table.h"
#include "access/tableam.h"
#include "catalog/pg_am.h"
#include "catalog/pg_class.h"
#include "catalog/pg_type.h"
#include "commands/extension.h"
#include "executor/executor.h"
#include "executor/spi.h"
#include "executor/tuptable.h"
#include "miscadmin.h"
#include "storage/bufmgr.h"
#include "utils/acl.h"
#include "utils/fmgroids.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/rls.h"
#include "utils/snapmgr.h"

#include "es_ext.h"

/* versions $2 .. $3 of stream $1, at most $4 of them (NULL: all) */
static EsPlan forward_plan = {
	NULL,
	"SELECT e FROM es.events AS e"
	" WHERE e.stream_id OPERATOR(pg_catalog.=) $1"
	"   AND e.version OPERATOR(pg_catalog.>=) $2"
	"   AND e.version OPERATOR(pg_catalog.<=) $3"
	" ORDER BY e.version"
	" LIMIT $4",
	4, {TEXTOID, INT8OID, INT8OID, INT8OID}
};

static EsPlan backward_plan = {
	NULL,
	"SELECT e FROM es.events AS e"
	" WHERE e.stream_id OPERATOR(pg_catalog.=) $1"
	"   AND e.version OPERATOR(pg_catalog.>=) $2"
	"   AND e.version OPERATOR(pg_catalog.<=) $3"
	" ORDER BY e.version DESC"
	" LIMIT $4",
	4, {TEXTOID, INT8OID, INT8OID, INT8OID}
};

/* the same reads of es.archived_events, as es.events rows */
#define ARCHIVED_SELECT \
	"SELECT pg_catalog.jsonb_populate_record(NULL::es.events, pg_catalog.to_jsonb(a))" \
	"  FROM es.archived_events AS a" \
	" WHERE a.stream_id OPERATOR(pg_catalog.=) $1" \
	"   AND a.version OPERATOR(pg_catalog.>=) $2" \
	"   AND a.version OPERATOR(pg_catalog.<=) $3"

static EsPlan archived_forward_plan = {
	NULL, ARCHIVED_SELECT " ORDER BY a.version LIMIT $4",
	4, {TEXTOID, INT8OID, INT8OID, INT8OID}
};

static EsPlan archived_backward_plan = {
	NULL, ARCHIVED_SELECT " ORDER BY a.version DESC LIMIT $4",
	4, {TEXTOID, INT8OID, INT8OID, INT8OID}
};

/*
 * open_cursor
 *		Open the SPI cursor of the scan over plan (read-only).
 */
static void
open_cursor(EsStreamScan *ss, EsPlan *plan)
{
	Datum		args[4];
	char		nulls[4] = {' ', ' ', ' ', ' '};

	args[0] = PointerGetDatum(ss->stream);
	args[1] = Int64GetDatum(ss->first);
	args[2] = Int64GetDatum(ss->last);
	args[3] = Int64GetDatum(ss->max_count);
	if (ss->max_count < 0)
		nulls[3] = 'n';			/* LIMIT NULL: all */
	ss->portal = SPI_cursor_open(NULL, EsGetPlan(plan), args, nulls, true);
}

/*
 * direct_index
 *		The primary key index of es.events, opened with AccessShareLock, if a
 *		direct scan may read the stream (see the file header); otherwise NULL.
 */
static Relation
direct_index(Relation heap, bool *tenancy)
{
	Oid			relid = RelationGetRelid(heap);
	Oid			indexoid;
	Relation	index;
	TupleDesc	desc = RelationGetDescr(heap);

	if (heap->rd_rel->relkind != RELKIND_RELATION || heap->rd_rel->relhassubclass)
		return NULL;
	if (pg_class_aclcheck(relid, GetUserId(), ACL_SELECT) != ACLCHECK_OK)
		return NULL;
	/* tenancy alone: every row of the stream or none (tenant.c) */
	*tenancy = false;
	if (check_enable_rls(relid, InvalidOid, true) == RLS_ENABLED)
	{
		if (!EsTenantPoliciesOnly(heap))
			return NULL;
		*tenancy = true;
	}
	/* under Citus the table is a shell (citus.c) */
	if (EsCitusPresent())
		return NULL;
	indexoid = RelationGetPrimaryKeyIndex(heap);
	if (!OidIsValid(indexoid))
		return NULL;
	index = index_open(indexoid, AccessShareLock);
	if (index->rd_rel->relam == BTREE_AM_OID &&
		index->rd_index->indnkeyatts >= 2 &&
		index->rd_index->indkey.values[0] > 0 &&
		index->rd_index->indkey.values[1] > 0 &&
		strcmp(NameStr(TupleDescAttr(desc, index->rd_index->indkey.values[0] - 1)->attname),
			   "stream_id") == 0 &&
		strcmp(NameStr(TupleDescAttr(desc, index->rd_index->indkey.values[1] - 1)->attname),
			   "version") == 0)
		return index;
	index_close(index, AccessShareLock);
	return NULL;
}

/*
 * EsStreamScanBegin
 *		Start reading the events of stream with first <= version <= last, in
 *		ascending version order (descending when backward), at most
 *		max_count of them (-1: all).  evdesc is the descriptor of es.events'
 *		row type: EsStreamScanNext deforms rows into its columns.  Must be
 *		called inside SPI_connect; allocates in the current memory context.
 */
void
EsStreamScanBegin(EsStreamScan *ss, TupleDesc evdesc, text *stream,
				  int64 first, int64 last, bool backward, int64 max_count)
{
	bool		tenancy;

	memset(ss, 0, sizeof(EsStreamScan));
	ss->evdesc = evdesc;
	ss->backward = backward;
	ss->remaining = max_count;
	ss->stream = stream;
	ss->first = first;
	ss->last = last;
	ss->max_count = max_count;
	if (max_count == 0 || first > last)
	{
		ss->done = true;
		return;
	}

	ss->heap = table_open(EsRelationOid("events"), AccessShareLock);
	ss->index = direct_index(ss->heap, &tenancy);
	if (ss->index != NULL && tenancy && !EsTenantOwnsStream(PointerGetDatum(stream)))
	{
		/* another tenant's stream: the policy would let no row through */
		index_close(ss->index, NoLock);
		table_close(ss->heap, NoLock);
		ss->index = NULL;
		ss->heap = NULL;
		ss->done = true;
		return;
	}
	if (ss->index != NULL)
	{
		int			nkeys = 0;

		ss->direct = true;

		ss->snapshot = RegisterSnapshot(GetActiveSnapshot());
		ScanKeyEntryInitialize(&ss->keys[nkeys++], 0, 1, BTEqualStrategyNumber, InvalidOid,
							   ss->index->rd_indcollation[0], F_TEXTEQ,
							   PointerGetDatum(stream));

		/*
		 * Only the bounds that can exclude something: btree checks every
		 * key against every index tuple it reads.
		 */
		if (first > PG_INT64_MIN)
			ScanKeyEntryInitialize(&ss->keys[nkeys++], 0, 2, BTGreaterEqualStrategyNumber,
								   InvalidOid, InvalidOid, F_INT8GE, Int64GetDatum(first));
		if (last < PG_INT64_MAX)
			ScanKeyEntryInitialize(&ss->keys[nkeys++], 0, 2, BTLessEqualStrategyNumber,
								   InvalidOid, InvalidOid, F_INT8LE, Int64GetDatum(last));
		ss->scan = index_beginscan(ss->heap, ss->index, ss->snapshot, nkeys, 0);
		index_rescan(ss->scan, ss->keys, nkeys, NULL, 0);
		ss->slot = table_slot_create(ss->heap, NULL);
	}
	else
	{
		/* only SPI reads the table; it takes its own lock */
		table_close(ss->heap, AccessShareLock);
		ss->heap = NULL;
		open_cursor(ss, backward ? &backward_plan : &forward_plan);
	}
}

/*
 * close_scan
 *		Release the direct index scan or the cursor of ss (the locks stay
 *		until the end of the transaction).
 */
static void
close_scan(EsStreamScan *ss)
{
	if (ss->direct)
	{
		ExecDropSingleTupleTableSlot(ss->slot);
		index_endscan(ss->scan);
		UnregisterSnapshot(ss->snapshot);
		index_close(ss->index, NoLock);
		table_close(ss->heap, NoLock);
	}
	else if (ss->portal != NULL)
	{
		if (ss->tuptable != NULL)
			SPI_freetuptable(ss->tuptable);
		SPI_cursor_close(ss->portal);
	}
}

/*
 * switch_to_archived
 *		es.events had no row: close its scan and read es.archived_events.
 */
static void
switch_to_archived(EsStreamScan *ss)
{
	close_scan(ss);
	ss->direct = false;
	ss->heap = NULL;
	ss->portal = NULL;
	ss->tuptable = NULL;
	ss->ntuples = 0;
	ss->next = 0;
	ss->exhausted = false;
	ss->done = false;
	ss->archived = true;
	open_cursor(ss, ss->backward ? &archived_backward_plan : &archived_forward_plan);
}

static bool next_row(EsStreamScan *ss);

/*
 * archive_readable
 *		May this read look into es.archived_events, and is there anything
 *		to find?  Not when the table has no block at all, and not when row level
 *		security applies to es.events for the current user but not to
 *		es.archived_events: the policies of the events must not be bypassed
 *		by archiving them (README, "Archive": give es.archived_events the
 *		same policies).
 */
static bool
archive_readable(void)
{
	Oid			archived = get_relname_relid("archived_events", EsSchemaOid());
	Relation	rel;
	bool		empty;

	/* a 0.1.0 schema (before ALTER EXTENSION UPDATE) has no archive */
	if (!OidIsValid(archived))
		return false;
	/* a table that never held a row has no block: no query (the usual case) */
	rel = table_open(archived, AccessShareLock);
	empty = RelationGetNumberOfBlocks(rel) == 0;
	table_close(rel, NoLock);
	if (empty)
		return false;
	return check_enable_rls(EsRelationOid("events"), InvalidOid, true) != RLS_ENABLED ||
		check_enable_rls(archived, InvalidOid, true) == RLS_ENABLED;
}

/*
 * EsStreamScanNext
 *		Advance to the next event; false at the end.  The event stays the
 *		current one (EsStreamScanTuple, EsStreamScanValues, EsStreamScanRow)
 *		until the next call.
 */
bool
EsStreamScanNext(EsStreamScan *ss)
{
	if (!next_row(ss))
	{
		if (ss->found || ss->archived || ss->remaining == 0 ||
			(ss->portal == NULL && !ss->direct) || !archive_readable())
			return false;
		switch_to_archived(ss);
		if (!next_row(ss))
			return false;
	}
	ss->found = true;
	return true;
}

/*
 * next_row
 *		EsStreamScanNext within the table being read.
 */
static bool
next_row(EsStreamScan *ss)
{
	if (ss->done || ss->remaining == 0)
		return false;

	if (ss->direct)
	{
		if (!index_getnext_slot(ss->scan,
								ss->backward ? BackwardScanDirection : ForwardScanDirection,
								ss->slot))
		{
			ss->done = true;
			return false;
		}
	}
	else
	{
		bool		isnull;

		if (ss->next >= ss->ntuples)
		{
			if (ss->tuptable != NULL)
				SPI_freetuptable(ss->tuptable);
			ss->tuptable = NULL;
			if (ss->exhausted)
			{
				ss->done = true;
				return false;
			}
			SPI_cursor_fetch(ss->portal, true, ES_FETCH_BATCH);
			ss->ntuples = SPI_processed;
			ss->tuptable = SPI_tuptable;
			ss->next = 0;
			if (ss->ntuples < ES_FETCH_BATCH)
				ss->exhausted = true;
			if (ss->ntuples == 0)
			{
				ss->done = true;
				return false;
			}
		}
		ss->row = DatumGetHeapTupleHeader(SPI_getbinval(ss->tuptable->vals[ss->next],
														ss->tuptable->tupdesc, 1, &isnull));
		ss->next++;
		ss->rowtuple.t_len = HeapTupleHeaderGetDatumLength(ss->row);
		ItemPointerSetInvalid(&ss->rowtuple.t_self);
		ss->rowtuple.t_tableOid = InvalidOid;
		ss->rowtuple.t_data = ss->row;
	}
	if (ss->remaining > 0)
		ss->remaining--;
	return true;
}

/*
 * EsStreamScanTuple
 *		The current event as it is stored, not copied: on the direct path the
 *		heap tuple in its (pinned) buffer, which may have fewer attributes
 *		than evdesc (columns added later) and TOAST pointers; on the SPI path
 *		the whole row, of evdesc's row type, with no external value.
 */
HeapTuple
EsStreamScanTuple(EsStreamScan *ss)
{
	if (ss->direct)
		return ExecFetchSlotHeapTuple(ss->slot, false, NULL);
	return &ss->rowtuple;
}

/*
 * EsStreamScanValues
 *		The current event deformed into values/nulls (evdesc's columns, every
 *		one filled, with the table's default for a column added after the
 *		row was stored).  The values point into the current row: valid until
 *		the next EsStreamScanNext.  On the direct path a varlena value may be
 *		a TOAST pointer (compressed or external), as the table stores it.
 */
void
EsStreamScanValues(EsStreamScan *ss, Datum *values, bool *nulls)
{
	if (ss->direct)
	{
		int			natts = ss->evdesc->natts;

		slot_getallattrs(ss->slot);
		memcpy(values, ss->slot->tts_values, sizeof(Datum) * natts);
		memcpy(nulls, ss->slot->tts_isnull, sizeof(bool) * natts);
	}
	else
		heap_deform_tuple(&ss->rowtuple, ss->evdesc, values, nulls);
}

/*
 * EsStreamScanRow
 *		The current event as an es.events composite datum, allocated in the
 *		current memory context (or pointing into the SPI batch).
 */
Datum
EsStreamScanRow(EsStreamScan *ss)
{
	if (ss->direct)
		return ExecFetchSlotHeapTupleDatum(ss->slot);
	return PointerGetDatum(ss->row);
}

/*
 * EsStreamScanEnd
 *		Release the scan (the locks stay until the end of the transaction).
 */
void
EsStreamScanEnd(EsStreamScan *ss)
{
	close_scan(ss);
}
