/*-------------------------------------------------------------------------
 *
 * checkpoint.c
 *	  Server-side checkpoints of global-log subscribers: es_checkpoint_save,
 *	  es_checkpoint and es_checkpoint_drop.
 *
 * A subscriber of the global log (es_read_all) keeps the log_cursor of the
 * last event it processed.  It may keep it in es.checkpoints under a name:
 * es_checkpoint_save writes it in the caller's transaction, so a subscriber
 * saves it atomically with the writes of its read model, and
 * es_checkpoint(name) gives it back (NULL for a checkpoint that does not
 * exist, so es_read_all(es_checkpoint(name)) starts from the beginning).
 * The view es.subscriptions shows how far each checkpoint lags behind.
 *
 * A checkpoint belongs to the role that created it (es.checkpoints.owner):
 * only members of that role, and members of es_admin, may save or drop it.
 * A cursor is accepted only if es_read_all could have returned it: its era
 * not negative, and (era, tx_id) below the current era and log horizon.
 * Moving a checkpoint backwards is allowed: it replays the log from there.
 *
 * es.checkpoints has the guard triggers (guard.c): the functions here are
 * its only writers.  They run as their caller (no SECURITY DEFINER), each
 * write a saved SPI plan executed right after the guard was told to let
 * that one statement through (EsGuardedWrite, guard.c).  The row of an existing
 * checkpoint is locked (SELECT ... FOR NO KEY UPDATE / FOR UPDATE) before
 * its owner is checked and it is written, so the check holds for the row
 * that is written; a checkpoint created concurrently is found by the next
 * attempt (READ COMMITTED) or reported by PostgreSQL as a serialization
 * failure (REPEATABLE READ, SERIALIZABLE).
 *
 * Memory: everything is allocated in the SPI procedure context and released
 * by SPI_finish, except the cursor es_checkpoint returns (copied to the
 * caller's context by SPI_datumTransfer).
 *
 * src/checkpoint.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "access/transam.h"
#include "catalog/pg_type.h"
#include "commands/trigger.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/snapmgr.h"
#include "utils/xid8.h"

#include "es_ext.h"

/* the checkpoint's owner, its row locked: for an update, for a delete */
static EsPlan lock_for_save_plan = {
	NULL,
	"SELECT c.owner FROM es.checkpoints AS c"
	" WHERE c.name OPERATOR(pg_catalog.=) $1 FOR NO KEY UPDATE",
	1, {TEXTOID}
};

static EsPlan lock_for_drop_plan = {
	NULL,
	"SELECT c.owner FROM es.checkpoints AS c"
	" WHERE c.name OPERATOR(pg_catalog.=) $1 FOR UPDATE",
	1, {TEXTOID}
};

/* $2 NULL: no cursor (from the start), else the cursor ($2, $3, $4) */
#define CHECKPOINT_CURSOR \
	"CASE WHEN $2 IS NULL THEN NULL::es.log_cursor" \
	" ELSE ROW($2, $3, $4)::es.log_cursor END"

static EsPlan insert_plan = {
	NULL,
	"INSERT INTO es.checkpoints AS c (name, cursor, owner, created_at, saved_at)"
	" SELECT $1, " CHECKPOINT_CURSOR ", $5, t.at, t.at"
	"   FROM (SELECT pg_catalog.clock_timestamp() AS at) AS t"
	" ON CONFLICT ON CONSTRAINT checkpoints_pkey DO NOTHING",
	5, {TEXTOID, INT4OID, XID8OID, INT8OID, REGROLEOID}
};

static EsPlan update_plan = {
	NULL,
	"UPDATE es.checkpoints AS c"
	"   SET cursor = " CHECKPOINT_CURSOR ", saved_at = pg_catalog.clock_timestamp()"
	" WHERE c.name OPERATOR(pg_catalog.=) $1",
	4, {TEXTOID, INT4OID, XID8OID, INT8OID}
};

static EsPlan delete_plan = {
	NULL,
	"DELETE FROM es.checkpoints AS c WHERE c.name OPERATOR(pg_catalog.=) $1",
	1, {TEXTOID}
};

static EsPlan read_plan = {
	NULL,
	"SELECT c.cursor FROM es.checkpoints AS c WHERE c.name OPERATOR(pg_catalog.=) $1",
	1, {TEXTOID}
};

/*
 * check_name
 *		Refuse a NULL, empty or too long checkpoint name; returns it.
 */
static text *
check_name(FunctionCallInfo fcinfo)
{
	text	   *name;
	int			len;

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("checkpoint name cannot be null")));
	name = PG_GETARG_TEXT_PP(0);
	len = VARSIZE_ANY_EXHDR(name);
	if (len == 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("checkpoint name cannot be empty")));
	if (len > ES_CHECKPOINT_MAX_NAME)
		ereport(ERROR,
				(errcode(ERRCODE_STRING_DATA_RIGHT_TRUNCATION),
				 errmsg("checkpoint name is too long"),
				 errdetail("Checkpoint names are limited to %d bytes; this one has %d.",
						   ES_CHECKPOINT_MAX_NAME, len)));
	return name;
}

/*
 * check_cursor
 *		Refuse a cursor es_read_all could never have returned: a field NULL
 *		(22004), a negative era, or (era, tx_id) not below the current era
 *		and log horizon of the active snapshot (22023).  The horizon never
 *		moves back, so every cursor a reader was ever given passes.  Must be
 *		called inside SPI (for the era).
 */
static void
check_cursor(HeapTupleHeader cursor, int32 *era, Datum *tx_id, int64 *position)
{
	FullTransactionId tx;
	FullTransactionId horizon;
	int32		current_era;

	EsParseCursor(cursor, era, tx_id, position);
	tx = DatumGetFullTransactionId(*tx_id);

	if (*era < 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("log cursor era cannot be negative"),
				 errhint("Save the log_cursor of the last row es_read_all returned, or NULL to read from the start.")));

	current_era = EsCurrentEra();
	horizon = EsLogHorizon(GetActiveSnapshot());
	if (*era > current_era)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("log cursor is beyond the end of the global log"),
				 errdetail("Its era %d is past the current era %d.", *era, current_era),
				 errhint("Save the log_cursor of the last row es_read_all returned, or NULL to read from the start.")));
	if (*era == current_era && !FullTransactionIdPrecedes(tx, horizon))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("log cursor is beyond the end of the global log"),
				 errdetail("Its transaction id " UINT64_FORMAT " is not below the log horizon " UINT64_FORMAT ".",
						   U64FromFullTransactionId(tx), U64FromFullTransactionId(horizon)),
				 errhint("Save the log_cursor of the last row es_read_all returned, or NULL to read from the start.")));
}

/*
 * check_owner
 *		Refuse to let the current user save or drop (what) the checkpoint
 *		name owned by owner, unless it is a member of owner or of es_admin
 *		(superusers are members of every role).
 */
static void
check_owner(text *name, Oid owner, const char *what)
{
	Oid			user = GetUserId();
	Oid			admin = get_role_oid("es_admin", true);
	char	   *owner_name;

	if (is_member_of_role(user, owner) ||
		(OidIsValid(admin) && is_member_of_role(user, admin)))
		return;

	owner_name = GetUserNameFromId(owner, true);
	if (owner_name == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied to %s checkpoint \"%s\"", what, text_to_cstring(name)),
				 errdetail("The role that created it (OID %u) no longer exists: only members of role \"es_admin\" may save or drop it.",
						   owner)));
	ereport(ERROR,
			(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
			 errmsg("permission denied to %s checkpoint \"%s\"", what, text_to_cstring(name)),
			 errdetail("Only members of role \"%s\", which created it, and of role \"es_admin\" may save or drop it.",
					   owner_name)));
}

/*
 * lock_checkpoint
 *		Lock the row of checkpoint name (plan: lock_for_save_plan or
 *		lock_for_drop_plan) and return true with its owner in *owner, or
 *		false when it does not exist.
 */
static bool
lock_checkpoint(EsPlan *plan, text *name, Oid *owner)
{
	Datum		arg = PointerGetDatum(name);
	bool		isnull;
	int			rc;

	rc = SPI_execute_plan(EsGetPlan(plan), &arg, NULL, false, 0);
	if (rc != SPI_OK_SELECT)
		elog(ERROR, "could not read \"es.checkpoints\": %s", SPI_result_code_string(rc));
	if (SPI_processed == 0)
		return false;
	*owner = DatumGetObjectId(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	return true;
}

PG_FUNCTION_INFO_V1(es_checkpoint_save);

/*
 * es_checkpoint_save(name text, cursor es.log_cursor) RETURNS void
 *
 * Create or overwrite the checkpoint name with cursor (NULL: from the
 * start), in the caller's transaction.  Refused on a standby and in a
 * read-only transaction (25006), for a bad name or cursor (see check_name,
 * check_cursor) and for a checkpoint of another role (42501).  Locks the
 * checkpoint's row until the end of the transaction.  Its commit wakes the
 * es_wait_for_checkpoint sleepers.
 */
Datum
es_checkpoint_save(PG_FUNCTION_ARGS)
{
	text	   *name;
	Datum		values[5];
	char		nulls[5] = {' ', ' ', ' ', ' ', ' '};
	Oid			relid;
	int			attempt;

	EsCheckWritable("es_checkpoint_save()");
	/* a cursor is checked against this cluster's horizon (replica.c) */
	EsCheckNotSubscriber(ES_LOG_READ_ALL);
	EsRefuseDistributed("es_checkpoint_save()", "Keep the cursors of es.es_read_log() in a table of your own.");
	name = check_name(fcinfo);

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");

	values[0] = PointerGetDatum(name);
	if (PG_ARGISNULL(1))
	{
		values[1] = values[2] = values[3] = (Datum) 0;
		nulls[1] = nulls[2] = nulls[3] = 'n';
	}
	else
	{
		int32		era;
		Datum		tx_id;
		int64		position;

		check_cursor(PG_GETARG_HEAPTUPLEHEADER(1), &era, &tx_id, &position);
		values[1] = Int32GetDatum(era);
		values[2] = tx_id;
		values[3] = Int64GetDatum(position);
	}
	values[4] = ObjectIdGetDatum(GetUserId());

	relid = EsRelationOid("checkpoints");
	for (attempt = 0; attempt < ES_CHECKPOINT_ATTEMPTS; attempt++)
	{
		Oid			owner;

		if (lock_checkpoint(&lock_for_save_plan, name, &owner))
		{
			check_owner(name, owner, "save");
			EsGuardedWrite(&update_plan, relid, TRIGGER_EVENT_UPDATE, values, nulls,
						   InvalidSnapshot, SPI_OK_UPDATE);
			break;
		}
		/* a checkpoint created since the lookup: DO NOTHING, then look again */
		EsGuardedWrite(&insert_plan, relid, TRIGGER_EVENT_INSERT, values, nulls,
					   InvalidSnapshot, SPI_OK_INSERT);
		if (SPI_processed == 1)
			break;
	}
	if (attempt == ES_CHECKPOINT_ATTEMPTS)
		ereport(ERROR,
				(errcode(ERRCODE_T_R_SERIALIZATION_FAILURE),
				 errmsg("could not save checkpoint \"%s\" because of a concurrent change",
						text_to_cstring(name)),
				 errhint("Retry the transaction.")));
	/* es_wait_for_checkpoint sleepers recheck when this commits (wait.c) */
	EsWaitWakeAtCommit();

	if (SPI_finish() != SPI_OK_FINISH)
		elog(ERROR, "SPI_finish failed");
	PG_RETURN_VOID();
}

PG_FUNCTION_INFO_V1(es_checkpoint);

/*
 * es_checkpoint(name text) RETURNS es.log_cursor (STRICT)
 *		The cursor saved under name; NULL when the checkpoint does not exist
 *		or was saved without a cursor.  Reads under the caller's snapshot.
 */
Datum
es_checkpoint(PG_FUNCTION_ARGS)
{
	Datum		arg = PG_GETARG_DATUM(0);
	Datum		cursor = (Datum) 0;
	bool		isnull = true;
	int			rc;

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	rc = SPI_execute_plan(EsGetPlan(&read_plan), &arg, NULL, true, 1);
	if (rc != SPI_OK_SELECT)
		elog(ERROR, "could not read \"es.checkpoints\": %s", SPI_result_code_string(rc));
	if (SPI_processed == 1)
	{
		cursor = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
		if (!isnull)
			cursor = SPI_datumTransfer(cursor, false, -1);
	}
	SPI_finish();

	if (isnull)
		PG_RETURN_NULL();
	PG_RETURN_DATUM(cursor);
}

PG_FUNCTION_INFO_V1(es_checkpoint_drop);

/*
 * es_checkpoint_drop(name text) RETURNS boolean
 *		Drop the checkpoint name: true if it existed, false if not.  The
 *		same checks as es_checkpoint_save (25006, 22004, 22023, 22001,
 *		42501).
 */
Datum
es_checkpoint_drop(PG_FUNCTION_ARGS)
{
	text	   *name;
	Datum		arg;
	Oid			owner;
	bool		dropped = false;

	EsCheckWritable("es_checkpoint_drop()");
	name = check_name(fcinfo);
	arg = PointerGetDatum(name);

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	if (lock_checkpoint(&lock_for_drop_plan, name, &owner))
	{
		check_owner(name, owner, "drop");
		EsGuardedWrite(&delete_plan, EsRelationOid("checkpoints"), TRIGGER_EVENT_DELETE,
					   &arg, NULL, InvalidSnapshot, SPI_OK_DELETE);
		dropped = SPI_processed > 0;
	}
	if (SPI_finish() != SPI_OK_FINISH)
		elog(ERROR, "SPI_finish failed");
	PG_RETURN_BOOL(dropped);
}
