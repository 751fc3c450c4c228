/*-------------------------------------------------------------------------
 *
 * dump.c
 *	  What makes a logical dump of an event store restore: the restore COPY
 *	  and the user's objects on es_ext's tables.
 *
 * pg_dump writes the rows of es_ext's tables (they are registered with
 * pg_extension_config_dump) as COPY ... FROM stdin after the restore's own
 * CREATE EXTENSION.  The guard triggers refuse every write that does not
 * come from es_ext's functions; they let a restore COPY through: a COPY FROM
 * into the very table the guard fires for, run by the table's owner or a
 * superuser (EsRestoreCopy).  Those roles can disable the guard anyway, so
 * this grants nothing new; every other role, and every other statement of
 * the owner, is still refused.
 *
 * pg_dump leaves out what users add to an extension's tables: triggers (the
 * projections), indexes, row level security and its policies.  es_ext carries
 * them itself.  The dump filter of es.user_objects makes pg_dump write, as
 * the table's rows, what es.es_user_objects() finds in the catalog at dump
 * time: one row per object with its definition.  A restore COPY of those rows
 * leaves them pending.  Indexes, row level security and policies are
 * re-created at the commit of that step; a trigger waits until the rows of
 * its table are restored too, so that a projection does not fire for
 * restored events: every es_ext table but es.user_objects has an AFTER
 * INSERT ... FOR EACH STATEMENT trigger (es_restored) that, after a restore
 * COPY into it, records that table as restored (a 'restored rows' row of
 * es.user_objects) and moves the table's identity sequence past the restored
 * rows.  A deferred constraint trigger on es.user_objects
 * (es_user_objects_pending) re-creates the pending objects at the commit of
 * each such step (at commit, because an object cannot be created on a table
 * while the COPY into it runs).
 *
 * A row must parse as exactly one statement of its kind creating the named
 * object on the named es_ext table (not CREATE OR REPLACE, not on
 * es.user_objects).  Each object is re-created in a subtransaction: one that
 * fails (a role or function missing in the target, an invalid row) is
 * reported with a WARNING and stays pending; it never aborts the step and
 * so never costs the restore the rows that step brought.  Each restore step
 * that writes es.user_objects locks it in SHARE ROW EXCLUSIVE mode before
 * writing and reads it with a fresh snapshot at commit, so in a parallel
 * restore whichever commits second sees the other: no order of the restore
 * leaves an object behind or re-creates a trigger before its table's rows.
 * A restore COPY into a table that already has user triggers is refused
 * (EsRestoreCopyBegin, and es_restored for the tables without a guard): they
 * would apply the restored rows a second time.
 *
 * src/dump.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/dependency.h"
#include "catalog/namespace.h"
#include "catalog/pg_proc.h"
#include "commands/extension.h"
#include "commands/trigger.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "nodes/parsenodes.h"
#include "parser/parser.h"
#include "tcop/pquery.h"
#include "access/transam.h"
#include "access/xact.h"
#include "utils/xid8.h"
#include "storage/lmgr.h"
#include "storage/proc.h"
#include "utils/resowner.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"
#include "utils/portal.h"
#include "utils/rel.h"

#include "es_ext.h"

/*
 * EsRestoreCopy
 *		True when the statement being executed is a COPY FROM into rel, run by
 *		rel's owner or a superuser: the shape of a restore.
 */
bool
EsRestoreCopy(Relation rel)
{
	Portal		portal = ActivePortal;
	ListCell   *lc;

	if (portal == NULL || portal->commandTag != CMDTAG_COPY)
		return false;
	if (!pg_class_ownercheck(RelationGetRelid(rel), GetUserId()))
		return false;

	foreach(lc, portal->stmts)
	{
		PlannedStmt *ps = lfirst_node(PlannedStmt, lc);
		CopyStmt   *copy;

		if (ps->utilityStmt == NULL || !IsA(ps->utilityStmt, CopyStmt))
			continue;
		copy = (CopyStmt *) ps->utilityStmt;
		if (copy->is_from && copy->relation != NULL &&
			RangeVarGetRelid(copy->relation, NoLock, true) == RelationGetRelid(rel))
			return true;
	}
	return false;
}

/*
 * EsOwnTrigger
 *		Is trig one of es_ext's own triggers?  They are the triggers whose
 *		function belongs to the extension, except es_project, the dispatching
 *		function users build projections with.
 */
bool
EsOwnTrigger(const Trigger *trig)
{
	Oid			ext;

	if (trig->tgisinternal)
		return true;
	ext = get_extension_oid("es_ext", true);
	if (!OidIsValid(ext) || getExtensionOfObject(ProcedureRelationId, trig->tgfoid) != ext)
		return false;
	return strcmp(get_func_name(trig->tgfoid), "es_project") != 0;
}

/*
 * check_restore_target
 *		Refuse a restore COPY into a table that has user triggers: they would
 *		fire for the restored rows (a projection would apply them again on top
 *		of its restored read model).
 */
static void
check_restore_target(Relation rel)
{
	TriggerDesc *td = rel->trigdesc;
	int			i;

	if (td == NULL)
		return;
	for (i = 0; i < td->numtriggers; i++)
	{
		Trigger    *t = &td->triggers[i];

		if (t->tgenabled != TRIGGER_DISABLED && !EsOwnTrigger(t))
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("cannot restore rows into table \"es.%s\" while it has user triggers",
							RelationGetRelationName(rel)),
					 errdetail("Trigger \"%s\" would fire for the restored rows.", t->tgname),
					 errhint("Restore into a new database: es_ext re-creates the user triggers of its tables after their rows.")));
	}
}

/*
 * definition_target
 *		The table a definition of the given kind creates its object on, or
 *		NULL when the definition is not exactly one statement of that kind
 *		creating an object named name (CREATE OR REPLACE TRIGGER, which
 *		could replace one of es_ext's own triggers, is not accepted).
 */
static RangeVar *
definition_target(const char *kind, const char *name, const char *definition)
{
	List	   *raw;
	Node	   *stmt;

	raw = raw_parser(definition, RAW_PARSE_DEFAULT);
	if (list_length(raw) != 1)
		return NULL;
	stmt = linitial_node(RawStmt, raw)->stmt;

	if (strcmp(kind, "trigger") == 0 && IsA(stmt, CreateTrigStmt))
	{
		CreateTrigStmt *trig = (CreateTrigStmt *) stmt;

		if (trig->replace || strcmp(trig->trigname, name) != 0)
			return NULL;
		return trig->relation;
	}
	if (strcmp(kind, "policy") == 0 && IsA(stmt, CreatePolicyStmt))
	{
		CreatePolicyStmt *pol = (CreatePolicyStmt *) stmt;

		if (strcmp(pol->policy_name, name) != 0)
			return NULL;
		return pol->table;
	}
	if (strcmp(kind, "index") == 0 && IsA(stmt, IndexStmt))
	{
		IndexStmt  *idx = (IndexStmt *) stmt;

		if (idx->idxname == NULL || strcmp(idx->idxname, name) != 0 || idx->concurrent)
			return NULL;
		return idx->relation;
	}
	if (strcmp(kind, "row security") == 0 && IsA(stmt, AlterTableStmt))
	{
		AlterTableStmt *alter = (AlterTableStmt *) stmt;
		AlterTableCmd *cmd;

		if (list_length(alter->cmds) != 1)
			return NULL;
		cmd = linitial_node(AlterTableCmd, alter->cmds);
		if ((cmd->subtype == AT_EnableRowSecurity && strcmp(name, "enable") == 0) ||
			(cmd->subtype == AT_ForceRowSecurity && strcmp(name, "force") == 0))
			return alter->relation;
	}
	return NULL;
}

static void
run_utility(const char *sql)
{
	int			rc = SPI_execute(sql, false, 0);

	if (rc < 0)
		elog(ERROR, "could not execute \"%s\": %s", sql, SPI_result_code_string(rc));
}

static bool
object_exists(Oid relid, const char *kind, const char *name)
{
	Datum		values[3];
	const char *sql;
	int			rc;

	if (strcmp(kind, "row security") == 0)
		return false;			/* enabling twice is harmless */
	if (strcmp(kind, "trigger") == 0)
		sql = "SELECT FROM pg_catalog.pg_trigger AS t"
			" WHERE t.tgrelid OPERATOR(pg_catalog.=) $1 AND t.tgname OPERATOR(pg_catalog.=) $2";
	else if (strcmp(kind, "policy") == 0)
		sql = "SELECT FROM pg_catalog.pg_policy AS p"
			" WHERE p.polrelid OPERATOR(pg_catalog.=) $1 AND p.polname OPERATOR(pg_catalog.=) $2";
	else
		sql = "SELECT FROM pg_catalog.pg_class AS c"
			" WHERE c.relnamespace OPERATOR(pg_catalog.=) $3 AND c.relname OPERATOR(pg_catalog.=) $2"
			"   AND $1 IS NOT NULL";
	values[0] = ObjectIdGetDatum(relid);
	values[1] = CStringGetDatum(name);
	values[2] = ObjectIdGetDatum(EsSchemaOid());
	rc = SPI_execute_with_args(sql, 3, (Oid[]) {OIDOID, NAMEOID, OIDOID}, values, NULL, true, 1);
	if (rc != SPI_OK_SELECT)
		elog(ERROR, "could not look up %s \"%s\": %s", kind, name, SPI_result_code_string(rc));
	return SPI_processed > 0;
}

/* the statement a definition of each kind must be */
static const char *
definition_statement(const char *kind)
{
	if (strcmp(kind, "trigger") == 0)
		return "CREATE TRIGGER";
	if (strcmp(kind, "policy") == 0)
		return "CREATE POLICY";
	if (strcmp(kind, "index") == 0)
		return "CREATE INDEX";
	return "ALTER TABLE ... ENABLE or FORCE ROW LEVEL SECURITY";
}

/* the lock the statement of a definition of each kind takes on its table */
static LOCKMODE
definition_lock(const char *kind)
{
	if (strcmp(kind, "trigger") == 0)
		return ShareRowExclusiveLock;
	if (strcmp(kind, "index") == 0)
		return ShareLock;
	return AccessExclusiveLock;
}

/* one row of es.user_objects, for the error context */
typedef struct UserObject
{
	char	   *table;
	char	   *kind;
	char	   *name;
	char	   *definition;
	char	   *enabled;
} UserObject;

static void
user_object_error_callback(void *arg)
{
	UserObject *o = (UserObject *) arg;

	errcontext("re-creating %s \"%s\" on table \"es.%s\" from es.user_objects",
			   o->kind, o->name, o->table);
}

/* what restore_one did */
typedef enum RestoreResult
{
	RESTORE_CREATED,			/* the object was re-created */
	RESTORE_EXISTS,				/* it was there already: left as it is */
	RESTORE_BUSY				/* its table is in use: left pending */
} RestoreResult;

/*
 * restore_one
 *		Re-create one user object from its row in es.user_objects.  Raises an
 *		error when the row is not a valid definition of a user object on one
 *		of es_ext's tables.
 */
static RestoreResult
restore_one(const UserObject *o)
{
	RangeVar   *target;
	Oid			relid;
	char	   *qualified;
	char		enabled = TRIGGER_FIRES_ON_ORIGIN;

	target = definition_target(o->kind, o->name, o->definition);
	if (target == NULL || target->schemaname == NULL ||
		strcmp(target->schemaname, "es") != 0 || strcmp(target->relname, o->table) != 0 ||
		strcmp(o->table, "user_objects") == 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_OBJECT_DEFINITION),
				 errmsg("invalid definition of %s \"%s\" on table \"es.%s\"", o->kind, o->name, o->table),
				 errdetail("A definition must be one %s statement creating \"%s\" on table \"es.%s\".",
						   definition_statement(o->kind), o->name, o->table)));
	if (strcmp(o->kind, "trigger") == 0)
	{
		if (o->enabled == NULL || strlen(o->enabled) != 1 ||
			strchr("ODRA", o->enabled[0]) == NULL)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("invalid trigger_enabled value \"%s\" of trigger \"%s\"",
							o->enabled ? o->enabled : "", o->name),
					 errdetail("It must be O, D, R or A, as in pg_trigger.tgenabled.")));
		enabled = o->enabled[0];
	}
	relid = EsRelationOid(o->table);
	if (object_exists(relid, o->kind, o->name))
		return RESTORE_EXISTS;

	/*
	 * Only when the table is free: another restore step may be copying rows
	 * into it (and wait for our lock on es.user_objects), and that step
	 * re-creates the object at its own commit.
	 */
	if (!ConditionalLockRelationOid(relid, definition_lock(o->kind)))
		return RESTORE_BUSY;

	run_utility(o->definition);

	if (strcmp(o->kind, "trigger") != 0 || enabled == TRIGGER_FIRES_ON_ORIGIN)
		return RESTORE_CREATED;
	qualified = quote_qualified_identifier("es", o->table);
	if (enabled == TRIGGER_DISABLED)
		run_utility(psprintf("ALTER TABLE %s DISABLE TRIGGER %s", qualified, quote_identifier(o->name)));
	else if (enabled == TRIGGER_FIRES_ON_REPLICA)
		run_utility(psprintf("ALTER TABLE %s ENABLE REPLICA TRIGGER %s", qualified, quote_identifier(o->name)));
	else
		run_utility(psprintf("ALTER TABLE %s ENABLE ALWAYS TRIGGER %s", qualified, quote_identifier(o->name)));
	return RESTORE_CREATED;
}

/*
 * restore_one_safely
 *		restore_one in a subtransaction: an object that cannot be re-created
 *		(a role or function the target does not have, a bad row) is reported
 *		with a WARNING and stays pending in es.user_objects; it never aborts
 *		the restore step, whose table rows would go with it.  Returns true
 *		when the row is done with (created, or there already), false when it
 *		stays pending.
 */
static bool
restore_one_safely(const UserObject *o, uint64 *created)
{
	MemoryContext cxt = CurrentMemoryContext;
	ResourceOwner owner = CurrentResourceOwner;
	ErrorContextCallback callback;
	volatile bool done = false;

	callback.callback = user_object_error_callback;
	callback.arg = (void *) o;
	callback.previous = error_context_stack;

	BeginInternalSubTransaction(NULL);
	MemoryContextSwitchTo(cxt);
	PG_TRY();
	{
		RestoreResult result;

		error_context_stack = &callback;
		result = restore_one(o);
		error_context_stack = callback.previous;
		ReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(cxt);
		CurrentResourceOwner = owner;
		if (result == RESTORE_CREATED)
			(*created)++;
		done = (result != RESTORE_BUSY);
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		error_context_stack = callback.previous;
		MemoryContextSwitchTo(cxt);
		edata = CopyErrorData();
		FlushErrorState();
		RollbackAndReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(cxt);
		CurrentResourceOwner = owner;
		ereport(WARNING,
				(errcode(edata->sqlerrcode),
				 errmsg("could not re-create %s \"%s\" on table \"es.%s\": %s",
						o->kind, o->name, o->table, edata->message),
				 edata->detail ? errdetail("%s", edata->detail) : 0,
				 errhint("It stays listed in es.user_objects; create it by hand once what it needs exists.")));
		FreeErrorData(edata);
	}
	PG_END_TRY();
	return done;
}

/*
 * restore_pending
 *		Re-create the pending objects: indexes, row level security and
 *		policies at once, triggers once the rows of their table are
 *		restored; delete the rows of those done with.  Returns how many were
 *		re-created (objects that exist already are skipped).
 */
static uint64
restore_pending(void)
{
	SPITupleTable *rows;
	uint64		nrows;
	uint64		created = 0;
	uint64		i;
	int			rc;
	Oid			user_objects = EsRelationOid("user_objects");

	rc = SPI_execute("SELECT u.table_name::pg_catalog.text, u.kind, u.object_name::pg_catalog.text,"
					 "       u.definition, u.trigger_enabled::pg_catalog.text"
					 "  FROM es.user_objects AS u"
					 " WHERE u.kind OPERATOR(pg_catalog.<>) ALL (ARRAY['restored rows', 'foreign era'])"
					 "   AND (u.kind OPERATOR(pg_catalog.<>) 'trigger'"
					 "        OR u.table_name IN (SELECT r.table_name FROM es.user_objects AS r"
					 "                             WHERE r.kind OPERATOR(pg_catalog.=) 'restored rows'))"
					 " ORDER BY pg_catalog.array_position("
					 "            ARRAY['index', 'row security', 'policy', 'trigger'], u.kind),"
					 "          u.table_name, u.object_name", false, 0);
	if (rc != SPI_OK_SELECT)
		elog(ERROR, "could not read es.user_objects: %s", SPI_result_code_string(rc));
	rows = SPI_tuptable;
	nrows = SPI_processed;

	for (i = 0; i < nrows; i++)
	{
		HeapTuple	tup = rows->vals[i];
		TupleDesc	desc = rows->tupdesc;
		UserObject	o;

		CHECK_FOR_INTERRUPTS();
		o.table = SPI_getvalue(tup, desc, SPI_fnumber(desc, "table_name"));
		o.kind = SPI_getvalue(tup, desc, SPI_fnumber(desc, "kind"));
		o.name = SPI_getvalue(tup, desc, SPI_fnumber(desc, "object_name"));
		o.definition = SPI_getvalue(tup, desc, SPI_fnumber(desc, "definition"));
		o.enabled = SPI_getvalue(tup, desc, SPI_fnumber(desc, "trigger_enabled"));

		if (restore_one_safely(&o, &created))
		{
			Datum		key[3];

			key[0] = CStringGetDatum(o.table);
			key[1] = CStringGetTextDatum(o.kind);
			key[2] = CStringGetDatum(o.name);
			EsAllowNextWrite(user_objects, TRIGGER_EVENT_DELETE);
			rc = SPI_execute_with_args("DELETE FROM es.user_objects AS u"
									   " WHERE u.table_name OPERATOR(pg_catalog.=) $1"
									   "   AND u.kind OPERATOR(pg_catalog.=) $2"
									   "   AND u.object_name OPERATOR(pg_catalog.=) $3",
									   3, (Oid[]) {NAMEOID, TEXTOID, NAMEOID}, key, NULL, false, 0);
			EsClearAllowedWrite();
			if (rc != SPI_OK_DELETE)
				elog(ERROR, "could not delete from es.user_objects: %s", SPI_result_code_string(rc));
		}
	}
	return created;
}

/*
 * Identity sequences and the columns they number: after a restore COPY of
 * their table they are moved past the highest restored value, also when the
 * dump did not carry them (es_ext 0.1.0 did not register them for pg_dump).
 */
static const struct
{
	const char *table;
	const char *column;
	const char *sequence;
}			restored_sequences[] = {
	{"events", "global_position", "events_global_position_seq"},
	{"outbox", "position", "outbox_position_seq"},
	{"outbox_groups", "group_id", "outbox_groups_group_id_seq"},
};

static void
advance_sequence(const char *table)
{
	int			i;

	for (i = 0; i < lengthof(restored_sequences); i++)
	{
		char	   *sql;
		int			rc;

		if (strcmp(restored_sequences[i].table, table) != 0)
			continue;
		sql = psprintf("SELECT pg_catalog.setval('es.%s'::pg_catalog.regclass, x.m)"
					   "  FROM (SELECT max(t.%s) AS m FROM es.%s AS t) AS x,"
					   "       es.%s AS s"
					   " WHERE x.m OPERATOR(pg_catalog.>) s.last_value"
					   "    OR (x.m OPERATOR(pg_catalog.=) s.last_value AND NOT s.is_called)",
					   restored_sequences[i].sequence, restored_sequences[i].column,
					   table, restored_sequences[i].sequence);
		rc = SPI_execute(sql, false, 0);
		if (rc != SPI_OK_SELECT)
			elog(ERROR, "could not advance sequence \"es.%s\": %s",
				 restored_sequences[i].sequence, SPI_result_code_string(rc));
	}
}

/*
 * record_foreign_eras
 *		After a restore COPY into es.events: the eras whose restored events
 *		carry transaction ids this cluster has not reached (a dump of a
 *		physical copy of this cluster, which shares its system identifier)
 *		get a 'foreign era' row in es.user_objects, which era.c reads: new
 *		events then go into a new era.  Decided here, once, while the ids are
 *		still beyond the next transaction id: a reader may show those events
 *		at once, so every later append must sort after them.
 */
static void
record_foreign_eras(Oid user_objects)
{
	Datum		next = FullTransactionIdGetDatum(ReadNextFullTransactionId());
	int			rc;

	EsAllowNextWrite(user_objects, TRIGGER_EVENT_INSERT);
	rc = SPI_execute_with_args("INSERT INTO es.user_objects (table_name, kind, object_name)"
							   " SELECT 'events', 'foreign era', e.era::pg_catalog.text"
							   "   FROM es.events AS e"
							   "  GROUP BY e.era"
							   " HAVING max(e.tx_id) OPERATOR(pg_catalog.>=) $1"
							   " ON CONFLICT ON CONSTRAINT user_objects_pkey DO NOTHING",
							   1, (Oid[]) {XID8OID}, &next, NULL, false, 0);
	EsClearAllowedWrite();
	if (rc != SPI_OK_INSERT)
		elog(ERROR, "could not record the foreign eras of es.events: %s",
			 SPI_result_code_string(rc));
}

PG_FUNCTION_INFO_V1(es_restored);

/*
 * es_restored
 *		AFTER INSERT ... FOR EACH STATEMENT trigger on every es_ext table
 *		except es.user_objects.  Does nothing unless the statement is a
 *		restore COPY into the table; then records the table's rows as
 *		restored (a 'restored rows' row of es.user_objects, whose deferred
 *		trigger re-creates the pending objects at commit, once this COPY no
 *		longer uses the table).  Takes the SHARE ROW EXCLUSIVE lock on
 *		es.user_objects first (see the file header).
 */
Datum
es_restored(PG_FUNCTION_ARGS)
{
	TriggerData *trigdata = (TriggerData *) fcinfo->context;
	Relation	rel;
	Oid			user_objects;
	Datum		name;
	int			rc;

	if (!CALLED_AS_TRIGGER(fcinfo) || !TRIGGER_FIRED_AFTER(trigdata->tg_event) ||
		!TRIGGER_FIRED_FOR_STATEMENT(trigdata->tg_event))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("es_restored() must be fired AFTER ... FOR EACH STATEMENT")));

	rel = trigdata->tg_relation;
	if (!EsRestoreCopy(rel))
		return PointerGetDatum(NULL);
	/*
	 * A COPY into a Citus shard is Citus moving rows (distributing a table,
	 * moving or copying a shard): no restore to record.  Its connections
	 * copy several shards of one node at once, in one distributed
	 * transaction, and would wait for each other on es.user_objects.
	 */
	{
		const char *table;

		if (EsLogicalRelid(rel, &table) != RelationGetRelid(rel))
			return PointerGetDatum(NULL);
	}

	/* for the tables without a guard trigger, which checks this first */
	check_restore_target(rel);

	user_objects = EsRelationOid("user_objects");
	LockRelationOid(user_objects, ShareRowExclusiveLock);

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	advance_sequence(RelationGetRelationName(rel));
	if (strcmp(RelationGetRelationName(rel), "events") == 0)
		record_foreign_eras(user_objects);
	name = CStringGetDatum(RelationGetRelationName(rel));
	EsAllowNextWrite(user_objects, TRIGGER_EVENT_INSERT);
	rc = SPI_execute_with_args("INSERT INTO es.user_objects (table_name, kind, object_name)"
							   " VALUES ($1, 'restored rows', $1)"
							   " ON CONFLICT ON CONSTRAINT user_objects_pkey DO NOTHING",
							   1, (Oid[]) {NAMEOID}, &name, NULL, false, 0);
	EsClearAllowedWrite();
	if (rc != SPI_OK_INSERT)
		elog(ERROR, "could not record the restore of \"es.%s\": %s",
			 RelationGetRelationName(rel), SPI_result_code_string(rc));
	SPI_finish();
	return PointerGetDatum(NULL);
}

PG_FUNCTION_INFO_V1(es_user_objects_pending);

/* the local transaction whose pending objects were processed last */
static LocalTransactionId pending_done_lxid = InvalidLocalTransactionId;

/*
 * es_user_objects_pending
 *		Deferred AFTER INSERT constraint trigger (FOR EACH ROW) on
 *		es.user_objects: at the commit of a restore step that brought pending
 *		objects or restored a table's rows, re-creates the pending objects of
 *		every restored table.  The statements run as the restoring role with
 *		search_path = pg_catalog, pg_temp (the definitions are
 *		schema-qualified for that path), under the SHARE ROW EXCLUSIVE lock on
 *		es.user_objects, each query with a fresh snapshot.
 */
Datum
es_user_objects_pending(PG_FUNCTION_ARGS)
{
	TriggerData *trigdata = (TriggerData *) fcinfo->context;
	int			save_nestlevel;
	uint64		n;

	if (!CALLED_AS_TRIGGER(fcinfo) || !TRIGGER_FIRED_AFTER(trigdata->tg_event) ||
		!TRIGGER_FIRED_FOR_ROW(trigdata->tg_event))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("es_user_objects_pending() must be fired AFTER ... FOR EACH ROW")));

	/* one pass per transaction: it fires for every row inserted */
	if (MyProc->lxid == pending_done_lxid)
		return PointerGetDatum(NULL);
	pending_done_lxid = MyProc->lxid;

	LockRelationOid(RelationGetRelid(trigdata->tg_relation), ShareRowExclusiveLock);

	save_nestlevel = NewGUCNestLevel();
	(void) set_config_option("search_path", "pg_catalog, pg_temp",
							 PGC_USERSET, PGC_S_SESSION, GUC_ACTION_SAVE, true, 0, false);
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	n = restore_pending();
	SPI_finish();
	AtEOXact_GUC(true, save_nestlevel);

	if (n > 0)
		ereport(NOTICE,
				(errmsg("re-created " UINT64_FORMAT " user objects on es_ext's tables", n)));
	return PointerGetDatum(NULL);
}

/*
 * EsRestoreCopyBegin
 *		Called by the guard when it lets a restore COPY through: refuses it
 *		when the table has user triggers, and takes the lock of the file
 *		header first when the COPY brings es.user_objects.
 */
void
EsRestoreCopyBegin(Relation rel)
{
	check_restore_target(rel);
	if (strcmp(RelationGetRelationName(rel), "user_objects") == 0)
		LockRelationOid(RelationGetRelid(rel), ShareRowExclusiveLock);
}
