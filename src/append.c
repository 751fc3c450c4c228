/*-------------------------------------------------------------------------
 *
 * append.c
 *	  es_append: append a batch of events to one stream, atomically, with
 *	  optimistic concurrency and idempotent retries.
 *
 * An append is, in order:
 *
 *	1. Validate the arguments and parse the JSON batch entirely in C, before
 *	   any statement runs, so bad input writes nothing.
 *	2. If the batch carries event ids, look them up in the stream: a batch
 *	   that was already appended returns its original result and writes
 *	   nothing; a batch that only partly overlaps is refused.
 *	3. Advance the stream row with a single UPDATE (or INSERT ... ON CONFLICT
 *	   DO NOTHING for a new stream).  The row lock plus READ COMMITTED's
 *	   recheck turn a stale expectation into "zero rows": a clean conflict
 *	   reported as SQLSTATE 40001 with constraint es_expected_version.  The
 *	   row lock is held to the end of the transaction and serializes all
 *	   appends to the stream, so versions are contiguous.
 *	4. Insert the whole batch with one INSERT ... SELECT ... FROM unnest()
 *	   (or a one-row INSERT for a single event), tagged with the top-level
 *	   transaction id that orders the global log (see read.c).
 *	5. When outbox routes exist, write the routed events to the outbox in
 *	   the same transaction (outbox.c): one more statement, and none at all
 *	   when no route selects an event of the batch.
 *
 * All statements go through SPI saved plans written with qualified names, so
 * constraints, RLS and user triggers on es.events keep working and a hostile
 * search_path changes nothing.  The function is not SECURITY DEFINER: it runs
 * with the caller's privileges, and the guard trigger (guard.c) makes sure
 * the caller's INSERT/UPDATE privileges are usable only through here.
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

#include "access/htup_details.h"
#include "access/xact.h"
#include "access/xlog.h"
#include "catalog/pg_type.h"
#include "commands/trigger.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/numeric.h"
#include "utils/timestamp.h"
#include "utils/uuid.h"
#include "utils/xid8.h"

#include "es_ext.h"

/* One parsed event of the batch. */
typedef struct EsEvent
{
	bool		has_id;			/* id given by the caller? */
	pg_uuid_t	id;
	text	   *type;
	int32		schema_version;	/* "schema_version", default 1 */
	Jsonb	   *data;
	Jsonb	   *metadata;		/* NULL when absent or JSON null */
} EsEvent;

/* Error context while the batch is parsed. */
typedef struct EsParseContext
{
	int			index;			/* 1-based event number, 0 = whole batch */
	int			count;
} EsParseContext;

/*
 * True while es_append runs a statement on the stream row: a serialization
 * failure raised then (REPEATABLE READ / SERIALIZABLE: the row was changed
 * by a concurrent append) is reported as the expected-version conflict.
 * Serialization failures raised anywhere else pass through unchanged.
 */
static bool in_stream_statement = false;

/* Saved plans, prepared on first use. */
static EsPlan find_ids_plan = {
	NULL,
	"SELECT e.event_id, e.version, e.global_position"
	"  FROM es.events AS e"
	" WHERE e.stream_id OPERATOR(pg_catalog.=) $1"
	"   AND e.event_id OPERATOR(pg_catalog.=) ANY ($2)"
	" ORDER BY e.version",
	2, {TEXTOID, UUIDARRAYOID}
};

static EsPlan update_exact_plan = {
	NULL,
	"UPDATE es.streams AS s"
	"   SET version = s.version OPERATOR(pg_catalog.+) $3,"
	"       updated_at = pg_catalog.clock_timestamp(),"
	"       log_tx_id = GREATEST(s.log_tx_id, $4)"
	" WHERE s.stream_id OPERATOR(pg_catalog.=) $1"
	"   AND s.version OPERATOR(pg_catalog.=) $2"
	" RETURNING s.version, s.log_tx_id",
	4, {TEXTOID, INT8OID, INT8OID, XID8OID}
};

static EsPlan update_any_plan = {
	NULL,
	"UPDATE es.streams AS s"
	"   SET version = s.version OPERATOR(pg_catalog.+) $2,"
	"       updated_at = pg_catalog.clock_timestamp(),"
	"       log_tx_id = GREATEST(s.log_tx_id, $3)"
	" WHERE s.stream_id OPERATOR(pg_catalog.=) $1"
	" RETURNING s.version, s.log_tx_id",
	3, {TEXTOID, INT8OID, XID8OID}
};

static EsPlan insert_stream_plan = {
	NULL,
	"INSERT INTO es.streams AS s (stream_id, version, log_tx_id)"
	" VALUES ($1, $2, $3)"
	" ON CONFLICT (stream_id) DO NOTHING"
	" RETURNING s.version, s.log_tx_id",
	3, {TEXTOID, INT8OID, XID8OID}
};

/* the stream row's log_tx_id came from another cluster: take ours (era.c) */
static EsPlan reset_log_tx_id_plan = {
	NULL,
	"UPDATE es.streams AS s SET log_tx_id = $2"
	" WHERE s.stream_id OPERATOR(pg_catalog.=) $1"
	" RETURNING s.log_tx_id",
	2, {TEXTOID, XID8OID}
};

static EsPlan stream_version_plan = {
	NULL,
	"SELECT s.version FROM es.streams AS s"
	" WHERE s.stream_id OPERATOR(pg_catalog.=) $1",
	1, {TEXTOID}
};

static EsPlan insert_one_plan = {
	NULL,
	"INSERT INTO es.events AS e"
	"  (stream_id, version, event_id, event_type, data, metadata, recorded_at, era, tx_id,"
	"   schema_version)"
	" VALUES ($1, $2, $3, $4, $5, $6, $7, $9, $8, $10)"
	" RETURNING e.version, e.global_position",
	10, {TEXTOID, INT8OID, UUIDOID, TEXTOID, JSONBOID, JSONBOID, TIMESTAMPTZOID, XID8OID, INT4OID,
		INT4OID}
};

static EsPlan insert_many_plan = {
	NULL,
	"INSERT INTO es.events AS e"
	"  (stream_id, version, event_id, event_type, data, metadata, recorded_at, era, tx_id,"
	"   schema_version)"
	" SELECT $1, $2 OPERATOR(pg_catalog.+) u.o, u.i, u.t, u.d, u.m, $7, $9, $8, u.s"
	"   FROM ROWS FROM (pg_catalog.unnest($3), pg_catalog.unnest($4),"
	"                   pg_catalog.unnest($5), pg_catalog.unnest($6),"
	"                   pg_catalog.unnest($10))"
	"          WITH ORDINALITY AS u(i, t, d, m, s, o)"
	" RETURNING e.version, e.global_position",
	10, {TEXTOID, INT8OID, UUIDARRAYOID, TEXTARRAYOID, JSONBARRAYOID, JSONBARRAYOID,
		TIMESTAMPTZOID, XID8OID, INT4OID, INT4ARRAYOID}
};

static void
parse_error_callback(void *arg)
{
	EsParseContext *ctx = (EsParseContext *) arg;

	if (ctx->index > 0)
		errcontext("event %d of %d in the batch", ctx->index, ctx->count);
}

static const char *
jsonb_value_type_name(JsonbValue *v)
{
	switch (v->type)
	{
		case jbvNull:
			return "null";
		case jbvString:
			return "string";
		case jbvNumeric:
			return "number";
		case jbvBool:
			return "boolean";
		case jbvArray:
			return "array";
		case jbvObject:
			return "object";
		case jbvBinary:
			return JsonContainerIsObject(v->val.binary.data) ? "object" : "array";
		default:
			return "unknown";
	}
}

/*
 * check_metadata_id
 *		A correlation or causation id, when present in metadata, must be a
 *		string so that the expression indexes on them can serve lookups.
 */
static void
check_metadata_id(Jsonb *metadata, const char *key)
{
	JsonbValue	k;
	JsonbValue *v;

	k.type = jbvString;
	k.val.string.val = (char *) key;
	k.val.string.len = strlen(key);
	v = findJsonbValueFromContainer(&metadata->root, JB_FOBJECT, &k);
	if (v != NULL && v->type != jbvString)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("metadata key \"%s\" must be a JSON string", key),
				 errdetail("Got a JSON %s.", jsonb_value_type_name(v))));
}

/*
 * parse_event
 *		Parse one element of the batch into ev.  Raises an error for anything
 *		but an object with a string "type", a "data" member, an optional
 *		object "metadata" and an optional uuid string "id".
 */
static void
parse_event(JsonbValue *elem, EsEvent *ev)
{
	JsonbIterator *it;
	JsonbIteratorToken tok;
	JsonbValue	v;
	bool		have_type = false;
	bool		have_data = false;

	if (elem->type != jbvBinary || !JsonContainerIsObject(elem->val.binary.data))
		ereport(ERROR,
				(errcode(ERRCODE_SQL_JSON_OBJECT_NOT_FOUND),
				 errmsg("event must be a JSON object"),
				 errdetail("Got a JSON %s.", jsonb_value_type_name(elem))));

	if (elem->val.binary.len > es_max_event_size)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("event is too large"),
				 errdetail("The event takes %d bytes; the limit is %d bytes.",
						   elem->val.binary.len, es_max_event_size),
				 errhint("Raise \"es.max_event_size\", or store large payloads elsewhere and reference them.")));

	memset(ev, 0, sizeof(EsEvent));
	ev->schema_version = 1;
	it = JsonbIteratorInit(elem->val.binary.data);
	while ((tok = JsonbIteratorNext(&it, &v, true)) != WJB_DONE)
	{
		char	   *key;
		int			keylen;

		if (tok != WJB_KEY)
			continue;
		key = v.val.string.val;
		keylen = v.val.string.len;
		tok = JsonbIteratorNext(&it, &v, true);
		Assert(tok == WJB_VALUE);

		if (keylen == 4 && memcmp(key, "type", 4) == 0)
		{
			if (v.type != jbvString)
				ereport(ERROR,
						(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						 errmsg("event \"type\" must be a JSON string"),
						 errdetail("Got a JSON %s.", jsonb_value_type_name(&v))));
			if (v.val.string.len == 0)
				ereport(ERROR,
						(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						 errmsg("event \"type\" cannot be empty")));
			if (v.val.string.len > ES_MAX_NAME_BYTES)
				ereport(ERROR,
						(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
						 errmsg("event \"type\" is too long"),
						 errdetail("Event types are limited to %d bytes; this one has %d.",
								   ES_MAX_NAME_BYTES, v.val.string.len)));
			ev->type = cstring_to_text_with_len(v.val.string.val, v.val.string.len);
			have_type = true;
		}
		else if (keylen == 14 && memcmp(key, "schema_version", 14) == 0)
		{
			bool		ok = false;

			if (v.type == jbvNumeric)
			{
				int32		sv = 0;
				Datum		d = NumericGetDatum(v.val.numeric);

				if (!numeric_is_nan(v.val.numeric) && !numeric_is_inf(v.val.numeric))
				{
					Numeric		rounded = DatumGetNumeric(DirectFunctionCall2(numeric_round, d, Int32GetDatum(0)));

					if (DatumGetBool(DirectFunctionCall2(numeric_eq, d, NumericGetDatum(rounded))) &&
						DatumGetBool(DirectFunctionCall2(numeric_ge, d, DirectFunctionCall1(int4_numeric, Int32GetDatum(1)))) &&
						DatumGetBool(DirectFunctionCall2(numeric_le, d, DirectFunctionCall1(int4_numeric, Int32GetDatum(PG_INT32_MAX)))))
					{
						sv = DatumGetInt32(DirectFunctionCall1(numeric_int4, d));
						ok = true;
					}
				}
				ev->schema_version = sv;
			}
			if (!ok)
				ereport(ERROR,
						(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						 errmsg("event \"schema_version\" must be a positive integer"),
						 errdetail("Got a JSON %s.", jsonb_value_type_name(&v))));
		}
		else if (keylen == 4 && memcmp(key, "data", 4) == 0)
		{
			ev->data = JsonbValueToJsonb(&v);
			have_data = true;
		}
		else if (keylen == 8 && memcmp(key, "metadata", 8) == 0)
		{
			if (v.type == jbvNull)
				ev->metadata = NULL;
			else if (v.type == jbvBinary && JsonContainerIsObject(v.val.binary.data))
			{
				ev->metadata = JsonbValueToJsonb(&v);
				check_metadata_id(ev->metadata, "correlation_id");
				check_metadata_id(ev->metadata, "causation_id");
			}
			else
				ereport(ERROR,
						(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						 errmsg("event \"metadata\" must be a JSON object"),
						 errdetail("Got a JSON %s.", jsonb_value_type_name(&v))));
		}
		else if (keylen == 2 && memcmp(key, "id", 2) == 0)
		{
			if (v.type == jbvNull)
				ev->has_id = false;
			else if (v.type == jbvString)
			{
				char	   *s = pnstrdup(v.val.string.val, v.val.string.len);
				pg_uuid_t  *u;

				/* uuid_in reports invalid_text_representation (22P02) */
				u = DatumGetUUIDP(DirectFunctionCall1(uuid_in, CStringGetDatum(s)));
				ev->id = *u;
				ev->has_id = true;
			}
			else
				ereport(ERROR,
						(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						 errmsg("event \"id\" must be a JSON string holding a UUID"),
						 errdetail("Got a JSON %s.", jsonb_value_type_name(&v))));
		}
		else
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("unknown key \"%.*s\" in event", keylen, key),
					 errhint("An event is an object with the keys \"type\", \"data\", and optionally \"metadata\", \"id\" and \"schema_version\".")));
	}

	if (!have_type)
		ereport(ERROR,
				(errcode(ERRCODE_SQL_JSON_MEMBER_NOT_FOUND),
				 errmsg("event has no \"type\""),
				 errhint("An event is an object with the keys \"type\", \"data\", and optionally \"metadata\", \"id\" and \"schema_version\".")));
	if (!have_data)
		ereport(ERROR,
				(errcode(ERRCODE_SQL_JSON_MEMBER_NOT_FOUND),
				 errmsg("event has no \"data\""),
				 errhint("Use \"data\": {} for an event without a payload.")));
}

static int
uuid_cmp_internal(const void *a, const void *b)
{
	return memcmp(a, b, UUID_LEN);
}

/*
 * parse_batch
 *		Validate the batch and parse every event.  Returns a palloc'd array
 *		of *count events; sets *with_ids when at least one event has an id.
 */
static EsEvent *
parse_batch(Jsonb *batch, int *count, bool *with_ids)
{
	EsParseContext pctx;
	ErrorContextCallback errcb;
	EsEvent    *events;
	int			n;
	int			nids = 0;
	int			i;

	if (!JB_ROOT_IS_ARRAY(batch) || JB_ROOT_IS_SCALAR(batch))
		ereport(ERROR,
				(errcode(ERRCODE_SQL_JSON_ARRAY_NOT_FOUND),
				 errmsg("events must be a JSON array"),
				 errdetail("Got a JSON %s.",
						   JB_ROOT_IS_SCALAR(batch) ? "scalar" : "object"),
				 errhint("Pass a JSON array of event objects, e.g. '[{\"type\": \"Created\", \"data\": {}}]'.")));

	n = JB_ROOT_COUNT(batch);
	if (n == 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("events cannot be an empty array"),
				 errdetail("An append writes at least one event.")));
	if (n > es_max_batch_events)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("batch has too many events"),
				 errdetail("The batch has %d events; the limit is %d.", n, es_max_batch_events),
				 errhint("Raise \"es.max_batch_events\", or split the batch.")));
	if (VARSIZE(batch) > (Size) es_max_batch_size)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("batch is too large"),
				 errdetail("The batch takes %zu bytes; the limit is %d bytes.",
						   (Size) VARSIZE(batch), es_max_batch_size),
				 errhint("Raise \"es.max_batch_size\", or split the batch.")));

	events = palloc(sizeof(EsEvent) * n);

	pctx.count = n;
	errcb.callback = parse_error_callback;
	errcb.arg = &pctx;
	errcb.previous = error_context_stack;
	error_context_stack = &errcb;

	for (i = 0; i < n; i++)
	{
		JsonbValue *elem = getIthJsonbValueFromContainer(&batch->root, i);

		pctx.index = i + 1;
		parse_event(elem, &events[i]);
		if (events[i].has_id)
			nids++;
	}
	error_context_stack = errcb.previous;

	/* Ids must be unique within the batch. */
	if (nids > 1)
	{
		pg_uuid_t  *ids = palloc(sizeof(pg_uuid_t) * nids);
		int			j = 0;

		for (i = 0; i < n; i++)
			if (events[i].has_id)
				ids[j++] = events[i].id;
		qsort(ids, nids, sizeof(pg_uuid_t), uuid_cmp_internal);
		for (i = 1; i < nids; i++)
			if (memcmp(&ids[i - 1], &ids[i], UUID_LEN) == 0)
				ereport(ERROR,
						(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						 errmsg("event id \"%s\" appears more than once in the batch",
								DatumGetCString(DirectFunctionCall1(uuid_out, UUIDPGetDatum(&ids[i])))),
						 errdetail("Event ids identify events within a stream and must be unique.")));
		pfree(ids);
	}

	/* Generate the missing ids (random, version 4). */
	for (i = 0; i < n; i++)
	{
		if (events[i].has_id)
			continue;
		if (!pg_strong_random(events[i].id.data, UUID_LEN))
			ereport(ERROR,
					(errcode(ERRCODE_INTERNAL_ERROR),
					 errmsg("could not generate random values")));
		events[i].id.data[6] = (events[i].id.data[6] & 0x0f) | 0x40;
		events[i].id.data[8] = (events[i].id.data[8] & 0x3f) | 0x80;
	}

	*count = n;
	*with_ids = (nids > 0);
	return events;
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

	if (expected_null)
		snprintf(expbuf, sizeof(expbuf), "any version");
	else if (expected == ES_EXPECT_STREAM_EXISTS)
		snprintf(expbuf, sizeof(expbuf), "an existing stream");
	else if (expected == ES_EXPECT_NO_STREAM)
		snprintf(expbuf, sizeof(expbuf), "no stream (version 0)");
	else
		snprintf(expbuf, sizeof(expbuf), "version " INT64_FORMAT, expected);

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
current_stream_version(Datum stream)
{
	Datum		values[1];
	bool		isnull;
	int			rc;

	values[0] = stream;
	rc = SPI_execute_plan(EsGetPlan(&stream_version_plan), values, NULL, false, 1);
	if (rc != SPI_OK_SELECT)
		elog(ERROR, "could not read stream version: %s", SPI_result_code_string(rc));
	if (SPI_processed == 0)
		return 0;
	return DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
}

/*
 * find_existing
 *		Look up the batch's ids in the stream.  Returns false when none is
 *		there.  Returns true and fills positions[] / *version when the whole
 *		batch was appended before, in the same order.  Raises duplicate_object
 *		for a partial overlap.
 */
static bool
find_existing(const char *stream_str, Datum stream, EsEvent *events, int n,
			  int64 *positions, int64 *version)
{
	Datum	   *ids = palloc(sizeof(Datum) * n);
	Datum		values[2];
	int			nids = 0;
	int			rc;
	uint64		i;
	int64		first_version = 0;
	bool		in_order = true;

	for (i = 0; i < n; i++)
		if (events[i].has_id)
			ids[nids++] = UUIDPGetDatum(&events[i].id);

	values[0] = stream;
	values[1] = PointerGetDatum(construct_array(ids, nids, UUIDOID, UUID_LEN, false, TYPALIGN_CHAR));
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
		}

		if (in_order)
		{
			*version = first_version + n - 1;
			return true;
		}
	}

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
 * stream_row_result
 *		The (version, log_tx_id) returned by a statement on the stream row.
 */
static int64
stream_row_result(Datum *log_tx_id)
{
	bool		isnull;

	*log_tx_id = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull);
	return DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
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
					 int64 *version, Datum *log_tx_id)
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
	*version = stream_row_result(log_tx_id);

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
			   int64 expected, int n, Datum tx_id, Datum *log_tx_id)
{
	Datum		values[4];
	int64		version;
	int			attempt;

	values[0] = stream;

	if (expected_null || expected == ES_EXPECT_STREAM_EXISTS)
	{
		/* update_any_plan and insert_stream_plan: (stream, n, tx_id) */
		values[1] = Int64GetDatum(n);
		values[2] = tx_id;
		for (attempt = 0; attempt < 3; attempt++)
		{
			if (run_stream_statement(&update_any_plan, TRIGGER_EVENT_UPDATE, values,
									 &version, log_tx_id))
				return version;
			if (!expected_null)
				conflict_error(stream_str, false, expected, 0, NULL);

			/* "any": create the stream; if someone else just did, update it */
			if (run_stream_statement(&insert_stream_plan, TRIGGER_EVENT_INSERT, values,
									 &version, log_tx_id))
				return version;
		}
		conflict_error(stream_str, true, 0, -1,
					   "the stream was created and removed concurrently.");
	}

	if (expected == ES_EXPECT_NO_STREAM)
	{
		values[1] = Int64GetDatum(n);
		values[2] = tx_id;
		if (run_stream_statement(&insert_stream_plan, TRIGGER_EVENT_INSERT, values,
								 &version, log_tx_id))
			return version;
	}
	else
	{
		values[1] = Int64GetDatum(expected);
		values[2] = Int64GetDatum(n);
		values[3] = tx_id;
		if (run_stream_statement(&update_exact_plan, TRIGGER_EVENT_UPDATE, values,
								 &version, log_tx_id))
			return version;
	}

	conflict_error(stream_str, false, expected, current_stream_version(stream), NULL);
	return 0;					/* keep compiler quiet */
}

/*
 * insert_events
 *		Insert the batch as versions first_version .. first_version + n - 1.
 *		Fills positions[] in batch order.
 */
static void
insert_events(Datum stream, EsEvent *events, int n, int64 first_version,
			  Datum recorded_at, Datum tx_id, int32 era, int64 *positions)
{
	Oid			events_rel = EsRelationOid("events");
	Datum		values[10];
	char		nulls[10];
	SPIPlanPtr	plan;
	int			rc;
	uint64		i;

	memset(nulls, ' ', sizeof(nulls));
	values[0] = stream;
	values[6] = recorded_at;
	values[7] = tx_id;
	values[8] = Int32GetDatum(era);

	if (n == 1)
	{
		plan = EsGetPlan(&insert_one_plan);
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

		plan = EsGetPlan(&insert_many_plan);
		values[1] = Int64GetDatum(first_version - 1);
		values[2] = PointerGetDatum(construct_array(ids, n, UUIDOID, UUID_LEN, false, TYPALIGN_CHAR));
		values[3] = PointerGetDatum(construct_array(types, n, TEXTOID, -1, false, TYPALIGN_INT));
		values[4] = PointerGetDatum(construct_array(datas, n, JSONBOID, -1, false, TYPALIGN_INT));
		values[5] = PointerGetDatum(construct_md_array(metas, metanulls, 1, dims, lbs,
													   JSONBOID, -1, false, TYPALIGN_INT));
		values[9] = PointerGetDatum(construct_array(versions, n, INT4OID, sizeof(int32), true, TYPALIGN_INT));
	}

	EsAllowNextWrite(events_rel, TRIGGER_EVENT_INSERT);
	rc = SPI_execute_plan(plan, values, nulls, false, 0);
	EsClearAllowedWrite();
	if (rc != SPI_OK_INSERT_RETURNING)
		elog(ERROR, "could not insert events: %s", SPI_result_code_string(rc));

	if (SPI_processed != (uint64) n)
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("a trigger on table \"es.events\" skipped %d of the %d events of the batch",
						n - (int) SPI_processed, n),
				 errdetail("A BEFORE INSERT row trigger on es.events returned NULL."),
				 errhint("Projections are AFTER INSERT triggers; a stream cannot have gaps.")));
	for (i = 0; i < SPI_processed; i++)
	{
		bool		isnull;
		int64		v = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1, &isnull));
		int64		gp = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 2, &isnull));

		Assert(v >= first_version && v < first_version + n);
		positions[v - first_version] = gp;
	}
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
		(strcmp(edata->constraint_name, "events_stream_event_id_key") == 0 ||
		 strcmp(edata->constraint_name, "events_pkey") == 0 ||
		 strcmp(edata->constraint_name, "streams_pkey") == 0))
	{
		FlushErrorState();
		conflict_error(stream, expected_null, expected, -1,
					   "a concurrent transaction appended events with the same ids or versions.");
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

PG_FUNCTION_INFO_V1(es_append);

/*
 * es_append(stream text, expected_version bigint, events jsonb)
 *		RETURNS es.append_result (version bigint, positions bigint[])
 *
 * expected_version: NULL = any, -1 = the stream must exist, 0 = the stream
 * must not exist, N > 0 = the stream must be at version N.
 */
Datum
es_append(PG_FUNCTION_ARGS)
{
	text	   *stream;
	char	   *stream_str;
	bool		expected_null = PG_ARGISNULL(1);
	int64		expected = expected_null ? 0 : PG_GETARG_INT64(1);
	Jsonb	   *batch;
	EsEvent    *events;
	int			n;
	bool		with_ids;
	int64	   *positions;
	int64		version = 0;
	bool		replay = false;
	TupleDesc	tupdesc;
	Datum		result[2];
	bool		result_nulls[2] = {false, false};
	Datum	   *posdatums;
	int			i;
	MemoryContext callcxt = CurrentMemoryContext;

	/* 1. arguments */
	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("stream id cannot be null")));
	stream = PG_GETARG_TEXT_PP(0);
	if (VARSIZE_ANY_EXHDR(stream) == 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("stream id cannot be empty")));
	if (VARSIZE_ANY_EXHDR(stream) > ES_MAX_NAME_BYTES)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("stream id is too long"),
				 errdetail("Stream ids are limited to %d bytes; this one has %zu.",
						   ES_MAX_NAME_BYTES, (Size) VARSIZE_ANY_EXHDR(stream))));
	stream_str = text_to_cstring(stream);

	if (!expected_null && expected < ES_EXPECT_STREAM_EXISTS)
		ereport(ERROR,
				(errcode(ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE),
				 errmsg("expected version " INT64_FORMAT " is out of range", expected),
				 errdetail("Use a version >= 0 (0: the stream must not exist), -1 (the stream must exist) or NULL (any version).")));

	if (PG_ARGISNULL(2))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("events cannot be null")));
	batch = PG_GETARG_JSONB_P(2);

	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");

	events = parse_batch(batch, &n, &with_ids);
	positions = palloc0(sizeof(int64) * n);

	/* 2-4. write, under SPI */
	PG_TRY();
	{
		Datum		stream_datum = PointerGetDatum(stream);

		if (SPI_connect() != SPI_OK_CONNECT)
			elog(ERROR, "SPI_connect failed");

		if (with_ids)
			replay = find_existing(stream_str, stream_datum, events, n, positions, &version);

		if (!replay)
		{
			int32		era = EsAppendEra();
			Datum		tx_id = FullTransactionIdGetDatum(GetTopFullTransactionId());
			Datum		recorded_at;
			int64		first_version;
			Datum		log_tx_id;

			version = advance_stream(stream_str, stream_datum, expected_null, expected, n,
									 tx_id, &log_tx_id);
			first_version = version - n + 1;

			/* taken under the stream lock: non-decreasing within a stream */
			recorded_at = TimestampTzGetDatum(GetCurrentTimestamp());

			insert_events(stream_datum, events, n, first_version,
						  recorded_at, log_tx_id, era, positions);

			/* 5. the outbox, in this transaction */
			if (EsOutboxActive())
				write_outbox(stream, events, n, first_version, positions, recorded_at);
		}

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
	result[0] = Int64GetDatum(version);
	result[1] = PointerGetDatum(construct_array(posdatums, n, INT8OID, sizeof(int64),
												FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
	tupdesc = BlessTupleDesc(tupdesc);
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(tupdesc, result, result_nulls)));
}
