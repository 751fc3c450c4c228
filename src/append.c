/*-------------------------------------------------------------------------
 *
 * append.c
 *	  es_append: append a batch of events to one stream, atomically, with
 *	  optimistic concurrency and idempotent retries.
 *
 * An append is, in order:
 *
 *	1. Validate the arguments and parse the JSON batch entirely in C
 *	   (batch.c), before any statement runs, so bad input writes nothing.
 *	2. Under tenant isolation (tenant.c), refuse a stream of another tenant
 *	   before anything is looked up.  If the batch carries event ids, look
 *	   them up in the stream: a batch that was already appended returns its
 *	   original result and writes nothing; a batch that only partly
 *	   overlaps, or whose ids match but whose events differ from the stored
 *	   ones, is refused.  Once the stream row is locked (3), they are
 *	   looked up again: one committed
 *	   since by a concurrent append is a conflict (the event id index is not
 *	   unique; see check_ids_absent); one that row level security hides
 *	   from the caller is refused (that lookup reads the index directly, as
 *	   a unique index's check would).
 *	3. Advance the stream row with a single UPDATE (or INSERT ... ON CONFLICT
 *	   DO NOTHING for a new stream).  The row lock plus READ COMMITTED's
 *	   recheck turn a stale expectation into "zero rows": a clean conflict
 *	   reported as SQLSTATE 40001 with constraint es_expected_version.  The
 *	   row lock is held to the end of the transaction and serializes all
 *	   appends to the stream, so versions are contiguous.
 *	4. Insert the whole batch with one INSERT ... SELECT ... FROM unnest()
 *	   (or a one-row INSERT for a single event), tagged with the top-level
 *	   transaction id that orders the global log (see read.c).  The rows
 *	   the insert returns are user-influenced data, not an invariant: a
 *	   BEFORE INSERT row trigger (es_admin holds TRIGGER on es.events) could
 *	   rewrite any column.  So es_append refuses to run while such a trigger
 *	   would fire, and checks every returned row against what it wrote
 *	   before it uses one (no Assert-only checks).
 *	5. When outbox routes exist, write the routed events to the outbox in
 *	   the same transaction (outbox.c): one more statement, and none at all
 *	   when no route selects an event of the batch.
 *
 * The result carries the stream version, the global positions and a
 * consistency token: the log cursor of the batch's last event (of the stored
 * events for a replay), for es_wait_for (wait.c) -- no second round trip.
 *
 * All statements go through SPI saved plans written with qualified names, so
 * constraints, RLS and user triggers on es.events keep working and a hostile
 * search_path changes nothing.  The function is not SECURITY DEFINER: it runs
 * with the caller's privileges, and the guard trigger (guard.c) makes sure
 * the caller's INSERT/UPDATE privileges are usable only through here.  User
 * triggers on es.events run as the appender: AFTER triggers (projections)
 * are welcome, BEFORE INSERT row triggers are refused (see insert_events).
 *
 * Memory: the parsed batch and the result live in the caller's memory
 * context (the per-call context of the calling statement); SPI allocations
 * are released by SPI_finish.
 *
 * src/append.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/nbtree.h"
#include "access/tableam.h"
#include "access/table.h"
#include "access/xact.h"
#include "access/xlog.h"
#include "catalog/pg_am.h"
#include "catalog/pg_class.h"
#include "catalog/pg_index.h"
#include "catalog/pg_trigger.h"
#include "catalog/pg_type.h"
#include "commands/trigger.h"
#include "executor/executor.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/fmgroids.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"
#include "utils/syscache.h"
#include "utils/timestamp.h"
#include "utils/typcache.h"
#include "utils/uuid.h"
#include "utils/xid8.h"

#include "es_ext.h"

/*
 * True while es_append runs a statement on the stream row: a serialization
 * failure raised then (REPEATABLE READ / SERIALIZABLE: the row was changed
 * by a concurrent append) is reported as the expected-version conflict.
 * Serialization failures raised anywhere else pass through unchanged.
 */
static bool in_stream_statement = false;

/*
 * The consistency token of an append: the greatest log cursor (era, tx_id,
 * global_position) of its events.  A projection or subscriber whose
 * checkpoint is at or past it has applied the append (es_wait_for, wait.c).
 */
typedef struct EsToken
{
	bool		valid;
	int32		era;
	uint64		tx_id;
	int64		position;
} EsToken;

/*
 * token_max
 *		Raise *t to the cursor (era, tx_id, position) if that one is greater
 *		(compared as a row, as es.log_cursor values are).
 */
static void
token_max(EsToken *t, int32 era, Datum tx_id, int64 position)
{
	uint64		tx = U64FromFullTransactionId(DatumGetFullTransactionId(tx_id));

	if (t->valid &&
		(era < t->era ||
		 (era == t->era && (tx < t->tx_id ||
							(tx == t->tx_id && position <= t->position)))))
		return;
	t->valid = true;
	t->era = era;
	t->tx_id = tx;
	t->position = position;
}

/*
 * token_datum
 *		The token as a value of the composite type typid (es.log_cursor), in
 *		the current memory context.
 */
static Datum
token_datum(const EsToken *t, Oid typid)
{
	/* the type cache's descriptor, not a copy: this runs on every append */
	TupleDesc	desc = lookup_rowtype_tupdesc(typid, -1);
	Datum		values[3];
	bool		nulls[3] = {false, false, false};
	HeapTuple	tuple;

	if (desc->natts != 3)
		elog(ERROR, "type es.log_cursor has %d attributes, expected 3", desc->natts);
	values[0] = Int32GetDatum(t->era);
	values[1] = FullTransactionIdGetDatum(FullTransactionIdFromU64(t->tx_id));
	values[2] = Int64GetDatum(t->position);
	tuple = heap_form_tuple(desc, values, nulls);
	ReleaseTupleDesc(desc);
	return HeapTupleGetDatum(tuple);
}

/* Saved plans, prepared on first use. */
static EsPlan find_ids_plan = {
	NULL,
	"SELECT e.event_id, e.version, e.global_position,"
	"       e.event_type, e.schema_version, e.data, e.metadata, e.era, e.tx_id, e.tags"
	"  FROM es.events AS e"
	" WHERE e.stream_id OPERATOR(pg_catalog.=) $1"
	"   AND e.event_id OPERATOR(pg_catalog.=) ANY ($2)"
	" ORDER BY e.version",
	2, {TEXTOID, UUIDARRAYOID}
};

/*
 * a given id already in the stream that the caller can see (row level
 * security applies): the error path of check_ids_absent
 */
static EsPlan any_id_plan = {
	NULL,
	"SELECT e.event_id FROM es.events AS e"
	" WHERE e.stream_id OPERATOR(pg_catalog.=) $1"
	"   AND e.event_id OPERATOR(pg_catalog.=) ANY ($2)"
	" LIMIT 1",
	2, {TEXTOID, UUIDARRAYOID}
};

/*
 * What every statement on the stream row returns: its version and log_tx_id,
 * and its state (issue 15): the first version still stored and the chain
 * hash before it, archived, erased.  A schema from before ALTER EXTENSION
 * UPDATE to 0.2.0 (es_ext 0.1.0's, which this library keeps serving until
 * the update) has no state and no chain: its statements (LEGACY) return
 * version and log_tx_id only and store no hash.
 */
#define STREAM_RETURNING \
	" RETURNING s.version, s.log_tx_id, s.first_version, s.base_hash," \
	"           s.archived_at IS NOT NULL, s.erased_at IS NOT NULL"
#define LEGACY_STREAM_RETURNING \
	" RETURNING s.version, s.log_tx_id"

/* index of a statement in the pairs below */
#define CURRENT		0
#define LEGACY		1

/* The state of the stream row locked by an append (STREAM_RETURNING). */
typedef struct StreamState
{
	int			kind;			/* CURRENT or LEGACY (schema_kind) */
	int64		first_version;
	bool		has_base_hash;
	bool		archived;
	bool		erased;
	uint8		base_hash[ES_HASH_LENGTH];
} StreamState;

/*
 * Set while es_append writes an erasure's tombstone (EsAppendSystemEvent):
 * the one append an erased stream takes.
 */
static bool system_append = false;

static void refuse_stream_state(const char *stream, bool archived, bool erased);

/*
 * updated_at is a parameter, the time the statement is run, not
 * clock_timestamp(): Citus refuses volatile functions in the UPDATE of a
 * distributed table (issue 16).
 */
#define UPDATE_EXACT(returning) \
	"UPDATE es.streams AS s" \
	"   SET version = s.version OPERATOR(pg_catalog.+) $3," \
	"       updated_at = $4," \
	"       log_tx_id = GREATEST(s.log_tx_id, $5)" \
	" WHERE s.stream_id OPERATOR(pg_catalog.=) $1" \
	"   AND s.version OPERATOR(pg_catalog.=) $2" \
	returning
#define UPDATE_ANY(returning) \
	"UPDATE es.streams AS s" \
	"   SET version = s.version OPERATOR(pg_catalog.+) $2," \
	"       updated_at = $3," \
	"       log_tx_id = GREATEST(s.log_tx_id, $4)" \
	" WHERE s.stream_id OPERATOR(pg_catalog.=) $1" \
	returning
#define INSERT_STREAM(returning) \
	"INSERT INTO es.streams AS s (stream_id, version, log_tx_id)" \
	" VALUES ($1, $2, $4)" \
	" ON CONFLICT (stream_id) DO NOTHING" \
	returning

static EsPlan update_exact_plan[2] = {
	{NULL, UPDATE_EXACT(STREAM_RETURNING), 5, {TEXTOID, INT8OID, INT8OID, TIMESTAMPTZOID, XID8OID}},
	{NULL, UPDATE_EXACT(LEGACY_STREAM_RETURNING), 5, {TEXTOID, INT8OID, INT8OID, TIMESTAMPTZOID, XID8OID}}
};

static EsPlan update_any_plan[2] = {
	{NULL, UPDATE_ANY(STREAM_RETURNING), 4, {TEXTOID, INT8OID, TIMESTAMPTZOID, XID8OID}},
	{NULL, UPDATE_ANY(LEGACY_STREAM_RETURNING), 4, {TEXTOID, INT8OID, TIMESTAMPTZOID, XID8OID}}
};

static EsPlan insert_stream_plan[2] = {
	{NULL, INSERT_STREAM(STREAM_RETURNING), 4, {TEXTOID, INT8OID, TIMESTAMPTZOID, XID8OID}},
	{NULL, INSERT_STREAM(LEGACY_STREAM_RETURNING), 4, {TEXTOID, INT8OID, TIMESTAMPTZOID, XID8OID}}
};

/* the stream row's log_tx_id came from another cluster: take ours (era.c) */
static EsPlan reset_log_tx_id_plan = {
	NULL,
	"UPDATE es.streams AS s SET log_tx_id = $2"
	" WHERE s.stream_id OPERATOR(pg_catalog.=) $1"
	" RETURNING s.log_tx_id",
	2, {TEXTOID, XID8OID}
};

static EsPlan stream_version_plan[2] = {
	{NULL,
		"SELECT s.version, s.archived_at IS NOT NULL, s.erased_at IS NOT NULL FROM es.streams AS s"
		" WHERE s.stream_id OPERATOR(pg_catalog.=) $1",
	1, {TEXTOID}},
	{NULL,
		"SELECT s.version, false, false FROM es.streams AS s"
		" WHERE s.stream_id OPERATOR(pg_catalog.=) $1",
	1, {TEXTOID}}
};

/*
 * The inserts of a batch: one event, or many through unnest(); with tags
 * ($12, a text[] for one event, the text form of each event's text[] for
 * many), or without (the statement of an untagged batch names no tags).
 * $11 is the chain hash of the event (bytea), or of each (bytea[]); a
 * LEGACY statement stores none (its parameter is NULL).
 */
#define INSERT_INTO(hash, tags) \
	"INSERT INTO es.events AS e" \
	"  (stream_id, version, event_id, event_type, data, metadata, recorded_at, era, tx_id," \
	"   schema_version" hash tags ")"
#define INSERT_ONE(hash, tags) \
	" VALUES ($1, $2, $3, $4, $5, $6, $7, $9, $8, $10" hash tags ")"
#define INSERT_MANY(hash, tags, unnest_tags, alias_tags) \
	" SELECT $1, $2 OPERATOR(pg_catalog.+) u.o, u.i, u.t, u.d, u.m, $7, $9, $8, u.s" hash tags \
	"   FROM ROWS FROM (pg_catalog.unnest($3), pg_catalog.unnest($4)," \
	"                   pg_catalog.unnest($5), pg_catalog.unnest($6)," \
	"                   pg_catalog.unnest($10), pg_catalog.unnest($11)" unnest_tags ")" \
	"          WITH ORDINALITY AS u(i, t, d, m, s, h" alias_tags ", o)"
#define INSERT_RETURNING \
	" RETURNING e.version, e.global_position, e.event_id, e.stream_id, e.era, e.tx_id," \
	"           e.recorded_at"
#define INSERT_ONE_ARGS \
	TEXTOID, INT8OID, UUIDOID, TEXTOID, JSONBOID, JSONBOID, TIMESTAMPTZOID, XID8OID, INT4OID, \
	INT4OID, BYTEAOID
#define INSERT_MANY_ARGS \
	TEXTOID, INT8OID, UUIDARRAYOID, TEXTARRAYOID, JSONBARRAYOID, JSONBARRAYOID, \
	TIMESTAMPTZOID, XID8OID, INT4OID, INT4ARRAYOID, BYTEAARRAYOID
#define INSERT_ONE_TAGS(hash, hashval) \
	INSERT_INTO(hash, ", tags") INSERT_ONE(hashval, ", $12") INSERT_RETURNING
#define INSERT_MANY_TAGS(hash, hashval) \
	INSERT_INTO(hash, ", tags") \
	INSERT_MANY(hashval, ", u.g::pg_catalog.text[]", ", pg_catalog.unnest($12)", ", g") \
	INSERT_RETURNING

static EsPlan insert_one_plan[2] = {
	{NULL, INSERT_INTO(", hash", "") INSERT_ONE(", $11", "") INSERT_RETURNING, 11, {INSERT_ONE_ARGS}},
	{NULL, INSERT_INTO("", "") INSERT_ONE("", "") INSERT_RETURNING, 11, {INSERT_ONE_ARGS}}
};

static EsPlan insert_one_tags_plan[2] = {
	{NULL, INSERT_ONE_TAGS(", hash", ", $11"), 12, {INSERT_ONE_ARGS, TEXTARRAYOID}},
	{NULL, INSERT_ONE_TAGS("", ""), 12, {INSERT_ONE_ARGS, TEXTARRAYOID}}
};

static EsPlan insert_many_plan[2] = {
	{NULL, INSERT_INTO(", hash", "") INSERT_MANY(", u.h", "", "", "") INSERT_RETURNING,
	11, {INSERT_MANY_ARGS}},
	{NULL, INSERT_INTO("", "") INSERT_MANY("", "", "", "") INSERT_RETURNING,
	11, {INSERT_MANY_ARGS}}
};

static EsPlan insert_many_tags_plan[2] = {
	{NULL, INSERT_MANY_TAGS(", hash", ", u.h"), 12, {INSERT_MANY_ARGS, TEXTARRAYOID}},
	{NULL, INSERT_MANY_TAGS("", ""), 12, {INSERT_MANY_ARGS, TEXTARRAYOID}}
};

/*
 * schema_kind
 *		CURRENT when the stream rows carry their state and the events their
 *		chain hash (es_ext 0.2.0's schema), LEGACY for a schema before the
 *		update.  Two syscache lookups.
 */
static int
schema_kind(void)
{
	if (get_attnum(EsRelationOid("streams"), "erased_at") != InvalidAttrNumber &&
		get_attnum(EsRelationOid("events"), "hash") != InvalidAttrNumber)
		return CURRENT;
	return LEGACY;
}

/*
 * conflict_error
 *		Raise the expected-version conflict: SQLSTATE 40001 with constraint
 *		es_expected_version.  actual < 0 means "unknown".
 */
static void
conflict_error(const char *stream, bool expected_null, int64 expected, int64 actual,
			   const char *why)
{
	char		expbuf[64];

	EsStatsAppendFailed(stream, strlen(stream), true);

	if (expected_null)
		snprintf(expbuf, sizeof(expbuf), "any version");
	else if (expected == ES_EXPECT_STREAM_EXISTS)
		snprintf(expbuf, sizeof(expbuf), "an existing stream");
	else if (expected == ES_EXPECT_NO_STREAM)
		snprintf(expbuf, sizeof(expbuf), "no stream (version 0)");
	else
		snprintf(expbuf, sizeof(expbuf), "version " INT64_FORMAT, expected);

	if (expected_null)
		ereport(ERROR,
				(errcode(ERRCODE_T_R_SERIALIZATION_FAILURE),
				 errmsg("could not append to stream \"%s\" because of a concurrent append", stream),
				 errdetail("Any version was expected; %s", why),
				 errhint("Retry the transaction."),
				 err_generic_string(PG_DIAG_SCHEMA_NAME, "es"),
				 err_generic_string(PG_DIAG_TABLE_NAME, "streams"),
				 err_generic_string(PG_DIAG_CONSTRAINT_NAME, ES_EXPECTED_VERSION_CONSTRAINT)));

	ereport(ERROR,
			(errcode(ERRCODE_T_R_SERIALIZATION_FAILURE),
			 errmsg("wrong expected version for stream \"%s\"", stream),
			 actual >= 0 ?
			 errdetail("Expected %s, current version is " INT64_FORMAT ".", expbuf, actual) :
			 errdetail("Expected %s; %s", expbuf, why),
			 errhint("Reload the stream and retry the command."),
			 err_generic_string(PG_DIAG_SCHEMA_NAME, "es"),
			 err_generic_string(PG_DIAG_TABLE_NAME, "streams"),
			 err_generic_string(PG_DIAG_CONSTRAINT_NAME, ES_EXPECTED_VERSION_CONSTRAINT)));
}

static int64
current_stream_version(Datum stream, const char *stream_str, int kind)
{
	Datum		values[1];
	bool		isnull;
	int			rc;

	values[0] = stream;
	rc = SPI_execute_plan(EsGetPlan(&stream_version_plan[kind]), values, NULL, false, 1);
	if (rc != SPI_OK_SELECT)
		elog(ERROR, "could not read stream version: %s", SPI_result_code_string(rc));
	if (SPI_processed == 0)
		return 0;
	/* a conflict with an archived or erased stream is reported as that */
	refuse_stream_state(stream_str,
						DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull)),
						DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 3, &isnull)));
	return DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
}

/*
 * text_equal
 *		Are two text values (possibly packed or toasted) byte-for-byte equal?
 */
static bool
text_equal(Datum a, Datum b)
{
	text	   *ta = DatumGetTextPP(a);
	text	   *tb = DatumGetTextPP(b);

	return VARSIZE_ANY_EXHDR(ta) == VARSIZE_ANY_EXHDR(tb) &&
		memcmp(VARDATA_ANY(ta), VARDATA_ANY(tb), VARSIZE_ANY_EXHDR(ta)) == 0;
}

/*
 * text_arrays_equal
 *		Do two one-dimensional text[] without nulls hold the same strings in
 *		the same order?
 */
static bool
text_arrays_equal(ArrayType *a, ArrayType *b)
{
	Datum	   *ea;
	Datum	   *eb;
	int			na;
	int			nb;
	int			i;

	deconstruct_array(a, TEXTOID, -1, false, TYPALIGN_INT, &ea, NULL, &na);
	deconstruct_array(b, TEXTOID, -1, false, TYPALIGN_INT, &eb, NULL, &nb);
	if (na != nb)
		return false;
	for (i = 0; i < na; i++)
		if (!text_equal(ea[i], eb[i]))
			return false;
	return true;
}

/*
 * jsonb_equal
 *		Are two jsonb values equal as jsonb values?  Equal bytes are the
 *		common case of a retry (the same JSON text parses to the same
 *		binary); otherwise jsonb equality decides (1.0 equals 1.00).
 */
static bool
jsonb_equal(Jsonb *a, Datum b)
{
	Jsonb	   *jb = DatumGetJsonbP(b);

	if (VARSIZE(a) == VARSIZE(jb) && memcmp(a, jb, VARSIZE(a)) == 0)
		return true;
	return DatumGetBool(DirectFunctionCall2(jsonb_eq, PointerGetDatum(a), PointerGetDatum(jb)));
}

/*
 * stored_event_differs
 *		The key of the batch's event ev that differs from the stored event
 *		in row tup of find_ids_plan's result ("type", "schema_version",
 *		"data", "metadata", "tags"), or NULL when they are the same event.  data and
 *		metadata compare as jsonb values (key order and number spelling do
 *		not matter); a missing or null "metadata" equals a stored NULL.  The
 *		stored values are compared raw: upcasters play no part.
 */
static const char *
stored_event_differs(const EsEvent *ev, HeapTuple tup, TupleDesc desc)
{
	Datum		d;
	bool		isnull;

	d = SPI_getbinval(tup, desc, 4, &isnull);
	if (isnull || !text_equal(PointerGetDatum(ev->type), d))
		return "type";
	d = SPI_getbinval(tup, desc, 5, &isnull);
	if (isnull || DatumGetInt32(d) != ev->schema_version)
		return "schema_version";
	if (ev->personal != NULL)
	{
		/* stored encrypted: compared without the personal fields (crypto.c) */
		bool		mnull;
		Datum		m = SPI_getbinval(tup, desc, 7, &mnull);
		const char *what;

		d = SPI_getbinval(tup, desc, 6, &isnull);
		if (isnull)
			return "data";
		what = EsPersonalStoredDiffers(ev, DatumGetJsonbP(d), mnull ? NULL : DatumGetJsonbP(m));
		if (what != NULL)
			return what;
	}
	else
	{
		d = SPI_getbinval(tup, desc, 6, &isnull);
		if (isnull || !jsonb_equal(ev->data, d))
			return "data";
		d = SPI_getbinval(tup, desc, 7, &isnull);
		if (isnull != (ev->metadata == NULL))
			return "metadata";
		if (!isnull && !jsonb_equal(ev->metadata, d))
			return "metadata";
	}
	d = SPI_getbinval(tup, desc, 10, &isnull);
	if (isnull != (ev->tags == NULL))
		return "tags";
	if (!isnull && !text_arrays_equal(ev->tags, DatumGetArrayTypeP(d)))
		return "tags";
	return NULL;
}

/*
 * find_existing
 *		Look up the batch's ids in the stream.  Returns false when none is
 *		there.  Returns true and fills positions[] / *version when the whole
 *		batch was appended before, in the same order, with the same events.
 *		*token gets the greatest log cursor of those stored events (one
 *		append's events share era and tx_id, but a retried batch may span
 *		two appends).
 *		Raises duplicate_object for a partial overlap, and for a batch whose
 *		ids match but whose events differ from the stored ones (a client
 *		bug: the retry of an append must resend the same events).  The
 *		contents are compared only here, when every id is already there: an
 *		append of new events pays for nothing but the lookup.
 */
static bool
find_existing(const char *stream_str, Datum stream, Datum given_ids, EsEvent *events, int n,
			  int64 *positions, int64 *version, EsToken *token)
{
	Datum		values[2];
	int			rc;
	uint64		i;
	int64		first_version = 0;
	bool		in_order = true;

	values[0] = stream;
	values[1] = given_ids;
	rc = SPI_execute_plan(EsGetPlan(&find_ids_plan), values, NULL, false, 0);
	if (rc != SPI_OK_SELECT)
		elog(ERROR, "could not look up event ids: %s", SPI_result_code_string(rc));
	if (SPI_processed == 0)
		return false;

	if (SPI_processed == (uint64) n)
	{
		TupleDesc	desc = SPI_tuptable->tupdesc;
		bool		isnull;

		/*
		 * Every event had an id and every id is there.  It is a retry only if
		 * the rows, in version order, carry the batch's ids in batch order
		 * with contiguous versions.
		 */
		for (i = 0; i < SPI_processed; i++)
		{
			HeapTuple	tup = SPI_tuptable->vals[i];
			pg_uuid_t  *id = DatumGetUUIDP(SPI_getbinval(tup, desc, 1, &isnull));
			int64		v = DatumGetInt64(SPI_getbinval(tup, desc, 2, &isnull));

			if (i == 0)
				first_version = v;
			if (v != first_version + (int64) i ||
				memcmp(&events[i].id, id, UUID_LEN) != 0)
			{
				in_order = false;
				break;
			}
			positions[i] = DatumGetInt64(SPI_getbinval(tup, desc, 3, &isnull));
			token_max(token, DatumGetInt32(SPI_getbinval(tup, desc, 8, &isnull)),
					  SPI_getbinval(tup, desc, 9, &isnull), positions[i]);
		}

		if (in_order)
		{
			for (i = 0; i < SPI_processed; i++)
			{
				const char *what = stored_event_differs(&events[i], SPI_tuptable->vals[i], desc);

				if (what != NULL)
				{
					EsStatsAppendFailed(stream_str, strlen(stream_str), false);
					ereport(ERROR,
							(errcode(ERRCODE_DUPLICATE_OBJECT),
							 errmsg("batch reuses the ids of events already in stream \"%s\" for other events",
									stream_str),
							 errdetail("Event %d of the batch (id %s) differs in its \"%s\" from the event stored at version " INT64_FORMAT ".",
									   (int) i + 1,
									   DatumGetCString(DirectFunctionCall1(uuid_out, UUIDPGetDatum(&events[i].id))),
									   what, first_version + (int64) i),
							 errhint("A retry must resend the same events with the same ids; give a new event a new id.")));
				}
			}
			*version = first_version + n - 1;
			return true;
		}
	}

	EsStatsAppendFailed(stream_str, strlen(stream_str), false);
	ereport(ERROR,
			(errcode(ERRCODE_DUPLICATE_OBJECT),
			 errmsg("batch partly repeats events already in stream \"%s\"", stream_str),
			 errdetail("%llu of the %d events of the batch were appended before%s.",
					   (unsigned long long) SPI_processed, n,
					   SPI_processed == (uint64) n ? ", in another order" : ""),
			 errhint("To retry an append, resend the same batch with the same event ids in the same order; give new events new ids.")));
	return false;				/* keep compiler quiet */
}

/*
 * given_ids_array
 *		The ids the caller gave in the batch, as a uuid[] (batch order).
 */
static Datum
given_ids_array(EsEvent *events, int n)
{
	Datum	   *ids = palloc(sizeof(Datum) * n);
	int			nids = 0;
	int			i;

	for (i = 0; i < n; i++)
		if (events[i].has_id)
			ids[nids++] = UUIDPGetDatum(&events[i].id);
	return PointerGetDatum(construct_array(ids, nids, UUIDOID, UUID_LEN, false, TYPALIGN_CHAR));
}

/*
 * id_index_keys
 *		How many leading key columns of index indexoid on es.events locate the
 *		events of one event id: 1 for a btree index on (event_id, ...)
 *		(events_event_id_idx), 2 for one on (stream_id, event_id, ...)
 *		(es_ext 0.1.0's unique constraint, before ALTER EXTENSION UPDATE),
 *		0 for any other index.  The index must be valid, not partial, and
 *		compare those columns with the equality of uuid and text.  Syscache
 *		lookups only.
 */
static int
id_index_keys(Oid indexoid, AttrNumber stream_att, AttrNumber id_att)
{
	HeapTuple	tup;
	HeapTuple	reltup;
	Form_pg_index ix;
	oidvector  *opclasses;
	Datum		d;
	bool		isnull;
	int			nkeys = 0;
	int			i;

	tup = SearchSysCache1(INDEXRELID, ObjectIdGetDatum(indexoid));
	if (!HeapTupleIsValid(tup))
		return 0;
	ix = (Form_pg_index) GETSTRUCT(tup);
	if (ix->indisvalid && ix->indnkeyatts >= 1 &&
		heap_attisnull(tup, Anum_pg_index_indpred, NULL))
	{
		if (ix->indkey.values[0] == id_att)
			nkeys = 1;
		else if (ix->indnkeyatts >= 2 && ix->indkey.values[0] == stream_att &&
				 ix->indkey.values[1] == id_att)
			nkeys = 2;
	}
	if (nkeys > 0)
	{
		reltup = SearchSysCache1(RELOID, ObjectIdGetDatum(indexoid));
		if (!HeapTupleIsValid(reltup) ||
			((Form_pg_class) GETSTRUCT(reltup))->relam != BTREE_AM_OID)
			nkeys = 0;
		if (HeapTupleIsValid(reltup))
			ReleaseSysCache(reltup);
	}
	if (nkeys > 0)
	{
		d = SysCacheGetAttr(INDEXRELID, tup, Anum_pg_index_indclass, &isnull);
		opclasses = (oidvector *) DatumGetPointer(d);
		for (i = 0; i < nkeys && !isnull; i++)
		{
			Oid			type = (i == nkeys - 1) ? UUIDOID : TEXTOID;
			Oid			family = get_opclass_family(opclasses->values[i]);
			Oid			eq = get_opfamily_member(family, type, type, BTEqualStrategyNumber);

			if (!OidIsValid(eq) ||
				get_opcode(eq) != (type == UUIDOID ? F_UUID_EQ : F_TEXTEQ))
				nkeys = 0;
		}
		if (isnull)
			nkeys = 0;
	}
	ReleaseSysCache(tup);
	return nkeys;
}

/*
 * EsStoredIdInStream
 *		Is one of the n ids in the stream?  Reads es.events through an index
 *		that locates an event id (id_index_keys; else, slower, the primary
 *		key's stream_id), with a snapshot that sees what committed before
 *		the stream row lock was taken (a new one at READ COMMITTED, the
 *		transaction's at REPEATABLE READ, with the current command id), as
 *		the statement under the lock would.  Like the check of a unique
 *		index, it does not go through the executor: row level security and
 *		the caller's SELECT privilege hide no event from it.  Sets *found
 *		to the (first) id found.
 */
bool
EsStoredIdInStream(Datum stream, const pg_uuid_t *ids, int n, pg_uuid_t *found)
{
	Relation	rel = table_open(EsRelationOid("events"), AccessShareLock);
	AttrNumber	stream_att = get_attnum(RelationGetRelid(rel), "stream_id");
	AttrNumber	id_att = get_attnum(RelationGetRelid(rel), "event_id");
	List	   *indexes = RelationGetIndexList(rel);
	ListCell   *lc;
	Oid			indexoid = InvalidOid;
	int			nkeys = 0;
	Relation	index;
	TupleTableSlot *slot;
	Snapshot	snapshot;
	bool		in_stream = false;
	int			i;

	if (stream_att == InvalidAttrNumber || id_att == InvalidAttrNumber)
		elog(ERROR, "table es.events has no column stream_id or event_id");

	foreach(lc, indexes)
	{
		int			k = id_index_keys(lfirst_oid(lc), stream_att, id_att);

		if (k > nkeys)
		{
			indexoid = lfirst_oid(lc);
			nkeys = k;
		}
		if (nkeys == 2)
			break;
	}
	if (nkeys == 0)
	{
		/* no index on the event id: the stream's events, by primary key */
		indexoid = RelationGetPrimaryKeyIndex(rel);
		if (!OidIsValid(indexoid))
			elog(ERROR, "table es.events has no primary key");
	}
	list_free(indexes);

	index = index_open(indexoid, AccessShareLock);
	if (nkeys == 0 && index->rd_index->indkey.values[0] != stream_att)
		elog(ERROR, "the primary key of es.events does not begin with stream_id");
	slot = table_slot_create(rel, NULL);

	PushCopiedSnapshot(GetTransactionSnapshot());
	UpdateActiveSnapshotCommandId();
	snapshot = GetActiveSnapshot();

	for (i = 0; i < n && !in_stream; i++)
	{
		ScanKeyData keys[2];
		int			nscankeys = 0;
		IndexScanDesc scan;

		CHECK_FOR_INTERRUPTS();

		if (nkeys != 1)
			ScanKeyEntryInitialize(&keys[nscankeys++], 0, 1, BTEqualStrategyNumber,
								   InvalidOid, index->rd_indcollation[0], F_TEXTEQ, stream);
		if (nkeys >= 1)
			ScanKeyEntryInitialize(&keys[nscankeys++], 0, nkeys, BTEqualStrategyNumber,
								   InvalidOid, InvalidOid, F_UUID_EQ, UUIDPGetDatum(&ids[i]));

		scan = index_beginscan(rel, index, snapshot, nscankeys, 0);
		index_rescan(scan, keys, nscankeys, NULL, 0);
		while (index_getnext_slot(scan, ForwardScanDirection, slot))
		{
			bool		isnull;
			Datum		d;

			CHECK_FOR_INTERRUPTS();
			d = slot_getattr(slot, stream_att, &isnull);
			if (isnull || !text_equal(d, stream))
				continue;
			d = slot_getattr(slot, id_att, &isnull);
			if (isnull || memcmp(DatumGetUUIDP(d), &ids[i], UUID_LEN) != 0)
				continue;
			*found = ids[i];
			in_stream = true;
			break;
		}
		index_endscan(scan);
	}

	PopActiveSnapshot();
	ExecDropSingleTupleTableSlot(slot);
	index_close(index, AccessShareLock);
	table_close(rel, AccessShareLock);
	return in_stream;
}

/* the SPI form of EsStoredEventHash, for Citus */
static EsPlan event_hash_plan = {
	NULL,
	"SELECT e.hash FROM es.events AS e"
	" WHERE e.stream_id OPERATOR(pg_catalog.=) $1"
	"   AND e.version OPERATOR(pg_catalog.=) $2",
	2, {TEXTOID, INT8OID}
};

/*
 * stored_event_hash_spi
 *		EsStoredEventHash through the executor: under Citus the table is a
 *		shell and the event is in the stream's shard (citus.c).  Run under
 *		the stream row lock with a new snapshot (READ COMMITTED) or the
 *		transaction's (REPEATABLE READ, where a stream changed since it was
 *		taken already raised the conflict), it sees the same event.
 */
static bool
stored_event_hash_spi(Datum stream, int64 version, uint8 *out)
{
	Datum		values[2];
	int			rc;
	bool		found = false;

	values[0] = stream;
	values[1] = Int64GetDatum(version);
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	rc = SPI_execute_plan(EsGetPlan(&event_hash_plan), values, NULL, false, 1);
	if (rc != SPI_OK_SELECT)
		elog(ERROR, "could not read the chain hash of an event: %s", SPI_result_code_string(rc));
	if (SPI_processed == 1)
	{
		bool		isnull;
		Datum		d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);

		found = !isnull && EsHashFromDatum(d, out);
	}
	SPI_finish();
	return found;
}

/*
 * EsStoredEventHash
 *		The chain hash of version `version` of the stream, into out: true
 *		when that event is stored with a hash of the right length.  Called
 *		under the stream row lock, for the predecessor of an append: reads
 *		the primary key index directly, so that neither row level security
 *		nor the caller's privileges hide it (the hash never reaches the
 *		caller), with SnapshotSelf: every committed event and this
 *		transaction's own.  No other transaction can be writing that version
 *		while the lock is held, and no snapshot need be taken.
 */
bool
EsStoredEventHash(Datum stream, int64 version, uint8 *out)
{
	Relation	rel;
	AttrNumber	hash_att;
	Oid			indexoid;
	Relation	index;
	TupleTableSlot *slot;
	ScanKeyData keys[2];
	IndexScanDesc scan;
	bool		found = false;

	if (EsCitusPresent())
		return stored_event_hash_spi(stream, version, out);

	rel = table_open(EsRelationOid("events"), AccessShareLock);
	hash_att = get_attnum(RelationGetRelid(rel), "hash");
	indexoid = RelationGetPrimaryKeyIndex(rel);
	if (hash_att == InvalidAttrNumber)
		elog(ERROR, "table es.events has no column hash");
	if (!OidIsValid(indexoid))
		elog(ERROR, "table es.events has no primary key");
	index = index_open(indexoid, AccessShareLock);
	slot = table_slot_create(rel, NULL);

	/* the primary key is (stream_id, version) */
	ScanKeyEntryInitialize(&keys[0], 0, 1, BTEqualStrategyNumber,
						   InvalidOid, index->rd_indcollation[0], F_TEXTEQ, stream);
	ScanKeyEntryInitialize(&keys[1], 0, 2, BTEqualStrategyNumber,
						   InvalidOid, InvalidOid, F_INT8EQ, Int64GetDatum(version));
	scan = index_beginscan(rel, index, SnapshotSelf, 2, 0);
	index_rescan(scan, keys, 2, NULL, 0);
	if (index_getnext_slot(scan, ForwardScanDirection, slot))
	{
		bool		isnull;
		Datum		d = slot_getattr(slot, hash_att, &isnull);

		found = !isnull && EsHashFromDatum(d, out);
	}
	index_endscan(scan);

	ExecDropSingleTupleTableSlot(slot);
	index_close(index, AccessShareLock);
	table_close(rel, AccessShareLock);
	return found;
}

/*
 * chain_batch
 *		Under the stream row lock: the chain hash of each event of the batch
 *		(chain.c), versions first_version .. first_version + n - 1, as bytea
 *		datums in hashes[].  The first one chains to the stored event before
 *		it, or to the stream's base hash when the batch starts the stored
 *		part of the stream.  A predecessor that is missing or has no hash
 *		(an edited store) is refused: the append would extend a broken
 *		chain.
 */
static void
chain_batch(const char *stream_str, Datum stream, EsEvent *events, int n,
			int64 first_version, TimestampTz recorded_at, const StreamState *state,
			Datum *hashes)
{
	uint8		prev[ES_HASH_LENGTH];
	uint8		cur[ES_HASH_LENGTH];
	const uint8 *p = prev;
	EsHashInput in;
	int			i;

	if (first_version - 1 < state->first_version)
		p = state->has_base_hash ? state->base_hash : NULL;
	else if (!EsStoredEventHash(stream, first_version - 1, prev))
		ereport(ERROR,
				(errcode(ERRCODE_DATA_CORRUPTED),
				 errmsg("event " INT64_FORMAT " of stream \"%s\" has no valid chain hash",
						first_version - 1, stream_str),
				 errdetail("The event is missing or its hash was removed or changed outside es_append; appending would extend a broken chain."),
				 errhint("Check the stream with es.es_verify(%s).", quote_literal_cstr(stream_str))));

	in.stream = DatumGetTextPP(stream);
	in.recorded_at = recorded_at;
	for (i = 0; i < n; i++)
	{
		in.version = first_version + i;
		in.id = &events[i].id;
		in.type = events[i].type;
		in.schema_version = events[i].schema_version;
		in.data = events[i].data;
		in.metadata = events[i].metadata;
		in.tags = events[i].tags;
		EsEventHash(p, &in, cur);
		hashes[i] = EsHashDatum(cur);
		memcpy(prev, cur, ES_HASH_LENGTH);
		p = prev;
	}
}

/*
 * check_ids_absent
 *		Under the stream row lock: refuse the batch when one of the ids the
 *		caller gave is already in the stream.  find_existing looked before
 *		the lock; a concurrent append of the same ids may have committed
 *		since.  The lock serializes the stream's appends and the lookup sees
 *		what committed before it was taken (a new snapshot at READ
 *		COMMITTED; at REPEATABLE READ the stream statement already raised
 *		the conflict for a stream changed after the snapshot), so the event
 *		id index need not be unique.  Generated ids need no check.
 *
 *		The lookup (EsStoredIdInStream) is not subject to row level
 *		security, as a unique index's check is not: find_existing, which
 *		is, finds nothing when policies hide the stream's events from the
 *		caller, and the ids would be appended a second time.  An id the
 *		caller can see is the conflict (40001: a concurrent append, whose
 *		retry is answered by find_existing); one that row level security
 *		hides is refused as duplicate_object, which a retry would not
 *		change.  Only the error path runs the caller's query.
 */
static void
check_ids_absent(const char *stream_str, Datum stream, Datum given_ids,
				 bool expected_null, int64 expected)
{
	ArrayType  *arr = DatumGetArrayTypeP(given_ids);
	pg_uuid_t	found;
	Datum		values[2];
	int			rc;

	/*
	 * Under Citus es.events is a shell and the stream's events are in its
	 * shard (citus.c): the query below is the lookup (tenancy, hence row
	 * level security on es.events, is refused there).
	 */
	if (!EsCitusPresent() &&
		!EsStoredIdInStream(stream, (const pg_uuid_t *) ARR_DATA_PTR(arr),
							ArrayGetNItems(ARR_NDIM(arr), ARR_DIMS(arr)), &found))
		return;

	values[0] = stream;
	values[1] = given_ids;
	rc = SPI_execute_plan(EsGetPlan(&any_id_plan), values, NULL, false, 1);
	if (rc != SPI_OK_SELECT)
		elog(ERROR, "could not look up event ids: %s", SPI_result_code_string(rc));
	if (SPI_processed > 0)
		conflict_error(stream_str, expected_null, expected, -1,
					   "a concurrent transaction appended events with the same ids.");
	if (EsCitusPresent())
		return;

	EsStatsAppendFailed(stream_str, strlen(stream_str), false);
	ereport(ERROR,
			(errcode(ERRCODE_DUPLICATE_OBJECT),
			 errmsg("batch reuses the id of an event already in stream \"%s\"", stream_str),
			 errdetail("The stream holds an event with id %s, which row level security hides from the current role.",
					   DatumGetCString(DirectFunctionCall1(uuid_out, UUIDPGetDatum(&found)))),
			 errhint("Event ids are unique within a stream; give a new event a new id.")));
}

/*
 * stream_row_result
 *		The version, log_tx_id and state returned by a statement on the
 *		stream row (STREAM_RETURNING).
 */
static int64
stream_row_result(Datum *log_tx_id, StreamState *state)
{
	HeapTuple	tup = SPI_tuptable->vals[0];
	TupleDesc	desc = SPI_tuptable->tupdesc;
	bool		isnull;
	Datum		d;

	*log_tx_id = SPI_getbinval(tup, desc, 2, &isnull);
	if (state->kind == LEGACY)
	{
		/* before the update to 0.2.0: no state, no chain */
		state->first_version = 1;
		state->has_base_hash = false;
		state->archived = false;
		state->erased = false;
		return DatumGetInt64(SPI_getbinval(tup, desc, 1, &isnull));
	}
	state->first_version = DatumGetInt64(SPI_getbinval(tup, desc, 3, &isnull));
	d = SPI_getbinval(tup, desc, 4, &isnull);
	state->has_base_hash = !isnull;
	if (!isnull && !EsHashFromDatum(d, state->base_hash))
		ereport(ERROR,
				(errcode(ERRCODE_DATA_CORRUPTED),
				 errmsg("the base hash of a stream row is not a SHA-256 hash"),
				 errhint("Check the stream with es.es_verify.")));
	state->archived = DatumGetBool(SPI_getbinval(tup, desc, 5, &isnull));
	state->erased = DatumGetBool(SPI_getbinval(tup, desc, 6, &isnull));
	return DatumGetInt64(SPI_getbinval(tup, desc, 1, &isnull));
}

/*
 * refuse_stream_state
 *		An archived or erased stream takes no append (issue 15): the error
 *		of each, object_not_in_prerequisite_state.  The tombstone of an
 *		erasure (system_append) is the one exception.
 */
static void
refuse_stream_state(const char *stream, bool archived, bool erased)
{
	if (system_append)
		return;
	if (erased)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("stream \"%s\" was erased", stream),
				 errdetail("An erased stream keeps only its tombstone and cannot be appended to or recreated."),
				 errhint("Append to a stream with another id.")));
	if (archived)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("stream \"%s\" is archived", stream),
				 errdetail("An archived stream is read-only."),
				 errhint("Call es.es_unarchive_stream(%s) to append to it again.", quote_literal_cstr(stream))));
}

/*
 * EsRefuseStreamState
 *		refuse_stream_state for es_import (import.c), which writes streams
 *		the same way.
 */
void
EsRefuseStreamState(const char *stream, bool archived, bool erased)
{
	refuse_stream_state(stream, archived, erased);
}

/*
 * run_stream_statement
 *		Run one of the statements on the stream row (an INSERT or UPDATE, as
 *		event says), letting it through the guard and marking it so that a
 *		serialization failure it raises becomes the expected-version
 *		conflict.  Returns true and sets *version and *log_tx_id when the
 *		statement wrote the row, false when it wrote no row.
 */
static bool
run_stream_statement(EsPlan *plan, uint32 event, Datum *values,
					 int64 *version, Datum *log_tx_id, StreamState *state)
{
	int			rc;

	EsAllowNextWrite(EsRelationOid("streams"), event);
	in_stream_statement = true;
	rc = SPI_execute_plan(EsGetPlan(plan), values, NULL, false, 0);
	in_stream_statement = false;
	EsClearAllowedWrite();
	if (rc != (event == TRIGGER_EVENT_UPDATE ? SPI_OK_UPDATE_RETURNING : SPI_OK_INSERT_RETURNING))
		elog(ERROR, "could not write stream row: %s", SPI_result_code_string(rc));
	if (SPI_processed != 1)
		return false;
	*version = stream_row_result(log_tx_id, state);

	/*
	 * Under the row lock now: every log_tx_id of this cluster is below its
	 * next transaction id.  One at or above it was restored from another
	 * cluster (an older era, see era.c): order this append by its own id.
	 */
	if (EsForeignTransactionId(*log_tx_id))
	{
		Datum		reset[2];

		/* every stream statement takes the stream first, the tx_id last */
		reset[0] = values[0];
		reset[1] = values[plan->nargs - 1];
		EsAllowNextWrite(EsRelationOid("streams"), TRIGGER_EVENT_UPDATE);
		rc = SPI_execute_plan(EsGetPlan(&reset_log_tx_id_plan), reset, NULL, false, 0);
		EsClearAllowedWrite();
		if (rc != SPI_OK_UPDATE_RETURNING || SPI_processed != 1)
			elog(ERROR, "could not reset the log_tx_id of stream row: %s",
				 SPI_result_code_string(rc));
		*log_tx_id = reset[1];
	}
	return true;
}

/*
 * advance_stream
 *		Lock the stream row and advance its version by n, checking the
 *		expected version.  Returns the new version, or raises the conflict.
 *
 *		Also raises the stream's log_tx_id to this transaction's id and
 *		returns it in *log_tx_id: the events are ordered in the global log by
 *		that value, which is never below the stream's previous one, so the
 *		log keeps every stream's version order even when a transaction that
 *		took its xid early appends after one that took a later xid (see
 *		read.c for why this keeps the horizon safe).  A log_tx_id restored
 *		from another cluster is replaced (see run_stream_statement).
 */
static int64
advance_stream(const char *stream_str, Datum stream, bool expected_null,
			   int64 expected, int n, Datum tx_id, Datum *log_tx_id, StreamState *state)
{
	Datum		values[5];
	Datum		now = TimestampTzGetDatum(GetCurrentTimestamp());
	int64		version;
	int			attempt;

	values[0] = stream;

	if (expected_null || expected == ES_EXPECT_STREAM_EXISTS)
	{
		/*
		 * update_any_plan and insert_stream_plan: (stream, n, now, tx_id);
		 * a new stream row takes created_at and updated_at from now()
		 */
		values[1] = Int64GetDatum(n);
		values[2] = now;
		values[3] = tx_id;
		for (attempt = 0; attempt < ES_APPEND_STREAM_ATTEMPTS; attempt++)
		{
			if (run_stream_statement(&update_any_plan[state->kind], TRIGGER_EVENT_UPDATE, values,
									 &version, log_tx_id, state))
				return version;
			if (!expected_null)
				conflict_error(stream_str, false, expected, 0, NULL);

			/* "any": create the stream; if someone else just did, update it */
			if (run_stream_statement(&insert_stream_plan[state->kind], TRIGGER_EVENT_INSERT, values,
									 &version, log_tx_id, state))
				return version;
		}
		conflict_error(stream_str, true, 0, -1,
					   "the stream was created and removed concurrently.");
	}

	if (expected == ES_EXPECT_NO_STREAM)
	{
		values[1] = Int64GetDatum(n);
		values[2] = now;
		values[3] = tx_id;
		if (run_stream_statement(&insert_stream_plan[state->kind], TRIGGER_EVENT_INSERT, values,
								 &version, log_tx_id, state))
			return version;
	}
	else
	{
		values[1] = Int64GetDatum(expected);
		values[2] = Int64GetDatum(n);
		values[3] = now;
		values[4] = tx_id;
		if (run_stream_statement(&update_exact_plan[state->kind], TRIGGER_EVENT_UPDATE, values,
								 &version, log_tx_id, state))
			return version;
	}

	conflict_error(stream_str, false, expected, current_stream_version(stream, stream_str, state->kind), NULL);
	return 0;					/* keep compiler quiet */
}

/*
 * EsRefuseBeforeRowTriggers
 *		Raise object_not_in_prerequisite_state when a BEFORE INSERT or
 *		UPDATE row trigger on relid (es.events, or es.streams, whose version
 *		a trigger could shift) would fire for es_append's statement.  Such a
 *		trigger runs as the appender and can rewrite any column of the rows
 *		(version, event id, position, log order, time, payload); es_append
 *		lets none run, whoever created it.  es_ext itself has no such trigger.
 *
 *		Takes RowExclusiveLock on es.events (the insert takes it anyway), so
 *		no other session can create or enable a trigger before the insert
 *		starts; the executor copies the trigger list when it does.  Costs a
 *		look at the relcache entry: no catalog access.
 */
void
EsRefuseBeforeRowTriggers(Oid relid, const char *relname)
{
	Relation	rel = table_open(relid, RowExclusiveLock);
	TriggerDesc *td = rel->trigdesc;
	char	   *tgname = NULL;
	int			i;

	if (td != NULL && (td->trig_insert_before_row || td->trig_update_before_row))
	{
		for (i = 0; i < td->numtriggers; i++)
		{
			Trigger    *t = &td->triggers[i];

			if (!TRIGGER_TYPE_MATCHES(t->tgtype, TRIGGER_TYPE_ROW, TRIGGER_TYPE_BEFORE,
									  TRIGGER_TYPE_INSERT) &&
				!TRIGGER_TYPE_MATCHES(t->tgtype, TRIGGER_TYPE_ROW, TRIGGER_TYPE_BEFORE,
									  TRIGGER_TYPE_UPDATE))
				continue;
			/* would it fire?  (as TriggerEnabled in trigger.c decides) */
			if (t->tgenabled == TRIGGER_DISABLED)
				continue;
			if (SessionReplicationRole == SESSION_REPLICATION_ROLE_REPLICA ?
				t->tgenabled == TRIGGER_FIRES_ON_ORIGIN :
				t->tgenabled == TRIGGER_FIRES_ON_REPLICA)
				continue;
			tgname = pstrdup(t->tgname);
			break;
		}
	}
	table_close(rel, NoLock);

	if (tgname != NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("cannot append events while table \"es.%s\" has BEFORE row trigger \"%s\"",
						relname, tgname),
				 errdetail("A BEFORE row trigger could change the columns es_append writes (stream, version, event id, position, log order), so es_append does not run while one is enabled."),
				 errhint("Use an AFTER INSERT trigger: projections and checks that raise an error work there. Or disable the trigger with ALTER TABLE es.%s DISABLE TRIGGER.", relname),
				 err_generic_string(PG_DIAG_SCHEMA_NAME, "es"),
				 err_generic_string(PG_DIAG_TABLE_NAME, relname)));
}

/* the columns insert_one_plan and insert_many_plan return, in order */
#define RET_VERSION			0
#define RET_GLOBAL_POSITION	1
#define RET_EVENT_ID		2
#define RET_STREAM_ID		3
#define RET_ERA				4
#define RET_TX_ID			5
#define RET_RECORDED_AT		6
#define RET_NCOLUMNS		7

/*
 * changed_row_error
 *		Raise triggered_data_change_violation: a returned row does not hold
 *		what es_append inserted.
 */
static void
changed_row_error(const char *column, uint64 row, int n)
{
	ereport(ERROR,
			(errcode(ERRCODE_TRIGGERED_DATA_CHANGE_VIOLATION),
			 errmsg("a BEFORE INSERT trigger on table \"es.events\" changed column \"%s\" of an event es_append inserted",
					column),
			 errdetail("Row %llu of %d returned by the insert holds a value es_append did not write; nothing was appended.",
					   (unsigned long long) row + 1, n),
			 errhint("es_append alone sets stream_id, version, event_id, global_position, era, tx_id and recorded_at; use AFTER INSERT triggers on es.events."),
			 err_generic_string(PG_DIAG_SCHEMA_NAME, "es"),
			 err_generic_string(PG_DIAG_TABLE_NAME, "events"),
			 err_generic_string(PG_DIAG_COLUMN_NAME, column)));
}

/*
 * check_returned_rows
 *		Check every row the insert returned against what es_append wrote,
 *		and fill positions[] in batch order.  In production builds, before
 *		anything is indexed: each version in first_version ..
 *		first_version + n - 1 exactly once, the event id, stream, era, tx_id
 *		and recorded_at of that event, and positions strictly increasing in
 *		batch order (the insert draws them from the identity sequence one row
 *		after the other).  Datum comparisons only, no statement.
 */
static void
check_returned_rows(Datum stream, EsEvent *events, int n, int64 first_version,
					Datum recorded_at, Datum tx_id, int32 era, int64 *positions)
{
	TupleDesc	desc = SPI_tuptable->tupdesc;
	bool	   *seen;
	Datum		values[RET_NCOLUMNS];
	bool		nulls[RET_NCOLUMNS];
	uint64		i;
	int			j;

	if (SPI_processed < (uint64) n)
		ereport(ERROR,
				(errcode(ERRCODE_TRIGGERED_DATA_CHANGE_VIOLATION),
				 errmsg("a trigger on table \"es.events\" skipped %d of the %d events of the batch",
						n - (int) SPI_processed, n),
				 errdetail("A BEFORE INSERT row trigger on es.events returned NULL; nothing was appended."),
				 errhint("Projections are AFTER INSERT triggers; a stream cannot have gaps.")));
	if (SPI_processed > (uint64) n)
		ereport(ERROR,
				(errcode(ERRCODE_TRIGGERED_DATA_CHANGE_VIOLATION),
				 errmsg("the insert into table \"es.events\" returned %llu rows for the %d events of the batch",
						(unsigned long long) SPI_processed, n),
				 errdetail("A rule or trigger on es.events changed the insert; nothing was appended.")));
	if (desc->natts != RET_NCOLUMNS)
		elog(ERROR, "the insert into es.events returned %d columns, expected %d",
			 desc->natts, RET_NCOLUMNS);

	seen = palloc0(sizeof(bool) * n);
	for (i = 0; i < SPI_processed; i++)
	{
		int64		v;
		int64		k;

		heap_deform_tuple(SPI_tuptable->vals[i], desc, values, nulls);
		for (j = 0; j < RET_NCOLUMNS; j++)
			if (nulls[j])
				changed_row_error(NameStr(TupleDescAttr(desc, j)->attname), i, n);

		v = DatumGetInt64(values[RET_VERSION]);
		if (v < first_version || v - first_version >= n || seen[v - first_version])
			changed_row_error("version", i, n);
		k = v - first_version;
		seen[k] = true;

		if (memcmp(DatumGetUUIDP(values[RET_EVENT_ID]), &events[k].id, UUID_LEN) != 0)
			changed_row_error("event_id", i, n);
		if (!text_equal(values[RET_STREAM_ID], stream))
			changed_row_error("stream_id", i, n);
		if (DatumGetInt32(values[RET_ERA]) != era)
			changed_row_error("era", i, n);
		if (DatumGetUInt64(values[RET_TX_ID]) != DatumGetUInt64(tx_id))
			changed_row_error("tx_id", i, n);
		if (DatumGetTimestampTz(values[RET_RECORDED_AT]) != DatumGetTimestampTz(recorded_at))
			changed_row_error("recorded_at", i, n);

		positions[k] = DatumGetInt64(values[RET_GLOBAL_POSITION]);
	}
	for (j = 1; j < n; j++)
		if (positions[j] <= positions[j - 1])
			changed_row_error("global_position", (uint64) j, n);
	pfree(seen);
}

/*
 * insert_events
 *		Insert the batch as versions first_version .. first_version + n - 1,
 *		after refusing BEFORE INSERT row triggers, and check the rows the
 *		insert returns (check_returned_rows).  Fills positions[] in batch
 *		order.
 */
static void
insert_events(Datum stream, EsEvent *events, int n, int64 first_version,
			  Datum recorded_at, Datum tx_id, int32 era, int kind, const Datum *hashes,
			  int64 *positions)
{
	Oid			events_rel = EsRelationOid("events");
	Datum		values[12];
	char		nulls[12];
	SPIPlanPtr	plan;
	bool		tagged = false;
	int			rc;
	int			k;

	for (k = 0; k < n && !tagged; k++)
		tagged = (events[k].tags != NULL);

	memset(nulls, ' ', sizeof(nulls));
	values[0] = stream;
	values[6] = recorded_at;
	values[7] = tx_id;
	values[8] = Int32GetDatum(era);

	if (n == 1)
	{
		plan = EsGetPlan(tagged ? &insert_one_tags_plan[kind] : &insert_one_plan[kind]);
		if (tagged)
			values[11] = PointerGetDatum(events[0].tags);
		if (hashes != NULL)
			values[10] = hashes[0];
		else
			nulls[10] = 'n';
		values[1] = Int64GetDatum(first_version);
		values[2] = UUIDPGetDatum(&events[0].id);
		values[3] = PointerGetDatum(events[0].type);
		values[4] = PointerGetDatum(events[0].data);
		values[9] = Int32GetDatum(events[0].schema_version);
		if (events[0].metadata)
			values[5] = PointerGetDatum(events[0].metadata);
		else
			nulls[5] = 'n';
	}
	else
	{
		Datum	   *ids = palloc(sizeof(Datum) * n);
		Datum	   *types = palloc(sizeof(Datum) * n);
		Datum	   *datas = palloc(sizeof(Datum) * n);
		Datum	   *metas = palloc(sizeof(Datum) * n);
		bool	   *metanulls = palloc(sizeof(bool) * n);
		Datum	   *versions = palloc(sizeof(Datum) * n);
		int			dims[1];
		int			lbs[1];
		int			j;

		for (j = 0; j < n; j++)
		{
			ids[j] = UUIDPGetDatum(&events[j].id);
			types[j] = PointerGetDatum(events[j].type);
			datas[j] = PointerGetDatum(events[j].data);
			metas[j] = PointerGetDatum(events[j].metadata);
			metanulls[j] = (events[j].metadata == NULL);
			versions[j] = Int32GetDatum(events[j].schema_version);
		}
		dims[0] = n;
		lbs[0] = 1;

		plan = EsGetPlan(tagged ? &insert_many_tags_plan[kind] : &insert_many_plan[kind]);
		if (tagged)
		{
			Datum	   *tags = palloc(sizeof(Datum) * n);
			bool	   *tagnulls = palloc(sizeof(bool) * n);

			/* each event's text[] in its text form, cast back by the insert */
			for (j = 0; j < n; j++)
			{
				tagnulls[j] = (events[j].tags == NULL);
				if (!tagnulls[j])
					tags[j] = CStringGetTextDatum(OidOutputFunctionCall(F_ARRAY_OUT,
																		PointerGetDatum(events[j].tags)));
			}
			values[11] = PointerGetDatum(construct_md_array(tags, tagnulls, 1, dims, lbs,
															TEXTOID, -1, false, TYPALIGN_INT));
		}
		if (hashes != NULL)
			values[10] = PointerGetDatum(construct_array((Datum *) hashes, n, BYTEAOID, -1, false,
														 TYPALIGN_INT));
		else
			nulls[10] = 'n';
		values[1] = Int64GetDatum(first_version - 1);
		values[2] = PointerGetDatum(construct_array(ids, n, UUIDOID, UUID_LEN, false, TYPALIGN_CHAR));
		values[3] = PointerGetDatum(construct_array(types, n, TEXTOID, -1, false, TYPALIGN_INT));
		values[4] = PointerGetDatum(construct_array(datas, n, JSONBOID, -1, false, TYPALIGN_INT));
		values[5] = PointerGetDatum(construct_md_array(metas, metanulls, 1, dims, lbs,
													   JSONBOID, -1, false, TYPALIGN_INT));
		values[9] = PointerGetDatum(construct_array(versions, n, INT4OID, sizeof(int32), true, TYPALIGN_INT));
	}

	EsRefuseBeforeRowTriggers(events_rel, "events");

	EsAllowNextWrite(events_rel, TRIGGER_EVENT_INSERT);
	rc = SPI_execute_plan(plan, values, nulls, false, 0);
	EsClearAllowedWrite();
	if (rc != SPI_OK_INSERT_RETURNING)
		elog(ERROR, "could not insert events: %s", SPI_result_code_string(rc));

	check_returned_rows(stream, events, n, first_version, recorded_at, tx_id, era, positions);
	/* under Citus, a position says which node's log the event is in */
	EsCheckNodeRange(positions[0]);
}

/*
 * write_outbox
 *		Hand the inserted batch to the outbox (outbox.c), which writes the
 *		events that a route selects.  Called only when routes exist.
 */
static void
write_outbox(text *stream, EsEvent *events, int n, int64 first_version,
			 const int64 *positions, Datum recorded_at)
{
	EsOutboxEvent *out = palloc(sizeof(EsOutboxEvent) * n);
	int			i;

	for (i = 0; i < n; i++)
	{
		out[i].id = UUIDPGetDatum(&events[i].id);
		out[i].type = events[i].type;
		out[i].schema_version = events[i].schema_version;
		out[i].data = events[i].data;
		out[i].metadata = events[i].metadata;
	}
	EsOutboxAppend(stream, n, first_version, positions, out, recorded_at);
}

/*
 * rethrow_as_conflict
 *		Called in PG_CATCH of the append: errors that mean "a concurrent
 *		append got there first" become the expected-version conflict, so no
 *		raw unique violation or bare serialization failure reaches the caller.
 *		Other errors are re-thrown unchanged.
 */
static void
rethrow_as_conflict(MemoryContext cxt, const char *stream, bool expected_null, int64 expected)
{
	ErrorData  *edata;
	bool		stream_statement = in_stream_statement;

	in_stream_statement = false;
	EsClearAllowedWrite();
	MemoryContextSwitchTo(cxt);
	edata = CopyErrorData();

	if (edata->sqlerrcode == ERRCODE_UNIQUE_VIOLATION &&
		edata->constraint_name != NULL &&
		/* events_stream_event_id_key: es_ext 0.1.0's schema, before ALTER EXTENSION UPDATE */
		(strcmp(edata->constraint_name, "events_stream_event_id_key") == 0 ||
		 strcmp(edata->constraint_name, "events_pkey") == 0 ||
		 strcmp(edata->constraint_name, "streams_pkey") == 0))
	{
		FlushErrorState();
		conflict_error(stream, expected_null, expected, -1,
					   "a concurrent transaction appended events with the same ids or versions.");
	}
	/*
	 * Under Citus, an append that Citus did not delegate to the node holding
	 * the stream runs here and sends its statements to that node, whose
	 * guard refuses them: nothing was written.  Say why (citus.c).
	 */
	if (edata->sqlerrcode == ERRCODE_S_R_E_PROHIBITED_SQL_STATEMENT_ATTEMPTED &&
		stream_statement && EsDistributed())
	{
		FlushErrorState();
		/*
		 * Delegated here (Citus runs the call in a backend of its own) but
		 * the stream's shard moved to another node meanwhile: the call waited
		 * for the move and then found the stream gone.  A retry is delegated
		 * to the new node.
		 */
		if (application_name != NULL && strncmp(application_name, "citus_internal", 14) == 0)
			ereport(ERROR,
					(errcode(ERRCODE_T_R_SERIALIZATION_FAILURE),
					 errmsg("stream \"%s\" moved to another node during the append", stream),
					 errdetail("A shard move or rebalance moved the stream's shard after the call was sent to its node; nothing was written."),
					 errhint("Retry the transaction.")));
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("es_append() must run on the node that holds stream \"%s\"", stream),
				 errdetail("On a distributed event store, Citus delegates es_append to that node when it is called by a statement of its own, SELECT es.es_append(...), also inside a transaction block; called from a query over several rows or from a function running on the coordinator, it is not delegated."),
				 errhint("Call es.es_append once per statement.")));
	}
	if (edata->sqlerrcode == ERRCODE_T_R_SERIALIZATION_FAILURE &&
		edata->constraint_name == NULL && stream_statement)
	{
		FlushErrorState();
		conflict_error(stream, expected_null, expected, -1,
					   "a concurrent transaction changed the stream since this transaction's snapshot was taken.");
	}
	FreeErrorData(edata);
	PG_RE_THROW();
}

/* The arguments of es_append, checked, and its batch, parsed. */
typedef struct AppendArgs
{
	text	   *stream;
	char	   *stream_str;
	bool		expected_null;
	int64		expected;
	EsEvent    *events;
	int			n;
	bool		with_ids;
	EsQuery    *condition;		/* NULL: an unconditional append */
	bool		have_after;		/* the condition's cursor, when given */
	int32		after_era;
	Datum		after_tx;
	int64		after_pos;
	/* set by the append (fields, not locals: they outlive its PG_TRY) */
	bool		replay;			/* an idempotent replay */
	int64		version;		/* the stream's version after it */
	EsToken		token;			/* the greatest log cursor of its events */
} AppendArgs;

/*
 * append_arguments
 *		Check the arguments of es_append and parse its batch into args;
 *		raises the error of the first bad one.
 */
static void
append_arguments(FunctionCallInfo fcinfo, AppendArgs *args)
{
	Jsonb	   *batch;

	args->replay = false;
	args->version = 0;
	args->token.valid = false;
	args->expected_null = PG_ARGISNULL(1);
	args->expected = args->expected_null ? 0 : PG_GETARG_INT64(1);

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("stream id cannot be null")));
	args->stream = PG_GETARG_TEXT_PP(0);
	if (VARSIZE_ANY_EXHDR(args->stream) == 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("stream id cannot be empty")));
	if (VARSIZE_ANY_EXHDR(args->stream) > ES_MAX_NAME_BYTES)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("stream id is too long"),
				 errdetail("Stream ids are limited to %d bytes; this one has %zu.",
						   ES_MAX_NAME_BYTES, (Size) VARSIZE_ANY_EXHDR(args->stream))));
	args->stream_str = text_to_cstring(args->stream);

	if (!args->expected_null && args->expected < ES_EXPECT_STREAM_EXISTS)
		ereport(ERROR,
				(errcode(ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE),
				 errmsg("expected version " INT64_FORMAT " is out of range", args->expected),
				 errdetail("Use a version >= 0 (0: the stream must not exist), -1 (the stream must exist) or NULL (any version).")));

	if (PG_ARGISNULL(2))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("events cannot be null")));
	batch = PG_GETARG_JSONB_P(2);

	args->events = EsParseBatch(batch, &args->n, &args->with_ids);

	/* es_append(..., fail_if_events_match jsonb, after es.log_cursor) */
	args->condition = NULL;
	args->have_after = false;
	if (PG_NARGS() >= 5)
	{
		args->have_after = !PG_ARGISNULL(4);
		if (!PG_ARGISNULL(3))
		{
			/* its locks would be on one node only (condition.c) */
			EsRefuseDistributed("es_append() with a condition",
								"Conditions across streams need one node; on a distributed event store, keep a rule within one stream and use expected_version.");
			args->condition = EsParseQuery(PG_GETARG_JSONB_P(3), "condition", true);
		}
		else if (args->have_after)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("after cannot be given without fail_if_events_match"),
					 errhint("Pass the condition's query in fail_if_events_match, or leave both NULL for an unconditional append.")));
		if (args->have_after)
			EsParseCursor(PG_GETARG_HEAPTUPLEHEADER(4), &args->after_era, &args->after_tx,
						  &args->after_pos);
	}
}

/*
 * append_arguments_counted
 *		append_arguments, counting a bad argument or batch as a refused
 *		batch (stats.c) before the error goes on; the stream id is the one
 *		append_arguments already read (nothing is detoasted again here).  Not inlined: a second
 *		PG_TRY in es_append would put its locals at risk of longjmp.
 */
static pg_noinline void
append_arguments_counted(FunctionCallInfo fcinfo, AppendArgs *args)
{
	args->stream = NULL;		/* until append_arguments has read it */
	PG_TRY();
	{
		append_arguments(fcinfo, args);
	}
	PG_CATCH();
	{
		/* bad input is a data exception (22) or a limit (54), not a cancel */
		int			category = ERRCODE_TO_CATEGORY(geterrcode());

		if (category == ERRCODE_DATA_EXCEPTION || category == ERRCODE_PROGRAM_LIMIT_EXCEEDED)
			EsStatsAppendFailed(args->stream ? VARDATA_ANY(args->stream) : NULL,
								args->stream ? VARSIZE_ANY_EXHDR(args->stream) : 0, false);
		PG_RE_THROW();
	}
	PG_END_TRY();
}

/*
 * write_batch
 *		Steps 3-6 of an append (see the head of this file), under SPI: the
 *		locks and the condition, the stream row, the ids, the encryption of
 *		personal fields, the chain, the insert, the outbox.  Sets
 *		args->version and args->token and fills positions[].
 */
static void
write_batch(AppendArgs *args, Datum given_ids, int64 *positions)
{
	Datum		stream_datum = PointerGetDatum(args->stream);
	EsEvent    *events = args->events;
	int			n = args->n;
	int32		era = EsAppendEra();
	int32		current_era = 0;	/* read only for a condition's cursor */
	Datum		tx_id = FullTransactionIdGetDatum(GetTopFullTransactionId());
	TimestampTz recorded_at;
	int64		first_version;
	Datum		log_tx_id;
	StreamState state = {0};
	Datum	   *hashes = NULL;

	/*
	 * The locks of the batch's tags and types and of its condition
	 * (condition.c), before the stream row lock; then the condition.
	 */
	if (args->condition != NULL && args->have_after)
		current_era = EsCheckConditionCursor(args->after_era, args->after_tx,
											 args->after_pos);
	EsLockWrite(events, n, args->condition);
	if (args->condition != NULL)
		EsCheckCondition(args->stream_str, args->condition, args->have_after,
						 args->after_era, args->after_tx, args->after_pos, current_era);

	EsRefuseBeforeRowTriggers(EsRelationOid("streams"), "streams");
	state.kind = schema_kind();
	args->version = advance_stream(args->stream_str, stream_datum, args->expected_null,
								   args->expected, n, tx_id, &log_tx_id, &state);
	refuse_stream_state(args->stream_str, state.archived, state.erased);
	first_version = args->version - n + 1;
	if (args->with_ids)
		check_ids_absent(args->stream_str, stream_datum, given_ids, args->expected_null,
						 args->expected);

	/* personal fields become ciphertext before they are hashed and stored */
	EsEncryptEvents(events, n);

	/* taken under the stream lock: non-decreasing within a stream */
	recorded_at = GetCurrentTimestamp();

	if (state.kind == CURRENT)
	{
		hashes = palloc(sizeof(Datum) * n);
		chain_batch(args->stream_str, stream_datum, events, n, first_version, recorded_at,
					&state, hashes);
	}

	insert_events(stream_datum, events, n, first_version, TimestampTzGetDatum(recorded_at),
				  log_tx_id, era, state.kind, hashes, positions);
	/* one era and tx_id for the batch, positions increasing */
	token_max(&args->token, era, log_tx_id, positions[n - 1]);

	/* 5. the outbox, in this transaction */
	if (EsOutboxActive())
		write_outbox(args->stream, events, n, first_version, positions,
					 TimestampTzGetDatum(recorded_at));

	/* 6. asynchronous projections: wake their worker at commit */
	EsProjectionWakeAtCommit();
}

/*
 * EsAppendSystemEvent
 *		Append one event of es_ext's own (an erasure's tombstone) to the
 *		stream, at its next version, as es_append would: the locks of its
 *		type, the stream row, the chain, the outbox routes and the
 *		projection triggers.  The stream's state (archived, erased) does not
 *		refuse it.  The caller is inside SPI and has already locked the
 *		stream row in this transaction.
 */
void
EsAppendSystemEvent(text *stream, const char *type, Jsonb *data, Jsonb *metadata)
{
	AppendArgs	args;
	EsEvent		ev;
	int64		position;

	memset(&args, 0, sizeof(args));
	memset(&ev, 0, sizeof(ev));
	EsGenerateEventId(&ev.id);
	ev.type = cstring_to_text(type);
	ev.schema_version = 1;
	ev.data = data;
	ev.metadata = metadata;
	args.stream = stream;
	args.stream_str = text_to_cstring(stream);
	args.expected_null = true;
	args.events = &ev;
	args.n = 1;

	system_append = true;
	PG_TRY();
	{
		write_batch(&args, (Datum) 0, &position);
	}
	PG_FINALLY();
	{
		system_append = false;
	}
	PG_END_TRY();
}

PG_FUNCTION_INFO_V1(es_append);

/*
 * es_append(stream text, expected_version bigint, events jsonb)
 *		RETURNS es.append_result (version bigint, positions bigint[],
 *								  token es.log_cursor)
 *
 * expected_version: NULL = any, -1 = the stream must exist, 0 = the stream
 * must not exist, N > 0 = the stream must be at version N.
 *
 * token: the greatest log cursor of the appended events, or of the stored
 * events for an idempotent replay; es_wait_for(projection, token) waits
 * until a projection has applied them.  A result type without the token
 * (es_ext 0.1.0's, before ALTER EXTENSION UPDATE) gets the first two only.
 *
 * Statistics (stats.c): the call is timed; a refused batch, a conflict, an
 * idempotent replay and an append are counted where they are known.
 */
Datum
es_append(PG_FUNCTION_ARGS)
{
	AppendArgs	args;
	text	   *stream;
	char	   *stream_str;
	bool		expected_null;
	int64		expected;
	EsEvent    *events;
	int			n;
	int64	   *positions;
	TupleDesc	tupdesc;
	Datum		result[3];
	bool		result_nulls[3] = {false, false, false};
	Datum	   *posdatums;
	int			i;
	MemoryContext callcxt = CurrentMemoryContext;
	instr_time	start;

	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");

	EsCheckWritable("es_append()");
	/* a logical subscriber's log belongs to the origin (replica.c) */
	EsCheckNotSubscriber(ES_LOG_APPEND);

	/* 1. arguments: a bad one is a refused batch */
	EsStatsAppendBegin(&start);
	append_arguments_counted(fcinfo, &args);
	stream = args.stream;
	stream_str = args.stream_str;
	expected_null = args.expected_null;
	expected = args.expected;
	events = args.events;
	n = args.n;
	positions = palloc0(sizeof(int64) * n);

	/* 2-4. write, under SPI */
	PG_TRY();
	{
		Datum		stream_datum = PointerGetDatum(stream);
		Datum		given_ids = (Datum) 0;

		if (SPI_connect() != SPI_OK_CONNECT)
			elog(ERROR, "SPI_connect failed");

		/* tenancy: another tenant's stream is refused before any lookup */
		EsTenantCheckStream(stream_datum);

		if (args.with_ids)
		{
			given_ids = given_ids_array(events, n);
			args.replay = find_existing(stream_str, stream_datum, given_ids, events, n,
										positions, &args.version, &args.token);
		}

		if (!args.replay)
			write_batch(&args, given_ids, positions);

		SPI_finish();
	}
	PG_CATCH();
	{
		rethrow_as_conflict(callcxt, stream_str, expected_null, expected);
	}
	PG_END_TRY();

	/* result, in the caller's memory context */
	posdatums = palloc(sizeof(Datum) * n);
	for (i = 0; i < n; i++)
		posdatums[i] = Int64GetDatum(positions[i]);
	result[0] = Int64GetDatum(args.version);
	result[1] = PointerGetDatum(construct_array(posdatums, n, INT8OID, sizeof(int64),
												FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
	if (tupdesc->natts >= 3)
	{
		if (!args.token.valid)
			elog(ERROR, "es_append has no log cursor for its events");
		result[2] = token_datum(&args.token, TupleDescAttr(tupdesc, 2)->atttypid);
	}
	tupdesc = BlessTupleDesc(tupdesc);
	EsStatsAppendEnd(&start, stream_str, VARSIZE_ANY_EXHDR(stream), events, n, args.replay);
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(tupdesc, result, result_nulls)));
}

PG_FUNCTION_INFO_V1(es_append_v2);

/*
 * es_append_v2
 *		es_append under the C name es_ext 0.2.0's SQL declaration uses.  The
 *		0.2.0 schema has no unique index on event ids: this code checks them
 *		under the stream row lock (check_ids_absent); es_append before 0.2.0
 *		relied on the index.  A session that loaded the earlier library
 *		before the package upgrade keeps running its code; once ALTER
 *		EXTENSION UPDATE has rebound es.es_append to this name, its next call
 *		fails ("could not find function") instead of appending given ids a
 *		second time.  "es_append" stays exported for a 0.1.0 schema that has
 *		not been updated yet (its unique index still holds).
 */
Datum
es_append_v2(PG_FUNCTION_ARGS)
{
	return es_append(fcinfo);
}
