/*-------------------------------------------------------------------------
 *
 * chain.c
 *	  The hash chain of a stream: the one home of the canonical form of an
 *	  event and of the hash that chains it to its predecessor.
 *
 * Each event stores, in es.events.hash,
 *
 *		h(v) = SHA-256("es_ext chain 1" || h(v - 1) || canonical(event v))
 *
 * where h(first_version - 1) is es.streams.base_hash (32 zero bytes when
 * NULL, i.e. for a stream that still starts at version 1).  The canonical
 * form is every covered field as a 4-byte big-endian length followed by its
 * bytes (length 0xFFFFFFFF for NULL; strings in UTF-8, whatever the
 * database's encoding), in this order: stream_id, version
 * (int8, big-endian), event_id (16 bytes), event_type, schema_version (int4,
 * big-endian), data and metadata (jsonb's text output: the same value always
 * prints the same way, whatever its binary form or TOAST state), tags (a
 * 4-byte count then each tag, or NULL), recorded_at (microseconds, int8,
 * big-endian).  data is hashed as stored: an encrypted field is hashed as
 * its ciphertext, so destroying a key rewrites nothing and breaks nothing.
 *
 * Not covered: global_position, era and tx_id, i.e. the order of events of
 * different streams in the global log.  The order within a stream is
 * covered (the version, and the chain itself).
 *
 * Memory: the text forms and the hash context are allocated in the current
 * memory context and freed before return.
 *
 * src/chain.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "mb/pg_wchar.h"
#include "utils/jsonb.h"

#include "es_ext.h"

#define CHAIN_DOMAIN	"es_ext chain 1"

static void
hash_uint32(EsHash *ctx, uint32 v)
{
	uint8		b[4];

	b[0] = (uint8) (v >> 24);
	b[1] = (uint8) (v >> 16);
	b[2] = (uint8) (v >> 8);
	b[3] = (uint8) v;
	EsHashRaw(ctx, b, sizeof(b));
}

static void
hash_uint64(EsHash *ctx, uint64 v)
{
	hash_uint32(ctx, (uint32) (v >> 32));
	hash_uint32(ctx, (uint32) v);
}

/* a field: its length, then its bytes; NULL as length 0xFFFFFFFF */
static void
hash_field(EsHash *ctx, const void *p, uint32 len)
{
	if (p == NULL)
	{
		hash_uint32(ctx, 0xFFFFFFFF);
		return;
	}
	hash_uint32(ctx, len);
	EsHashRaw(ctx, p, len);
}

/*
 * A string as UTF-8 (a no-op in a UTF8 database): the chain of an event does
 * not change when a dump is restored into a database of another encoding.
 */
static void
hash_string(EsHash *ctx, const char *s, int len)
{
	char	   *u = pg_server_to_any(s, len, PG_UTF8);

	if (u == s)
		hash_field(ctx, s, (uint32) len);
	else
	{
		hash_field(ctx, u, (uint32) strlen(u));
		pfree(u);
	}
}

static void
hash_text(EsHash *ctx, const text *t)
{
	if (t == NULL)
		hash_field(ctx, NULL, 0);
	else
		hash_string(ctx, VARDATA_ANY(t), VARSIZE_ANY_EXHDR(t));
}

static void
hash_jsonb(EsHash *ctx, Jsonb *j)
{
	char	   *s;

	if (j == NULL)
	{
		hash_field(ctx, NULL, 0);
		return;
	}
	s = JsonbToCString(NULL, &j->root, VARSIZE(j));
	hash_string(ctx, s, strlen(s));
	pfree(s);
}

static void
hash_tags(EsHash *ctx, ArrayType *tags)
{
	Datum	   *elems;
	bool	   *nulls;
	int			n;
	int			i;

	if (tags == NULL)
	{
		hash_field(ctx, NULL, 0);
		return;
	}
	deconstruct_array(tags, TEXTOID, -1, false, TYPALIGN_INT, &elems, &nulls, &n);
	hash_uint32(ctx, (uint32) n);
	for (i = 0; i < n; i++)
		hash_text(ctx, nulls[i] ? NULL : DatumGetTextPP(elems[i]));
	pfree(elems);
	pfree(nulls);
}

/*
 * EsEventHash
 *		The chain hash of the event in, whose predecessor's hash is prev
 *		(ES_HASH_LENGTH bytes; NULL: 32 zero bytes), into out
 *		(ES_HASH_LENGTH bytes).  in's jsonb and array fields must be
 *		detoasted (as es_append's parsed batch and heap_deform_tuple with
 *		PG_DETOAST_DATUM give them).
 */
void
EsEventHash(const uint8 *prev, const EsHashInput *in, uint8 *out)
{
	static const uint8 zero[ES_HASH_LENGTH] = {0};
	EsHash	   *ctx = EsHashBegin();

	EsHashRaw(ctx, CHAIN_DOMAIN, strlen(CHAIN_DOMAIN));
	EsHashRaw(ctx, prev ? prev : zero, ES_HASH_LENGTH);
	hash_text(ctx, in->stream);
	hash_uint32(ctx, 8);
	hash_uint64(ctx, (uint64) in->version);
	hash_field(ctx, in->id->data, UUID_LEN);
	hash_text(ctx, in->type);
	hash_uint32(ctx, 4);
	hash_uint32(ctx, (uint32) in->schema_version);
	hash_jsonb(ctx, in->data);
	hash_jsonb(ctx, in->metadata);
	hash_tags(ctx, in->tags);
	hash_uint32(ctx, 8);
	hash_uint64(ctx, (uint64) in->recorded_at);
	EsHashEnd(ctx, out);
}

/*
 * EsHashDatum
 *		A chain hash as a bytea datum, in the current memory context.
 */
Datum
EsHashDatum(const uint8 *hash)
{
	bytea	   *b = palloc(VARHDRSZ + ES_HASH_LENGTH);

	memcpy(VARDATA(b), hash, ES_HASH_LENGTH);
	SET_VARSIZE(b, VARHDRSZ + ES_HASH_LENGTH);
	return PointerGetDatum(b);
}

/*
 * EsHashFromDatum
 *		Copy a stored chain hash (bytea) into out; false when it does not
 *		have ES_HASH_LENGTH bytes (a damaged or edited row).
 */
bool
EsHashFromDatum(Datum d, uint8 *out)
{
	bytea	   *b = DatumGetByteaPP(d);

	if (VARSIZE_ANY_EXHDR(b) != ES_HASH_LENGTH)
		return false;
	memcpy(out, VARDATA_ANY(b), ES_HASH_LENGTH);
	return true;
}
