/*-------------------------------------------------------------------------
 *
 * fold_agg.c
 *	  es_fold_agg(reducer regprocedure, initial jsonb, event es.events): the
 *	  fold as an SQL aggregate, for ad-hoc queries over many streams
 *
 *		SELECT e.stream_id,
 *			   es.es_fold_agg('my_reducer(jsonb,jsonb)', '{}', e ORDER BY e.version)
 *		  FROM es.events AS e WHERE e.category = 'order' GROUP BY e.stream_id;
 *
 * or as a window function (the state after each event).  Events are upcast
 * like every read.  The aggregate does not use or write snapshots, and
 * cannot check that it sees a whole stream: it folds the rows it is given.
 * It does refuse rows of one stream that arrive out of version order (a
 * missing ORDER BY), when they follow each other.
 *
 * Memory: the per-query part (the reducer's FmgrInfo, the upcaster, a
 * scratch context reset for every row) is kept in the transition function's
 * fn_extra, in fn_mcxt.  The per-group part (the state, the last stream and
 * version seen) lives in the aggregate context; each new state replaces the
 * previous one, which is freed, so memory stays flat per group.
 *
 * src/fold_agg.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/memutils.h"
#include "utils/regproc.h"
#include "utils/typcache.h"

#include "es_ext.h"

/* Per-query state, in the transition function's fn_extra. */
typedef struct FoldAggQuery
{
	Oid			reducer;		/* InvalidOid until the first row */
	int			form;			/* ES_EVENT_AS_JSONB or ES_EVENT_AS_ROW */
	FmgrInfo	flinfo;
	EsUpcaster *upcaster;
	Oid			evtype;			/* row type of the event argument */
	TupleDesc	evdesc;
	EsEventAttrs attrs;
	Datum	   *values;
	bool	   *nulls;
	MemoryContext scratch;		/* reset for every row */
} FoldAggQuery;

/* Per-group transition state, in the aggregate context. */
typedef struct FoldAggGroup
{
	Oid			reducer;
	Jsonb	   *state;
	text	   *last_stream;	/* NULL before the first event */
	int64		last_version;
} FoldAggGroup;

/* Error context while the reducer runs. */
typedef struct FoldAggErrorContext
{
	const EsEventView *ev;
} FoldAggErrorContext;

static void
fold_agg_error_callback(void *arg)
{
	FoldAggErrorContext *ctx = (FoldAggErrorContext *) arg;

	errcontext("while folding stream \"%s\" at version " INT64_FORMAT,
			   TextDatumGetCString(ctx->ev->stream_id),
			   DatumGetInt64(ctx->ev->version));
}

/* the per-query state for reducer, set up (and the reducer checked) once */
static FoldAggQuery *
query_state(FunctionCallInfo fcinfo, Oid reducer, Oid evtype)
{
	FoldAggQuery *q = (FoldAggQuery *) fcinfo->flinfo->fn_extra;
	MemoryContext oldcxt;

	if (q != NULL && q->reducer == reducer && q->evtype == evtype)
		return q;

	oldcxt = MemoryContextSwitchTo(fcinfo->flinfo->fn_mcxt);
	if (q == NULL)
	{
		q = palloc0(sizeof(FoldAggQuery));
		q->scratch = AllocSetContextCreate(fcinfo->flinfo->fn_mcxt, "es_fold_agg row",
										   ALLOCSET_DEFAULT_SIZES);
		q->upcaster = EsUpcasterBegin();
		fcinfo->flinfo->fn_extra = q;
	}
	if (q->reducer != reducer)
	{
		q->reducer = InvalidOid;
		q->form = EsCheckRoutine(reducer, ES_ROUTINE_REDUCER, true);
		fmgr_info_cxt(reducer, &q->flinfo, fcinfo->flinfo->fn_mcxt);
		q->reducer = reducer;
	}
	if (q->evtype != evtype)
	{
		q->evdesc = lookup_rowtype_tupdesc_copy(evtype, -1);
		EsEventAttrsInit(&q->attrs, q->evdesc);
		q->values = palloc(sizeof(Datum) * q->evdesc->natts);
		q->nulls = palloc(sizeof(bool) * q->evdesc->natts);
		q->evtype = evtype;
	}
	MemoryContextSwitchTo(oldcxt);
	return q;
}

PG_FUNCTION_INFO_V1(es_fold_agg_step);

/*
 * es_fold_agg_step(internal, reducer regprocedure, initial jsonb,
 *					event es.events) RETURNS internal
 *		Transition function of es_fold_agg.  A NULL event (an outer join with
 *		no event) leaves the state alone.
 */
Datum
es_fold_agg_step(PG_FUNCTION_ARGS)
{
	MemoryContext aggcxt;
	MemoryContext oldcxt;
	FoldAggGroup *g;
	FoldAggQuery *q;
	Oid			reducer;
	HeapTupleHeader th;
	HeapTupleData tup;
	EsEventView ev;
	bool		upcast;
	Datum		evarg;
	Datum		result;
	Jsonb	   *r;
	ErrorContextCallback errcb;
	FoldAggErrorContext ectx;
	LOCAL_FCINFO(rfcinfo, 2);

	if (!AggCheckCallContext(fcinfo, &aggcxt))
		elog(ERROR, "es_fold_agg_step called in non-aggregate context");

	if (PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("reducer cannot be null")));
	reducer = PG_GETARG_OID(1);
	/* '-'::regprocedure is OID 0, which query_state would take for "checked" */
	if (!OidIsValid(reducer))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_FUNCTION),
				 errmsg("reducer cannot be \"-\""),
				 errhint("Name a function (state jsonb, event jsonb or es.events) returning jsonb.")));

	if (PG_ARGISNULL(0))
	{
		if (PG_ARGISNULL(2))
			ereport(ERROR,
					(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
					 errmsg("initial state cannot be null"),
					 errhint("Use '{}' or 'null'::jsonb for an empty state.")));
		/* checks the reducer on the first row of the query */
		query_state(fcinfo, reducer, get_fn_expr_argtype(fcinfo->flinfo, 3));
		g = MemoryContextAllocZero(aggcxt, sizeof(FoldAggGroup));
		g->reducer = reducer;
		oldcxt = MemoryContextSwitchTo(aggcxt);
		g->state = DatumGetJsonbPCopy(PG_GETARG_DATUM(2));
		MemoryContextSwitchTo(oldcxt);
	}
	else
	{
		g = (FoldAggGroup *) PG_GETARG_POINTER(0);
		if (g->reducer != reducer)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("reducer must be the same for every row of a group")));
	}

	if (PG_ARGISNULL(3))
		PG_RETURN_POINTER(g);

	th = PG_GETARG_HEAPTUPLEHEADER(3);
	q = query_state(fcinfo, reducer, HeapTupleHeaderGetTypeId(th));

	CHECK_FOR_INTERRUPTS();
	MemoryContextReset(q->scratch);
	oldcxt = MemoryContextSwitchTo(q->scratch);

	tup.t_len = HeapTupleHeaderGetDatumLength(th);
	ItemPointerSetInvalid(&tup.t_self);
	tup.t_tableOid = InvalidOid;
	tup.t_data = th;
	heap_deform_tuple(&tup, q->evdesc, q->values, q->nulls);
	EsEventViewFromValues(&ev, &q->attrs, q->values, q->nulls);

	/* rows of one stream must come in version order */
	{
		text	   *stream = DatumGetTextPP(ev.stream_id);
		int64		version = DatumGetInt64(ev.version);

		if (g->last_stream != NULL &&
			VARSIZE_ANY_EXHDR(stream) == VARSIZE_ANY_EXHDR(g->last_stream) &&
			memcmp(VARDATA_ANY(stream), VARDATA_ANY(g->last_stream),
				   VARSIZE_ANY_EXHDR(stream)) == 0)
		{
			if (version <= g->last_version)
				ereport(ERROR,
						(errcode(ERRCODE_DATA_EXCEPTION),
						 errmsg("events of stream \"%s\" are not in version order",
								text_to_cstring(stream)),
						 errdetail("Version " INT64_FORMAT " came after version " INT64_FORMAT ".",
								   version, g->last_version),
						 errhint("Order the aggregate's input: es_fold_agg(reducer, initial, e ORDER BY e.version).")));
		}
		else
		{
			if (g->last_stream != NULL)
				pfree(g->last_stream);
			g->last_stream = MemoryContextAlloc(aggcxt, VARSIZE_ANY(stream));
			memcpy(g->last_stream, stream, VARSIZE_ANY(stream));
		}
		g->last_version = version;
	}

	upcast = EsUpcastEvent(q->upcaster, &ev);
	if (q->form == ES_EVENT_AS_JSONB)
		evarg = JsonbPGetDatum(EsEventEnvelope(&ev));
	else if (upcast)
	{
		q->values[q->attrs.data - 1] = ev.data;
		q->values[q->attrs.schema_version - 1] = Int32GetDatum(ev.schema_version);
		evarg = HeapTupleGetDatum(heap_form_tuple(q->evdesc, q->values, q->nulls));
	}
	else
		evarg = PointerGetDatum(th);

	ectx.ev = &ev;
	errcb.callback = fold_agg_error_callback;
	errcb.arg = &ectx;
	errcb.previous = error_context_stack;
	error_context_stack = &errcb;

	InitFunctionCallInfoData(*rfcinfo, &q->flinfo, 2, InvalidOid, NULL, NULL);
	rfcinfo->args[0].value = JsonbPGetDatum(g->state);
	rfcinfo->args[0].isnull = false;
	rfcinfo->args[1].value = evarg;
	rfcinfo->args[1].isnull = false;
	result = FunctionCallInvoke(rfcinfo);
	if (rfcinfo->isnull)
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("reducer %s returned null", format_procedure(reducer)),
				 errhint("A reducer returns the new state; use 'null'::jsonb for a JSON null.")));
	error_context_stack = errcb.previous;

	/* replace the group's state */
	r = DatumGetJsonbP(result);
	MemoryContextSwitchTo(aggcxt);
	{
		Jsonb	   *copy = palloc(VARSIZE(r));

		memcpy(copy, r, VARSIZE(r));
		pfree(g->state);
		g->state = copy;
	}
	MemoryContextSwitchTo(oldcxt);
	MemoryContextReset(q->scratch);

	PG_RETURN_POINTER(g);
}

PG_FUNCTION_INFO_V1(es_fold_agg_final);

/*
 * es_fold_agg_final(internal) RETURNS jsonb
 *		The group's state, copied into the current memory context (the state
 *		is not modified, so the aggregate also works as a window function).
 */
Datum
es_fold_agg_final(PG_FUNCTION_ARGS)
{
	FoldAggGroup *g;

	if (PG_ARGISNULL(0))
		PG_RETURN_NULL();
	g = (FoldAggGroup *) PG_GETARG_POINTER(0);
	PG_RETURN_JSONB_P(DatumGetJsonbPCopy(JsonbPGetDatum(g->state)));
}
