/*-------------------------------------------------------------------------
 *
 * retention_worker.c
 *	  The background worker that applies the retention policies
 *	  periodically, when es_ext is in shared_preload_libraries and
 *	  es.retention_interval is above zero at server start.
 *
 * One static background worker, connected to one database
 * (es.retention_database, as pg_cron's cron.database_name) as the role
 * es.retention_role.  It never runs as a superuser of its own choosing:
 * es_apply_retention deletes rows of es.events, es.snapshots and updates
 * es.streams, so the DELETE and UPDATE triggers that a role holding TRIGGER
 * on those tables created run during retention, and they must run as a role
 * the operator chose (one holding es_admin).  Without es.retention_role the
 * worker logs why and exits.
 *
 * Every es.retention_interval it calls es.es_apply_retention(batch) in a
 * transaction of its own, again while the call reports "more", at most
 * ES_RETENTION_WORKER_ROUNDS times per interval (so one large backlog does
 * not keep a transaction-long lock on many streams, and a reload or a
 * shutdown is seen between rounds).  A database without es_ext, or with a
 * version without es_apply_retention, is checked again at the next
 * interval.  An error ends the worker; the postmaster starts it again after
 * ES_RETENTION_WORKER_RESTART_S seconds.  A reload changes the interval (0
 * pauses the worker); turning it on from 0 needs a restart.  Other
 * databases: call es_apply_retention from pg_cron (README, "Retention").
 *
 * src/retention_worker.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "tcop/tcopprot.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/snapmgr.h"
#include "utils/wait_event.h"

#include "es_ext.h"

int			es_retention_interval = 0;
char	   *es_retention_database = NULL;
char	   *es_retention_role = NULL;

PGDLLEXPORT void es_retention_worker_main(Datum main_arg);

/*
 * EsRetentionWorkerRegister
 *		Register the worker, from _PG_init while preloading, when
 *		es.retention_interval is above zero.
 */
void
EsRetentionWorkerRegister(void)
{
	BackgroundWorker worker;

	if (es_retention_interval <= 0)
		return;
	memset(&worker, 0, sizeof(worker));
	worker.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	worker.bgw_start_time = BgWorkerStart_RecoveryFinished;
	worker.bgw_restart_time = ES_RETENTION_WORKER_RESTART_S;
	snprintf(worker.bgw_library_name, BGW_MAXLEN, "es_ext");
	snprintf(worker.bgw_function_name, BGW_MAXLEN, "es_retention_worker_main");
	snprintf(worker.bgw_name, BGW_MAXLEN, "es_ext retention worker");
	snprintf(worker.bgw_type, BGW_MAXLEN, "es_ext retention worker");
	RegisterBackgroundWorker(&worker);
}

/*
 * apply_once
 *		One transaction: es_apply_retention(ES_RETENTION_WORKER_BATCH) if
 *		this database has it.  Returns its "more" (false without it).
 */
static bool
apply_once(void)
{
	bool		more = false;
	int			rc;

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	PushActiveSnapshot(GetTransactionSnapshot());
	pgstat_report_activity(STATE_RUNNING, "es_apply_retention");

	rc = SPI_execute("SELECT FROM pg_catalog.pg_proc AS p"
					 "  JOIN pg_catalog.pg_namespace AS n ON n.oid OPERATOR(pg_catalog.=) p.pronamespace"
					 " WHERE n.nspname OPERATOR(pg_catalog.=) 'es'"
					 "   AND p.proname OPERATOR(pg_catalog.=) 'es_apply_retention'",
					 true, 1);
	if (rc == SPI_OK_SELECT && SPI_processed == 1)
	{
		char		sql[128];
		bool		isnull;

		snprintf(sql, sizeof(sql), "SELECT r.more FROM es.es_apply_retention(%d) AS r",
				 ES_RETENTION_WORKER_BATCH);
		rc = SPI_execute(sql, false, 1);
		if (rc != SPI_OK_SELECT || SPI_processed != 1)
			elog(ERROR, "es_apply_retention failed: %s", SPI_result_code_string(rc));
		more = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1,
										  &isnull));
	}

	SPI_finish();
	PopActiveSnapshot();
	CommitTransactionCommand();
	pgstat_report_stat(false);
	pgstat_report_activity(STATE_IDLE, NULL);
	return more;
}

/*
 * es_retention_worker_main
 *		The worker's entry point (see the file header).
 */
void
es_retention_worker_main(Datum main_arg)
{
	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();

	if (es_retention_role == NULL || es_retention_role[0] == '\0')
	{
		ereport(LOG,
				(errmsg("es_ext retention worker exits: es.retention_role is not set"),
				 errhint("Set es.retention_role to a role that holds es_admin, then restart the server.")));
		proc_exit(0);			/* not restarted */
	}
	BackgroundWorkerInitializeConnection(es_retention_database, es_retention_role, 0);
	SetConfigOption("application_name", "es_ext retention worker", PGC_USERSET, PGC_S_SESSION);

	for (;;)
	{
		int			rounds = 0;

		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
		}
		if (es_retention_interval > 0)
		{
			while (rounds++ < ES_RETENTION_WORKER_ROUNDS && apply_once())
				CHECK_FOR_INTERRUPTS();
		}
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 (es_retention_interval > 0 ? es_retention_interval : 60) * 1000L,
						 PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
	}
}
