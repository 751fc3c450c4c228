/*-------------------------------------------------------------------------
 *
 * condition.c
 *	  Conditional appends: "fail if an event matching this query was
 *	  appended after that position" (the AppendCondition of the Dynamic
 *	  Consistency Boundary specification), without a table lock and without
 *	  SERIALIZABLE.
 *
 * Checking the condition with a query is not enough: two sessions that
 * check at the same time both find nothing, both append, both commit
 * (JasperFx/marten #4591).  Each must either see the other's events or make
 * the other wait until it has committed.  So appends take heavyweight locks
 * on keys derived from what they write and what their condition reads:
 *
 *	- every append takes a SHARE lock on a key per distinct tag and per
 *	  distinct event type of its batch ("writer keys");
 *	- a conditional append also takes an EXCLUSIVE lock per condition item:
 *	  on the key of the item's first tag (an event the item matches carries
 *	  every tag of the item, so its writer holds that key), or, for an item
 *	  without tags, on the key of each of its event types;
 *	- then it runs the condition's query with a new snapshot.
 *
 * An append whose events the condition matches either committed before the
 * EXCLUSIVE lock was granted -- a transaction's locks are released after its
 * commit became visible, so the new snapshot sees its events -- or waits
 * for the conditional append to end: then its events come after it.
 * Two conditional appends on the same key serialize, and the second sees
 * the first's events.  Appends with disjoint keys never wait for each other
 * (SHARE does not conflict with SHARE).
 *
 * A batch with more than ES_DCB_FINE_KEYS keys (a large tagged batch, an
 * import), or one that would take the transaction's writer keys past
 * ES_DCB_XACT_FINE_KEYS (a loop of appends in one transaction), would fill
 * the shared lock table; it takes SHARE locks on coarse buckets (a key's bucket is its hash modulo ES_DCB_BUCKETS) instead, and a
 * condition takes ROW EXCLUSIVE on the bucket of each of its keys besides the
 * EXCLUSIVE lock on the key: ROW EXCLUSIVE conflicts with SHARE, not with
 * itself, so conditions on different keys still do not wait for each other.
 * An append that needs one bucket in both modes (a large batch under a
 * condition on one of its own tags) takes it once in SHARE ROW EXCLUSIVE:
 * two such appends serialize instead of deadlocking.  Condition keys have
 * no coarse form: a transaction may hold ES_DCB_XACT_CONDITION_KEYS of them,
 * past that its conditional appends are refused (54000) rather than fill
 * the lock table shared by every session.
 * All locks of an append are taken in one order (buckets, then keys, by
 * number), before the stream row lock.  Keys are 64-bit hashes: a collision
 * costs a needless wait, never a missed conflict (the query decides).
 * A condition's cursor must be below the log horizon (checked before the
 * locks, EsCheckConditionCursor): only a read's cursor is a position.
 *
 * The locks are advisory locks of the database (pg_locks: locktype
 * advisory, objsubid ES_DCB_LOCK_KEY or ES_DCB_LOCK_BUCKET; the advisory
 * lock functions use objsubid 1 and 2), held to the end of the transaction
 * (or released with an aborted subtransaction, whose events are gone too).
 *
 * The transaction's own events never fail its condition: the global log read
 * (es_read_query) does not return a transaction's uncommitted events, so a
 * transaction that appends twice under one condition would otherwise always
 * conflict with itself (JasperFx/marten #5280).  The query runs as the caller:
 * row level security hides events from the condition as from any read.
 *
 * Memory: the caller's context; SPI is connected by the caller (es_append).
 *
 * src/condition.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/transam.h"
#include "access/xact.h"
#include "catalog/pg_type.h"
#include "common/hashfn.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "storage/lmgr.h"
#include "storage/lock.h"
#include "storage/proc.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/snapmgr.h"
#include "utils/xid8.h"

#include "es_ext.h"

/* locktag_field4 of es_ext's advisory locks (pg_locks.objsubid) */
#define ES_DCB_LOCK_KEY		101
#define ES_DCB_LOCK_BUCKET	102

/* hash seeds: a tag and an event type with the same text are different keys */
#define ES_DCB_SEED_TAG		0x7461670aU
#define ES_DCB_SEED_TYPE	0x7479700aU

/* One lock an append takes. */
typedef struct EsLockKey
{
	uint64		id;				/* the key's hash, or the bucket number */
	LOCKMODE	mode;
	bool		bucket;			/* a coarse bucket (else a key) */
} EsLockKey;

/* the transaction whose fine writer keys are counted, and their number */
static LocalTransactionId counted_lxid = InvalidLocalTransactionId;
static int	counted_keys = 0;
/* and the fine condition keys it took (no coarse form: refused past the budget) */
static int	counted_condition_keys = 0;

static int
lock_key_cmp(const void *a, const void *b)
{
	const EsLockKey *ka = (const EsLockKey *) a;
	const EsLockKey *kb = (const EsLockKey *) b;

	/* buckets first, then keys; by number; the stronger mode first */
	if (ka->bucket != kb->bucket)
		return ka->bucket ? -1 : 1;
	if (ka->id != kb->id)
		return ka->id < kb->id ? -1 : 1;
	return (ka->mode > kb->mode) ? -1 : (ka->mode < kb->mode);
}

static int
uint64_cmp(const void *a, const void *b)
{
	uint64		x = *(const uint64 *) a;
	uint64		y = *(const uint64 *) b;

	return (x > y) - (x < y);
}

static uint64
key_hash(text *t, uint32 seed)
{
	return DatumGetUInt64(hash_any_extended((const unsigned char *) VARDATA_ANY(t),
											VARSIZE_ANY_EXHDR(t), seed));
}

/* the elements of a text[] that has no nulls, in a palloc'd array */
static text **
text_elements(ArrayType *arr, int *n)
{
	Datum	   *elems;
	text	  **out;
	int			i;

	deconstruct_array(arr, TEXTOID, -1, false, TYPALIGN_INT, &elems, NULL, n);
	out = palloc(sizeof(text *) * Max(*n, 1));
	for (i = 0; i < *n; i++)
		out[i] = DatumGetTextPP(elems[i]);
	return out;
}

/* add the key of each element of arr (a text[] or NULL) to keys[] */
static void
add_keys(uint64 *keys, int *n, ArrayType *arr, uint32 seed)
{
	text	  **elems;
	int			count;
	int			i;

	if (arr == NULL)
		return;
	elems = text_elements(arr, &count);
	for (i = 0; i < count; i++)
		keys[(*n)++] = key_hash(elems[i], seed);
}

/* sort and remove duplicates; returns the new count */
static int
unique_keys(uint64 *keys, int n)
{
	int			i;
	int			m = 0;

	if (n == 0)
		return 0;
	qsort(keys, n, sizeof(uint64), uint64_cmp);
	for (i = 0; i < n; i++)
		if (m == 0 || keys[m - 1] != keys[i])
			keys[m++] = keys[i];
	return m;
}

static void
lock_tag(const EsLockKey *k, LOCKTAG *out)
{
	LOCKTAG		tag;

	if (k->bucket)
		SET_LOCKTAG_ADVISORY(tag, MyDatabaseId, (uint32) k->id, 0, ES_DCB_LOCK_BUCKET);
	else
		SET_LOCKTAG_ADVISORY(tag, MyDatabaseId, (uint32) (k->id >> 32), (uint32) k->id,
							 ES_DCB_LOCK_KEY);
	*out = tag;
}

static void
acquire(const EsLockKey *k)
{
	LOCKTAG		tag;

	lock_tag(k, &tag);
	(void) LockAcquire(&tag, k->mode, false, false);
}

/* the number of keys[0..n-1] this transaction does not hold EXCLUSIVE yet */
static int
new_condition_keys(const uint64 *keys, int n)
{
	int			fresh = 0;
	int			i;

	for (i = 0; i < n; i++)
	{
		EsLockKey	k = {keys[i], ExclusiveLock, false};
		LOCKTAG		tag;

		lock_tag(&k, &tag);
		if (!LockHeldByMe(&tag, ExclusiveLock))
			fresh++;
	}
	return fresh;
}

/* take the locks, in one order: every append orders them the same way */
static void
acquire_all(EsLockKey *locks, int n)
{
	int			i = 0;

	qsort(locks, n, sizeof(EsLockKey), lock_key_cmp);
	while (i < n)
	{
		EsLockKey	k = locks[i];
		bool		share = false;
		bool		row_exclusive = false;

		/*
		 * One lock per object, in one mode.  A key: the strongest mode
		 * (EXCLUSIVE covers SHARE).  A bucket that the append needs in SHARE
		 * (its coarse writer keys) and in ROW EXCLUSIVE (its condition):
		 * SHARE ROW EXCLUSIVE, which conflicts with both.  Taking the two
		 * modes one after the other deadlocks two such appends on the same
		 * bucket: each holds SHARE and waits for ROW EXCLUSIVE, which the
		 * other's SHARE blocks.
		 */
		for (; i < n && locks[i].bucket == k.bucket && locks[i].id == k.id; i++)
		{
			share |= (locks[i].mode == ShareLock);
			row_exclusive |= (locks[i].mode == RowExclusiveLock);
		}
		if (k.bucket && share && row_exclusive)
			k.mode = ShareRowExclusiveLock;
		CHECK_FOR_INTERRUPTS();
		acquire(&k);
	}
}

/*
 * EsLockWrite
 *		Take the locks of an append of events[0..n-1] (SHARE on its writer
 *		keys) and of its condition (NULL: none), before the stream row lock.
 */
void
EsLockWrite(const EsEvent *events, int n, const EsQuery *condition)
{
	uint64	   *wkeys;
	int			nw = 0;
	int			nwmax = 0;
	uint64	   *ckeys = NULL;
	int			nc = 0;
	EsLockKey  *locks;
	int			nlocks = 0;
	bool		coarse;
	int			fresh;
	int			i;

	for (i = 0; i < n; i++)
		nwmax += 1 + (events[i].tags ? ArrayGetNItems(ARR_NDIM(events[i].tags),
													   ARR_DIMS(events[i].tags)) : 0);
	wkeys = palloc(sizeof(uint64) * nwmax);
	for (i = 0; i < n; i++)
	{
		wkeys[nw++] = key_hash(events[i].type, ES_DCB_SEED_TYPE);
		add_keys(wkeys, &nw, events[i].tags, ES_DCB_SEED_TAG);
	}
	nw = unique_keys(wkeys, nw);

	if (condition != NULL)
	{
		ckeys = palloc(sizeof(uint64) * condition->nitems * ES_MAX_QUERY_TYPES);
		for (i = 0; i < condition->nitems; i++)
		{
			const EsQueryItem *item = &condition->items[i];

			if (item->tags != NULL)
			{
				int			count;
				text	  **tags = text_elements(item->tags, &count);

				ckeys[nc++] = key_hash(tags[0], ES_DCB_SEED_TAG);
			}
			else
				add_keys(ckeys, &nc, item->types, ES_DCB_SEED_TYPE);
		}
		nc = unique_keys(ckeys, nc);
	}

	/* fine writer keys while the append and its transaction stay within budget */
	if (MyProc->lxid != counted_lxid)
	{
		counted_lxid = MyProc->lxid;
		counted_keys = 0;
		counted_condition_keys = 0;
	}

	/*
	 * A condition's keys have no coarse form (a fine writer holds only its
	 * keys), so each is a lock in the shared lock table until the end of the
	 * transaction: past the budget, refuse the append rather than fill the
	 * table (which would stop every session of the cluster, new connections
	 * included, until this transaction ends).
	 */
	fresh = new_condition_keys(ckeys, nc);
	if (counted_condition_keys + fresh > ES_DCB_XACT_CONDITION_KEYS)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("append condition locks too many keys in this transaction"),
				 errdetail("The condition locks %d new keys (one per item with tags, one per event type of an item without tags) and the transaction's earlier conditions %d; the limit is %d per transaction.",
						   fresh, counted_condition_keys, ES_DCB_XACT_CONDITION_KEYS),
				 errhint("Commit more often, or name tags rather than many event types in the condition.")));
	counted_condition_keys += fresh;
	coarse = nw > ES_DCB_FINE_KEYS || counted_keys + nw > ES_DCB_XACT_FINE_KEYS;
	if (!coarse)
		counted_keys += nw;

	locks = palloc(sizeof(EsLockKey) * (nw + 2 * nc));
	for (i = 0; i < nw; i++)
	{

		locks[nlocks].bucket = coarse;
		locks[nlocks].id = coarse ? wkeys[i] % ES_DCB_BUCKETS : wkeys[i];
		locks[nlocks].mode = ShareLock;
		nlocks++;
	}
	for (i = 0; i < nc; i++)
	{
		locks[nlocks].bucket = false;
		locks[nlocks].id = ckeys[i];
		locks[nlocks].mode = ExclusiveLock;
		nlocks++;
		locks[nlocks].bucket = true;
		locks[nlocks].id = ckeys[i] % ES_DCB_BUCKETS;
		locks[nlocks].mode = RowExclusiveLock;
		nlocks++;
	}
	acquire_all(locks, nlocks);

	pfree(locks);
	pfree(wkeys);
	if (ckeys)
		pfree(ckeys);
}

/*
 * EsLockAllForImport
 *		es_import writes any number of keys: SHARE on every bucket, so that
 *		every conditional append waits for the import to end.
 */
void
EsLockAllForImport(void)
{
	EsLockKey	locks[ES_DCB_BUCKETS];
	int			i;

	for (i = 0; i < ES_DCB_BUCKETS; i++)
	{
		locks[i].bucket = true;
		locks[i].id = i;
		locks[i].mode = ShareLock;
	}
	acquire_all(locks, ES_DCB_BUCKETS);
}

/*
 * The condition's query, per item shape: with tags ($1), with types ($2),
 * after a cursor ($3, $4, $5); at most $6 rows.  Every plan takes the same
 * arguments.  No ORDER BY: any matching event decides.
 *
 * Two forms of the query after a cursor.  For a recent cursor, the log
 * index from the cursor on finds the few events appended since.  For an old
 * one (the last event of a quiet tag, long ago), that range is most of the
 * log: the item's own index (tags, types) must drive, and the cursor only
 * filters.  The planner cannot tell them apart (tx_id values newer than the
 * last ANALYZE look like no row at all), so check_item chooses: the fenced
 * form (OFFSET 0 keeps the cursor out of the scan) when more than
 * ES_DCB_RECENT_XIDS transaction ids were assigned since the cursor's.
 *
 * An item with tags, without a cursor or with an old one, runs a generic
 * plan (planned once): the GIN index of the tags drives it whatever the
 * values, and planning it again at every append cost more than running it.
 * After a recent cursor the custom plan walks the log index from the cursor
 * (a hot tag's whole history is no option), and an item of types only keeps
 * custom plans too: its generic plan is a sequential scan (the selectivity
 * of "event_type = ANY" is unknown without the values).
 */
#define CHECK_COLUMNS \
	"e.tx_id, e.stream_id, e.version, e.event_type, e.era, e.global_position"
#define CHECK_SELECT \
	"SELECT e.xmin, " CHECK_COLUMNS "  FROM es.events AS e WHERE true"
#define CHECK_FENCE_OPEN \
	"SELECT e.x, " CHECK_COLUMNS \
	"  FROM (SELECT e.xmin AS x, " CHECK_COLUMNS "  FROM es.events AS e WHERE true"
#define CHECK_FENCE_CLOSE	" OFFSET 0) AS e WHERE true"
#define CHECK_TAGS	" AND e.tags OPERATOR(pg_catalog.@>) $1"
#define CHECK_TYPES	" AND e.event_type OPERATOR(pg_catalog.=) ANY ($2)"
/* era by era: the planner estimates a row comparison by its first column (read.c) */
#define CHECK_AFTER \
	" AND (e.era OPERATOR(pg_catalog.>) $3" \
	"      OR (e.era OPERATOR(pg_catalog.=) $3" \
	"          AND (e.tx_id, e.global_position) OPERATOR(pg_catalog.>) ($4, $5)))"
#define CHECK_LIMIT	" LIMIT $6"
#define CHECK_ARGS	6, {TEXTARRAYOID, TEXTARRAYOID, INT4OID, XID8OID, INT8OID, INT8OID}

/*
 * indexed by (tags given) + 2 * (types given) + 4 * (after given) + 8 *
 * (an old cursor: the fenced form); unused: 0, 4, 8-12
 */
static EsPlan check_plans[16] = {
	{NULL, NULL, CHECK_ARGS},
	{NULL, CHECK_SELECT CHECK_TAGS CHECK_LIMIT, CHECK_ARGS},
	{NULL, CHECK_SELECT CHECK_TYPES CHECK_LIMIT, CHECK_ARGS},
	{NULL, CHECK_SELECT CHECK_TAGS CHECK_TYPES CHECK_LIMIT, CHECK_ARGS},
	{NULL, NULL, CHECK_ARGS},
	{NULL, CHECK_SELECT CHECK_TAGS CHECK_AFTER CHECK_LIMIT, CHECK_ARGS},
	{NULL, CHECK_SELECT CHECK_TYPES CHECK_AFTER CHECK_LIMIT, CHECK_ARGS},
	{NULL, CHECK_SELECT CHECK_TAGS CHECK_TYPES CHECK_AFTER CHECK_LIMIT, CHECK_ARGS},
	{NULL, NULL, CHECK_ARGS},
	{NULL, NULL, CHECK_ARGS},
	{NULL, NULL, CHECK_ARGS},
	{NULL, NULL, CHECK_ARGS},
	{NULL, NULL, CHECK_ARGS},
	{NULL, CHECK_FENCE_OPEN CHECK_TAGS CHECK_FENCE_CLOSE CHECK_AFTER CHECK_LIMIT, CHECK_ARGS},
	{NULL, CHECK_FENCE_OPEN CHECK_TYPES CHECK_FENCE_CLOSE CHECK_AFTER CHECK_LIMIT, CHECK_ARGS},
	{NULL, CHECK_FENCE_OPEN CHECK_TAGS CHECK_TYPES CHECK_FENCE_CLOSE CHECK_AFTER CHECK_LIMIT,
	CHECK_ARGS},
};

/*
 * old_cursor
 *		Were more than ES_DCB_RECENT_XIDS transaction ids assigned since the
 *		cursor's (or is it from an older era)?  Every append takes one, so
 *		this bounds from below the events appended since: no I/O, no lock.
 */
static bool
old_cursor(int32 era, Datum tx_id, int32 current_era)
{
	uint64		next = U64FromFullTransactionId(ReadNextFullTransactionId());
	uint64		tx = U64FromFullTransactionId(DatumGetFullTransactionId(tx_id));

	return era < current_era || tx + ES_DCB_RECENT_XIDS < next;
}

static char *
cursor_string(int32 era, Datum tx_id, int64 position)
{
	return psprintf("(%d,%llu,%lld)", era,
					(unsigned long long) U64FromFullTransactionId(DatumGetFullTransactionId(tx_id)),
					(long long) position);
}

/*
 * condition_error
 *		Raise the condition's conflict: SQLSTATE 40001 with constraint
 *		es_append_condition.  row is the matching event (NULL: a
 *		serialization failure of SERIALIZABLE isolation during the check).
 */
static void
condition_error(const char *stream, int item, bool have_after, int32 era, Datum tx_id,
				int64 position, HeapTuple row, TupleDesc desc)
{
	char	   *after = have_after ? cursor_string(era, tx_id, position) : NULL;

	EsStatsAppendFailed(stream, strlen(stream), true);

	if (row == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_T_R_SERIALIZATION_FAILURE),
				 errmsg("append condition failed for stream \"%s\"", stream),
				 errdetail("Serializable isolation found a read/write dependency with a concurrent transaction while item %d of the condition was checked.",
						   item),
				 errhint("Read the events matching the condition's query again, decide again and retry."),
				 err_generic_string(PG_DIAG_SCHEMA_NAME, "es"),
				 err_generic_string(PG_DIAG_TABLE_NAME, "events"),
				 err_generic_string(PG_DIAG_CONSTRAINT_NAME, ES_APPEND_CONDITION_CONSTRAINT)));
	else
	{
		bool		isnull;
		char	   *found_stream = TextDatumGetCString(SPI_getbinval(row, desc, 3, &isnull));
		int64		found_version = DatumGetInt64(SPI_getbinval(row, desc, 4, &isnull));
		char	   *found_type = TextDatumGetCString(SPI_getbinval(row, desc, 5, &isnull));
		char	   *found = cursor_string(DatumGetInt32(SPI_getbinval(row, desc, 6, &isnull)),
										  SPI_getbinval(row, desc, 2, &isnull),
										  DatumGetInt64(SPI_getbinval(row, desc, 7, &isnull)));
		FullTransactionId found_tx = DatumGetFullTransactionId(SPI_getbinval(row, desc, 2, &isnull));
		FullTransactionId next = ReadNextFullTransactionId();
		TransactionId xmin = GetLatestSnapshot()->xmin;
		FullTransactionId horizon;
		bool		held_back;

		/*
		 * An event at or above the oldest running transaction is held back
		 * from every read (gap safety) although it is committed: rereading
		 * cannot show it until that transaction ends, so say so.
		 */
		horizon = FullTransactionIdFromU64(U64FromFullTransactionId(next) -
										   (uint32) (XidFromFullTransactionId(next) - xmin));
		held_back = DatumGetInt32(SPI_getbinval(row, desc, 6, &isnull)) == EsCurrentEra() &&
			!FullTransactionIdPrecedes(found_tx, horizon);

		ereport(ERROR,
				(errcode(ERRCODE_T_R_SERIALIZATION_FAILURE),
				 errmsg("append condition failed for stream \"%s\"", stream),
				 have_after ?
				 errdetail("Event " INT64_FORMAT " of stream \"%s\" (type \"%s\", log cursor %s) matches item %d of the condition and was appended after %s.",
						   found_version, found_stream, found_type, found, item, after) :
				 errdetail("Event " INT64_FORMAT " of stream \"%s\" (type \"%s\", log cursor %s) matches item %d of the condition, which allows no matching event.",
						   found_version, found_stream, found_type, found, item),
				 held_back ?
				 errhint("Reads do not return that event yet: a transaction older than it (log horizon " UINT64_FORMAT ") is still running; read, decide and retry after it ends.",
						 U64FromFullTransactionId(horizon)) :
				 errhint("Read the events matching the condition's query again, decide again and retry."),
				 err_generic_string(PG_DIAG_SCHEMA_NAME, "es"),
				 err_generic_string(PG_DIAG_TABLE_NAME, "events"),
				 err_generic_string(PG_DIAG_CONSTRAINT_NAME, ES_APPEND_CONDITION_CONSTRAINT)));
	}
}

/*
 * own_event
 *		Did this transaction (or one of its subtransactions) write the event
 *		of row?  Its xmin is one of ours, and its tx_id is not below our
 *		top-level id (a frozen row of long ago whose raw xmin happens to
 *		equal one of ours has an old tx_id).
 */
static bool
own_event(HeapTuple row, TupleDesc desc, FullTransactionId top)
{
	bool		isnull;
	TransactionId xmin = DatumGetTransactionId(SPI_getbinval(row, desc, 1, &isnull));
	FullTransactionId tx = DatumGetFullTransactionId(SPI_getbinval(row, desc, 2, &isnull));

	return FullTransactionIdIsValid(top) &&
		TransactionIdIsCurrentTransactionId(xmin) &&
		!FullTransactionIdPrecedes(tx, top);
}

/*
 * check_item
 *		Run the query of one item with snapshot snap (old: the cursor is old,
 *		see old_cursor).  Returns the first matching event another
 *		transaction wrote (in SPI_tuptable), or NULL.
 */
static HeapTuple
check_item(const EsQueryItem *item, bool have_after, bool old, Datum *values, char *nulls,
		   Snapshot snap)
{
	int			shape = (item->tags ? 1 : 0) + (item->types ? 2 : 0) +
		(have_after ? 4 : 0) + (have_after && old ? 8 : 0);
	bool		generic = item->tags != NULL && (!have_after || old);
	FullTransactionId top = GetTopFullTransactionIdIfAny();
	int			rc;
	uint64		i;

	values[0] = item->tags ? PointerGetDatum(item->tags) : (Datum) 0;
	nulls[0] = item->tags ? ' ' : 'n';
	values[1] = item->types ? PointerGetDatum(item->types) : (Datum) 0;
	nulls[1] = item->types ? ' ' : 'n';

	/* a few rows: more only when the transaction's own events fill them */
	values[5] = Int64GetDatum(ES_DCB_CHECK_FETCH);
	nulls[5] = ' ';
	for (;;)
	{
		rc = SPI_execute_snapshot(generic ? EsGetGenericPlan(&check_plans[shape]) :
								  EsGetPlan(&check_plans[shape]), values, nulls,
								  snap, InvalidSnapshot, true, false, 0);
		if (rc != SPI_OK_SELECT)
			elog(ERROR, "could not check the append condition: %s", SPI_result_code_string(rc));
		for (i = 0; i < SPI_processed; i++)
			if (!own_event(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, top))
				return SPI_tuptable->vals[i];
		if (SPI_processed < ES_DCB_CHECK_FETCH || nulls[5] == 'n')
			return NULL;
		/* every row was ours: read them all */
		SPI_freetuptable(SPI_tuptable);
		nulls[5] = 'n';
	}
}

/*
 * EsCheckConditionCursor
 *		Refuse a condition's cursor (era, tx_id, position) that no read can
 *		have returned: past the current era, or in it with a transaction id
 *		not below the log horizon of a new snapshot (or this transaction's own
 *		id).  A read returns only events below its horizon, and every
 *		transaction older than the horizon has ended, so a read's cursor
 *		always passes.  A cursor above a running transaction (es_append's
 *		token while an older writer is still running, a made-up cursor) would
 *		hide that writer's events: they come before the cursor in log order
 *		although they commit after it.  Call before EsLockWrite: once its
 *		locks waited for such a writer, the writer has ended and the check
 *		could no longer tell.  Inside SPI (for the era).  Returns the
 *		current era, for EsCheckCondition (reading it costs a statement).
 */
int32
EsCheckConditionCursor(int32 era, Datum tx_id, int64 position)
{
	int32		current = EsCurrentEra();
	FullTransactionId tx = DatumGetFullTransactionId(tx_id);
	FullTransactionId horizon;

	if (era > current ||
		(era == current &&
		 !FullTransactionIdPrecedes(tx, ReadNextFullTransactionId())))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("log cursor %s is beyond the end of the log",
						cursor_string(era, tx_id, position)),
				 errhint("Pass the log_cursor of the last row es_read_query returned, or NULL when it returned none.")));

	horizon = EsLogHorizon(GetLatestSnapshot());
	if (era == current && !FullTransactionIdPrecedes(tx, horizon))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("log cursor %s is not below the log horizon",
						cursor_string(era, tx_id, position)),
				 errdetail("A transaction older than the cursor is still running (log horizon " UINT64_FORMAT "): its events would come before the cursor although they commit after it.",
						   U64FromFullTransactionId(horizon)),
				 errhint("Pass the log_cursor of the last row es_read_query returned, or NULL when it returned none; es_append's token is not a read position.")));
	return current;
}

/*
 * EsCheckCondition
 *		Under the locks of EsLockWrite: raise the condition's conflict if an
 *		event matching one of its items, written by another transaction, is
 *		committed after the cursor (era, tx_id, position) -- or at all when
 *		have_after is false.  The query runs with a new snapshot, at every
 *		isolation level: what committed before the locks were granted is the
 *		point, not what the transaction's snapshot saw.
 */
void
EsCheckCondition(const char *stream, const EsQuery *condition,
				 bool have_after, int32 era, Datum tx_id, int64 position, int32 current_era)
{
	Datum		values[6];
	char		nulls[6];
	Snapshot	snap;
	MemoryContext cxt = CurrentMemoryContext;
	bool		old = have_after && old_cursor(era, tx_id, current_era);
	int			i;

	values[2] = Int32GetDatum(era);
	values[3] = tx_id;
	values[4] = Int64GetDatum(position);
	memset(nulls, ' ', sizeof(nulls));

	snap = GetLatestSnapshot();
	for (i = 0; i < condition->nitems; i++)
	{
		HeapTuple	row = NULL;

		CHECK_FOR_INTERRUPTS();
		PG_TRY();
		{
			row = check_item(&condition->items[i], have_after, old, values, nulls, snap);
		}
		PG_CATCH();
		{
			ErrorData  *edata;

			/* SERIALIZABLE: a read/write dependency found by the check's reads */
			MemoryContextSwitchTo(cxt);
			edata = CopyErrorData();
			if (edata->sqlerrcode != ERRCODE_T_R_SERIALIZATION_FAILURE ||
				edata->constraint_name != NULL)
				PG_RE_THROW();
			FlushErrorState();
			condition_error(stream, i + 1, have_after, era, tx_id, position, NULL, NULL);
		}
		PG_END_TRY();
		if (row != NULL)
			condition_error(stream, i + 1, have_after, era, tx_id, position,
							row, SPI_tuptable->tupdesc);
		snap = GetLatestSnapshot();
	}
}
