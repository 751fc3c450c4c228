/*-------------------------------------------------------------------------
 *
 * rebuild.c
 *	  Rebuilds of an inline projection into a shadow copy of its read model
 *	  (blue-green): es_rebuild_shadow_batch, the step that
 *	  es_rebuild_projection(..., read_model => ...) runs once per committed
 *	  batch and once more to switch.
 *
 * The read model of the projection lives in a schema of its own (the "read
 * model", e.g. orders_read); the procedure cloned each of its tables into a
 * shadow schema (es.projection_status.shadow) and keeps the projection's
 * trigger enabled, so the live tables stay current.  Each batch replays
 * events into the shadow by renaming the two schemas inside the batch's own,
 * uncommitted transaction: the live schema to a temporary name
 * ("es_live_..."), the shadow to the read model's name.  Handlers name their
 * tables by schema (or find them through their own search_path), so in this
 * session they resolve to the shadow's tables; every other session keeps
 * seeing the committed names and is never blocked (renaming a schema updates
 * its pg_namespace row and takes no lock on the tables or on the schema).  A
 * rename sends a namespace syscache invalidation, which resets every cached
 * plan of the session (plancache.c), so a PL/pgSQL handler plans again in
 * each batch.  Before committing, the batch renames the schemas back.
 *
 * Defence in depth: the batch compares the transaction's statistics counters
 * of the live tables and their indexes (tuples inserted, updated, deleted,
 * scans, tuples read) before and after the replay, and fails if the replay
 * touched them; and it checks that the live tables and their shadow still
 * have the same shape (columns, indexes, owner, grants), so DDL on the read
 * model during a rebuild fails the rebuild instead of being lost.
 *
 * The switch (final true) holds off appenders (SHARE ROW EXCLUSIVE on
 * es.events, the lock of CREATE TRIGGER), replays the tail into the shadow
 * (an asynchronous projection that stays asynchronous instead locks its row
 * of es.async_projections and replays up to the horizon, with its filter),
 * takes ACCESS EXCLUSIVE on the live tables, checks again, and in the same
 * transaction drops the live tables and their schema: the shadow keeps the
 * read model's name.  Readers see the old complete model until the commit
 * and the new one after; an appender that waited writes the new tables.
 * The projection's mode (es.projection_status.mode: inline or async) and,
 * for an asynchronous one, its checkpoint (the shadow's cursor) change in
 * the same transaction (EsAsyncSwitchMode, async.c).
 *
 * Memory: everything is allocated in the SPI procedure context and released
 * by SPI_finish.
 *
 * src/rebuild.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "access/transam.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "lib/stringinfo.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "storage/lmgr.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/snapmgr.h"
#include "utils/xid8.h"

#include "es_ext.h"

/* prefix of the shadow schema, and of the live schema's name during a batch */
#define SHADOW_PREFIX	"es_shadow_"
#define LIVE_PREFIX		"es_live_"

/* the rebuild in a shadow of a projection, its status row locked */
static EsPlan status_plan = {
	NULL,
	"SELECT s.read_model, s.shadow, (s.last_cursor).era, (s.last_cursor).tx_id,"
	"       (s.last_cursor).global_position, s.replayed, s.mode"
	"  FROM es.projection_status AS s"
	" WHERE s.projection OPERATOR(pg_catalog.=) $1"
	"   AND s.state OPERATOR(pg_catalog.=) 'rebuilding' AND s.shadow IS NOT NULL"
	"   FOR UPDATE",
	1, {NAMEOID}
};

static EsPlan progress_plan = {
	NULL,
	"UPDATE es.projection_status AS s"
	"   SET replayed = $2,"
	"       last_cursor = CASE WHEN $3 IS NOT NULL THEN ROW($3, $4, $5)::es.log_cursor END,"
	"       updated_at = pg_catalog.clock_timestamp(),"
	"       state = CASE WHEN $6 THEN 'live' ELSE s.state END,"
	"       shadow = CASE WHEN $6 THEN NULL ELSE s.shadow END,"
	"       finished_at = CASE WHEN $6 THEN pg_catalog.clock_timestamp() END"
	" WHERE s.projection OPERATOR(pg_catalog.=) $1",
	6, {NAMEOID, INT8OID, INT4OID, XID8OID, INT8OID, BOOLOID}
};

/*
 * What this transaction did to the tables of a schema and their indexes,
 * from the statistics counters (pending in this backend, so they include
 * the current transaction).
 */
static EsPlan touched_plan = {
	NULL,
	"SELECT COALESCE(pg_catalog.sum(pg_catalog.pg_stat_get_xact_tuples_inserted(c.oid)"
	"         OPERATOR(pg_catalog.+) pg_catalog.pg_stat_get_xact_tuples_updated(c.oid)"
	"         OPERATOR(pg_catalog.+) pg_catalog.pg_stat_get_xact_tuples_deleted(c.oid)"
	"         OPERATOR(pg_catalog.+) pg_catalog.pg_stat_get_xact_numscans(c.oid)"
	"         OPERATOR(pg_catalog.+) pg_catalog.pg_stat_get_xact_tuples_returned(c.oid)"
	"         OPERATOR(pg_catalog.+) pg_catalog.pg_stat_get_xact_tuples_fetched(c.oid)), 0)::bigint"
	"  FROM pg_catalog.pg_class AS c"
	" WHERE c.relnamespace OPERATOR(pg_catalog.=) $1 AND c.relkind IN ('r', 'i')",
	1, {OIDOID}
};

/*
 * The shape of a read model: the schema's owner and grants, then per table
 * (by name) its owner, persistence, columns, grants and indexes (by name and
 * definition after USING).  Two schemas with the same shape hold tables a
 * projection writes the same way.
 */
static EsPlan shape_plan = {
	NULL,
	"SELECT pg_catalog.format('%s|%s;', n.nspowner,"
	"        (SELECT pg_catalog.string_agg(pg_catalog.format('%s %s %s', x.grantee, x.privilege_type, x.is_grantable), ','"
	"                                      ORDER BY x.grantee, x.privilege_type)"
	"           FROM pg_catalog.aclexplode(COALESCE(n.nspacl, pg_catalog.acldefault('n', n.nspowner))) AS x))"
	"       OPERATOR(pg_catalog.||) COALESCE((SELECT pg_catalog.string_agg(pg_catalog.format('%s|%s|%s|%s|%s|%s',"
	"          c.relname, c.relowner, c.relpersistence,"
	"          (SELECT pg_catalog.string_agg(pg_catalog.format('%s %s %s %s%s', a.attname,"
	"                    pg_catalog.format_type(a.atttypid, a.atttypmod), a.attnotnull, a.attidentity, a.attgenerated),"
	"                  ',' ORDER BY a.attnum)"
	"             FROM pg_catalog.pg_attribute AS a"
	"            WHERE a.attrelid OPERATOR(pg_catalog.=) c.oid AND a.attnum OPERATOR(pg_catalog.>) 0"
	"              AND NOT a.attisdropped),"
	"          (SELECT pg_catalog.string_agg(pg_catalog.format('%s %s %s', x.grantee, x.privilege_type, x.is_grantable), ','"
	"                  ORDER BY x.grantee, x.privilege_type)"
	"             FROM pg_catalog.aclexplode(COALESCE(c.relacl, pg_catalog.acldefault('r', c.relowner))) AS x),"
	"          (SELECT pg_catalog.string_agg(ic.relname OPERATOR(pg_catalog.||) ' ' OPERATOR(pg_catalog.||)"
	"                    pg_catalog.regexp_replace(pg_catalog.pg_get_indexdef(i.indexrelid), '^CREATE .*? USING ', ''),"
	"                  ',' ORDER BY ic.relname)"
	"             FROM pg_catalog.pg_index AS i JOIN pg_catalog.pg_class AS ic ON ic.oid OPERATOR(pg_catalog.=) i.indexrelid"
	"            WHERE i.indrelid OPERATOR(pg_catalog.=) c.oid)),"
	"        ';' ORDER BY c.relname)"
	"          FROM pg_catalog.pg_class AS c"
	"         WHERE c.relnamespace OPERATOR(pg_catalog.=) n.oid AND c.relkind OPERATOR(pg_catalog.=) 'r'), '')"
	"  FROM pg_catalog.pg_namespace AS n WHERE n.oid OPERATOR(pg_catalog.=) $1",
	1, {OIDOID}
};

/* the tables of a schema, in OID order (the order their locks are taken) */
static EsPlan tables_plan = {
	NULL,
	"SELECT c.oid FROM pg_catalog.pg_class AS c"
	" WHERE c.relnamespace OPERATOR(pg_catalog.=) $1 AND c.relkind OPERATOR(pg_catalog.=) 'r'"
	" ORDER BY c.oid",
	1, {OIDOID}
};

/* the checks of es_read_model_check, on the live schema (during the switch) */
static EsPlan check_plan = {
	NULL,
	"SELECT pg_catalog.count(*) FROM es.es_read_model_check($1)",
	1, {NAMEOID}
};

/*
 * spi_int64
 *		Run a saved plan returning one bigint (or text, into *out when out is not NULL)
 *		with one argument.
 */
static int64
spi_int64(EsPlan *p, Datum arg, char **out)
{
	bool		isnull;
	Datum		d;

	if (SPI_execute_plan(EsGetPlan(p), &arg, NULL, false, 1) != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "could not run \"%s\"", p->sql);
	d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
	if (out != NULL)
	{
		*out = isnull ? pstrdup("") : TextDatumGetCString(d);
		return 0;
	}
	return isnull ? 0 : DatumGetInt64(d);
}

/*
 * rename_schema
 *		ALTER SCHEMA from RENAME TO to, with the caller's privileges (owner of
 *		the schema, CREATE on the database).
 */
static void
rename_schema(const char *from, const char *to)
{
	char	   *sql = psprintf("ALTER SCHEMA %s RENAME TO %s",
							   quote_identifier(from), quote_identifier(to));

	if (SPI_execute(sql, false, 0) != SPI_OK_UTILITY)
		elog(ERROR, "could not run \"%s\"", sql);
}

/*
 * check_shape
 *		Fail if the live read model (live, an OID) and its shadow no longer
 *		have the same shape: someone changed the read model during the
 *		rebuild.
 */
static void
check_shape(const char *projection, const char *read_model, Oid live, Oid shadow)
{
	char	   *a;
	char	   *b;

	(void) spi_int64(&shape_plan, ObjectIdGetDatum(live), &a);
	(void) spi_int64(&shape_plan, ObjectIdGetDatum(shadow), &b);
	if (strcmp(a, b) != 0)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("read model \"%s\" of projection \"%s\" changed during its rebuild",
						read_model, projection),
				 errdetail("Its tables, columns, indexes, owners or grants no longer match the shadow copy the rebuild writes."),
				 errhint("Start the rebuild over: CALL es.es_rebuild_projection(..., resume => false, read_model => ...).")));
}

PG_FUNCTION_INFO_V1(es_rebuild_shadow_batch);

/*
 * es_rebuild_shadow_batch(projection name, max_count integer, final boolean)
 *		RETURNS integer
 *
 * One step of the rebuild in a shadow of projection (its row of
 * es.projection_status: state 'rebuilding', read_model and shadow set; the
 * row is locked FOR UPDATE, so two sessions never step one rebuild), in the
 * caller's transaction:
 *
 * final false: replays up to max_count events below the log horizon after
 *		the row's last_cursor into the shadow and records the progress.
 * final true: takes SHARE ROW EXCLUSIVE on es.events (appenders wait), takes
 *		a new snapshot (what committed while it waited), replays
 *		every remaining event into the shadow (max_count at a time), then
 *		switches: ACCESS EXCLUSIVE on the live tables, the shadow takes the
 *		read model's name, the live tables and their schema are dropped, and
 *		the row becomes 'live'.
 *
 * Returns the events replayed.  The caller needs ownership (membership) of
 * the read model's schema and tables and CREATE on the database (renaming a
 * schema); the lock on es.events is taken without a privilege check, like
 * es_create_async_projection does (TRIGGER on es.events through es_admin).
 */
Datum
es_rebuild_shadow_batch(PG_FUNCTION_ARGS)
{
	Name		projection;
	int32		max_count;
	bool		final;
	char	   *read_model;
	char	   *shadow;
	char	   *live_tmp;
	Oid			live_nsp;
	Oid			shadow_nsp;
	Datum		cur[3];
	int64		replayed;
	int64		before;
	int64		after;
	int32		n;
	int32		total = 0;
	bool		isnull;
	bool		src_async;
	bool		dst_async = false;
	bool		to_head = false;
	HeapTuple	row;
	TupleDesc	desc;
	Datum		values[6];
	char		nulls[6] = {' ', ' ', ' ', ' ', ' ', ' '};

	EsCheckWritable("es_rebuild_shadow_batch()");
	if (PG_ARGISNULL(0) || PG_ARGISNULL(1) || PG_ARGISNULL(2))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("projection, max_count and final cannot be null")));
	projection = PG_GETARG_NAME(0);
	max_count = PG_GETARG_INT32(1);
	final = PG_GETARG_BOOL(2);
	if (max_count <= 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("max_count must be greater than zero")));
	if (!pgstat_track_counts)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("a rebuild in a shadow needs track_counts"),
				 errhint("Turn track_counts on, or rebuild in place (without read_model).")));

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");

	/*
	 * The mode the projection has and the one it gets.  An asynchronous
	 * projection that stays asynchronous switches without holding off
	 * appenders: its registry row locked (a batch of the worker being
	 * applied is waited for, and no other starts), the shadow catches up
	 * below the horizon and takes over with its own checkpoint.  Every
	 * other switch holds off appenders (SHARE ROW EXCLUSIVE on es.events,
	 * the lock order of CREATE TRIGGER) and replays to the head of the log.
	 */
	src_async = EsAsyncIsRegistered(NameStr(*PG_GETARG_NAME(0)), false);
	if (final)
	{
		values[0] = PG_GETARG_DATUM(0);
		dst_async = src_async;
		if (SPI_execute_plan(EsGetPlan(&status_plan), values, NULL, false, 1) != SPI_OK_SELECT)
			elog(ERROR, "could not read es.projection_status");
		if (SPI_processed > 0)
		{
			char	   *m = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 7);

			if (m != NULL)
				dst_async = strcmp(m, "async") == 0;
		}
		to_head = !(src_async && dst_async);
		if (to_head)
			LockRelationOid(EsRelationOid("events"), ShareRowExclusiveLock);
		if (src_async)
			(void) EsAsyncIsRegistered(NameStr(*PG_GETARG_NAME(0)), true);
		/* see what committed while this waited (the tail is read with this snapshot) */
		PushActiveSnapshot(GetTransactionSnapshot());
	}

	values[0] = NameGetDatum(projection);
	if (SPI_execute_plan(EsGetPlan(&status_plan), values, NULL, false, 1) != SPI_OK_SELECT)
		elog(ERROR, "could not read es.projection_status");
	if (SPI_processed == 0)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("projection \"%s\" is not being rebuilt in a shadow", NameStr(*projection)),
				 errhint("Start the rebuild with CALL es.es_rebuild_projection(..., read_model => ...).")));
	row = SPI_tuptable->vals[0];
	desc = SPI_tuptable->tupdesc;
	read_model = SPI_getvalue(row, desc, 1);
	shadow = SPI_getvalue(row, desc, 2);
	cur[0] = SPI_getbinval(row, desc, 3, &isnull);
	if (isnull)
	{
		cur[0] = Int32GetDatum(-1);
		cur[1] = FullTransactionIdGetDatum(FullTransactionIdFromU64(0));
		cur[2] = Int64GetDatum(0);
	}
	else
	{
		cur[1] = SPI_getbinval(row, desc, 4, &isnull);
		cur[2] = SPI_getbinval(row, desc, 5, &isnull);
	}
	replayed = DatumGetInt64(SPI_getbinval(row, desc, 6, &isnull));
	if (strncmp(shadow, SHADOW_PREFIX, strlen(SHADOW_PREFIX)) != 0)
		elog(ERROR, "unexpected shadow schema name \"%s\"", shadow);
	live_tmp = psprintf(LIVE_PREFIX "%s", shadow + strlen(SHADOW_PREFIX));

	live_nsp = get_namespace_oid(read_model, true);
	shadow_nsp = get_namespace_oid(shadow, true);
	if (!OidIsValid(live_nsp) || !OidIsValid(shadow_nsp))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_SCHEMA),
				 errmsg("schema \"%s\" does not exist",
						OidIsValid(live_nsp) ? shadow : read_model),
				 errdetail("Projection \"%s\" is being rebuilt from schema \"%s\" into schema \"%s\".",
						   NameStr(*projection), read_model, shadow),
				 errhint("Start the rebuild over: CALL es.es_rebuild_projection(..., resume => false, read_model => ...).")));

	/* concurrent DDL on the read model fails the rebuild, never goes lost */
	check_shape(NameStr(*projection), read_model, live_nsp, shadow_nsp);

	before = spi_int64(&touched_plan, ObjectIdGetDatum(live_nsp), NULL);
	rename_schema(read_model, live_tmp);
	rename_schema(shadow, read_model);

	do
	{
		n = EsAsyncReplayRange(NameStr(*projection), cur, max_count, to_head);
		total += n;
	} while (final && n == max_count);

	after = spi_int64(&touched_plan, ObjectIdGetDatum(live_nsp), NULL);
	if (after != before)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("projection \"%s\" used the live read model \"%s\" during its rebuild in a shadow",
						NameStr(*projection), read_model),
				 errdetail("The replay read or wrote the live tables " INT64_FORMAT " times; the batch was rolled back.",
						   after - before),
				 errhint("A rebuild in a shadow needs handlers that name the read model's tables by schema, or find them through their own search_path; otherwise rebuild in place (without read_model).")));

	if (!final)
	{
		rename_schema(read_model, shadow);
		rename_schema(live_tmp, read_model);
	}
	else
	{
		uint64		i;
		uint64		ntables;
		Oid		   *tables;
		StringInfoData drop;

		/* readers wait from here to the commit */
		values[0] = ObjectIdGetDatum(live_nsp);
		if (SPI_execute_plan(EsGetPlan(&tables_plan), values, NULL, false, 0) != SPI_OK_SELECT)
			elog(ERROR, "could not list the tables of schema \"%s\"", live_tmp);
		ntables = SPI_processed;
		tables = palloc(sizeof(Oid) * (ntables + 1));
		for (i = 0; i < ntables; i++)
			tables[i] = DatumGetObjectId(SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1, &isnull));
		for (i = 0; i < ntables; i++)
			LockRelationOid(tables[i], AccessExclusiveLock);

		/* nothing was added to the live read model, or changed, meanwhile */
		values[0] = DirectFunctionCall1(namein, CStringGetDatum(live_tmp));
		(void) spi_int64(&check_plan, values[0], NULL);
		check_shape(NameStr(*projection), read_model, live_nsp, shadow_nsp);

		initStringInfo(&drop);
		for (i = 0; i < ntables; i++)
			appendStringInfo(&drop, "%s%s.%s", i == 0 ? "DROP TABLE " : ", ",
							 quote_identifier(live_tmp), quote_identifier(get_rel_name(tables[i])));
		if (drop.len > 0 && SPI_execute(drop.data, false, 0) != SPI_OK_UTILITY)
			elog(ERROR, "could not run \"%s\"", drop.data);
		/* RESTRICT: anything that appeared in the schema meanwhile fails the switch */
		if (SPI_execute(psprintf("DROP SCHEMA %s", quote_identifier(live_tmp)), false, 0) != SPI_OK_UTILITY)
			elog(ERROR, "could not drop schema \"%s\"", live_tmp);
	}

	values[0] = NameGetDatum(projection);
	values[1] = Int64GetDatum(replayed + total);
	values[2] = cur[0];
	values[3] = cur[1];
	values[4] = cur[2];
	values[5] = BoolGetDatum(final);
	if (DatumGetInt32(cur[0]) < 0)
		nulls[2] = nulls[3] = nulls[4] = 'n';
	if (SPI_execute_plan(EsGetPlan(&progress_plan), values, nulls, false, 0) != SPI_OK_UPDATE)
		elog(ERROR, "could not update es.projection_status");

	/* the projection's mode and checkpoint go with the read model they describe */
	if (final && (src_async || dst_async))
		EsAsyncSwitchMode(NameStr(*projection), dst_async, cur);

	SPI_finish();
	if (final)
		PopActiveSnapshot();
	PG_RETURN_INT32(total);
}
