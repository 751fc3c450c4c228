/*-------------------------------------------------------------------------
 *
 * event.c
 *	  One event as the user functions es_ext calls see it: a view of the
 *	  columns of an es.events row, and its JSON envelope.
 *
 * Reducers (fold.c, fold_agg.c) and upcasters (upcast.c) taking an event as
 * jsonb receive the envelope
 *
 *	{"type": ..., "data": ..., "metadata": ..., "version": ...,
 *	 "stream_id": ..., "recorded_at": ..., "global_position": ...,
 *	 "event_id": ..., "schema_version": ...}
 *
 * where "data" and "schema_version" are the upcast ones, "metadata" is JSON
 * null when the column is NULL, and "recorded_at" is an ISO 8601 string in
 * UTC (independent of the session's TimeZone, so that a state stored in a
 * snapshot does not depend on the session that folded it).
 *
 * The envelope is built once per event of a fold, so it is serialized
 * directly into jsonb's binary format (see utils/jsonb.h): an object of
 * nine pairs whose keys are in jsonb's storage order (shorter first, then
 * bytewise), whose "data" and "metadata" containers are copied verbatim from
 * the stored values instead of being unpacked and re-encoded, and whose
 * other values are strings and numerics.  The result is byte for byte what
 * JsonbValueToJsonb builds (envelope_generic, still used for scalar or huge
 * payloads); builds with assertions, or with ES_CHECK_ENVELOPE defined,
 * compare the two for every event.
 *
 * The column positions of es.events are looked up by name in the row
 * descriptor (EsEventAttrsInit) rather than hard-coded, so adding a column
 * to es.events does not break the readers.
 *
 * Memory: EsEventEnvelope allocates the envelope, and all its temporary
 * data, in the caller's current memory context; callers reset it per event.
 *
 * src/event.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "lib/stringinfo.h"
#include "utils/builtins.h"
#include "utils/datetime.h"
#include "utils/json.h"
#include "utils/jsonb.h"
#include "utils/numeric.h"
#include "utils/uuid.h"

#include "es_ext.h"

/*
 * find_attr
 *		1-based number of the live column called name in desc; an error when
 *		it is missing (the extension's tables are not what this library
 *		expects).
 */
static AttrNumber
find_attr(TupleDesc desc, const char *name)
{
	int			i;

	for (i = 0; i < desc->natts; i++)
	{
		Form_pg_attribute att = TupleDescAttr(desc, i);

		if (!att->attisdropped && strcmp(NameStr(att->attname), name) == 0)
			return (AttrNumber) (i + 1);
	}
	ereport(ERROR,
			(errcode(ERRCODE_UNDEFINED_COLUMN),
			 errmsg("column \"%s\" of relation \"es.events\" does not exist", name),
			 errhint("The es_ext library and its installed SQL objects do not match; run ALTER EXTENSION es_ext UPDATE.")));
	return InvalidAttrNumber;	/* keep compiler quiet */
}

/*
 * EsEventAttrsInit
 *		Fill attrs with the positions of the es.events columns in desc, the
 *		descriptor of es.events' row type.
 */
void
EsEventAttrsInit(EsEventAttrs *attrs, TupleDesc desc)
{
	attrs->global_position = find_attr(desc, "global_position");
	attrs->stream_id = find_attr(desc, "stream_id");
	attrs->version = find_attr(desc, "version");
	attrs->event_id = find_attr(desc, "event_id");
	attrs->event_type = find_attr(desc, "event_type");
	attrs->schema_version = find_attr(desc, "schema_version");
	attrs->data = find_attr(desc, "data");
	attrs->metadata = find_attr(desc, "metadata");
	attrs->recorded_at = find_attr(desc, "recorded_at");
	attrs->natts = desc->natts;
}

/*
 * EsEventViewFromValues
 *		Point ev at the columns of a deformed es.events row.  The datums are
 *		not copied: ev is valid as long as values is.
 */
void
EsEventViewFromValues(EsEventView *ev, const EsEventAttrs *attrs,
					  Datum *values, bool *nulls)
{
	/*
	 * Stored events have no nulls but metadata; an es.events value built by
	 * the caller (es_upcast, es_fold_agg) may have any.
	 */
	static const char *const names[] = {
		"global_position", "stream_id", "version", "event_id", "event_type",
		"schema_version", "data", "recorded_at"
	};
	AttrNumber	required[8];
	int			i;

	required[0] = attrs->global_position;
	required[1] = attrs->stream_id;
	required[2] = attrs->version;
	required[3] = attrs->event_id;
	required[4] = attrs->event_type;
	required[5] = attrs->schema_version;
	required[6] = attrs->data;
	required[7] = attrs->recorded_at;
	for (i = 0; i < lengthof(required); i++)
		if (nulls[required[i] - 1])
			ereport(ERROR,
					(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
					 errmsg("event has a null %s", names[i]),
					 errdetail("Only metadata may be null in an es.events value.")));

	ev->global_position = values[attrs->global_position - 1];
	ev->stream_id = values[attrs->stream_id - 1];
	ev->version = values[attrs->version - 1];
	ev->event_id = values[attrs->event_id - 1];
	ev->event_type = values[attrs->event_type - 1];
	ev->schema_version = DatumGetInt32(values[attrs->schema_version - 1]);
	ev->data = values[attrs->data - 1];
	ev->metadata = values[attrs->metadata - 1];
	ev->metadata_isnull = nulls[attrs->metadata - 1];
	ev->recorded_at = values[attrs->recorded_at - 1];
}

static void
push_key(JsonbParseState **ps, const char *key)
{
	JsonbValue	k;

	k.type = jbvString;
	k.val.string.val = (char *) key;
	k.val.string.len = strlen(key);
	pushJsonbValue(ps, WJB_KEY, &k);
}

static void
push_string(JsonbParseState **ps, const char *key, char *str, int len)
{
	JsonbValue	v;

	push_key(ps, key);
	v.type = jbvString;
	v.val.string.val = str;
	v.val.string.len = len;
	pushJsonbValue(ps, WJB_VALUE, &v);
}

static void
push_int(JsonbParseState **ps, const char *key, int64 n)
{
	JsonbValue	v;

	push_key(ps, key);
	v.type = jbvNumeric;
	v.val.numeric = int64_to_numeric(n);
	pushJsonbValue(ps, WJB_VALUE, &v);
}

static void
push_jsonb(JsonbParseState **ps, const char *key, Jsonb *jb)
{
	JsonbValue	v;

	push_key(ps, key);
	if (jb == NULL)
		v.type = jbvNull;
	else
	{
		v.type = jbvBinary;
		v.val.binary.data = &jb->root;
		v.val.binary.len = VARSIZE(jb) - VARHDRSZ;
	}
	pushJsonbValue(ps, WJB_VALUE, &v);
}

/*
 * envelope_generic
 *		The envelope built through pushJsonbValue (data and metadata are
 *		unpacked and re-encoded).
 */
static Jsonb *
envelope_generic(const EsEventView *ev, Jsonb *data, Jsonb *metadata)
{
	JsonbParseState *ps = NULL;
	JsonbValue *res;
	text	   *t;
	char	   *s;
	static const int utc = 0;

	pushJsonbValue(&ps, WJB_BEGIN_OBJECT, NULL);

	t = DatumGetTextPP(ev->event_type);
	push_string(&ps, "type", VARDATA_ANY(t), VARSIZE_ANY_EXHDR(t));
	push_jsonb(&ps, "data", data);
	push_jsonb(&ps, "metadata", metadata);
	push_int(&ps, "version", DatumGetInt64(ev->version));
	t = DatumGetTextPP(ev->stream_id);
	push_string(&ps, "stream_id", VARDATA_ANY(t), VARSIZE_ANY_EXHDR(t));
	s = JsonEncodeDateTime(NULL, ev->recorded_at, TIMESTAMPTZOID, &utc);
	push_string(&ps, "recorded_at", s, strlen(s));
	push_int(&ps, "global_position", DatumGetInt64(ev->global_position));
	s = DatumGetCString(DirectFunctionCall1(uuid_out, ev->event_id));
	push_string(&ps, "event_id", s, strlen(s));
	push_int(&ps, "schema_version", ev->schema_version);

	res = pushJsonbValue(&ps, WJB_END_OBJECT, NULL);
	return JsonbValueToJsonb(res);
}

/* Envelope keys in jsonb's storage order: by length, then bytewise. */
#define ENV_NPAIRS 9
static const char *const env_keys[ENV_NPAIRS] = {
	"data", "type", "version", "event_id", "metadata",
	"stream_id", "recorded_at", "schema_version", "global_position"
};

/* pad buf with zero bytes to a 4-byte boundary (jsonb's INTALIGN) */
static void
env_pad(StringInfo buf)
{
	static const char zeros[4] = {0, 0, 0, 0};
	int			pad = INTALIGN(buf->len) - buf->len;

	if (pad > 0)
		appendBinaryStringInfo(buf, zeros, pad);
}

/* append a string value; its JEntry */
static JEntry
env_string(StringInfo buf, const char *s, int len)
{
	appendBinaryStringInfo(buf, s, len);
	return JENTRY_ISSTRING | len;
}

/* append a numeric value (aligned, with its varlena header); its JEntry */
static JEntry
env_numeric(StringInfo buf, Numeric n)
{
	int			start = buf->len;

	env_pad(buf);
	appendBinaryStringInfo(buf, (const char *) n, VARSIZE_ANY(n));
	return JENTRY_ISNUMERIC | (buf->len - start);
}

/*
 * env_jsonb
 *		Append a jsonb value (NULL: JSON null): an object or array root is
 *		copied as a nested container -- the copy starts on a 4-byte boundary
 *		like the original root, so its internal alignment stays valid -- and
 *		a scalar root is stored as the scalar.  Returns its JEntry.
 */
static JEntry
env_jsonb(StringInfo buf, Jsonb *jb)
{
	int			start = buf->len;
	JsonbValue	v;

	if (jb == NULL)
		return JENTRY_ISNULL;
	if (!JB_ROOT_IS_SCALAR(jb))
	{
		env_pad(buf);
		appendBinaryStringInfo(buf, VARDATA(jb), VARSIZE(jb) - VARHDRSZ);
		return JENTRY_ISCONTAINER | (buf->len - start);
	}
	if (!JsonbExtractScalar(&jb->root, &v))
		elog(ERROR, "could not extract a scalar from a scalar jsonb");
	switch (v.type)
	{
		case jbvNull:
			return JENTRY_ISNULL;
		case jbvBool:
			return v.val.boolean ? JENTRY_ISBOOL_TRUE : JENTRY_ISBOOL_FALSE;
		case jbvString:
			return env_string(buf, v.val.string.val, v.val.string.len);
		case jbvNumeric:
			return env_numeric(buf, v.val.numeric);
		default:
			elog(ERROR, "unexpected jsonb scalar type %d", (int) v.type);
	}
	return JENTRY_ISNULL;		/* keep compiler quiet */
}

/*
 * EsEventEnvelope
 *		The event as a jsonb object (see the file header), allocated in the
 *		current memory context.
 */
Jsonb *
EsEventEnvelope(const EsEventView *ev)
{
	Jsonb	   *data = DatumGetJsonbP(ev->data);
	Jsonb	   *metadata = ev->metadata_isnull ? NULL : DatumGetJsonbP(ev->metadata);
	text	   *type = DatumGetTextPP(ev->event_type);
	text	   *stream = DatumGetTextPP(ev->stream_id);
	pg_uuid_t  *id = DatumGetUUIDP(ev->event_id);
	StringInfoData buf;
	JEntry		entries[2 * ENV_NPAIRS];
	int			entries_at;
	uint32		header = ENV_NPAIRS | JB_FOBJECT;
	char		ts[MAXDATELEN + 1];
	char		uuid[2 * UUID_LEN + 4];
	static const int utc = 0;
	static const char hex[] = "0123456789abcdef";
	int			i,
				j;
	Jsonb	   *result;

	if (VARSIZE(data) > ES_ENVELOPE_MAX_PAYLOAD ||
		(metadata != NULL && VARSIZE(metadata) > ES_ENVELOPE_MAX_PAYLOAD))
		return envelope_generic(ev, data, metadata);

	initStringInfo(&buf);
	enlargeStringInfo(&buf, VARHDRSZ + sizeof(uint32) + sizeof(entries) + 256 +
					  VARSIZE(data) + (metadata ? VARSIZE(metadata) : 0) +
					  VARSIZE_ANY_EXHDR(type) + VARSIZE_ANY_EXHDR(stream));

	/* varlena header (set at the end), root header, room for the JEntries */
	buf.len = VARHDRSZ;
	appendBinaryStringInfo(&buf, (const char *) &header, sizeof(header));
	entries_at = buf.len;
	buf.len += sizeof(entries);

	/* keys; the first JEntry of every JB_OFFSET_STRIDE holds an end offset */
	for (i = 0; i < ENV_NPAIRS; i++)
		entries[i] = env_string(&buf, env_keys[i], strlen(env_keys[i]));
	entries[0] |= JENTRY_HAS_OFF;

	/* values, in the order of their keys */
	entries[ENV_NPAIRS + 0] = env_jsonb(&buf, data);
	entries[ENV_NPAIRS + 1] = env_string(&buf, VARDATA_ANY(type), VARSIZE_ANY_EXHDR(type));
	entries[ENV_NPAIRS + 2] = env_numeric(&buf, int64_to_numeric(DatumGetInt64(ev->version)));
	for (i = 0, j = 0; i < UUID_LEN; i++)
	{
		if (i == 4 || i == 6 || i == 8 || i == 10)
			uuid[j++] = '-';
		uuid[j++] = hex[id->data[i] >> 4];
		uuid[j++] = hex[id->data[i] & 0x0F];
	}
	entries[ENV_NPAIRS + 3] = env_string(&buf, uuid, j);
	entries[ENV_NPAIRS + 4] = env_jsonb(&buf, metadata);
	entries[ENV_NPAIRS + 5] = env_string(&buf, VARDATA_ANY(stream), VARSIZE_ANY_EXHDR(stream));
	JsonEncodeDateTime(ts, ev->recorded_at, TIMESTAMPTZOID, &utc);
	entries[ENV_NPAIRS + 6] = env_string(&buf, ts, strlen(ts));
	entries[ENV_NPAIRS + 7] = env_numeric(&buf, int64_to_numeric(ev->schema_version));
	entries[ENV_NPAIRS + 8] = env_numeric(&buf, int64_to_numeric(DatumGetInt64(ev->global_position)));

	memcpy(buf.data + entries_at, entries, sizeof(entries));
	result = (Jsonb *) buf.data;
	SET_VARSIZE(result, buf.len);

#if defined(USE_ASSERT_CHECKING) || defined(ES_CHECK_ENVELOPE)
	{
		Jsonb	   *check = envelope_generic(ev, data, metadata);

		if (VARSIZE(check) != VARSIZE(result) ||
			memcmp(check, result, VARSIZE(result)) != 0)
			elog(ERROR, "envelope of event " INT64_FORMAT " differs from the generic one",
				 DatumGetInt64(ev->version));
	}
#endif

	return result;
}
