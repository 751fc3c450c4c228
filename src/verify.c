/*-------------------------------------------------------------------------
 *
 * verify.c
 *	  Tamper evidence: check the hash chain of each stream (es_verify,
 *	  es_verify_all), list and digest the stream heads (es_heads, es_digest)
 *	  and check the store against an earlier export of the heads
 *	  (es_verify_heads).
 *
 * Every event carries h(v) = EsEventHash(h(v-1), event v) (chain.c); the
 * chain of a stream starts at es.streams.first_version from base_hash (NULL:
 * 32 zero bytes).  Verifying a stream recomputes the chain from its stored
 * events in version order and reports the FIRST thing that does not match,
 * one row per damaged stream (verify_heapam's shape: an empty result means
 * verified):
 *
 *	- 'no stream row'		events whose stream has no es.streams row
 *	- 'unexpected event'	an event below first_version, a version stored
 *							twice, an event beyond the stream's version whose
 *							hash does not chain, or an event inserted before
 *							the one that belongs at its version
 *	- 'missing'				a version absent below the stream's version
 *	- 'no hash'				an event without a hash
 *	- 'content changed'		the event differs from what its stored hash
 *							covers (the next event chains from the stored
 *							hash; for the last event: the event or its hash)
 *	- 'hash changed'		the stored hash differs from the event's, which
 *							the next event chains from
 *	- 'out of order'		two events exchanged their versions
 *	- 'stream head mismatch' the events end at another version than
 *							es.streams.version says
 *	- 'erasure mismatch'	the stream row and the tombstone disagree: a
 *							tombstone (es.stream_erased, which only
 *							es_erase_stream writes) that is not the last
 *							event, or of a stream not marked erased (an
 *							erasure undone), or an erased stream whose last
 *							event is not its tombstone
 *
 * To name the kind of a hash mismatch at version v, the rows after it are
 * tested as they stream past (no second read): the next row chained from the
 * stored or the recomputed hash of v, and each later row chained at version
 * v (the event that belongs there, moved).  The row at v is also tested at
 * version v-1 (an event inserted before it, with a hash computed for its
 * place).  This costs hashing only in a damaged stream.
 *
 * es_verify_all reads es.streams and the events (es.events, and
 * es.archived_events when that table exists, looked up by name at each call)
 * with two cursors in stream order, under one snapshot, and merges them:
 * one pass over the log, memory bounded by a fetch batch plus one event (a
 * per-row context is reset after each event, a per-stream one after each
 * stream), CHECK_FOR_INTERRUPTS for every event.  Problems go to a
 * tuplestore (spills to disk past work_mem).
 *
 * The whole check needs to see every event: it refuses to run while row
 * level security applies to es.events or es.streams (as es_import does).
 *
 * src/verify.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "catalog/pg_collation.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rls.h"
#include "utils/timestamp.h"
#include "utils/tuplestore.h"
#include "utils/uuid.h"

#include "es_ext.h"

/* the columns of a problem row (es_verify, es_verify_all, es_verify_heads) */
#define VERIFY_NCOLUMNS		6

/* the event columns the cursors read, in this order */
#define EVENT_COLUMNS \
	"stream_id, version, event_id, event_type, schema_version, data, metadata, tags," \
	" recorded_at, hash"
enum
{
	EC_STREAM = 1, EC_VERSION, EC_ID, EC_TYPE, EC_SCHEMA_VERSION, EC_DATA, EC_METADATA,
	EC_TAGS, EC_RECORDED_AT, EC_HASH
};

/* the stored events: es.events, with es.archived_events when it exists */
#define EVENTS_ONLY		"es.events"
#define EVENTS_ARCHIVED \
	"(SELECT " EVENT_COLUMNS " FROM es.events" \
	" UNION ALL SELECT " EVENT_COLUMNS " FROM es.archived_events)"

/* a cursor over a query's rows, fetched ES_FETCH_BATCH at a time */
typedef struct VerifyCursor
{
	Portal		portal;
	SPITupleTable *tuptable;
	uint64		n;
	uint64		next;
	bool		done;
	HeapTuple	row;			/* current row, valid until the next fetch */
} VerifyCursor;

/* the state of one stream being verified */
typedef enum
{
	VS_CHECKING,				/* the chain matches so far */
	VS_PENDING,					/* a hash mismatch at bad_version, kind unknown yet */
	VS_DONE						/* its problem is reported (or none) */
} VerifyState;

typedef struct VerifyStream
{
	text	   *stream;
	bool		has_row;		/* an es.streams row exists */
	int64		head;			/* es.streams.version */
	int64		first;			/* es.streams.first_version */
	int64		expect;			/* the next version the chain needs */
	uint8		prev[ES_HASH_LENGTH];	/* h(expect - 1) */
	uint8		prev2[ES_HASH_LENGTH];	/* h(expect - 2), when have_prev2 */
	bool		have_prev2;
	VerifyState state;
	/* VS_PENDING: the mismatch */
	int64		bad_version;
	EsHashInput bad;			/* the event at bad_version (copied) */
	uint8		bad_prev[ES_HASH_LENGTH];	/* h(bad_version - 1) */
	uint8		computed[ES_HASH_LENGTH];	/* its recomputed hash */
	bytea	   *stored;			/* its stored hash */
	bool		next_seen;		/* the row after it was tested */
	int64		last_version;	/* version and stored hash of the last row seen */
	bytea	   *last_stored;
	/* erasure: the stream row's state and the tombstone */
	bool		erased;			/* es.streams.erased_at is set */
	int64		tombstone;		/* version of the first tombstone chained, or 0 */
	bool		last_is_tombstone;	/* the last event chained is a tombstone */
} VerifyStream;

/* a run: the tuplestore the problems go to */
typedef struct VerifyRun
{
	Tuplestorestate *store;
	TupleDesc	desc;
	MemoryContext rowcxt;		/* reset after each event */
	MemoryContext streamcxt;	/* reset after each stream */
} VerifyRun;

static const uint8 zero_hash[ES_HASH_LENGTH];

/*
 * cursor_open, cursor_next, cursor_close
 *		Iterate a read-only SPI cursor of plan with args; cursor_next makes
 *		the next row current (false at the end).
 */
static void
cursor_open(VerifyCursor *c, SPIPlanPtr plan, Datum *args, const char *nulls)
{
	memset(c, 0, sizeof(*c));
	c->portal = SPI_cursor_open(NULL, plan, args, nulls, true);
}

static bool
cursor_next(VerifyCursor *c)
{
	if (c->done)
		return false;
	if (c->tuptable == NULL || c->next >= c->n)
	{
		if (c->tuptable != NULL)
			SPI_freetuptable(c->tuptable);
		c->tuptable = NULL;
		SPI_cursor_fetch(c->portal, true, ES_FETCH_BATCH);
		c->tuptable = SPI_tuptable;
		c->n = SPI_processed;
		c->next = 0;
		if (c->n == 0)
		{
			c->done = true;
			c->row = NULL;
			return false;
		}
	}
	c->row = c->tuptable->vals[c->next++];
	return true;
}

static void
cursor_close(VerifyCursor *c)
{
	if (c->tuptable != NULL)
		SPI_freetuptable(c->tuptable);
	SPI_cursor_close(c->portal);
}

/* column n of the current row of c */
static Datum
cursor_value(VerifyCursor *c, int n, bool *isnull)
{
	return SPI_getbinval(c->row, c->tuptable->tupdesc, n, isnull);
}

/*
 * EsRefuseRowSecurityForVerify
 *		The check must see every event and stream: refuse while row level
 *		security applies to es.events or es.streams for the caller.
 */
static void
refuse_row_security(const char *what)
{
	if (check_enable_rls(EsRelationOid("events"), InvalidOid, false) == RLS_ENABLED ||
		check_enable_rls(EsRelationOid("streams"), InvalidOid, false) == RLS_ENABLED)
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("cannot %s while row-level security applies to the event store", what),
				 errdetail("The hash chains can only be checked against every stored event, which row-level security could hide."),
				 errhint("Run it as the owner of es.events and es.streams or as a role with BYPASSRLS.")));
}

/* the stored events, as a FROM item */
static const char *
events_source(void)
{
	return OidIsValid(get_relname_relid("archived_events", EsSchemaOid())) ?
		EVENTS_ARCHIVED : EVENTS_ONLY;
}

/*
 * report
 *		Add a problem row to the run's tuplestore.  expected and stored: NULL
 *		when unknown or absent.
 */
static void
report(VerifyRun *run, text *stream, int64 version, bool version_null, const char *problem,
	   const uint8 *expected, bytea *stored, const char *detail)
{
	Datum		values[VERIFY_NCOLUMNS];
	bool		nulls[VERIFY_NCOLUMNS];

	memset(nulls, 0, sizeof(nulls));
	values[0] = PointerGetDatum(stream);
	values[1] = Int64GetDatum(version);
	nulls[1] = version_null;
	values[2] = CStringGetTextDatum(problem);
	if (expected != NULL)
	{
		bytea	   *b = palloc(VARHDRSZ + ES_HASH_LENGTH);

		SET_VARSIZE(b, VARHDRSZ + ES_HASH_LENGTH);
		memcpy(VARDATA(b), expected, ES_HASH_LENGTH);
		values[3] = PointerGetDatum(b);
	}
	else
		nulls[3] = true;
	values[4] = PointerGetDatum(stored);
	nulls[4] = (stored == NULL);
	values[5] = CStringGetTextDatum(detail);
	tuplestore_putvalues(run->store, run->desc, values, nulls);
}

/* does the stored hash s (a bytea, may be NULL) equal h? */
static bool
hash_equals(bytea *s, const uint8 *h)
{
	return s != NULL && VARSIZE_ANY_EXHDR(s) == ES_HASH_LENGTH &&
		memcmp(VARDATA_ANY(s), h, ES_HASH_LENGTH) == 0;
}

/*
 * row_input
 *		The hash input of the current event row of c, detoasted in the
 *		current memory context.
 */
static void
row_input(VerifyCursor *c, EsHashInput *in)
{
	bool		isnull;
	Datum		d;

	in->stream = DatumGetTextPP(cursor_value(c, EC_STREAM, &isnull));
	in->version = DatumGetInt64(cursor_value(c, EC_VERSION, &isnull));
	in->id = DatumGetUUIDP(cursor_value(c, EC_ID, &isnull));
	in->type = DatumGetTextPP(cursor_value(c, EC_TYPE, &isnull));
	in->schema_version = DatumGetInt32(cursor_value(c, EC_SCHEMA_VERSION, &isnull));
	in->data = DatumGetJsonbP(cursor_value(c, EC_DATA, &isnull));
	d = cursor_value(c, EC_METADATA, &isnull);
	in->metadata = isnull ? NULL : DatumGetJsonbP(d);
	d = cursor_value(c, EC_TAGS, &isnull);
	in->tags = isnull ? NULL : DatumGetArrayTypeP(d);
	in->recorded_at = DatumGetTimestampTz(cursor_value(c, EC_RECORDED_AT, &isnull));
}

/* the hash of in chained to prev, as if it were version "version" */
static void
hash_at(const uint8 *prev, const EsHashInput *in, int64 version, uint8 *out)
{
	EsHashInput at = *in;

	at.version = version;
	EsEventHash(prev, &at, out);
}

/* a copy of in in the current memory context */
static void
copy_input(const EsHashInput *in, EsHashInput *out)
{
	pg_uuid_t  *id = palloc(sizeof(pg_uuid_t));

	memcpy(id, in->id, sizeof(pg_uuid_t));
	*out = *in;
	out->stream = (text *) PG_DETOAST_DATUM_COPY(PointerGetDatum(in->stream));
	out->id = id;
	out->type = (text *) PG_DETOAST_DATUM_COPY(PointerGetDatum(in->type));
	out->data = (Jsonb *) PG_DETOAST_DATUM_COPY(PointerGetDatum(in->data));
	if (in->metadata != NULL)
		out->metadata = (Jsonb *) PG_DETOAST_DATUM_COPY(PointerGetDatum(in->metadata));
	if (in->tags != NULL)
		out->tags = (ArrayType *) PG_DETOAST_DATUM_COPY(PointerGetDatum(in->tags));
}

/* a copy of a bytea datum (NULL stays NULL) in the current memory context */
static bytea *
copy_bytea(Datum d, bool isnull)
{
	return isnull ? NULL : (bytea *) PG_DETOAST_DATUM_COPY(d);
}

/*
 * stream_begin
 *		Start verifying stream (copied into the stream context).  has_row:
 *		its es.streams row exists, with head, first and base (NULL: zeros).
 */
static void
stream_begin(VerifyRun *run, VerifyStream *vs, text *stream, bool has_row, int64 head,
			 int64 first, bytea *base, bool erased)
{
	MemoryContext old = MemoryContextSwitchTo(run->streamcxt);

	memset(vs, 0, sizeof(*vs));
	vs->erased = erased;
	vs->stream = (text *) PG_DETOAST_DATUM_COPY(PointerGetDatum(stream));
	vs->has_row = has_row;
	vs->head = head;
	vs->first = has_row ? first : 1;
	vs->expect = vs->first;
	vs->state = VS_CHECKING;
	if (has_row && base != NULL)
	{
		if (VARSIZE_ANY_EXHDR(base) != ES_HASH_LENGTH)
		{
			report(run, vs->stream, vs->first - 1, false, "no hash", NULL,
				   copy_bytea(PointerGetDatum(base), false),
				   "The base_hash of the stream row is not a SHA-256 hash.");
			vs->state = VS_DONE;
		}
		else
			memcpy(vs->prev, VARDATA_ANY(base), ES_HASH_LENGTH);
	}
	else
		memcpy(vs->prev, zero_hash, ES_HASH_LENGTH);
	MemoryContextSwitchTo(old);
}

/*
 * pending_row
 *		A row after a hash mismatch: name the mismatch if the row tells.
 */
static void
pending_row(VerifyRun *run, VerifyStream *vs, const EsHashInput *in, bytea *stored)
{
	uint8		h[ES_HASH_LENGTH];
	int64		v = in->version;

	if (!vs->next_seen)
	{
		vs->next_seen = true;
		if (v == vs->bad_version + 1 && stored != NULL)
		{
			if (VARSIZE_ANY_EXHDR(vs->stored) == ES_HASH_LENGTH)
			{
				EsEventHash((uint8 *) VARDATA_ANY(vs->stored), in, h);
				if (hash_equals(stored, h))
				{
					report(run, vs->stream, vs->bad_version, false, "content changed",
						   vs->computed, vs->stored,
						   vs->bad_version == vs->first && vs->first > 1 ?
						   psprintf("The stream's first stored event does not chain from its base_hash; version " INT64_FORMAT " chains from the stored hash: the event or the base hash was changed.",
									v) :
						   psprintf("The event differs from what its stored hash covers; version " INT64_FORMAT " chains from the stored hash.",
									v));
					vs->state = VS_DONE;
					return;
				}
			}
			EsEventHash(vs->computed, in, h);
			if (hash_equals(stored, h))
			{
				report(run, vs->stream, vs->bad_version, false, "hash changed",
					   vs->computed, vs->stored,
					   psprintf("The stored hash is not the event's; version " INT64_FORMAT " chains from the event's own hash.",
								v));
				vs->state = VS_DONE;
				return;
			}
		}
	}

	/* the event that belongs at bad_version, stored at another version? */
	if (stored != NULL)
	{
		hash_at(vs->bad_prev, in, vs->bad_version, h);
		if (hash_equals(stored, h))
		{
			bytea	   *before = (v == vs->bad_version + 1) ? stored :
				(vs->last_version == v - 1 ? vs->last_stored : NULL);
			bool		swapped = false;

			if (before != NULL && VARSIZE_ANY_EXHDR(before) == ES_HASH_LENGTH)
			{
				hash_at((uint8 *) VARDATA_ANY(before), &vs->bad, v, h);
				swapped = hash_equals(vs->stored, h);
			}
			if (swapped)
				report(run, vs->stream, vs->bad_version, false, "out of order",
					   vs->computed, vs->stored,
					   psprintf("Versions " INT64_FORMAT " and " INT64_FORMAT " were exchanged.",
								vs->bad_version, v));
			else
				report(run, vs->stream, vs->bad_version, false, "unexpected event",
					   vs->computed, vs->stored,
					   psprintf("The event that belongs at version " INT64_FORMAT " is stored as version " INT64_FORMAT "; the event stored in its place does not chain.",
								vs->bad_version, v));
			vs->state = VS_DONE;
			return;
		}
	}
	{
		MemoryContext old = MemoryContextSwitchTo(run->streamcxt);

		vs->last_version = v;
		vs->last_stored = stored == NULL ? NULL :
			copy_bytea(PointerGetDatum(stored), false);
		MemoryContextSwitchTo(old);
	}
}

/* is the event type es_erase_stream's tombstone? */
static bool
is_tombstone(text *type)
{
	return VARSIZE_ANY_EXHDR(type) == strlen(ES_TOMBSTONE_TYPE) &&
		memcmp(VARDATA_ANY(type), ES_TOMBSTONE_TYPE, strlen(ES_TOMBSTONE_TYPE)) == 0;
}

/*
 * stream_event
 *		The next stored event of the stream being verified, in version
 *		order: in is its hash input, stored its stored hash (NULL: none).
 */
static void
stream_event(VerifyRun *run, VerifyStream *vs, const EsHashInput *in, bytea *stored)
{
	int64		v = in->version;
	uint8		h[ES_HASH_LENGTH];
	MemoryContext old;

	if (vs->state == VS_DONE)
		return;
	if (vs->state == VS_PENDING)
	{
		pending_row(run, vs, in, stored);
		return;
	}

	if (!vs->has_row)
	{
		report(run, vs->stream, v, false, "no stream row", NULL, NULL,
			   "Events are stored for a stream that has no row in es.streams.");
		vs->state = VS_DONE;
		return;
	}
	if (v < vs->expect)
	{
		report(run, vs->stream, v, false, "unexpected event", NULL, stored,
			   v < vs->first ?
			   psprintf("Version " INT64_FORMAT " is below the stream's first version " INT64_FORMAT ".",
						v, vs->first) :
			   psprintf("Version " INT64_FORMAT " is stored twice.", v));
		vs->state = VS_DONE;
		return;
	}
	if (v > vs->expect)
	{
		if (vs->expect <= vs->head)
			report(run, vs->stream, vs->expect, false, "missing", vs->prev, NULL,
				   psprintf("The next stored event is version " INT64_FORMAT "; the expected hash is that of version " INT64_FORMAT ".",
							v, vs->expect - 1));
		else
			report(run, vs->stream, v, false, "unexpected event", NULL, stored,
				   psprintf("Version " INT64_FORMAT " is beyond the stream's version " INT64_FORMAT ".",
							v, vs->head));
		vs->state = VS_DONE;
		return;
	}
	if (stored == NULL)
	{
		report(run, vs->stream, v, false, v > vs->head ? "unexpected event" : "no hash",
			   NULL, NULL,
			   v > vs->head ?
			   psprintf("Version " INT64_FORMAT " is beyond the stream's version " INT64_FORMAT " and has no hash.",
						v, vs->head) :
			   pstrdup("The event has no hash."));
		vs->state = VS_DONE;
		return;
	}

	EsEventHash(vs->prev, in, h);
	if (hash_equals(stored, h))
	{
		memcpy(vs->prev2, vs->prev, ES_HASH_LENGTH);
		vs->have_prev2 = true;
		memcpy(vs->prev, h, ES_HASH_LENGTH);
		vs->expect++;
		vs->last_is_tombstone = is_tombstone(in->type);
		if (vs->last_is_tombstone && vs->tombstone == 0)
			vs->tombstone = v;
		return;
	}

	if (v > vs->head)
	{
		report(run, vs->stream, v, false, "unexpected event", h, stored,
			   psprintf("Version " INT64_FORMAT " is beyond the stream's version " INT64_FORMAT " and does not chain.",
						v, vs->head));
		vs->state = VS_DONE;
		return;
	}

	/* inserted before the event that was at v-1, with a hash for its place? */
	if (vs->have_prev2)
	{
		uint8		h2[ES_HASH_LENGTH];

		hash_at(vs->prev2, in, v - 1, h2);
		if (hash_equals(stored, h2))
		{
			report(run, vs->stream, v - 1, false, "unexpected event", NULL, NULL,
				   psprintf("The event stored as version " INT64_FORMAT " belongs at version " INT64_FORMAT ": another event was put in its place.",
							v, v - 1));
			vs->state = VS_DONE;
			return;
		}
	}

	/* a mismatch: the rows after it tell its kind */
	old = MemoryContextSwitchTo(run->streamcxt);
	vs->state = VS_PENDING;
	vs->bad_version = v;
	copy_input(in, &vs->bad);
	memcpy(vs->bad_prev, vs->prev, ES_HASH_LENGTH);
	memcpy(vs->computed, h, ES_HASH_LENGTH);
	vs->stored = copy_bytea(PointerGetDatum(stored), false);
	vs->last_version = v;
	vs->last_stored = vs->stored;
	MemoryContextSwitchTo(old);
}

/*
 * stream_end
 *		No more events for the stream being verified.
 */
static void
stream_end(VerifyRun *run, VerifyStream *vs)
{
	if (vs->state == VS_PENDING)
		report(run, vs->stream, vs->bad_version, false, "content changed",
			   vs->computed, vs->stored,
			   "The event or its stored hash was changed: the stored hash is not the hash of the event chained to the previous one.");
	else if (vs->state == VS_CHECKING && vs->has_row && vs->expect - 1 != vs->head)
		report(run, vs->stream, vs->head, false, "stream head mismatch",
			   vs->expect > vs->first ? vs->prev : NULL, NULL,
			   psprintf("The stream's events end at version " INT64_FORMAT "; its row in es.streams says version " INT64_FORMAT ".",
						vs->expect - 1, vs->head));
	else if (vs->state == VS_CHECKING && vs->has_row && vs->tombstone != 0 && !vs->last_is_tombstone)
		report(run, vs->stream, vs->tombstone + 1, false, "erasure mismatch", NULL, NULL,
			   psprintf("Events are stored after the stream's tombstone (version " INT64_FORMAT "): the erasure was undone.",
						vs->tombstone));
	else if (vs->state == VS_CHECKING && vs->has_row && vs->tombstone != 0 && !vs->erased)
		report(run, vs->stream, vs->tombstone, false, "erasure mismatch", NULL, NULL,
			   pstrdup("The stream's last event is its tombstone, but its row in es.streams is not marked erased: the erasure was undone."));
	else if (vs->state == VS_CHECKING && vs->has_row && vs->erased && !vs->last_is_tombstone)
		report(run, vs->stream, vs->head, false, "erasure mismatch", NULL, NULL,
			   pstrdup("The stream's row in es.streams is marked erased, but its last event is not its tombstone."));
	vs->state = VS_DONE;
	MemoryContextReset(run->streamcxt);
}

/* compare two stream ids as ORDER BY stream_id sorts them */
static int
stream_cmp(text *a, text *b)
{
	return DatumGetInt32(DirectFunctionCall2Coll(bttextcmp, DEFAULT_COLLATION_OID,
												 PointerGetDatum(a), PointerGetDatum(b)));
}

/* equal stream ids (deterministic collations compare equal only equal bytes) */
static bool
stream_eq(text *a, text *b)
{
	return VARSIZE_ANY_EXHDR(a) == VARSIZE_ANY_EXHDR(b) &&
		memcmp(VARDATA_ANY(a), VARDATA_ANY(b), VARSIZE_ANY_EXHDR(a)) == 0;
}

/*
 * verify_run
 *		Verify one stream (stream not NULL) or every stream: merge the
 *		es.streams rows and the stored events, both in stream order, and
 *		report the first problem of each stream into run.  Inside SPI.
 */
static void
verify_run(VerifyRun *run, text *stream)
{
	const char *source = events_source();
	char	   *streams_sql;
	char	   *events_sql;
	SPIPlanPtr	streams_plan;
	SPIPlanPtr	events_plan;
	Oid			argtype = TEXTOID;
	Datum		arg = PointerGetDatum(stream);
	VerifyCursor sc;
	VerifyCursor ec;
	bool		have_s;
	bool		have_e;
	VerifyStream vs;

	streams_sql = psprintf("SELECT stream_id, version, first_version, base_hash,"
						   " erased_at IS NOT NULL FROM es.streams%s"
						   " ORDER BY stream_id",
						   stream ? " WHERE stream_id OPERATOR(pg_catalog.=) $1" : "");
	events_sql = psprintf("SELECT " EVENT_COLUMNS " FROM %s AS e%s ORDER BY stream_id, version",
						  source, stream ? " WHERE stream_id OPERATOR(pg_catalog.=) $1" : "");
	streams_plan = SPI_prepare(streams_sql, stream ? 1 : 0, &argtype);
	events_plan = SPI_prepare(events_sql, stream ? 1 : 0, &argtype);
	if (streams_plan == NULL || events_plan == NULL)
		elog(ERROR, "SPI_prepare failed: %s", SPI_result_code_string(SPI_result));

	cursor_open(&sc, streams_plan, &arg, NULL);
	cursor_open(&ec, events_plan, &arg, NULL);
	have_s = cursor_next(&sc);
	have_e = cursor_next(&ec);
	while (have_s || have_e)
	{
		bool		isnull;
		text	   *sid = NULL;
		text	   *eid = NULL;
		int			cmp;

		CHECK_FOR_INTERRUPTS();
		if (have_s)
			sid = DatumGetTextPP(cursor_value(&sc, 1, &isnull));
		if (have_e)
			eid = DatumGetTextPP(cursor_value(&ec, EC_STREAM, &isnull));
		cmp = !have_s ? -1 : !have_e ? 1 : stream_cmp(eid, sid);

		if (cmp >= 0)
		{
			bool		base_null;
			Datum		base = cursor_value(&sc, 4, &base_null);

			stream_begin(run, &vs, sid, true,
						 DatumGetInt64(cursor_value(&sc, 2, &isnull)),
						 DatumGetInt64(cursor_value(&sc, 3, &isnull)),
						 base_null ? NULL : DatumGetByteaPP(base),
						 DatumGetBool(cursor_value(&sc, 5, &isnull)));
		}
		else
			stream_begin(run, &vs, eid, false, 0, 1, NULL, false);
		if (cmp >= 0)
			have_s = cursor_next(&sc);
		if (cmp <= 0)
		{
			/* the stream's events */
			for (;;)
			{
				EsHashInput in;
				bool		hnull;
				Datum		hash;
				MemoryContext old;

				CHECK_FOR_INTERRUPTS();
				old = MemoryContextSwitchTo(run->rowcxt);
				row_input(&ec, &in);
				hash = cursor_value(&ec, EC_HASH, &hnull);
				stream_event(run, &vs, &in, hnull ? NULL : DatumGetByteaPP(hash));
				MemoryContextSwitchTo(old);
				MemoryContextReset(run->rowcxt);
				have_e = cursor_next(&ec);
				if (!have_e)
					break;
				eid = DatumGetTextPP(cursor_value(&ec, EC_STREAM, &isnull));
				if (!stream_eq(eid, vs.stream))
					break;
			}
		}
		stream_end(run, &vs);
	}
	cursor_close(&sc);
	cursor_close(&ec);
}

/*
 * verify_srf
 *		es_verify and es_verify_all: the problems of one stream (stream not
 *		NULL) or of every stream, as a materialized set.
 */
static void
verify_srf(FunctionCallInfo fcinfo, text *stream, const char *what)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	VerifyRun	run;

	InitMaterializedSRF(fcinfo, 0);
	run.store = rsinfo->setResult;
	run.desc = rsinfo->setDesc;
	if (run.desc->natts != VERIFY_NCOLUMNS)
		elog(ERROR, "%s must return %d columns", what, VERIFY_NCOLUMNS);
	refuse_row_security(what);
	run.rowcxt = AllocSetContextCreate(CurrentMemoryContext, "es_verify row",
									   ALLOCSET_DEFAULT_SIZES);
	run.streamcxt = AllocSetContextCreate(CurrentMemoryContext, "es_verify stream",
										  ALLOCSET_DEFAULT_SIZES);
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	verify_run(&run, stream);
	SPI_finish();
	MemoryContextDelete(run.rowcxt);
	MemoryContextDelete(run.streamcxt);
}

PG_FUNCTION_INFO_V1(es_verify);

/*
 * es_verify(stream text)
 *		RETURNS TABLE (stream_id text, version bigint, problem text,
 *					   expected_hash bytea, stored_hash bytea, detail text)
 *
 * The first problem of the stream's hash chain (see the file header); no
 * row when the chain verifies.  A stream that does not exist has no events
 * and verifies (es_stream_version says 0 for it).  NULL: 22004.
 */
Datum
es_verify(PG_FUNCTION_ARGS)
{
	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("stream cannot be null")));
	verify_srf(fcinfo, PG_GETARG_TEXT_PP(0), "verify a stream");
	return (Datum) 0;
}

PG_FUNCTION_INFO_V1(es_verify_all);

/*
 * es_verify_all()
 *		RETURNS TABLE (as es_verify)
 *
 * The first problem of every stream (streams rows, and events whose stream
 * has no row), in stream order; no row when every chain verifies.  One pass
 * over the log under one snapshot (see the file header).
 */
Datum
es_verify_all(PG_FUNCTION_ARGS)
{
	verify_srf(fcinfo, NULL, "verify every stream");
	return (Datum) 0;
}

/*
 * Stream heads.  The head of a stream is (stream_id, first_version,
 * version, head_hash): head_hash is h(version), the stored hash of its last
 * event, or base_hash when no event is left (zeros when NULL).  The digest
 * is SHA-256 over "es_ext heads 1" and every head in stream_id order by
 * bytes (COLLATE "C", the same on every server): stream_id (4-byte
 * big-endian length and bytes), first_version and version (8 bytes
 * big-endian each) and head_hash (4-byte length and bytes; 0xFFFFFFFF when
 * NULL).
 */
#define HEADS_SQL \
	"SELECT s.stream_id, s.first_version, s.version," \
	"       CASE WHEN s.version OPERATOR(pg_catalog.>=) s.first_version" \
	"            THEN (SELECT e.hash FROM %s AS e" \
	"                   WHERE e.stream_id OPERATOR(pg_catalog.=) s.stream_id" \
	"                     AND e.version OPERATOR(pg_catalog.=) s.version LIMIT 1)" \
	"            ELSE COALESCE(s.base_hash, pg_catalog.decode(pg_catalog.repeat('00', 32), 'hex'))" \
	"       END" \
	"  FROM es.streams AS s" \
	" ORDER BY s.stream_id COLLATE \"C\""

/* the heads of an export, as the digest orders them */
#define EXPORT_SQL \
	"SELECT h.stream_id, h.first_version, h.version, h.head_hash" \
	"  FROM pg_catalog.jsonb_to_recordset($1)" \
	"       AS h(stream_id text, first_version bigint, version bigint, head_hash bytea)" \
	" ORDER BY h.stream_id COLLATE \"C\""

/* check an export: a JSON array */
static void
check_export(Jsonb *heads)
{
	if (!JB_ROOT_IS_ARRAY(heads) || JB_ROOT_IS_SCALAR(heads))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("heads must be a JSON array"),
				 errhint("Export the heads with SELECT jsonb_agg(h) FROM es.es_heads() AS h.")));
}

/* open a cursor over the current heads, or over an export (heads not NULL) */
static void
heads_open(VerifyCursor *c, Jsonb *heads)
{
	SPIPlanPtr	plan;
	Oid			argtype = JSONBOID;
	Datum		arg = PointerGetDatum(heads);

	if (heads != NULL)
		plan = SPI_prepare(EXPORT_SQL, 1, &argtype);
	else
		plan = SPI_prepare(psprintf(HEADS_SQL, events_source()), 0, NULL);
	if (plan == NULL)
		elog(ERROR, "SPI_prepare failed: %s", SPI_result_code_string(SPI_result));
	cursor_open(c, plan, &arg, NULL);
}

PG_FUNCTION_INFO_V1(es_heads);

/*
 * es_heads()
 *		RETURNS TABLE (stream_id text, first_version bigint, version bigint,
 *					   head_hash bytea)
 *
 * The head of every stream, in the digest's order.  An auditor keeps
 * SELECT jsonb_agg(h) FROM es.es_heads() AS h (and its es_digest) to check
 * the store against it later (es_verify_heads).
 */
Datum
es_heads(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	VerifyCursor c;

	InitMaterializedSRF(fcinfo, 0);
	refuse_row_security("list the stream heads");
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	heads_open(&c, NULL);
	while (cursor_next(&c))
	{
		Datum		values[4];
		bool		nulls[4];
		int			i;

		CHECK_FOR_INTERRUPTS();
		for (i = 0; i < 4; i++)
			values[i] = cursor_value(&c, i + 1, &nulls[i]);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	cursor_close(&c);
	SPI_finish();
	return (Datum) 0;
}

/* feed a 4-byte big-endian length and the bytes (NULL: 0xFFFFFFFF) */
static void
digest_bytes(EsHash *ctx, const char *p, uint32 len)
{
	uint8		b[4];
	uint32		l = (p == NULL) ? 0xFFFFFFFF : len;

	b[0] = l >> 24;
	b[1] = l >> 16;
	b[2] = l >> 8;
	b[3] = l;
	EsHashRaw(ctx, b, 4);
	if (p != NULL)
		EsHashRaw(ctx, p, len);
}

/* feed an 8-byte big-endian integer */
static void
digest_int8(EsHash *ctx, int64 v)
{
	uint8		b[8];
	int			i;

	for (i = 0; i < 8; i++)
		b[i] = (uint8) ((uint64) v >> (56 - 8 * i));
	EsHashRaw(ctx, b, 8);
}

PG_FUNCTION_INFO_V1(es_digest);

/*
 * es_digest(heads jsonb DEFAULT NULL) RETURNS bytea
 *		The SHA-256 digest of the current stream heads (heads NULL) or of
 *		an export of them (the JSON array SELECT jsonb_agg(h) FROM
 *		es.es_heads() AS h gives): the same heads give the same digest, on
 *		any server.
 */
Datum
es_digest(PG_FUNCTION_ARGS)
{
	Jsonb	   *heads = PG_ARGISNULL(0) ? NULL : PG_GETARG_JSONB_P(0);
	VerifyCursor c;
	EsHash	   *ctx;
	Datum		result;
	MemoryContext callcxt = CurrentMemoryContext;

	if (heads != NULL)
		check_export(heads);
	else
		refuse_row_security("digest the stream heads");
	ctx = EsHashBegin();
	EsHashRaw(ctx, "es_ext heads 1", 14);
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	heads_open(&c, heads);
	while (cursor_next(&c))
	{
		bool		isnull;
		Datum		d;

		CHECK_FOR_INTERRUPTS();
		d = cursor_value(&c, 1, &isnull);
		if (isnull)
			ereport(ERROR,
					(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
					 errmsg("a head has no stream_id")));
		digest_bytes(ctx, VARDATA_ANY(DatumGetTextPP(d)), VARSIZE_ANY_EXHDR(DatumGetTextPP(d)));
		d = cursor_value(&c, 2, &isnull);
		digest_int8(ctx, isnull ? 0 : DatumGetInt64(d));
		d = cursor_value(&c, 3, &isnull);
		digest_int8(ctx, isnull ? 0 : DatumGetInt64(d));
		d = cursor_value(&c, 4, &isnull);
		if (isnull)
			digest_bytes(ctx, NULL, 0);
		else
			digest_bytes(ctx, VARDATA_ANY(DatumGetByteaPP(d)), VARSIZE_ANY_EXHDR(DatumGetByteaPP(d)));
	}
	cursor_close(&c);
	SPI_finish();
	MemoryContextSwitchTo(callcxt);
	result = EsHashEndDatum(ctx);
	PG_RETURN_DATUM(result);
}

/*
 * es_verify_heads: every earlier head (stream, version v, hash) must still
 * be on its stream's chain: the stored hash of event v equals it, or, when
 * retention or erasure removed version v, v is below first_version (with
 * base_hash = h(first_version - 1) when v = first_version - 1).
 */
#define VERIFY_HEADS_SQL \
	"SELECT h.stream_id, h.version, h.head_hash, s.stream_id IS NOT NULL," \
	"       s.first_version, s.version, s.base_hash," \
	"       (SELECT e.hash FROM %s AS e" \
	"         WHERE e.stream_id OPERATOR(pg_catalog.=) h.stream_id" \
	"           AND e.version OPERATOR(pg_catalog.=) h.version LIMIT 1)" \
	"  FROM pg_catalog.jsonb_to_recordset($1)" \
	"       AS h(stream_id text, first_version bigint, version bigint, head_hash bytea)" \
	"  LEFT JOIN es.streams AS s ON s.stream_id OPERATOR(pg_catalog.=) h.stream_id" \
	" ORDER BY h.stream_id, h.version"

PG_FUNCTION_INFO_V1(es_verify_heads);

/*
 * es_verify_heads(earlier jsonb)
 *		RETURNS TABLE (as es_verify)
 *
 * Check the store against an earlier export of the heads (the JSON array
 * SELECT jsonb_agg(h) FROM es.es_heads() AS h gives): one row per earlier
 * head that is no longer on its stream's chain.  This catches what
 * es_verify cannot: a chain recomputed from a changed event onwards.
 * Streams created since are not reported.  NULL: 22004.
 */
Datum
es_verify_heads(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	Jsonb	   *earlier;
	VerifyRun	run;
	VerifyCursor c;
	SPIPlanPtr	plan;
	Oid			argtype = JSONBOID;
	Datum		arg;

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("earlier heads cannot be null")));
	earlier = PG_GETARG_JSONB_P(0);
	check_export(earlier);
	arg = PointerGetDatum(earlier);

	InitMaterializedSRF(fcinfo, 0);
	run.store = rsinfo->setResult;
	run.desc = rsinfo->setDesc;
	refuse_row_security("verify the stream heads");
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	plan = SPI_prepare(psprintf(VERIFY_HEADS_SQL, events_source()), 1, &argtype);
	if (plan == NULL)
		elog(ERROR, "SPI_prepare failed: %s", SPI_result_code_string(SPI_result));
	cursor_open(&c, plan, &arg, NULL);
	while (cursor_next(&c))
	{
		bool		isnull;
		bool		vnull;
		bool		hnull;
		text	   *sid;
		int64		v;
		bytea	   *h;
		int64		first;
		int64		head;
		Datum		d;
		bytea	   *now;

		CHECK_FOR_INTERRUPTS();
		v = DatumGetInt64(cursor_value(&c, 2, &vnull));
		d = cursor_value(&c, 3, &hnull);
		h = hnull ? NULL : DatumGetByteaPP(d);
		d = cursor_value(&c, 1, &isnull);
		if (isnull || vnull || hnull || VARSIZE_ANY_EXHDR(h) != ES_HASH_LENGTH)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("every earlier head needs a stream_id, a version and a 32-byte head_hash"),
					 errhint("Export the heads with SELECT jsonb_agg(h) FROM es.es_heads() AS h.")));
		sid = DatumGetTextPP(d);
		if (!DatumGetBool(cursor_value(&c, 4, &isnull)))
		{
			report(&run, sid, v, false, "stream missing", (uint8 *) VARDATA_ANY(h), NULL,
				   "The stream of an earlier head has no row in es.streams.");
			continue;
		}
		first = DatumGetInt64(cursor_value(&c, 5, &isnull));
		head = DatumGetInt64(cursor_value(&c, 6, &isnull));
		if (head < v)
		{
			report(&run, sid, v, false, "head went back", (uint8 *) VARDATA_ANY(h), NULL,
				   psprintf("The stream was at version " INT64_FORMAT "; it is now at version " INT64_FORMAT ".",
							v, head));
			continue;
		}
		if (v >= first)
		{
			d = cursor_value(&c, 8, &isnull);
			now = isnull ? NULL : DatumGetByteaPP(d);
			if (!hash_equals(now, (uint8 *) VARDATA_ANY(h)))
				report(&run, sid, v, false, "head changed", (uint8 *) VARDATA_ANY(h), now,
					   now == NULL ?
					   pstrdup("The event of the earlier head is not stored (or has no hash).") :
					   pstrdup("The event of the earlier head has another hash now: the chain was changed up to it."));
		}
		else if (v == first - 1)
		{
			d = cursor_value(&c, 7, &isnull);
			now = isnull ? NULL : DatumGetByteaPP(d);
			if (!(now == NULL ? memcmp(VARDATA_ANY(h), zero_hash, ES_HASH_LENGTH) == 0 :
				  hash_equals(now, (uint8 *) VARDATA_ANY(h))))
				report(&run, sid, v, false, "head changed", (uint8 *) VARDATA_ANY(h), now,
					   "The stream now starts after the earlier head, from another base hash.");
		}
		/* below first_version - 1: removed by retention or erasure */
	}
	cursor_close(&c);
	SPI_finish();
	return (Datum) 0;
}
