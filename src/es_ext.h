/*-------------------------------------------------------------------------
 *
 * es_ext.h
 *	  Declarations shared by the es_ext source files.
 *
 * src/es_ext.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef ES_EXT_H
#define ES_EXT_H

#include "access/htup.h"
#include "access/skey.h"
#include "access/transam.h"
#include "common/cryptohash.h"
#include "common/sha2.h"
#include "access/tupdesc.h"
#include "utils/array.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "portability/instr_time.h"
#include "storage/lockdefs.h"
#include "utils/jsonb.h"
#include "utils/rel.h"
#include "utils/reltrigger.h"
#include "utils/snapshot.h"
#include "utils/timestamp.h"
#include "utils/uuid.h"

/* Name of the constraint reported with every expected-version conflict. */
#define ES_EXPECTED_VERSION_CONSTRAINT "es_expected_version"

/* Name of the constraint reported when an append condition fails (condition.c). */
#define ES_APPEND_CONDITION_CONSTRAINT "es_append_condition"

/* Expected-version spellings accepted by es_append (NULL means "any"). */
#define ES_EXPECT_STREAM_EXISTS	(-1)
#define ES_EXPECT_NO_STREAM		0

/*
 * Limits, fetch sizes and retry counts: every one is defined here, once.
 */

/* Longest stream id and event type accepted, in bytes (they are indexed). */
#define ES_MAX_NAME_BYTES		1024

/* Longest consumer group name, in bytes (es.outbox_groups.name). */
#define ES_OUTBOX_MAX_GROUP_NAME	63

/* Longest checkpoint name, in bytes (es.checkpoints.name). */
#define ES_CHECKPOINT_MAX_NAME	63

/* es_checkpoint_save: tries at creating a checkpoint another session creates at once. */
#define ES_CHECKPOINT_ATTEMPTS	2

/* Claims: max_count bounds, and the least number of visible deliveries scanned. */
#define ES_OUTBOX_MAX_CLAIM		10000
#define ES_OUTBOX_MIN_SCAN_WINDOW	1000
/* a claim scans this many visible deliveries per requested one (at least the minimum) */
#define ES_OUTBOX_SCAN_FACTOR	4

/* Rows fetched from an SPI cursor at a time (reads, folds, projection replays). */
#define ES_FETCH_BATCH			1000

/* Event envelopes: larger payloads take the generic path (which checks jsonb's limits). */
#define ES_ENVELOPE_MAX_PAYLOAD	(64 * 1024 * 1024)

/* es_append: tries at an "any version" append before it reports a conflict. */
#define ES_APPEND_STREAM_ATTEMPTS	3

/* era.c: tries at reading (or recording) the era of this cluster. */
#define ES_ERA_ATTEMPTS			2

/* notify.c: databases that can have a notify worker at the same time. */
#define ES_NOTIFY_SLOTS			64

/* notify.c: after a worker could not be started, backends notify themselves for this long. */
#define ES_NOTIFY_RETRY_MS		10000

/* notify.c: the launcher checks its workers at least this often. */
#define ES_NOTIFY_LAUNCHER_NAP_MS	1000

/* projection_worker.c: databases that can have a projection worker (or a known need for one) */
#define ES_PROJECTION_SLOTS		64

/* projection_worker.c: batches a worker applies to one projection before it turns to the next */
#define ES_PROJECTION_ROUND_BATCHES	8
/*
 * projection_worker.c: after a round that applied events without using up
 * its batches, the worker lets appends accumulate this long before the next
 * round, so that under load a batch carries many events instead of one or
 * two (the cost of a batch is mostly per transaction).  Adds at most this
 * to the lag.
 */
#define ES_PROJECTION_COALESCE_MS	10

/* projection_worker.c: databases probed for projections at the same time after a start */
#define ES_PROJECTION_PROBES	2

/* projection_worker.c: after a projection worker could not start or died, the launcher waits this long */
#define ES_PROJECTION_RETRY_MS	10000

/* GUC defaults and bounds (es_ext.c) */
#define ES_DEFAULT_MAX_BATCH_EVENTS		10000
#define ES_DEFAULT_MAX_BATCH_SIZE		(64 * 1024 * 1024)
#define ES_MIN_MAX_BATCH_SIZE			1024
#define ES_DEFAULT_MAX_EVENT_SIZE		(1024 * 1024)
#define ES_MIN_MAX_EVENT_SIZE			64
#define ES_DEFAULT_SNAPSHOT_EVERY		1000
#define ES_DEFAULT_NOTIFY_IDLE_TIMEOUT	2000
#define ES_MIN_NOTIFY_IDLE_TIMEOUT		100
#define ES_MAX_NOTIFY_IDLE_TIMEOUT		(3600 * 1000)
#define ES_DEFAULT_NOTIFY_INTERVAL		5
#define ES_MAX_NOTIFY_INTERVAL			1000
#define ES_DEFAULT_PROJECTION_NAPTIME	1000
#define ES_MIN_PROJECTION_NAPTIME		10
#define ES_MAX_PROJECTION_NAPTIME		(3600 * 1000)
#define ES_DEFAULT_PROJECTION_IDLE_TIMEOUT	60000
#define ES_MIN_PROJECTION_IDLE_TIMEOUT	100
#define ES_MAX_PROJECTION_IDLE_TIMEOUT	(3600 * 1000)

/* stats.c: category and group names are kept up to this many bytes (with the NUL) */
#define ES_STATS_NAME_LEN		64
#define ES_DEFAULT_STATS_MAX_CATEGORIES	1000
#define ES_MAX_STATS_MAX_CATEGORIES		100000

/* GUCs (es_ext.c) */
extern int	es_max_batch_events;
extern int	es_max_batch_size;
extern int	es_max_event_size;

/* crypto.c: an event's "personal" declaration (crypto-shredding) */
#define ES_MAX_PERSONAL_FIELDS	64	/* fields per declaration */

typedef struct EsPersonal
{
	char	   *subject;		/* the data subject's opaque id */
	int			nfields;
	char	  **fields;			/* keys of data, or dotted paths into it */
} EsPersonal;

/* batch.c: the JSON batch of es_append, parsed and validated */
typedef struct EsEvent
{
	bool		has_id;			/* id given by the caller? */
	pg_uuid_t	id;
	text	   *type;
	int32		schema_version;	/* "schema_version", default 1 */
	Jsonb	   *data;
	Jsonb	   *metadata;		/* NULL when absent or JSON null */
	ArrayType  *tags;			/* text[], NULL when absent, null or [] */
	EsPersonal *personal;		/* NULL unless declared */
} EsEvent;

extern EsEvent *EsParseBatch(Jsonb *batch, int *count, bool *with_ids);
extern void EsCheckUserEventType(const char *type, int len);
extern const char *EsJsonbTypeName(JsonbValue *v);
extern ArrayType *EsJsonStringArray(JsonbValue *v, const char *what, int max_items);

/* crypto.c: personal fields encrypted at append, decrypted on read */
typedef struct EsDecryptor EsDecryptor;

extern void EsParsePersonal(JsonbValue *v, EsEvent *ev);
extern void EsCheckPersonal(EsEvent *ev);
extern void EsCheckReservedMetadata(Jsonb *metadata);
extern void EsEncryptEvents(EsEvent *events, int n);
extern const char *EsPersonalStoredDiffers(const EsEvent *ev, Jsonb *stored_data,
										   Jsonb *stored_metadata);
extern EsDecryptor *EsDecryptorBegin(Oid role);
extern bool EsDecryptorAllowed(const EsDecryptor *d);
extern bool EsHasPersonal(Datum metadata, bool isnull);
extern Jsonb *EsDecryptData(EsDecryptor *d, Jsonb *data);
struct EsEventAttrs;
extern HeapTuple EsDecryptTuple(HeapTuple tuple, TupleDesc desc,
								const struct EsEventAttrs *attrs, Oid role);

/*
 * Consistency across streams (issue 17): tags, queries (query.c) and
 * conditional appends (condition.c).
 */

/* tags per event, items per query, event types per query item */
#define ES_MAX_EVENT_TAGS		32
#define ES_MAX_QUERY_ITEMS		32
#define ES_MAX_QUERY_TYPES		64
/* condition.c: an append with more lock keys than this locks coarse buckets */
#define ES_DCB_FINE_KEYS		16
/* condition.c: fine writer keys one transaction takes before its appends lock coarse buckets */
#define ES_DCB_XACT_FINE_KEYS	64
/* condition.c: fine condition keys one transaction may lock (each is a shared lock table entry) */
#define ES_DCB_XACT_CONDITION_KEYS	256
/* condition.c: coarse buckets of lock keys */
#define ES_DCB_BUCKETS			64
/* condition.c: a cursor older than this many transaction ids is checked through the item's indexes */
#define ES_DCB_RECENT_XIDS		1000
/* read.c: es_read_query statements kept prepared per backend (one per query shape) */
#define ES_QUERY_PLANS			32
/* condition.c: rows fetched at a time while the condition skips the transaction's own events */
#define ES_DCB_CHECK_FETCH		100

/* one item of a query: types OR'ed, tags AND'ed; NULL = no restriction */
typedef struct EsQueryItem
{
	ArrayType  *types;			/* text[] or NULL */
	ArrayType  *tags;			/* text[] or NULL */
} EsQueryItem;

/* a query: items OR'ed */
typedef struct EsQuery
{
	int			nitems;
	EsQueryItem *items;
} EsQuery;

extern EsQuery *EsParseQuery(Jsonb *query, const char *what, bool for_condition);
extern void EsLockWrite(const EsEvent *events, int n, const EsQuery *condition);
extern int32 EsCheckConditionCursor(int32 era, Datum tx_id, int64 position);
extern void EsCheckCondition(const char *stream, const EsQuery *condition,
							 bool have_after, int32 era, Datum tx_id, int64 position, int32 current_era);
extern void EsLockAllForImport(void);
extern void EsGenerateEventId(pg_uuid_t *id);
extern void EsCheckMetadataIds(Jsonb *metadata);

/* import.c: es_import reads its source in chunks of this many rows (one INSERT each) */
#define ES_IMPORT_CHUNK_ROWS	10000
/* import.c: while checking the source, progress shows every this many rows */
#define ES_IMPORT_PROGRESS_ROWS	100000

/* append.c: checks every writer of es.events shares (es_append, es_import) */
extern void EsRefuseBeforeRowTriggers(Oid relid, const char *relname);
extern bool EsStoredIdInStream(Datum stream, const pg_uuid_t *ids, int n, pg_uuid_t *found);
extern bool EsStoredEventHash(Datum stream, int64 version, uint8 *out);
extern void EsRefuseStreamState(const char *stream, bool archived, bool erased);

/* fingerprint.c: SHA-256 digests (snapshot keys, fingerprints) */
typedef pg_cryptohash_ctx EsHash;

#define ES_HASH_LENGTH			PG_SHA256_DIGEST_LENGTH

extern EsHash *EsHashBegin(void);
extern void EsHashRaw(EsHash *ctx, const void *p, size_t len);
extern void EsHashCString(EsHash *ctx, const char *s);
extern void EsHashBytes(EsHash *ctx, const char *p, int32 len);
extern void EsHashString(EsHash *ctx, const char *s);
extern void EsHashEnd(EsHash *ctx, uint8 *digest);
extern Datum EsHashEndDatum(EsHash *ctx);

/*
 * chain.c: the hash chain of a stream (issue 15): es.events.hash of each
 * event chains it to its predecessor in the stream.
 */
typedef struct EsHashInput
{
	text	   *stream;
	int64		version;
	const pg_uuid_t *id;
	text	   *type;
	int32		schema_version;
	Jsonb	   *data;
	Jsonb	   *metadata;		/* NULL when absent */
	ArrayType  *tags;			/* NULL when absent */
	TimestampTz recorded_at;
} EsHashInput;

extern void EsEventHash(const uint8 *prev, const EsHashInput *in, uint8 *out);
extern Datum EsHashDatum(const uint8 *hash);
extern bool EsHashFromDatum(Datum d, uint8 *out);

/*
 * append.c: the one event es_ext appends itself (an erasure's tombstone),
 * to a stream whose row the caller already changed in this transaction.
 */
extern void EsAppendSystemEvent(text *stream, const char *type, Jsonb *data, Jsonb *metadata);

/* crypto.c: encrypt the declared personal fields of a batch, before it is hashed and stored */
extern void EsEncryptEvents(EsEvent *events, int n);

/* cache.c: per-backend caches of es_ext tables, one invalidation mechanism */
typedef struct EsTableCache
{
	/* set by the owner */
	const char *relname;		/* the cached table, in schema es */
	const char *cxt_name;		/* identifier of its memory context (a literal) */
	bool		watch_functions;	/* stale on any change of a function, too */
	/* builds the data in CurrentMemoryContext from rel read with snap */
	void	   *(*load) (Relation rel, Snapshot snap);
	/* state, kept by cache.c */
	Oid			relid;
	bool		valid;
	bool		linked;
	uint64		invalidations;	/* invalidations seen so far */
	MemoryContext cxt;
	void	   *data;
	struct EsTableCache *next;
} EsTableCache;

#define ES_TABLE_CACHE(relname, cxt_name, watch_functions, load) \
	{(relname), (cxt_name), (watch_functions), (load), InvalidOid, false, false, 0, NULL, NULL, NULL}

extern void *EsTableCacheGet(EsTableCache *cache);
extern AttrNumber EsTableCacheAttnum(Relation rel, const char *name);
extern Datum EsTableCacheTrigger(FunctionCallInfo fcinfo, const char *fname);

/* guard.c: let exactly one statement write the given es_ext table */
extern void EsAllowNextWrite(Oid relid, uint32 event);
extern void EsAllowNextUpsert(Oid relid);
extern void EsClearAllowedWrite(void);
extern void EsCheckWritable(const char *what);

/* stats.c: counters in shared memory (no-ops unless preloaded) */
extern bool es_track_stats;
extern int	es_stats_max_categories;
extern void EsStatsRegister(void);
extern void EsStatsAppendBegin(instr_time *start);
extern void EsStatsAppendEnd(const instr_time *start, const char *stream, int len,
							 const EsEvent *events, int n, bool replay);
extern void EsStatsAppendFailed(const char *stream, int len, bool conflict);
extern void EsStatsRead(const char *name, int len, bool log, bool found);
extern void EsStatsFold(const char *stream, int len, bool snapshot_hit, bool found);
extern void EsStatsOutbox(text *group, int64 claimed, int64 acked, int64 nacked, int64 dead);

/* stream_scan.c: the events of one stream, in version order (read.c, fold.c) */
typedef struct EsStreamScan
{
	TupleDesc	evdesc;			/* es.events' row type */
	bool		backward;
	bool		done;
	int64		remaining;		/* rows still to return; -1: no limit */
	bool		direct;			/* direct index scan, not SPI */
	/* direct index scan */
	Relation	heap;
	Relation	index;
	Snapshot	snapshot;
	struct IndexScanDescData *scan;
	struct TupleTableSlot *slot;
	ScanKeyData keys[3];
	/* SPI cursor */
	Portal		portal;
	SPITupleTable *tuptable;
	uint64		ntuples;
	uint64		next;
	bool		exhausted;
	HeapTupleHeader row;		/* current row as a composite datum */
	HeapTupleData rowtuple;		/* the same, as a tuple */
	/* archived streams (lifecycle.c): read es.archived_events when es.events has none */
	text	   *stream;
	int64		first;
	int64		last;
	int64		max_count;
	bool		found;			/* returned a row */
	bool		archived;		/* now reading es.archived_events */
} EsStreamScan;
extern void EsStreamScanBegin(EsStreamScan *ss, TupleDesc evdesc, text *stream,
							  int64 first, int64 last, bool backward, int64 max_count);
extern bool EsStreamScanNext(EsStreamScan *ss);
extern HeapTuple EsStreamScanTuple(EsStreamScan *ss);
extern void EsStreamScanValues(EsStreamScan *ss, Datum *values, bool *nulls);
extern Datum EsStreamScanRow(EsStreamScan *ss);
extern void EsStreamScanEnd(EsStreamScan *ss);

/* read.c: the global log horizon and cursors */
extern FullTransactionId EsLogHorizon(Snapshot snap);
extern void EsParseCursor(HeapTupleHeader cursor, int32 *era, Datum *tx_id, int64 *position);

/* replica.c: es_ext on a logical replication subscriber */
typedef enum EsLogAccess
{
	ES_LOG_READ_ALL,			/* es_read_all */
	ES_LOG_APPEND				/* es_append */
} EsLogAccess;

extern void EsCheckNotSubscriber(EsLogAccess access);

/* projection.c: events fed through a projection trigger (replays, async projections) */
typedef struct EsReplay EsReplay;
extern Trigger *EsFindProjectionTrigger(Relation rel, const char *tgname);
extern EsReplay *EsReplayBegin(Relation rel, const char *tgname);
extern void EsReplayEvent(EsReplay *r, HeapTupleHeader event);
extern void EsReplayEnd(EsReplay *r);
extern int32 EsReplayRange(const char *tgname, Datum *cur, int32 max_count, bool to_head);

/* async.c: asynchronous projections (issue 13) */
#define ES_ASYNC_MAX_BATCH			100000	/* largest batch_size */
#define ES_ASYNC_MAX_RETRIES		1000	/* largest max_retries */
#define ES_ASYNC_RETRY_BASE_MS		200		/* first retry delay, doubled per attempt */
#define ES_ASYNC_RETRY_MAX_MS		60000	/* longest retry delay */

extern int32 EsAsyncReplayRange(const char *projection, Datum *cur, int32 max_count, bool to_head);
extern void EsAsyncSwitchMode(const char *projection, bool to_async, const Datum *cur);
extern bool EsAsyncIsRegistered(const char *projection, bool lock);

/* projection_worker.c: the background workers of asynchronous projections */
extern int	es_projection_naptime;
extern int	es_projection_worker_idle_timeout;
extern bool es_projection_workers;
extern void EsProjectionWorkerRegister(void);
extern void EsProjectionLauncherBegin(void);
extern void EsProjectionLauncherTick(TimestampTz now);
extern void EsProjectionWorkerRequest(void);
extern void EsProjectionWakeAtCommit(void);

/* wait.c: es_wait_for sleepers */
#define ES_WAIT_RECHECK_MS		1000	/* longest sleep between two checks (preloaded) */
#define ES_WAIT_POLL_MIN_MS		10		/* without preload: first poll interval, */
#define ES_WAIT_POLL_MAX_MS		100		/* doubled up to this */
extern void EsWaitRegister(void);
extern void EsWaitWakeAtCommit(void);

/* dump.c: what makes a logical dump restore */
extern bool EsRestoreCopy(Relation rel);
extern bool EsOwnTrigger(const Trigger *trig);
extern void EsRestoreCopyBegin(Relation rel);

/* tenant.c: tenant isolation (issue 15; the policies: 85_tenancy.sql) */
#define ES_TENANT_POLICY "es_tenant"
#define ES_TENANT_BASE_POLICY "es_tenant_base"
extern void EsTenantCheckStream(Datum stream);
extern void EsTenantCheckSubject(Datum subject);
extern bool EsTenantOwnsSubject(Datum subject);
extern bool EsTenantPoliciesOnly(Relation rel);
extern bool EsTenantOwnsStream(Datum stream);

/* era.c: the leading part of the log cursor (all need SPI) */
extern int32 EsCurrentEra(void);
extern int32 EsAppendEra(void);
extern bool EsForeignTransactionId(Datum tx_id);

/* spi_util.c: saved plans and catalog lookups */
typedef struct EsPlan
{
	SPIPlanPtr	plan;
	const char *sql;
	int			nargs;
	Oid			argtypes[12];
} EsPlan;

extern SPIPlanPtr EsGetPlan(EsPlan *p);
extern SPIPlanPtr EsGetGenericPlan(EsPlan *p);
extern SPIPlanPtr EsGetPlanOptions(EsPlan *p, int cursorOptions);
extern Oid	EsSchemaOid(void);
extern Oid	EsRelationOid(const char *relname);
extern Oid	EsTypeOid(const char *typname);

/* Citus (issue 16): citus.c */
extern bool EsCitusPresent(void);
extern Oid	EsLogicalRelid(Relation rel, const char **relname);
extern Oid	EsLocalPlacement(Oid relid);
extern bool EsDistributed(void);
extern void EsRefuseDistributed(const char *fname, const char *hint);
extern void EsCitusRegister(void);
extern void EsCheckNodeRange(int64 position);

/*
 * Folding, snapshots and upcasting (issue 3): fold.c, fold_agg.c, snapshot.c,
 * upcast.c, event.c, routine.c.
 */

/* GUC es.snapshot_every (es_ext.c): automatic snapshot interval, 0 = off */
extern int	es_snapshot_every;

/* event.c: one event as reducers and upcasters see it */
typedef struct EsEventView
{
	Datum		global_position;	/* int8 */
	Datum		stream_id;		/* text */
	Datum		version;		/* int8 */
	Datum		event_id;		/* uuid */
	Datum		event_type;		/* text */
	int32		schema_version;
	Datum		data;			/* jsonb */
	Datum		metadata;		/* jsonb; meaningless when metadata_isnull */
	bool		metadata_isnull;
	Datum		recorded_at;	/* timestamptz */
} EsEventView;

/* attribute numbers (1-based) of the es.events columns in a row descriptor */
typedef struct EsEventAttrs
{
	AttrNumber	global_position;
	AttrNumber	stream_id;
	AttrNumber	version;
	AttrNumber	event_id;
	AttrNumber	event_type;
	AttrNumber	schema_version;
	AttrNumber	data;
	AttrNumber	metadata;
	AttrNumber	recorded_at;
	int			natts;
} EsEventAttrs;

extern void EsEventAttrsInit(EsEventAttrs *attrs, TupleDesc desc);
extern void EsEventViewFromValues(EsEventView *ev, const EsEventAttrs *attrs,
								  Datum *values, bool *nulls);
extern Jsonb *EsEventEnvelope(const EsEventView *ev);

/* routine.c: user functions called by es_ext (reducers, upcasters) */
typedef enum EsRoutineKind
{
	ES_ROUTINE_REDUCER,
	ES_ROUTINE_UPCASTER
} EsRoutineKind;

/* what EsCheckRoutine returns for a reducer: the type of its event argument */
#define ES_EVENT_AS_JSONB	1
#define ES_EVENT_AS_ROW		2

extern int	EsCheckRoutine(Oid fn, EsRoutineKind kind, bool check_execute);
extern void EsHashRoutine(Oid fn, EsHash *hash);
extern char *EsRoutineSignature(Oid fn);

/* routine.c: registered code runs as its owner (EsRunAsBegin .. EsRunAsEnd) */
typedef struct EsRunAs
{
	Oid			save_userid;
	int			save_sec_context;
	int			save_nestlevel; /* 0: the caller is the owner, nothing changed */
} EsRunAs;

#define ES_SAFE_SEARCH_PATH "pg_catalog, pg_temp"

extern void EsCheckRunAs(Oid fn, Oid owner, const char *what);
extern void EsRunAsBegin(EsRunAs *ra, Oid owner);
extern void EsRunAsEnd(EsRunAs *ra);

/* upcast.c: the upcaster registry and its application on read */
typedef struct EsUpcaster EsUpcaster;

extern EsUpcaster *EsUpcasterBegin(void);
extern bool EsUpcastEvent(EsUpcaster *u, EsEventView *ev);
extern HeapTuple EsUpcastEventTuple(EsUpcaster *u, HeapTuple tuple, TupleDesc desc,
									const EsEventAttrs *attrs);
extern HeapTuple EsUpcastRow(EsUpcaster *u, HeapTuple tuple, TupleDesc desc);
extern bool EsUpcasterSawPersonal(EsUpcaster *u);
extern void EsUpcastRegistryHash(EsHash *hash);

/* fold.c: the fold itself */
typedef struct EsFoldRequest
{
	text	   *stream;
	Oid			reducer;
	Jsonb	   *initial;
	int64		up_to_version;	/* PG_INT64_MAX when not bounded */
	bool		has_as_of;
	TimestampTz as_of;
	bool		auto_snapshot;	/* may write an automatic snapshot */
} EsFoldRequest;

typedef struct EsFoldResult
{
	Jsonb	   *state;			/* in the caller's memory context */
	int64		version;		/* version the state is at (0: no event) */
	int64		snapshot_version;	/* snapshot started from, 0 if none */
	int64		applied;		/* events passed to the reducer */
	bool		personal;		/* decrypted personal fields (crypto.c) */
} EsFoldResult;

extern void EsFold(const EsFoldRequest *req, EsFoldResult *res);

/* snapshot.c: stored states */
typedef struct EsSnapshotKey
{
	bool		usable;			/* false: snapshots are neither read nor written */
	Datum		stream;			/* text */
	Datum		reducer;		/* text: qualified signature */
	Datum		initial_hash;	/* bytea */
	Datum		fingerprint;	/* bytea */
} EsSnapshotKey;

extern void EsSnapshotKeyInit(EsSnapshotKey *key, text *stream, Oid reducer, Jsonb *initial);
extern bool EsSnapshotFind(const EsSnapshotKey *key, int64 up_to_version, bool has_as_of,
						   TimestampTz as_of, MemoryContext cxt, int64 *version,
						   Jsonb **state);
extern bool EsSnapshotAutoSaveAllowed(const EsSnapshotKey *key);
extern void EsSnapshotWrite(const EsSnapshotKey *key, int64 version, Jsonb *state,
							bool automatic);

/*
 * Outbox (issue 5): outbox.c, notify.c
 */

/* es.notify (es_ext.c): how a commit that wrote outbox deliveries wakes consumers */
typedef enum EsNotifyMode
{
	ES_NOTIFY_OFF,				/* no wake-up: consumers poll */
	ES_NOTIFY_COMMIT,			/* the committing transaction sends NOTIFY itself */
	ES_NOTIFY_WORKER			/* a background worker sends one coalesced NOTIFY */
} EsNotifyMode;

/* the LISTEN/NOTIFY channel of the wake-ups (the payload is always empty) */
#define ES_NOTIFY_CHANNEL		"es_outbox"

extern int	es_notify_mode;
extern int	es_notify_worker_idle_timeout;
extern int	es_notify_worker_interval;

/* outbox.c: one event of an append, as the outbox sees it */
typedef struct EsOutboxEvent
{
	Datum		id;				/* uuid */
	text	   *type;
	int32		schema_version;
	Jsonb	   *data;
	Jsonb	   *metadata;		/* NULL when absent */
} EsOutboxEvent;

extern bool EsOutboxActive(void);
extern void EsOutboxAppend(text *stream, int n, int64 first_version, const int64 *positions,
						   const EsOutboxEvent *events, Datum recorded_at);

/* guard.c: run a saved plan that writes an es_ext table, past its guard */
extern int	EsGuardedWrite(EsPlan *p, Oid relid, uint32 event, Datum *values,
						   const char *nulls, Snapshot snapshot, int expected_rc);

/* outbox_api.c: the lock that orders the consumer groups */
extern Snapshot EsOutboxLockGroups(LOCKMODE mode);

/* notify.c: wake-ups and the notify worker */
extern void EsNotifyRegister(void);
extern void EsNotifyRequest(void);

/*
 * lifecycle.c, retention.c: archive, erasure, retention (issue 15)
 */

/* event type of the tombstone es_erase_stream appends */
#define ES_TOMBSTONE_TYPE		"es.stream_erased"

/* es_apply_retention: largest batch_size */
#define ES_RETENTION_MAX_BATCH	1000000

/* the es.streams row of a stream, as the lifecycle functions lock it */
typedef struct EsStreamState
{
	int64		version;
	int64		first_version;
	bytea	   *base_hash;		/* NULL: the chain starts at zeros */
	bool		archived;
	bool		erased;
} EsStreamState;

/* retention_worker.c: the periodic retention of one database (preloaded) */
#define ES_RETENTION_WORKER_BATCH		10000	/* events per transaction */
#define ES_RETENTION_WORKER_ROUNDS		100		/* transactions per interval, at most */
#define ES_RETENTION_WORKER_RESTART_S	60		/* after an error */
#define ES_MAX_RETENTION_INTERVAL		(7 * 86400)	/* seconds */
extern int	es_retention_interval;
extern char *es_retention_database;
extern char *es_retention_role;
extern void EsRetentionWorkerRegister(void);

extern text *EsCheckStreamArg(FunctionCallInfo fcinfo, int argno);
extern bool EsLockStream(text *stream, bool skip_locked, EsStreamState *st);

#endif							/* ES_EXT_H */
