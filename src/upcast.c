/*-------------------------------------------------------------------------
 *
 * upcast.c
 *	  Upcasters: user functions that raise the data of an event type from
 *	  one schema version to the next, applied whenever events are read
 *	  (es_read_stream, es_read_all, es_fold, es_fold_agg, es_upcast).
 *	  Stored events never change.
 *
 * es.upcasters holds (event_type, from_version, fn).  An event of type T
 * stored with schema_version v goes through the upcaster registered for
 * (T, v), then (T, v + 1), and so on while one is registered; the result
 * carries the last version reached.  fn is stored as its schema-qualified
 * signature text (routine.c), not as regprocedure: pg_upgrade refuses
 * databases with reg* columns other than regclass/regrole/regtype, and OIDs
 * do not survive dump/restore.
 *
 * The registry is cached per backend, like a catalog, by cache.c (the one
 * cache mechanism, shared with the outbox routes): it is read with a fresh
 * snapshot (so a REPEATABLE READ transaction sees registrations committed
 * after it started, as it sees DDL) and kept until
 *	- es.upcasters changes: the statement trigger es_upcasters_changed
 *	  (EsTableCacheTrigger) sends a relcache invalidation of the table at
 *	  commit, which reaches every backend;
 *	- any function changes (pg_proc syscache invalidation): an upcaster may
 *	  have been replaced, dropped or created under its stored name.
 * A reload does not free the registry it replaces, since a caller up the
 * stack (a reducer that reads a stream inside a fold) may still use it: the
 * old one is retired and freed at the end of the transaction.
 *
 * Upcasters run as the role that registered them.  es.upcasters.registered_by
 * records the role that wrote each row: es_register_upcaster passes the
 * current user, and the BEFORE trigger es_upcasters_stamp sets it for any
 * write (a direct INSERT or UPDATE by an admin included) unless the writer
 * names a role it is a member of, so no role can make its code run as a
 * role it cannot become.  Reading applies an upcaster as its registrant,
 * inside a security-restricted operation with a safe search_path, whenever
 * the reader is another role (EsRunAsBegin, routine.c): a superuser reading
 * a stream never lends its rights to an es_admin's upcaster, and a reader's
 * search_path never lends the registrant's rights to the reader's functions.
 * The reader still needs EXECUTE on the upcaster; the registrant needs it
 * too, and must exist (an upcaster whose registrant was dropped fails, it
 * does not fall back to the reader).  The registry cache keeps the
 * registrant of each step, and the fingerprint covers it.
 *
 * Cost when nothing applies: EsUpcasterBegin returns NULL when the registry
 * is empty, and readers then skip upcasting entirely; otherwise one hash
 * lookup per event (memoised for runs of the same type).
 *
 * Memory: an EsUpcaster lives in the memory context current at
 * EsUpcasterBegin (one call of a reader).  Upcast data and tuples are
 * allocated in its row context, which is reset at the start of the next
 * upcast: callers consume a result before upcasting the next event.
 *
 * src/upcast.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/heapam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "catalog/pg_type.h"
#include "commands/trigger.h"
#include "executor/spi.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "parser/parse_relation.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/fmgrprotos.h"
#include "utils/hsearch.h"
#include "utils/inval.h"
#include "utils/memutils.h"
#include "utils/regproc.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"
#include "utils/syscache.h"
#include "utils/typcache.h"

#include "es_ext.h"

/* One registered upcaster. */
typedef struct UpcastStep
{
	int32		from_version;
	Oid			fn;				/* InvalidOid: the stored name does not resolve */
	char	   *fn_name;		/* as stored in es.upcasters.fn */
	Oid			registrant;		/* es.upcasters.registered_by: runs as it */
	int			slot;			/* index into EsUpcaster.finfo */
} UpcastStep;

/* The upcasters of one event type, by ascending from_version. */
typedef struct UpcastType
{
	char		event_type[ES_MAX_NAME_BYTES + 1];	/* hash key */
	int			nsteps;
	UpcastStep *steps;
} UpcastType;

/* One loaded version of the registry. */
typedef struct Registry
{
	HTAB	   *types;			/* UpcastType by event type */
	int			nslots;			/* number of upcasters */
	uint8		fingerprint[ES_HASH_LENGTH];
} Registry;

/* Per-call state (see the file header). */
struct EsUpcaster
{
	Registry   *reg;
	MemoryContext cxt;			/* FmgrInfos */
	MemoryContext row_cxt;		/* reset per upcast event */
	FmgrInfo  **finfo;			/* by step slot, set on first use */
	int		   *nargs;			/* by step slot */
	TupleDesc	row_desc;		/* EsUpcastRow: descriptor row_attrs is for */
	EsEventAttrs row_attrs;
	EsDecryptor *dec;			/* NULL: nothing to decrypt (crypto.c) */
	bool		saw_personal;	/* an event with encrypted fields was read */
	/* memo of the last event type looked up */
	int			memo_len;		/* -1: empty */
	char		memo_type[ES_MAX_NAME_BYTES];
	UpcastType *memo_entry;
};

/* Error context while an upcaster runs. */
typedef struct UpcastErrorContext
{
	const EsEventView *ev;
	int32		from_version;
} UpcastErrorContext;

static void *load_registry(Relation rel, Snapshot snap);

/*
 * The per-backend registry cache (cache.c): stale when es.upcasters changes
 * and when any function changes.
 */
static EsTableCache registry_cache =
	ES_TABLE_CACHE("upcasters", "es_ext upcaster registry", true, load_registry);

/* A row of es.upcasters while the registry loads. */
typedef struct RegistryRow
{
	char	   *event_type;
	int32		from_version;
	char	   *fn_name;
	Oid			registrant;
} RegistryRow;

static EsPlan register_plan = {
	NULL,
	"INSERT INTO es.upcasters AS u (event_type, from_version, fn, registered_by)"
	" VALUES ($1, $2, $3, $4)"
	" ON CONFLICT ON CONSTRAINT upcasters_pkey"
	" DO UPDATE SET fn = EXCLUDED.fn, created_at = EXCLUDED.created_at,"
	" registered_by = EXCLUDED.registered_by",
	4, {TEXTOID, INT4OID, TEXTOID, REGROLEOID}
};

static EsPlan unregister_plan = {
	NULL,
	"DELETE FROM es.upcasters AS u"
	" WHERE u.event_type OPERATOR(pg_catalog.=) $1"
	"   AND u.from_version OPERATOR(pg_catalog.=) $2",
	2, {TEXTOID, INT4OID}
};

static int
registry_row_cmp(const void *a, const void *b)
{
	const RegistryRow *ra = (const RegistryRow *) a;
	const RegistryRow *rb = (const RegistryRow *) b;
	int			c = strcmp(ra->event_type, rb->event_type);

	if (c != 0)
		return c;
	return (ra->from_version > rb->from_version) - (ra->from_version < rb->from_version);
}

/* OID of the function named by a stored signature, InvalidOid if none */
static Oid
resolve_fn(const char *fn_name)
{
	LOCAL_FCINFO(fcinfo, 1);
	Datum		result;

	InitFunctionCallInfoData(*fcinfo, NULL, 1, InvalidOid, NULL, NULL);
	fcinfo->args[0].value = CStringGetTextDatum(fn_name);
	fcinfo->args[0].isnull = false;
	result = to_regprocedure(fcinfo);
	return fcinfo->isnull ? InvalidOid : DatumGetObjectId(result);
}

/*
 * load_registry
 *		The registry cache's loader (cache.c): read es.upcasters, rel, with
 *		snap into a new Registry allocated in the current memory context.
 */
static void *
load_registry(Relation rel, Snapshot snap)
{
	TupleDesc	desc;
	TableScanDesc scan;
	HeapTuple	tup;
	Registry   *reg;
	HASHCTL		hctl;
	RegistryRow *rows;
	int			nrows = 0;
	int			maxrows = 16;
	int			i;
	EsHash	   *hash;
	AttrNumber	att_type,
				att_from,
				att_fn,
				att_by;

	desc = RelationGetDescr(rel);
	att_type = EsTableCacheAttnum(rel, "event_type");
	att_from = EsTableCacheAttnum(rel, "from_version");
	att_fn = EsTableCacheAttnum(rel, "fn");
	/* missing before ALTER EXTENSION ... UPDATE: then no upcaster runs */
	att_by = attnameAttNum(rel, "registered_by", false);
	rows = palloc(sizeof(RegistryRow) * maxrows);
	scan = table_beginscan(rel, snap, 0, NULL);
	while ((tup = heap_getnext(scan, ForwardScanDirection)) != NULL)
	{
		bool		isnull;
		Datum		d;

		if (nrows == maxrows)
		{
			maxrows *= 2;
			rows = repalloc(rows, sizeof(RegistryRow) * maxrows);
		}
		d = heap_getattr(tup, att_type, desc, &isnull);
		rows[nrows].event_type = TextDatumGetCString(d);
		d = heap_getattr(tup, att_from, desc, &isnull);
		rows[nrows].from_version = DatumGetInt32(d);
		d = heap_getattr(tup, att_fn, desc, &isnull);
		rows[nrows].fn_name = TextDatumGetCString(d);
		rows[nrows].registrant = InvalidOid;
		if (att_by != InvalidAttrNumber)
		{
			d = heap_getattr(tup, att_by, desc, &isnull);
			if (!isnull)
				rows[nrows].registrant = DatumGetObjectId(d);
		}
		nrows++;
	}
	table_endscan(scan);

	if (nrows > 1)
		qsort(rows, nrows, sizeof(RegistryRow), registry_row_cmp);

	reg = palloc0(sizeof(Registry));
	reg->nslots = nrows;
	memset(&hctl, 0, sizeof(hctl));
	hctl.keysize = ES_MAX_NAME_BYTES + 1;
	hctl.entrysize = sizeof(UpcastType);
	hctl.hcxt = CurrentMemoryContext;
	reg->types = hash_create("es_ext upcasters", Max(nrows, 4), &hctl,
							 HASH_ELEM | HASH_STRINGS | HASH_CONTEXT);

	hash = EsHashBegin();

	for (i = 0; i < nrows;)
	{
		int			j;
		int			k;
		bool		found;
		UpcastType *t;

		for (j = i; j < nrows && strcmp(rows[j].event_type, rows[i].event_type) == 0; j++)
			;
		t = (UpcastType *) hash_search(reg->types, rows[i].event_type, HASH_ENTER, &found);
		t->nsteps = j - i;
		t->steps = palloc(sizeof(UpcastStep) * t->nsteps);
		for (k = 0; i < j; i++, k++)
		{
			UpcastStep *s = &t->steps[k];
			char		buf[16];
			const char *rolname;

			s->from_version = rows[i].from_version;
			s->fn_name = rows[i].fn_name;
			s->fn = resolve_fn(rows[i].fn_name);
			s->registrant = rows[i].registrant;
			s->slot = i;

			/*
			 * fingerprint: every row, its registrant (by name, as dumped:
			 * what an upcaster may read depends on it) and its function's
			 * definition
			 */
			snprintf(buf, sizeof(buf), "%d", s->from_version);
			rolname = OidIsValid(s->registrant) ? GetUserNameFromId(s->registrant, true) : NULL;
			if (rolname == NULL)
				rolname = "";
			EsHashCString(hash, rows[i].event_type);
			EsHashCString(hash, buf);
			EsHashCString(hash, s->fn_name);
			EsHashCString(hash, rolname);
			if (OidIsValid(s->fn))
				EsHashRoutine(s->fn, hash);
		}
	}
	EsHashEnd(hash, reg->fingerprint);

	return reg;
}

/* the current registry, valid to the end of the transaction */
static Registry *
current_registry(void)
{
	return (Registry *) EsTableCacheGet(&registry_cache);
}

/*
 * EsUpcastRegistryHash
 *		Feed the fingerprint of the whole registry (every row and the
 *		definition of every upcaster) into the SHA-256 context hash.  A
 *		snapshot depends on it: folded states depend on the shapes the
 *		reducer saw.
 */
void
EsUpcastRegistryHash(EsHash *hash)
{
	Registry   *reg = current_registry();

	EsHashRaw(hash, reg->fingerprint, sizeof(reg->fingerprint));
}

/*
 * EsUpcasterBegin
 *		Per-call upcasting state, allocated in the current memory context, or
 *		NULL when no upcaster is registered and the reader has nothing to
 *		decrypt (then nothing needs upcasting).  Encrypted personal fields
 *		(crypto.c) are decrypted before upcasting, so upcasters and readers
 *		see clear data when the current user may decrypt.
 */
EsUpcaster *
EsUpcasterBegin(void)
{
	Registry   *reg = current_registry();
	EsDecryptor *dec = EsDecryptorBegin(GetUserId());
	EsUpcaster *u;

	if (reg->nslots == 0 && dec == NULL)
		return NULL;

	u = palloc0(sizeof(EsUpcaster));
	u->reg = reg;
	u->dec = dec;
	u->cxt = AllocSetContextCreate(CurrentMemoryContext, "es_ext upcaster",
								   ALLOCSET_SMALL_SIZES);
	u->row_cxt = AllocSetContextCreate(CurrentMemoryContext, "es_ext upcast row",
									   ALLOCSET_DEFAULT_SIZES);
	u->finfo = MemoryContextAllocZero(u->cxt, sizeof(FmgrInfo *) * reg->nslots);
	u->nargs = MemoryContextAllocZero(u->cxt, sizeof(int) * reg->nslots);
	u->memo_len = -1;
	return u;
}

/*
 * find_steps
 *		The upcasters of an event of the given type at schema version sv:
 *		returns the type's entry and sets *idx to the step registered for
 *		from_version = sv, or returns NULL when there is none.
 */
static UpcastType *
find_steps(EsUpcaster *u, Datum event_type, int32 sv, int *idx)
{
	text	   *t = DatumGetTextPP(event_type);
	int			len = VARSIZE_ANY_EXHDR(t);
	UpcastType *entry;
	int			lo,
				hi;

	if (len > ES_MAX_NAME_BYTES)
		return NULL;
	if (len == u->memo_len && memcmp(u->memo_type, VARDATA_ANY(t), len) == 0)
		entry = u->memo_entry;
	else
	{
		char		key[ES_MAX_NAME_BYTES + 1];

		memcpy(key, VARDATA_ANY(t), len);
		key[len] = '\0';
		entry = (UpcastType *) hash_search(u->reg->types, key, HASH_FIND, NULL);
		memcpy(u->memo_type, key, len);
		u->memo_len = len;
		u->memo_entry = entry;
	}
	if (entry == NULL)
		return NULL;

	/* binary search for from_version = sv */
	lo = 0;
	hi = entry->nsteps - 1;
	while (lo <= hi)
	{
		int			mid = (lo + hi) / 2;
		int32		fv = entry->steps[mid].from_version;

		if (fv == sv)
		{
			*idx = mid;
			return entry;
		}
		if (fv < sv)
			lo = mid + 1;
		else
			hi = mid - 1;
	}
	return NULL;
}

static void
upcast_error_callback(void *arg)
{
	UpcastErrorContext *ctx = (UpcastErrorContext *) arg;

	errcontext("while upcasting event " INT64_FORMAT " of stream \"%s\" (type \"%s\") from schema version %d",
			   DatumGetInt64(ctx->ev->version),
			   TextDatumGetCString(ctx->ev->stream_id),
			   TextDatumGetCString(ctx->ev->event_type),
			   ctx->from_version);
}

/*
 * FmgrInfo of a step, checked and looked up on its first use in this call:
 * the reader and the registrant must both be allowed to execute it
 */
static FmgrInfo *
step_finfo(EsUpcaster *u, UpcastStep *step, const char *event_type)
{
	if (u->finfo[step->slot] == NULL)
	{
		FmgrInfo   *finfo;

		if (!OidIsValid(step->fn))
			ereport(ERROR,
					(errcode(ERRCODE_UNDEFINED_FUNCTION),
					 errmsg("upcaster function %s does not exist", step->fn_name),
					 errdetail("It is registered for event type \"%s\" from schema version %d.",
							   event_type, step->from_version),
					 errhint("Create the function again, or remove the upcaster with es_unregister_upcaster.")));
		u->nargs[step->slot] = EsCheckRoutine(step->fn, ES_ROUTINE_UPCASTER, true);
		EsCheckRunAs(step->fn, step->registrant, "upcaster");
		finfo = MemoryContextAllocZero(u->cxt, sizeof(FmgrInfo));
		fmgr_info_cxt(step->fn, finfo, u->cxt);
		u->finfo[step->slot] = finfo;
	}
	return u->finfo[step->slot];
}

/*
 * upcast_apply
 *		Run the chain of upcasters on ev, starting at step idx of entry, each
 *		as its registrant.  Allocates in the current memory context (the row
 *		context).
 */
static void
upcast_apply(EsUpcaster *u, EsEventView *ev, UpcastType *entry, int idx)
{
	ErrorContextCallback errcb;
	UpcastErrorContext ectx;
	Datum		data = ev->data;
	int32		sv = ev->schema_version;

	ectx.ev = ev;
	errcb.callback = upcast_error_callback;
	errcb.arg = &ectx;
	errcb.previous = error_context_stack;
	error_context_stack = &errcb;

	for (; idx < entry->nsteps && entry->steps[idx].from_version == sv; idx++)
	{
		UpcastStep *step = &entry->steps[idx];
		FmgrInfo   *finfo;
		LOCAL_FCINFO(fcinfo, 2);
		Datum		result;
		int			nargs;
		EsRunAs		runas;

		ectx.from_version = sv;
		finfo = step_finfo(u, step, entry->event_type);
		nargs = u->nargs[step->slot];

		InitFunctionCallInfoData(*fcinfo, finfo, nargs, InvalidOid, NULL, NULL);
		fcinfo->args[0].value = data;
		fcinfo->args[0].isnull = false;
		if (nargs == 2)
		{
			ev->data = data;
			ev->schema_version = sv;
			fcinfo->args[1].value = JsonbPGetDatum(EsEventEnvelope(ev));
			fcinfo->args[1].isnull = false;
		}
		EsRunAsBegin(&runas, step->registrant);
		result = FunctionCallInvoke(fcinfo);
		EsRunAsEnd(&runas);
		if (fcinfo->isnull)
			ereport(ERROR,
					(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
					 errmsg("upcaster %s returned null", format_procedure(step->fn)),
					 errhint("An upcaster returns the event's data in the next schema version.")));
		data = PointerGetDatum(DatumGetJsonbP(result));
		if (sv == PG_INT32_MAX)
			break;
		sv++;
	}

	error_context_stack = errcb.previous;
	ev->data = data;
	ev->schema_version = sv;
}

/*
 * EsUpcastEvent
 *		Upcast ev in place: when an upcaster applies, set ev->data (allocated
 *		in u's row context, valid until the next upcast) and
 *		ev->schema_version, and return true; otherwise leave ev alone and
 *		return false.  u may be NULL (no upcaster registered).
 */
bool
EsUpcastEvent(EsUpcaster *u, EsEventView *ev)
{
	UpcastType *entry;
	int			idx;
	MemoryContext oldcxt;

	bool		decrypted = false;

	if (u == NULL)
		return false;
	if (u->dec != NULL && EsHasPersonal(ev->metadata, ev->metadata_isnull) &&
		!EsDecryptorAllowed(u->dec))
		u->saw_personal = true;
	else if (u->dec != NULL && EsHasPersonal(ev->metadata, ev->metadata_isnull))
	{
		Jsonb	   *clear;

		MemoryContextReset(u->row_cxt);
		oldcxt = MemoryContextSwitchTo(u->row_cxt);
		clear = EsDecryptData(u->dec, DatumGetJsonbP(ev->data));
		MemoryContextSwitchTo(oldcxt);
		u->saw_personal = true;
		if (clear != NULL)
		{
			ev->data = JsonbPGetDatum(clear);
			decrypted = true;
		}
	}
	if (u->reg->nslots == 0)
		return decrypted;
	entry = find_steps(u, ev->event_type, ev->schema_version, &idx);
	if (entry == NULL)
		return decrypted;

	if (!decrypted)
		MemoryContextReset(u->row_cxt);
	oldcxt = MemoryContextSwitchTo(u->row_cxt);
	upcast_apply(u, ev, entry, idx);
	MemoryContextSwitchTo(oldcxt);
	return true;
}

/*
 * EsUpcasterSawPersonal
 *		Did u decrypt an event with personal fields?  (A fold that did writes
 *		no snapshot: its state may hold them in clear.)
 */
bool
EsUpcasterSawPersonal(EsUpcaster *u)
{
	return u != NULL && u->saw_personal;
}

/*
 * EsUpcastEventTuple
 *		Upcast an es.events row (desc: es.events' row descriptor, attrs its
 *		column positions).  Returns tuple itself when no upcaster applies,
 *		otherwise a new tuple with the upcast data and schema_version,
 *		allocated in u's row context (valid until the next upcast).
 */
HeapTuple
EsUpcastEventTuple(EsUpcaster *u, HeapTuple tuple, TupleDesc desc,
				   const EsEventAttrs *attrs)
{
	bool		isnull;
	Datum		type;
	int32		sv;
	UpcastType *entry;
	int			idx;
	MemoryContext oldcxt;
	Datum	   *values;
	bool	   *nulls;
	EsEventView ev;
	HeapTuple	result;

	bool		personal = false;

	if (u == NULL)
		return tuple;
	if (u->dec != NULL)
	{
		Datum		m = heap_getattr(tuple, attrs->metadata, desc, &isnull);

		personal = EsHasPersonal(m, isnull);
		if (personal)
			u->saw_personal = true;
		/* a reader that may not decrypt gets the stored row */
		if (!EsDecryptorAllowed(u->dec))
			personal = false;
	}
	entry = NULL;
	if (u->reg->nslots > 0)
	{
		type = heap_getattr(tuple, attrs->event_type, desc, &isnull);
		if (isnull)
			return tuple;
		sv = DatumGetInt32(heap_getattr(tuple, attrs->schema_version, desc, &isnull));
		if (isnull)
			return tuple;
		entry = find_steps(u, type, sv, &idx);
	}
	if (entry == NULL && !personal)
		return tuple;

	MemoryContextReset(u->row_cxt);
	oldcxt = MemoryContextSwitchTo(u->row_cxt);
	values = palloc(sizeof(Datum) * desc->natts);
	nulls = palloc(sizeof(bool) * desc->natts);
	heap_deform_tuple(tuple, desc, values, nulls);
	EsEventViewFromValues(&ev, attrs, values, nulls);
	if (personal)
	{
		Jsonb	   *clear = EsDecryptData(u->dec, DatumGetJsonbP(ev.data));

		u->saw_personal = true;
		if (clear != NULL)
			ev.data = JsonbPGetDatum(clear);
	}
	if (entry != NULL)
		upcast_apply(u, &ev, entry, idx);
	values[attrs->data - 1] = ev.data;
	nulls[attrs->data - 1] = false;
	values[attrs->schema_version - 1] = Int32GetDatum(ev.schema_version);
	result = heap_form_tuple(desc, values, nulls);
	MemoryContextSwitchTo(oldcxt);
	return result;
}

/*
 * EsUpcastRow
 *		EsUpcastEventTuple for callers that have only the row descriptor of
 *		es.events (the column positions are looked up once per descriptor).
 *		u may be NULL: then tuple is returned as is.
 */
HeapTuple
EsUpcastRow(EsUpcaster *u, HeapTuple tuple, TupleDesc desc)
{
	if (u == NULL)
		return tuple;
	if (u->row_desc != desc)
	{
		EsEventAttrsInit(&u->row_attrs, desc);
		u->row_desc = desc;
	}
	return EsUpcastEventTuple(u, tuple, desc, &u->row_attrs);
}

PG_FUNCTION_INFO_V1(es_upcast);

/*
 * es_upcast(event es.events) RETURNS es.events
 *		The row with its data upcast, for rows read from es.events directly.
 */
Datum
es_upcast(PG_FUNCTION_ARGS)
{
	HeapTupleHeader th = PG_GETARG_HEAPTUPLEHEADER(0);
	EsUpcaster *u = EsUpcasterBegin();
	TupleDesc	desc;
	HeapTupleData tup;
	HeapTuple	result;
	EsEventAttrs attrs;

	if (u == NULL)
		PG_RETURN_HEAPTUPLEHEADER(th);

	desc = lookup_rowtype_tupdesc(HeapTupleHeaderGetTypeId(th), HeapTupleHeaderGetTypMod(th));
	EsEventAttrsInit(&attrs, desc);
	tup.t_len = HeapTupleHeaderGetDatumLength(th);
	ItemPointerSetInvalid(&tup.t_self);
	tup.t_tableOid = InvalidOid;
	tup.t_data = th;
	result = EsUpcastEventTuple(u, &tup, desc, &attrs);
	ReleaseTupleDesc(desc);
	if (result == &tup)
		PG_RETURN_HEAPTUPLEHEADER(th);
	PG_RETURN_DATUM(HeapTupleGetDatum(result));
}

/*
 * check_event_type
 *		Validate an event type argument as es_append does.
 */
static void
check_event_type(text *type)
{
	int			len = VARSIZE_ANY_EXHDR(type);

	if (len == 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("event type cannot be empty")));
	if (len > ES_MAX_NAME_BYTES)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("event type is too long"),
				 errdetail("The event type takes %d bytes; the limit is %d bytes.",
						   len, ES_MAX_NAME_BYTES)));
}

PG_FUNCTION_INFO_V1(es_register_upcaster);

/*
 * es_register_upcaster(event_type text, from_version integer,
 *						fn regprocedure) RETURNS void
 *		Register (or replace) the upcaster of event_type from from_version
 *		to from_version + 1.  Runs as the caller: needs INSERT and UPDATE on
 *		es.upcasters (es_admin) and EXECUTE on fn.  The caller becomes the
 *		upcaster's registrant, the role it runs as.
 */
Datum
es_register_upcaster(PG_FUNCTION_ARGS)
{
	text	   *type;
	int32		from_version;
	Oid			fn;
	Datum		values[4];
	int			rc;

	EsCheckWritable("es_register_upcaster()");

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("event type cannot be null")));
	if (PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("from_version cannot be null")));
	if (PG_ARGISNULL(2))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("upcaster function cannot be null")));
	type = PG_GETARG_TEXT_PP(0);
	from_version = PG_GETARG_INT32(1);
	fn = PG_GETARG_OID(2);

	check_event_type(type);
	if (from_version < 1)
		ereport(ERROR,
				(errcode(ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE),
				 errmsg("from_version %d is out of range", from_version),
				 errdetail("Schema versions start at 1.")));
	if (from_version == PG_INT32_MAX)
		ereport(ERROR,
				(errcode(ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE),
				 errmsg("from_version %d is out of range", from_version),
				 errdetail("An upcaster raises the schema version by one.")));
	EsCheckRoutine(fn, ES_ROUTINE_UPCASTER, true);

	values[0] = PointerGetDatum(type);
	values[1] = Int32GetDatum(from_version);
	values[2] = CStringGetTextDatum(EsRoutineSignature(fn));
	values[3] = ObjectIdGetDatum(GetUserId());

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	rc = SPI_execute_plan(EsGetPlan(&register_plan), values, NULL, false, 0);
	if (rc != SPI_OK_INSERT)
		elog(ERROR, "could not register upcaster: %s", SPI_result_code_string(rc));
	SPI_finish();

	PG_RETURN_VOID();
}

PG_FUNCTION_INFO_V1(es_unregister_upcaster);

/*
 * es_unregister_upcaster(event_type text, from_version integer)
 *		RETURNS boolean
 *		Remove an upcaster; false when none was registered.
 */
Datum
es_unregister_upcaster(PG_FUNCTION_ARGS)
{
	Datum		values[2];
	int			rc;
	bool		found;

	EsCheckWritable("es_unregister_upcaster()");

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("event type cannot be null")));
	if (PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("from_version cannot be null")));
	values[0] = PG_GETARG_DATUM(0);
	values[1] = PG_GETARG_DATUM(1);

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	rc = SPI_execute_plan(EsGetPlan(&unregister_plan), values, NULL, false, 0);
	if (rc != SPI_OK_DELETE)
		elog(ERROR, "could not unregister upcaster: %s", SPI_result_code_string(rc));
	found = SPI_processed > 0;
	SPI_finish();

	PG_RETURN_BOOL(found);
}

PG_FUNCTION_INFO_V1(es_upcasters_changed);

/*
 * es_upcasters_changed
 *		AFTER ... FOR EACH STATEMENT trigger on es.upcasters: queue a relcache
 *		invalidation of the table, delivered to every backend at commit (and
 *		to this one at the next command), so that their cached registries
 *		reload.  Covers direct writes as well as es_register_upcaster.  The
 *		mechanism is EsTableCacheTrigger (cache.c), shared with
 *		es_outbox_routes_changed.
 */
Datum
es_upcasters_changed(PG_FUNCTION_ARGS)
{
	return EsTableCacheTrigger(fcinfo, "es_upcasters_changed");
}

PG_FUNCTION_INFO_V1(es_upcasters_stamp);

/*
 * es_upcasters_stamp
 *		BEFORE INSERT OR UPDATE ... FOR EACH ROW trigger on es.upcasters: set
 *		registered_by, the role the upcaster runs as, to the current user,
 *		unless the row names an existing role the current user is a member
 *		of (a superuser is a member of every role: a restore writes the
 *		dumped registrants back).  Naming another role is an error; an UPDATE
 *		that leaves registered_by alone hands the row to the updater unless
 *		it is a member of the registrant.
 */
Datum
es_upcasters_stamp(PG_FUNCTION_ARGS)
{
	TriggerData *trigdata = (TriggerData *) fcinfo->context;
	Relation	rel;
	HeapTuple	newtup;
	AttrNumber	att_by;
	bool		isnull;
	Datum		d;
	Oid			claimed = InvalidOid;
	Oid			previous = InvalidOid;
	Oid			user = GetUserId();
	int			col;
	Datum		value;
	bool		valnull = false;

	if (!CALLED_AS_TRIGGER(fcinfo))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("es_upcasters_stamp() must be called as a trigger")));
	if (!TRIGGER_FIRED_FOR_ROW(trigdata->tg_event) ||
		!TRIGGER_FIRED_BEFORE(trigdata->tg_event) ||
		TRIGGER_FIRED_BY_DELETE(trigdata->tg_event) ||
		TRIGGER_FIRED_BY_TRUNCATE(trigdata->tg_event))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("es_upcasters_stamp() must be fired BEFORE INSERT OR UPDATE ... FOR EACH ROW")));

	rel = trigdata->tg_relation;
	newtup = TRIGGER_FIRED_BY_UPDATE(trigdata->tg_event) ?
		trigdata->tg_newtuple : trigdata->tg_trigtuple;
	att_by = EsTableCacheAttnum(rel, "registered_by");

	d = heap_getattr(newtup, att_by, RelationGetDescr(rel), &isnull);
	if (!isnull)
		claimed = DatumGetObjectId(d);
	if (TRIGGER_FIRED_BY_UPDATE(trigdata->tg_event))
	{
		d = heap_getattr(trigdata->tg_trigtuple, att_by, RelationGetDescr(rel), &isnull);
		if (!isnull)
			previous = DatumGetObjectId(d);
	}

	if (claimed == user)
		return PointerGetDatum(newtup);
	if (OidIsValid(claimed) &&
		SearchSysCacheExists1(AUTHOID, ObjectIdGetDatum(claimed)) &&
		is_member_of_role(user, claimed))
		return PointerGetDatum(newtup);
	if (OidIsValid(claimed) && claimed != previous)
	{
		char	   *name = GetUserNameFromId(claimed, true);

		if (name == NULL)
			ereport(ERROR,
					(errcode(ERRCODE_UNDEFINED_OBJECT),
					 errmsg("role with OID %u does not exist", claimed),
					 errdetail("An upcaster runs as the role in registered_by.")));
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied to register an upcaster as role \"%s\"", name),
				 errdetail("An upcaster runs as the role in registered_by; only members of a role may name it."),
				 errhint("Leave registered_by out: it is set to the current user.")));
	}

	/* not given, or kept by an UPDATE of someone else's row: the writer's */
	col = att_by;
	value = ObjectIdGetDatum(user);
	return PointerGetDatum(heap_modify_tuple_by_cols(newtup, RelationGetDescr(rel),
													 1, &col, &value, &valnull));
}
