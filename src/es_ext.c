/*-------------------------------------------------------------------------
 *
 * es_ext.c
 *	  Module magic and initialization of es_ext.
 *
 * _PG_init only registers the extension's settings and, when the library is
 * in shared_preload_libraries, the shared memory of the statistics
 * (stats.c), of the projection workers (projection_worker.c), of the
 * outbox notify workers with the launcher of both kinds of worker
 * (notify.c) and of the es_wait_for sleepers (wait.c); everything else
 * lives in one file per concern (append.c, read.c, guard.c, outbox.c, ...).
 *
 * src/es_ext.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "fmgr.h"
#include "miscadmin.h"
#include "utils/guc.h"

#include "es_ext.h"

PG_MODULE_MAGIC;

/* Largest batch accepted by es_append, in events. */
int			es_max_batch_events = ES_DEFAULT_MAX_BATCH_EVENTS;

/* Largest batch accepted by es_append, in bytes of its JSON. */
int			es_max_batch_size = ES_DEFAULT_MAX_BATCH_SIZE;

/* Largest single event accepted by es_append, in bytes of its JSON. */
int			es_max_event_size = ES_DEFAULT_MAX_EVENT_SIZE;

/* es_fold writes a snapshot after folding this many events (0 = never). */
int			es_snapshot_every = ES_DEFAULT_SNAPSHOT_EVERY;

/* How a commit that wrote outbox deliveries wakes consumers (notify.c). */
int			es_notify_mode = ES_NOTIFY_COMMIT;

/* A notify worker exits after this many milliseconds without work. */
int			es_notify_worker_idle_timeout = ES_DEFAULT_NOTIFY_IDLE_TIMEOUT;

/* A notify worker sends at most one NOTIFY per this many milliseconds. */
int			es_notify_worker_interval = ES_DEFAULT_NOTIFY_INTERVAL;

/* Asynchronous projections run in background workers (projection_worker.c). */
bool		es_projection_workers = true;

/* A projection worker with nothing to do sleeps this many milliseconds. */
int			es_projection_naptime = ES_DEFAULT_PROJECTION_NAPTIME;

/* A projection worker exits after this many milliseconds without work. */
int			es_projection_worker_idle_timeout = ES_DEFAULT_PROJECTION_IDLE_TIMEOUT;

static const struct config_enum_entry notify_options[] = {
	{"off", ES_NOTIFY_OFF, false},
	{"commit", ES_NOTIFY_COMMIT, false},
	{"worker", ES_NOTIFY_WORKER, false},
	{NULL, 0, false}
};

void		_PG_init(void);

void
_PG_init(void)
{
	DefineCustomIntVariable("es.max_batch_events",
							"Sets the largest number of events es_append accepts in one batch.",
							NULL,
							&es_max_batch_events,
							ES_DEFAULT_MAX_BATCH_EVENTS,
							1,
							INT_MAX,
							PGC_SUSET,
							0,
							NULL, NULL, NULL);

	DefineCustomIntVariable("es.max_batch_size",
							"Sets the largest batch es_append accepts, in bytes of its JSON.",
							NULL,
							&es_max_batch_size,
							ES_DEFAULT_MAX_BATCH_SIZE,
							ES_MIN_MAX_BATCH_SIZE,
							INT_MAX,
							PGC_SUSET,
							GUC_UNIT_BYTE,
							NULL, NULL, NULL);

	DefineCustomIntVariable("es.max_event_size",
							"Sets the largest event es_append accepts, in bytes of its JSON.",
							NULL,
							&es_max_event_size,
							ES_DEFAULT_MAX_EVENT_SIZE,
							ES_MIN_MAX_EVENT_SIZE,
							INT_MAX,
							PGC_SUSET,
							GUC_UNIT_BYTE,
							NULL, NULL, NULL);

	DefineCustomIntVariable("es.snapshot_every",
							"Sets after how many folded events es_fold stores an automatic snapshot.",
							"0 turns automatic snapshots off.",
							&es_snapshot_every,
							ES_DEFAULT_SNAPSHOT_EVERY,
							0,
							INT_MAX,
							PGC_USERSET,
							0,
							NULL, NULL, NULL);

	/* the best available mode is the default: worker when preloaded */
	DefineCustomEnumVariable("es.notify",
							 "Sets how a commit that wrote outbox deliveries wakes the consumers.",
							 "off: no wake-up; commit: the transaction sends NOTIFY es_outbox; "
							 "worker: a background worker sends it (needs shared_preload_libraries).",
							 &es_notify_mode,
							 process_shared_preload_libraries_in_progress ?
							 ES_NOTIFY_WORKER : ES_NOTIFY_COMMIT,
							 notify_options,
							 PGC_USERSET,
							 0,
							 NULL, NULL, NULL);

	DefineCustomIntVariable("es.notify_worker_idle_timeout",
							"Sets how long an outbox notify worker waits for work before it exits.",
							NULL,
							&es_notify_worker_idle_timeout,
							ES_DEFAULT_NOTIFY_IDLE_TIMEOUT,
							ES_MIN_NOTIFY_IDLE_TIMEOUT,
							ES_MAX_NOTIFY_IDLE_TIMEOUT,
							PGC_SIGHUP,
							GUC_UNIT_MS,
							NULL, NULL, NULL);

	DefineCustomIntVariable("es.notify_worker_interval",
							"Sets the shortest time between two NOTIFYs of an outbox notify worker.",
							"The commits of that interval share one notification; 0 notifies as fast as possible.",
							&es_notify_worker_interval,
							ES_DEFAULT_NOTIFY_INTERVAL,
							0,
							ES_MAX_NOTIFY_INTERVAL,
							PGC_SIGHUP,
							GUC_UNIT_MS,
							NULL, NULL, NULL);

	DefineCustomBoolVariable("es.track_stats",
							 "Collects es_ext statistics (appends, reads, folds, outbox traffic).",
							 "Needs es_ext in shared_preload_libraries; see the view es.stats.",
							 &es_track_stats,
							 true,
							 PGC_SUSET,
							 0,
							 NULL, NULL, NULL);

	DefineCustomBoolVariable("es.projection_workers",
							 "Runs asynchronous projections in background workers.",
							 "Needs es_ext in shared_preload_libraries; off: run them with es_run_projections.",
							 &es_projection_workers,
							 true,
							 PGC_SIGHUP,
							 0,
							 NULL, NULL, NULL);

	DefineCustomIntVariable("es.projection_naptime",
							"Sets how long a projection worker sleeps when no projection has work.",
							"An append wakes it earlier.",
							&es_projection_naptime,
							ES_DEFAULT_PROJECTION_NAPTIME,
							ES_MIN_PROJECTION_NAPTIME,
							ES_MAX_PROJECTION_NAPTIME,
							PGC_SIGHUP,
							GUC_UNIT_MS,
							NULL, NULL, NULL);

	DefineCustomIntVariable("es.projection_worker_idle_timeout",
							"Sets how long a projection worker waits for work before it exits.",
							NULL,
							&es_projection_worker_idle_timeout,
							ES_DEFAULT_PROJECTION_IDLE_TIMEOUT,
							ES_MIN_PROJECTION_IDLE_TIMEOUT,
							ES_MAX_PROJECTION_IDLE_TIMEOUT,
							PGC_SIGHUP,
							GUC_UNIT_MS,
							NULL, NULL, NULL);

	DefineCustomIntVariable("es.retention_interval",
							"Sets how often the retention worker applies the retention policies.",
							"0 turns the worker off; it exists only when es_ext is preloaded and this is above 0 at server start.",
							&es_retention_interval,
							0,
							0,
							ES_MAX_RETENTION_INTERVAL,
							PGC_SIGHUP,
							GUC_UNIT_S,
							NULL, NULL, NULL);

	/*
	 * Only when preloaded: the statistics (their size is fixed at startup,
	 * and a PGC_POSTMASTER setting cannot be defined later) and the shared
	 * state and launcher of the worker notify mode.
	 */
	if (process_shared_preload_libraries_in_progress)
	{
		DefineCustomIntVariable("es.stats_max_categories",
								"Sets how many stream categories and consumer groups es_ext keeps statistics for.",
								"Past that, they are counted in their database's statistics only.",
								&es_stats_max_categories,
								ES_DEFAULT_STATS_MAX_CATEGORIES,
								0,
								ES_MAX_STATS_MAX_CATEGORIES,
								PGC_POSTMASTER,
								0,
								NULL, NULL, NULL);
		DefineCustomStringVariable("es.retention_database",
								   "Sets the database the retention worker applies the retention policies in.",
								   NULL,
								   &es_retention_database,
								   "postgres",
								   PGC_POSTMASTER,
								   0,
								   NULL, NULL, NULL);
		DefineCustomStringVariable("es.retention_role",
								   "Sets the role the retention worker runs as.",
								   "A role holding es_admin; the worker does not run without it.",
								   &es_retention_role,
								   "",
								   PGC_POSTMASTER,
								   0,
								   NULL, NULL, NULL);
		EsStatsRegister();
		EsCitusRegister();
		EsRetentionWorkerRegister();
		EsProjectionWorkerRegister();
		EsNotifyRegister();
		EsWaitRegister();
	}

	MarkGUCPrefixReserved("es");
}
