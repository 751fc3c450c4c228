/*-------------------------------------------------------------------------
 *
 * era.c
 *	  The era of the global log: the leading part of the log cursor.
 *
 * The global log is ordered by (era, tx_id, global_position).  Transaction
 * ids belong to one cluster: after a logical dump is restored into another
 * cluster, the new cluster's ids may be far below (or above) the restored
 * ones.  es.config records the era and the system identifier of the cluster
 * it belongs to.  The first append in a cluster whose system identifier
 * differs from the recorded one starts a new era, so that everything
 * restored sorts before everything appended afterwards; readers treat an
 * older era as entirely below their horizon.
 *
 * A copy of a cluster (pg_basebackup, PITR) keeps its system identifier but
 * goes on with transaction ids of its own; a dump of it restored into the
 * original can hold ids the original has not reached.  The restore records
 * such an era as foreign (era_is_foreign), and it is then treated as if it
 * came from another cluster.
 *
 * es.config holds at most one row and CREATE EXTENSION does not insert it:
 * the first append does.  So a dump's es.config row restores without
 * conflicting with a row the restore's own CREATE EXTENSION made, and it
 * carries the era and the source cluster's identity into the restored
 * database.  Without a row, the era is 0 on an empty log, and one past the
 * highest era of the events otherwise (events restored without their
 * es.config row).
 *
 * Each stream row remembers the tx_id of its last append (log_tx_id); an
 * append orders its events at or after it, to keep a stream's versions in
 * log order.  A log_tx_id at or above this cluster's next transaction id,
 * read while the stream row is locked, cannot be one of this cluster's: it
 * was restored from another cluster and belongs to an older era, so the
 * append orders its events by its own id (EsForeignTransactionId).  A
 * restored log_tx_id below the next id is kept: it only orders the events a
 * little later than needed.
 *
 * All functions here run inside SPI_connect().
 *
 * src/era.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/transam.h"
#include "access/xlog.h"
#include "commands/trigger.h"
#include "executor/spi.h"
#include "utils/lsyscache.h"
#include "utils/xid8.h"

#include "es_ext.h"

static EsPlan config_plan = {
	NULL,
	"SELECT c.era, c.system_identifier FROM es.config AS c",
	0, {InvalidOid}
};

/* the era of a log without an es.config row */
static EsPlan era_without_config_plan = {
	NULL,
	"SELECT COALESCE(max(e.era) OPERATOR(pg_catalog.+) 1, 0) FROM es.events AS e",
	0, {InvalidOid}
};

static EsPlan insert_config_plan = {
	NULL,
	"INSERT INTO es.config AS c (era, system_identifier)"
	" SELECT COALESCE(max(e.era) OPERATOR(pg_catalog.+) 1, 0), $1 FROM es.events AS e"
	" ON CONFLICT (singleton) DO NOTHING",
	1, {INT8OID}
};

/*
 * Citus (issue 16): each node orders its own log (citus.c), and a node
 * without an es.config row has appended nothing: its log is empty, its era
 * 0.  es.events is distributed there, and reading it would query every
 * shard of the cluster from inside a delegated append.
 */
static EsPlan insert_node_config_plan = {
	NULL,
	"INSERT INTO es.config AS c (era, system_identifier) VALUES (0, $1)"
	" ON CONFLICT (singleton) DO NOTHING",
	1, {INT8OID}
};

/* move on from era $2 (concurrent appenders: only one moves it) */
static EsPlan advance_era_plan = {
	NULL,
	"UPDATE es.config AS c"
	"   SET era = c.era OPERATOR(pg_catalog.+) 1, system_identifier = $1"
	" WHERE c.era OPERATOR(pg_catalog.=) $2",
	2, {INT8OID, INT4OID}
};

/* an era recorded as foreign by a restore (dump.c: record_foreign_eras) */
static EsPlan foreign_era_plan = {
	NULL,
	"SELECT FROM es.user_objects AS u"
	" WHERE u.table_name OPERATOR(pg_catalog.=) 'events'"
	"   AND u.kind OPERATOR(pg_catalog.=) 'foreign era'"
	"   AND u.object_name OPERATOR(pg_catalog.=) $1::pg_catalog.text",
	1, {INT4OID}
};

/*
 * The era appends use, cached per backend (see EsAppendEra), keyed by the
 * OID of es.config so that a re-created extension is read again.
 */
static Oid	cached_era_config = InvalidOid;
static int32 cached_era = 0;

/* the era readers last found settled (see era_is_foreign), per backend */
static Oid	settled_era_config = InvalidOid;
static int32 settled_era = 0;

/*
 * read_config
 *		Read es.config (read_only: under the caller's snapshot, as in a
 *		STABLE function): returns false when it has no row, else sets *era
 *		and *sysid.
 */
static bool
read_config(bool read_only, int32 *era, int64 *sysid)
{
	bool		isnull;
	int			rc;

	rc = SPI_execute_plan(EsGetPlan(&config_plan), NULL, NULL, read_only, 2);
	if (rc != SPI_OK_SELECT)
		elog(ERROR, "could not read es.config: %s", SPI_result_code_string(rc));
	if (SPI_processed == 0)
		return false;
	if (SPI_processed != 1)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("table \"es.config\" must contain at most one row")));
	*era = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	*sysid = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull));
	return true;
}

/*
 * era_is_foreign
 *		Did a restore bring events of era that carry transaction ids this
 *		cluster had not reached?  Then they come from a physical copy of this
 *		cluster (same system identifier, ids of its own), and new events need
 *		a new era to sort after them.  The restore records it once
 *		(dump.c: record_foreign_eras), so the answer never changes with time:
 *		comparing with the next transaction id here would flip once this
 *		cluster's ids pass the restored ones, and an append with an older id
 *		could then sort before events a reader was already shown.
 */
static bool
era_is_foreign(int32 era, bool read_only)
{
	Datum		arg = Int32GetDatum(era);
	int			rc;

	/* es_ext 0.1.0's tables, before ALTER EXTENSION es_ext UPDATE */
	if (!OidIsValid(get_relname_relid("user_objects", EsSchemaOid())))
		return false;

	rc = SPI_execute_plan(EsGetPlan(&foreign_era_plan), &arg, NULL, read_only, 1);
	if (rc != SPI_OK_SELECT)
		elog(ERROR, "could not read es.user_objects: %s", SPI_result_code_string(rc));
	return SPI_processed > 0;
}

/*
 * EsCurrentEra
 *		The era new events get, as a reader sees it: es.config's, or the next
 *		one if es.config was restored from another cluster and no append has
 *		advanced it yet (all events there are then final).  Without a row,
 *		what the first append will record.
 */
int32
EsCurrentEra(void)
{
	int32		era;
	int64		sysid;
	bool		isnull;
	int			rc;

	if (read_config(true, &era, &sysid))
	{
		Oid			config = EsRelationOid("config");

		if (sysid != (int64) GetSystemIdentifier())
			return era + 1;
		if (settled_era_config == config && settled_era == era)
			return era;
		if (era_is_foreign(era, true))
			return era + 1;
		settled_era_config = config;
		settled_era = era;
		return era;
	}

	if (EsDistributed())
		return 0;
	rc = SPI_execute_plan(EsGetPlan(&era_without_config_plan), NULL, NULL, true, 1);
	if (rc != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "could not read the highest era of es.events: %s",
			 SPI_result_code_string(rc));
	return DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
}

/*
 * EsAppendEra
 *		The era to tag new events with.  Records this cluster in es.config
 *		first when es.config has no row (the first append) or belongs to
 *		another cluster (the database was restored from one: a new era
 *		starts).  Cached per backend once es.config belongs to this cluster:
 *		the era changes only by that advance, so the cached value cannot go
 *		stale (an era this transaction has just written is not cached, since
 *		the transaction may still abort).
 */
int32
EsAppendEra(void)
{
	Oid			config = EsRelationOid("config");
	int64		mysysid = (int64) GetSystemIdentifier();
	Datum		sysid = Int64GetDatum(mysysid);
	int			attempt;

	if (cached_era_config == config)
		return cached_era;

	for (attempt = 0; attempt < ES_ERA_ATTEMPTS; attempt++)
	{
		int32		era;
		int64		recorded;
		int			rc;

		if (read_config(false, &era, &recorded))
		{
			Datum		args[2];

			if (recorded == mysysid && !era_is_foreign(era, false))
			{
				if (attempt == 0)
				{
					cached_era_config = config;
					cached_era = era;
				}
				return era;
			}
			args[0] = sysid;
			args[1] = Int32GetDatum(era);
			EsAllowNextWrite(config, TRIGGER_EVENT_UPDATE);
			rc = SPI_execute_plan(EsGetPlan(&advance_era_plan), args, NULL, false, 0);
			EsClearAllowedWrite();
			if (rc != SPI_OK_UPDATE)
				elog(ERROR, "could not advance the log era: %s", SPI_result_code_string(rc));
			if (SPI_processed == 1)
				ereport(NOTICE,
						(errmsg("the global log starts a new era"),
						 recorded != mysysid ?
						 errdetail("This cluster's system identifier differs from the one recorded in \"es.config\": the events were restored from another cluster.") :
						 errdetail("Restored events carry transaction ids this cluster had not reached: they come from a copy of this cluster.")));
		}
		else
		{
			EsAllowNextWrite(config, TRIGGER_EVENT_INSERT);
			rc = SPI_execute_plan(EsGetPlan(EsDistributed() ? &insert_node_config_plan :
											&insert_config_plan),
								  &sysid, NULL, false, 0);
			EsClearAllowedWrite();
			if (rc != SPI_OK_INSERT)
				elog(ERROR, "could not record the log era: %s", SPI_result_code_string(rc));
		}
	}
	ereport(ERROR,
			(errcode(ERRCODE_T_R_SERIALIZATION_FAILURE),
			 errmsg("could not append while the log era changes"),
			 errhint("Retry the transaction.")));
	return 0;					/* keep compiler quiet */
}

/*
 * EsForeignTransactionId
 *		Is tx_id (an xid8 Datum) at or above this cluster's next full
 *		transaction id?  Then it is not one of this cluster's ids (it was
 *		restored from another cluster).  Call it while holding the lock of
 *		the row the id was read from: an id of this cluster stored there by a
 *		committed transaction is then below the next id.
 */
bool
EsForeignTransactionId(Datum tx_id)
{
	return FullTransactionIdFollowsOrEquals(DatumGetFullTransactionId(tx_id),
											ReadNextFullTransactionId());
}
