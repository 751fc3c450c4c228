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
 * two saved plans: one inserts the outbox rows, the other, for each of
 * them, one delivery row per consumer group, reading the groups with a
 * snapshot taken under the lock on es.outbox (outbox_api.c explains why).
 * The guard triggers let each through (EsGuardedWrite, guard.c).  The outbox rows get
 * their positions from an identity sequence in batch order, under the
 * stream's row lock, so positions follow versions within a stream.  When
 * any delivery was written, EsNotifyRequest() (notify.c) arranges the
 * wake-up of the consumers at commit.  Nothing is written for an append
 * whose events no route selects, and nothing at all when there is no route.
 *
 * Routes are cached per backend by cache.c, which also owns their
 * invalidation: the statement trigger es_outbox_routes_changed (a thin entry
 * point into EsTableCacheTrigger) queues a relcache invalidation of
 * es.outbox_routes on every change.
 *
 * Memory: the route cache lives in its own context (cache.c); everything
 * else is allocated in the caller's SPI procedure context and released by
 * SPI_finish.
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
#include "utils/timestamp.h"
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

/* The routes, as the route cache holds them. */
typedef struct OutboxRoutes
{
	int			n;
	OutboxRoute *rows;
} OutboxRoutes;

static void *load_routes(Relation rel, Snapshot snap);

/* The per-backend route cache (cache.c). */
static EsTableCache routes_cache =
	ES_TABLE_CACHE("outbox_routes", "es_ext outbox routes", false, load_routes);

/* the routes as of the last EsOutboxActive (valid to the end of the transaction) */
static const OutboxRoutes *routes = NULL;
static Oid	outbox_relid = InvalidOid;
static Oid	deliveries_relid = InvalidOid;

/*
 * One routed event: its outbox row.  Returns the position.
 */
static EsPlan outbox_one_plan = {
	NULL,
	"INSERT INTO es.outbox AS o"
	"  (id, aggregatetype, aggregateid, type, payload, metadata, stream_version,"
	"   schema_version, global_position, created_at)"
	" VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
	" RETURNING o.position",
	10, {UUIDOID, TEXTOID, TEXTOID, TEXTOID, JSONBOID, JSONBOID, INT8OID, INT4OID, INT8OID,
		TIMESTAMPTZOID}
};

/* Several routed events of one append, as arrays in version order. */
static EsPlan outbox_many_plan = {
	NULL,
	"INSERT INTO es.outbox AS o"
	"  (id, aggregatetype, aggregateid, type, payload, metadata, stream_version,"
	"   schema_version, global_position, created_at)"
	" SELECT u.i, $2, $3, u.t, u.d, u.md, u.v, u.s, u.p, $10"
	"   FROM ROWS FROM (pg_catalog.unnest($1), pg_catalog.unnest($4),"
	"                   pg_catalog.unnest($5), pg_catalog.unnest($6),"
	"                   pg_catalog.unnest($7), pg_catalog.unnest($8),"
	"                   pg_catalog.unnest($9)) AS u(i, t, d, md, v, s, p)"
	" RETURNING o.position",
	10, {UUIDARRAYOID, TEXTOID, TEXTOID, TEXTARRAYOID, JSONBARRAYOID, JSONBARRAYOID,
		INT8ARRAYOID, INT4ARRAYOID, INT8ARRAYOID, TIMESTAMPTZOID}
};

/*
 * The deliveries of the rows just written ($1, their positions): one per
 * consumer group.  $2 is the stream id; stream_key is its hash, computed
 * here exactly as es_outbox_create_group's backfill does.  Run with a
 * snapshot taken under the lock on es.outbox (see EsOutboxAppend).
 */
static EsPlan deliveries_plan = {
	NULL,
	"INSERT INTO es.outbox_deliveries AS d (group_id, position, stream_key, visible_at)"
	" SELECT g.group_id, m.position, pg_catalog.hashtextextended($2, 0), $3"
	"   FROM pg_catalog.unnest($1) AS m(position), es.outbox_groups AS g",
	3, {INT8ARRAYOID, TEXTOID, TIMESTAMPTZOID}
};

/*
 * Citus (issue 16): the outbox is per node, and a stream's messages are in
 * the outbox of the node that held the stream when it was appended to.
 * After a shard move, a stream's older messages may still wait in the old
 * node's outbox while its new ones arrive here.  The first append here after
 * the move (es.streams.outbox_node names another node) holds its messages
 * back: their deliveries are visible at 'infinity', and the stream's later
 * messages queue behind them.  es_outbox_claim releases them once no other
 * node has an older message of the stream undelivered to the group
 * (EsOutboxReleaseHeld, outbox_api.c).
 */
static EsPlan outbox_node_plan = {
	NULL,
	"SELECT s.outbox_node FROM es.streams AS s WHERE s.stream_id OPERATOR(pg_catalog.=) $1",
	1, {TEXTOID}
};

static EsPlan set_outbox_node_plan = {
	NULL,
	"UPDATE es.streams AS s SET outbox_node = $2 WHERE s.stream_id OPERATOR(pg_catalog.=) $1",
	2, {TEXTOID, INT4OID}
};

/*
 * outbox_handoff
 *		Under the stream row lock: must this append's messages wait for
 *		another node's?  position is one of the events' positions: its
 *		range names this node's Citus group (es_node_ranges); version is the
 *		version of the first routed event.  Records this node as the
 *		stream's outbox node.
 */
static bool
outbox_handoff(text *stream, int64 position, int64 version)
{
	int32		node = (int32) (position >> 48);
	Datum		values[2];
	bool		isnull = true;
	int32		previous = 0;
	int			rc;

	values[0] = PointerGetDatum(stream);
	rc = SPI_execute_plan(EsGetPlan(&outbox_node_plan), values, NULL, false, 1);
	if (rc != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "could not read the outbox node of a stream: %s", SPI_result_code_string(rc));
	previous = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	if (!isnull && previous == node)
		return false;

	values[1] = Int32GetDatum(node);
	EsGuardedWrite(&set_outbox_node_plan, EsRelationOid("streams"), TRIGGER_EVENT_UPDATE,
				   values, NULL, InvalidSnapshot, SPI_OK_UPDATE);
	/* the stream's first event: no older message can exist anywhere */
	if (version <= 1)
		return false;
	/* none yet: messages from before es.distribute() are on the coordinator */
	return !isnull || node != 0;
}

/*
 * load_routes
 *		The route cache's loader (cache.c): read es.outbox_routes, rel, with
 *		snap into an OutboxRoutes allocated in the current memory context.
 */
static void *
load_routes(Relation rel, Snapshot snap)
{
	TupleDesc	desc = RelationGetDescr(rel);
	AttrNumber	att_category = EsTableCacheAttnum(rel, "category");
	AttrNumber	att_event_type = EsTableCacheAttnum(rel, "event_type");
	TableScanDesc scan;
	HeapTuple	tup;
	OutboxRoutes *result = palloc(sizeof(OutboxRoutes));
	OutboxRoute *rows;
	int			n = 0;
	int			max = 8;

	outbox_relid = EsRelationOid("outbox");
	deliveries_relid = EsRelationOid("outbox_deliveries");

	rows = palloc(sizeof(OutboxRoute) * max);
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
		d = heap_getattr(tup, att_category, desc, &isnull);
		if (!isnull)
		{
			rows[n].category = TextDatumGetCString(d);
			rows[n].category_len = strlen(rows[n].category);
		}
		d = heap_getattr(tup, att_event_type, desc, &isnull);
		if (!isnull)
		{
			rows[n].event_type = TextDatumGetCString(d);
			rows[n].event_type_len = strlen(rows[n].event_type);
		}
		n++;
	}
	table_endscan(scan);

	result->n = n;
	result->rows = rows;
	return result;
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
	routes = (const OutboxRoutes *) EsTableCacheGet(&routes_cache);
	return routes->n > 0;
}

/* Does a route select an event of this category and type? */
static bool
route_matches(const char *category, int category_len, text *type)
{
	const char *t = VARDATA_ANY(type);
	int			tlen = VARSIZE_ANY_EXHDR(type);
	int			i;

	for (i = 0; i < routes->n; i++)
	{
		const OutboxRoute *r = &routes->rows[i];

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
 *		position positions[i].  Takes no lock beyond those of the INSERTs
 *		(ROW EXCLUSIVE on es.outbox and es.outbox_deliveries).
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
	EsPlan	   *plan_desc;
	Datum	   *positions_out;
	Datum		dvalues[3];
	int			i;

	Assert(routes != NULL);

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

		plan_desc = &outbox_one_plan;
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

		plan_desc = &outbox_many_plan;
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

	/*
	 * The outbox rows, then their deliveries.  The first INSERT takes ROW
	 * EXCLUSIVE on es.outbox, which conflicts with the SHARE lock of
	 * es_outbox_create_group and es_outbox_drop_group; the groups are read
	 * with a snapshot taken after it (EsOutboxLockGroups), not with the
	 * transaction snapshot, which under REPEATABLE READ or SERIALIZABLE may
	 * predate a group created before this append: every group whose
	 * creation committed before this point gets the messages, and one
	 * created later waits for this transaction and backfills them.
	 */
	EsGuardedWrite(plan_desc, outbox_relid, TRIGGER_EVENT_INSERT, values, nulls,
				   InvalidSnapshot, SPI_OK_INSERT_RETURNING);
	positions_out = palloc(sizeof(Datum) * SPI_processed);
	for (i = 0; i < (int) SPI_processed; i++)
	{
		bool		isnull;

		positions_out[i] = SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1, &isnull);
	}
	dvalues[0] = PointerGetDatum(construct_array(positions_out, (int) SPI_processed, INT8OID,
												 sizeof(int64), FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
	dvalues[1] = PointerGetDatum(stream);
	dvalues[2] = recorded_at;
	if (EsDistributed() &&
		outbox_handoff(stream, positions[selected[0]], first_version + selected[0]))
		dvalues[2] = TimestampTzGetDatum(DT_NOEND);
	EsGuardedWrite(&deliveries_plan, deliveries_relid, TRIGGER_EVENT_INSERT, dvalues, NULL,
				   EsOutboxLockGroups(RowExclusiveLock), SPI_OK_INSERT);

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
 *		this transaction commits).  The mechanism is EsTableCacheTrigger
 *		(cache.c), shared with es_upcasters_changed.
 */
Datum
es_outbox_routes_changed(PG_FUNCTION_ARGS)
{
	return EsTableCacheTrigger(fcinfo, "es_outbox_routes_changed");
}
