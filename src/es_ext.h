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
#include "access/transam.h"
#include "access/tupdesc.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "utils/jsonb.h"
#include "utils/rel.h"
#include "utils/reltrigger.h"
#include "utils/snapshot.h"
#include "utils/timestamp.h"

/* Name of the constraint reported with every expected-version conflict. */
#define ES_EXPECTED_VERSION_CONSTRAINT "es_expected_version"

/* Expected-version spellings accepted by es_append (NULL means "any"). */
#define ES_EXPECT_STREAM_EXISTS	(-1)
#define ES_EXPECT_NO_STREAM		0

/* Longest stream id and event type accepted, in bytes (they are indexed). */
#define ES_MAX_NAME_BYTES		1024

/* GUCs (es_ext.c) */
extern int	es_max_batch_events;
extern int	es_max_batch_size;
extern int	es_max_event_size;

/* guard.c: let exactly one statement write the given es_ext table */
extern void EsAllowNextWrite(Oid relid, uint32 event);
extern void EsClearAllowedWrite(void);

/* read.c: the global log horizon and cursors */
extern FullTransactionId EsLogHorizon(Snapshot snap);
extern void EsParseCursor(HeapTupleHeader cursor, int32 *era, Datum *tx_id, int64 *position);

/* dump.c: what makes a logical dump restore */
extern bool EsRestoreCopy(Relation rel);
extern bool EsOwnTrigger(const Trigger *trig);
extern void EsRestoreCopyBegin(Relation rel);

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
	Oid			argtypes[10];
} EsPlan;

extern SPIPlanPtr EsGetPlan(EsPlan *p);
extern Oid	EsSchemaOid(void);
extern Oid	EsRelationOid(const char *relname);
extern Oid	EsTypeOid(const char *typname);

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
extern void EsHashRoutine(Oid fn, void *hashctx);
extern char *EsRoutineSignature(Oid fn);

/* upcast.c: the upcaster registry and its application on read */
typedef struct EsUpcaster EsUpcaster;

extern EsUpcaster *EsUpcasterBegin(void);
extern bool EsUpcastEvent(EsUpcaster *u, EsEventView *ev);
extern HeapTuple EsUpcastEventTuple(EsUpcaster *u, HeapTuple tuple, TupleDesc desc,
									const EsEventAttrs *attrs);
extern HeapTuple EsUpcastRow(EsUpcaster *u, HeapTuple tuple, TupleDesc desc);
extern void EsUpcastRegistryHash(void *hashctx);

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

/* notify.c: wake-ups and the notify worker */
extern void EsNotifyRegister(void);
extern void EsNotifyRequest(void);

#endif							/* ES_EXT_H */
