/*-------------------------------------------------------------------------
 *
 * spi_util.c
 *	  Saved SPI plans and catalog lookups shared by the es_ext functions.
 *
 * Every statement es_ext runs through SPI is written with schema-qualified
 * names, OPERATOR(pg_catalog.x) and pg_catalog-qualified functions and
 * types, so re-analysis under any caller's search_path resolves to the same
 * objects.  Plans are prepared on first use and kept for the life of the
 * backend (SPI_keepplan moves them under CacheMemoryContext); the plan cache
 * revalidates them when the tables change.
 *
 * Relation and type OIDs are looked up on each call through the syscache
 * (cheap) rather than cached, so a DROP/CREATE EXTENSION in the same backend
 * cannot leave a stale OID behind.
 *
 * src/spi_util.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "utils/lsyscache.h"
#include "utils/syscache.h"

#include "es_ext.h"

/*
 * EsGetPlan
 *		Return the saved plan of p, preparing it on first use.  Must be called
 *		inside SPI_connect().
 */
SPIPlanPtr
EsGetPlan(EsPlan *p)
{
	return EsGetPlanOptions(p, 0);
}

/*
 * EsGetGenericPlan
 *		EsGetPlan, but the saved plan is generic (CURSOR_OPT_GENERIC_PLAN):
 *		planned once, never again for the values of a call.  For statements
 *		whose custom plans are no better (or worse: estimated from stale
 *		statistics) and whose planning would cost more than their run.
 */
SPIPlanPtr
EsGetGenericPlan(EsPlan *p)
{
	return EsGetPlanOptions(p, CURSOR_OPT_GENERIC_PLAN);
}

/* the saved plan of p, prepared on first use with cursorOptions */
SPIPlanPtr
EsGetPlanOptions(EsPlan *p, int cursorOptions)
{
	if (p->plan == NULL)
	{
		SPIPlanPtr	plan;

		plan = SPI_prepare_cursor(p->sql, p->nargs, p->argtypes, cursorOptions);
		if (plan == NULL)
			elog(ERROR, "SPI_prepare failed: %s: %s",
				 SPI_result_code_string(SPI_result), p->sql);
		if (SPI_keepplan(plan) != 0)
			elog(ERROR, "SPI_keepplan failed");
		p->plan = plan;
	}
	return p->plan;
}

/*
 * EsSchemaOid
 *		OID of the extension's schema "es".
 */
Oid
EsSchemaOid(void)
{
	return get_namespace_oid("es", false);
}

/*
 * EsRelationOid
 *		OID of relation es.<relname>; raises an error if it does not exist.
 */
Oid
EsRelationOid(const char *relname)
{
	Oid			relid = get_relname_relid(relname, EsSchemaOid());

	if (!OidIsValid(relid))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_TABLE),
				 errmsg("relation \"es.%s\" does not exist", relname),
				 errhint("Is the extension es_ext installed?")));
	return relid;
}

/*
 * EsTypeOid
 *		OID of type es.<typname>; raises an error if it does not exist.
 */
Oid
EsTypeOid(const char *typname)
{
	Oid			typid = GetSysCacheOid2(TYPENAMENSP, Anum_pg_type_oid,
										CStringGetDatum(typname),
										ObjectIdGetDatum(EsSchemaOid()));

	if (!OidIsValid(typid))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("type \"es.%s\" does not exist", typname),
				 errhint("Is the extension es_ext installed?")));
	return typid;
}
