/*-------------------------------------------------------------------------
 *
 * lifecycle.c
 *	  Archive, unarchive and erase a stream (issue 15).
 *
 * Every function here starts by locking the stream's row in es.streams
 * (SELECT ... FOR UPDATE), the lock es_append takes before it writes: an
 * append that got the row first commits before the function reads the
 * stream's events (under READ COMMITTED each statement below takes a new
 * snapshot, so it sees that append), and an append that comes after waits
 * for the function's transaction and then finds the stream archived or
 * erased (append.c refuses both).  So no event is ever half-moved, left
 * behind, or appended after a tombstone.
 *
 * Archive moves the stream's events from es.events into es.archived_events
 * (same columns, same values: global_position, era and tx_id included) and
 * sets streams.archived_at; the log, category and query reads, which read
 * es.events, no longer see them, and stream_scan.c finds them for
 * es_read_stream and es_fold.  Unarchive moves them back with their
 * original values.  The rows go back into es.events through the table
 * access method and the executor's index insertion, without firing the
 * triggers of es.events: a projection trigger must not see these old events
 * as new ones (they were projected when first appended).
 *
 * Erase deletes the stream's events (from both tables) and every copy
 * es_ext keeps of them (snapshots, outbox rows, their deliveries and dead
 * letters, the dead letters of asynchronous projections), marks the stream
 * erased with first_version and base_hash past the removed events, appends
 * the tombstone event ES_TOMBSTONE_TYPE through EsAppendSystemEvent (an
 * ordinary append: gap-safe, chained from base_hash, routed to the outbox and
 * projections like any event) and records the erasure in es.erasures.  It
 * needs the DELETE privileges of es_eraser; each of its statements passes
 * the guard of its table once (EsGuardedWrite).  The shared-memory
 * statistics (stats.c) count per category, never per stream: nothing there
 * names the stream.
 *
 * Memory: everything is allocated in the function's memory context or SPI's.
 *
 * src/lifecycle.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "catalog/pg_type.h"
#include "commands/trigger.h"
#include "executor/executor.h"
#include "executor/spi.h"
#include "executor/tuptable.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "nodes/execnodes.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "es_ext.h"

/* the columns es.events and es.archived_events share, in table order */
#define EVENT_COLUMNS \
	"global_position, stream_id, version, event_id, event_type, schema_version, data," \
	" metadata, recorded_at, category, era, tx_id, tags, hash"

static EsPlan lock_plan = {
	NULL,
	"SELECT s.version, s.first_version, s.base_hash, s.archived_at IS NOT NULL,"
	"       s.erased_at IS NOT NULL"
	"  FROM es.streams AS s WHERE s.stream_id OPERATOR(pg_catalog.=) $1"
	"   FOR UPDATE OF s",
	1, {TEXTOID}
};

static EsPlan lock_skip_plan = {
	NULL,
	"SELECT s.version, s.first_version, s.base_hash, s.archived_at IS NOT NULL,"
	"       s.erased_at IS NOT NULL"
	"  FROM es.streams AS s WHERE s.stream_id OPERATOR(pg_catalog.=) $1"
	"   FOR UPDATE OF s SKIP LOCKED",
	1, {TEXTOID}
};

static EsPlan archive_copy_plan = {
	NULL,
	"INSERT INTO es.archived_events (" EVENT_COLUMNS ")"
	" SELECT " EVENT_COLUMNS " FROM es.events AS e"
	"  WHERE e.stream_id OPERATOR(pg_catalog.=) $1 ORDER BY e.version",
	1, {TEXTOID}
};

static EsPlan delete_events_plan = {
	NULL,
	"DELETE FROM es.events AS e WHERE e.stream_id OPERATOR(pg_catalog.=) $1",
	1, {TEXTOID}
};

static EsPlan delete_archived_plan = {
	NULL,
	"DELETE FROM es.archived_events AS e WHERE e.stream_id OPERATOR(pg_catalog.=) $1",
	1, {TEXTOID}
};

static EsPlan read_archived_plan = {
	NULL,
	"SELECT " EVENT_COLUMNS " FROM es.archived_events AS e"
	" WHERE e.stream_id OPERATOR(pg_catalog.=) $1 ORDER BY e.version",
	1, {TEXTOID}
};

static EsPlan set_archived_plan = {
	NULL,
	"UPDATE es.streams AS s"
	"   SET archived_at = CASE WHEN $2 THEN pg_catalog.now() END,"
	"       updated_at = pg_catalog.clock_timestamp()"
	" WHERE s.stream_id OPERATOR(pg_catalog.=) $1",
	2, {TEXTOID, BOOLOID}
};

static EsPlan archived_hash_plan = {
	NULL,
	"SELECT a.hash FROM es.archived_events AS a"
	" WHERE a.stream_id OPERATOR(pg_catalog.=) $1 AND a.version OPERATOR(pg_catalog.=) $2",
	2, {TEXTOID, INT8OID}
};

static EsPlan delete_snapshots_plan = {
	NULL,
	"DELETE FROM es.snapshots AS s WHERE s.stream_id OPERATOR(pg_catalog.=) $1",
	1, {TEXTOID}
};

static EsPlan delete_deliveries_plan = {
	NULL,
	"DELETE FROM es.outbox_deliveries AS d USING es.outbox AS o"
	" WHERE o.aggregateid OPERATOR(pg_catalog.=) $1"
	"   AND d.position OPERATOR(pg_catalog.=) o.position",
	1, {TEXTOID}
};

static EsPlan delete_outbox_dead_plan = {
	NULL,
	"DELETE FROM es.outbox_dead AS d USING es.outbox AS o"
	" WHERE o.aggregateid OPERATOR(pg_catalog.=) $1"
	"   AND d.position OPERATOR(pg_catalog.=) o.position",
	1, {TEXTOID}
};

static EsPlan delete_outbox_plan = {
	NULL,
	"DELETE FROM es.outbox AS o WHERE o.aggregateid OPERATOR(pg_catalog.=) $1",
	1, {TEXTOID}
};

static EsPlan delete_projection_dead_plan = {
	NULL,
	"DELETE FROM es.projection_dead_letters AS d WHERE d.stream_id OPERATOR(pg_catalog.=) $1",
	1, {TEXTOID}
};

static EsPlan set_erased_plan = {
	NULL,
	"UPDATE es.streams AS s"
	"   SET erased_at = pg_catalog.now(), archived_at = NULL,"
	"       first_version = s.version OPERATOR(pg_catalog.+) 1, base_hash = $2,"
	"       updated_at = pg_catalog.clock_timestamp()"
	" WHERE s.stream_id OPERATOR(pg_catalog.=) $1",
	2, {TEXTOID, BYTEAOID}
};

static EsPlan tombstone_position_plan = {
	NULL,
	"SELECT e.global_position FROM es.events AS e"
	" WHERE e.stream_id OPERATOR(pg_catalog.=) $1 AND e.version OPERATOR(pg_catalog.=) $2",
	2, {TEXTOID, INT8OID}
};

static EsPlan insert_erasure_plan = {
	NULL,
	"INSERT INTO es.erasures AS r (stream_id, erased_at, erased_by, erased_as, reason,"
	"  first_version, last_version, events, head_hash, tombstone_position)"
	" VALUES ($1, pg_catalog.now(), SESSION_USER, CURRENT_USER, $2, $3, $4, $5, $6, $7)"
	" RETURNING r",
	7, {TEXTOID, TEXTOID, INT8OID, INT8OID, INT8OID, BYTEAOID, INT8OID}
};

/*
 * EsCheckStreamArg
 *		The stream argument number argno of a lifecycle function: not null
 *		(22004), at most ES_MAX_NAME_BYTES bytes (22023).
 */
text *
EsCheckStreamArg(FunctionCallInfo fcinfo, int argno)
{
	text	   *stream;

	if (PG_ARGISNULL(argno))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("stream id cannot be null")));
	stream = PG_GETARG_TEXT_PP(argno);
	if (VARSIZE_ANY_EXHDR(stream) == 0 || VARSIZE_ANY_EXHDR(stream) > ES_MAX_NAME_BYTES)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("stream id must be between 1 and %d bytes long", ES_MAX_NAME_BYTES)));
	return stream;
}

/*
 * EsLockStream
 *		Lock the row of stream in es.streams (FOR UPDATE; with skip_locked,
 *		give up at once when another transaction holds it) and fill st.
 *		Returns false when the stream does not exist (or, with skip_locked,
 *		is locked).  Must be called inside SPI; needs UPDATE on es.streams.
 */
bool
EsLockStream(text *stream, bool skip_locked, EsStreamState *st)
{
	Datum		arg = PointerGetDatum(stream);
	HeapTuple	tup;
	TupleDesc	desc;
	bool		isnull;
	Datum		d;
	int			rc;

	rc = SPI_execute_plan(EsGetPlan(skip_locked ? &lock_skip_plan : &lock_plan),
						  &arg, NULL, false, 1);
	if (rc != SPI_OK_SELECT)
		elog(ERROR, "could not lock the stream row: %s", SPI_result_code_string(rc));
	if (SPI_processed == 0)
		return false;
	tup = SPI_tuptable->vals[0];
	desc = SPI_tuptable->tupdesc;
	st->version = DatumGetInt64(SPI_getbinval(tup, desc, 1, &isnull));
	st->first_version = DatumGetInt64(SPI_getbinval(tup, desc, 2, &isnull));
	d = SPI_getbinval(tup, desc, 3, &isnull);
	st->base_hash = isnull ? NULL : DatumGetByteaPCopy(d);
	st->archived = DatumGetBool(SPI_getbinval(tup, desc, 4, &isnull));
	st->erased = DatumGetBool(SPI_getbinval(tup, desc, 5, &isnull));
	return true;
}

/*
 * lock_existing
 *		EsLockStream, raising 42704 when the stream does not exist and 55000
 *		when it was erased.
 */
static void
lock_existing(text *stream, EsStreamState *st)
{
	char	   *name = text_to_cstring(stream);

	if (!EsLockStream(stream, false, st))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("stream \"%s\" does not exist", name)));
	if (st->erased)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("stream \"%s\" was erased", name),
				 errdetail("Erased streams cannot be recreated, archived or erased again.")));
}

/* run a guarded write of one of the plans above; returns the rows processed */
static uint64
guarded(EsPlan *p, const char *relname, uint32 event, Datum *args, const char *nulls,
		int expected_rc)
{
	EsGuardedWrite(p, EsRelationOid(relname), event, args, nulls, InvalidSnapshot, expected_rc);
	return SPI_processed;
}

PG_FUNCTION_INFO_V1(es_archive_stream);

/*
 * es_archive_stream(stream text) returns bigint
 *		Archive stream: move its events to es.archived_events and mark it
 *		archived.  Returns the number of events moved.  Errors: NULL stream
 *		(22004), unknown stream (42704), erased or already archived (55000).
 */
Datum
es_archive_stream(PG_FUNCTION_ARGS)
{
	text	   *stream = EsCheckStreamArg(fcinfo, 0);
	Datum		args[2];
	EsStreamState st;
	uint64		moved;
	uint64		deleted;

	EsCheckWritable("es_archive_stream()");
	EsRefuseDistributed("es_archive_stream()", NULL);
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");

	lock_existing(stream, &st);
	if (st.archived)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("stream \"%s\" is already archived", text_to_cstring(stream)),
				 errhint("Call es.es_unarchive_stream() to make it writable again.")));

	args[0] = PointerGetDatum(stream);
	moved = guarded(&archive_copy_plan, "archived_events", TRIGGER_EVENT_INSERT, args, NULL,
					SPI_OK_INSERT);
	deleted = guarded(&delete_events_plan, "events", TRIGGER_EVENT_DELETE, args, NULL,
					  SPI_OK_DELETE);
	if (moved != deleted)
		elog(ERROR, "archive of stream \"%s\" copied " UINT64_FORMAT " events but deleted " UINT64_FORMAT,
			 text_to_cstring(stream), moved, deleted);
	args[1] = BoolGetDatum(true);
	guarded(&set_archived_plan, "streams", TRIGGER_EVENT_UPDATE, args, NULL, SPI_OK_UPDATE);

	SPI_finish();
	PG_RETURN_INT64((int64) moved);
}

/*
 * restore_archived
 *		Insert the archived events of stream back into es.events, as they
 *		were, without firing its triggers (see the file header): the table
 *		access method inserts each row, the executor its index entries.
 *		Columns are matched by name (es.events may have dropped columns).
 *		Returns the number of rows.  Inside SPI, under the stream row lock.
 */
static uint64
restore_archived(text *stream)
{
	Datum		arg = PointerGetDatum(stream);
	Relation	rel;
	EState	   *estate;
	ResultRelInfo *rri;
	TupleTableSlot *slot;
	TupleDesc	desc;
	CommandId	cid;
	uint64		i;
	uint64		n;
	int		   *map;
	int			a;
	int			rc;

	rc = SPI_execute_plan(EsGetPlan(&read_archived_plan), &arg, NULL, true, 0);
	if (rc != SPI_OK_SELECT)
		elog(ERROR, "could not read es.archived_events: %s", SPI_result_code_string(rc));
	n = SPI_processed;
	if (n == 0)
		return 0;

	rel = table_open(EsRelationOid("events"), RowExclusiveLock);
	desc = RelationGetDescr(rel);
	if (pg_class_aclcheck(RelationGetRelid(rel), GetUserId(), ACL_INSERT) != ACLCHECK_OK)
		aclcheck_error(ACLCHECK_NO_PRIV, OBJECT_TABLE, "events");

	/* each column of es.events, by name, in the rows read (dropped ones: none) */
	map = palloc(sizeof(int) * desc->natts);
	for (i = 0; i < (uint64) desc->natts; i++)
	{
		Form_pg_attribute att = TupleDescAttr(desc, i);

		if (att->attisdropped)
		{
			map[i] = 0;
			continue;
		}
		map[i] = SPI_fnumber(SPI_tuptable->tupdesc, NameStr(att->attname));
		if (map[i] <= 0)
			ereport(ERROR,
					(errcode(ERRCODE_DATATYPE_MISMATCH),
					 errmsg("column \"%s\" of es.events has no counterpart in es.archived_events",
							NameStr(att->attname)),
					 errhint("Both tables must have the same columns.")));
	}

	estate = CreateExecutorState();
	rri = makeNode(ResultRelInfo);
	InitResultRelInfo(rri, rel, 1, NULL, 0);
	ExecOpenIndices(rri, false);
	slot = table_slot_create(rel, NULL);
	cid = GetCurrentCommandId(true);

	for (i = 0; i < n; i++)
	{
		CHECK_FOR_INTERRUPTS();
		ExecClearTuple(slot);
		for (a = 0; a < desc->natts; a++)
		{
			if (map[a] == 0)
			{
				slot->tts_values[a] = (Datum) 0;
				slot->tts_isnull[a] = true;
			}
			else
				slot->tts_values[a] = SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc,
													map[a], &slot->tts_isnull[a]);
		}
		ExecStoreVirtualTuple(slot);
		table_tuple_insert(rel, slot, cid, 0, NULL);
		ExecInsertIndexTuples(rri, slot, estate, false, false, NULL, NIL);
		ResetPerTupleExprContext(estate);
	}

	ExecDropSingleTupleTableSlot(slot);
	ExecCloseIndices(rri);
	FreeExecutorState(estate);
	table_close(rel, NoLock);
	CommandCounterIncrement();
	return n;
}

PG_FUNCTION_INFO_V1(es_unarchive_stream);

/*
 * es_unarchive_stream(stream text) returns bigint
 *		Move an archived stream's events back into es.events and make it
 *		writable.  Returns the number of events moved.  Errors: NULL stream
 *		(22004), unknown stream (42704), erased or not archived (55000).
 */
Datum
es_unarchive_stream(PG_FUNCTION_ARGS)
{
	text	   *stream = EsCheckStreamArg(fcinfo, 0);
	Datum		args[2];
	EsStreamState st;
	uint64		moved;
	uint64		deleted;

	EsCheckWritable("es_unarchive_stream()");
	EsRefuseDistributed("es_unarchive_stream()", NULL);
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");

	lock_existing(stream, &st);
	if (!st.archived)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("stream \"%s\" is not archived", text_to_cstring(stream))));

	moved = restore_archived(stream);
	args[0] = PointerGetDatum(stream);
	deleted = guarded(&delete_archived_plan, "archived_events", TRIGGER_EVENT_DELETE, args, NULL,
					  SPI_OK_DELETE);
	if (moved != deleted)
		elog(ERROR, "unarchive of stream \"%s\" restored " UINT64_FORMAT " events but deleted " UINT64_FORMAT,
			 text_to_cstring(stream), moved, deleted);
	args[1] = BoolGetDatum(false);
	guarded(&set_archived_plan, "streams", TRIGGER_EVENT_UPDATE, args, NULL, SPI_OK_UPDATE);

	SPI_finish();
	PG_RETURN_INT64((int64) moved);
}

/* jsonb of a bytea: its hex text, or null */
static char *
hex_of(bytea *b)
{
	if (b == NULL)
		return NULL;
	return TextDatumGetCString(DirectFunctionCall2(binary_encode, PointerGetDatum(b),
												   CStringGetTextDatum("hex")));
}

/*
 * tombstone_data
 *		The data of the tombstone: {"first_version", "last_version", "events",
 *		"head_hash" (hex or null), "reason"}.
 */
static Jsonb *
tombstone_data(int64 first, int64 last, int64 events, bytea *head, text *reason)
{
	JsonbParseState *state = NULL;
	JsonbValue	k;
	JsonbValue	v;
	JsonbValue *res;
	char	   *hex = hex_of(head);

#define PUT_KEY(s) \
	do { k.type = jbvString; k.val.string.val = (s); k.val.string.len = strlen(s); \
		 pushJsonbValue(&state, WJB_KEY, &k); } while (0)
#define PUT_INT(i) \
	do { v.type = jbvNumeric; \
		 v.val.numeric = DatumGetNumeric(DirectFunctionCall1(int8_numeric, Int64GetDatum(i))); \
		 pushJsonbValue(&state, WJB_VALUE, &v); } while (0)

	pushJsonbValue(&state, WJB_BEGIN_OBJECT, NULL);
	PUT_KEY("first_version");
	PUT_INT(first);
	PUT_KEY("last_version");
	PUT_INT(last);
	PUT_KEY("events");
	PUT_INT(events);
	PUT_KEY("head_hash");
	if (hex == NULL)
		v.type = jbvNull;
	else
	{
		v.type = jbvString;
		v.val.string.val = hex;
		v.val.string.len = strlen(hex);
	}
	pushJsonbValue(&state, WJB_VALUE, &v);
	PUT_KEY("reason");
	v.type = jbvString;
	v.val.string.val = VARDATA_ANY(reason);
	v.val.string.len = VARSIZE_ANY_EXHDR(reason);
	pushJsonbValue(&state, WJB_VALUE, &v);
	res = pushJsonbValue(&state, WJB_END_OBJECT, NULL);
#undef PUT_KEY
#undef PUT_INT
	return JsonbValueToJsonb(res);
}

/* the tombstone's metadata: who erased the stream */
static Jsonb *
tombstone_metadata(void)
{
	JsonbParseState *state = NULL;
	JsonbValue	k;
	JsonbValue	v;
	const char *who[2];
	const char *keys[2] = {"erased_by", "erased_as"};
	int			i;

	who[0] = GetUserNameFromId(GetSessionUserId(), false);
	who[1] = GetUserNameFromId(GetUserId(), false);
	pushJsonbValue(&state, WJB_BEGIN_OBJECT, NULL);
	for (i = 0; i < 2; i++)
	{
		k.type = jbvString;
		k.val.string.val = (char *) keys[i];
		k.val.string.len = strlen(keys[i]);
		pushJsonbValue(&state, WJB_KEY, &k);
		v.type = jbvString;
		v.val.string.val = (char *) who[i];
		v.val.string.len = strlen(who[i]);
		pushJsonbValue(&state, WJB_VALUE, &v);
	}
	return JsonbValueToJsonb(pushJsonbValue(&state, WJB_END_OBJECT, NULL));
}

PG_FUNCTION_INFO_V1(es_erase_stream);

/*
 * es_erase_stream(stream text, reason text) returns es.erasures
 *		Erase stream in the calling transaction (see the file header) and
 *		return its row of es.erasures.  Errors: NULL argument (22004), an
 *		empty reason (22023), unknown stream (42704), already erased
 *		(55000), a privilege missing (42501, from the statements).
 */
Datum
es_erase_stream(PG_FUNCTION_ARGS)
{
	text	   *stream = EsCheckStreamArg(fcinfo, 0);
	text	   *reason;
	Datum		args[7];
	char		nulls[7] = {' ', ' ', ' ', ' ', ' ', ' ', ' '};
	EsStreamState st;
	bytea	   *head = NULL;
	uint64		events;
	int64		tombstone_position;
	bool		isnull;
	HeapTuple	row;
	TupleDesc	desc;
	Datum		result;
	int			rc;

	EsRefuseDistributed("es_erase_stream()", NULL);
	if (PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("erasure reason cannot be null"),
				 errhint("Every erasure is audited with its reason.")));
	reason = PG_GETARG_TEXT_PP(1);
	if (VARSIZE_ANY_EXHDR(reason) == 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("erasure reason cannot be empty"),
				 errhint("Every erasure is audited with its reason.")));
	/* kept forever (es.erasures, the tombstone): short, and never personal data */
	if (VARSIZE_ANY_EXHDR(reason) > ES_MAX_NAME_BYTES)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("erasure reason is too long"),
				 errdetail("An erasure reason is limited to %d bytes; this one has %zu.",
						   ES_MAX_NAME_BYTES, (Size) VARSIZE_ANY_EXHDR(reason)),
				 errhint("The reason is kept forever in es.erasures and in the tombstone: name the request (a ticket number), not the person.")));

	EsCheckWritable("es_erase_stream()");
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");

	/* 1. the stream row, locked: appends wait for this transaction */
	lock_existing(stream, &st);

	/*
	 * 2. the chain hash of the head, where the tombstone's chain starts: in
	 * es.events read past row level security (EsStoredEventHash), or in
	 * es.archived_events
	 */
	args[0] = PointerGetDatum(stream);
	if (st.version < st.first_version)
		head = st.base_hash;
	else if (!st.archived)
	{
		uint8		h[ES_HASH_LENGTH];

		if (EsStoredEventHash(args[0], st.version, h))
			head = DatumGetByteaPP(EsHashDatum(h));
	}
	else
	{
		args[1] = Int64GetDatum(st.version);
		rc = SPI_execute_plan(EsGetPlan(&archived_hash_plan), args, NULL, true, 1);
		if (rc != SPI_OK_SELECT)
			elog(ERROR, "could not read the head of stream \"%s\"", text_to_cstring(stream));
		if (SPI_processed == 1)
		{
			Datum		d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);

			if (!isnull)
				head = DatumGetByteaPCopy(d);
		}
	}

	/* 3. the events and every copy es_ext keeps */
	events = guarded(&delete_events_plan, "events", TRIGGER_EVENT_DELETE, args, NULL,
					 SPI_OK_DELETE);
	events += guarded(&delete_archived_plan, "archived_events", TRIGGER_EVENT_DELETE, args,
					  NULL, SPI_OK_DELETE);
	guarded(&delete_snapshots_plan, "snapshots", TRIGGER_EVENT_DELETE, args, NULL,
			SPI_OK_DELETE);
	guarded(&delete_deliveries_plan, "outbox_deliveries", TRIGGER_EVENT_DELETE, args, NULL,
			SPI_OK_DELETE);
	guarded(&delete_outbox_dead_plan, "outbox_dead", TRIGGER_EVENT_DELETE, args, NULL,
			SPI_OK_DELETE);
	guarded(&delete_outbox_plan, "outbox", TRIGGER_EVENT_DELETE, args, NULL, SPI_OK_DELETE);
	guarded(&delete_projection_dead_plan, "projection_dead_letters", TRIGGER_EVENT_DELETE, args,
			NULL, SPI_OK_DELETE);

	/* 4. the stream row: erased, starting after the removed events */
	if (head != NULL)
		args[1] = PointerGetDatum(head);
	else
		nulls[1] = 'n';
	guarded(&set_erased_plan, "streams", TRIGGER_EVENT_UPDATE, args, nulls, SPI_OK_UPDATE);
	nulls[1] = ' ';

	/* 5. the tombstone: an ordinary append, chained from base_hash */
	EsAppendSystemEvent(stream, ES_TOMBSTONE_TYPE,
						tombstone_data(st.first_version, st.version, (int64) events, head,
									   reason),
						tombstone_metadata());
	args[1] = Int64GetDatum(st.version + 1);
	rc = SPI_execute_plan(EsGetPlan(&tombstone_position_plan), args, NULL, false, 1);
	if (rc != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "the tombstone of stream \"%s\" is missing", text_to_cstring(stream));
	tombstone_position = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0],
													 SPI_tuptable->tupdesc, 1, &isnull));

	/* 6. the audit row */
	args[1] = PointerGetDatum(reason);
	args[2] = Int64GetDatum(st.first_version);
	args[3] = Int64GetDatum(st.version);
	args[4] = Int64GetDatum((int64) events);
	if (head != NULL)
		args[5] = PointerGetDatum(head);
	else
		nulls[5] = 'n';
	args[6] = Int64GetDatum(tombstone_position);
	guarded(&insert_erasure_plan, "erasures", TRIGGER_EVENT_INSERT, args, nulls,
			SPI_OK_INSERT_RETURNING);
	row = SPI_tuptable->vals[0];
	desc = SPI_tuptable->tupdesc;
	result = SPI_getbinval(row, desc, 1, &isnull);
	result = SPI_datumTransfer(result, false, -1);

	SPI_finish();
	PG_RETURN_DATUM(result);
}
