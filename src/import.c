/*-------------------------------------------------------------------------
 *
 * import.c
 *	  es_import: move an existing event log into es_ext in one transaction,
 *	  at the speed of set-based inserts.
 *
 * The caller loads the events into a table of its own (typically a
 * temporary or unlogged table created with LIKE es.import_event, filled
 * with COPY) and calls es_import(source) once.  The import is, in order:
 *
 *	1. Check the source: a plain table the caller may SELECT from, without
 *	   row-level security, whose columns are exactly those of
 *	   es.import_event (any order), except that tags may be missing (a
 *	   source shaped before the column existed imports untagged events).
 *	2. Scan it once in physical order (the order COPY wrote it; no
 *	   synchronized scan), under a snapshot taken at the start (after a
 *	   CommandCounterIncrement, as SPI does), and validate
 *	   every row with the limits es_append applies (ES_MAX_NAME_BYTES,
 *	   es.max_event_size, the metadata id rule of batch.c, the rules of a
 *	   batch's "tags": at most ES_MAX_EVENT_TAGS non-empty, distinct tags
 *	   of at most ES_MAX_NAME_BYTES bytes each).  Rows are
 *	   numbered from 1 in that order and every error names its row.  One
 *	   entry per stream (a hash table, so memory grows with the number of
 *	   streams, not of events) records the stream's row count, the version
 *	   its explicit versions imply before its first row, and its timestamps.
 *	3. Take SHARE locks on every coarse bucket of the append-condition lock
 *	   space (EsLockAllForImport, condition.c): a conditional es_append
 *	   whose query could match an imported event waits for the import to
 *	   end, then sees its events.  Then create the new streams (INSERT ...
 *	   ON CONFLICT DO NOTHING, in stream order), then lock the existing ones with SELECT ... ORDER BY
 *	   stream_id FOR UPDATE: a concurrent es_append to an imported stream
 *	   waits for the import (or the import for it), and versions never
 *	   interleave.  The explicit versions of an existing stream must
 *	   continue it (SQLSTATE 40001, constraint es_expected_version, as
 *	   es_append's expected version); rows without a version continue
 *	   whatever the stream is at.  The stream rows advance by their row
 *	   counts and get the import's log_tx_id.
 *	4. Scan the source again under the same snapshot and insert the events
 *	   in chunks of ES_IMPORT_CHUNK_ROWS rows, each one INSERT ... SELECT
 *	   ... FROM unnest(), in source order: global positions increase in
 *	   source order, so the source order is the log order of the import.
 *	   Tags travel in the chunk in their text form (array_out), cast back
 *	   to text[] by the INSERT (SQL has no arrays of arrays); an event
 *	   without tags stores NULL, as es_append stores it.
 *	   Each event gets its chain hash (chain.c) as es_append computes
 *	   it, in source order: the chain of an existing stream continues from
 *	   its head (the stored hash of its last event, or its base_hash when no
 *	   event is stored from first_version on), read under the stream row
 *	   lock, and a missing or invalid one is refused (XX001) as es_append
 *	   refuses it; a new stream's chain starts from 32 zero bytes.  Archived
 *	   and erased streams are refused with es_append's errors (55000).
 *	   Every event gets the same era and tx_id (one transaction): the
 *	   greater of this transaction's id and the log_tx_id of every
 *	   existing stream imported into, which keeps each stream's versions
 *	   in log order exactly as es_append's advance_stream does.  Before
 *	   that, under the stream locks, given event ids are checked as
 *	   es_append checks them: unique within their stream in the source
 *	   (one aggregate over the source) and not already in an existing
 *	   stream (index probes, for the rows of existing streams only); the
 *	   first offending row is reported.  Missing ids are generated as
 *	   es_append generates them (EsGenerateEventId, time-ordered).
 *	5. Outbox routes, when the caller asks for them (the default), get the
 *	   imported events as es_append's would; AFTER INSERT triggers
 *	   (inline projections) fire for every row; asynchronous projections
 *	   are woken at commit.
 *
 * Progress shows in pg_stat_activity.query of the importing backend
 * ("es_import: 3000000 of 10000000 events").  BEFORE row triggers on
 * es.events and es.streams are refused, as es_append refuses them.
 *
 * Memory: the stream table and the result live in the caller's memory
 * context; each chunk of events is built in a context reset after the chunk.
 * SPI allocations are released by SPI_finish.
 *
 * src/import.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_class.h"
#include "catalog/pg_trigger.h"
#include "catalog/pg_type.h"
#include "commands/trigger.h"
#include "common/hashfn.h"
#include "executor/spi.h"
#include "executor/tuptable.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "access/detoast.h"
#include "tcop/tcopprot.h"
#include "utils/acl.h"
#include "utils/array.h"
#include "utils/backend_status.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/hsearch.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/rls.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"
#include "utils/typcache.h"
#include "utils/uuid.h"
#include "utils/xid8.h"

#include "es_ext.h"

/* The columns of es.import_event, in its order. */
#define IC_STREAM_ID		0
#define IC_VERSION			1
#define IC_EVENT_ID			2
#define IC_EVENT_TYPE		3
#define IC_SCHEMA_VERSION	4
#define IC_DATA				5
#define IC_METADATA			6
#define IC_RECORDED_AT		7
#define IC_TAGS				8
#define IC_NCOLUMNS			9

static const char *const import_column_names[IC_NCOLUMNS] = {
	"stream_id", "version", "event_id", "event_type", "schema_version", "data",
	"metadata", "recorded_at", "tags"
};

static const Oid import_column_types[IC_NCOLUMNS] = {
	TEXTOID, INT8OID, UUIDOID, TEXTOID, INT4OID, JSONBOID, JSONBOID, TIMESTAMPTZOID,
	TEXTARRAYOID
};

/*
 * The columns a source may leave out: tags (a source shaped like
 * es.import_event before it had tags imports untagged events).
 */
#define IC_OPTIONAL(c)		((c) == IC_TAGS)

#define IMPORT_COLUMNS_DETAIL \
	"The columns of an import source are stream_id, version, event_id, event_type, schema_version, data, metadata, recorded_at and, optionally, tags."

/* A stream id as the key of the stream table. */
typedef struct ImportKey
{
	const char *s;
	int			len;
} ImportKey;

/* One stream of the import. */
typedef struct ImportStream
{
	ImportKey	key;			/* must be first */
	int64		first_row;		/* its first row in the source (1-based) */
	int64		rows;			/* its rows in the source */
	int64		base;			/* its version before the import; -1 unknown yet */
	int64		base_row;		/* the row whose version set base (0: none) */
	int64		inserted;		/* rows inserted so far (pass 2) */
	int64		ids;			/* its rows with an event id */
	TimestampTz first_ts;		/* recorded_at of its first and last rows */
	TimestampTz last_ts;
	bool		created;		/* the import created its stream row */
	uint8		prev[ES_HASH_LENGTH];	/* chain hash of its last event so far */
} ImportStream;

/* The state of one import. */
typedef struct ImportState
{
	Relation	rel;
	char	   *relname;		/* for messages: qualified when not visible */
	char	   *relsql;			/* for SQL: qualified and quoted */
	AttrNumber	attnums[IC_NCOLUMNS];	/* 1-based attribute numbers in rel */
	Snapshot	snapshot;		/* both scans read the source with it */
	TimestampTz now;			/* recorded_at of rows that have none */
	HTAB	   *streams;
	MemoryContext streamcxt;	/* the stream table and its keys */
	int64		nrows;
	int64		nids;			/* rows with an event id */
	int64		nstreams;
	int64		ncreated;
	int64		row;			/* current row, for the error context (0: none) */
	bool		outbox;			/* route the events to the outbox */
	FmgrInfo	tags_out;		/* array_out, for tags_text */
	/* set while writing */
	int32		era;
	Datum		tx_id;			/* xid8: the log_tx_id of every imported event */
	int64		first_position;
	int64		last_position;
} ImportState;

/* Saved plans, prepared on first use. */

/* new streams ($1 ids, $2 row counts, $3 log_tx_id, $4 created_at), in stream order */
static EsPlan create_streams_plan = {
	NULL,
	"INSERT INTO es.streams AS s (stream_id, version, log_tx_id, created_at)"
	" SELECT u.s, u.n, $3, u.c"
	"   FROM ROWS FROM (pg_catalog.unnest($1), pg_catalog.unnest($2), pg_catalog.unnest($4))"
	"        AS u(s, n, c)"
	"  ORDER BY u.s"
	" ON CONFLICT (stream_id) DO NOTHING"
	" RETURNING s.stream_id",
	4, {TEXTARRAYOID, INT8ARRAYOID, XID8OID, TIMESTAMPTZARRAYOID}
};

/*
 * lock the existing streams, in stream order; with the recorded_at of their
 * last event and their state (where their chain starts, archived, erased)
 */
static EsPlan lock_streams_plan = {
	NULL,
	"SELECT s.stream_id, s.version, s.log_tx_id,"
	"       (SELECT e.recorded_at FROM es.events AS e"
	"         WHERE e.stream_id OPERATOR(pg_catalog.=) s.stream_id"
	"           AND e.version OPERATOR(pg_catalog.=) s.version),"
	"       s.first_version, s.base_hash, s.archived_at IS NOT NULL, s.erased_at IS NOT NULL"
	"  FROM es.streams AS s"
	" WHERE s.stream_id OPERATOR(pg_catalog.=) ANY ($1)"
	" ORDER BY s.stream_id"
	"   FOR UPDATE OF s",
	1, {TEXTARRAYOID}
};

/* advance the existing streams ($1 ids, $2 row counts) */
static EsPlan advance_streams_plan = {
	NULL,
	"UPDATE es.streams AS s"
	"   SET version = s.version OPERATOR(pg_catalog.+) u.n,"
	"       updated_at = pg_catalog.clock_timestamp(),"
	"       log_tx_id = $3"
	"  FROM ROWS FROM (pg_catalog.unnest($1), pg_catalog.unnest($2)) AS u(s, n)"
	" WHERE s.stream_id OPERATOR(pg_catalog.=) u.s",
	3, {TEXTARRAYOID, INT8ARRAYOID, XID8OID}
};

/* the streams the import created, when the import's log_tx_id is not its own xid */
static EsPlan retag_streams_plan = {
	NULL,
	"UPDATE es.streams AS s SET log_tx_id = $2"
	" WHERE s.stream_id OPERATOR(pg_catalog.=) ANY ($1)",
	2, {TEXTARRAYOID, XID8OID}
};

#define IMPORT_INSERT_SQL \
	"INSERT INTO es.events AS e" \
	"  (stream_id, version, event_id, event_type, schema_version, data, metadata," \
	"   recorded_at, tags, era, tx_id, hash)" \
	" SELECT u.s, u.v, u.i, u.t, u.sv, u.d, u.m, u.r, CAST(u.g AS pg_catalog.text[]), $10, $11, u.h" \
	"   FROM ROWS FROM (pg_catalog.unnest($1), pg_catalog.unnest($2), pg_catalog.unnest($3)," \
	"                   pg_catalog.unnest($4), pg_catalog.unnest($5), pg_catalog.unnest($6)," \
	"                   pg_catalog.unnest($7), pg_catalog.unnest($8), pg_catalog.unnest($9)," \
	"                   pg_catalog.unnest($12))" \
	"        AS u(s, v, i, t, sv, d, m, r, g, h)"

/* $9: the tags of each event in their text form (NULL: none); $12: the chain hashes */
#define IMPORT_INSERT_TYPES \
	{TEXTARRAYOID, INT8ARRAYOID, UUIDARRAYOID, TEXTARRAYOID, INT4ARRAYOID, JSONBARRAYOID, \
	 JSONBARRAYOID, TIMESTAMPTZARRAYOID, TEXTARRAYOID, INT4OID, XID8OID, BYTEAARRAYOID}

/* one chunk of events, in source order: (count, first position, last position) */
static EsPlan insert_chunk_plan = {
	NULL,
	"WITH ins AS (" IMPORT_INSERT_SQL " RETURNING e.global_position)"
	" SELECT pg_catalog.count(*), pg_catalog.min(ins.global_position),"
	"        pg_catalog.max(ins.global_position)"
	"   FROM ins",
	12, IMPORT_INSERT_TYPES
};

/* the same, returning every event for the outbox */
static EsPlan insert_chunk_routed_plan = {
	NULL,
	IMPORT_INSERT_SQL
	" RETURNING e.global_position, e.stream_id, e.version, e.event_id, e.event_type,"
	"           e.schema_version, e.data, e.metadata, e.recorded_at",
	12, IMPORT_INSERT_TYPES
};

/*
 * key_hash, key_match
 *		Hash and compare ImportKeys (dynahash callbacks).
 */
static uint32
key_hash(const void *key, Size keysize)
{
	const ImportKey *k = (const ImportKey *) key;

	return DatumGetUInt32(hash_any((const unsigned char *) k->s, k->len));
}

static int
key_match(const void *key1, const void *key2, Size keysize)
{
	const ImportKey *a = (const ImportKey *) key1;
	const ImportKey *b = (const ImportKey *) key2;

	if (a->len != b->len)
		return 1;
	return memcmp(a->s, b->s, a->len);
}

/*
 * import_error_callback
 *		Error context: the row of the source being read.
 */
static void
import_error_callback(void *arg)
{
	ImportState *st = (ImportState *) arg;

	if (st->row > 0)
		errcontext("row " INT64_FORMAT " of table \"%s\"", st->row, st->relname);
}

/*
 * report_progress
 *		Show what the import is doing in pg_stat_activity.query.
 */
static void
report_progress(const char *what, int64 done, int64 total)
{
	char		buf[128];

	if (total > 0)
		snprintf(buf, sizeof(buf), "es_import: " INT64_FORMAT " of " INT64_FORMAT " events %s",
				 done, total, what);
	else
		snprintf(buf, sizeof(buf), "es_import: " INT64_FORMAT " rows %s", done, what);
	pgstat_report_activity(STATE_RUNNING, buf);
}

/*
 * check_source
 *		Open the source (AccessShareLock, held to the end of the transaction)
 *		and check it: a plain table that the caller may read without
 *		row-level security, whose columns are exactly those of
 *		es.import_event.  Fills st->rel, st->relname and st->attnums.
 */
static void
check_source(Oid relid, ImportState *st)
{
	Relation	rel;
	TupleDesc	desc;
	AclResult	aclresult;
	int			found = 0;
	int			i;
	int			j;

	rel = table_open(relid, AccessShareLock);
	st->rel = rel;
	if (RelationIsVisible(relid))
		st->relname = pstrdup(RelationGetRelationName(rel));
	else
		st->relname = psprintf("%s.%s", get_namespace_name(RelationGetNamespace(rel)),
							   RelationGetRelationName(rel));
	st->relsql = quote_qualified_identifier(isTempNamespace(RelationGetNamespace(rel)) ?
											"pg_temp" :
											get_namespace_name(RelationGetNamespace(rel)),
											RelationGetRelationName(rel));

	if (rel->rd_rel->relkind != RELKIND_RELATION)
		ereport(ERROR,
				(errcode(ERRCODE_WRONG_OBJECT_TYPE),
				 errmsg("cannot import from \"%s\"", RelationGetRelationName(rel)),
				 errdetail("The import source must be a table; its row order is the order of the import."),
				 errhint("Create it with CREATE TEMP TABLE ... (LIKE es.import_event) and fill it with COPY or INSERT ... SELECT ... ORDER BY.")));

	aclresult = pg_class_aclcheck(relid, GetUserId(), ACL_SELECT);
	if (aclresult != ACLCHECK_OK)
		aclcheck_error(aclresult, OBJECT_TABLE, RelationGetRelationName(rel));
	if (check_enable_rls(relid, InvalidOid, false) == RLS_ENABLED)
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("cannot import from table \"%s\" because it has row-level security enabled",
						RelationGetRelationName(rel)),
				 errhint("Copy the rows to import into a table without row-level security.")));

	desc = RelationGetDescr(rel);
	for (i = 0; i < desc->natts; i++)
	{
		Form_pg_attribute att = TupleDescAttr(desc, i);
		const char *name = NameStr(att->attname);

		if (att->attisdropped)
			continue;
		for (j = 0; j < IC_NCOLUMNS; j++)
			if (strcmp(name, import_column_names[j]) == 0)
				break;
		if (j == IC_NCOLUMNS)
			ereport(ERROR,
					(errcode(ERRCODE_UNDEFINED_COLUMN),
					 errmsg("column \"%s\" of table \"%s\" is not a column of type \"es.import_event\"",
							name, st->relname),
					 errdetail(IMPORT_COLUMNS_DETAIL),
					 errhint("Create the source with CREATE TEMP TABLE ... (LIKE es.import_event).")));
		else
		{
			if (att->atttypid != import_column_types[j])
				ereport(ERROR,
						(errcode(ERRCODE_DATATYPE_MISMATCH),
						 errmsg("column \"%s\" of table \"%s\" has type %s, expected %s",
								name, st->relname, format_type_be(att->atttypid),
								format_type_be(import_column_types[j])),
						 errhint("Create the source with CREATE TEMP TABLE ... (LIKE es.import_event).")));
			st->attnums[j] = att->attnum;
			found++;
		}
	}
	for (j = 0; j < IC_NCOLUMNS; j++)
		if (st->attnums[j] == InvalidAttrNumber && !IC_OPTIONAL(j))
			ereport(ERROR,
					(errcode(ERRCODE_UNDEFINED_COLUMN),
					 errmsg("table \"%s\" has no column \"%s\"",
							st->relname, import_column_names[j]),
					 errdetail(IMPORT_COLUMNS_DETAIL),
					 errhint("Create the source with CREATE TEMP TABLE ... (LIKE es.import_event).")));
	Assert(found == IC_NCOLUMNS ||
		   (found == IC_NCOLUMNS - 1 && st->attnums[IC_TAGS] == InvalidAttrNumber));
}

/*
 * check_name
 *		A stream id or event type (what names it) must be present, non-empty
 *		and within ES_MAX_NAME_BYTES, as es_append requires.
 */
static text *
check_name(Datum value, bool isnull, const char *what, const char *column)
{
	text	   *t;

	if (isnull)
		ereport(ERROR,
				(errcode(ERRCODE_NOT_NULL_VIOLATION),
				 errmsg("%s cannot be null", what),
				 err_generic_string(PG_DIAG_COLUMN_NAME, column)));
	t = DatumGetTextPP(value);
	if (VARSIZE_ANY_EXHDR(t) == 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s cannot be empty", what),
				 err_generic_string(PG_DIAG_COLUMN_NAME, column)));
	if (VARSIZE_ANY_EXHDR(t) > ES_MAX_NAME_BYTES)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("%s is too long", what),
				 errdetail("It is limited to %d bytes; this one has %zu.",
						   ES_MAX_NAME_BYTES, (Size) VARSIZE_ANY_EXHDR(t)),
				 err_generic_string(PG_DIAG_COLUMN_NAME, column)));
	return t;
}

/*
 * check_tags
 *		The tags of one event must follow the rules of a batch's "tags"
 *		(EsJsonStringArray in batch.c, with its messages): a one-dimensional
 *		array of at most ES_MAX_EVENT_TAGS non-null, non-empty and distinct
 *		tags of at most ES_MAX_NAME_BYTES bytes each.  An empty array means no
 *		tags.  Errors name the column; the error context names the row.
 *		Allocates in the current context.
 */
static void
check_tags(Datum value)
{
	ArrayType  *arr = DatumGetArrayTypeP(value);
	Datum	   *elems;
	bool	   *nulls;
	int			n;
	int			i;
	int			k;

	if (ARR_NDIM(arr) == 0)
		return;
	if (ARR_NDIM(arr) > 1)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("event \"tags\" must be a one-dimensional array"),
				 errdetail("Got an array of %d dimensions.", ARR_NDIM(arr)),
				 err_generic_string(PG_DIAG_COLUMN_NAME, "tags")));
	deconstruct_array(arr, TEXTOID, -1, false, TYPALIGN_INT, &elems, &nulls, &n);
	if (n > ES_MAX_EVENT_TAGS)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("event \"tags\" has too many elements"),
				 errdetail("It has %d elements; the limit is %d.", n, ES_MAX_EVENT_TAGS),
				 err_generic_string(PG_DIAG_COLUMN_NAME, "tags")));
	for (i = 0; i < n; i++)
	{
		text	   *t;
		int			len;

		if (nulls[i])
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("event \"tags\" cannot contain a null"),
					 errdetail("Element %d is NULL.", i + 1),
					 err_generic_string(PG_DIAG_COLUMN_NAME, "tags")));
		t = DatumGetTextPP(elems[i]);
		len = VARSIZE_ANY_EXHDR(t);
		if (len == 0)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("event \"tags\" cannot contain an empty string"),
					 err_generic_string(PG_DIAG_COLUMN_NAME, "tags")));
		if (len > ES_MAX_NAME_BYTES)
			ereport(ERROR,
					(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
					 errmsg("element %d of event \"tags\" is too long", i + 1),
					 errdetail("Elements are limited to %d bytes; this one has %d.",
							   ES_MAX_NAME_BYTES, len),
					 err_generic_string(PG_DIAG_COLUMN_NAME, "tags")));
		/* at most ES_MAX_EVENT_TAGS: comparing each pair is cheap */
		for (k = 0; k < i; k++)
		{
			text	   *u = DatumGetTextPP(elems[k]);

			if (VARSIZE_ANY_EXHDR(u) == len && memcmp(VARDATA_ANY(u), VARDATA_ANY(t), len) == 0)
				ereport(ERROR,
						(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						 errmsg("event \"tags\" contains \"%s\" more than once", text_to_cstring(t)),
						 errdetail("Elements %d and %d are equal.", k + 1, i + 1),
						 err_generic_string(PG_DIAG_COLUMN_NAME, "tags")));
		}
	}
}

/*
 * tags_text
 *		The tags of a row checked by check_tags, in the text form the insert
 *		casts back to text[] (a one-dimensional array from 1), a text datum;
 *		NULL (with *isnull) for a row without tags.  array_out_fn: array_out,
 *		looked up once.  Allocates in the current context.
 */
static Datum
tags_text(FmgrInfo *array_out_fn, Datum value, bool *isnull)
{
	ArrayType  *arr = DatumGetArrayTypeP(value);

	*isnull = (ARR_NDIM(arr) == 0);
	if (*isnull)
		return (Datum) 0;
	if (ARR_LBOUND(arr)[0] != 1)
	{
		Datum	   *elems;
		int			n;

		deconstruct_array(arr, TEXTOID, -1, false, TYPALIGN_INT, &elems, NULL, &n);
		arr = construct_array(elems, n, TEXTOID, -1, false, TYPALIGN_INT);
	}
	return PointerGetDatum(cstring_to_text(OutputFunctionCall(array_out_fn, PointerGetDatum(arr))));
}

/*
 * check_row
 *		Validate one row of the source (pass 1) and account for it in its
 *		stream's entry.  values/nulls are the source's attributes.
 */
static void
check_row(ImportState *st, Datum *values, bool *nulls)
{
	Datum		v;
	text	   *stream;
	ImportStream *entry;
	ImportKey	key;
	bool		found;
	int64		offset;
	int64		size;
	TimestampTz ts;

#define COL(c) (st->attnums[c] - 1)

	stream = check_name(values[COL(IC_STREAM_ID)], nulls[COL(IC_STREAM_ID)], "stream id", "stream_id");
	{
		text	   *type = check_name(values[COL(IC_EVENT_TYPE)], nulls[COL(IC_EVENT_TYPE)],
									  "event type", "event_type");

		EsCheckUserEventType(VARDATA_ANY(type), VARSIZE_ANY_EXHDR(type));
	}

	if (nulls[COL(IC_DATA)])
		ereport(ERROR,
				(errcode(ERRCODE_NOT_NULL_VIOLATION),
				 errmsg("event data cannot be null"),
				 errhint("Use '{}' for an event without a payload."),
				 err_generic_string(PG_DIAG_COLUMN_NAME, "data")));
	size = toast_raw_datum_size(values[COL(IC_DATA)]);

	if (!nulls[COL(IC_METADATA)])
	{
		Jsonb	   *md = DatumGetJsonbP(values[COL(IC_METADATA)]);

		if (JB_ROOT_IS_SCALAR(md) || !JB_ROOT_IS_OBJECT(md))
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("event metadata must be a JSON object"),
					 err_generic_string(PG_DIAG_COLUMN_NAME, "metadata")));
		EsCheckMetadataIds(md);
		size += VARSIZE(md);
	}
	if (size > es_max_event_size)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("event is too large"),
				 errdetail("Its data and metadata take " INT64_FORMAT " bytes; the limit is %d bytes.",
						   size, es_max_event_size),
				 errhint("Raise \"es.max_event_size\", or store large payloads elsewhere and reference them.")));

	if (st->attnums[IC_TAGS] != InvalidAttrNumber && !nulls[COL(IC_TAGS)])
		check_tags(values[COL(IC_TAGS)]);

	if (!nulls[COL(IC_SCHEMA_VERSION)] && DatumGetInt32(values[COL(IC_SCHEMA_VERSION)]) < 1)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("schema version must be a positive integer"),
				 errdetail("Got %d.", DatumGetInt32(values[COL(IC_SCHEMA_VERSION)])),
				 err_generic_string(PG_DIAG_COLUMN_NAME, "schema_version")));

	if (nulls[COL(IC_RECORDED_AT)])
		ts = st->now;
	else
	{
		ts = DatumGetTimestampTz(values[COL(IC_RECORDED_AT)]);
		if (TIMESTAMP_NOT_FINITE(ts))
			ereport(ERROR,
					(errcode(ERRCODE_DATETIME_VALUE_OUT_OF_RANGE),
					 errmsg("recorded_at must be a finite timestamp"),
					 err_generic_string(PG_DIAG_COLUMN_NAME, "recorded_at")));
	}

	/* its stream */
	key.s = VARDATA_ANY(stream);
	key.len = VARSIZE_ANY_EXHDR(stream);
	entry = (ImportStream *) hash_search(st->streams, &key, HASH_ENTER, &found);
	if (!found)
	{
		/* the key the hash table holds must outlive this row */
		entry->key.s = memcpy(MemoryContextAlloc(st->streamcxt, key.len), key.s, key.len);
		entry->key.len = key.len;
		entry->first_row = st->row;
		entry->rows = 0;
		entry->base = -1;
		entry->base_row = 0;
		entry->inserted = 0;
		entry->ids = 0;
		entry->first_ts = ts;
		entry->last_ts = ts;
		entry->created = false;
		st->nstreams++;
	}
	offset = entry->rows;

	v = values[COL(IC_VERSION)];
	if (!nulls[COL(IC_VERSION)])
	{
		int64		version = DatumGetInt64(v);
		int64		base = version - offset - 1;

		if (version < 1)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("version " INT64_FORMAT " is out of range", version),
					 errdetail("Versions start at 1."),
					 err_generic_string(PG_DIAG_COLUMN_NAME, "version")));
		if (base < 0 || (entry->base >= 0 && base != entry->base))
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("version " INT64_FORMAT " does not follow the earlier rows of stream \"%s\"",
							version, text_to_cstring(stream)),
					 entry->base >= 0 ?
					 errdetail("Row " INT64_FORMAT " is the stream's row " INT64_FORMAT " in the source, which makes it version " INT64_FORMAT ".",
							   st->row, offset + 1, entry->base + offset + 1) :
					 errdetail("Row " INT64_FORMAT " is the stream's row " INT64_FORMAT " in the source: its version must be at least " INT64_FORMAT ".",
							   st->row, offset + 1, offset + 1),
					 errhint("The rows of a stream must come in version order, without gaps; leave the version NULL to take the next one."),
					 err_generic_string(PG_DIAG_COLUMN_NAME, "version")));
		if (entry->base < 0)
		{
			entry->base = base;
			entry->base_row = st->row;
		}
	}

	if (ts < entry->last_ts)
	{
		char	   *this_ts = pstrdup(timestamptz_to_str(ts));
		char	   *earlier_ts = pstrdup(timestamptz_to_str(entry->last_ts));

		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("recorded_at goes back in time in stream \"%s\"", text_to_cstring(stream)),
				 errdetail("Row " INT64_FORMAT " has %s, after an earlier row of the stream with %s.",
						   st->row, this_ts, earlier_ts),
				 errhint("Within a stream, recorded_at never decreases: order the rows of each stream by version and time."),
				 err_generic_string(PG_DIAG_COLUMN_NAME, "recorded_at")));
	}
	entry->last_ts = ts;
	entry->rows++;
	if (!nulls[COL(IC_EVENT_ID)])
	{
		entry->ids++;
		st->nids++;
	}
#undef COL
}

/*
 * scan_source
 *		Pass 1: read the whole source in physical order and check every row.
 */
static void
scan_source(ImportState *st, MemoryContext rowcxt)
{
	TableScanDesc scan;
	TupleTableSlot *slot;

	/* no synchronized scan: the row order must be the physical order */
	scan = table_beginscan_strat(st->rel, st->snapshot, 0, NULL, true, false);
	slot = table_slot_create(st->rel, NULL);
	st->row = 0;
	while (table_scan_getnextslot(scan, ForwardScanDirection, slot))
	{
		MemoryContext old;

		CHECK_FOR_INTERRUPTS();
		st->row++;
		if (st->row % ES_IMPORT_PROGRESS_ROWS == 0)
			report_progress("checked", st->row, 0);
		slot_getallattrs(slot);
		old = MemoryContextSwitchTo(rowcxt);
		check_row(st, slot->tts_values, slot->tts_isnull);
		MemoryContextSwitchTo(old);
		MemoryContextReset(rowcxt);
	}
	st->nrows = st->row;
	st->row = 0;
	ExecDropSingleTupleTableSlot(slot);
	table_endscan(scan);
}

/*
 * version_conflict
 *		Raise the expected-version conflict for a stream whose explicit
 *		versions in the source do not continue its current version.
 */
static void
version_conflict(ImportState *st, ImportStream *entry, int64 current)
{
	ereport(ERROR,
			(errcode(ERRCODE_T_R_SERIALIZATION_FAILURE),
			 errmsg("wrong expected version for stream \"%s\"",
					pnstrdup(entry->key.s, entry->key.len)),
			 errdetail("Row " INT64_FORMAT " of table \"%s\" makes the stream's first imported event version " INT64_FORMAT "; the stream is at version " INT64_FORMAT ".",
					   entry->base_row, st->relname, entry->base + 1, current),
			 errhint("Leave the versions of the source NULL to continue a stream at whatever version it has."),
			 err_generic_string(PG_DIAG_SCHEMA_NAME, "es"),
			 err_generic_string(PG_DIAG_TABLE_NAME, "streams"),
			 err_generic_string(PG_DIAG_CONSTRAINT_NAME, ES_EXPECTED_VERSION_CONSTRAINT)));
}

/* build a one-dimensional array of n Datums of type typid (nulls may be NULL) */
static Datum
make_array(Datum *elems, bool *nulls, int n, Oid typid)
{
	int16		typlen;
	bool		typbyval;
	char		typalign;
	int			dims[1];
	int			lbs[1];

	get_typlenbyvalalign(typid, &typlen, &typbyval, &typalign);
	dims[0] = n;
	lbs[0] = 1;
	return PointerGetDatum(construct_md_array(elems, nulls, 1, dims, lbs, typid,
											  typlen, typbyval, typalign));
}

/*
 * chain_start
 *		Where the chain of an existing stream continues (es_append's rule,
 *		append.c): the hash of its last event, current, or its base hash
 *		(zeros when NULL) when no event is stored from first on.  A missing
 *		or invalid predecessor hash is refused as es_append refuses it.
 */
static void
chain_start(ImportStream *entry, text *stream, int64 current, int64 first, bytea *base)
{
	if (current < first)
	{
		if (base == NULL)
			memset(entry->prev, 0, ES_HASH_LENGTH);
		else if (!EsHashFromDatum(PointerGetDatum(base), entry->prev))
			ereport(ERROR,
					(errcode(ERRCODE_DATA_CORRUPTED),
					 errmsg("stream \"%s\" has no valid base hash", text_to_cstring(stream)),
					 errhint("Check the stream with es.es_verify(%s).",
							 quote_literal_cstr(text_to_cstring(stream)))));
	}
	else if (!EsStoredEventHash(PointerGetDatum(stream), current, entry->prev))
		ereport(ERROR,
				(errcode(ERRCODE_DATA_CORRUPTED),
				 errmsg("event " INT64_FORMAT " of stream \"%s\" has no valid chain hash",
						current, text_to_cstring(stream)),
				 errdetail("The event is missing or its hash was removed or changed outside es_append; importing would extend a broken chain."),
				 errhint("Check the stream with es.es_verify(%s).",
						 quote_literal_cstr(text_to_cstring(stream)))));
}

/*
 * write_streams
 *		Create the new streams and lock and advance the existing ones (step 3
 *		of the file header); sets st->tx_id.  Inside SPI.
 */
static void
write_streams(ImportState *st)
{
	Oid			streams_rel = EsRelationOid("streams");
	Datum	   *ids = palloc(sizeof(Datum) * st->nstreams);
	Datum	   *counts = palloc(sizeof(Datum) * st->nstreams);
	Datum	   *created_at = palloc(sizeof(Datum) * st->nstreams);
	FullTransactionId mine = GetTopFullTransactionId();
	FullTransactionId chosen = mine;
	HASH_SEQ_STATUS seq;
	ImportStream *entry;
	Datum		values[4];
	int64		n = 0;
	int64		nexisting = 0;
	uint64		i;
	Portal		portal;

	hash_seq_init(&seq, st->streams);
	while ((entry = (ImportStream *) hash_seq_search(&seq)) != NULL)
	{
		ids[n] = PointerGetDatum(cstring_to_text_with_len(entry->key.s, entry->key.len));
		counts[n] = Int64GetDatum(entry->rows);
		created_at[n] = TimestampTzGetDatum(entry->first_ts);
		n++;
	}

	/* new streams: their rows at their final version, in stream order */
	values[0] = make_array(ids, NULL, n, TEXTOID);
	values[1] = make_array(counts, NULL, n, INT8OID);
	values[2] = FullTransactionIdGetDatum(mine);
	values[3] = make_array(created_at, NULL, n, TIMESTAMPTZOID);
	pgstat_report_activity(STATE_RUNNING,
						   psprintf("es_import: creating or locking " INT64_FORMAT " streams", n));
	EsGuardedWrite(&create_streams_plan, streams_rel, TRIGGER_EVENT_INSERT, values, NULL,
				   InvalidSnapshot, SPI_OK_INSERT_RETURNING);
	for (i = 0; i < SPI_processed; i++)
	{
		bool		isnull;
		text	   *t = DatumGetTextPP(SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc,
													 1, &isnull));
		ImportKey	key;

		key.s = VARDATA_ANY(t);
		key.len = VARSIZE_ANY_EXHDR(t);
		entry = (ImportStream *) hash_search(st->streams, &key, HASH_FIND, NULL);
		if (entry == NULL)
			elog(ERROR, "es_import created a stream it does not import");
		if (entry->base > 0)
			version_conflict(st, entry, 0);
		entry->base = 0;
		entry->created = true;
		/* a new stream's chain starts from 32 zero bytes */
		memset(entry->prev, 0, ES_HASH_LENGTH);
	}
	st->ncreated = SPI_processed;
	SPI_freetuptable(SPI_tuptable);

	/* the existing streams: lock them in stream order, check, advance */
	nexisting = 0;
	hash_seq_init(&seq, st->streams);
	while ((entry = (ImportStream *) hash_seq_search(&seq)) != NULL)
	{
		if (entry->created)
			continue;
		ids[nexisting] = PointerGetDatum(cstring_to_text_with_len(entry->key.s, entry->key.len));
		counts[nexisting] = Int64GetDatum(entry->rows);
		nexisting++;
	}
	if (nexisting > 0)
	{
		Datum		arg = make_array(ids, NULL, nexisting, TEXTOID);
		int64		locked = 0;

		portal = SPI_cursor_open(NULL, EsGetPlan(&lock_streams_plan), &arg, NULL, false);
		for (;;)
		{
			SPI_cursor_fetch(portal, true, ES_FETCH_BATCH);
			if (SPI_processed == 0)
				break;
			for (i = 0; i < SPI_processed; i++)
			{
				HeapTuple	tup = SPI_tuptable->vals[i];
				TupleDesc	desc = SPI_tuptable->tupdesc;
				bool		isnull;
				bool		ts_null;
				text	   *t = DatumGetTextPP(SPI_getbinval(tup, desc, 1, &isnull));
				int64		current = DatumGetInt64(SPI_getbinval(tup, desc, 2, &isnull));
				Datum		log_tx_id = SPI_getbinval(tup, desc, 3, &isnull);
				Datum		last_ts = SPI_getbinval(tup, desc, 4, &ts_null);
				int64		first = DatumGetInt64(SPI_getbinval(tup, desc, 5, &isnull));
				bool		base_null;
				Datum		base = SPI_getbinval(tup, desc, 6, &base_null);
				ImportKey	key;

				CHECK_FOR_INTERRUPTS();
				key.s = VARDATA_ANY(t);
				key.len = VARSIZE_ANY_EXHDR(t);
				entry = (ImportStream *) hash_search(st->streams, &key, HASH_FIND, NULL);
				if (entry == NULL || entry->created)
					elog(ERROR, "es_import locked a stream it does not import");
				EsRefuseStreamState(text_to_cstring(t),
									DatumGetBool(SPI_getbinval(tup, desc, 7, &isnull)),
									DatumGetBool(SPI_getbinval(tup, desc, 8, &isnull)));
				if (entry->base >= 0 && entry->base != current)
					version_conflict(st, entry, current);
				entry->base = current;
				chain_start(entry, t, current, first, base_null ? NULL : DatumGetByteaPP(base));
				if (!ts_null && DatumGetTimestampTz(last_ts) > entry->first_ts)
				{
					char	   *first_str = pstrdup(timestamptz_to_str(entry->first_ts));
					char	   *last_str = pstrdup(timestamptz_to_str(DatumGetTimestampTz(last_ts)));

					ereport(ERROR,
							(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
							 errmsg("recorded_at goes back in time in stream \"%s\"",
									pnstrdup(entry->key.s, entry->key.len)),
							 errdetail("Row " INT64_FORMAT " of table \"%s\" has %s; the stream's last event, version " INT64_FORMAT ", was recorded at %s.",
									   entry->first_row, st->relname,
									   first_str, current, last_str),
							 errhint("Within a stream, recorded_at never decreases.")));
				}

				/*
				 * Order the import after the stream's last append, as
				 * advance_stream does; a log_tx_id restored from another
				 * cluster does not count (era.c).
				 */
				if (!EsForeignTransactionId(log_tx_id) &&
					FullTransactionIdFollows(DatumGetFullTransactionId(log_tx_id), chosen))
					chosen = DatumGetFullTransactionId(log_tx_id);
				locked++;
			}
			SPI_freetuptable(SPI_tuptable);
		}
		SPI_cursor_close(portal);
		if (locked != nexisting)
			elog(ERROR, "es_import locked " INT64_FORMAT " of " INT64_FORMAT " existing streams",
				 locked, nexisting);

		values[0] = arg;
		values[1] = make_array(counts, NULL, nexisting, INT8OID);
		values[2] = FullTransactionIdGetDatum(chosen);
		EsGuardedWrite(&advance_streams_plan, streams_rel, TRIGGER_EVENT_UPDATE, values, NULL,
					   InvalidSnapshot, SPI_OK_UPDATE);
		if (SPI_processed != (uint64) nexisting)
			elog(ERROR, "es_import advanced %llu of " INT64_FORMAT " existing streams",
				 (unsigned long long) SPI_processed, nexisting);
	}

	/* the new streams carry the import's log_tx_id too */
	if (!FullTransactionIdEquals(chosen, mine) && st->ncreated > 0)
	{
		int64		k = 0;

		hash_seq_init(&seq, st->streams);
		while ((entry = (ImportStream *) hash_seq_search(&seq)) != NULL)
			if (entry->created)
				ids[k++] = PointerGetDatum(cstring_to_text_with_len(entry->key.s, entry->key.len));
		values[0] = make_array(ids, NULL, k, TEXTOID);
		values[1] = FullTransactionIdGetDatum(chosen);
		EsGuardedWrite(&retag_streams_plan, streams_rel, TRIGGER_EVENT_UPDATE, values, NULL,
					   InvalidSnapshot, SPI_OK_UPDATE);
	}
	st->tx_id = FullTransactionIdGetDatum(chosen);
}

/* one chunk of events being built (pass 2) */
typedef struct ImportChunk
{
	int			n;
	Datum		col[IC_NCOLUMNS][ES_IMPORT_CHUNK_ROWS];
	bool		null[IC_NCOLUMNS][ES_IMPORT_CHUNK_ROWS];
	Datum		hash[ES_IMPORT_CHUNK_ROWS];	/* chain hashes (bytea) */
} ImportChunk;

/*
 * route_chunk
 *		Hand the events an insert returned (insert_chunk_routed_plan) to the
 *		outbox, one event at a time in log order: the routes pick them by
 *		category and type as es_append's events.
 */
static void
route_chunk(void)
{
	TupleDesc	desc = SPI_tuptable->tupdesc;
	SPITupleTable *tuptable = SPI_tuptable;
	uint64		count = SPI_processed;
	uint64		i;

	for (i = 0; i < count; i++)
	{
		HeapTuple	tup = tuptable->vals[i];
		bool		isnull;
		int64		position = DatumGetInt64(SPI_getbinval(tup, desc, 1, &isnull));
		text	   *stream = DatumGetTextPP(SPI_getbinval(tup, desc, 2, &isnull));
		int64		version = DatumGetInt64(SPI_getbinval(tup, desc, 3, &isnull));
		EsOutboxEvent ev;
		Datum		md;
		Datum		recorded_at;

		CHECK_FOR_INTERRUPTS();
		ev.id = SPI_getbinval(tup, desc, 4, &isnull);
		ev.type = DatumGetTextPP(SPI_getbinval(tup, desc, 5, &isnull));
		ev.schema_version = DatumGetInt32(SPI_getbinval(tup, desc, 6, &isnull));
		ev.data = DatumGetJsonbP(SPI_getbinval(tup, desc, 7, &isnull));
		md = SPI_getbinval(tup, desc, 8, &isnull);
		ev.metadata = isnull ? NULL : DatumGetJsonbP(md);
		recorded_at = SPI_getbinval(tup, desc, 9, &isnull);
		EsOutboxAppend(stream, 1, version, &position, &ev, recorded_at);
	}
	SPI_freetuptable(tuptable);
}

/*
 * insert_chunk
 *		Insert the chunk's events (one statement) and note their positions.
 */
static void
insert_chunk(ImportState *st, ImportChunk *c, bool routed)
{
	Datum		values[IC_NCOLUMNS + 3];
	/* the chunk holds the tags in their text form (tags_text) */
	static const Oid elemtypes[IC_NCOLUMNS] = {
		TEXTOID, INT8OID, UUIDOID, TEXTOID, INT4OID, JSONBOID, JSONBOID, TIMESTAMPTZOID,
		TEXTOID
	};
	int64		count;
	int64		first;
	int64		last;
	int			j;

	for (j = 0; j < IC_NCOLUMNS; j++)
		values[j] = make_array(c->col[j], c->null[j], c->n, elemtypes[j]);
	values[IC_NCOLUMNS] = Int32GetDatum(st->era);
	values[IC_NCOLUMNS + 1] = st->tx_id;
	values[IC_NCOLUMNS + 2] = make_array(c->hash, NULL, c->n, BYTEAOID);

	if (routed)
	{
		EsGuardedWrite(&insert_chunk_routed_plan, EsRelationOid("events"), TRIGGER_EVENT_INSERT,
					   values, NULL, InvalidSnapshot, SPI_OK_INSERT_RETURNING);
		count = SPI_processed;
		if (count > 0)
		{
			bool		isnull;

			first = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
			last = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[count - 1], SPI_tuptable->tupdesc, 1, &isnull));
		}
		else
			first = last = 0;
		if (count == c->n)
			route_chunk();
	}
	else
	{
		bool		isnull;
		HeapTuple	tup;
		TupleDesc	desc;

		EsGuardedWrite(&insert_chunk_plan, EsRelationOid("events"), TRIGGER_EVENT_INSERT,
					   values, NULL, InvalidSnapshot, SPI_OK_SELECT);
		if (SPI_processed != 1)
			elog(ERROR, "es_import could not count the events it inserted");
		tup = SPI_tuptable->vals[0];
		desc = SPI_tuptable->tupdesc;
		count = DatumGetInt64(SPI_getbinval(tup, desc, 1, &isnull));
		first = isnull ? 0 : DatumGetInt64(SPI_getbinval(tup, desc, 2, &isnull));
		last = isnull ? 0 : DatumGetInt64(SPI_getbinval(tup, desc, 3, &isnull));
		SPI_freetuptable(SPI_tuptable);
	}
	if (count != c->n)
		ereport(ERROR,
				(errcode(ERRCODE_TRIGGERED_DATA_CHANGE_VIOLATION),
				 errmsg("the insert into table \"es.events\" wrote " INT64_FORMAT " of %d events",
						count, c->n),
				 errdetail("A rule or trigger on es.events changed the insert; nothing was imported.")));
	/* positions come from the identity sequence in insertion order */
	if (first <= st->last_position || last < first)
		ereport(ERROR,
				(errcode(ERRCODE_TRIGGERED_DATA_CHANGE_VIOLATION),
				 errmsg("the insert into table \"es.events\" did not give the events increasing positions"),
				 errdetail("A rule or trigger on es.events changed the insert; nothing was imported.")));
	if (st->first_position == 0)
		st->first_position = first;
	st->last_position = last;
	c->n = 0;
}

/*
 * chain_row
 *		The chain hash of row i of the chunk, as es_append computes it
 *		(chain.c): chained to its stream's previous event, which it becomes.
 *		tags: the row's tags as stored (NULL: none).  The hash goes into the
 *		chunk, allocated in the current (chunk) context.
 */
static void
chain_row(ImportStream *entry, ImportChunk *c, int i, ArrayType *tags)
{
	EsHashInput in;
	uint8		h[ES_HASH_LENGTH];

	in.stream = DatumGetTextPP(c->col[IC_STREAM_ID][i]);
	in.version = DatumGetInt64(c->col[IC_VERSION][i]);
	in.id = DatumGetUUIDP(c->col[IC_EVENT_ID][i]);
	in.type = DatumGetTextPP(c->col[IC_EVENT_TYPE][i]);
	in.schema_version = DatumGetInt32(c->col[IC_SCHEMA_VERSION][i]);
	in.data = DatumGetJsonbP(c->col[IC_DATA][i]);
	in.metadata = c->null[IC_METADATA][i] ? NULL : DatumGetJsonbP(c->col[IC_METADATA][i]);
	in.tags = tags;
	in.recorded_at = DatumGetTimestampTz(c->col[IC_RECORDED_AT][i]);
	EsEventHash(entry->prev, &in, h);
	memcpy(entry->prev, h, ES_HASH_LENGTH);
	c->hash[i] = EsHashDatum(h);
}

/*
 * insert_events
 *		Pass 2: read the source again, with the same snapshot and in the same
 *		order, and insert its events in chunks (step 4 of the file header).
 */
static void
insert_events(ImportState *st, MemoryContext chunkcxt, bool routed)
{
	TableScanDesc scan;
	TupleTableSlot *slot;
	ImportChunk *c = palloc(sizeof(ImportChunk));
	MemoryContext old;
	int64		done = 0;

	c->n = 0;
	scan = table_beginscan_strat(st->rel, st->snapshot, 0, NULL, true, false);
	slot = table_slot_create(st->rel, NULL);
	st->row = 0;
	old = MemoryContextSwitchTo(chunkcxt);
	while (table_scan_getnextslot(scan, ForwardScanDirection, slot))
	{
		Datum	   *values;
		bool	   *nulls;
		text	   *stream;
		ImportStream *entry;
		ImportKey	key;
		int			i = c->n;
		int			j;

		CHECK_FOR_INTERRUPTS();
		st->row++;
		slot_getallattrs(slot);
		values = slot->tts_values;
		nulls = slot->tts_isnull;
		for (j = 0; j < IC_NCOLUMNS; j++)
		{
			AttrNumber	a = st->attnums[j] - 1;

			if (st->attnums[j] == InvalidAttrNumber)
			{
				/* an optional column the source does not have */
				c->col[j][i] = (Datum) 0;
				c->null[j][i] = true;
				continue;
			}
			c->null[j][i] = nulls[a];
			/* copy: the slot's values go with the next tuple */
			if (j == IC_TAGS)
			{
				if (!nulls[a])
					c->col[j][i] = tags_text(&st->tags_out, values[a], &c->null[j][i]);
				else
					c->col[j][i] = (Datum) 0;
			}
			else if (nulls[a] && j == IC_EVENT_ID)
			{
				/* a missing id: generated as es_append generates them */
				pg_uuid_t  *u = palloc(sizeof(pg_uuid_t));

				EsGenerateEventId(u);
				c->col[j][i] = UUIDPGetDatum(u);
				c->null[j][i] = false;
			}
			else if (nulls[a])
				c->col[j][i] = (Datum) 0;
			else if (import_column_types[j] == TEXTOID || import_column_types[j] == JSONBOID)
				c->col[j][i] = PointerGetDatum(PG_DETOAST_DATUM_COPY(values[a]));
			else if (import_column_types[j] == UUIDOID)
			{
				pg_uuid_t  *u = palloc(sizeof(pg_uuid_t));

				memcpy(u, DatumGetUUIDP(values[a]), sizeof(pg_uuid_t));
				c->col[j][i] = UUIDPGetDatum(u);
			}
			else
				c->col[j][i] = values[a];
		}
		stream = DatumGetTextPP(c->col[IC_STREAM_ID][i]);
		key.s = VARDATA_ANY(stream);
		key.len = VARSIZE_ANY_EXHDR(stream);
		entry = (ImportStream *) hash_search(st->streams, &key, HASH_FIND, NULL);
		if (entry == NULL || entry->base < 0)
			elog(ERROR, "row " INT64_FORMAT " of the import source changed during the import",
				 st->row);
		entry->inserted++;
		c->col[IC_VERSION][i] = Int64GetDatum(entry->base + entry->inserted);
		c->null[IC_VERSION][i] = false;
		if (c->null[IC_SCHEMA_VERSION][i])
		{
			c->col[IC_SCHEMA_VERSION][i] = Int32GetDatum(1);
			c->null[IC_SCHEMA_VERSION][i] = false;
		}
		if (c->null[IC_RECORDED_AT][i])
		{
			c->col[IC_RECORDED_AT][i] = TimestampTzGetDatum(st->now);
			c->null[IC_RECORDED_AT][i] = false;
		}
		chain_row(entry, c, i,
				  st->attnums[IC_TAGS] == InvalidAttrNumber || c->null[IC_TAGS][i] ?
				  NULL : DatumGetArrayTypeP(values[st->attnums[IC_TAGS] - 1]));
		c->n++;

		if (c->n == ES_IMPORT_CHUNK_ROWS)
		{
			insert_chunk(st, c, routed);
			done = st->row;
			report_progress("imported", done, st->nrows);
			MemoryContextReset(chunkcxt);
		}
	}
	if (c->n > 0)
		insert_chunk(st, c, routed);
	MemoryContextSwitchTo(old);
	MemoryContextReset(chunkcxt);
	if (st->row != st->nrows)
		elog(ERROR, "the import source changed during the import");
	st->row = 0;
	ExecDropSingleTupleTableSlot(slot);
	table_endscan(scan);
	pfree(c);
}

/*
 * duplicate_id_error
 *		Find the first row
 *		of the source, in source order, whose event id repeats an earlier
 *		row of its stream or an event already in the stream, and report it.
 *		Runs before the insert.  Returns when it finds no such row.
 */
static void
duplicate_id_error(ImportState *st)
{
	StringInfoData sql;
	int			rc;
	bool		isnull;
	int64		row;
	char	   *stream;
	char	   *id;
	bool		in_source;

	initStringInfo(&sql);
	appendStringInfo(&sql,
					 "SELECT d.n, d.stream_id, d.event_id::pg_catalog.text, d.k OPERATOR(pg_catalog.>) 1"
					 "  FROM (SELECT pg_catalog.row_number() OVER (ORDER BY s.ctid) AS n,"
					 "               s.stream_id, s.event_id,"
					 "               pg_catalog.row_number() OVER (PARTITION BY s.stream_id, s.event_id"
					 "                                             ORDER BY s.ctid) AS k"
					 "          FROM %s AS s) AS d"
					 " WHERE d.event_id IS NOT NULL"
					 "   AND (d.k OPERATOR(pg_catalog.>) 1"
					 "        OR EXISTS (SELECT FROM es.events AS e"
					 "                    WHERE e.stream_id OPERATOR(pg_catalog.=) d.stream_id"
					 "                      AND e.event_id OPERATOR(pg_catalog.=) d.event_id))"
					 " ORDER BY d.n LIMIT 1",
					 st->relsql);
	rc = SPI_execute(sql.data, false, 1);
	if (rc != SPI_OK_SELECT || SPI_processed != 1)
		return;
	row = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	stream = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2);
	id = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 3);
	in_source = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 4, &isnull));
	ereport(ERROR,
			(errcode(ERRCODE_DUPLICATE_OBJECT),
			 in_source ?
			 errmsg("event id \"%s\" appears more than once in stream \"%s\" of the import", id, stream) :
			 errmsg("event id \"%s\" already exists in stream \"%s\"", id, stream),
			 errdetail("Row " INT64_FORMAT " of table \"%s\" repeats it; nothing was imported.",
					   row, st->relname),
			 errhint("Event ids identify events within a stream and must be unique; leave event_id NULL to generate one.")));
}

/*
 * check_event_ids
 *		Refuse given event ids that repeat an earlier row of their stream in
 *		the source, or an event already in their stream (42710, naming the
 *		row: duplicate_id_error).  Run under the stream locks, before the
 *		insert, inside SPI.  Costs nothing when no row gives an id; probes
 *		es.events only for the rows of streams that existed before.
 */
static void
check_event_ids(ImportState *st)
{
	StringInfoData sql;
	HASH_SEQ_STATUS seq;
	ImportStream *entry;
	Datum	   *ids;
	int64		n = 0;
	int			rc;
	bool		found;

	if (st->nids == 0)
		return;
	report_progress("checking event ids", 0, st->nrows);

	initStringInfo(&sql);
	appendStringInfo(&sql,
					 "SELECT FROM %s AS s WHERE s.event_id IS NOT NULL"
					 " GROUP BY s.stream_id, s.event_id"
					 " HAVING pg_catalog.count(*) OPERATOR(pg_catalog.>) 1 LIMIT 1",
					 st->relsql);
	rc = SPI_execute(sql.data, false, 1);
	if (rc != SPI_OK_SELECT)
		elog(ERROR, "could not check the event ids of the import source: %s",
			 SPI_result_code_string(rc));
	found = SPI_processed > 0;

	ids = palloc(sizeof(Datum) * st->nstreams);
	hash_seq_init(&seq, st->streams);
	while ((entry = (ImportStream *) hash_seq_search(&seq)) != NULL)
		if (!entry->created && entry->ids > 0)
			ids[n++] = PointerGetDatum(cstring_to_text_with_len(entry->key.s, entry->key.len));
	if (!found && n > 0)
	{
		Datum		arg = make_array(ids, NULL, n, TEXTOID);
		Oid			argtype = TEXTARRAYOID;

		resetStringInfo(&sql);
		appendStringInfo(&sql,
						 "SELECT FROM %s AS s"
						 " WHERE s.event_id IS NOT NULL"
						 "   AND s.stream_id OPERATOR(pg_catalog.=) ANY ($1)"
						 "   AND EXISTS (SELECT FROM es.events AS e"
						 "                WHERE e.stream_id OPERATOR(pg_catalog.=) s.stream_id"
						 "                  AND e.event_id OPERATOR(pg_catalog.=) s.event_id)"
						 " LIMIT 1",
						 st->relsql);
		rc = SPI_execute_with_args(sql.data, 1, &argtype, &arg, NULL, false, 1);
		if (rc != SPI_OK_SELECT)
			elog(ERROR, "could not check the event ids of the import source: %s",
				 SPI_result_code_string(rc));
		found = SPI_processed > 0;
	}
	if (found)
	{
		duplicate_id_error(st);
		elog(ERROR, "es_import found a repeated event id but not its row");
	}
}

/*
 * import_result
 *		The es.import_result of the import, in the current memory context.
 */
static Datum
import_result(FunctionCallInfo fcinfo, ImportState *st)
{
	TupleDesc	tupdesc;
	Datum		values[6];
	bool		nulls[6] = {false, false, false, false, false, false};

	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");
	if (tupdesc->natts != 6)
		elog(ERROR, "type es.import_result has %d attributes, expected 6", tupdesc->natts);
	tupdesc = BlessTupleDesc(tupdesc);

	values[0] = Int64GetDatum(st->nstreams);
	values[1] = Int64GetDatum(st->ncreated);
	values[2] = Int64GetDatum(st->nrows);
	if (st->nrows == 0)
	{
		nulls[3] = nulls[4] = nulls[5] = true;
	}
	else
	{
		TupleDesc	cdesc = lookup_rowtype_tupdesc(TupleDescAttr(tupdesc, 5)->atttypid, -1);
		Datum		cvalues[3];
		bool		cnulls[3] = {false, false, false};

		values[3] = Int64GetDatum(st->first_position);
		values[4] = Int64GetDatum(st->last_position);
		cvalues[0] = Int32GetDatum(st->era);
		cvalues[1] = st->tx_id;
		cvalues[2] = Int64GetDatum(st->last_position);
		values[5] = HeapTupleGetDatum(heap_form_tuple(cdesc, cvalues, cnulls));
		ReleaseTupleDesc(cdesc);
	}
	return HeapTupleGetDatum(heap_form_tuple(tupdesc, values, nulls));
}

PG_FUNCTION_INFO_V1(es_import);

/*
 * es_import(source regclass, outbox boolean DEFAULT true)
 *		RETURNS es.import_result (streams bigint, new_streams bigint,
 *								  events bigint, first_position bigint,
 *								  last_position bigint, token es.log_cursor)
 *
 * Imports every row of source (a table shaped like es.import_event) into
 * the log, in one transaction, in the table's physical order (see the file
 * header).  outbox: route the imported events to the outbox when routes
 * exist (as es_append does); false leaves the outbox alone.
 */
Datum
es_import(PG_FUNCTION_ARGS)
{
	Oid			source;
	bool		outbox;
	ImportState st;
	HASHCTL		ctl;
	ErrorContextCallback errcb;
	MemoryContext workcxt;
	MemoryContext rowcxt;
	const char *saved_activity = debug_query_string;
	Datum		result;

	EsCheckWritable("es_import()");
	/* a logical subscriber's log belongs to the origin (replica.c) */
	EsCheckNotSubscriber(ES_LOG_APPEND);
	EsRefuseDistributed("es_import()", "Import before es.distribute(), or append the events with es.es_append().");

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("import source cannot be null")));
	if (PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("outbox cannot be null"),
				 errhint("Pass true to route the imported events to the outbox, false to leave it alone.")));
	source = PG_GETARG_OID(0);
	outbox = PG_GETARG_BOOL(1);

	memset(&st, 0, sizeof(st));
	st.outbox = outbox;
	fmgr_info(F_ARRAY_OUT, &st.tags_out);
	st.now = GetCurrentTimestamp();

	errcb.callback = import_error_callback;
	errcb.arg = &st;
	errcb.previous = error_context_stack;
	error_context_stack = &errcb;

	check_source(source, &st);

	/*
	 * Given event ids are checked against es.events with a query: row-level
	 * security on es.events could hide an existing id from it.  es_append
	 * reads its index directly; the import refuses to run under RLS.
	 */
	if (check_enable_rls(EsRelationOid("events"), InvalidOid, false) == RLS_ENABLED)
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("cannot import events while row-level security applies to table \"es.events\""),
				 errdetail("es_import checks the given event ids against the events already stored, which row-level security could hide."),
				 errhint("Import as the owner of es.events or as a role with BYPASSRLS.")));
	/*
	 * A snapshot of its own, as SPI takes for each statement of a volatile
	 * function: the source rows written earlier in this transaction, even
	 * by the calling statement, are visible.
	 */
	CommandCounterIncrement();
	st.snapshot = RegisterSnapshot(GetTransactionSnapshot());

	workcxt = AllocSetContextCreate(CurrentMemoryContext, "es_import chunk",
									ALLOCSET_DEFAULT_SIZES);
	rowcxt = AllocSetContextCreate(CurrentMemoryContext, "es_import row",
								   ALLOCSET_DEFAULT_SIZES);

	/* 2. check every row, collect the streams */
	ctl.keysize = sizeof(ImportKey);
	ctl.entrysize = sizeof(ImportStream);
	ctl.hash = key_hash;
	ctl.match = key_match;
	st.streamcxt = AllocSetContextCreate(CurrentMemoryContext, "es_import streams",
										 ALLOCSET_DEFAULT_SIZES);
	ctl.hcxt = st.streamcxt;
	st.streams = hash_create("es_import streams", 1024, &ctl,
							 HASH_ELEM | HASH_FUNCTION | HASH_COMPARE | HASH_CONTEXT);
	scan_source(&st, rowcxt);

	if (st.nrows > 0)
	{
		bool		routed;

		if (SPI_connect() != SPI_OK_CONNECT)
			elog(ERROR, "SPI_connect failed");

		/* the rule of es_append (append.c), for the same reasons */
		EsRefuseBeforeRowTriggers(EsRelationOid("streams"), "streams");
		EsRefuseBeforeRowTriggers(EsRelationOid("events"), "events");
		st.era = EsAppendEra();

		/*
		 * 3. conditional appends wait for the import (SHARE on every coarse
		 * bucket), taken before any stream row lock, as es_append orders
		 * its condition locks
		 */
		EsLockAllForImport();

		/* 3. the streams */
		write_streams(&st);

		/* 4-5. the events, and the outbox */
		routed = st.outbox && EsOutboxActive();
		report_progress("imported", 0, st.nrows);
		check_event_ids(&st);
		insert_events(&st, workcxt, routed);
		EsProjectionWakeAtCommit();

		SPI_finish();
	}

	error_context_stack = errcb.previous;
	UnregisterSnapshot(st.snapshot);
	table_close(st.rel, NoLock);
	hash_destroy(st.streams);
	MemoryContextDelete(st.streamcxt);
	MemoryContextDelete(workcxt);
	MemoryContextDelete(rowcxt);
	pgstat_report_activity(STATE_RUNNING, saved_activity);

	result = import_result(fcinfo, &st);
	PG_RETURN_DATUM(result);
}
