/*-------------------------------------------------------------------------
 *
 * snapshot.c
 *	  Snapshots: folded states stored in es.snapshots, so that es_fold
 *	  applies only the events after the newest usable one.
 *
 * A snapshot is a pure cache.  It holds the state of (stream, reducer,
 * initial state) after the events 1..version, and is keyed by
 *	- stream_id;
 *	- reducer: the reducer's schema-qualified signature (routine.c);
 *	- initial_hash: SHA-256 of the initial state's canonical text;
 *	- fingerprint: SHA-256 of the reducer's definition and of the upcaster
 *	  registry (upcast.c), since the state depends on both;
 *	- version.
 * A fold uses only a snapshot whose whole key matches, whose version is
 * within the fold's bounds (up_to_version, and as_of through the recorded_at
 * of the snapshot's last event), and whose last event is visible to the
 * fold's snapshot (so it is never ahead of what the caller can see; an
 * archived event counts, and so does the event just before the stream's
 * first_version, which retention or an erasure removed: the stream row that
 * says so is visible).  Since
 * the events 1..version of a stream never change, a matching snapshot gives
 * exactly the state a full replay would; deleting snapshots changes no
 * result.
 *
 * Snapshots are neither read nor written while row level security applies
 * to es.events for the current user: a state folded from the rows one role
 * can see must not be served to a role that sees others.
 *
 * Writing.  es_snapshot_save (fold.c: it folds, then calls EsSnapshotWrite)
 * writes one explicitly (kept until deleted).
 * es_fold writes one automatically when it applied at least
 * es.snapshot_every events, and only when that cannot disturb the caller:
 * READ COMMITTED (under REPEATABLE READ an ON CONFLICT against a row
 * committed after the snapshot raises 40001, and under SERIALIZABLE the
 * write would add rw-conflicts), not read-only, not in recovery, and the
 * current user holds SELECT, INSERT, UPDATE and DELETE on es.snapshots with
 * no row level security on it.  Otherwise it silently skips the write.  An
 * automatic write never waits: concurrent automatic writers of the same key
 * serialize on a transaction-level advisory lock taken with "don't wait"
 * (the loser skips), and older automatic snapshots of the key are deleted
 * with SKIP LOCKED.  Each automatic write replaces the older automatic
 * snapshots of its key and every snapshot of a stale fingerprint.
 *
 * This file is storage only: it never folds.  fold.c calls it (EsFold reads
 * and writes snapshots, es_snapshot_save folds then writes), never the
 * reverse, so the two files do not call each other.
 *
 * All SQL runs through SPI saved plans with qualified names and
 * OPERATOR(pg_catalog.x); callers are inside SPI_connect.
 *
 * src/snapshot.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "access/xlog.h"
#include "catalog/namespace.h"
#include "catalog/pg_proc.h"
#include "catalog/pg_type.h"
#include "commands/trigger.h"
#include "common/hashfn.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "storage/lock.h"
#include "utils/acl.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/rls.h"
#include "utils/syscache.h"

#include "es_ext.h"

/* locktag_field4 of the advisory lock of automatic snapshot writers ("ES") */
#define ES_SNAPSHOT_LOCK_CLASS 0x4553

/*
 * Every table is filtered on the stream ($1), not joined on it: Citus
 * routes each part to the stream's shard, also inside a delegated call.
 */
#define SNAPSHOT_FIND \
	"SELECT s.version, s.state FROM es.snapshots AS s" \
	" WHERE s.stream_id OPERATOR(pg_catalog.=) $1" \
	"   AND s.reducer OPERATOR(pg_catalog.=) $2" \
	"   AND s.initial_hash OPERATOR(pg_catalog.=) $3" \
	"   AND s.fingerprint OPERATOR(pg_catalog.=) $4" \
	"   AND s.version OPERATOR(pg_catalog.<=) $5" \
	"   AND (EXISTS (SELECT FROM es.events AS e" \
	"                WHERE e.stream_id OPERATOR(pg_catalog.=) $1" \
	"                  AND e.version OPERATOR(pg_catalog.=) s.version"
#define SNAPSHOT_FIND_END \
	")" \
	" ORDER BY s.version DESC" \
	" LIMIT 1"
/*
 * The snapshot's last event may have moved to es.archived_events, or been
 * removed by retention: then the stream row says the stream now starts just
 * after it (lifecycle.c, retention.c).  Not with as_of: its recorded_at is
 * gone.
 */
#define SNAPSHOT_FIND_MOVED \
	")" \
	"        OR EXISTS (SELECT FROM es.archived_events AS a" \
	"                    WHERE a.stream_id OPERATOR(pg_catalog.=) $1" \
	"                      AND a.version OPERATOR(pg_catalog.=) s.version" \
	"                      AND a.recorded_at OPERATOR(pg_catalog.<=) $6)"
#define SNAPSHOT_FIND_REMOVED \
	"        OR EXISTS (SELECT FROM es.streams AS t" \
	"                    WHERE t.stream_id OPERATOR(pg_catalog.=) $1" \
	"                      AND t.first_version OPERATOR(pg_catalog.-) 1 OPERATOR(pg_catalog.=) s.version)"
#define SNAPSHOT_KEY_TYPES TEXTOID, TEXTOID, BYTEAOID, BYTEAOID

static EsPlan find_plan = {
	NULL,
	SNAPSHOT_FIND
	")"
	"        OR EXISTS (SELECT FROM es.archived_events AS a"
	"                    WHERE a.stream_id OPERATOR(pg_catalog.=) $1"
	"                      AND a.version OPERATOR(pg_catalog.=) s.version)"
	SNAPSHOT_FIND_REMOVED
	SNAPSHOT_FIND_END,
	5, {SNAPSHOT_KEY_TYPES, INT8OID}
};

static EsPlan find_as_of_plan = {
	NULL,
	SNAPSHOT_FIND
	"                  AND e.recorded_at OPERATOR(pg_catalog.<=) $6"
	SNAPSHOT_FIND_MOVED
	SNAPSHOT_FIND_END,
	6, {SNAPSHOT_KEY_TYPES, INT8OID, TIMESTAMPTZOID}
};

/* a 0.1.0 schema (before ALTER EXTENSION UPDATE): no archive, no first_version */
static EsPlan find_legacy_plan = {
	NULL,
	SNAPSHOT_FIND ")" SNAPSHOT_FIND_END,
	5, {SNAPSHOT_KEY_TYPES, INT8OID}
};

static EsPlan find_as_of_legacy_plan = {
	NULL,
	SNAPSHOT_FIND
	"                  AND e.recorded_at OPERATOR(pg_catalog.<=) $6"
	")" SNAPSHOT_FIND_END,
	6, {SNAPSHOT_KEY_TYPES, INT8OID, TIMESTAMPTZOID}
};

static EsPlan auto_cleanup_plan = {
	NULL,
	"DELETE FROM es.snapshots AS s"
	" WHERE s.stream_id OPERATOR(pg_catalog.=) $1"
	"   AND s.ctid OPERATOR(pg_catalog.=) ANY (ARRAY("
	"       SELECT d.ctid FROM es.snapshots AS d"
	"        WHERE d.stream_id OPERATOR(pg_catalog.=) $1"
	"          AND d.reducer OPERATOR(pg_catalog.=) $2"
	"          AND d.initial_hash OPERATOR(pg_catalog.=) $3"
	"          AND (d.fingerprint OPERATOR(pg_catalog.<>) $4"
	"               OR (d.automatic AND d.version OPERATOR(pg_catalog.<) $5))"
	"          FOR UPDATE SKIP LOCKED))",
	5, {SNAPSHOT_KEY_TYPES, INT8OID}
};

static EsPlan auto_insert_plan = {
	NULL,
	"INSERT INTO es.snapshots AS s"
	" (stream_id, reducer, initial_hash, fingerprint, version, state, automatic)"
	" VALUES ($1, $2, $3, $4, $5, $6, true)"
	" ON CONFLICT ON CONSTRAINT snapshots_pkey DO NOTHING",
	6, {SNAPSHOT_KEY_TYPES, INT8OID, JSONBOID}
};

static EsPlan stale_cleanup_plan = {
	NULL,
	"DELETE FROM es.snapshots AS s"
	" WHERE s.stream_id OPERATOR(pg_catalog.=) $1"
	"   AND s.reducer OPERATOR(pg_catalog.=) $2"
	"   AND s.initial_hash OPERATOR(pg_catalog.=) $3"
	"   AND s.fingerprint OPERATOR(pg_catalog.<>) $4",
	4, {SNAPSHOT_KEY_TYPES}
};

static EsPlan save_plan = {
	NULL,
	"INSERT INTO es.snapshots AS s"
	" (stream_id, reducer, initial_hash, fingerprint, version, state, automatic)"
	" VALUES ($1, $2, $3, $4, $5, $6, false)"
	" ON CONFLICT ON CONSTRAINT snapshots_pkey"
	" DO UPDATE SET state = EXCLUDED.state, automatic = false, created_at = EXCLUDED.created_at",
	6, {SNAPSHOT_KEY_TYPES, INT8OID, JSONBOID}
};

/* es_snapshot_delete: indexed by (stream given) + 2 * (reducer given) */
static EsPlan delete_plans[4] = {
	{NULL, "DELETE FROM es.snapshots AS s", 0, {InvalidOid}},
	{NULL, "DELETE FROM es.snapshots AS s WHERE s.stream_id OPERATOR(pg_catalog.=) $1",
	1, {TEXTOID}},
	{NULL, "DELETE FROM es.snapshots AS s WHERE s.reducer OPERATOR(pg_catalog.=) $1",
	1, {TEXTOID}},
	{NULL, "DELETE FROM es.snapshots AS s WHERE s.stream_id OPERATOR(pg_catalog.=) $1"
		" AND s.reducer OPERATOR(pg_catalog.=) $2",
	2, {TEXTOID, TEXTOID}},
};

/* marks the upsert of save_plan for snapshot_write */
#define SNAPSHOT_UPSERT	0x100

/*
 * snapshot_write
 *		Execute a saved plan that writes es.snapshots, letting its guard
 *		trigger pass that one statement (event: TRIGGER_EVENT_INSERT,
 *		_DELETE, or TRIGGER_EVENT_INSERT | SNAPSHOT_UPSERT for an INSERT ...
 *		ON CONFLICT DO UPDATE).  Returns the SPI result code.
 */
static int
snapshot_write(EsPlan *p, Datum *values, uint32 event)
{
	Oid			relid = EsRelationOid("snapshots");
	volatile int rc = 0;

	if (event & SNAPSHOT_UPSERT)
		EsAllowNextUpsert(relid);
	else
		EsAllowNextWrite(relid, event);
	PG_TRY();
	{
		rc = SPI_execute_plan(EsGetPlan(p), values, NULL, false, 0);
	}
	PG_FINALLY();
	{
		EsClearAllowedWrite();
	}
	PG_END_TRY();
	return rc;
}

/*
 * hash_search_path
 *		Feed the caller's effective search_path into a fingerprint, unless
 *		the reducer sets its own: a reducer runs as the caller and resolves
 *		the names in its body through that path, so a state folded under one
 *		path (a writer's, with its own operators in front) must never be
 *		another caller's snapshot.  Schema names, not OIDs: a snapshot
 *		survives a dump and restore.
 */
static void
hash_search_path(Oid reducer, EsHash *ctx)
{
	HeapTuple	tup;
	Datum		config;
	bool		isnull;
	bool		pinned = false;
	List	   *path;
	ListCell   *lc;

	tup = SearchSysCache1(PROCOID, ObjectIdGetDatum(reducer));
	if (!HeapTupleIsValid(tup))
		elog(ERROR, "cache lookup failed for function %u", reducer);
	config = SysCacheGetAttr(PROCOID, tup, Anum_pg_proc_proconfig, &isnull);
	if (!isnull)
	{
		Datum	   *items;
		int			nitems;
		int			i;

		deconstruct_array(DatumGetArrayTypeP(config), TEXTOID, -1, false, TYPALIGN_INT,
						  &items, NULL, &nitems);
		for (i = 0; i < nitems; i++)
			if (strncmp(TextDatumGetCString(items[i]), "search_path=", 12) == 0)
				pinned = true;
	}
	ReleaseSysCache(tup);
	if (pinned)
		return;

	EsHashCString(ctx, "search_path");
	path = fetch_search_path(true);
	foreach(lc, path)
	{
		char	   *name;

		/* functions and operators are never looked up in pg_temp unqualified */
		if (isAnyTempNamespace(lfirst_oid(lc)))
			continue;
		name = get_namespace_name(lfirst_oid(lc));
		EsHashCString(ctx, name != NULL ? name : "");
	}
	list_free(path);
}

/*
 * EsSnapshotKeyInit
 *		Compute the snapshot key of a fold (see the file header), allocated in
 *		the current memory context.  key->usable is false when snapshots must
 *		not be read: row level security applies to es.events, or the current
 *		user cannot read es.snapshots.
 */
void
EsSnapshotKeyInit(EsSnapshotKey *key, text *stream, Oid reducer, Jsonb *initial)
{
	EsHash	   *ctx;
	char	   *initial_text;
	Oid			snapshots = EsRelationOid("snapshots");

	key->usable =
		check_enable_rls(EsRelationOid("events"), InvalidOid, true) != RLS_ENABLED &&
		pg_class_aclcheck(snapshots, GetUserId(), ACL_SELECT) == ACLCHECK_OK;

	key->stream = PointerGetDatum(stream);
	key->reducer = CStringGetTextDatum(EsRoutineSignature(reducer));

	initial_text = JsonbToCString(NULL, &initial->root, VARSIZE(initial));
	ctx = EsHashBegin();
	EsHashRaw(ctx, initial_text, strlen(initial_text));
	key->initial_hash = EsHashEndDatum(ctx);

	ctx = EsHashBegin();
	EsHashRoutine(reducer, ctx);
	EsUpcastRegistryHash(ctx);
	hash_search_path(reducer, ctx);
	key->fingerprint = EsHashEndDatum(ctx);
}

/*
 * EsSnapshotFind
 *		The newest usable snapshot of key at a version <= up_to_version (and
 *		whose last event was recorded at or before as_of, if has_as_of), read
 *		under the active snapshot.  Returns false when there is none;
 *		otherwise sets *version and *state (copied into cxt).
 */
bool
EsSnapshotFind(const EsSnapshotKey *key, int64 up_to_version, bool has_as_of,
			   TimestampTz as_of, MemoryContext cxt, int64 *version, Jsonb **state)
{
	Datum		values[6];
	EsPlan	   *plan;
	int			rc;
	bool		isnull;
	Datum		d;
	MemoryContext oldcxt;

	if (!key->usable)
		return false;

	values[0] = key->stream;
	values[1] = key->reducer;
	values[2] = key->initial_hash;
	values[3] = key->fingerprint;
	values[4] = Int64GetDatum(up_to_version);
	values[5] = TimestampTzGetDatum(as_of);
	if (OidIsValid(get_relname_relid("archived_events", EsSchemaOid())))
		plan = has_as_of ? &find_as_of_plan : &find_plan;
	else
		plan = has_as_of ? &find_as_of_legacy_plan : &find_legacy_plan;
	rc = SPI_execute_plan(EsGetPlan(plan), values, NULL, true, 1);
	if (rc != SPI_OK_SELECT)
		elog(ERROR, "could not read es.snapshots: %s", SPI_result_code_string(rc));
	if (SPI_processed == 0)
		return false;

	*version = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull);
	oldcxt = MemoryContextSwitchTo(cxt);
	*state = DatumGetJsonbPCopy(d);
	MemoryContextSwitchTo(oldcxt);
	SPI_freetuptable(SPI_tuptable);
	return true;
}

/*
 * EsSnapshotAutoSaveAllowed
 *		May es_fold write an automatic snapshot of key now?  See the file
 *		header for the conditions.
 */
bool
EsSnapshotAutoSaveAllowed(const EsSnapshotKey *key)
{
	const AclMode needed = ACL_SELECT | ACL_INSERT | ACL_UPDATE | ACL_DELETE;
	Oid			snapshots;

	if (!key->usable || es_snapshot_every <= 0)
		return false;
	if (XactReadOnly || RecoveryInProgress() || IsInParallelMode())
		return false;
	if (XactIsoLevel != XACT_READ_COMMITTED && XactIsoLevel != XACT_READ_UNCOMMITTED)
		return false;
	snapshots = EsRelationOid("snapshots");
	/* all four privileges (pg_class_aclcheck would accept any one of them) */
	if (pg_class_aclmask(snapshots, GetUserId(), needed, ACLMASK_ALL) != needed)
		return false;
	if (check_enable_rls(snapshots, InvalidOid, true) == RLS_ENABLED)
		return false;
	return true;
}

/*
 * try_lock_key
 *		Take the transaction-level advisory lock of key's automatic writers
 *		without waiting; false when another transaction holds it.
 */
static bool
try_lock_key(const EsSnapshotKey *key)
{
	text	   *stream = DatumGetTextPP(key->stream);
	text	   *reducer = DatumGetTextPP(key->reducer);
	bytea	   *initial = DatumGetByteaPP(key->initial_hash);
	uint64		h;
	LOCKTAG		tag;

	h = hash_bytes_extended((const unsigned char *) VARDATA_ANY(stream),
							VARSIZE_ANY_EXHDR(stream), 0);
	h = hash_bytes_extended((const unsigned char *) VARDATA_ANY(reducer),
							VARSIZE_ANY_EXHDR(reducer), h);
	h = hash_bytes_extended((const unsigned char *) VARDATA_ANY(initial),
							VARSIZE_ANY_EXHDR(initial), h);
	SET_LOCKTAG_ADVISORY(tag, MyDatabaseId, (uint32) (h >> 32), (uint32) h,
						 ES_SNAPSHOT_LOCK_CLASS);
	return LockAcquire(&tag, ExclusiveLock, false, true) != LOCKACQUIRE_NOT_AVAIL;
}

/*
 * EsSnapshotWrite
 *		Store state as the snapshot of key at version.  automatic: es_fold's
 *		non-blocking write (skipped when another automatic writer of the key
 *		is at work), which also drops the older automatic snapshots of the
 *		key; otherwise an explicit save, kept until deleted.  Both drop the
 *		key's snapshots of a stale fingerprint.
 */
void
EsSnapshotWrite(const EsSnapshotKey *key, int64 version, Jsonb *state, bool automatic)
{
	Datum		values[6];
	int			rc;

	values[0] = key->stream;
	values[1] = key->reducer;
	values[2] = key->initial_hash;
	values[3] = key->fingerprint;
	values[4] = Int64GetDatum(version);
	values[5] = JsonbPGetDatum(state);

	if (automatic)
	{
		if (!try_lock_key(key))
			return;
		rc = snapshot_write(&auto_cleanup_plan, values, TRIGGER_EVENT_DELETE);
		if (rc != SPI_OK_DELETE)
			elog(ERROR, "could not delete snapshots: %s", SPI_result_code_string(rc));
		rc = snapshot_write(&auto_insert_plan, values, TRIGGER_EVENT_INSERT);
		if (rc != SPI_OK_INSERT)
			elog(ERROR, "could not write snapshot: %s", SPI_result_code_string(rc));
	}
	else
	{
		rc = snapshot_write(&stale_cleanup_plan, values, TRIGGER_EVENT_DELETE);
		if (rc != SPI_OK_DELETE)
			elog(ERROR, "could not delete snapshots: %s", SPI_result_code_string(rc));
		/* INSERT ... ON CONFLICT DO UPDATE: both statement triggers fire */
		rc = snapshot_write(&save_plan, values, TRIGGER_EVENT_INSERT | SNAPSHOT_UPSERT);
		if (rc != SPI_OK_INSERT)
			elog(ERROR, "could not write snapshot: %s", SPI_result_code_string(rc));
	}
}

PG_FUNCTION_INFO_V1(es_snapshot_delete);

/*
 * es_snapshot_delete(stream text, reducer regprocedure DEFAULT NULL)
 *		RETURNS bigint
 *		Delete the snapshots of a stream (NULL: of every stream), of one
 *		reducer or of all.  Returns the number deleted.  Results of es_fold
 *		do not change: the next fold replays from the start (or from an
 *		older snapshot) and may write a new one.
 */
Datum
es_snapshot_delete(PG_FUNCTION_ARGS)
{
	bool		have_stream = !PG_ARGISNULL(0);
	bool		have_reducer = !PG_ARGISNULL(1);
	Datum		values[2];
	int			nargs = 0;
	int			rc;
	uint64		deleted;

	EsCheckWritable("es_snapshot_delete()");
	/* one stream runs on its node; all of them would write every shard */
	if (!have_stream)
		EsRefuseDistributed("es_snapshot_delete() of every stream",
							"Delete the snapshots of one stream at a time: es.es_snapshot_delete(stream, reducer).");

	if (have_stream)
		values[nargs++] = PG_GETARG_DATUM(0);
	if (have_reducer)
	{
		Oid			fn = PG_GETARG_OID(1);

		if (!SearchSysCacheExists1(PROCOID, ObjectIdGetDatum(fn)))
			ereport(ERROR,
					(errcode(ERRCODE_UNDEFINED_FUNCTION),
					 errmsg("function with OID %u does not exist", fn)));
		values[nargs++] = CStringGetTextDatum(EsRoutineSignature(fn));
	}

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	rc = snapshot_write(&delete_plans[(have_stream ? 1 : 0) + (have_reducer ? 2 : 0)],
						values, TRIGGER_EVENT_DELETE);
	if (rc != SPI_OK_DELETE)
		elog(ERROR, "could not delete snapshots: %s", SPI_result_code_string(rc));
	deleted = SPI_processed;
	SPI_finish();

	PG_RETURN_INT64((int64) deleted);
}
