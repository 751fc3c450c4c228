/*-------------------------------------------------------------------------
 *
 * outbox.c
 *	  The transactional outbox: what es_append writes, in the appending
 *	  transaction, for the events that a route selects.
 *
 * es_append calls EsOutboxActive() after it inserted a batch; only when some
 * route exists does it build the batch's EsOutboxEvent array and call
 * EsOutboxAppend().  That picks the events a route matches (by the stream's
 * category and the event type; NULL in a route matches anything) and runs
 * one saved plan: a data-modifying CTE that inserts the outbox rows and, for
 * each of them, one delivery row per consumer group.  The outbox rows get
 * their positions from an identity sequence in batch order, under the
 * stream's row lock, so positions follow versions within a stream.  When
 * any delivery was written, EsNotifyRequest() (notify.c) arranges the
 * wake-up of the consumers at commit.  Nothing is written for an append
 * whose events no route selects, and nothing at all when there is no route.
 *
 * Routes are cached per backend.  The cache is loaded on first use with a
 * fresh snapshot and dropped by a relcache invalidation of es.outbox_routes:
 * the statement trigger es_outbox_routes_changed queues one on every change,
 * delivered to this backend at its next command and to the others at
 * commit.  DROP EXTENSION invalidates it too (the relation goes away).
 *
 * Memory: the cache lives in its own context under TopMemoryContext,
 * replaced as a whole on reload; everything else is allocated in the
 * caller's SPI procedure context and released by SPI_finish.
 *
 * src/outbox.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/heapam.h"
#include "access/table.h"
#include "access/tableam.h"
#include "catalog/pg_type.h"
#include "commands/trigger.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/inval.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"
#include "utils/uuid.h"

#include "es_ext.h"

/* One route: NULL matches any category / any event type. */
typedef struct OutboxRoute
{
	char	   *category;
	int			category_len;
	char	   *event_type;
	int			event_type_len;
} OutboxRoute;

/* The per-backend route cache. */
static bool routes_valid = false;
static bool routes_callback_registered = false;
static Oid	routes_relid = InvalidOid;
static Oid	outbox_relid = InvalidOid;
static MemoryContext routes_cxt = NULL;
static OutboxRoute *routes = NULL;
static int	nroutes = 0;

/* es.outbox_routes columns read by the cache (1-based) */
#define Anum_outbox_routes_category		1
#define Anum_outbox_routes_event_type	2

/*
 * One routed event: outbox row plus one delivery per group.  $3 is the
 * stream id; the deliveries' stream_key is its hash, computed here exactly
 * as es_outbox_create_group's backfill does.
 */
static EsPlan outbox_one_plan = {
	NULL,
	"WITH m AS ("
	" INSERT INTO es.outbox AS o"
	"  (id, aggregatetype, aggregateid, type, payload, metadata, stream_version,"
	"   schema_version, global_position, created_at)"
	" VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
	" RETURNING o.position)"
	" INSERT INTO es.outbox_deliveries AS d (group_id, position, stream_key, visible_at)"
	" SELECT g.group_id, m.position, pg_catalog.hashtextextended($3, 0), $10"
	"   FROM m, es.outbox_groups AS g",
	10, {UUIDOID, TEXTOID, TEXTOID, TEXTOID, JSONBOID, JSONBOID, INT8OID, INT4OID, INT8OID,
		TIMESTAMPTZOID}
};

/* Several routed events of one append, as arrays in version order. */
static EsPlan outbox_many_plan = {
	NULL,
	"WITH m AS ("
	" INSERT INTO es.outbox AS o"
	"  (id, aggregatetype, aggregateid, type, payload, metadata, stream_version,"
	"   schema_version, global_position, created_at)"
	" SELECT u.i, $2, $3, u.t, u.d, u.md, u.v, u.s, u.p, $10"
	"   FROM ROWS FROM (pg_catalog.unnest($1), pg_catalog.unnest($4),"
	"                   pg_catalog.unnest($5), pg_catalog.unnest($6),"
	"                   pg_catalog.unnest($7), pg_catalog.unnest($8),"
	"                   pg_catalog.unnest($9)) AS u(i, t, d, md, v, s, p)"
	" RETURNING o.position)"
	" INSERT INTO es.outbox_deliveries AS d (group_id, position, stream_key, visible_at)"
	" SELECT g.group_id, m.position, pg_catalog.hashtextextended($3, 0), $10"
	"   FROM m, es.outbox_groups AS g",
	10, {UUIDARRAYOID, TEXTOID, TEXTOID, TEXTARRAYOID, JSONBARRAYOID, JSONBARRAYOID,
		INT8ARRAYOID, INT4ARRAYOID, INT8ARRAYOID, TIMESTAMPTZOID}
};

static void
routes_relcache_callback(Datum arg, Oid relid)
{
	if (relid == InvalidOid || relid == routes_relid)
		routes_valid = false;
}

/*
 * read_routes
 *		Read es.outbox_routes with a fresh snapshot into an array allocated
 *		in cxt; returns the number of routes.  Marks the cache valid before
 *		taking the snapshot: an invalidation that arrives from then on comes
 *		from a commit that this snapshot may miss, and marks it stale again.
 */
static int
read_routes(MemoryContext cxt, OutboxRoute **result)
{
	Oid			relid = EsRelationOid("outbox_routes");
	MemoryContext oldcxt;
	Relation	rel;
	TupleDesc	desc;
	Snapshot	snap;
	TableScanDesc scan;
	HeapTuple	tup;
	OutboxRoute *rows;
	int			n = 0;
	int			max = 8;

	outbox_relid = EsRelationOid("outbox");

	/* opening the table processes pending invalidations */
	rel = table_open(relid, AccessShareLock);
	routes_relid = relid;
	routes_valid = true;

	oldcxt = MemoryContextSwitchTo(cxt);
	desc = RelationGetDescr(rel);
	rows = palloc(sizeof(OutboxRoute) * max);
	snap = RegisterSnapshot(GetLatestSnapshot());
	scan = table_beginscan(rel, snap, 0, NULL);
	while ((tup = heap_getnext(scan, ForwardScanDirection)) != NULL)
	{
		bool		isnull;
		Datum		d;

		if (n == max)
		{
			max *= 2;
			rows = repalloc(rows, sizeof(OutboxRoute) * max);
		}
		memset(&rows[n], 0, sizeof(OutboxRoute));
		d = heap_getattr(tup, Anum_outbox_routes_category, desc, &isnull);
		if (!isnull)
		{
			rows[n].category = TextDatumGetCString(d);
			rows[n].category_len = strlen(rows[n].category);
		}
		d = heap_getattr(tup, Anum_outbox_routes_event_type, desc, &isnull);
		if (!isnull)
		{
			rows[n].event_type = TextDatumGetCString(d);
			rows[n].event_type_len = strlen(rows[n].event_type);
		}
		n++;
	}
	table_endscan(scan);
	UnregisterSnapshot(snap);
	MemoryContextSwitchTo(oldcxt);
	table_close(rel, AccessShareLock);

	*result = rows;
	return n;
}

/*
 * load_routes
 *		Load the route cache into a new context and make it current; the
 *		previous one is freed.  On error the cache is left invalid.
 */
static void
load_routes(void)
{
	MemoryContext cxt;
	OutboxRoute *volatile rows = NULL;
	volatile int n = 0;

	if (!routes_callback_registered)
	{
		CacheRegisterRelcacheCallback(routes_relcache_callback, (Datum) 0);
		routes_callback_registered = true;
	}

	cxt = AllocSetContextCreate(TopMemoryContext, "es_ext outbox routes",
								ALLOCSET_SMALL_SIZES);
	PG_TRY();
	{
		OutboxRoute *r;

		n = read_routes(cxt, &r);
		rows = r;
	}
	PG_CATCH();
	{
		routes_valid = false;
		MemoryContextDelete(cxt);
		PG_RE_THROW();
	}
	PG_END_TRY();

	if (routes_cxt != NULL)
		MemoryContextDelete(routes_cxt);
	routes_cxt = cxt;
	routes = rows;
	nroutes = n;
}

/*
 * EsOutboxActive
 *		True when some outbox route exists, i.e. an append may have to write
 *		to the outbox.  Loads the route cache when needed (inside a
 *		transaction).
 */
bool
EsOutboxActive(void)
{
	if (!routes_valid)
		load_routes();
	return nroutes > 0;
}

/* Does a route select an event of this category and type? */
static bool
route_matches(const char *category, int category_len, text *type)
{
	const char *t = VARDATA_ANY(type);
	int			tlen = VARSIZE_ANY_EXHDR(type);
	int			i;

	for (i = 0; i < nroutes; i++)
	{
		OutboxRoute *r = &routes[i];

		if (r->category != NULL &&
			(r->category_len != category_len || memcmp(r->category, category, category_len) != 0))
			continue;
		if (r->event_type != NULL &&
			(r->event_type_len != tlen || memcmp(r->event_type, t, tlen) != 0))
			continue;
		return true;
	}
	return false;
}

/*
 * EsOutboxAppend
 *		Write the routed events of an append to the outbox, with one delivery
 *		per consumer group, and ask for the consumers' wake-up when any
 *		delivery was written.  Must be called inside SPI, after the events
 *		were inserted: events[i] is version first_version + i, at global
 *		position positions[i].  Takes no lock beyond those of the INSERTs.
 */
void
EsOutboxAppend(text *stream, int n, int64 first_version, const int64 *positions,
			   const EsOutboxEvent *events, Datum recorded_at)
{
	const char *sid = VARDATA_ANY(stream);
	int			sid_len = VARSIZE_ANY_EXHDR(stream);
	const char *dash = memchr(sid, '-', sid_len);
	int			category_len = dash ? (int) (dash - sid) : sid_len;
	int		   *selected;
	int			nsel = 0;
	Datum		values[10];
	char		nulls[10];
	SPIPlanPtr	plan;
	int			rc;
	int			i;

	Assert(routes_valid);

	selected = palloc(sizeof(int) * n);
	for (i = 0; i < n; i++)
		if (route_matches(sid, category_len, events[i].type))
			selected[nsel++] = i;
	if (nsel == 0)
		return;

	memset(nulls, ' ', sizeof(nulls));
	values[1] = PointerGetDatum(cstring_to_text_with_len(sid, category_len));
	values[2] = PointerGetDatum(stream);
	values[9] = recorded_at;

	if (nsel == 1)
	{
		const EsOutboxEvent *ev = &events[selected[0]];

		plan = EsGetPlan(&outbox_one_plan);
		values[0] = ev->id;
		values[3] = PointerGetDatum(ev->type);
		values[4] = PointerGetDatum(ev->data);
		if (ev->metadata != NULL)
			values[5] = PointerGetDatum(ev->metadata);
		else
			nulls[5] = 'n';
		values[6] = Int64GetDatum(first_version + selected[0]);
		values[7] = Int32GetDatum(ev->schema_version);
		values[8] = Int64GetDatum(positions[selected[0]]);
	}
	else
	{
		Datum	   *ids = palloc(sizeof(Datum) * nsel);
		Datum	   *types = palloc(sizeof(Datum) * nsel);
		Datum	   *datas = palloc(sizeof(Datum) * nsel);
		Datum	   *metas = palloc(sizeof(Datum) * nsel);
		bool	   *metanulls = palloc(sizeof(bool) * nsel);
		Datum	   *versions = palloc(sizeof(Datum) * nsel);
		Datum	   *schemas = palloc(sizeof(Datum) * nsel);
		Datum	   *gpos = palloc(sizeof(Datum) * nsel);
		int			dims[1];
		int			lbs[1];

		for (i = 0; i < nsel; i++)
		{
			const EsOutboxEvent *ev = &events[selected[i]];

			ids[i] = ev->id;
			types[i] = PointerGetDatum(ev->type);
			datas[i] = PointerGetDatum(ev->data);
			metas[i] = PointerGetDatum(ev->metadata);
			metanulls[i] = (ev->metadata == NULL);
			versions[i] = Int64GetDatum(first_version + selected[i]);
			schemas[i] = Int32GetDatum(ev->schema_version);
			gpos[i] = Int64GetDatum(positions[selected[i]]);
		}
		dims[0] = nsel;
		lbs[0] = 1;

		plan = EsGetPlan(&outbox_many_plan);
		values[0] = PointerGetDatum(construct_array(ids, nsel, UUIDOID, UUID_LEN, false, TYPALIGN_CHAR));
		values[3] = PointerGetDatum(construct_array(types, nsel, TEXTOID, -1, false, TYPALIGN_INT));
		values[4] = PointerGetDatum(construct_array(datas, nsel, JSONBOID, -1, false, TYPALIGN_INT));
		values[5] = PointerGetDatum(construct_md_array(metas, metanulls, 1, dims, lbs,
													   JSONBOID, -1, false, TYPALIGN_INT));
		values[6] = PointerGetDatum(construct_array(versions, nsel, INT8OID, sizeof(int64),
													FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
		values[7] = PointerGetDatum(construct_array(schemas, nsel, INT4OID, sizeof(int32),
													true, TYPALIGN_INT));
		values[8] = PointerGetDatum(construct_array(gpos, nsel, INT8OID, sizeof(int64),
													FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
	}

	/* the guard of es.outbox lets this one INSERT through */
	EsAllowNextWrite(outbox_relid, TRIGGER_EVENT_INSERT);
	rc = SPI_execute_plan(plan, values, nulls, false, 0);
	EsClearAllowedWrite();
	if (rc != SPI_OK_INSERT)
		elog(ERROR, "could not write the outbox: %s", SPI_result_code_string(rc));

	/* no group, no delivery: nobody to wake (Debezium reads the WAL) */
	if (SPI_processed > 0)
		EsNotifyRequest();
}

PG_FUNCTION_INFO_V1(es_outbox_routes_changed);

/*
 * es_outbox_routes_changed
 *		AFTER ... FOR EACH STATEMENT trigger on es.outbox_routes: queue a
 *		relcache invalidation of the table, so that every backend reloads
 *		its cached routes (this one at its next command, the others when
 *		this transaction commits).
 */
Datum
es_outbox_routes_changed(PG_FUNCTION_ARGS)
{
	TriggerData *trigdata = (TriggerData *) fcinfo->context;

	if (!CALLED_AS_TRIGGER(fcinfo))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("es_outbox_routes_changed() must be called as a trigger")));
	if (!TRIGGER_FIRED_FOR_STATEMENT(trigdata->tg_event) ||
		!TRIGGER_FIRED_AFTER(trigdata->tg_event))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("es_outbox_routes_changed() must be fired AFTER ... FOR EACH STATEMENT")));

	CacheInvalidateRelcache(trigdata->tg_relation);
	return PointerGetDatum(NULL);	/* ignored for statement triggers */
}
