/*-------------------------------------------------------------------------
 *
 * fold.c
 *	  es_fold and es_fold_state: the state of a stream, computed inside the
 *	  database by passing its events, in version order, through a reducer
 *	  (state jsonb, event) RETURNS jsonb, optionally only up to a version or
 *	  a point in time, starting from the newest usable snapshot.
 *
 * The fold, in order:
 *	1. Check the reducer (routine.c) before anything is read.
 *	2. Look up the newest usable snapshot (snapshot.c); the state starts
 *	   from it, or from the initial state.
 *	3. Read the stream after that version, in version order, under the
 *	   caller's active snapshot (so a fold sees a prefix of the stream made
 *	   of whole committed batches), stopping at up_to_version and at the
 *	   first event recorded after as_of (recorded_at never decreases within
 *	   a stream, so the events up to as_of are a prefix).  stream_scan.c
 *	   reads them: a direct scan of the primary key index (stream_id,
 *	   version) when the caller holds SELECT on es.events and no row level
 *	   security applies, otherwise an SPI cursor that applies the caller's
 *	   privileges and policies under the same active snapshot.
 *	4. For each event: upcast it (upcast.c), build the reducer's event
 *	   argument (the jsonb envelope of event.c, or the es.events row), call
 *	   the reducer through an FmgrInfo set up once, and keep its result.
 *	5. Write an automatic snapshot when es.snapshot_every events or more
 *	   were applied and snapshot.c allows it.
 *
 * Memory stays flat however long the stream: the event argument and
 * everything the reducer allocates live in a per-event context reset after
 * each event, and the state is double-buffered between two contexts -- the
 * new state is copied into the context not holding the current one, which
 * is reset first.  The index scan holds one row at a time; the SPI cursor
 * fetches batches, each freed before the next.  The scan's own state lives
 * in the fold's context for the whole fold.  The loop calls
 * CHECK_FOR_INTERRUPTS for every event, so statement_timeout and cancel stop
 * a long fold.
 *
 * src/fold.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/relation.h"
#include "access/stratnum.h"
#include "access/table.h"
#include "access/tableam.h"
#include "catalog/pg_am.h"
#include "catalog/pg_class.h"
#include "catalog/pg_type.h"
#include "commands/extension.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/regproc.h"
#include "utils/rel.h"
#include "utils/rls.h"
#include "utils/snapmgr.h"
#include "utils/typcache.h"

#include "es_ext.h"


/* Error context while the reducer runs. */
typedef struct FoldErrorContext
{
	text	   *stream;
	int64		version;
} FoldErrorContext;

static void
fold_error_callback(void *arg)
{
	FoldErrorContext *ctx = (FoldErrorContext *) arg;

	errcontext("while folding stream \"%s\" at version " INT64_FORMAT,
			   text_to_cstring(ctx->stream), ctx->version);
}

/* copy a jsonb datum, detoasted, into cxt */
static Jsonb *
copy_state(Datum d, MemoryContext cxt)
{
	Jsonb	   *j = DatumGetJsonbP(d);
	Jsonb	   *copy = MemoryContextAlloc(cxt, VARSIZE(j));

	memcpy(copy, j, VARSIZE(j));
	return copy;
}

/*
 * missing_events_error
 *		The stream's first stored event is version first, but the fold needs
 *		version from + 1: its earlier events were removed by retention or by
 *		an erasure (lifecycle.c, retention.c).  Raises 55000.
 */
static void
missing_events_error(text *stream, int64 first, int64 from)
{
	char	   *name = text_to_cstring(stream);
	Datum		arg = PointerGetDatum(stream);
	Oid			argtype = TEXTOID;
	bool		erased = false;

	if (SPI_execute_with_args("SELECT s.erased_at IS NOT NULL FROM es.streams AS s"
							  " WHERE s.stream_id OPERATOR(pg_catalog.=) $1",
							  1, &argtype, &arg, NULL, true, 1) == SPI_OK_SELECT &&
		SPI_processed == 1)
	{
		bool		isnull;

		erased = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1,
											&isnull));
	}
	if (erased)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("stream \"%s\" was erased", name),
				 errdetail("Its events up to version %lld were removed; only its tombstone remains.",
						   (long long) (first - 1))));
	ereport(ERROR,
			(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
			 errmsg("stream \"%s\" starts at version %lld: its earlier events were removed by retention",
					name, (long long) first),
			 errdetail("The fold needs version %lld and no snapshot at or after version %lld exists for this reducer and initial state.",
					   (long long) (from + 1), (long long) (first - 1)),
			 errhint("Save snapshots (es.es_snapshot_save, or es.snapshot_every) of the streams under a retention policy before retention removes their events.")));
}

/*
 * check_not_removed
 *		Raise missing_events_error when stream's early events were removed
 *		(first_version > 1).  Inside SPI.  Nothing on a 0.1.0 schema.
 */
static void
check_not_removed(text *stream)
{
	Datum		arg = PointerGetDatum(stream);
	Oid			argtype = TEXTOID;
	bool		isnull;
	int64		first;

	if (get_attnum(EsRelationOid("streams"), "first_version") == InvalidAttrNumber)
		return;
	if (SPI_execute_with_args("SELECT s.first_version FROM es.streams AS s"
							  " WHERE s.stream_id OPERATOR(pg_catalog.=) $1",
							  1, &argtype, &arg, NULL, true, 1) != SPI_OK_SELECT ||
		SPI_processed != 1)
		return;
	first = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	if (!isnull && first > 1)
		missing_events_error(stream, first, 0);
}

/*
 * EsFold
 *		Fold the stream of req (see the file header).  The resulting state is
 *		allocated in the caller's memory context; res also reports the
 *		version reached, the snapshot used and the number of events applied.
 *		Runs with the caller's snapshot and privileges.
 */
void
EsFold(const EsFoldRequest *req, EsFoldResult *res)
{
	MemoryContext caller_cxt = CurrentMemoryContext;
	MemoryContext fold_cxt;
	MemoryContext state_cxt[2];
	MemoryContext event_cxt;
	int			cur = 0;
	int			form;
	FmgrInfo	flinfo;
	Jsonb	   *state;
	EsUpcaster *upcaster;
	EsSnapshotKey key;
	TupleDesc	evdesc;
	EsEventAttrs attrs;
	Datum	   *values;
	bool	   *nulls;
	EsStreamScan scan;
	ErrorContextCallback errcb;
	FoldErrorContext ectx;
	LOCAL_FCINFO(fcinfo, 2);

	/* 1. the reducer, before any event is read */
	form = EsCheckRoutine(req->reducer, ES_ROUTINE_REDUCER, true);

	fold_cxt = AllocSetContextCreate(caller_cxt, "es_fold", ALLOCSET_SMALL_SIZES);
	state_cxt[0] = AllocSetContextCreate(fold_cxt, "es_fold state", ALLOCSET_DEFAULT_SIZES);
	state_cxt[1] = AllocSetContextCreate(fold_cxt, "es_fold state", ALLOCSET_DEFAULT_SIZES);
	event_cxt = AllocSetContextCreate(fold_cxt, "es_fold event", ALLOCSET_DEFAULT_SIZES);
	fmgr_info_cxt(req->reducer, &flinfo, fold_cxt);
	InitFunctionCallInfoData(*fcinfo, &flinfo, 2, InvalidOid, NULL, NULL);

	state = copy_state(JsonbPGetDatum(req->initial), state_cxt[cur]);
	res->version = 0;
	res->snapshot_version = 0;
	res->applied = 0;

	if (req->up_to_version <= 0)
	{
		res->state = copy_state(JsonbPGetDatum(state), caller_cxt);
		MemoryContextDelete(fold_cxt);
		return;
	}

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	MemoryContextSwitchTo(fold_cxt);

	upcaster = EsUpcasterBegin();
	evdesc = lookup_rowtype_tupdesc_copy(EsTypeOid("events"), -1);
	EsEventAttrsInit(&attrs, evdesc);
	values = palloc(sizeof(Datum) * evdesc->natts);
	nulls = palloc(sizeof(bool) * evdesc->natts);

	/* 2. the newest usable snapshot */
	EsSnapshotKeyInit(&key, req->stream, req->reducer, req->initial);
	{
		int64		sv;
		Jsonb	   *sstate;

		if (EsSnapshotFind(&key, req->up_to_version, req->has_as_of, req->as_of,
						   state_cxt[1 - cur], &sv, &sstate))
		{
			MemoryContextReset(state_cxt[cur]);
			cur = 1 - cur;
			state = sstate;
			res->version = sv;
			res->snapshot_version = sv;
		}
	}

	/* 3. the events after it, under the active snapshot */
	if (res->version < PG_INT64_MAX)
		EsStreamScanBegin(&scan, evdesc, req->stream, res->version + 1, req->up_to_version,
						  false, -1);
	else						/* a snapshot at the last possible version */
		EsStreamScanBegin(&scan, evdesc, req->stream, 1, 0, false, -1);

	ectx.stream = req->stream;
	ectx.version = 0;
	errcb.callback = fold_error_callback;
	errcb.arg = &ectx;
	errcb.previous = error_context_stack;
	error_context_stack = &errcb;

	for (;;)
	{
		EsEventView ev;
		bool		upcast;
		Datum		evarg;
		Datum		result;

		CHECK_FOR_INTERRUPTS();

		/* the scan keeps its state in fold_cxt; the event in event_cxt */
		MemoryContextSwitchTo(fold_cxt);
		if (!EsStreamScanNext(&scan))
			break;
		EsStreamScanValues(&scan, values, nulls);
		MemoryContextSwitchTo(event_cxt);

		EsEventViewFromValues(&ev, &attrs, values, nulls);
		if (req->has_as_of && DatumGetTimestampTz(ev.recorded_at) > req->as_of)
			break;
		ectx.version = DatumGetInt64(ev.version);
		if (res->applied == 0 && ectx.version != res->version + 1)
			missing_events_error(req->stream, ectx.version, res->version);

		/* 4. upcast, build the event argument, call the reducer */
		upcast = EsUpcastEvent(upcaster, &ev);
		if (form == ES_EVENT_AS_JSONB)
			evarg = JsonbPGetDatum(EsEventEnvelope(&ev));
		else if (upcast)
		{
			values[attrs.data - 1] = ev.data;
			values[attrs.schema_version - 1] = Int32GetDatum(ev.schema_version);
			evarg = HeapTupleGetDatum(heap_form_tuple(evdesc, values, nulls));
		}
		else
			evarg = EsStreamScanRow(&scan);

		fcinfo->args[0].value = JsonbPGetDatum(state);
		fcinfo->args[0].isnull = false;
		fcinfo->args[1].value = evarg;
		fcinfo->args[1].isnull = false;
		fcinfo->isnull = false;
		result = FunctionCallInvoke(fcinfo);
		if (fcinfo->isnull)
			ereport(ERROR,
					(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
					 errmsg("reducer %s returned null", format_procedure(req->reducer)),
					 errhint("A reducer returns the new state; use 'null'::jsonb for a JSON null.")));

		/* the new state goes to the other buffer; then drop the old one */
		MemoryContextReset(state_cxt[1 - cur]);
		state = copy_state(result, state_cxt[1 - cur]);
		cur = 1 - cur;
		MemoryContextReset(event_cxt);

		res->version = ectx.version;
		res->applied++;
	}

	error_context_stack = errcb.previous;
	MemoryContextSwitchTo(fold_cxt);
	EsStreamScanEnd(&scan);

	/*
	 * A bounded fold (time travel) that applied nothing, from no snapshot:
	 * the events it needs may have been removed (the check in the loop
	 * sees no event to compare)
	 */
	if (res->applied == 0 && res->snapshot_version == 0 &&
		(req->up_to_version < PG_INT64_MAX || req->has_as_of))
		check_not_removed(req->stream);

	/* 5. an automatic snapshot */
	/* (not of a state folded from personal data: see crypto.c) */
	res->personal = EsUpcasterSawPersonal(upcaster);
	if (req->auto_snapshot && es_snapshot_every > 0 && !res->personal &&
		res->applied >= es_snapshot_every && EsSnapshotAutoSaveAllowed(&key))
		EsSnapshotWrite(&key, res->version, state, true);

	res->state = copy_state(JsonbPGetDatum(state), caller_cxt);
	SPI_finish();
	MemoryContextSwitchTo(caller_cxt);
	MemoryContextDelete(fold_cxt);
}

/*
 * fold_request
 *		Validate the arguments shared by es_fold and es_fold_state:
 *		(stream text, reducer regprocedure, initial jsonb,
 *		 up_to_version bigint, as_of timestamptz).
 */
static void
fold_request(FunctionCallInfo fcinfo, EsFoldRequest *req)
{
	memset(req, 0, sizeof(EsFoldRequest));
	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("stream id cannot be null")));
	if (PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("reducer cannot be null")));
	if (PG_ARGISNULL(2))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("initial state cannot be null"),
				 errhint("Use '{}' or 'null'::jsonb for an empty state.")));
	req->stream = PG_GETARG_TEXT_PP(0);
	req->reducer = PG_GETARG_OID(1);
	req->initial = PG_GETARG_JSONB_P(2);
	req->up_to_version = PG_INT64_MAX;
	if (!PG_ARGISNULL(3))
	{
		req->up_to_version = PG_GETARG_INT64(3);
		if (req->up_to_version < 0)
			ereport(ERROR,
					(errcode(ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE),
					 errmsg("up_to_version " INT64_FORMAT " is out of range", req->up_to_version),
					 errdetail("Stream versions start at 1; 0 folds no event.")));
	}
	if (!PG_ARGISNULL(4))
	{
		req->has_as_of = true;
		req->as_of = PG_GETARG_TIMESTAMPTZ(4);
	}
	req->auto_snapshot = true;
}

PG_FUNCTION_INFO_V1(es_fold);

/*
 * es_fold(stream text, reducer regprocedure, initial jsonb,
 *		   up_to_version bigint DEFAULT NULL, as_of timestamptz DEFAULT NULL)
 *		RETURNS jsonb
 *		The state after the stream's events (up to the bounds).  A stream
 *		with no event (or none within the bounds) folds to initial.
 */
Datum
es_fold(PG_FUNCTION_ARGS)
{
	EsFoldRequest req;
	EsFoldResult res;

	fold_request(fcinfo, &req);
	EsFold(&req, &res);
	EsStatsFold(VARDATA_ANY(req.stream), VARSIZE_ANY_EXHDR(req.stream), res.snapshot_version > 0,
				res.snapshot_version > 0 || res.applied > 0);
	PG_RETURN_JSONB_P(res.state);
}

PG_FUNCTION_INFO_V1(es_fold_state);

/*
 * es_fold_state(...same arguments...) RETURNS es.fold_state
 *		The state with the version it is at (use it as the expected version
 *		of the next append), the snapshot version it started from (NULL:
 *		none) and the number of events applied.
 */
Datum
es_fold_state(PG_FUNCTION_ARGS)
{
	EsFoldRequest req;
	EsFoldResult res;
	TupleDesc	desc;
	Datum		values[4];
	bool		nulls[4] = {false, false, false, false};

	if (get_call_result_type(fcinfo, NULL, &desc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");
	desc = BlessTupleDesc(desc);

	fold_request(fcinfo, &req);
	EsFold(&req, &res);
	EsStatsFold(VARDATA_ANY(req.stream), VARSIZE_ANY_EXHDR(req.stream), res.snapshot_version > 0,
				res.snapshot_version > 0 || res.applied > 0);

	values[0] = JsonbPGetDatum(res.state);
	values[1] = Int64GetDatum(res.version);
	values[2] = Int64GetDatum(res.snapshot_version);
	nulls[2] = (res.snapshot_version == 0);
	values[3] = Int64GetDatum(res.applied);
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(desc, values, nulls)));
}

PG_FUNCTION_INFO_V1(es_snapshot_save);

/*
 * es_snapshot_save(stream text, reducer regprocedure, initial jsonb,
 *					version bigint DEFAULT NULL) RETURNS bigint
 *		Fold the stream up to version (NULL: its last event) and store the
 *		state as an explicit snapshot.  Returns the snapshot's version.
 */
Datum
es_snapshot_save(PG_FUNCTION_ARGS)
{
	EsFoldRequest req;
	EsFoldResult res;
	EsSnapshotKey key;

	EsCheckWritable("es_snapshot_save()");

	memset(&req, 0, sizeof(req));
	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("stream id cannot be null")));
	if (PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("reducer cannot be null")));
	if (PG_ARGISNULL(2))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("initial state cannot be null"),
				 errhint("Use '{}' or 'null'::jsonb for an empty state.")));
	req.stream = PG_GETARG_TEXT_PP(0);
	req.reducer = PG_GETARG_OID(1);
	req.initial = PG_GETARG_JSONB_P(2);
	req.up_to_version = PG_INT64_MAX;
	if (!PG_ARGISNULL(3))
	{
		req.up_to_version = PG_GETARG_INT64(3);
		if (req.up_to_version < 1)
			ereport(ERROR,
					(errcode(ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE),
					 errmsg("version " INT64_FORMAT " is out of range", req.up_to_version),
					 errdetail("Stream versions start at 1.")));
	}
	req.auto_snapshot = false;

	if (check_enable_rls(EsRelationOid("events"), InvalidOid, true) == RLS_ENABLED)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("cannot save a snapshot while row level security applies to table \"es.events\""),
				 errdetail("A state folded from the rows one role can see must not be served to roles that see other rows.")));

	EsFold(&req, &res);

	if (res.version == 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("cannot save a snapshot of stream \"%s\": it has no events",
						text_to_cstring(req.stream))));
	if (req.up_to_version != PG_INT64_MAX && res.version < req.up_to_version)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("stream \"%s\" has no version " INT64_FORMAT,
						text_to_cstring(req.stream), req.up_to_version),
				 errdetail("Its last version is " INT64_FORMAT ".", res.version)));

	if (res.personal)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("cannot save a snapshot of stream \"%s\": its events hold personal data",
						text_to_cstring(req.stream)),
				 errdetail("A stored state would keep personal fields after es_forget_subject destroys their key.")));

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	EsSnapshotKeyInit(&key, req.stream, req.reducer, req.initial);
	EsSnapshotWrite(&key, res.version, res.state, false);
	SPI_finish();

	PG_RETURN_INT64(res.version);
}
