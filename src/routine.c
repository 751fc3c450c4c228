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
 * Registered code runs as its owner.  Code that one role registers in
 * es_ext's registries runs as that role, never with the rights of the role
 * that happens to call it: an upcaster as the role that registered it
 * (es.upcasters.registered_by), an es_project handler as the owner of the
 * handler function.  EsRunAsBegin/EsRunAsEnd bracket such a call the way
 * PostgreSQL runs index expressions during maintenance as the table owner
 * (index_build, REFRESH MATERIALIZED VIEW): when the caller is another role,
 * the current user becomes the owner inside a security-restricted operation
 * (no SET ROLE, no temporary objects, nothing that outlives the call), in a
 * new GUC nesting level with search_path = pg_catalog, pg_temp (so the
 * caller's search_path cannot make the owner's code resolve names to the
 * caller's objects: PostgreSQL 17 does the same with RestrictSearchPath), and
 * every setting the code changes is undone when it returns.  A function's own
 * SET clauses still apply inside.  When the caller is the owner, nothing
 * changes: the code already runs with its owner's rights, and the per-event
 * cost stays at one comparison.  An error inside needs no cleanup here: the
 * (sub)transaction abort restores the user, the security context and the
 * GUC nesting level, as it does for index builds.  Reducers are not
 * registered: the caller names one in each call, and it runs as the caller.
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
#include "miscadmin.h"
#include "utils/acl.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/guc.h"
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
 *		context ctx (fingerprint.c).  A function that no longer
 *		exists is fed as its OID with a marker, so it never matches a live one.
 */
void
EsHashRoutine(Oid fn, EsHash *ctx)
{
	HeapTuple	tup;
	Form_pg_proc proc;
	char		flags[5];
	char	   *lang;

	tup = SearchSysCache1(PROCOID, ObjectIdGetDatum(fn));
	if (!HeapTupleIsValid(tup))
	{
		char		buf[32];

		snprintf(buf, sizeof(buf), "missing %u", fn);
		EsHashString(ctx, buf);
		return;
	}
	proc = (Form_pg_proc) GETSTRUCT(tup);

	EsHashString(ctx, EsRoutineSignature(fn));
	EsHashString(ctx, format_type_extended(proc->prorettype, -1, FORMAT_TYPE_FORCE_QUALIFY));
	lang = get_language_name(proc->prolang, true);
	EsHashString(ctx, lang);
	EsHashString(ctx, proc_text_attr(tup, Anum_pg_proc_prosrc));
	EsHashString(ctx, proc_text_attr(tup, Anum_pg_proc_probin));
	EsHashString(ctx, proc_text_attr(tup, Anum_pg_proc_prosqlbody));
	EsHashString(ctx, proc_text_attr(tup, Anum_pg_proc_proconfig));
	flags[0] = proc->proisstrict ? 's' : '-';
	flags[1] = proc->provolatile;
	flags[2] = proc->prosecdef ? 'd' : '-';
	flags[3] = proc->proretset ? 'r' : '-';
	flags[4] = '\0';
	EsHashString(ctx, flags);

	ReleaseSysCache(tup);
}

/*
 * EsCheckRunAs
 *		Check that owner, the role fn is to run as, exists and may execute
 *		fn; what names the code in errors ("upcaster", "projection handler").
 *		Called once per function and call of a reader or trigger, before the
 *		first EsRunAsBegin.
 */
void
EsCheckRunAs(Oid fn, Oid owner, const char *what)
{
	if (!OidIsValid(owner))
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("%s %s has no role to run as", what, format_procedure(fn)),
				 errhint("Update the extension: ALTER EXTENSION es_ext UPDATE.")));
	if (!SearchSysCacheExists1(AUTHOID, ObjectIdGetDatum(owner)))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("the role that %s %s runs as does not exist", what, format_procedure(fn)),
				 errdetail("Registered code runs as the role that registered it; that role was dropped."),
				 errhint("Register it again as an existing role.")));
	/*
	 * Whoever owns the function controls its body: it must not gain the
	 * rights of the role the code runs as (a superuser registering a
	 * function another role owns, or a function dropped and created again
	 * under the registered name by another role).
	 */
	{
		HeapTuple	proctup = SearchSysCache1(PROCOID, ObjectIdGetDatum(fn));
		Oid			fnowner;

		if (!HeapTupleIsValid(proctup))
			elog(ERROR, "cache lookup failed for function %u", fn);
		fnowner = ((Form_pg_proc) GETSTRUCT(proctup))->proowner;
		ReleaseSysCache(proctup);
		if (!has_privs_of_role(fnowner, owner))
			ereport(ERROR,
					(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
					 errmsg("%s %s would run as role \"%s\", but its owner \"%s\" lacks that role's privileges",
							what, format_procedure(fn), GetUserNameFromId(owner, false),
							GetUserNameFromId(fnowner, false)),
					 errdetail("The owner of a function can change its body: it must not gain the rights of the role the code runs as."),
					 errhint("Register it as its owner, or make it owned by the role it runs as.")));
	}
	if (pg_proc_aclcheck(fn, owner, ACL_EXECUTE) != ACLCHECK_OK)
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied for function %s", format_procedure(fn)),
				 errdetail("The %s runs as role \"%s\", which lacks EXECUTE on it.",
						   what, GetUserNameFromId(owner, false))));
}

/*
 * EsRunAsBegin
 *		Make owner the current user for a call of registered code, inside a
 *		security-restricted operation with search_path = pg_catalog, pg_temp
 *		(see the file header); nothing changes when owner is the current
 *		user.  Pair with EsRunAsEnd after the call; on error the transaction
 *		or subtransaction abort restores everything.
 */
void
EsRunAsBegin(EsRunAs *ra, Oid owner)
{
	GetUserIdAndSecContext(&ra->save_userid, &ra->save_sec_context);
	if (owner == ra->save_userid)
	{
		ra->save_nestlevel = 0;
		return;
	}
	SetUserIdAndSecContext(owner, ra->save_sec_context |
						   SECURITY_LOCAL_USERID_CHANGE |
						   SECURITY_RESTRICTED_OPERATION);
	ra->save_nestlevel = NewGUCNestLevel();
	(void) set_config_option("search_path", ES_SAFE_SEARCH_PATH,
							 PGC_USERSET, PGC_S_SESSION,
							 GUC_ACTION_SAVE, true, 0, false);
}

/*
 * EsRunAsEnd
 *		Undo EsRunAsBegin: settings changed by the code are rolled back, the
 *		caller's user and security context restored.
 */
void
EsRunAsEnd(EsRunAs *ra)
{
	if (ra->save_nestlevel == 0)
		return;
	AtEOXact_GUC(false, ra->save_nestlevel);
	SetUserIdAndSecContext(ra->save_userid, ra->save_sec_context);
	ra->save_nestlevel = 0;
}
