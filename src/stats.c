/*-------------------------------------------------------------------------
 *
 * stats.c
 *	  Statistics of es_ext kept in shared memory: appends, conflicts,
 *	  replays, refused batches, append latency, reads, folds and outbox
 *	  traffic, per database, per stream category and per consumer group.
 *
 * The counters exist only when es_ext is in shared_preload_libraries (the
 * shared memory is reserved at postmaster start, as pg_stat_statements
 * does).  Without it every function here is a no-op, and the views say the
 * counters are off (enabled = false, counters NULL) rather than show zeros.
 *
 * Shared state: one hash table of entries keyed by (database, kind, name):
 * kind 'd' is the database's own entry (name empty), 'c' a stream category,
 * 'g' an outbox consumer group.  Counting takes the LWLock in shared mode
 * (exclusive to create an entry) and holds it while it adds; each entry's
 * counters are protected by its own spinlock, held only to add or copy.
 * Entries are removed only under the exclusive lock, by es_stats_reset:
 * the categories and groups of its database (they come back at their next
 * use), and every entry of a database that was dropped -- so a backend may
 * cache the address of its own database's entry.  The table has a fixed
 * size: at most es.stats_max_categories category and group entries, for
 * the whole cluster; past that, a category or group is counted in its
 * database's entry only, and that entry's "untracked" counter says how
 * often that happened.
 *
 * An entry of a category is created by a successful append, a read or a
 * fold that found events; one of a group by the traffic of an existing
 * group.  Reads of names that do not exist and refused input count in the
 * database's entry only, so they cannot fill the table.
 *
 * Durability: the postmaster writes the entries to pg_stat/es_ext.stat when
 * it shuts down (in any mode: smart, fast or immediate -- unless a backend
 * killed by an immediate shutdown was inserting or removing an entry, when
 * the table may be torn and nothing is saved) and reads, then removes, that
 * file at the next start.  A crash -- a backend dying, after
 * which the postmaster re-creates shared memory, or the postmaster killed
 * -- resets every counter, as for pg_stat_statements.
 *
 * Cost on the append path: two hash lookups under a shared LWLock and two
 * spinlocked additions per es_append (bench/stats_cpu measures it), and
 * nothing when es.track_stats is off.  The exclusive lock is taken only to
 * create an entry, never when the table is full.
 *
 * src/stats.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <math.h>
#include <unistd.h>

#include "access/htup_details.h"
#include "catalog/pg_authid.h"
#include "catalog/pg_database.h"
#include "catalog/pg_type.h"
#include "fmgr.h"
#include "funcapi.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "nodes/pg_list.h"
#include "pgstat.h"
#include "port/pg_bitutils.h"
#include "storage/fd.h"
#include "storage/ipc.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"
#include "storage/spin.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/hsearch.h"
#include "utils/inval.h"
#include "utils/syscache.h"
#include "utils/timestamp.h"

#include "es_ext.h"

/* the file the postmaster keeps the counters in across a clean restart */
#define ES_STATS_FILE		"pg_stat/es_ext.stat"
#define ES_STATS_FILE_TMP	ES_STATS_FILE ".tmp"

/* bump when EsStatsEntry changes: an old file is then ignored */
#define ES_STATS_FILE_MAGIC	0x45535401

/* entry kinds */
#define ES_STATS_DATABASE	'd'
#define ES_STATS_CATEGORY	'c'
#define ES_STATS_GROUP		'g'

/*
 * The append latency histogram, in microseconds: values below 16 have a
 * bucket each, then every power of two is split into 8 buckets (so a
 * reported percentile is within 1/16 of the true value), up to 2^35 us.
 */
#define ES_HIST_LINEAR		16
#define ES_HIST_SUB_BITS	3
#define ES_HIST_SUB			(1 << ES_HIST_SUB_BITS)
#define ES_HIST_MAX_EXP		35
#define ES_HIST_BUCKETS		(ES_HIST_LINEAR + (ES_HIST_MAX_EXP - 4 + 1) * ES_HIST_SUB)

/* extra entries beyond es.stats_max_categories: databases */
#define ES_STATS_DATABASES	64

typedef struct EsStatsKey
{
	Oid			dbid;
	char		kind;
	char		name[ES_STATS_NAME_LEN];
} EsStatsKey;

typedef struct EsStatsCounters
{
	int64		appends;		/* es_append calls that wrote */
	int64		events;			/* events they wrote */
	int64		data_bytes;		/* bytes of data and metadata written */
	int64		replays;		/* idempotent replays (nothing written) */
	int64		conflicts;		/* expected-version conflicts */
	int64		refused;		/* batches refused for bad input */
	int64		stream_reads;	/* es_read_stream calls */
	int64		log_reads;		/* es_read_all calls */
	int64		folds;			/* es_fold / es_fold_state calls */
	int64		snapshot_hits;	/* ... that started from a snapshot */
	int64		claimed;		/* outbox messages claimed */
	int64		acked;			/* outbox messages acknowledged */
	int64		nacked;			/* outbox messages given back */
	int64		dead;			/* outbox messages moved to the dead letters */
	int64		untracked;		/* counted here only: no entry left */
	double		append_ms_total;	/* total append latency, of appends + replays */
	double		append_ms_max;
	int64		hist[ES_HIST_BUCKETS];
	TimestampTz reset_at;		/* last reset (or creation) */
} EsStatsCounters;

typedef struct EsStatsEntry
{
	EsStatsKey	key;			/* hash key: must be first */
	slock_t		mutex;
	EsStatsCounters c;
} EsStatsEntry;

typedef struct EsStatsShared
{
	LWLock	   *lock;
	int			named_entries;	/* category and group entries */
	/* an insert or remove is under way: a backend killed now leaves it set */
	bool		changing;
} EsStatsShared;

/* NULL unless es_ext is in shared_preload_libraries */
static EsStatsShared *stats_shared = NULL;
static HTAB *stats_hash = NULL;


/* GUCs (es_ext.c) */
bool		es_track_stats = true;
int			es_stats_max_categories = ES_DEFAULT_STATS_MAX_CATEGORIES;

static shmem_request_hook_type prev_shmem_request_hook = NULL;
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;

static Size
stats_entries(void)
{
	return (Size) es_stats_max_categories + ES_STATS_DATABASES;
}

static Size
stats_shmem_size(void)
{
	return add_size(MAXALIGN(sizeof(EsStatsShared)),
					hash_estimate_size(stats_entries(), sizeof(EsStatsEntry)));
}

static void
stats_shmem_request(void)
{
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
	RequestAddinShmemSpace(stats_shmem_size());
	RequestNamedLWLockTranche("es_ext stats", 1);
}

/*
 * stats_insert
 *		The entry of key; created, with the given counters (NULL: zero,
 *		reset now), when missing.  Caller holds the lock exclusively.
 *		Returns NULL when no entry is left.
 */
static EsStatsEntry *
stats_insert(const EsStatsKey *key, const EsStatsCounters *c)
{
	EsStatsEntry *entry;
	bool		found;

	entry = hash_search(stats_hash, key, HASH_FIND, NULL);
	if (entry != NULL)
		return entry;
	if (key->kind != ES_STATS_DATABASE &&
		stats_shared->named_entries >= es_stats_max_categories)
		return NULL;
	stats_shared->changing = true;
	entry = hash_search(stats_hash, key, HASH_ENTER_NULL, &found);
	if (entry != NULL && !found)
	{
		SpinLockInit(&entry->mutex);
		if (c)
			entry->c = *c;
		else
		{
			memset(&entry->c, 0, sizeof(EsStatsCounters));
			entry->c.reset_at = GetCurrentTimestamp();
		}
		if (key->kind != ES_STATS_DATABASE)
			stats_shared->named_entries++;
	}
	stats_shared->changing = false;
	return entry;
}

/*
 * stats_load
 *		Read the counters a clean shutdown saved, then remove the file (so a
 *		crash later starts from zero).  A missing, short or foreign file is
 *		ignored with a LOG line at most.
 */
static void
stats_load(void)
{
	FILE	   *file;
	uint32		magic;
	int32		count;
	int			i;

	file = AllocateFile(ES_STATS_FILE, PG_BINARY_R);
	if (file == NULL)
	{
		if (errno != ENOENT)
			ereport(LOG,
					(errcode_for_file_access(),
					 errmsg("could not read file \"%s\": %m", ES_STATS_FILE)));
		return;
	}
	if (fread(&magic, sizeof(magic), 1, file) != 1 || magic != ES_STATS_FILE_MAGIC ||
		fread(&count, sizeof(count), 1, file) != 1 || count < 0)
		goto done;
	for (i = 0; i < count; i++)
	{
		EsStatsEntry saved;

		if (fread(&saved, sizeof(saved), 1, file) != 1)
		{
			ereport(LOG,
					(errmsg("file \"%s\" is truncated; es_ext statistics were partly restored",
							ES_STATS_FILE)));
			break;
		}
		saved.key.name[ES_STATS_NAME_LEN - 1] = '\0';
		if (saved.key.kind != ES_STATS_DATABASE && saved.key.kind != ES_STATS_CATEGORY &&
			saved.key.kind != ES_STATS_GROUP)
			continue;
		/* no room for this one (a smaller es.stats_max_categories): skip it */
		(void) stats_insert(&saved.key, &saved.c);
	}
done:
	FreeFile(file);
	unlink(ES_STATS_FILE);
}

/*
 * stats_save
 *		on_shmem_exit callback of the postmaster: write the counters on a
 *		clean shutdown (code 0) only.
 */
static void
stats_save(int code, Datum arg)
{
	FILE	   *file;
	HASH_SEQ_STATUS seq;
	EsStatsEntry *entry;
	uint32		magic = ES_STATS_FILE_MAGIC;
	int32		count;

	if (code != 0 || stats_hash == NULL)
		return;
	/* a backend killed in the middle of an insert or remove (an immediate
	 * shutdown): the table may be torn, keep nothing rather than walk it */
	if (stats_shared->changing)
	{
		ereport(LOG,
				(errmsg("es_ext statistics were not saved: the shutdown interrupted a change of their table")));
		return;
	}

	file = AllocateFile(ES_STATS_FILE_TMP, PG_BINARY_W);
	if (file == NULL)
		goto error;
	count = (int32) hash_get_num_entries(stats_hash);
	if (fwrite(&magic, sizeof(magic), 1, file) != 1 ||
		fwrite(&count, sizeof(count), 1, file) != 1)
		goto error;
	hash_seq_init(&seq, stats_hash);
	while ((entry = hash_seq_search(&seq)) != NULL)
	{
		if (fwrite(entry, sizeof(EsStatsEntry), 1, file) != 1)
		{
			hash_seq_term(&seq);
			goto error;
		}
	}
	if (FreeFile(file))
	{
		file = NULL;
		goto error;
	}
	(void) durable_rename(ES_STATS_FILE_TMP, ES_STATS_FILE, LOG);
	return;

error:
	ereport(LOG,
			(errcode_for_file_access(),
			 errmsg("could not write file \"%s\": %m", ES_STATS_FILE_TMP)));
	if (file)
		FreeFile(file);
	unlink(ES_STATS_FILE_TMP);
}

static void
stats_shmem_startup(void)
{
	bool		found;
	HASHCTL		info;

	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();

	stats_shared = NULL;
	stats_hash = NULL;

	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	stats_shared = ShmemInitStruct("es_ext stats", sizeof(EsStatsShared), &found);
	if (!found)
	{
		stats_shared->lock = &(GetNamedLWLockTranche("es_ext stats"))->lock;
		stats_shared->named_entries = 0;
		stats_shared->changing = false;
	}
	info.keysize = sizeof(EsStatsKey);
	info.entrysize = sizeof(EsStatsEntry);
	/*
	 * HASH_FIXED_SIZE: never grow past the entries reserved, into the
	 * shared memory slack the lock manager and other modules rely on (and
	 * that other libraries' reservations use at the next start, when a
	 * saved file is loaded before them).  A full table makes
	 * HASH_ENTER_NULL return NULL: the counts go to "untracked".
	 */
	stats_hash = ShmemInitHash("es_ext stats hash", stats_entries(), stats_entries(),
							   &info, HASH_ELEM | HASH_BLOBS | HASH_FIXED_SIZE);
	LWLockRelease(AddinShmemInitLock);

	/* the postmaster (or a single-user backend) loads and saves the file */
	if (!IsUnderPostmaster)
	{
		on_shmem_exit(stats_save, (Datum) 0);
		if (!found)
			stats_load();
	}
}

/*
 * EsStatsRegister
 *		Called by _PG_init while shared_preload_libraries are loaded: reserve
 *		the shared memory of the counters.  Registers only.
 */
void
EsStatsRegister(void)
{
	prev_shmem_request_hook = shmem_request_hook;
	shmem_request_hook = stats_shmem_request;
	prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = stats_shmem_startup;
}

/* Are counters kept in this session now? */
static inline bool
stats_on(void)
{
	return stats_hash != NULL && es_track_stats;
}

static void
stats_key(EsStatsKey *key, Oid dbid, char kind, const char *name, int len)
{
	memset(key, 0, sizeof(EsStatsKey));
	key->dbid = dbid;
	key->kind = kind;
	if (len >= ES_STATS_NAME_LEN)
		len = pg_mbcliplen(name, len, ES_STATS_NAME_LEN - 1);
	if (len > 0)
		memcpy(key->name, name, len);
}

/*
 * ensure_db_entry
 *		Make sure this database has its entry (while one is left).
 */
static void
ensure_db_entry(void)
{
	EsStatsKey	key;
	EsStatsEntry *entry;

	stats_key(&key, MyDatabaseId, ES_STATS_DATABASE, NULL, 0);
	LWLockAcquire(stats_shared->lock, LW_SHARED);
	entry = hash_search(stats_hash, &key, HASH_FIND, NULL);
	LWLockRelease(stats_shared->lock);
	if (entry == NULL)
	{
		LWLockAcquire(stats_shared->lock, LW_EXCLUSIVE);
		(void) stats_insert(&key, NULL);
		LWLockRelease(stats_shared->lock);
	}
}

/* The category of a stream id: up to its first '-' (as es.events.category). */
static void
category_of(const char *stream, int len, const char **cat, int *catlen)
{
	const char *dash = memchr(stream, '-', len);

	*cat = stream;
	*catlen = dash ? (int) (dash - stream) : len;
}

/* What one call adds to an entry. */
typedef struct EsStatsDelta
{
	int64		appends;
	int64		events;
	int64		data_bytes;
	int64		replays;
	int64		conflicts;
	int64		refused;
	int64		stream_reads;
	int64		log_reads;
	int64		folds;
	int64		snapshot_hits;
	int64		claimed;
	int64		acked;
	int64		nacked;
	int64		dead;
	double		append_ms;		/* < 0: no latency sample */
	int			bucket;
} EsStatsDelta;

static void
stats_add(EsStatsEntry *entry, const EsStatsDelta *d, bool untracked)
{
	EsStatsCounters *c = &entry->c;

	SpinLockAcquire(&entry->mutex);
	c->appends += d->appends;
	c->events += d->events;
	c->data_bytes += d->data_bytes;
	c->replays += d->replays;
	c->conflicts += d->conflicts;
	c->refused += d->refused;
	c->stream_reads += d->stream_reads;
	c->log_reads += d->log_reads;
	c->folds += d->folds;
	c->snapshot_hits += d->snapshot_hits;
	c->claimed += d->claimed;
	c->acked += d->acked;
	c->nacked += d->nacked;
	c->dead += d->dead;
	if (untracked)
		c->untracked++;
	if (d->append_ms >= 0)
	{
		c->append_ms_total += d->append_ms;
		if (d->append_ms > c->append_ms_max)
			c->append_ms_max = d->append_ms;
		c->hist[d->bucket]++;
	}
	SpinLockRelease(&entry->mutex);
}

/*
 * stats_count
 *		Add d to this database's entry and, when name is given, to the entry
 *		of that category or group.  A missing entry of the database is
 *		created; one of the category or group only when create is true (a
 *		successful append, outbox traffic of an existing group, a read that
 *		found events): reads of names that do not exist and refused input
 *		cannot fill the table.  Entries are used only under the lock, which
 *		es_stats_reset takes exclusively to remove some.
 */
static void
stats_count(char kind, const char *name, int len, const EsStatsDelta *d, bool create)
{
	EsStatsKey	dbkey;
	EsStatsKey	key;
	EsStatsEntry *dbe;
	EsStatsEntry *entry = NULL;
	bool		full = false;

	stats_key(&dbkey, MyDatabaseId, ES_STATS_DATABASE, NULL, 0);
	if (name != NULL)
		stats_key(&key, MyDatabaseId, kind, name, len);

	LWLockAcquire(stats_shared->lock, LW_SHARED);
	dbe = hash_search(stats_hash, &dbkey, HASH_FIND, NULL);
	if (name != NULL)
	{
		entry = hash_search(stats_hash, &key, HASH_FIND, NULL);
		/* no place left: count in the database only, without escalating */
		full = (entry == NULL && create &&
				stats_shared->named_entries >= es_stats_max_categories);
	}
	if (dbe == NULL || (name != NULL && entry == NULL && create && !full))
	{
		LWLockRelease(stats_shared->lock);
		LWLockAcquire(stats_shared->lock, LW_EXCLUSIVE);
		dbe = stats_insert(&dbkey, NULL);
		if (name != NULL && create)
		{
			entry = stats_insert(&key, NULL);
			full = (entry == NULL);
		}
	}
	if (entry != NULL)
		stats_add(entry, d, false);
	if (dbe != NULL)
		stats_add(dbe, d, full);
	LWLockRelease(stats_shared->lock);
}

/* A delta that adds nothing (and has no latency sample). */
static inline void
delta_init(EsStatsDelta *d)
{
	memset(d, 0, sizeof(EsStatsDelta));
	d->append_ms = -1;
}

/*
 * count_stream
 *		Add d to this database and to the category of the stream id (len
 *		bytes at stream; NULL: the database only), as stats_count.
 */
static void
count_stream(const char *stream, int len, const EsStatsDelta *d, bool create)
{
	const char *cat = NULL;
	int			catlen = 0;

	if (stream != NULL)
		category_of(stream, len, &cat, &catlen);
	stats_count(ES_STATS_CATEGORY, cat, catlen, d, create);
}

/* The histogram bucket of a latency in microseconds. */
static int
hist_bucket(uint64 us)
{
	int			exp;

	if (us < ES_HIST_LINEAR)
		return (int) us;
	exp = pg_leftmost_one_pos64(us);
	if (exp > ES_HIST_MAX_EXP)
		return ES_HIST_BUCKETS - 1;
	return ES_HIST_LINEAR + (exp - 4) * ES_HIST_SUB +
		(int) ((us >> (exp - ES_HIST_SUB_BITS)) & (ES_HIST_SUB - 1));
}

/* The middle of a bucket, in milliseconds. */
static double
hist_value_ms(int bucket)
{
	int			exp;
	int			sub;
	double		low;
	double		width;

	if (bucket < ES_HIST_LINEAR)
		return bucket / 1000.0;
	exp = (bucket - ES_HIST_LINEAR) / ES_HIST_SUB + 4;
	sub = (bucket - ES_HIST_LINEAR) % ES_HIST_SUB;
	width = (double) ((uint64) 1 << (exp - ES_HIST_SUB_BITS));
	low = (double) ((uint64) 1 << exp) + sub * width;
	return (low + width / 2) / 1000.0;
}

/* ------------------------------------------------------------ counting */

/*
 * EsStatsAppendBegin
 *		Start timing an es_append call (a no-op when counters are off).
 */
void
EsStatsAppendBegin(instr_time *start)
{
	if (stats_on())
		INSTR_TIME_SET_CURRENT(*start);
	else
		INSTR_TIME_SET_ZERO(*start);
}

/*
 * EsStatsAppendEnd
 *		Count a successful es_append of the n events to stream (with the
 *		bytes of their data and metadata), or an idempotent replay of them,
 *		timed from start.
 */
void
EsStatsAppendEnd(const instr_time *start, const char *stream, int len,
				 const EsEvent *events, int n, bool replay)
{
	EsStatsDelta d;
	instr_time	now;
	double		us;

	if (!stats_on() || INSTR_TIME_IS_ZERO(*start))
		return;
	INSTR_TIME_SET_CURRENT(now);
	INSTR_TIME_SUBTRACT(now, *start);
	us = INSTR_TIME_GET_MICROSEC(now);

	delta_init(&d);
	if (replay)
		d.replays = 1;
	else
	{
		int			i;

		d.appends = 1;
		d.events = n;
		for (i = 0; i < n; i++)
		{
			d.data_bytes += VARSIZE_ANY_EXHDR(events[i].data);
			if (events[i].metadata)
				d.data_bytes += VARSIZE_ANY_EXHDR(events[i].metadata);
		}
	}
	d.append_ms = us / 1000.0;
	d.bucket = hist_bucket((uint64) us);
	count_stream(stream, len, &d, true);
}

/*
 * EsStatsAppendFailed
 *		Count an es_append refused for bad input (conflict false) or for an
 *		expected-version conflict (conflict true).  stream may be NULL (the
 *		stream id itself was bad): then only the database counts it, as it
 *		does when the category has no entry yet (refused input never makes
 *		one).  Called while an error is being raised: takes only spinlocks
 *		and the stats LWLock, allocates nothing.
 */
void
EsStatsAppendFailed(const char *stream, int len, bool conflict)
{
	EsStatsDelta d;

	if (!stats_on())
		return;
	delta_init(&d);
	if (conflict)
		d.conflicts = 1;
	else
		d.refused = 1;
	if (len <= 0 || len > ES_MAX_NAME_BYTES)
		stream = NULL;
	count_stream(stream, len, &d, false);
}

/*
 * EsStatsRead
 *		Count a read: of one stream (stream given, log false), of the log
 *		(log true; category is the filter, or NULL).  found: it returned
 *		events (only then may the category get an entry).
 */
void
EsStatsRead(const char *name, int len, bool log, bool found)
{
	EsStatsDelta d;

	if (!stats_on())
		return;
	delta_init(&d);
	if (log)
	{
		/* name is the category filter itself */
		d.log_reads = 1;
		stats_count(ES_STATS_CATEGORY, name, len, &d, found);
	}
	else
	{
		d.stream_reads = 1;
		count_stream(name, len, &d, found);
	}
}

/*
 * EsStatsFold
 *		Count a fold of stream, from a snapshot or not; found: it read a
 *		snapshot or an event (only then may the category get an entry).
 */
void
EsStatsFold(const char *stream, int len, bool snapshot_hit, bool found)
{
	EsStatsDelta d;

	if (!stats_on())
		return;
	delta_init(&d);
	d.folds = 1;
	d.snapshot_hits = snapshot_hit ? 1 : 0;
	count_stream(stream, len, &d, found);
}

/*
 * EsStatsOutbox
 *		Count outbox traffic of consumer group (an existing one):
 *		messages claimed, acknowledged, given back, moved to the dead
 *		letters.
 */
void
EsStatsOutbox(text *group, int64 claimed, int64 acked, int64 nacked, int64 dead)
{
	EsStatsDelta d;

	if (!stats_on() || (claimed == 0 && acked == 0 && nacked == 0 && dead == 0))
		return;
	delta_init(&d);
	d.claimed = claimed;
	d.acked = acked;
	d.nacked = nacked;
	d.dead = dead;
	stats_count(ES_STATS_GROUP, VARDATA_ANY(group), VARSIZE_ANY_EXHDR(group), &d, true);
}

/* ------------------------------------------------------------ reading */

/* May this role see other databases' counters? */
static bool
sees_all_databases(void)
{
	return has_privs_of_role(GetUserId(), ROLE_PG_READ_ALL_STATS);
}

/* The p-th percentile (0 < p < 1) of a histogram, in ms; NULL when empty. */
static bool
hist_percentile(const int64 *hist, int64 count, double p, double *ms)
{
	int64		rank;
	int64		seen = 0;
	int			i;

	if (count <= 0)
		return false;
	rank = (int64) ceil(p * count);
	if (rank < 1)
		rank = 1;
	for (i = 0; i < ES_HIST_BUCKETS; i++)
	{
		seen += hist[i];
		if (seen >= rank)
		{
			*ms = hist_value_ms(i);
			return true;
		}
	}
	*ms = hist_value_ms(ES_HIST_BUCKETS - 1);
	return true;
}

/*
 * Columns shared by es_stats() and es_category_stats() after the leading
 * key columns: see the install script for their names and order.
 */
#define ES_STATS_COUNTER_COLS	19

static void
counter_values(const EsStatsCounters *c, Datum *values, bool *nulls)
{
	int64		timed = c->appends + c->replays;
	double		ms;
	int			i = 0;

	values[i++] = Int64GetDatum(c->appends);
	values[i++] = Int64GetDatum(c->events);
	values[i++] = Int64GetDatum(c->data_bytes);
	values[i++] = Int64GetDatum(c->conflicts);
	values[i++] = Int64GetDatum(c->replays);
	values[i++] = Int64GetDatum(c->refused);
	if (timed > 0)
		values[i] = Float8GetDatum(c->append_ms_total / timed);
	else
		nulls[i] = true;
	i++;
	if (hist_percentile(c->hist, timed, 0.5, &ms))
		values[i] = Float8GetDatum(ms);
	else
		nulls[i] = true;
	i++;
	if (hist_percentile(c->hist, timed, 0.99, &ms))
		values[i] = Float8GetDatum(ms);
	else
		nulls[i] = true;
	i++;
	if (timed > 0)
		values[i] = Float8GetDatum(c->append_ms_max);
	else
		nulls[i] = true;
	i++;
	values[i++] = Int64GetDatum(c->stream_reads);
	values[i++] = Int64GetDatum(c->log_reads);
	values[i++] = Int64GetDatum(c->folds);
	values[i++] = Int64GetDatum(c->snapshot_hits);
	values[i++] = Int64GetDatum(c->claimed);
	values[i++] = Int64GetDatum(c->acked);
	values[i++] = Int64GetDatum(c->nacked);
	values[i++] = Int64GetDatum(c->dead);
	values[i++] = TimestampTzGetDatum(c->reset_at);
	Assert(i == ES_STATS_COUNTER_COLS);
}

PG_FUNCTION_INFO_V1(es_stats_counters);

/*
 * es_stats_counters(kind text) RETURNS SETOF record
 *		(dbid oid, name text, enabled boolean, <the counters>, untracked
 *		bigint): one row per entry of the kind asked for -- 'database' (every
 *		database for roles with the privileges of pg_read_all_stats, else
 *		this one), 'category' or 'group' (of this database).  Without
 *		preload: one row (this database, NULL name) with enabled false and
 *		NULL counters.  The views es.stats, es.category_stats and
 *		es.outbox_status read it.
 */
Datum
es_stats_counters(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	Datum		values[3 + ES_STATS_COUNTER_COLS + 1];
	bool		nulls[3 + ES_STATS_COUNTER_COLS + 1];
	char	   *kindname = text_to_cstring(PG_GETARG_TEXT_PP(0));
	char		kind;
	bool		all;
	HASH_SEQ_STATUS seq;
	EsStatsEntry *entry;

	if (strcmp(kindname, "database") == 0)
		kind = ES_STATS_DATABASE;
	else if (strcmp(kindname, "category") == 0)
		kind = ES_STATS_CATEGORY;
	else if (strcmp(kindname, "group") == 0)
		kind = ES_STATS_GROUP;
	else
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("unrecognized statistics kind \"%s\"", kindname),
				 errhint("Valid kinds are \"database\", \"category\" and \"group\".")));
	all = (kind == ES_STATS_DATABASE) && sees_all_databases();

	InitMaterializedSRF(fcinfo, 0);

	if (stats_hash == NULL)
	{
		memset(nulls, true, sizeof(nulls));
		values[0] = ObjectIdGetDatum(MyDatabaseId);
		nulls[0] = false;
		values[2] = BoolGetDatum(false);
		nulls[2] = false;
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
		return (Datum) 0;
	}

	/* the database's own row exists from the first look */
	ensure_db_entry();

	LWLockAcquire(stats_shared->lock, LW_SHARED);
	hash_seq_init(&seq, stats_hash);
	while ((entry = hash_seq_search(&seq)) != NULL)
	{
		EsStatsCounters c;

		if (entry->key.kind != kind || (!all && entry->key.dbid != MyDatabaseId))
			continue;

		SpinLockAcquire(&entry->mutex);
		c = entry->c;
		SpinLockRelease(&entry->mutex);

		memset(nulls, false, sizeof(nulls));
		values[0] = ObjectIdGetDatum(entry->key.dbid);
		if (kind == ES_STATS_DATABASE)
			nulls[1] = true;
		else
			values[1] = CStringGetTextDatum(entry->key.name);
		values[2] = BoolGetDatum(true);
		counter_values(&c, values + 3, nulls + 3);
		values[3 + ES_STATS_COUNTER_COLS] = Int64GetDatum(c.untracked);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	LWLockRelease(stats_shared->lock);
	return (Datum) 0;
}

PG_FUNCTION_INFO_V1(es_stats_reset);

/*
 * es_stats_reset() RETURNS timestamptz
 *		Zero the counters of this database and remove the entries of its
 *		categories and groups (they come back at their next use, and free
 *		their places of es.stats_max_categories meanwhile); remove the
 *		entries of databases that no longer exist.  Returns the time of the
 *		reset.
 */
Datum
es_stats_reset(PG_FUNCTION_ARGS)
{
	HASH_SEQ_STATUS seq;
	EsStatsEntry *entry;
	TimestampTz now = GetCurrentTimestamp();
	List	   *dbids = NIL;
	List	   *dropped = NIL;
	ListCell   *lc;

	if (stats_hash == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("es_ext statistics are not enabled"),
				 errhint("Add es_ext to shared_preload_libraries and restart the server.")));

	/* the databases with entries, then (without the lock) those dropped */
	LWLockAcquire(stats_shared->lock, LW_SHARED);
	hash_seq_init(&seq, stats_hash);
	while ((entry = hash_seq_search(&seq)) != NULL)
		if (entry->key.kind == ES_STATS_DATABASE)
			dbids = lappend_oid(dbids, entry->key.dbid);
	LWLockRelease(stats_shared->lock);
	/* see the databases created or dropped since this transaction began */
	AcceptInvalidationMessages();
	foreach(lc, dbids)
		if (lfirst_oid(lc) != MyDatabaseId &&
			!SearchSysCacheExists1(DATABASEOID, ObjectIdGetDatum(lfirst_oid(lc))))
			dropped = lappend_oid(dropped, lfirst_oid(lc));

	ensure_db_entry();
	LWLockAcquire(stats_shared->lock, LW_EXCLUSIVE);
	hash_seq_init(&seq, stats_hash);
	while ((entry = hash_seq_search(&seq)) != NULL)
	{
		if (entry->key.dbid == MyDatabaseId && entry->key.kind == ES_STATS_DATABASE)
		{
			memset(&entry->c, 0, sizeof(EsStatsCounters));
			entry->c.reset_at = now;
		}
		else if (entry->key.dbid == MyDatabaseId || list_member_oid(dropped, entry->key.dbid))
		{
			stats_shared->changing = true;
			if (entry->key.kind != ES_STATS_DATABASE)
				stats_shared->named_entries--;
			(void) hash_search(stats_hash, &entry->key, HASH_REMOVE, NULL);
			stats_shared->changing = false;
		}
	}
	LWLockRelease(stats_shared->lock);
	PG_RETURN_TIMESTAMPTZ(now);
}
