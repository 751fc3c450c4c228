/*-------------------------------------------------------------------------
 *
 * routine.c
 *	  User functions that es_ext calls: reducers (es_fold, es_fold_agg) and
 *	  upcasters (es_register_upcaster, reads).  Their checks, their stable
 *	  name and the hash of their definition.
 *
 * A reducer is a function (state jsonb, event jsonb) RETURNS jsonb or
 * (state jsonb, event es.events) RETURNS jsonb; an upcaster is a function
 * (data jsonb) RETURNS jsonb or (data jsonb, event jsonb) RETURNS jsonb.
 * Neither may be a procedure, an aggregate, a window function or return a
 * set; the caller must be allowed to execute it.  Every check runs before any
 * event is read, so a bad function fails fast with its own SQLSTATE.
 *
 * The definition hash identifies what a function does, as far as the catalog
 * can tell: its qualified signature, result type, language, source, binary,
 * SQL body, strictness, volatility, security and SET options.  CREATE OR
 * REPLACE FUNCTION with another body changes it.  It is SHA-256, fed into a
 * caller's hash context, so that snapshot.c and upcast.c can combine several
 * functions into one fingerprint.  What it cannot see: functions or tables
 * the function itself uses, and a rebuilt shared library behind a C
 * function with the same symbol.
 *
 * Nothing here keeps state; all results are allocated in the current memory
 * context.
 *
 * src/routine.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "catalog/pg_language.h"
#include "catalog/pg_proc.h"
#include "catalog/pg_type.h"
#include "common/cryptohash.h"
#include "miscadmin.h"
#include "utils/acl.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/lsyscache.h"
#include "utils/regproc.h"
#include "utils/syscache.h"

#include "es_ext.h"

static const char *
routine_role(EsRoutineKind kind)
{
	return kind == ES_ROUTINE_REDUCER ? "reducer" : "upcaster";
}

static const char *
routine_shape(EsRoutineKind kind)
{
	return kind == ES_ROUTINE_REDUCER ?
		"A reducer is a function (state jsonb, event jsonb) RETURNS jsonb or (state jsonb, event es.events) RETURNS jsonb." :
		"An upcaster is a function (data jsonb) RETURNS jsonb or (data jsonb, event jsonb) RETURNS jsonb.";
}

/*
 * EsCheckRoutine
 *		Check that fn can serve as a reducer or an upcaster, and, if
 *		check_execute, that the current user may execute it.  Raises an error
 *		otherwise.
 *
 *		Returns, for a reducer, ES_EVENT_AS_JSONB or ES_EVENT_AS_ROW (the type
 *		of its event argument); for an upcaster, its number of arguments (1 or
 *		2).
 */
int
EsCheckRoutine(Oid fn, EsRoutineKind kind, bool check_execute)
{
	HeapTuple	tup;
	Form_pg_proc proc;
	char	   *name;
	int			result = 0;
	bool		args_ok = false;

	tup = SearchSysCache1(PROCOID, ObjectIdGetDatum(fn));
	if (!HeapTupleIsValid(tup))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_FUNCTION),
				 errmsg("function with OID %u does not exist", fn)));
	proc = (Form_pg_proc) GETSTRUCT(tup);
	name = format_procedure(fn);

	if (proc->prokind == PROKIND_PROCEDURE)
		ereport(ERROR,
				(errcode(ERRCODE_WRONG_OBJECT_TYPE),
				 errmsg("%s %s is a procedure", routine_role(kind), name),
				 errdetail("%s", routine_shape(kind))));
	if (proc->prokind == PROKIND_AGGREGATE)
		ereport(ERROR,
				(errcode(ERRCODE_WRONG_OBJECT_TYPE),
				 errmsg("%s %s is an aggregate function", routine_role(kind), name),
				 errdetail("%s", routine_shape(kind))));
	if (proc->prokind == PROKIND_WINDOW)
		ereport(ERROR,
				(errcode(ERRCODE_WRONG_OBJECT_TYPE),
				 errmsg("%s %s is a window function", routine_role(kind), name),
				 errdetail("%s", routine_shape(kind))));
	if (proc->proretset)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_FUNCTION_DEFINITION),
				 errmsg("%s %s returns a set", routine_role(kind), name),
				 errdetail("%s", routine_shape(kind))));

	if (kind == ES_ROUTINE_REDUCER)
	{
		if (proc->pronargs == 2 && proc->proargtypes.values[0] == JSONBOID)
		{
			Oid			evtype = proc->proargtypes.values[1];

			if (evtype == JSONBOID)
			{
				args_ok = true;
				result = ES_EVENT_AS_JSONB;
			}
			else if (evtype == get_rel_type_id(EsRelationOid("events")))
			{
				args_ok = true;
				result = ES_EVENT_AS_ROW;
			}
		}
	}
	else
	{
		if ((proc->pronargs == 1 || proc->pronargs == 2) &&
			proc->proargtypes.values[0] == JSONBOID &&
			(proc->pronargs == 1 || proc->proargtypes.values[1] == JSONBOID))
		{
			args_ok = true;
			result = proc->pronargs;
		}
	}
	if (!args_ok)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_FUNCTION_DEFINITION),
				 errmsg("%s %s has the wrong argument types", routine_role(kind), name),
				 errdetail("%s", routine_shape(kind))));
	if (proc->prorettype != JSONBOID)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_FUNCTION_DEFINITION),
				 errmsg("%s %s must return jsonb", routine_role(kind), name),
				 errdetail("It returns %s.", format_type_be(proc->prorettype))));

	ReleaseSysCache(tup);

	if (check_execute)
	{
		AclResult	aclresult = pg_proc_aclcheck(fn, GetUserId(), ACL_EXECUTE);

		if (aclresult != ACLCHECK_OK)
			aclcheck_error(aclresult, OBJECT_FUNCTION, get_func_name(fn));
	}
	return result;
}

/*
 * EsRoutineSignature
 *		The schema-qualified signature of fn, as es_ext stores it (for
 *		example "public.order_reducer(pg_catalog.jsonb,pg_catalog.jsonb)").
 *		It reads back with ::regprocedure under any search_path, and it
 *		survives dump/restore and pg_upgrade, which OIDs do not.
 */
char *
EsRoutineSignature(Oid fn)
{
	return format_procedure_extended(fn, FORMAT_PROC_FORCE_QUALIFY);
}

/* feed a length-prefixed byte string (NULL: absent) into ctx */
static void
hash_bytes(pg_cryptohash_ctx *ctx, const char *p, int32 len)
{
	int32		l = (p == NULL) ? -1 : len;

	if (pg_cryptohash_update(ctx, (const uint8 *) &l, sizeof(l)) < 0 ||
		(p != NULL && pg_cryptohash_update(ctx, (const uint8 *) p, len) < 0))
		elog(ERROR, "could not update SHA-256 hash: %s", pg_cryptohash_error(ctx));
}

static void
hash_string(pg_cryptohash_ctx *ctx, const char *s)
{
	hash_bytes(ctx, s, s == NULL ? 0 : strlen(s));
}

/* a nullable text-ish column of the pg_proc tuple, as a C string */
static char *
proc_text_attr(HeapTuple tup, int attnum)
{
	bool		isnull;
	Datum		d = SysCacheGetAttr(PROCOID, tup, attnum, &isnull);

	if (isnull)
		return NULL;
	if (attnum == Anum_pg_proc_proconfig)
		return DatumGetCString(OidFunctionCall1(F_ARRAY_OUT, d));
	return TextDatumGetCString(d);
}

/*
 * EsHashRoutine
 *		Feed the definition of fn (see the file header) into the SHA-256
 *		context hashctx (a pg_cryptohash_ctx *).  A function that no longer
 *		exists is fed as its OID with a marker, so it never matches a live one.
 */
void
EsHashRoutine(Oid fn, void *hashctx)
{
	pg_cryptohash_ctx *ctx = (pg_cryptohash_ctx *) hashctx;
	HeapTuple	tup;
	Form_pg_proc proc;
	char		flags[5];
	char	   *lang;

	tup = SearchSysCache1(PROCOID, ObjectIdGetDatum(fn));
	if (!HeapTupleIsValid(tup))
	{
		char		buf[32];

		snprintf(buf, sizeof(buf), "missing %u", fn);
		hash_string(ctx, buf);
		return;
	}
	proc = (Form_pg_proc) GETSTRUCT(tup);

	hash_string(ctx, EsRoutineSignature(fn));
	hash_string(ctx, format_type_extended(proc->prorettype, -1, FORMAT_TYPE_FORCE_QUALIFY));
	lang = get_language_name(proc->prolang, true);
	hash_string(ctx, lang);
	hash_string(ctx, proc_text_attr(tup, Anum_pg_proc_prosrc));
	hash_string(ctx, proc_text_attr(tup, Anum_pg_proc_probin));
	hash_string(ctx, proc_text_attr(tup, Anum_pg_proc_prosqlbody));
	hash_string(ctx, proc_text_attr(tup, Anum_pg_proc_proconfig));
	flags[0] = proc->proisstrict ? 's' : '-';
	flags[1] = proc->provolatile;
	flags[2] = proc->prosecdef ? 'd' : '-';
	flags[3] = proc->proretset ? 'r' : '-';
	flags[4] = '\0';
	hash_string(ctx, flags);

	ReleaseSysCache(tup);
}
