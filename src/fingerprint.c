/*-------------------------------------------------------------------------
 *
 * fingerprint.c
 *	  SHA-256 digests: the one home of the hashing behind snapshot keys
 *	  (the initial-state hash and the fingerprint of a reducer and of the
 *	  upcaster registry).
 *
 * A digest is computed by EsHashBegin, any number of EsHash* feeds and
 * EsHashEnd (raw digest) or EsHashEndDatum (bytea).  Two ways of feeding
 * exist and must not be mixed up, since stored fingerprints depend on the
 * exact bytes: EsHashBytes/EsHashString feed a length prefix (int32, -1 for
 * NULL) then the bytes, as routine definitions are hashed; EsHashRaw and
 * EsHashCString feed bytes as they are (the latter with its terminating
 * NUL), as the initial state and the registry rows are hashed.
 *
 * Memory: the hash context is allocated by pg_cryptohash_create (in the
 * current memory context) and freed by EsHashEnd/EsHashEndDatum; a bytea
 * result is allocated in the current memory context.  A failure raises an
 * internal error (elog): it cannot happen with the built-in implementation.
 *
 * src/fingerprint.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "common/cryptohash.h"
#include "common/sha2.h"

#include "es_ext.h"

/* a new SHA-256 context, ready for feeding */
EsHash *
EsHashBegin(void)
{
	pg_cryptohash_ctx *ctx = pg_cryptohash_create(PG_SHA256);

	if (pg_cryptohash_init(ctx) < 0)
		elog(ERROR, "could not initialize SHA-256 hash: %s", pg_cryptohash_error(ctx));
	return ctx;
}

/* feed len bytes as they are */
void
EsHashRaw(EsHash *ctx, const void *p, size_t len)
{
	if (pg_cryptohash_update(ctx, (const uint8 *) p, len) < 0)
		elog(ERROR, "could not update SHA-256 hash: %s", pg_cryptohash_error(ctx));
}

/* feed a C string with its terminating NUL */
void
EsHashCString(EsHash *ctx, const char *s)
{
	EsHashRaw(ctx, s, strlen(s) + 1);
}

/* feed a length-prefixed byte string (NULL: absent) */
void
EsHashBytes(EsHash *ctx, const char *p, int32 len)
{
	int32		l = (p == NULL) ? -1 : len;

	EsHashRaw(ctx, &l, sizeof(l));
	if (p != NULL)
		EsHashRaw(ctx, p, len);
}

/* feed a length-prefixed C string (NULL: absent) */
void
EsHashString(EsHash *ctx, const char *s)
{
	EsHashBytes(ctx, s, s == NULL ? 0 : strlen(s));
}

/* finish: the digest into digest[ES_HASH_LENGTH]; frees ctx */
void
EsHashEnd(EsHash *ctx, uint8 *digest)
{
	if (pg_cryptohash_final(ctx, digest, ES_HASH_LENGTH) < 0)
		elog(ERROR, "could not finalize SHA-256 hash: %s", pg_cryptohash_error(ctx));
	pg_cryptohash_free(ctx);
}

/* finish: the digest as a bytea datum in the current memory context; frees ctx */
Datum
EsHashEndDatum(EsHash *ctx)
{
	bytea	   *b = palloc(VARHDRSZ + ES_HASH_LENGTH);

	EsHashEnd(ctx, (uint8 *) VARDATA(b));
	SET_VARSIZE(b, VARHDRSZ + ES_HASH_LENGTH);
	return PointerGetDatum(b);
}
