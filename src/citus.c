/*-------------------------------------------------------------------------
 *
 * citus.c
 *	  What es_ext needs to know about Citus (issue 16), in one place.
 *
 * Under Citus, es.distribute() (sql/install/95_citus.sql) distributes the
 * stream-keyed tables by stream_id and makes the registries reference
 * tables.  The tables es_ext names (es.events, es.upcasters, ...) are then
 * shells: the rows live in shards, tables named <table>_<shard id> in the
 * same schema, on the nodes.  The functions that work on one stream are
 * delegated by Citus to the node that holds the stream's shard, and their
 * SPI statements run there through Citus's local execution.  Three things
 * in es_ext look below the executor and must know about that:
 *
 *	- the guard trigger (guard.c) fires on a shard, not on the table
 *	  es_append allowed: EsLogicalRelid maps the shard back;
 *	- the per-backend caches of the registries (cache.c) scan their table
 *	  directly: EsLocalPlacement gives the reference table's placement on
 *	  this node, which holds every row;
 *	- the direct index reads of a stream (stream_scan.c, append.c) would
 *	  see the empty shell: EsCitusPresent sends them through SPI instead.
 *
 * EsDistributed tells whether es.events is distributed here; the functions
 * that cannot be correct on a distributed store refuse with
 * EsRefuseDistributed.
 *
 * A planner hook (EsCitusRegister) guards Citus's function delegation: Citus
 * 13.2.2 crashes (SIGSEGV, hashing a null datum) when a delegated function
 * is called with a NULL distribution argument.  A call of one of es_ext's
 * delegated functions whose stream folds to NULL is refused before Citus
 * plans it, with the error the function gives for a NULL stream; one whose
 * stream depends on the rest of the query (which planning could fold to
 * NULL after pulling up a subquery) is kept from delegation.  es.distribute()
 * requires es_ext in shared_preload_libraries on every node, after citus.
 *
 * src/citus.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "commands/extension.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "nodes/makefuncs.h"
#include "nodes/params.h"
#include "nodes/pathnodes.h"
#include "optimizer/prep.h"
#include "utils/fmgroids.h"
#include "optimizer/optimizer.h"
#include "optimizer/planner.h"
#include "storage/proc.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"

#include "es_ext.h"

/*
 * EsCitusPresent
 *		Is Citus active in this database?  Citus runs only from
 *		shared_preload_libraries, so the extension is looked up only then.
 */
bool
EsCitusPresent(void)
{
	return shared_preload_libraries_string != NULL &&
		strstr(shared_preload_libraries_string, "citus") != NULL &&
		OidIsValid(get_extension_oid("citus", true));
}

/*
 * shard_base_name
 *		When relname looks like a Citus shard name, <base>_<digits>, return
 *		a palloc'd copy of base; else NULL.
 */
static char *
shard_base_name(const char *relname)
{
	const char *us = strrchr(relname, '_');
	const char *p;

	if (us == NULL || us == relname || us[1] == '\0')
		return NULL;
	for (p = us + 1; *p; p++)
		if (*p < '0' || *p > '9')
			return NULL;
	return pnstrdup(relname, us - relname);
}

/*
 * EsLogicalRelid
 *		The table that rel stands for: under Citus, the distributed or
 *		reference table whose shard rel is (a table of the same schema
 *		named like rel without its _<shard id> suffix); otherwise, and for
 *		a table that is no shard, rel itself.  *relname is set to that
 *		table's name.  Only the name is used: the guard trigger that asks
 *		is on tables of schema es, where only es_ext and Citus create
 *		tables.
 */
Oid
EsLogicalRelid(Relation rel, const char **relname)
{
	char	   *base;
	Oid			relid;

	*relname = RelationGetRelationName(rel);
	if (!EsCitusPresent())
		return RelationGetRelid(rel);
	base = shard_base_name(RelationGetRelationName(rel));
	if (base == NULL)
		return RelationGetRelid(rel);
	relid = get_relname_relid(base, RelationGetNamespace(rel));
	if (!OidIsValid(relid))
		return RelationGetRelid(rel);
	*relname = base;
	return relid;
}

/*
 * EsLocalPlacement
 *		The relation that holds relid's rows on this node: under Citus,
 *		the placement of a reference table here (its one shard); otherwise
 *		relid itself.  A reference table that has no placement on this node
 *		(a coordinator not added to the metadata) is refused: its shell is
 *		empty and reading it would silently find nothing.
 */
Oid
EsLocalPlacement(Oid relid)
{
	Oid			result = relid;
	int			rc;
	Datum		arg = ObjectIdGetDatum(relid);
	Oid			argtype = OIDOID;

	if (!EsCitusPresent())
		return relid;

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	rc = SPI_execute_with_args("SELECT s.shardid, p.partmethod"
							   "  FROM pg_catalog.pg_dist_partition AS p"
							   "  JOIN pg_catalog.pg_dist_shard AS s ON s.logicalrelid OPERATOR(pg_catalog.=) p.logicalrelid"
							   " WHERE p.logicalrelid OPERATOR(pg_catalog.=) $1",
							   1, &argtype, &arg, NULL, true, 2);
	if (rc != SPI_OK_SELECT)
		elog(ERROR, "could not look up the shards of %s: %s",
			 get_rel_name(relid), SPI_result_code_string(rc));
	if (SPI_processed == 1)
	{
		bool		isnull;
		int64		shardid = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0],
														  SPI_tuptable->tupdesc, 1, &isnull));
		char	   *method = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2);
		char	   *name;

		if (method != NULL && method[0] == 'n')
		{
			name = psprintf("%s_" INT64_FORMAT, get_rel_name(relid), shardid);
			result = get_relname_relid(name, get_rel_namespace(relid));
			if (!OidIsValid(result))
				ereport(ERROR,
						(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
						 errmsg("reference table \"es.%s\" has no placement on this node",
								get_rel_name(relid)),
						 errhint("Add the coordinator to the Citus metadata (citus_set_coordinator_host) and replicate reference tables (replicate_reference_tables()).")));
		}
	}
	SPI_finish();
	return result;
}

/* EsDistributed's answer, valid for one transaction */
static LocalTransactionId distributed_lxid = InvalidLocalTransactionId;
static bool distributed = false;

/*
 * EsDistributed
 *		Is es.events a distributed table (es.distribute() ran)?  Looked up
 *		once per transaction.
 */
bool
EsDistributed(void)
{
	int			rc;
	Datum		arg;
	Oid			argtype = OIDOID;

	if (!EsCitusPresent())
		return false;
	if (distributed_lxid == MyProc->lxid)
		return distributed;

	arg = ObjectIdGetDatum(EsRelationOid("events"));
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	rc = SPI_execute_with_args("SELECT 1 FROM pg_catalog.pg_dist_partition AS p"
							   " WHERE p.logicalrelid OPERATOR(pg_catalog.=) $1",
							   1, &argtype, &arg, NULL, true, 1);
	if (rc != SPI_OK_SELECT)
		elog(ERROR, "could not look up the distribution of es.events: %s",
			 SPI_result_code_string(rc));
	distributed = (SPI_processed > 0);
	SPI_finish();
	distributed_lxid = MyProc->lxid;
	return distributed;
}

/*
 * EsRefuseDistributed
 *		Refuse function fname on a distributed event store, where it cannot
 *		give a correct answer; hint says what to use instead (or NULL).
 */
void
EsRefuseDistributed(const char *fname, const char *hint)
{
	if (!EsDistributed())
		return;
	ereport(ERROR,
			(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
			 errmsg("%s is not supported on a distributed event store", fname),
			 errdetail("es.events is distributed by Citus (es.distribute()); see README, \"Scaling out with Citus\"."),
			 hint ? errhint("%s", hint) : 0));
}

/* this node's Citus group, looked up once per backend (-1: not yet) */
static int32 local_group = -1;

/*
 * EsCheckNodeRange
 *		On a distributed store, after an append: position, the first event's,
 *		must be in the range of this node's Citus group (es_node_ranges).  A
 *		node added after es.distribute() still hands out the coordinator's
 *		positions, whose node log readers may already be past: refused
 *		until es.distribute() has run again.
 */
void
EsCheckNodeRange(int64 position)
{
	if (!EsDistributed())
		return;
	if (local_group < 0)
	{
		bool		isnull;
		int			rc;

		if (SPI_connect() != SPI_OK_CONNECT)
			elog(ERROR, "SPI_connect failed");
		rc = SPI_execute("SELECT g.groupid FROM pg_catalog.pg_dist_local_group AS g", true, 1);
		if (rc != SPI_OK_SELECT || SPI_processed != 1)
			elog(ERROR, "could not read this node's Citus group: %s", SPI_result_code_string(rc));
		local_group = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc,
												  1, &isnull));
		SPI_finish();
	}
	if ((position >> 48) != local_group)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("this node's event positions are not in the range of its Citus group %d", local_group),
				 errdetail("Position " INT64_FORMAT " belongs to group " INT64_FORMAT "; a node added after es.distribute() hands out another node's positions.",
						   position, position >> 48),
				 errhint("Run SELECT es.distribute() on the coordinator: it gives every node's sequences their range.")));
}

/* ----------------------------------------------------------------
 * The planner hook: no NULL stream reaches Citus's delegation
 * ----------------------------------------------------------------
 */

static planner_hook_type prev_planner_hook = NULL;

/* the functions es.distribute() delegates by their first argument */
static const char *const delegated_functions[] = {
	"es_append", "es_read_stream", "es_stream_version", "es_fold", "es_fold_state",
	"es_snapshot_save", "es_snapshot_delete", "es_verify", NULL
};

/* what a call's stream argument is, as Citus would see it */
typedef enum StreamArg
{
	STREAM_ARG_NOT_OURS,		/* not a delegated function of es_ext */
	STREAM_ARG_VALUE,			/* a constant (or bound parameter) value */
	STREAM_ARG_NULL,			/* a NULL constant */
	STREAM_ARG_EXPRESSION		/* anything else: a column, a subquery, ... */
} StreamArg;

/*
 * stream_arg
 *		Is expr a call of a delegated function of es_ext, and what is its
 *		first argument once folded the way the planner folds it (bound
 *		parameters included)?  *fname is set to the function's name.
 */
static StreamArg
stream_arg(Node *expr, ParamListInfo params, const char **fname)
{
	FuncExpr   *fe;
	Node	   *arg;
	Oid			nsp;
	char	   *name;
	int			i;
	ListCell   *lc;
	PlannerGlobal glob;
	PlannerInfo root;

	if (expr == NULL || !IsA(expr, FuncExpr))
		return STREAM_ARG_NOT_OURS;
	fe = (FuncExpr *) expr;
	nsp = get_namespace_oid("es", true);
	if (!OidIsValid(nsp) || get_func_namespace(fe->funcid) != nsp)
		return STREAM_ARG_NOT_OURS;
	name = get_func_name(fe->funcid);
	*fname = NULL;
	for (i = 0; delegated_functions[i] != NULL; i++)
		if (name != NULL && strcmp(name, delegated_functions[i]) == 0)
			*fname = delegated_functions[i];
	if (*fname == NULL)
		return STREAM_ARG_NOT_OURS;

	/* the first argument, also when given by name (stream => ...) */
	arg = NULL;
	i = 0;
	foreach(lc, fe->args)
	{
		Node	   *a = (Node *) lfirst(lc);

		if (IsA(a, NamedArgExpr))
		{
			if (((NamedArgExpr *) a)->argnumber == 0)
				arg = (Node *) ((NamedArgExpr *) a)->arg;
		}
		else if (i == 0)
			arg = a;
		i++;
	}
	if (arg == NULL)
		return STREAM_ARG_EXPRESSION;

	/* folded as the planner folds it before Citus routes the call */
	MemSet(&glob, 0, sizeof(glob));
	MemSet(&root, 0, sizeof(root));
	glob.type = T_PlannerGlobal;
	glob.boundParams = params;
	root.type = T_PlannerInfo;
	root.glob = &glob;
	arg = eval_const_expressions(&root, arg);
	if (IsA(arg, Const))
		return ((Const *) arg)->constisnull ? STREAM_ARG_NULL : STREAM_ARG_VALUE;
	if (IsA(arg, Param) && ((Param *) arg)->paramkind == PARAM_EXTERN)
		return STREAM_ARG_VALUE;	/* unbound: Citus does not delegate it */
	return STREAM_ARG_EXPRESSION;
}

/*
 * check_call
 *		A NULL stream: the function's error.  A stream computed from the rest
 *		of the query: Citus could still fold it to NULL after pulling up a
 *		subquery or a CTE, and then crash; returns true, and the caller keeps
 *		Citus from delegating the call.
 */
static bool
check_call(Node *expr, ParamListInfo params)
{
	const char *fname = NULL;

	switch (stream_arg(expr, params, &fname))
	{
		case STREAM_ARG_NULL:
			if (!EsDistributed())
				return false;
			if (strcmp(fname, "es_snapshot_delete") == 0)
				EsRefuseDistributed("es_snapshot_delete() of every stream",
									"Delete the snapshots of one stream at a time: es.es_snapshot_delete(stream, reducer).");
			ereport(ERROR,
					(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
					 errmsg("stream id cannot be null")));
			break;
		case STREAM_ARG_EXPRESSION:
			return EsDistributed();
		default:
			break;
	}
	return false;
}

static PlannedStmt *
es_citus_planner(Query *parse, const char *query_string, int cursorOptions,
				 ParamListInfo boundParams)
{
	/* the calls Citus may delegate: SELECT f(...), SELECT ... FROM f(...) */
	if (parse->commandType == CMD_SELECT && parse->jointree != NULL)
	{
		ListCell   *lc;
		bool		keep_local = false;

		foreach(lc, parse->targetList)
			keep_local |= check_call((Node *) ((TargetEntry *) lfirst(lc))->expr, boundParams);
		foreach(lc, parse->rtable)
		{
			RangeTblEntry *rte = (RangeTblEntry *) lfirst(lc);
			ListCell   *lf;

			if (rte->rtekind != RTE_FUNCTION)
				continue;
			foreach(lf, rte->functions)
				keep_local |= check_call(((RangeTblFunction *) lfirst(lf))->funcexpr, boundParams);
		}

		/*
		 * Citus delegates only a query without a WHERE clause: a volatile
		 * qual that is always true (random() IS NOT NULL) survives planning
		 * and keeps the call here.
		 */
		if (keep_local)
		{
			NullTest   *nt = makeNode(NullTest);

			nt->arg = (Expr *) makeFuncExpr(F_RANDOM, FLOAT8OID, NIL, InvalidOid, InvalidOid,
											COERCE_EXPLICIT_CALL);
			nt->nulltesttype = IS_NOT_NULL;
			nt->argisrow = false;
			nt->location = -1;
			parse->jointree->quals = parse->jointree->quals == NULL ? (Node *) nt :
				(Node *) make_and_qual(parse->jointree->quals, (Node *) nt);
		}
	}
	if (prev_planner_hook)
		return prev_planner_hook(parse, query_string, cursorOptions, boundParams);
	return standard_planner(parse, query_string, cursorOptions, boundParams);
}

/*
 * EsCitusRegister
 *		From _PG_init, when es_ext is preloaded after Citus: install the
 *		planner hook in front of Citus's.
 */
void
EsCitusRegister(void)
{
	if (shared_preload_libraries_string == NULL ||
		strstr(shared_preload_libraries_string, "citus") == NULL)
		return;
	prev_planner_hook = planner_hook;
	planner_hook = es_citus_planner;
}
