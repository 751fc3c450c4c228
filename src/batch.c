/*-------------------------------------------------------------------------
 *
 * batch.c
 *	  Parse and validate the JSON batch that es_append receives.
 *
 * The whole batch is parsed in C before es_append runs any statement, so
 * bad input writes nothing: the batch must be a non-empty JSON array within
 * es.max_batch_events and es.max_batch_size; each element an object with a
 * string "type" (at most ES_MAX_NAME_BYTES), a "data" member, an optional
 * object "metadata" (whose correlation and causation ids, when present, are
 * strings), an optional array "tags" of distinct non-empty strings (at most
 * ES_MAX_EVENT_TAGS, see EsJsonStringArray), an optional "personal"
 * declaration (crypto.c: EsParsePersonal), an optional uuid string "id"
 * and an optional positive integer "schema_version", within
 * es.max_event_size.  Ids must be unique in the
 * batch; missing ids are generated (time-ordered, version 7: see
 * EsGenerateEventId).  Errors name the
 * event through an error context ("event N of M in the batch").
 *
 * Memory: the parsed events live in the caller's memory context.  No SPI,
 * no locks.
 *
 * src/batch.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "fmgr.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/numeric.h"
#include "utils/timestamp.h"
#include "utils/uuid.h"

#include "es_ext.h"

/* Error context while the batch is parsed. */
typedef struct EsParseContext
{
	int			index;			/* 1-based event number, 0 = whole batch */
	int			count;
} EsParseContext;

static void
parse_error_callback(void *arg)
{
	EsParseContext *ctx = (EsParseContext *) arg;

	if (ctx->index > 0)
		errcontext("event %d of %d in the batch", ctx->index, ctx->count);
}

/*
 * EsGenerateEventId
 *		A new event id: a UUID version 7 (RFC 9562), 48 bits of Unix time in
 *		milliseconds, then 74 bits from pg_strong_random.  The 12 bits after
 *		the time (rand_a) count up when this backend generates several ids in
 *		the same millisecond, so one backend's ids are strictly increasing
 *		(RFC 9562, section 6.2, method 1); if the clock goes back, the last
 *		time is kept.
 *
 *		Increasing ids keep the inserts into the event id index on its
 *		rightmost leaf (nbtree's fast path for ascending keys) instead of a
 *		random one: a cheaper insert, less WAL, no random page splits.  The
 *		ids are unique by their randomness, as version 4 ids were; es_append
 *		needs no check for them.
 */
void
EsGenerateEventId(pg_uuid_t *id)
{
	static int64 last_ms = 0;
	static uint16 counter = 0;
	int64		ms;
	uint8		rnd[8];

	ms = (int64) ((GetCurrentTimestamp() / 1000) +
				  (int64) (POSTGRES_EPOCH_JDATE - UNIX_EPOCH_JDATE) * SECS_PER_DAY * 1000);
	if (ms > last_ms)
	{
		last_ms = ms;
		counter = 0;
	}
	else if (++counter > 0x0fff)
	{
		/* 4096 ids in one millisecond: borrow the next one */
		last_ms++;
		counter = 0;
	}
	ms = last_ms;

	if (!pg_strong_random(rnd, sizeof(rnd)))
		ereport(ERROR,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("could not generate random values")));

	id->data[0] = (uint8) (ms >> 40);
	id->data[1] = (uint8) (ms >> 32);
	id->data[2] = (uint8) (ms >> 24);
	id->data[3] = (uint8) (ms >> 16);
	id->data[4] = (uint8) (ms >> 8);
	id->data[5] = (uint8) ms;
	/* version 7, then the 12-bit counter (rand_a) */
	id->data[6] = 0x70 | (uint8) ((counter >> 8) & 0x0f);
	id->data[7] = (uint8) counter;
	/* variant 10, then 62 random bits (rand_b) */
	id->data[8] = 0x80 | (rnd[0] & 0x3f);
	memcpy(&id->data[9], &rnd[1], 7);
}

/*
 * EsJsonbTypeName
 *		The JSON type of v, for error details ("Got a JSON number.").
 */
const char *
EsJsonbTypeName(JsonbValue *v)
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
				 errdetail("Got a JSON %s.", EsJsonbTypeName(v))));
}

/*
 * EsCheckMetadataIds
 *		The rule es_append applies to an event's metadata object, for other
 *		writers (es_import): its correlation and causation ids, when present,
 *		are strings.
 */
void
EsCheckMetadataIds(Jsonb *metadata)
{
	check_metadata_id(metadata, "correlation_id");
	check_metadata_id(metadata, "causation_id");
}

static int
text_cmp_internal(const void *a, const void *b)
{
	text	   *ta = *(text *const *) a;
	text	   *tb = *(text *const *) b;
	int			la = VARSIZE_ANY_EXHDR(ta);
	int			lb = VARSIZE_ANY_EXHDR(tb);
	int			c = memcmp(VARDATA_ANY(ta), VARDATA_ANY(tb), Min(la, lb));

	return c != 0 ? c : (la > lb) - (la < lb);
}

/*
 * EsJsonStringArray
 *		The JSON array v of non-empty strings as a text[] (order kept), or
 *		NULL for JSON null or an empty array.  what names the member in
 *		errors ("event \"tags\"", "query item \"types\""); at most max_items
 *		strings of at most ES_MAX_NAME_BYTES bytes each, and no string twice
 *		(a set: a repeated tag or type is a client bug, not a wish).  Raises
 *		invalid_parameter_value for a wrong shape, program_limit_exceeded
 *		past a limit.
 */
ArrayType *
EsJsonStringArray(JsonbValue *v, const char *what, int max_items)
{
	JsonbIterator *it;
	JsonbIteratorToken tok;
	JsonbValue	elem;
	text	  **items;
	text	  **sorted;
	int			n;
	int			i = 0;

	if (v->type == jbvNull)
		return NULL;
	if (v->type != jbvBinary || !JsonContainerIsArray(v->val.binary.data))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s must be a JSON array of strings", what),
				 errdetail("Got a JSON %s.", EsJsonbTypeName(v))));
	n = JsonContainerSize(v->val.binary.data);
	if (n == 0)
		return NULL;
	if (n > max_items)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("%s has too many elements", what),
				 errdetail("It has %d elements; the limit is %d.", n, max_items)));

	items = palloc(sizeof(text *) * n);
	it = JsonbIteratorInit(v->val.binary.data);
	while ((tok = JsonbIteratorNext(&it, &elem, true)) != WJB_DONE)
	{
		if (tok != WJB_ELEM)
			continue;
		if (elem.type != jbvString)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("%s must be a JSON array of strings", what),
					 errdetail("Element %d is a JSON %s.", i + 1, EsJsonbTypeName(&elem))));
		if (elem.val.string.len == 0)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("%s cannot contain an empty string", what)));
		if (elem.val.string.len > ES_MAX_NAME_BYTES)
			ereport(ERROR,
					(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
					 errmsg("element %d of %s is too long", i + 1, what),
					 errdetail("Elements are limited to %d bytes; this one has %d.",
							   ES_MAX_NAME_BYTES, elem.val.string.len)));
		items[i++] = cstring_to_text_with_len(elem.val.string.val, elem.val.string.len);
	}
	Assert(i == n);

	sorted = palloc(sizeof(text *) * n);
	memcpy(sorted, items, sizeof(text *) * n);
	qsort(sorted, n, sizeof(text *), text_cmp_internal);
	for (i = 1; i < n; i++)
		if (text_cmp_internal(&sorted[i - 1], &sorted[i]) == 0)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("%s contains \"%s\" more than once", what, text_to_cstring(sorted[i]))));
	pfree(sorted);

	return construct_array((Datum *) items, n, TEXTOID, -1, false, TYPALIGN_INT);
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
				 errdetail("Got a JSON %s.", EsJsonbTypeName(elem))));

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
						 errdetail("Got a JSON %s.", EsJsonbTypeName(&v))));
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
			EsCheckUserEventType(v.val.string.val, v.val.string.len);
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
						 errdetail("Got a JSON %s.", EsJsonbTypeName(&v))));
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
				EsCheckReservedMetadata(ev->metadata);
			}
			else
				ereport(ERROR,
						(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						 errmsg("event \"metadata\" must be a JSON object"),
						 errdetail("Got a JSON %s.", EsJsonbTypeName(&v))));
		}
		else if (keylen == 8 && memcmp(key, "personal", 8) == 0)
			EsParsePersonal(&v, ev);	/* crypto.c */
		else if (keylen == 4 && memcmp(key, "tags", 4) == 0)
			ev->tags = EsJsonStringArray(&v, "event \"tags\"", ES_MAX_EVENT_TAGS);
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
						 errdetail("Got a JSON %s.", EsJsonbTypeName(&v))));
		}
		else
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("unknown key \"%.*s\" in event", keylen, key),
					 errhint("An event is an object with the keys \"type\", \"data\", and optionally \"metadata\", \"tags\", \"personal\", \"id\" and \"schema_version\".")));
	}

	if (!have_type)
		ereport(ERROR,
				(errcode(ERRCODE_SQL_JSON_MEMBER_NOT_FOUND),
				 errmsg("event has no \"type\""),
				 errhint("An event is an object with the keys \"type\", \"data\", and optionally \"metadata\", \"tags\", \"personal\", \"id\" and \"schema_version\".")));
	if (!have_data)
		ereport(ERROR,
				(errcode(ERRCODE_SQL_JSON_MEMBER_NOT_FOUND),
				 errmsg("event has no \"data\""),
				 errhint("Use \"data\": {} for an event without a payload.")));
	if (ev->personal != NULL)
		EsCheckPersonal(ev);
}

static int
uuid_cmp_internal(const void *a, const void *b)
{
	return memcmp(a, b, UUID_LEN);
}

/*
 * EsCheckUserEventType
 *		Refuse the tombstone's event type in an event a user appends or
 *		imports: only es_erase_stream writes it (through
 *		EsAppendSystemEvent), so that a read model or consumer that erases
 *		its rows on a tombstone cannot be fooled by a forged one.
 */
void
EsCheckUserEventType(const char *type, int len)
{
	if (len == strlen(ES_TOMBSTONE_TYPE) && memcmp(type, ES_TOMBSTONE_TYPE, len) == 0)
		ereport(ERROR,
				(errcode(ERRCODE_RESERVED_NAME),
				 errmsg("event type \"%s\" is reserved", ES_TOMBSTONE_TYPE),
				 errdetail("Only es_erase_stream appends the tombstone of an erased stream.")));
}

/*
 * EsParseBatch
 *		Validate the batch and parse every event.  Returns a palloc'd array
 *		of *count events; sets *with_ids when at least one event has an id.
 */
EsEvent *
EsParseBatch(Jsonb *batch, int *count, bool *with_ids)
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

	/* Generate the missing ids (time-ordered, version 7). */
	for (i = 0; i < n; i++)
		if (!events[i].has_id)
			EsGenerateEventId(&events[i].id);

	*count = n;
	*with_ids = (nids > 0);
	return events;
}
