/*-------------------------------------------------------------------------
 *
 * guard.c
 *	  Statement-level guard trigger of the es_ext tables.
 *
 * es.events is append-only and, like es.streams and es.config, is written
 * only by es_append.  es_append runs as its caller (no SECURITY DEFINER), so
 * writers hold INSERT/UPDATE privileges on these tables; this trigger is what
 * stops them from writing directly.  Right before it executes one of its own
 * statements, es_append calls EsAllowNextWrite() with the target table and
 * command; the BEFORE STATEMENT trigger of that statement consumes the
 * permission.  The lifecycle functions (lifecycle.c, retention.c) are the
 * only callers that ask for a DELETE: of the events of a stream they erase,
 * archive or retain, and of the copies es_ext keeps of them.  Any other statement, including one issued by a user trigger
 * fired inside an append, finds no permission and is refused.  TRUNCATE is
 * always refused.
 *
 * The permission is backend-local state that lives for one statement at
 * most; callers clear it in PG_FINALLY so an error cannot leave it behind.
 *
 * Two more writes pass: a restore COPY (see dump.c), and the statements of
 * es_ext's own install and upgrade scripts.
 *
 * EsCheckWritable is the first thing every writing function of es_ext does:
 * on a hot standby, or in a read-only transaction, it refuses the call with
 * the error PostgreSQL gives for any write there (25006), before anything
 * else (an xid, the era, a lock) is attempted.
 *
 * src/guard.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "access/xlog.h"
#include "commands/extension.h"
#include "commands/trigger.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"

#include "es_ext.h"

/* The one statement currently allowed: target table and command. */
static Oid	allowed_relid = InvalidOid;
static uint32 allowed_events = 0;	/* bit (1 << command) per command */

/*
 * EsCheckWritable
 *		Refuse a write of the function named what (e.g. "es_append()") on a
 *		hot standby ("cannot execute ... during recovery") and in a read-only
 *		transaction ("cannot execute ... in a read-only transaction"), both
 *		with SQLSTATE 25006, as PostgreSQL refuses its own writing commands.
 */
void
EsCheckWritable(const char *what)
{
	if (RecoveryInProgress())
		PreventCommandDuringRecovery(what);
	PreventCommandIfReadOnly(what);
}

/*
 * EsGuardedWrite
 *		Execute a saved plan that writes the es_ext table relid with command
 *		event (TRIGGER_EVENT_INSERT, _UPDATE or _DELETE), letting its guard
 *		trigger pass that one statement.  snapshot: InvalidSnapshot for the
 *		usual one, or the snapshot to run the statement with (the outbox
 *		uses one taken after its lock, see outbox_api.c).  Returns the SPI
 *		result code, which must be expected_rc.
 *		Must be called inside SPI.
 */
int
EsGuardedWrite(EsPlan *p, Oid relid, uint32 event, Datum *values, const char *nulls,
			   Snapshot snapshot, int expected_rc)
{
	SPIPlanPtr	plan = EsGetPlan(p);
	volatile int rc = 0;

	EsAllowNextWrite(relid, event);
	PG_TRY();
	{
		if (snapshot != InvalidSnapshot)
			rc = SPI_execute_snapshot(plan, values, nulls, snapshot, InvalidSnapshot,
									  false, true, 0);
		else
			rc = SPI_execute_plan(plan, values, nulls, false, 0);
	}
	PG_FINALLY();
	{
		EsClearAllowedWrite();
	}
	PG_END_TRY();

	if (rc != expected_rc)
		elog(ERROR, "could not write \"es.%s\": %s", get_rel_name(relid),
			 SPI_result_code_string(rc));
	return rc;
}

/*
 * EsAllowNextWrite
 *		Let the next INSERT (event = TRIGGER_EVENT_INSERT) or UPDATE
 *		(TRIGGER_EVENT_UPDATE) statement on relid through the guard.
 */
void
EsAllowNextWrite(Oid relid, uint32 event)
{
	allowed_relid = relid;
	allowed_events = 1 << event;
}

/*
 * EsAllowNextUpsert
 *		Let the next INSERT ... ON CONFLICT DO UPDATE statement on relid
 *		through the guard: it fires both the INSERT and the UPDATE statement
 *		triggers.
 */
void
EsAllowNextUpsert(Oid relid)
{
	allowed_relid = relid;
	allowed_events = (1 << TRIGGER_EVENT_INSERT) | (1 << TRIGGER_EVENT_UPDATE);
}

/*
 * EsClearAllowedWrite
 *		Withdraw a permission that no statement consumed.
 */
void
EsClearAllowedWrite(void)
{
	allowed_relid = InvalidOid;
	allowed_events = 0;
}

static const char *
command_name(TriggerEvent event)
{
	if (TRIGGER_FIRED_BY_INSERT(event))
		return "INSERT into";
	if (TRIGGER_FIRED_BY_UPDATE(event))
		return "UPDATE";
	if (TRIGGER_FIRED_BY_DELETE(event))
		return "DELETE from";
	return "TRUNCATE";
}

PG_FUNCTION_INFO_V1(es_guard);

/*
 * es_guard
 *		BEFORE ... FOR EACH STATEMENT trigger on es.events, es.streams and
 *		es.config.  Returns NULL (the value is ignored for statement
 *		triggers) or raises prohibited_sql_statement_attempted.
 */
Datum
es_guard(PG_FUNCTION_ARGS)
{
	TriggerData *trigdata = (TriggerData *) fcinfo->context;
	TriggerEvent event;
	Relation	rel;
	char	   *relname;
	const char *table;
	Oid			relid;

	if (!CALLED_AS_TRIGGER(fcinfo))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("es_guard() must be called as a trigger")));

	event = trigdata->tg_event;
	rel = trigdata->tg_relation;

	if (!TRIGGER_FIRED_FOR_STATEMENT(event) || !TRIGGER_FIRED_BEFORE(event))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("es_guard() must be fired BEFORE ... FOR EACH STATEMENT")));

	/* under Citus the trigger fires on a shard of the table (citus.c) */
	relid = EsLogicalRelid(rel, &table);

	if (OidIsValid(allowed_relid) &&
		relid == allowed_relid &&
		(allowed_events & (1 << (event & TRIGGER_EVENT_OPMASK))) != 0)
	{
		/*
		 * Under Citus the statement writes a shard, whose triggers are its
		 * own: es_append looked for BEFORE row triggers on the shell only,
		 * and one created on the shard itself (on the worker) would rewrite
		 * the rows (position, version, payload).  Look at the shard.
		 */
		if (relid != RelationGetRelid(rel) &&
			(TRIGGER_FIRED_BY_INSERT(event) || TRIGGER_FIRED_BY_UPDATE(event)) &&
			(strcmp(table, "events") == 0 || strcmp(table, "streams") == 0))
			EsRefuseBeforeRowTriggers(RelationGetRelid(rel), table);

		allowed_events &= ~(1 << (event & TRIGGER_EVENT_OPMASK));
		if (allowed_events == 0)
			EsClearAllowedWrite();
		return PointerGetDatum(NULL);
	}

	/*
	 * Under Citus, the configuration registries that es.distribute() made
	 * reference tables: a write that es_admin may make through the
	 * es_outbox_* functions reaches the other nodes' placements in backends
	 * of their own, which hold no permission.  There, es_admin's write
	 * passes (see README, "Scaling out with Citus").
	 */
	if (relid != RelationGetRelid(rel) &&
		(strcmp(table, "outbox_routes") == 0 || strcmp(table, "outbox_groups") == 0) &&
		!TRIGGER_FIRED_BY_TRUNCATE(event) &&
		has_privs_of_role(GetUserId(), get_role_oid("es_admin", false)))
		return PointerGetDatum(NULL);

	/* es_ext's own install and upgrade scripts */
	if (creating_extension && CurrentExtensionObject == get_extension_oid("es_ext", true))
		return PointerGetDatum(NULL);

	/* a restore: COPY FROM by the table's owner (see dump.c) */
	if (TRIGGER_FIRED_BY_INSERT(event) && EsRestoreCopy(rel))
	{
		EsRestoreCopyBegin(rel);
		return PointerGetDatum(NULL);
	}

	relname = quote_qualified_identifier(get_namespace_name(RelationGetNamespace(rel)),
										 table);

	if (strcmp(table, "events") == 0)
	{
		if (TRIGGER_FIRED_BY_INSERT(event))
			ereport(ERROR,
					(errcode(ERRCODE_S_R_E_PROHIBITED_SQL_STATEMENT_ATTEMPTED),
					 errmsg("cannot INSERT into table %s directly", relname),
					 errdetail("Events are written only by es_append, which checks versions and ids."),
					 errhint("Call es.es_append(stream, expected_version, events).")));
		ereport(ERROR,
				(errcode(ERRCODE_S_R_E_PROHIBITED_SQL_STATEMENT_ATTEMPTED),
				 errmsg("cannot %s table %s", command_name(event), relname),
				 errdetail("Events are immutable: the event log is append-only.")));
	}

	if (strncmp(table, "outbox", 6) == 0)
		ereport(ERROR,
				(errcode(ERRCODE_S_R_E_PROHIBITED_SQL_STATEMENT_ATTEMPTED),
				 errmsg("cannot %s table %s directly", command_name(event), relname),
				 errdetail("This table is written only by es_append and the es_outbox_* functions.")));

	if (strcmp(table, "snapshots") == 0)
		ereport(ERROR,
				(errcode(ERRCODE_S_R_E_PROHIBITED_SQL_STATEMENT_ATTEMPTED),
				 errmsg("cannot %s table %s directly", command_name(event), relname),
				 errdetail("This table is written only by es_fold, es_snapshot_save and es_snapshot_delete: a snapshot is trusted as the fold of its stream.")));

	if (strcmp(table, "checkpoints") == 0)
		ereport(ERROR,
				(errcode(ERRCODE_S_R_E_PROHIBITED_SQL_STATEMENT_ATTEMPTED),
				 errmsg("cannot %s table %s directly", command_name(event), relname),
				 errdetail("This table is written only by es_checkpoint_save and es_checkpoint_drop, which check who owns a checkpoint."),
				 errhint("Call es.es_checkpoint_save(name, cursor) or es.es_checkpoint_drop(name).")));

	if (strcmp(table, "async_projections") == 0 ||
		strcmp(table, "projection_dead_letters") == 0)
		ereport(ERROR,
				(errcode(ERRCODE_S_R_E_PROHIBITED_SQL_STATEMENT_ATTEMPTED),
				 errmsg("cannot %s table %s directly", command_name(event), relname),
				 errdetail("This table is written only by the functions of asynchronous projections: a checkpoint is moved only with the read model it describes."),
				 errhint("Call es.es_create_async_projection(), es.es_projection_pause(), es.es_projection_reset() or es.es_drop_projection().")));

	if (strcmp(table, "subject_keys") == 0)
		ereport(ERROR,
				(errcode(ERRCODE_S_R_E_PROHIBITED_SQL_STATEMENT_ATTEMPTED),
				 errmsg("cannot %s table %s directly", command_name(event), relname),
				 errdetail("This table is written only by es_append, which makes a data subject's key, and es_forget_subject, which destroys it."),
				 errhint("Call es.es_forget_subject(subject).")));

	if (strcmp(table, "user_objects") == 0)
		ereport(ERROR,
				(errcode(ERRCODE_S_R_E_PROHIBITED_SQL_STATEMENT_ATTEMPTED),
				 errmsg("cannot %s table %s directly", command_name(event), relname),
				 errdetail("This table is written only by the restore of a dump.")));

	if (strcmp(table, "archived_events") == 0 ||
		strcmp(table, "erasures") == 0 ||
		strcmp(table, "retention_policies") == 0)
		ereport(ERROR,
				(errcode(ERRCODE_S_R_E_PROHIBITED_SQL_STATEMENT_ATTEMPTED),
				 errmsg("cannot %s table %s directly", command_name(event), relname),
				 errdetail("This table is written only by the lifecycle functions: es_archive_stream, es_unarchive_stream, es_erase_stream, es_set_retention and es_apply_retention.")));

	ereport(ERROR,
			(errcode(ERRCODE_S_R_E_PROHIBITED_SQL_STATEMENT_ATTEMPTED),
			 errmsg("cannot %s table %s directly", command_name(event), relname),
			 errdetail("This table is maintained by es_append.")));

	PG_RETURN_NULL();			/* keep compiler quiet */
}
