/*-------------------------------------------------------------------------
 *
 * replica.c
 *	  es_ext in a database that receives es.events by logical replication:
 *	  the projections that fire for replicated events
 *	  (es_replica_projections), and the refusal of what cannot work there
 *	  (EsCheckNotSubscriber).
 *
 * A logical replication subscriber that has es_ext receives the origin's
 * events and streams (a publication of es.events and es.streams).  Its apply
 * worker runs with session_replication_role = replica, so ordinary triggers
 * -- es_ext's guards and the user's projections alike -- do not fire for the
 * rows it applies.  es_replica_projections(true) turns the projection
 * triggers (the user's enabled AFTER INSERT triggers on es.events) to ENABLE
 * ALWAYS, so that they keep the subscriber's read models as they keep the
 * origin's; es_replica_projections(false) turns them back to ENABLE (fire
 * for local writes only).  es_ext's own triggers are never changed: the
 * apply worker must write what es_append wrote on the origin, which the
 * guards would refuse.  Disabled triggers (a paused rebuild) are left alone.
 *
 * The apply worker runs with an empty search_path, and a trigger that fails
 * stops the replication: the worker exits, restarts and fails again on the
 * same transaction, forever.  So before it enables anything,
 * es_replica_projections checks every trigger that would fire for
 * replicated rows: that it is a row-level trigger (the apply worker fires
 * only those; statement-level ones fire only during the initial copy), and
 * that every function it runs pins its search_path (SET search_path): the
 * trigger function, or, for es_project, every handler named in the
 * trigger's arguments, which must also be schema-qualified since the worker
 * looks them up under its empty search_path.  A failed check refuses the
 * call before anything is changed.  SHARE ROW EXCLUSIVE on es.events, the
 * lock of CREATE TRIGGER and ALTER TABLE ... ENABLE TRIGGER, is held from
 * the checks to the end of the transaction, so no trigger is created or
 * switched in between.  The functions themselves can still be altered
 * later: the check holds for the definitions it saw.
 *
 * Where es.events is a subscription's target (pg_subscription_rel lists
 * it), its rows carry the origin's transaction ids and positions:
 * es_read_all cannot order them against this cluster's snapshots, and an
 * append here would mix this cluster's ids and positions with the origin's
 * and collide with the origin's next event of the stream, stopping the
 * replication.  EsCheckNotSubscriber refuses both.  It runs on every read of
 * the log and every append, so its answer is cached per backend and looked
 * up again only after an invalidation of the pg_subscription_rel syscache
 * (CREATE, ALTER or DROP SUBSCRIPTION, a table's sync state, DROP TABLE):
 * on the common path it costs one test of a static variable.
 *
 * Memory: the cached answer is an OID; everything else is allocated in the
 * caller's memory context.
 *
 * src/replica.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "access/table.h"
#include "catalog/pg_proc.h"
#include "catalog/pg_subscription.h"
#include "catalog/pg_subscription_rel.h"
#include "catalog/pg_trigger.h"
#include "catalog/pg_type.h"
#include "commands/trigger.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "parser/parse_func.h"
#include "utils/acl.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/catcache.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/regproc.h"
#include "utils/rel.h"
#include "utils/syscache.h"
#include "utils/tuplestore.h"

#include "es_ext.h"

/* ----------------------------------------------------------------
 * Is es.events a subscription's target?
 * ----------------------------------------------------------------
 */

/* the cached answer: a subscription replicating es.events, or InvalidOid */
static Oid	events_subscription = InvalidOid;
static bool events_subscription_known = false;
static uint64 subscription_invalidations = 0;
static bool subscription_callback_registered = false;

static void
subscription_rel_callback(Datum arg, int cacheid, uint32 hashvalue)
{
	events_subscription_known = false;
	subscription_invalidations++;
}

/*
 * find_events_subscription
 *		A subscription of this database that replicates es.events into it, or
 *		InvalidOid (also when es_ext is not installed).
 */
static Oid
find_events_subscription(void)
{
	Oid			nsp = get_namespace_oid("es", true);
	Oid			relid;
	Oid			subid = InvalidOid;
	CatCList   *list;

	if (!OidIsValid(nsp))
		return InvalidOid;
	relid = get_relname_relid("events", nsp);
	if (!OidIsValid(relid))
		return InvalidOid;

	/* pg_subscription_rel rows of the table, any subscription */
	list = SearchSysCacheList1(SUBSCRIPTIONRELMAP, ObjectIdGetDatum(relid));
	if (list->n_members > 0)
		subid = ((Form_pg_subscription_rel) GETSTRUCT(&list->members[0]->tuple))->srsubid;
	ReleaseSysCacheList(list);
	return subid;
}

/*
 * events_subscription_cached
 *		The subscription that replicates es.events into this database, or
 *		InvalidOid: cached per backend until pg_subscription_rel changes.
 *		A lookup during which an invalidation arrived is not trusted: the
 *		next call looks again.
 */
static Oid
events_subscription_cached(void)
{
	if (likely(events_subscription_known))
		return events_subscription;

	if (!subscription_callback_registered)
	{
		CacheRegisterSyscacheCallback(SUBSCRIPTIONRELMAP, subscription_rel_callback, (Datum) 0);
		subscription_callback_registered = true;
	}
	{
		uint64		seen = subscription_invalidations;
		Oid			subid = find_events_subscription();

		events_subscription = subid;
		events_subscription_known = (seen == subscription_invalidations);
		return subid;
	}
}

/*
 * EsCheckNotSubscriber
 *		Refuse a read of the global log (ES_LOG_READ_ALL) or an append
 *		(ES_LOG_APPEND) in a database where es.events is a logical
 *		replication subscription's target, with SQLSTATE 55000.
 */
void
EsCheckNotSubscriber(EsLogAccess access)
{
	Oid			subid = events_subscription_cached();
	char	   *subname;

	if (likely(!OidIsValid(subid)))
		return;

	subname = get_subscription_name(subid, true);
	if (subname == NULL)
		subname = psprintf("%u", subid);

	if (access == ES_LOG_READ_ALL)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("cannot read the global log on a logical replication subscriber"),
				 errdetail("Table \"es.events\" is replicated into this database by subscription \"%s\": its events carry the origin's transaction ids, which cannot be ordered against this cluster's snapshots.",
						   subname),
				 errhint("Read the global log on the origin, or read single streams here with es_read_stream.")));
	ereport(ERROR,
			(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
			 errmsg("cannot append events on a logical replication subscriber"),
			 errdetail("Table \"es.events\" is replicated into this database by subscription \"%s\": an append here would mix this cluster's transaction ids and global positions with the origin's, and the origin's next event of the stream would stop the replication.",
					   subname),
			 errhint("Append on the origin.")));
}

/* ----------------------------------------------------------------
 * es_replica_projections: projections for replicated events
 * ----------------------------------------------------------------
 */

/*
 * is_projection
 *		An enabled AFTER INSERT trigger on es.events that is not es_ext's own.
 */
static bool
is_projection(const Trigger *tg)
{
	return TRIGGER_FOR_AFTER(tg->tgtype) && TRIGGER_FOR_INSERT(tg->tgtype) &&
		tg->tgenabled != TRIGGER_DISABLED && !EsOwnTrigger(tg);
}

/*
 * pins_search_path
 *		Does function fn have a SET search_path clause?
 */
static bool
pins_search_path(Oid fn)
{
	HeapTuple	tup = SearchSysCache1(PROCOID, ObjectIdGetDatum(fn));
	Datum		config;
	bool		isnull;
	bool		found = false;

	if (!HeapTupleIsValid(tup))
		elog(ERROR, "cache lookup failed for function %u", fn);
	config = SysCacheGetAttr(PROCOID, tup, Anum_pg_proc_proconfig, &isnull);
	if (!isnull)
	{
		Datum	   *items;
		bool	   *nulls;
		int			n;
		int			i;

		deconstruct_array(DatumGetArrayTypeP(config), TEXTOID, -1, false, TYPALIGN_INT,
						  &items, &nulls, &n);
		for (i = 0; i < n && !found; i++)
			found = !nulls[i] &&
				strncmp(TextDatumGetCString(items[i]), "search_path=", strlen("search_path=")) == 0;
	}
	ReleaseSysCache(tup);
	return found;
}

/*
 * check_pinned
 *		Refuse trigger tg if function fn, which it runs (as its trigger
 *		function, or as an es_project handler), does not pin search_path.
 */
static void
check_pinned(Oid fn, const Trigger *tg, bool handler)
{
	char	   *sig;

	if (pins_search_path(fn))
		return;
	sig = format_procedure_qualified(fn);
	ereport(ERROR,
			(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
			 errmsg("function %s does not set search_path", sig),
			 errdetail("Trigger \"%s\" on table \"es.events\" %s, and a subscription's apply worker runs with an empty search_path: it would fail on a replicated event and retry it forever.",
					   tg->tgname, handler ? "calls it as a projection handler" : "runs it"),
			 errhint("Pin it with ALTER FUNCTION %s SET search_path = <the schemas it uses>, pg_temp, then call es_replica_projections again.",
					 sig)));
}

/*
 * check_handlers
 *		The handlers named by es_project trigger tg: schema-qualified, taking
 *		one es.events (rowtype), and pinning search_path.
 */
static void
check_handlers(const Trigger *tg, Oid rowtype)
{
	int			nhandlers;
	int			i;

	if (tg->tgnargs < 1 || (tg->tgnargs > 1 && tg->tgnargs % 2 != 0))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("trigger \"%s\" passes %d arguments to es_project()", tg->tgname, tg->tgnargs),
				 errhint("Pass one handler, es_project('handler'), or pairs of event type and handler, es_project('TypeA', 'on_a', 'TypeB', 'on_b').")));

	nhandlers = tg->tgnargs == 1 ? 1 : tg->tgnargs / 2;
	for (i = 0; i < nhandlers; i++)
	{
		const char *handler = tg->tgnargs == 1 ? tg->tgargs[0] : tg->tgargs[2 * i + 1];
		List	   *names = stringToQualifiedNameList(handler);
		Oid			fn;

		if (list_length(names) < 2)
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("projection handler \"%s\" of trigger \"%s\" is not schema-qualified",
							handler, tg->tgname),
					 errdetail("A subscription's apply worker looks handlers up with an empty search_path."),
					 errhint("Create the trigger again with schema-qualified handler names, such as 'myschema.%s'.",
							 handler)));
		fn = LookupFuncName(names, 1, &rowtype, true);
		if (!OidIsValid(fn))
			ereport(ERROR,
					(errcode(ERRCODE_UNDEFINED_FUNCTION),
					 errmsg("function %s(es.events) does not exist", handler),
					 errdetail("Trigger \"%s\" names it as a projection handler.", tg->tgname),
					 errhint("A handler takes one argument of type es.events.")));
		check_pinned(fn, tg, true);
	}
}

/*
 * check_replica_projection
 *		Refuse projection trigger tg on es.events (rel) if it cannot run for
 *		replicated rows: statement-level, or running a function that does not
 *		pin search_path.
 */
static void
check_replica_projection(Relation rel, const Trigger *tg)
{
	char	   *fname = get_func_name(tg->tgfoid);

	if (!TRIGGER_FOR_ROW(tg->tgtype))
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("statement-level trigger \"%s\" on table \"es.events\" cannot project replicated events",
						tg->tgname),
				 errdetail("Logical replication fires only row-level triggers for the rows it applies, statement-level ones only during the initial copy."),
				 errhint("Write the projection as a FOR EACH ROW trigger, or disable this trigger here: ALTER TABLE es.events DISABLE TRIGGER %s.",
						 quote_identifier(tg->tgname))));

	if (fname != NULL && strcmp(fname, "es_project") == 0 &&
		get_func_namespace(tg->tgfoid) == EsSchemaOid())
		check_handlers(tg, RelationGetDescr(rel)->tdtypeid);
	else
		check_pinned(tg->tgfoid, tg, false);
}

PG_FUNCTION_INFO_V1(es_replica_projections);

/*
 * es_replica_projections(enable boolean) RETURNS SETOF name
 *
 * enable true: checks every enabled projection trigger on es.events (see
 * the file header), then sets those not firing ALWAYS yet to ENABLE ALWAYS.
 * enable false: sets the projection triggers that fire ALWAYS or on replica
 * back to ENABLE.  Returns the names of the triggers it changed, in name
 * order.  The caller must own es.events; takes SHARE ROW EXCLUSIVE on it
 * until the end of the transaction.
 */
Datum
es_replica_projections(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	bool		enable;
	Oid			relid;
	Relation	rel;
	TriggerDesc *td;
	List	   *changed = NIL;
	ListCell   *lc;
	int			i;

	EsCheckWritable("es_replica_projections()");

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("enable cannot be null"),
				 errhint("Pass true to project replicated events, false to stop.")));
	enable = PG_GETARG_BOOL(0);

	relid = EsRelationOid("events");
	if (!pg_class_ownercheck(relid, GetUserId()))
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("must be owner of table \"es.events\""),
				 errdetail("Only the owner of a table may change when its triggers fire."),
				 errhint("Call it as the owner of es.events, the role that created the extension.")));

	InitMaterializedSRF(fcinfo, MAT_SRF_USE_EXPECTED_DESC);

	/* check everything first: a refusal changes nothing */
	rel = table_open(relid, ShareRowExclusiveLock);
	td = rel->trigdesc;
	for (i = 0; td != NULL && i < td->numtriggers; i++)
	{
		Trigger    *tg = &td->triggers[i];

		if (!is_projection(tg))
			continue;
		if (enable)
		{
			check_replica_projection(rel, tg);
			if (tg->tgenabled != TRIGGER_FIRES_ALWAYS)
				changed = lappend(changed, pstrdup(tg->tgname));
		}
		else if (tg->tgenabled == TRIGGER_FIRES_ALWAYS || tg->tgenabled == TRIGGER_FIRES_ON_REPLICA)
			changed = lappend(changed, pstrdup(tg->tgname));
	}
	table_close(rel, NoLock);

	if (changed != NIL)
	{
		if (SPI_connect() != SPI_OK_CONNECT)
			elog(ERROR, "SPI_connect failed");
		foreach(lc, changed)
		{
			const char *tgname = (const char *) lfirst(lc);
			int			rc;

			rc = SPI_execute(psprintf("ALTER TABLE es.events ENABLE %sTRIGGER %s",
									  enable ? "ALWAYS " : "", quote_identifier(tgname)),
							 false, 0);
			if (rc != SPI_OK_UTILITY)
				elog(ERROR, "could not change trigger \"%s\": %s", tgname, SPI_result_code_string(rc));
		}
		SPI_finish();
	}

	foreach(lc, changed)
	{
		NameData	name;
		Datum		value;
		bool		isnull = false;

		namestrcpy(&name, (const char *) lfirst(lc));
		value = NameGetDatum(&name);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, &value, &isnull);
	}
	return (Datum) 0;
}
