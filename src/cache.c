/*-------------------------------------------------------------------------
 *
 * cache.c
 *	  Per-backend caches of es_ext's own catalog tables (the outbox routes,
 *	  outbox.c; the upcaster registry, upcast.c), and the trigger that
 *	  invalidates them.  One mechanism for both.
 *
 * An EsTableCache names a table of schema es and a loader.  EsTableCacheGet
 * returns the loaded data, loading it first when there is none or it is
 * stale.  A load opens the table (which processes pending invalidations),
 * takes a fresh snapshot (so a REPEATABLE READ transaction sees changes
 * committed after it started, as it sees DDL) and calls the loader with the
 * table and the snapshot, in a new memory context.
 *
 * Invalidation: the statement trigger on each cached table (the SQL
 * functions es_outbox_routes_changed and es_upcasters_changed, both through
 * EsTableCacheTrigger) queues a relcache invalidation of the table, which
 * reaches this backend at its next command and every other backend at
 * commit; DROP EXTENSION invalidates too (the relation goes away).  A cache
 * that reads function definitions (watch_functions) is also made stale by
 * any pg_proc syscache invalidation.  The callbacks only mark a cache stale
 * and count themselves: a load during which one arrived leaves the cache
 * stale (that invalidation may come from a commit the load's snapshot did
 * not see), as does a load that failed; the next reader reloads.
 *
 * Memory: the current data of a cache lives in its own context under
 * TopMemoryContext.  A reload does not free the data it replaces, since a
 * caller up the stack (a reducer that reads a stream inside a fold) may still
 * use it: the old context is retired and freed at the end of the
 * transaction.  A load is built under the retired context too, so an error
 * halfway leaves nothing behind after the transaction.
 *
 * src/cache.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/table.h"
#include "access/xact.h"
#include "commands/trigger.h"
#include "fmgr.h"
#include "parser/parse_relation.h"
#include "utils/inval.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"
#include "utils/syscache.h"

#include "es_ext.h"

/* every cache loaded so far in this backend */
static EsTableCache *caches = NULL;
static MemoryContext retired_cxt = NULL;
static bool callbacks_registered = false;

static void
cache_relcache_callback(Datum arg, Oid relid)
{
	EsTableCache *c;

	for (c = caches; c != NULL; c = c->next)
		if (relid == InvalidOid || relid == c->relid)
		{
			c->valid = false;
			c->invalidations++;
		}
}

static void
cache_proc_callback(Datum arg, int cacheid, uint32 hashvalue)
{
	EsTableCache *c;

	for (c = caches; c != NULL; c = c->next)
		if (c->watch_functions)
		{
			c->valid = false;
			c->invalidations++;
		}
}

static void
cache_xact_callback(XactEvent event, void *arg)
{
	switch (event)
	{
		case XACT_EVENT_COMMIT:
		case XACT_EVENT_PARALLEL_COMMIT:
		case XACT_EVENT_ABORT:
		case XACT_EVENT_PARALLEL_ABORT:
		case XACT_EVENT_PREPARE:
			MemoryContextReset(retired_cxt);
			break;
		default:
			break;
	}
}

/*
 * load_cache
 *		Load cache with a fresh snapshot into a new context and make it
 *		current; the previous data is retired (freed at transaction end).
 *		Takes AccessShareLock on the table while the loader runs.
 */
static void
load_cache(EsTableCache *cache)
{
	/* under Citus, the placement of the reference table here (citus.c) */
	Oid			relid = EsLocalPlacement(EsRelationOid(cache->relname));
	MemoryContext cxt;
	MemoryContext oldcxt;
	Relation	rel;
	Snapshot	snap;
	uint64		seen;
	void	   *data;

	if (!callbacks_registered)
	{
		retired_cxt = AllocSetContextCreate(TopMemoryContext,
											"es_ext retired table caches",
											ALLOCSET_SMALL_SIZES);
		CacheRegisterRelcacheCallback(cache_relcache_callback, (Datum) 0);
		CacheRegisterSyscacheCallback(PROCOID, cache_proc_callback, (Datum) 0);
		RegisterXactCallback(cache_xact_callback, NULL);
		callbacks_registered = true;
	}
	if (!cache->linked)
	{
		cache->next = caches;
		caches = cache;
		cache->linked = true;
	}

	cxt = AllocSetContextCreate(retired_cxt, "es_ext table cache", ALLOCSET_SMALL_SIZES);
	MemoryContextSetIdentifier(cxt, cache->cxt_name);
	oldcxt = MemoryContextSwitchTo(cxt);

	/*
	 * Opening the table processes pending invalidations.  Count the ones
	 * seen before taking the snapshot: one that arrives from now on (even
	 * while the loader looks up functions) may come from a commit that this
	 * snapshot does not see, and leaves the new data stale.
	 */
	rel = table_open(relid, AccessShareLock);
	cache->relid = relid;
	seen = cache->invalidations;

	snap = RegisterSnapshot(GetLatestSnapshot());
	data = cache->load(rel, snap);
	UnregisterSnapshot(snap);
	table_close(rel, AccessShareLock);

	MemoryContextSwitchTo(oldcxt);

	/* make it current; retire the previous one */
	MemoryContextSetParent(cxt, TopMemoryContext);
	if (cache->cxt != NULL)
		MemoryContextSetParent(cache->cxt, retired_cxt);
	cache->cxt = cxt;
	cache->data = data;
	cache->valid = (cache->invalidations == seen);
}

/*
 * EsTableCacheGet
 *		The current data of cache, loaded first when stale (see the file
 *		header).  Must run inside a transaction.  The result stays usable
 *		until the end of the transaction, even if the cache reloads.
 */
void *
EsTableCacheGet(EsTableCache *cache)
{
	if (cache->cxt == NULL || !cache->valid)
		load_cache(cache);
	return cache->data;
}

/*
 * EsTableCacheAttnum
 *		Attribute number of column name of the cached table rel, looked up by
 *		name; an internal error when it does not exist.
 */
AttrNumber
EsTableCacheAttnum(Relation rel, const char *name)
{
	AttrNumber	attnum = attnameAttNum(rel, name, false);

	if (attnum == InvalidAttrNumber)
		elog(ERROR, "column \"%s\" of es.%s does not exist", name,
			 RelationGetRelationName(rel));
	return attnum;
}

/*
 * EsTableCacheTrigger
 *		The body of the invalidation triggers of the cached tables: an
 *		AFTER ... FOR EACH STATEMENT trigger that queues a relcache
 *		invalidation of its table, delivered to every backend at commit (and
 *		to this one at the next command), so that their caches reload.
 *		Covers direct writes as well as the es_* functions.  fname is the SQL
 *		name of the trigger function, for the error messages.
 */
Datum
EsTableCacheTrigger(FunctionCallInfo fcinfo, const char *fname)
{
	TriggerData *trigdata = (TriggerData *) fcinfo->context;

	if (!CALLED_AS_TRIGGER(fcinfo))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("%s() must be called as a trigger", fname)));
	if (!TRIGGER_FIRED_FOR_STATEMENT(trigdata->tg_event) ||
		!TRIGGER_FIRED_AFTER(trigdata->tg_event))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("%s() must be fired AFTER ... FOR EACH STATEMENT", fname)));

	CacheInvalidateRelcache(trigdata->tg_relation);
	return PointerGetDatum(NULL);	/* ignored for statement triggers */
}
