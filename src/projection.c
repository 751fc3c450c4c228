/*-------------------------------------------------------------------------
 *
 * projection.c
 *	  Inline projections: the es_project dispatch trigger and the replay of
 *	  history through a projection trigger (used by es_rebuild_projection).
 *
 * A projection is an ordinary AFTER INSERT trigger on es.events, created by
 * the user with CREATE TRIGGER.  It runs in the appending transaction, so
 * the read model is never stale and a failing projection aborts the append.
 *
 * es_project() is an optional helper trigger function: its arguments map
 * event types to handler functions taking one es.events row, so a
 * projection is a few small SQL functions instead of one big CASE.
 *
 * Who a handler runs as.  The trigger runs as the appender, but its handlers
 * were chosen by whoever created the trigger (a role with TRIGGER on
 * es.events), and registered code must never run with another role's
 * rights: an es_admin's handler must not run as a superuser that appends.
 * PostgreSQL does not record who created a trigger, so a handler runs as
 * the owner of the handler function -- the role that wrote the code, and
 * the only role the catalog ties to it -- through EsRunAsBegin (routine.c):
 * a security-restricted operation with search_path = pg_catalog, pg_temp
 * whenever the appender is another role.  The appender still needs EXECUTE
 * on the handler, the owner needs it too, and the read model is written
 * with the owner's privileges (appenders need none on it).  What that
 * leaves: a role with TRIGGER on es.events may name any handler it can see,
 * so another role's handler runs, as its owner, on the events that trigger
 * selects; and a plain trigger function (not es_project) runs as the
 * appender, as every PostgreSQL trigger does -- TRIGGER on es.events means
 * running code as every appender (README, "Trust model").
 *
 * es_projection_replay() feeds events of the global log, in cursor order,
 * to a projection trigger's function exactly as an append would: a row
 * trigger is called once per event (after its WHEN condition), a statement
 * trigger once per batch with the batch as its transition table.  It is the
 * engine of the rebuild procedure (sql/es_ext--*.sql), which pauses the
 * trigger, resets the read model, replays history in committed batches and
 * re-enables the trigger while it holds off appenders for the last batch.
 *
 * Memory: replayed rows are fetched in batches from an SPI cursor; each
 * trigger call runs in a per-event memory context reset after the call.
 *
 * src/projection.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "access/table.h"
#include "catalog/pg_proc.h"
#include "catalog/pg_trigger.h"
#include "catalog/pg_type.h"
#include "commands/trigger.h"
#include "executor/executor.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "nodes/makefuncs.h"
#include "optimizer/optimizer.h"
#include "parser/parse_func.h"
#include "rewrite/rewriteManip.h"
#include "rewrite/prs2lock.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/regproc.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"
#include "utils/syscache.h"
#include "utils/tuplestore.h"
#include "utils/typcache.h"
#include "utils/xid8.h"

#include "es_ext.h"

/* ----------------------------------------------------------------
 * es_project: dispatch an event to a handler by event type
 * ----------------------------------------------------------------
 */

/* Handlers of one es_project trigger, resolved once per statement. */
typedef struct EsDispatch
{
	Oid			tgoid;			/* trigger these were resolved for */
	Oid			rowtype;		/* the handlers' argument type: es.events */
	int			nhandlers;
	char	  **types;			/* event type, or NULL for any type */
	FmgrInfo   *handlers;
	Oid		   *owners;			/* the role each handler runs as */
} EsDispatch;

typedef struct EsProjectionErrorContext
{
	const char *projection;
	HeapTuple	tuple;
	TupleDesc	desc;
	const EsEventAttrs *attrs;	/* columns of es.events, by name */
} EsProjectionErrorContext;

static void
projection_error_callback(void *arg)
{
	EsProjectionErrorContext *ctx = (EsProjectionErrorContext *) arg;

	if (ctx->tuple != NULL)
	{
		bool		n1,
					n2,
					n3;
		Datum		stream = heap_getattr(ctx->tuple, ctx->attrs->stream_id, ctx->desc, &n1);
		Datum		version = heap_getattr(ctx->tuple, ctx->attrs->version, ctx->desc, &n2);
		Datum		type = heap_getattr(ctx->tuple, ctx->attrs->event_type, ctx->desc, &n3);

		if (!n1 && !n2 && !n3)
		{
			errcontext("projection \"%s\" on event %s version " INT64_FORMAT " of stream \"%s\"",
					   ctx->projection, TextDatumGetCString(type),
					   DatumGetInt64(version), TextDatumGetCString(stream));
			return;
		}
	}
	errcontext("projection \"%s\"", ctx->projection);
}

/*
 * resolve_handler
 *		The function named name taking one es.events row; checks that the
 *		current user may execute it, and that its owner, whom it runs as
 *		(*owner), may too.
 */
static Oid
resolve_handler(const char *name, Oid rowtype, const char *tgname, Oid *owner)
{
	Oid			fn;
	Oid			argtypes[1];
	AclResult	aclresult;
	HeapTuple	tup;

	argtypes[0] = rowtype;
	fn = LookupFuncName(stringToQualifiedNameList(name), 1, argtypes, true);
	if (!OidIsValid(fn))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_FUNCTION),
				 errmsg("function %s(es.events) does not exist", name),
				 errdetail("Trigger \"%s\" names it as a projection handler.", tgname),
				 errhint("A handler takes one argument of type es.events.")));
	aclresult = pg_proc_aclcheck(fn, GetUserId(), ACL_EXECUTE);
	if (aclresult != ACLCHECK_OK)
		aclcheck_error(aclresult, OBJECT_FUNCTION, get_func_name(fn));
	tup = SearchSysCache1(PROCOID, ObjectIdGetDatum(fn));
	if (!HeapTupleIsValid(tup))
		elog(ERROR, "cache lookup failed for function %u", fn);
	*owner = ((Form_pg_proc) GETSTRUCT(tup))->proowner;
	ReleaseSysCache(tup);
	EsCheckRunAs(fn, *owner, "projection handler");
	return fn;
}

/*
 * event_rowtype
 *		The row type handlers take: es.events's, also when the trigger fires
 *		on a Citus shard of it (citus.c), whose rows have the same columns.
 */
static Oid
event_rowtype(Relation rel)
{
	const char *name;
	Oid			relid = EsLogicalRelid(rel, &name);

	if (relid == RelationGetRelid(rel))
		return RelationGetDescr(rel)->tdtypeid;
	return get_rel_type_id(relid);
}

/*
 * event_datum
 *		The event tuple as a datum of the handlers' row type.
 */
static Datum
event_datum(HeapTuple tuple, TupleDesc desc, Oid rowtype)
{
	TupleDesc	ldesc;
	Datum	   *values;
	bool	   *nulls;
	Datum		row;

	if (rowtype == desc->tdtypeid)
		return heap_copy_tuple_as_datum(tuple, desc);

	/* a shard's row: formed again with es.events's descriptor */
	ldesc = lookup_rowtype_tupdesc(rowtype, -1);
	if (ldesc->natts != desc->natts)
		elog(ERROR, "a shard of es.events has %d columns, es.events %d",
			 desc->natts, ldesc->natts);
	values = palloc(sizeof(Datum) * desc->natts);
	nulls = palloc(sizeof(bool) * desc->natts);
	heap_deform_tuple(tuple, desc, values, nulls);
	row = heap_copy_tuple_as_datum(heap_form_tuple(ldesc, values, nulls), ldesc);
	ReleaseTupleDesc(ldesc);
	return row;
}

static EsDispatch *
get_dispatch(FunctionCallInfo fcinfo, TriggerData *trigdata)
{
	EsDispatch *d = (EsDispatch *) fcinfo->flinfo->fn_extra;
	Trigger    *tg = trigdata->tg_trigger;
	MemoryContext oldcxt;
	Oid			rowtype = event_rowtype(trigdata->tg_relation);
	int			i;

	if (d != NULL && d->tgoid == tg->tgoid)
		return d;

	if (tg->tgnargs < 1 || (tg->tgnargs > 1 && tg->tgnargs % 2 != 0))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("trigger \"%s\" passes %d arguments to es_project()", tg->tgname, tg->tgnargs),
				 errhint("Pass one handler, es_project('handler'), or pairs of event type and handler, es_project('TypeA', 'on_a', 'TypeB', 'on_b').")));

	oldcxt = MemoryContextSwitchTo(fcinfo->flinfo->fn_mcxt);
	d = palloc0(sizeof(EsDispatch));
	d->tgoid = tg->tgoid;
	d->rowtype = rowtype;
	d->nhandlers = tg->tgnargs == 1 ? 1 : tg->tgnargs / 2;
	d->types = palloc0(sizeof(char *) * d->nhandlers);
	d->handlers = palloc0(sizeof(FmgrInfo) * d->nhandlers);
	d->owners = palloc0(sizeof(Oid) * d->nhandlers);
	for (i = 0; i < d->nhandlers; i++)
	{
		const char *handler;

		if (tg->tgnargs == 1)
		{
			d->types[i] = NULL;
			handler = tg->tgargs[0];
		}
		else
		{
			d->types[i] = strcmp(tg->tgargs[2 * i], "*") == 0 ? NULL : pstrdup(tg->tgargs[2 * i]);
			handler = tg->tgargs[2 * i + 1];
		}
		fmgr_info_cxt(resolve_handler(handler, rowtype, tg->tgname, &d->owners[i]),
					  &d->handlers[i], fcinfo->flinfo->fn_mcxt);
	}
	MemoryContextSwitchTo(oldcxt);
	fcinfo->flinfo->fn_extra = d;
	return d;
}

PG_FUNCTION_INFO_V1(es_project);

/*
 * es_project()
 *		AFTER INSERT ... FOR EACH ROW trigger on es.events.  Arguments: one
 *		handler name, or pairs (event type, handler name); "*" matches every
 *		type.  Every handler whose type matches the event is called with the
 *		event row, in argument order, as the owner of the handler function
 *		(see the file header).  Returns NULL.
 */
Datum
es_project(PG_FUNCTION_ARGS)
{
	TriggerData *trigdata = (TriggerData *) fcinfo->context;
	EsDispatch *d;
	EsProjectionErrorContext ectx;
	ErrorContextCallback errcb;
	TupleDesc	desc;
	EsEventAttrs attrs;
	Datum		row = (Datum) 0;
	char	   *type = NULL;
	int			i;
	EsRunAs		runas;
	LOCAL_FCINFO(hcinfo, 1);

	if (!CALLED_AS_TRIGGER(fcinfo))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("es_project() must be called as a trigger")));
	if (!TRIGGER_FIRED_FOR_ROW(trigdata->tg_event) ||
		!TRIGGER_FIRED_AFTER(trigdata->tg_event) ||
		!TRIGGER_FIRED_BY_INSERT(trigdata->tg_event))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("es_project() must be fired AFTER INSERT ... FOR EACH ROW")));

	desc = RelationGetDescr(trigdata->tg_relation);
	EsEventAttrsInit(&attrs, desc);
	d = get_dispatch(fcinfo, trigdata);

	ectx.projection = trigdata->tg_trigger->tgname;
	ectx.tuple = trigdata->tg_trigtuple;
	ectx.desc = desc;
	ectx.attrs = &attrs;
	errcb.callback = projection_error_callback;
	errcb.arg = &ectx;
	errcb.previous = error_context_stack;
	error_context_stack = &errcb;

	for (i = 0; i < d->nhandlers; i++)
	{
		if (d->types[i] != NULL)
		{
			if (type == NULL)
			{
				bool		isnull;

				type = TextDatumGetCString(heap_getattr(trigdata->tg_trigtuple, attrs.event_type, desc, &isnull));
			}
			if (strcmp(type, d->types[i]) != 0)
				continue;
		}
		if (row == (Datum) 0)
			row = event_datum(trigdata->tg_trigtuple, desc, d->rowtype);
		/* handlers usually return void (a null Datum): ignore the result */
		InitFunctionCallInfoData(*hcinfo, &d->handlers[i], 1, InvalidOid, NULL, NULL);
		hcinfo->args[0].value = row;
		{
			/* personal fields in clear when the handler's owner may decrypt */
			HeapTuple	clear = EsDecryptTuple(trigdata->tg_trigtuple, desc, &attrs,
											   d->owners[i]);

			if (clear != trigdata->tg_trigtuple)
				hcinfo->args[0].value = event_datum(clear, desc, d->rowtype);
		}
		hcinfo->args[0].isnull = false;
		EsRunAsBegin(&runas, d->owners[i]);
		(void) FunctionCallInvoke(hcinfo);
		EsRunAsEnd(&runas);
	}

	error_context_stack = errcb.previous;
	return PointerGetDatum(NULL);
}

/* ----------------------------------------------------------------
 * es_projection_replay: history through a projection trigger
 * ----------------------------------------------------------------
 */

#define REPLAY_SELECT \
	"SELECT e, e.era, e.tx_id, e.global_position FROM es.events AS e" \
	" WHERE (e.era, e.tx_id, e.global_position) OPERATOR(pg_catalog.>) ($1, $2, $3)"
#define REPLAY_ORDER " ORDER BY e.era, e.tx_id, e.global_position LIMIT $4"

/* below the horizon: what a subscriber could read now */
static EsPlan replay_bounded_plan = {
	NULL,
	REPLAY_SELECT " AND (e.era, e.tx_id) OPERATOR(pg_catalog.<) ($5, $6)" REPLAY_ORDER,
	6, {INT4OID, XID8OID, INT8OID, INT8OID, INT4OID, XID8OID}
};

/* everything visible: only when appenders are locked out */
static EsPlan replay_head_plan = {
	NULL,
	REPLAY_SELECT REPLAY_ORDER,
	4, {INT4OID, XID8OID, INT8OID, INT8OID}
};

/*
 * EsFindProjectionTrigger
 *		The user trigger named tgname on es.events (rel), which must be an
 *		AFTER INSERT trigger and not one of es_ext's own.  It may be disabled
 *		(an asynchronous projection keeps its trigger disabled).
 *
 *		Returns a copy in the current memory context, never a pointer into
 *		rel->trigdesc: any relcache invalidation of es.events (a concurrent
 *		CREATE, DROP, ENABLE or DISABLE TRIGGER, processed when user code in
 *		a replay takes a new lock) rebuilds the relcache entry and frees its
 *		old trigdesc while the caller still holds the relation open; that is
 *		why the executor copies it too (CopyTriggerDesc in
 *		InitResultRelInfo).
 */
Trigger *
EsFindProjectionTrigger(Relation rel, const char *tgname)
{
	TriggerDesc *trigdesc = rel->trigdesc;
	int			i;

	for (i = 0; trigdesc != NULL && i < trigdesc->numtriggers; i++)
	{
		Trigger    *tg = &trigdesc->triggers[i];

		if (tg->tgisinternal || strcmp(tg->tgname, tgname) != 0)
			continue;
		if (!TRIGGER_FOR_INSERT(tg->tgtype) || !TRIGGER_FOR_AFTER(tg->tgtype))
			ereport(ERROR,
					(errcode(ERRCODE_WRONG_OBJECT_TYPE),
					 errmsg("trigger \"%s\" on table \"es.events\" is not an AFTER INSERT trigger", tgname),
					 errhint("A projection is an AFTER INSERT trigger on es.events.")));
		if (EsOwnTrigger(tg))
			ereport(ERROR,
					(errcode(ERRCODE_WRONG_OBJECT_TYPE),
					 errmsg("trigger \"%s\" on table \"es.events\" belongs to es_ext, not to a projection",
							tgname)));
		{
			TriggerDesc one;

			memset(&one, 0, sizeof(one));
			one.numtriggers = 1;
			one.triggers = tg;
			return CopyTriggerDesc(&one)->triggers;
		}
	}
	ereport(ERROR,
			(errcode(ERRCODE_UNDEFINED_OBJECT),
			 errmsg("trigger \"%s\" for table \"es.events\" does not exist", tgname),
			 errhint("Create the projection with CREATE TRIGGER ... AFTER INSERT ON es.events.")));
	return NULL;				/* keep compiler quiet */
}

/*
 * State of one replay: the events given to EsReplayEvent, in order, through
 * one projection trigger.
 */
struct EsReplay
{
	Relation	rel;			/* es.events, opened by the caller */
	Trigger    *trigger;
	FmgrInfo	flinfo;
	bool		for_row;
	ExprState  *when;			/* row triggers with a WHEN condition */
	EState	   *estate;
	TupleTableSlot *slot;
	Tuplestorestate *batch;		/* statement triggers: the transition table */
	int64		nbatch;			/* events in batch */
	MemoryContext percall;
	EsEventAttrs attrs;
	EsProjectionErrorContext ectx;
	ErrorContextCallback errcb;
	bool		own_context;	/* errcb pushed (not for es_project) */
};

/*
 * prepare_when
 *		Compile a row trigger's WHEN condition the way the executor does
 *		(trigger.c: NEW is the inner tuple).
 */
static void
prepare_when(EsReplay *r)
{
	Node	   *qual;
	MemoryContext oldcxt;

	if (r->trigger->tgqual == NULL)
		return;
	r->estate = CreateExecutorState();
	oldcxt = MemoryContextSwitchTo(r->estate->es_query_cxt);
	qual = stringToNode(r->trigger->tgqual);
	ChangeVarNodes(qual, PRS2_OLD_VARNO, OUTER_VAR, 0);
	ChangeVarNodes(qual, PRS2_NEW_VARNO, INNER_VAR, 0);
	qual = (Node *) expression_planner((Expr *) qual);
	r->when = ExecPrepareQual(make_ands_implicit((Expr *) qual), r->estate);
	MemoryContextSwitchTo(oldcxt);
}

/*
 * call_trigger
 *		Call the projection's trigger function once, as the trigger manager
 *		would for an AFTER INSERT event: tuple is the row (row triggers) or
 *		NULL (statement triggers, which get r->batch as their new table).
 */
static void
call_trigger(EsReplay *r, HeapTuple tuple)
{
	TriggerData td;
	LOCAL_FCINFO(fcinfo, 0);

	memset(&td, 0, sizeof(td));
	td.type = T_TriggerData;
	td.tg_event = TRIGGER_EVENT_INSERT | (tuple != NULL ? TRIGGER_EVENT_ROW : 0);
	td.tg_relation = r->rel;
	td.tg_trigger = r->trigger;
	if (tuple != NULL)
	{
		td.tg_trigtuple = tuple;
		ExecForceStoreHeapTuple(tuple, r->slot, false);
		td.tg_trigslot = r->slot;
	}
	else
		td.tg_newtable = r->batch;

	InitFunctionCallInfoData(*fcinfo, &r->flinfo, 0, InvalidOid, (Node *) &td, NULL);
	FunctionCallInvoke(fcinfo);
	if (tuple != NULL)
		ExecClearTuple(r->slot);
}

/*
 * EsReplayBegin
 *		Prepare to feed events through the projection trigger tgname of rel
 *		(es.events, opened and locked by the caller, kept open until
 *		EsReplayEnd).  The current user must be allowed to execute the
 *		trigger function.  The state lives in the current memory context;
 *		an error context naming the projection (and the event being
 *		replayed) is pushed until EsReplayEnd.
 */
EsReplay *
EsReplayBegin(Relation rel, const char *tgname)
{
	EsReplay   *r = palloc0(sizeof(EsReplay));

	r->rel = rel;
	r->trigger = EsFindProjectionTrigger(rel, tgname);
	r->for_row = TRIGGER_FOR_ROW(r->trigger->tgtype);
	if (pg_proc_aclcheck(r->trigger->tgfoid, GetUserId(), ACL_EXECUTE) != ACLCHECK_OK)
		aclcheck_error(ACLCHECK_NO_PRIV, OBJECT_FUNCTION, get_func_name(r->trigger->tgfoid));
	fmgr_info(r->trigger->tgfoid, &r->flinfo);
	r->slot = MakeSingleTupleTableSlot(RelationGetDescr(rel), &TTSOpsHeapTuple);
	r->percall = AllocSetContextCreate(CurrentMemoryContext, "es projection replay",
									   ALLOCSET_DEFAULT_SIZES);
	if (r->for_row)
		prepare_when(r);
	else
		r->batch = tuplestore_begin_heap(false, false, work_mem);

	r->ectx.projection = r->trigger->tgname;
	r->ectx.tuple = NULL;
	r->ectx.desc = RelationGetDescr(rel);
	EsEventAttrsInit(&r->attrs, r->ectx.desc);
	r->ectx.attrs = &r->attrs;
	r->errcb.callback = projection_error_callback;
	r->errcb.arg = &r->ectx;
	r->errcb.previous = error_context_stack;
	/* es_project names the projection and the event itself */
	r->own_context = !(get_func_namespace(r->trigger->tgfoid) == EsSchemaOid() &&
					   strcmp(get_func_name(r->trigger->tgfoid), "es_project") == 0);
	if (r->own_context)
		error_context_stack = &r->errcb;
	return r;
}

/*
 * EsReplayEvent
 *		Feed one event (a row of es.events, as a composite datum) through the
 *		trigger: a row trigger is called now, after its WHEN condition; a
 *		statement trigger collects it into its transition table.
 */
void
EsReplayEvent(EsReplay *r, HeapTupleHeader th)
{
	HeapTupleData tup;
	MemoryContext oldcxt;

	CHECK_FOR_INTERRUPTS();

	tup.t_len = HeapTupleHeaderGetDatumLength(th);
	ItemPointerSetInvalid(&tup.t_self);
	tup.t_tableOid = RelationGetRelid(r->rel);
	tup.t_data = th;

	if (!r->for_row)
	{
		tuplestore_puttuple(r->batch, &tup);
		r->nbatch++;
		return;
	}

	r->ectx.tuple = &tup;
	oldcxt = MemoryContextSwitchTo(r->percall);
	if (r->when != NULL)
	{
		ExprContext *econtext = GetPerTupleExprContext(r->estate);
		bool		pass;

		ExecForceStoreHeapTuple(&tup, r->slot, false);
		econtext->ecxt_innertuple = r->slot;
		econtext->ecxt_outertuple = NULL;
		pass = ExecQual(r->when, econtext);
		ExecClearTuple(r->slot);
		ResetExprContext(econtext);
		if (!pass)
		{
			MemoryContextSwitchTo(oldcxt);
			r->ectx.tuple = NULL;
			return;
		}
	}
	call_trigger(r, &tup);
	MemoryContextSwitchTo(oldcxt);
	MemoryContextReset(r->percall);
	r->ectx.tuple = NULL;
}

/*
 * EsReplayEnd
 *		Call a statement trigger once with every event fed to it (if any),
 *		pop the error context and free the replay state.  Does not close
 *		the relation.
 */
void
EsReplayEnd(EsReplay *r)
{
	if (!r->for_row && r->nbatch > 0)
	{
		MemoryContext oldcxt = MemoryContextSwitchTo(r->percall);

		call_trigger(r, NULL);
		MemoryContextSwitchTo(oldcxt);
	}
	if (r->own_context)
		error_context_stack = r->errcb.previous;

	if (r->batch)
		tuplestore_end(r->batch);
	if (r->estate)
		FreeExecutorState(r->estate);
	ExecDropSingleTupleTableSlot(r->slot);
	MemoryContextDelete(r->percall);
	pfree(r);
}

/*
 * EsReplayRange
 *		Replay up to max_count events after the log cursor cur[] (era, tx_id,
 *		global_position datums) through the projection trigger tgname on
 *		es.events: with to_head false only events below the log horizon
 *		(safe while appends go on), with to_head true every visible event
 *		(correct only while appenders are locked out).  Sets cur[] to the
 *		cursor of the last event replayed (unchanged when none was), in the
 *		caller's memory context, and returns how many events were replayed.
 *		Takes AccessShareLock on es.events; connects to SPI itself.
 */
int32
EsReplayRange(const char *tgname, Datum *cur, int32 max_count, bool to_head)
{
	Relation	rel;
	EsReplay   *r;
	Datum		values[6];
	Portal		portal;
	int32		replayed = 0;
	MemoryContext callcxt = CurrentMemoryContext;

	rel = table_open(EsRelationOid("events"), AccessShareLock);
	r = EsReplayBegin(rel, tgname);

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");

	values[0] = cur[0];
	values[1] = cur[1];
	values[2] = cur[2];
	values[3] = Int64GetDatum((int64) max_count);
	if (!to_head)
	{
		values[4] = Int32GetDatum(EsCurrentEra());
		values[5] = FullTransactionIdGetDatum(EsLogHorizon(GetActiveSnapshot()));
	}
	portal = SPI_cursor_open(NULL, EsGetPlan(to_head ? &replay_head_plan : &replay_bounded_plan),
							 values, NULL, true);

	for (;;)
	{
		uint64		i;

		SPI_cursor_fetch(portal, true, ES_FETCH_BATCH);
		if (SPI_processed == 0)
			break;
		for (i = 0; i < SPI_processed; i++)
		{
			HeapTuple	row = SPI_tuptable->vals[i];
			TupleDesc	rowdesc = SPI_tuptable->tupdesc;
			bool		isnull;
			MemoryContext oldcxt;

			/* remember the cursor in the caller's context */
			oldcxt = MemoryContextSwitchTo(callcxt);
			cur[0] = SPI_getbinval(row, rowdesc, 2, &isnull);
			cur[1] = SPI_getbinval(row, rowdesc, 3, &isnull);
			cur[2] = SPI_getbinval(row, rowdesc, 4, &isnull);
			MemoryContextSwitchTo(oldcxt);
			replayed++;

			EsReplayEvent(r, DatumGetHeapTupleHeader(SPI_getbinval(row, rowdesc, 1, &isnull)));
		}
		SPI_freetuptable(SPI_tuptable);
	}
	SPI_cursor_close(portal);

	/* a statement trigger sees the whole batch at once */
	EsReplayEnd(r);
	SPI_finish();
	table_close(rel, AccessShareLock);
	return replayed;
}

PG_FUNCTION_INFO_V1(es_projection_replay);

/*
 * es_projection_replay(projection name, after es.log_cursor, max_count int,
 *						to_head boolean)
 *		RETURNS TABLE (replayed integer, last_cursor es.log_cursor)
 *
 * Replays up to max_count events after the cursor through the trigger named
 * projection on es.events (EsReplayRange).  With to_head false, only events
 * below the log horizon are replayed (safe while appends go on); with
 * to_head true, every visible event is (only correct while appenders are
 * locked out).  Returns how many events were replayed and the cursor of the
 * last one (the input cursor when none was).
 */
Datum
es_projection_replay(PG_FUNCTION_ARGS)
{
	char	   *tgname;
	int32		after_era = -1;
	Datum		after_tx = FullTransactionIdGetDatum(FullTransactionIdFromU64(0));
	int64		after_pos = 0;
	int32		max_count;
	bool		to_head;
	int32		replayed;
	TupleDesc	resdesc;
	TupleDesc	cursordesc;
	Datum		result[2];
	bool		resnulls[2] = {false, false};
	Datum		cur[3];
	bool		curnulls[3] = {false, false, false};

	EsCheckWritable("es_projection_replay()");
	/* the replay follows one node's log order (citus.c) */
	EsRefuseDistributed("es_projection_replay()",
						"On a distributed event store, rebuild a read model from es.es_read_log() or stream by stream.");

	if (PG_ARGISNULL(0) || PG_ARGISNULL(2) || PG_ARGISNULL(3))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("projection, max_count and to_head cannot be null")));
	tgname = NameStr(*PG_GETARG_NAME(0));
	max_count = PG_GETARG_INT32(2);
	to_head = PG_GETARG_BOOL(3);
	if (max_count <= 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("max_count must be greater than zero")));
	if (!PG_ARGISNULL(1))
		EsParseCursor(PG_GETARG_HEAPTUPLEHEADER(1), &after_era, &after_tx, &after_pos);

	if (get_call_result_type(fcinfo, NULL, &resdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");
	resdesc = BlessTupleDesc(resdesc);
	cursordesc = BlessTupleDesc(lookup_rowtype_tupdesc_copy(TupleDescAttr(resdesc, 1)->atttypid, -1));

	cur[0] = Int32GetDatum(after_era);
	cur[1] = after_tx;
	cur[2] = Int64GetDatum(after_pos);
	replayed = EsReplayRange(tgname, cur, max_count, to_head);

	result[0] = Int32GetDatum(replayed);
	result[1] = HeapTupleGetDatum(heap_form_tuple(cursordesc, cur, curnulls));
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(resdesc, result, resnulls)));
}
