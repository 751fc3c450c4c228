/*-------------------------------------------------------------------------
 *
 * rechain.c
 *	  The hash chain of events stored before es_ext had one: computed once,
 *	  by the upgrade script to 0.2.0 (sql/es_ext--0.1.0--0.2.0.sql).
 *
 * es_rechain_internal() reads every event in (stream_id, version) order
 * with a cursor, chains each stream from where es.streams says it starts
 * (base_hash at first_version; 32 zero bytes for a 0.1.0 stream) exactly as
 * es_append does (EsEventHash, chain.c), and writes the hashes with one
 * UPDATE per ES_IMPORT_CHUNK_ROWS events (only the rows whose hash differs,
 * so a second run writes nothing).  The cursor's snapshot does not see the
 * rows the updates write.
 *
 * Recomputing chains is exactly what tamper evidence must prevent, so the
 * function runs only inside es_ext's own CREATE/ALTER EXTENSION script (the
 * guard trigger lets that script's statements write es.events), and the
 * upgrade script drops its SQL declaration again at its end: after the
 * upgrade no SQL function reaches this code.
 *
 * Memory: one event's detoasted values in a per-row context; the arrays of
 * one update in a per-chunk context; the current stream id in its own.  Locks: what the UPDATE takes (ROW
 * EXCLUSIVE on es.events); ALTER EXTENSION holds the rest.
 *
 * src/rechain.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "commands/extension.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"
#include "utils/uuid.h"

#include "es_ext.h"

/* every event with where its stream's chain starts, in chain order */
#define RECHAIN_SQL \
	"SELECT e.stream_id, e.version, e.event_id, e.event_type, e.schema_version, e.data," \
	"       e.metadata, e.tags, e.recorded_at, e.hash, s.first_version, s.base_hash" \
	"  FROM es.events AS e" \
	"  LEFT JOIN es.streams AS s ON s.stream_id OPERATOR(pg_catalog.=) e.stream_id" \
	" ORDER BY e.stream_id, e.version"

#define RECHAIN_UPDATE_SQL \
	"UPDATE es.events AS e SET hash = u.h" \
	"  FROM ROWS FROM (pg_catalog.unnest($1), pg_catalog.unnest($2), pg_catalog.unnest($3))" \
	"       AS u(s, v, h)" \
	" WHERE e.stream_id OPERATOR(pg_catalog.=) u.s AND e.version OPERATOR(pg_catalog.=) u.v" \
	"   AND e.hash IS DISTINCT FROM u.h"

/* the pending updates */
typedef struct RechainChunk
{
	int			n;
	Datum		stream[ES_IMPORT_CHUNK_ROWS];
	Datum		version[ES_IMPORT_CHUNK_ROWS];
	Datum		hash[ES_IMPORT_CHUNK_ROWS];
} RechainChunk;

/* a one-dimensional array of n Datums of type typid */
static Datum
make_array(Datum *elems, int n, Oid typid)
{
	int16		typlen;
	bool		typbyval;
	char		typalign;

	get_typlenbyvalalign(typid, &typlen, &typbyval, &typalign);
	return PointerGetDatum(construct_array(elems, n, typid, typlen, typbyval, typalign));
}

/* write the chunk's hashes; returns the rows changed */
static uint64
flush(SPIPlanPtr plan, RechainChunk *c)
{
	Datum		args[3];
	int			rc;

	if (c->n == 0)
		return 0;
	args[0] = make_array(c->stream, c->n, TEXTOID);
	args[1] = make_array(c->version, c->n, INT8OID);
	args[2] = make_array(c->hash, c->n, BYTEAOID);
	rc = SPI_execute_plan(plan, args, NULL, false, 0);
	if (rc != SPI_OK_UPDATE)
		elog(ERROR, "could not write the chain hashes: %s", SPI_result_code_string(rc));
	c->n = 0;
	return SPI_processed;
}

PG_FUNCTION_INFO_V1(es_rechain_internal);

/*
 * es_rechain_internal() RETURNS bigint
 *		Compute and store the chain hash of every stored event (see the
 *		file header); returns the number of events whose hash it wrote.
 *		Only inside es_ext's extension scripts.
 */
Datum
es_rechain_internal(PG_FUNCTION_ARGS)
{
	SPIPlanPtr	select_plan;
	SPIPlanPtr	update_plan;
	Oid			argtypes[3] = {TEXTARRAYOID, INT8ARRAYOID, BYTEAARRAYOID};
	Portal		portal;
	MemoryContext rowcxt;
	MemoryContext chunkcxt;
	MemoryContext streamcxt;
	MemoryContext old;
	RechainChunk *c;
	text	   *stream = NULL;
	uint8		prev[ES_HASH_LENGTH];
	uint64		written = 0;

	if (!creating_extension || CurrentExtensionObject != get_extension_oid("es_ext", true))
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("cannot recompute the hash chains outside the es_ext upgrade"),
				 errdetail("Recomputing the chains would hide changes made to the events.")));

	rowcxt = AllocSetContextCreate(CurrentMemoryContext, "es_rechain row", ALLOCSET_DEFAULT_SIZES);
	chunkcxt = AllocSetContextCreate(CurrentMemoryContext, "es_rechain chunk", ALLOCSET_DEFAULT_SIZES);
	streamcxt = AllocSetContextCreate(CurrentMemoryContext, "es_rechain stream", ALLOCSET_DEFAULT_SIZES);
	c = palloc(sizeof(RechainChunk));
	c->n = 0;

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	select_plan = SPI_prepare(RECHAIN_SQL, 0, NULL);
	update_plan = SPI_prepare(RECHAIN_UPDATE_SQL, 3, argtypes);
	if (select_plan == NULL || update_plan == NULL)
		elog(ERROR, "SPI_prepare failed: %s", SPI_result_code_string(SPI_result));
	portal = SPI_cursor_open(NULL, select_plan, NULL, NULL, false);
	for (;;)
	{
		SPITupleTable *tt;
		uint64		ntuples;
		uint64		i;

		SPI_cursor_fetch(portal, true, ES_FETCH_BATCH);
		tt = SPI_tuptable;
		ntuples = SPI_processed;
		if (ntuples == 0)
			break;
		for (i = 0; i < ntuples; i++)
		{
			HeapTuple	tup = tt->vals[i];
			TupleDesc	desc = tt->tupdesc;
			EsHashInput in;
			bool		isnull;
			Datum		d;
			uint8		h[ES_HASH_LENGTH];

			CHECK_FOR_INTERRUPTS();
			old = MemoryContextSwitchTo(rowcxt);
			in.stream = DatumGetTextPP(SPI_getbinval(tup, desc, 1, &isnull));
			in.version = DatumGetInt64(SPI_getbinval(tup, desc, 2, &isnull));
			in.id = DatumGetUUIDP(SPI_getbinval(tup, desc, 3, &isnull));
			in.type = DatumGetTextPP(SPI_getbinval(tup, desc, 4, &isnull));
			in.schema_version = DatumGetInt32(SPI_getbinval(tup, desc, 5, &isnull));
			in.data = DatumGetJsonbP(SPI_getbinval(tup, desc, 6, &isnull));
			d = SPI_getbinval(tup, desc, 7, &isnull);
			in.metadata = isnull ? NULL : DatumGetJsonbP(d);
			d = SPI_getbinval(tup, desc, 8, &isnull);
			in.tags = isnull ? NULL : DatumGetArrayTypeP(d);
			in.recorded_at = DatumGetTimestampTz(SPI_getbinval(tup, desc, 9, &isnull));

			if (stream == NULL ||
				VARSIZE_ANY_EXHDR(stream) != VARSIZE_ANY_EXHDR(in.stream) ||
				memcmp(VARDATA_ANY(stream), VARDATA_ANY(in.stream), VARSIZE_ANY_EXHDR(stream)) != 0)
			{
				/* a new stream: its chain starts at its base hash */
				MemoryContextReset(streamcxt);
				MemoryContextSwitchTo(streamcxt);
				stream = (text *) PG_DETOAST_DATUM_COPY(PointerGetDatum(in.stream));
				MemoryContextSwitchTo(rowcxt);
				d = SPI_getbinval(tup, desc, 12, &isnull);
				if (isnull || !EsHashFromDatum(d, prev))
					memset(prev, 0, ES_HASH_LENGTH);
			}
			EsEventHash(prev, &in, h);
			memcpy(prev, h, ES_HASH_LENGTH);

			MemoryContextSwitchTo(chunkcxt);
			c->stream[c->n] = PointerGetDatum(PG_DETOAST_DATUM_COPY(PointerGetDatum(in.stream)));
			c->version[c->n] = Int64GetDatum(in.version);
			c->hash[c->n] = EsHashDatum(h);
			c->n++;
			MemoryContextSwitchTo(old);
			MemoryContextReset(rowcxt);
			if (c->n == ES_IMPORT_CHUNK_ROWS)
			{
				written += flush(update_plan, c);
				MemoryContextReset(chunkcxt);
			}
		}
		SPI_freetuptable(tt);
	}
	written += flush(update_plan, c);
	SPI_cursor_close(portal);
	SPI_finish();
	MemoryContextDelete(rowcxt);
	MemoryContextDelete(chunkcxt);
	MemoryContextDelete(streamcxt);
	PG_RETURN_INT64((int64) written);
}
