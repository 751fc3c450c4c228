/*-------------------------------------------------------------------------
 *
 * tenant.c
 *	  Tenant isolation (issue 15): es_append's check that the caller's
 *	  tenants own the stream it appends to, the same for stream reads, and
 *	  es_current_tenants(), the tenants of the current role, which the
 *	  policies ask for.
 *
 * es_enable_tenancy() (sql/install/85_tenancy.sql) puts the restrictive
 * policy es_tenant on every es_ext table that holds stream data: the tenant
 * of a stream is its id up to the first "/", and a role acts for the tenants
 * that es.tenant_roles maps to roles it is a member of ("*": all).  The
 * policies alone would let es_append look up the stream (expected version,
 * event ids) before the INSERT's WITH CHECK refuses a new stream row: a
 * conflict, an idempotent replay or the stream-exists check would then tell
 * a tenant something about another tenant's stream.  So es_append calls
 * EsTenantCheckStream first, under SPI, before any lookup: an append into a
 * stream of another tenant is refused with the same error, word for word,
 * as the WITH CHECK of a new stream row (42501, policy "es_tenant", table
 * "streams"), whether that stream exists or not.
 *
 * The check runs only when es.streams has the policy es_tenant and row
 * level security applies to the caller (not the owner without FORCE, not
 * BYPASSRLS): a look at the relcache entry otherwise, no statement.  The
 * rule is the one of the policy expression in 85_tenancy.sql: the two must
 * agree.
 *
 * src/tenant.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/table.h"
#include "access/xact.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "nodes/pg_list.h"
#include "rewrite/rowsecurity.h"
#include "storage/lockdefs.h"
#include "storage/proc.h"
#include "utils/array.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/rls.h"
#include "utils/timestamp.h"

#include "es_ext.h"

/* the tenants of the current role (es_current_tenants) */
static EsPlan current_tenants_plan = {
	NULL,
	"SELECT COALESCE(pg_catalog.array_agg(DISTINCT t.tenant), '{}'::pg_catalog.text[])"
	"  FROM es.tenant_roles AS t"
	" WHERE pg_catalog.pg_has_role(t.role::pg_catalog.oid, 'MEMBER')",
	0, {InvalidOid}
};

/*
 * The last answer of es_current_tenants, for the role, transaction and
 * top-level statement it was computed in (TopTransactionContext: it goes
 * with the transaction, whose local id the key holds).
 */
static Oid	cached_user = InvalidOid;
static LocalTransactionId cached_lxid = InvalidLocalTransactionId;
static TimestampTz cached_statement = 0;
static ArrayType *cached_tenants = NULL;

/* does one of the caller's tenants own stream $1? (85_tenancy.sql's rule) */
static EsPlan tenant_owns_plan = {
	NULL,
	"SELECT ARRAY[pg_catalog.split_part($1, '/', 1), '*']"
	"       OPERATOR(pg_catalog.&&) es.es_current_tenants()",
	1, {TEXTOID}
};

/*
 * tenancy_applies
 *		Does the tenant policy of es.streams apply to the current role?  Takes
 *		RowExclusiveLock on es.streams (es_append's stream statement takes it
 *		anyway; a weaker lock first would be upgraded there), held to the end
 *		of the transaction.
 */
static bool
tenancy_applies_lock(LOCKMODE lockmode)
{
	Oid			relid = EsRelationOid("streams");
	Relation	rel = table_open(relid, lockmode);
	bool		has_policy = false;

	if (rel->rd_rel->relrowsecurity && rel->rd_rsdesc != NULL)
	{
		ListCell   *lc;

		foreach(lc, rel->rd_rsdesc->policies)
		{
			RowSecurityPolicy *policy = (RowSecurityPolicy *) lfirst(lc);

			if (strcmp(policy->policy_name, ES_TENANT_POLICY) == 0)
			{
				has_policy = true;
				break;
			}
		}
	}
	table_close(rel, NoLock);

	return has_policy && check_enable_rls(relid, InvalidOid, true) == RLS_ENABLED;
}

static bool
tenancy_applies(void)
{
	return tenancy_applies_lock(RowExclusiveLock);
}

/*
 * tenant_owns
 *		Does one of the caller's tenants own the stream?  Runs the rule under
 *		SPI (read_only: with the active snapshot, for a STABLE caller).
 */
static bool
tenant_owns(Datum stream, bool read_only)
{
	int			rc;
	bool		isnull;
	bool		owns;

	rc = SPI_execute_plan(EsGetPlan(&tenant_owns_plan), &stream, NULL, read_only, 1);
	if (rc != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "could not check the tenant of a stream: %s", SPI_result_code_string(rc));
	owns = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	SPI_freetuptable(SPI_tuptable);
	return owns && !isnull;
}

/*
 * EsTenantCheckStream
 *		Raise insufficient_privilege, as the policy es_tenant's WITH CHECK
 *		on es.streams does, when tenancy applies to the caller and none of
 *		its tenants owns the stream.  Must be called inside SPI_connect.
 */
void
EsTenantCheckStream(Datum stream)
{
	if (!tenancy_applies() || tenant_owns(stream, false))
		return;

	/* core's wording for a WITH CHECK of a restrictive policy (execMain.c) */
	ereport(ERROR,
			(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
			 errmsg("new row violates row-level security policy \"%s\" for table \"%s\"",
					ES_TENANT_POLICY, "streams")));
}

/*
 * EsTenantCheckSubject
 *		The same for a data subject of crypto-shredding (crypto.c): a subject
 *		belongs to the tenant its id starts with ("acme/c-42" is acme's), as
 *		a stream does, and es_append (a personal field) and es_forget_subject
 *		refuse a subject of another tenant before they look up its key, with
 *		the error of the policy es_tenant on es.subject_keys: the same whether
 *		the subject has a key, was forgotten or was never used.  The key
 *		statements run as the table's owner, which the policy does not bind:
 *		this check is what keeps one tenant from forgetting (destroying the
 *		data of) or sharing the key of another tenant's subject.  Must be
 *		called inside SPI_connect.
 */
void
EsTenantCheckSubject(Datum subject)
{
	if (!tenancy_applies() || tenant_owns(subject, false))
		return;

	ereport(ERROR,
			(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
			 errmsg("new row violates row-level security policy \"%s\" for table \"%s\"",
					ES_TENANT_POLICY, "subject_keys")));
}

/*
 * EsTenantOwnsSubject
 *		For a reader that decrypts (crypto.c): does one of the caller's
 *		tenants own the data subject, or does tenancy not apply to it?  A
 *		reader leaves the markers of another tenant's subject as stored, as
 *		for a role that may not decrypt, without looking up the key: its
 *		ciphertext stays unreadable and its subjects' keys untold.
 *		AccessShareLock only (readers run on a hot standby too).  Inside SPI.
 */
bool
EsTenantOwnsSubject(Datum subject)
{
	return !tenancy_applies_lock(AccessShareLock) || tenant_owns(subject, true);
}

/*
 * EsTenantPoliciesOnly
 *		Are the tenancy policies (es_tenant and its permissive base) the only
 *		policies of rel (es.events)?  Then a row passes them exactly when one
 *		of the caller's tenants owns its stream: all the rows of a stream, or
 *		none, and a reader of one stream (stream_scan.c) may ask
 *		EsTenantOwnsStream once instead of running its statement under the
 *		policies.  A look at the relcache entry.
 */
bool
EsTenantPoliciesOnly(Relation rel)
{
	ListCell   *lc;
	bool		has_tenant = false;

	if (!rel->rd_rel->relrowsecurity || rel->rd_rsdesc == NULL)
		return false;
	foreach(lc, rel->rd_rsdesc->policies)
	{
		RowSecurityPolicy *policy = (RowSecurityPolicy *) lfirst(lc);

		if (strcmp(policy->policy_name, ES_TENANT_POLICY) == 0)
			has_tenant = true;
		else if (strcmp(policy->policy_name, ES_TENANT_BASE_POLICY) != 0)
			return false;
	}
	return has_tenant;
}

/*
 * EsTenantOwnsStream
 *		Does one of the caller's tenants own the stream (the rule of the
 *		policy es_tenant)?  Under SPI, with the active snapshot.
 */
bool
EsTenantOwnsStream(Datum stream)
{
	return tenant_owns(stream, true);
}

PG_FUNCTION_INFO_V1(es_current_tenants);

/*
 * es_current_tenants() RETURNS text[]
 *		The tenants the current role acts for: the tenant of every row of
 *		es.tenant_roles whose role it is a member of (pg_has_role MEMBER; a
 *		dropped role is no one's), '{}' for none.  The tenancy policies call
 *		it once per statement and table, es_append once more: the answer is
 *		kept for the rest of the top-level statement (same role, same
 *		transaction, same statement start), so an append asks es.tenant_roles
 *		once.  A change of es.tenant_roles or of role memberships is seen
 *		from the next statement on.
 */
Datum
es_current_tenants(PG_FUNCTION_ARGS)
{
	Oid			user = GetUserId();
	TimestampTz statement = GetCurrentStatementStartTimestamp();

	if (cached_tenants == NULL || cached_user != user || cached_lxid != MyProc->lxid ||
		cached_statement != statement)
	{
		Datum		d;
		bool		isnull;
		int			rc;

		cached_tenants = NULL;
		if (SPI_connect() != SPI_OK_CONNECT)
			elog(ERROR, "SPI_connect failed");
		rc = SPI_execute_plan(EsGetPlan(&current_tenants_plan), NULL, NULL, true, 1);
		if (rc != SPI_OK_SELECT || SPI_processed != 1)
			elog(ERROR, "could not read es.tenant_roles: %s", SPI_result_code_string(rc));
		d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
		if (isnull)
			elog(ERROR, "es.tenant_roles gave no tenant array");
		{
			MemoryContext old = MemoryContextSwitchTo(TopTransactionContext);

			cached_tenants = DatumGetArrayTypePCopy(d);
			MemoryContextSwitchTo(old);
		}
		SPI_finish();
		cached_user = user;
		cached_lxid = MyProc->lxid;
		cached_statement = statement;
	}
	PG_RETURN_ARRAYTYPE_P(DatumGetArrayTypePCopy(PointerGetDatum(cached_tenants)));
}
