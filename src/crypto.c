/*-------------------------------------------------------------------------
 *
 * crypto.c
 *	  Crypto-shredding: personal fields of events encrypted at append with a
 *	  key per data subject, decrypted on read for roles allowed to, and
 *	  es_forget_subject, which destroys a subject's key.
 *
 * Declaration.  An event of a batch may carry
 *	  "personal": {"subject": "<opaque id>", "fields": ["email", "address.street"]}
 * naming one data subject and the fields of its data that are personal:
 * top-level keys or dotted paths through nested objects (a key containing a
 * dot cannot be named).  Every field must exist in data, and no field may lie
 * inside another.  Metadata is never encrypted: it is for correlation ids
 * and routing, and must hold no personal data.  The declaration is checked
 * by EsParsePersonal (batch.c calls it, with the batch's error context).
 *
 * Storage.  es_append (EsEncryptEvents, under its SPI connection, after the
 * stream row lock and before the chain hash and the insert) replaces each
 * declared field's value by the marker
 *	  {"$es_encrypted": "<base64>", "subject": "<subject>"}
 * and adds "$es_personal": {"subject": ..., "fields": [...]} to the
 * event's metadata: the flag that tells a reader that the event has markers
 * (one key lookup per event: reads of other events cost nothing more).  The
 * base64 text is version byte 1 || IV (16 bytes) || AES-256-CBC ciphertext
 * of the value's JSON text (PKCS padding) || HMAC-SHA-256 of everything
 * before it and the subject: encrypt-then-MAC.  The AES and MAC keys are
 * derived from the subject's 256-bit key by HMAC-SHA-256 with two labels.
 * AES is pgcrypto's (encrypt_iv / decrypt_iv, called through fmgr with the
 * key as an argument: no SQL text ever holds a key); the HMAC is
 * PostgreSQL's own (common/hmac.h).  pgcrypto is needed only to encrypt or
 * decrypt: es_ext installs without it.
 *
 * Keys.  es.subject_keys holds one row per subject: a random key made by
 * the first append that names it (INSERT ... ON CONFLICT DO NOTHING, then
 * the row read FOR SHARE, so two first appends end with one key and a
 * concurrent forget waits for the append or is seen by it).
 * es_forget_subject sets key to NULL and forgotten_at; the row stays so
 * that a later append for the subject is refused (data cannot silently
 * reappear under a new key).  The statements on es.subject_keys are fixed
 * ones of this file, run as the table's owner (as PostgreSQL's foreign key
 * checks run as the referenced table's owner): appenders encrypt without
 * being able to read a key.  Readers are allowed to decrypt when the role
 * the data is for (the reader; for es_project handlers, the handler's
 * owner) has SELECT on es.subject_keys (es_pii_reader).  Others see the
 * markers as stored.  After a forget, allowed readers see
 *	  {"$es_redacted": "subject forgotten", "subject": "<subject>"}
 * in place of each field.
 *
 * src/crypto.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/heapam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "access/tableam.h"
#include "catalog/namespace.h"
#include "catalog/indexing.h"
#include "catalog/pg_class.h"
#include "catalog/pg_extension.h"
#include "catalog/pg_type.h"
#include "commands/extension.h"
#include "common/base64.h"
#include "common/hmac.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "nodes/makefuncs.h"
#include "parser/parse_func.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/hsearch.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/syscache.h"

#include "es_ext.h"

#define ES_CRYPTO_VERSION		1
#define ES_CRYPTO_KEY_LEN		32
#define ES_CRYPTO_IV_LEN		16
#define ES_CRYPTO_MAC_LEN		32
#define ES_CRYPTO_CIPHER		"aes-cbc/pad:pkcs"

#define MARKER_ENCRYPTED		"$es_encrypted"
#define MARKER_REDACTED			"$es_redacted"
#define MARKER_SUBJECT			"subject"
#define METADATA_FLAG			"$es_personal"
#define REDACTED_TEXT			"subject forgotten"

/* ----------------------------------------------------------------
 * pgcrypto, looked up by name in its extension's schema
 * ----------------------------------------------------------------
 */
static Oid	encrypt_iv_oid = InvalidOid;
static Oid	decrypt_iv_oid = InvalidOid;
static FmgrInfo encrypt_iv_finfo;
static FmgrInfo decrypt_iv_finfo;

static Oid
lookup_pgcrypto_fn(Oid nsp, const char *name)
{
	Oid			argtypes[4] = {BYTEAOID, BYTEAOID, BYTEAOID, TEXTOID};
	String	   *schema = makeString(get_namespace_name(nsp));
	String	   *fn = makeString(pstrdup(name));
	List	   *qname = lappend(list_make1(schema), fn);

	return LookupFuncName(qname, 4, argtypes, true);
}

/* the schema of extension ext (PostgreSQL 15 does not export its own) */
static Oid
extension_schema(Oid ext)
{
	Relation	rel = table_open(ExtensionRelationId, AccessShareLock);
	ScanKeyData key;
	SysScanDesc scan;
	HeapTuple	tup;
	Oid			nsp = InvalidOid;

	ScanKeyInit(&key, Anum_pg_extension_oid, BTEqualStrategyNumber, F_OIDEQ,
				ObjectIdGetDatum(ext));
	scan = systable_beginscan(rel, ExtensionOidIndexId, true, NULL, 1, &key);
	tup = systable_getnext(scan);
	if (HeapTupleIsValid(tup))
		nsp = ((Form_pg_extension) GETSTRUCT(tup))->extnamespace;
	systable_endscan(scan);
	table_close(rel, AccessShareLock);
	return nsp;
}

/*
 * pgcrypto_functions
 *		Find pgcrypto's encrypt_iv and decrypt_iv (once per backend, again
 *		when the extension was dropped or re-created), or raise
 *		object_not_in_prerequisite_state.
 */
static void
pgcrypto_functions(void)
{
	Oid			ext;

	if (OidIsValid(encrypt_iv_oid) &&
		SearchSysCacheExists1(PROCOID, ObjectIdGetDatum(encrypt_iv_oid)) &&
		SearchSysCacheExists1(PROCOID, ObjectIdGetDatum(decrypt_iv_oid)))
		return;
	encrypt_iv_oid = decrypt_iv_oid = InvalidOid;
	ext = get_extension_oid("pgcrypto", true);
	if (OidIsValid(ext))
	{
		Oid			nsp = extension_schema(ext);

		encrypt_iv_oid = lookup_pgcrypto_fn(nsp, "encrypt_iv");
		decrypt_iv_oid = lookup_pgcrypto_fn(nsp, "decrypt_iv");
	}
	if (!OidIsValid(encrypt_iv_oid) || !OidIsValid(decrypt_iv_oid))
	{
		encrypt_iv_oid = decrypt_iv_oid = InvalidOid;
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("personal data needs the extension \"pgcrypto\""),
				 errdetail("Fields declared \"personal\" are encrypted and decrypted with pgcrypto's encrypt_iv and decrypt_iv."),
				 errhint("Run CREATE EXTENSION pgcrypto in this database.")));
	}	fmgr_info_cxt(encrypt_iv_oid, &encrypt_iv_finfo, TopMemoryContext);
	fmgr_info_cxt(decrypt_iv_oid, &decrypt_iv_finfo, TopMemoryContext);
}

/* ----------------------------------------------------------------
 * Keys
 * ----------------------------------------------------------------
 */

/* the two keys derived from a subject's key */
typedef struct SubjectKeys
{
	char		subject[ES_MAX_NAME_BYTES + 1];	/* hash key */
	bool		foreign;		/* read: another tenant's (left as stored) */
	bool		forgotten;
	uint8		enc[ES_CRYPTO_KEY_LEN];
	uint8		mac[ES_CRYPTO_KEY_LEN];
} SubjectKeys;

static void
hmac_sha256(const uint8 *key, int keylen, const uint8 *d1, int len1,
			const uint8 *d2, int len2, uint8 *out)
{
	pg_hmac_ctx *ctx = pg_hmac_create(PG_SHA256);

	if (ctx == NULL ||
		pg_hmac_init(ctx, key, keylen) < 0 ||
		pg_hmac_update(ctx, d1, len1) < 0 ||
		(len2 > 0 && pg_hmac_update(ctx, d2, len2) < 0) ||
		pg_hmac_final(ctx, out, ES_CRYPTO_MAC_LEN) < 0)
	{
		pg_hmac_free(ctx);
		elog(ERROR, "could not compute HMAC-SHA-256");
	}
	pg_hmac_free(ctx);
}

static void
derive_keys(SubjectKeys *sk, const uint8 *key)
{
	hmac_sha256(key, ES_CRYPTO_KEY_LEN, (const uint8 *) "es_ext enc 1", 12, NULL, 0, sk->enc);
	hmac_sha256(key, ES_CRYPTO_KEY_LEN, (const uint8 *) "es_ext mac 1", 12, NULL, 0, sk->mac);
}

static EsPlan key_insert_plan = {
	NULL,
	"INSERT INTO es.subject_keys (subject, key) VALUES ($1, $2)"
	" ON CONFLICT (subject) DO NOTHING",
	2, {TEXTOID, BYTEAOID}
};

static EsPlan key_lock_plan = {
	NULL,
	"SELECT key FROM es.subject_keys WHERE subject OPERATOR(pg_catalog.=) $1 FOR SHARE",
	1, {TEXTOID}
};

static EsPlan key_read_plan = {
	NULL,
	"SELECT key FROM es.subject_keys WHERE subject OPERATOR(pg_catalog.=) $1",
	1, {TEXTOID}
};

/*
 * Forget: insert the subject as forgotten, or destroy its key.  Returns a
 * row that says whether a key was destroyed (an updated row has a non-zero
 * xmax, an inserted one zero), or no row when it was forgotten already.  A
 * concurrent first append's key is waited for by the conflict check.
 */
static EsPlan key_forget_plan = {
	NULL,
	"INSERT INTO es.subject_keys AS k (subject, key, forgotten_at) VALUES ($1, NULL, pg_catalog.now())"
	" ON CONFLICT (subject) DO UPDATE SET key = NULL, forgotten_at = pg_catalog.now()"
	" WHERE k.key IS NOT NULL"
	" RETURNING k.xmax::text OPERATOR(pg_catalog.<>) '0'",
	1, {TEXTOID}
};

/* The statements on es.subject_keys run as its owner (see the header). */
typedef struct KeyAccess
{
	Oid			save_userid;
	int			save_sec_context;
} KeyAccess;

static void
key_access_begin(KeyAccess *ka)
{
	Oid			relid = EsRelationOid("subject_keys");
	HeapTuple	tup = SearchSysCache1(RELOID, ObjectIdGetDatum(relid));
	Oid			owner;

	if (!HeapTupleIsValid(tup))
		elog(ERROR, "cache lookup failed for relation %u", relid);
	owner = ((Form_pg_class) GETSTRUCT(tup))->relowner;
	ReleaseSysCache(tup);
	GetUserIdAndSecContext(&ka->save_userid, &ka->save_sec_context);
	SetUserIdAndSecContext(owner, ka->save_sec_context |
						   SECURITY_LOCAL_USERID_CHANGE | SECURITY_NOFORCE_RLS);
}

static void
key_access_end(KeyAccess *ka)
{
	SetUserIdAndSecContext(ka->save_userid, ka->save_sec_context);
}

/*
 * key_for_append
 *		The keys of subject for an append (under SPI): created on first use,
 *		the row locked FOR SHARE until the end of the transaction.  A
 *		forgotten subject is refused.
 */
static void
key_for_append(const char *subject, SubjectKeys *sk)
{
	Datum		args[2];
	uint8		raw[ES_CRYPTO_KEY_LEN];
	bytea	   *newkey;
	bool		isnull;
	Datum		d;
	KeyAccess	ka;
	int			rc;

	args[0] = CStringGetTextDatum(subject);
	if (!pg_strong_random(raw, sizeof(raw)))
		ereport(ERROR,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("could not generate random values")));
	newkey = palloc(VARHDRSZ + ES_CRYPTO_KEY_LEN);
	SET_VARSIZE(newkey, VARHDRSZ + ES_CRYPTO_KEY_LEN);
	memcpy(VARDATA(newkey), raw, ES_CRYPTO_KEY_LEN);
	explicit_bzero(raw, sizeof(raw));
	args[1] = PointerGetDatum(newkey);

	key_access_begin(&ka);
	PG_TRY();
	{
		/* usually the key exists: lock it; else create it, then lock it */
		rc = SPI_execute_plan(EsGetPlan(&key_lock_plan), args, NULL, false, 0);
		if (rc != SPI_OK_SELECT)
			elog(ERROR, "could not read \"es.subject_keys\": %s", SPI_result_code_string(rc));
		if (SPI_processed == 0)
		{
			/*
			 * A generic plan: a custom one would hold the key as a constant,
			 * which EXPLAIN VERBOSE output (auto_explain) would log.
			 */
			EsAllowNextWrite(EsRelationOid("subject_keys"), TRIGGER_EVENT_INSERT);
			rc = SPI_execute_plan(EsGetGenericPlan(&key_insert_plan), args, NULL, false, 0);
			EsClearAllowedWrite();
			if (rc != SPI_OK_INSERT)
				elog(ERROR, "could not write \"es.subject_keys\": %s", SPI_result_code_string(rc));
			rc = SPI_execute_plan(EsGetPlan(&key_lock_plan), args, NULL, false, 0);
			if (rc != SPI_OK_SELECT || SPI_processed != 1)
				elog(ERROR, "could not read \"es.subject_keys\": %s", SPI_result_code_string(rc));
		}
	}
	PG_FINALLY();
	{
		EsClearAllowedWrite();
		key_access_end(&ka);
	}
	PG_END_TRY();
	explicit_bzero(VARDATA(newkey), ES_CRYPTO_KEY_LEN);

	d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
	if (isnull)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("data subject \"%s\" was forgotten", subject),
				 errdetail("es_forget_subject destroyed its key; no personal data of it can be stored again."),
				 errhint("Use a new subject id if the person is a new data subject.")));
	{
		bytea	   *k = DatumGetByteaPP(d);

		if (VARSIZE_ANY_EXHDR(k) != ES_CRYPTO_KEY_LEN)
			elog(ERROR, "key of a data subject has a wrong length");
		strlcpy(sk->subject, subject, sizeof(sk->subject));
		sk->forgotten = false;
		derive_keys(sk, (const uint8 *) VARDATA_ANY(k));
	}
}

/*
 * key_for_read
 *		The keys of subject for a reader (SPI connected here), or forgotten.
 *		A subject without a row (only a superuser can remove rows) reads as
 *		forgotten too.
 */
static void
key_for_read(const char *subject, SubjectKeys *sk)
{
	Datum		arg = CStringGetTextDatum(subject);
	KeyAccess	ka;
	volatile int rc = 0;

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	key_access_begin(&ka);
	PG_TRY();
	{
		rc = SPI_execute_plan(EsGetPlan(&key_read_plan), &arg, NULL, true, 1);
	}
	PG_FINALLY();
	{
		key_access_end(&ka);
	}
	PG_END_TRY();
	if (rc != SPI_OK_SELECT)
		elog(ERROR, "could not read \"es.subject_keys\": %s", SPI_result_code_string(rc));
	sk->forgotten = true;
	if (SPI_processed == 1)
	{
		bool		isnull;
		Datum		d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);

		if (!isnull)
		{
			bytea	   *k = DatumGetByteaPP(d);

			if (VARSIZE_ANY_EXHDR(k) == ES_CRYPTO_KEY_LEN)
			{
				derive_keys(sk, (const uint8 *) VARDATA_ANY(k));
				sk->forgotten = false;
			}
		}
	}
	SPI_finish();
}

/* ----------------------------------------------------------------
 * Whether any key exists in this database: readers skip everything when
 * none does.  Cached per backend (cache.c); the statement trigger
 * es_subject_keys_changed invalidates it on INSERT, DELETE and TRUNCATE.
 * ----------------------------------------------------------------
 */
static void *
load_any_key(Relation rel, Snapshot snap)
{
	TableScanDesc scan = table_beginscan(rel, snap, 0, NULL);
	bool	   *any = palloc(sizeof(bool));

	*any = (heap_getnext(scan, ForwardScanDirection) != NULL);
	table_endscan(scan);
	return any;
}

static EsTableCache any_key_cache =
	ES_TABLE_CACHE("subject_keys", "es_ext subject keys", false, load_any_key);

PG_FUNCTION_INFO_V1(es_subject_keys_changed);

Datum
es_subject_keys_changed(PG_FUNCTION_ARGS)
{
	return EsTableCacheTrigger(fcinfo, "es_subject_keys_changed");
}

/* ----------------------------------------------------------------
 * The declaration
 * ----------------------------------------------------------------
 */

static JsonbValue *
find_key(JsonbContainer *c, const char *key, int len)
{
	JsonbValue	k;

	k.type = jbvString;
	k.val.string.val = (char *) key;
	k.val.string.len = len;
	return findJsonbValueFromContainer(c, JB_FOBJECT, &k);
}

/*
 * EsCheckReservedMetadata
 *		An event's metadata cannot name the key es_append adds itself.
 */
void
EsCheckReservedMetadata(Jsonb *metadata)
{
	if (find_key(&metadata->root, METADATA_FLAG, strlen(METADATA_FLAG)) != NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("metadata key \"%s\" is reserved", METADATA_FLAG),
				 errhint("Declare personal data with the event key \"personal\".")));
}

/*
 * EsParsePersonal
 *		Parse an event's "personal" member v into ev->personal (batch.c;
 *		the fields are checked against data by EsCheckPersonal).
 */
void
EsParsePersonal(JsonbValue *v, EsEvent *ev)
{
	JsonbValue *subject;
	JsonbValue *fields;
	EsPersonal *p;
	ArrayType  *arr;
	Datum	   *elems;
	int			n;
	int			i;

	if (v->type == jbvNull)
	{
		ev->personal = NULL;
		return;
	}
	if (v->type != jbvBinary || !JsonContainerIsObject(v->val.binary.data))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("event \"personal\" must be a JSON object"),
				 errdetail("Got a JSON %s.", EsJsonbTypeName(v)),
				 errhint("Declare personal data as \"personal\": {\"subject\": \"<id>\", \"fields\": [\"email\"]}.")));
	if (JsonContainerSize(v->val.binary.data) != 2 ||
		(subject = find_key(v->val.binary.data, "subject", 7)) == NULL ||
		(fields = find_key(v->val.binary.data, "fields", 6)) == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("event \"personal\" must have exactly the keys \"subject\" and \"fields\""),
				 errhint("Declare personal data as \"personal\": {\"subject\": \"<id>\", \"fields\": [\"email\"]}.")));
	if (subject->type != jbvString)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("\"personal\" \"subject\" must be a JSON string"),
				 errdetail("Got a JSON %s.", EsJsonbTypeName(subject))));
	if (subject->val.string.len == 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("\"personal\" \"subject\" cannot be empty")));
	if (subject->val.string.len > ES_MAX_NAME_BYTES)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("\"personal\" \"subject\" is too long"),
				 errdetail("Subject ids are limited to %d bytes; this one has %d.",
						   ES_MAX_NAME_BYTES, subject->val.string.len)));
	if (memchr(subject->val.string.val, '\0', subject->val.string.len) != NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("\"personal\" \"subject\" cannot contain a NUL character")));

	arr = EsJsonStringArray(fields, "\"personal\" \"fields\"", ES_MAX_PERSONAL_FIELDS);
	if (arr == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("\"personal\" \"fields\" must name at least one field")));
	deconstruct_array(arr, TEXTOID, -1, false, TYPALIGN_INT, &elems, NULL, &n);

	p = palloc(sizeof(EsPersonal));
	p->subject = pnstrdup(subject->val.string.val, subject->val.string.len);
	p->nfields = n;
	p->fields = palloc(sizeof(char *) * n);
	for (i = 0; i < n; i++)
	{
		char	   *f = TextDatumGetCString(elems[i]);
		int			len = strlen(f);

		if (f[0] == '.' || f[len - 1] == '.' || strstr(f, "..") != NULL)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("personal field \"%s\" is not a valid path", f),
					 errdetail("A field is a key of data, or keys of nested objects joined by dots.")));
		p->fields[i] = f;
	}
	/* no field inside another */
	for (i = 0; i < n; i++)
	{
		int			j;

		for (j = 0; j < n; j++)
		{
			int			li = strlen(p->fields[i]);

			if (i != j && strncmp(p->fields[i], p->fields[j], li) == 0 &&
				p->fields[j][li] == '.')
				ereport(ERROR,
						(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						 errmsg("personal field \"%s\" lies inside personal field \"%s\"",
								p->fields[j], p->fields[i]),
						 errhint("Name the outer field only: all of it is encrypted.")));
		}
	}
	ev->personal = p;
}

/* the value at a dotted path of data, or NULL */
static JsonbValue *
find_path(Jsonb *data, const char *path)
{
	JsonbContainer *c = &data->root;
	const char *s = path;

	if (!JB_ROOT_IS_OBJECT(data))
		return NULL;
	for (;;)
	{
		const char *dot = strchr(s, '.');
		int			len = dot ? dot - s : strlen(s);
		JsonbValue *v = find_key(c, s, len);

		if (v == NULL || dot == NULL)
			return v;
		if (v->type != jbvBinary || !JsonContainerIsObject(v->val.binary.data))
			return NULL;
		c = v->val.binary.data;
		s = dot + 1;
	}
}

/*
 * EsCheckPersonal
 *		Every declared field must exist in the event's data.
 */
void
EsCheckPersonal(EsEvent *ev)
{
	int			i;

	for (i = 0; i < ev->personal->nfields; i++)
		if (find_path(ev->data, ev->personal->fields[i]) == NULL)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("personal field \"%s\" is not in the event's data", ev->personal->fields[i]),
					 errdetail("Every field declared personal must exist, so that none stays in clear by a typo.")));
}

/* ----------------------------------------------------------------
 * Encryption and decryption of one value
 * ----------------------------------------------------------------
 */

static bytea *
make_bytea(const void *p, int len)
{
	bytea	   *b = palloc(VARHDRSZ + len);

	SET_VARSIZE(b, VARHDRSZ + len);
	memcpy(VARDATA(b), p, len);
	return b;
}

/* the marker holding the encrypted value v */
static void
encrypt_value(const SubjectKeys *sk, JsonbValue *v, JsonbValue *out)
{
	StringInfoData plain;
	uint8		iv[ES_CRYPTO_IV_LEN];
	bytea	   *ct;
	int			ctlen;
	char	   *blob;
	int			bloblen;
	char	   *b64;
	int			b64len;
	bytea	   *keyb;
	JsonbParseState *ps = NULL;
	JsonbValue	k;
	JsonbValue	s;
	Jsonb	   *valjb = JsonbValueToJsonb(v);

	initStringInfo(&plain);
	(void) JsonbToCString(&plain, &valjb->root, VARSIZE(valjb));
	if (!pg_strong_random(iv, sizeof(iv)))
		ereport(ERROR,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("could not generate random values")));
	keyb = make_bytea(sk->enc, ES_CRYPTO_KEY_LEN);
	ct = DatumGetByteaPP(FunctionCall4(&encrypt_iv_finfo,
										  PointerGetDatum(make_bytea(plain.data, plain.len)),
										  PointerGetDatum(keyb),
										  PointerGetDatum(make_bytea(iv, sizeof(iv))),
										  CStringGetTextDatum(ES_CRYPTO_CIPHER)));
	explicit_bzero(VARDATA(keyb), ES_CRYPTO_KEY_LEN);
	ctlen = VARSIZE_ANY_EXHDR(ct);
	bloblen = 1 + ES_CRYPTO_IV_LEN + ctlen + ES_CRYPTO_MAC_LEN;
	blob = palloc(bloblen);
	blob[0] = ES_CRYPTO_VERSION;
	memcpy(blob + 1, iv, ES_CRYPTO_IV_LEN);
	memcpy(blob + 1 + ES_CRYPTO_IV_LEN, VARDATA_ANY(ct), ctlen);
	hmac_sha256(sk->mac, ES_CRYPTO_KEY_LEN, (uint8 *) blob, 1 + ES_CRYPTO_IV_LEN + ctlen,
				(const uint8 *) sk->subject, strlen(sk->subject),
				(uint8 *) blob + 1 + ES_CRYPTO_IV_LEN + ctlen);
	b64 = palloc(pg_b64_enc_len(bloblen) + 1);
	b64len = pg_b64_encode(blob, bloblen, b64, pg_b64_enc_len(bloblen));
	if (b64len < 0)
		elog(ERROR, "could not encode an encrypted value");

	pushJsonbValue(&ps, WJB_BEGIN_OBJECT, NULL);
	k.type = jbvString;
	k.val.string.val = MARKER_ENCRYPTED;
	k.val.string.len = strlen(MARKER_ENCRYPTED);
	pushJsonbValue(&ps, WJB_KEY, &k);
	s.type = jbvString;
	s.val.string.val = b64;
	s.val.string.len = b64len;
	pushJsonbValue(&ps, WJB_VALUE, &s);
	k.val.string.val = MARKER_SUBJECT;
	k.val.string.len = strlen(MARKER_SUBJECT);
	pushJsonbValue(&ps, WJB_KEY, &k);
	s.val.string.val = (char *) sk->subject;
	s.val.string.len = strlen(sk->subject);
	pushJsonbValue(&ps, WJB_VALUE, &s);
	out->type = jbvBinary;
	{
		Jsonb	   *m = JsonbValueToJsonb(pushJsonbValue(&ps, WJB_END_OBJECT, NULL));

		out->val.binary.data = &m->root;
		out->val.binary.len = VARSIZE(m) - VARHDRSZ;
	}
}

static void
redacted_value(const char *subject, JsonbValue *out)
{
	JsonbParseState *ps = NULL;
	JsonbValue	k;
	JsonbValue	s;
	Jsonb	   *m;

	pushJsonbValue(&ps, WJB_BEGIN_OBJECT, NULL);
	k.type = jbvString;
	k.val.string.val = MARKER_REDACTED;
	k.val.string.len = strlen(MARKER_REDACTED);
	pushJsonbValue(&ps, WJB_KEY, &k);
	s.type = jbvString;
	s.val.string.val = REDACTED_TEXT;
	s.val.string.len = strlen(REDACTED_TEXT);
	pushJsonbValue(&ps, WJB_VALUE, &s);
	k.val.string.val = MARKER_SUBJECT;
	k.val.string.len = strlen(MARKER_SUBJECT);
	pushJsonbValue(&ps, WJB_KEY, &k);
	s.val.string.val = (char *) subject;
	s.val.string.len = strlen(subject);
	pushJsonbValue(&ps, WJB_VALUE, &s);
	m = JsonbValueToJsonb(pushJsonbValue(&ps, WJB_END_OBJECT, NULL));
	out->type = jbvBinary;
	out->val.binary.data = &m->root;
	out->val.binary.len = VARSIZE(m) - VARHDRSZ;
}

static void corrupt_marker(void) pg_attribute_noreturn();

static void
corrupt_marker(void)
{
	ereport(ERROR,
			(errcode(ERRCODE_DATA_CORRUPTED),
			 errmsg("encrypted personal field does not authenticate"),
			 errdetail("The marker was altered, or was not encrypted with its subject's key.")));
}

/*
 * decrypt_value
 *		The clear value of the marker b64 under sk (or the redaction marker
 *		when the subject was forgotten).
 */
static void
decrypt_value(const SubjectKeys *sk, const char *b64, int b64len, JsonbValue *out)
{
	char	   *blob;
	int			bloblen;
	int			ctlen;
	uint8		mac[ES_CRYPTO_MAC_LEN];
	bytea	   *keyb;
	bytea	   *plain;
	Jsonb	   *jb;

	if (sk->forgotten)
	{
		redacted_value(sk->subject, out);
		return;
	}
	blob = palloc(pg_b64_dec_len(b64len) + 1);
	bloblen = pg_b64_decode(b64, b64len, blob, pg_b64_dec_len(b64len));
	if (bloblen < 1 + ES_CRYPTO_IV_LEN + 16 + ES_CRYPTO_MAC_LEN || blob[0] != ES_CRYPTO_VERSION)
		corrupt_marker();
	ctlen = bloblen - 1 - ES_CRYPTO_IV_LEN - ES_CRYPTO_MAC_LEN;
	hmac_sha256(sk->mac, ES_CRYPTO_KEY_LEN, (uint8 *) blob, 1 + ES_CRYPTO_IV_LEN + ctlen,
				(const uint8 *) sk->subject, strlen(sk->subject), mac);
	if (timingsafe_bcmp(mac, blob + bloblen - ES_CRYPTO_MAC_LEN, ES_CRYPTO_MAC_LEN) != 0)
		corrupt_marker();
	keyb = make_bytea(sk->enc, ES_CRYPTO_KEY_LEN);
	plain = DatumGetByteaPP(FunctionCall4(&decrypt_iv_finfo,
											 PointerGetDatum(make_bytea(blob + 1 + ES_CRYPTO_IV_LEN, ctlen)),
											 PointerGetDatum(keyb),
											 PointerGetDatum(make_bytea(blob + 1, ES_CRYPTO_IV_LEN)),
											 CStringGetTextDatum(ES_CRYPTO_CIPHER)));
	explicit_bzero(VARDATA(keyb), ES_CRYPTO_KEY_LEN);
	jb = DatumGetJsonbP(DirectFunctionCall1(jsonb_in,
											CStringGetDatum(text_to_cstring((text *) plain))));
	if (JB_ROOT_IS_SCALAR(jb))
	{
		JsonbValue	sc;

		JsonbExtractScalar(&jb->root, &sc);
		*out = sc;
	}
	else
	{
		out->type = jbvBinary;
		out->val.binary.data = &jb->root;
		out->val.binary.len = VARSIZE(jb) - VARHDRSZ;
	}
}

/* ----------------------------------------------------------------
 * Rewriting data: the declared paths (encrypt) or the markers (decrypt)
 * ----------------------------------------------------------------
 */

struct EsDecryptor
{
	MemoryContext cxt;			/* the caller's: holds the keys' table */
	HTAB	   *keys;			/* subject -> SubjectKeys; NULL until needed */
	bool		allowed;		/* may the role decrypt? */
};

typedef struct RewriteState
{
	bool		encrypt;
	bool		mask;			/* with encrypt: declared paths become null */
	const SubjectKeys *sk;		/* encrypt */
	const EsPersonal *personal; /* encrypt */
	EsDecryptor *dec;			/* decrypt */
	bool		changed;
	StringInfoData path;		/* encrypt: the path of the current container */
} RewriteState;

/*
 * subject_readable
 *		Is the subject one of the reader's tenants' (or tenancy off)?
 */
static bool
subject_readable(const char *subject)
{
	bool		readable;

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	readable = EsTenantOwnsSubject(CStringGetTextDatum(subject));
	SPI_finish();
	return readable;
}

static const SubjectKeys *
decryptor_keys(EsDecryptor *d, const char *subject, int len)
{
	char		name[ES_MAX_NAME_BYTES + 1];
	SubjectKeys *sk;
	bool		found;

	if (len > ES_MAX_NAME_BYTES)
		corrupt_marker();
	memcpy(name, subject, len);
	name[len] = '\0';
	if (d->keys == NULL)
	{
		HASHCTL		ctl;

		ctl.keysize = ES_MAX_NAME_BYTES + 1;
		ctl.entrysize = sizeof(SubjectKeys);
		ctl.hcxt = d->cxt;
		d->keys = hash_create("es_ext subject keys", 16, &ctl,
							  HASH_ELEM | HASH_STRINGS | HASH_CONTEXT);
	}
	sk = hash_search(d->keys, name, HASH_ENTER, &found);
	if (!found)
	{
		PG_TRY();
		{
			sk->foreign = !subject_readable(name);
			if (!sk->foreign)
			{
				key_for_read(name, sk);
				if (!sk->forgotten)
					pgcrypto_functions();
			}
		}
		PG_CATCH();
		{
			hash_search(d->keys, name, HASH_REMOVE, NULL);
			PG_RE_THROW();
		}
		PG_END_TRY();
	}
	return sk;
}

/* is the object container c a marker?  Then set *out to its replacement */
static bool
rewrite_marker(RewriteState *st, JsonbContainer *c, JsonbValue *out)
{
	JsonbValue *enc;
	JsonbValue *subj;
	const SubjectKeys *sk;

	if (!JsonContainerIsObject(c) || JsonContainerSize(c) != 2)
		return false;
	enc = find_key(c, MARKER_ENCRYPTED, strlen(MARKER_ENCRYPTED));
	if (enc == NULL)
		return false;
	subj = find_key(c, MARKER_SUBJECT, strlen(MARKER_SUBJECT));
	if (subj == NULL || subj->type != jbvString || enc->type != jbvString)
		return false;
	sk = decryptor_keys(st->dec, subj->val.string.val, subj->val.string.len);
	if (sk->foreign)
		return false;			/* another tenant's: left as stored */
	decrypt_value(sk, enc->val.string.val, enc->val.string.len, out);
	st->changed = true;
	return true;
}

static bool
path_declared(RewriteState *st)
{
	int			i;

	for (i = 0; i < st->personal->nfields; i++)
		if (strcmp(st->personal->fields[i], st->path.data) == 0)
			return true;
	return false;
}

static JsonbValue *rewrite_container(RewriteState *st, JsonbContainer *c, JsonbParseState **ps);

/* push value v (rewritten as needed) as token tok */
static void
rewrite_push(RewriteState *st, JsonbParseState **ps, JsonbIteratorToken tok, JsonbValue *v)
{
	JsonbValue	repl;

	if (st->encrypt && st->path.len > 0 && path_declared(st))
	{
		if (st->mask)
		{
			repl.type = jbvNull;
			st->changed = true;
			pushJsonbValue(ps, tok, &repl);
			return;
		}
		encrypt_value(st->sk, v, &repl);
		st->changed = true;
		pushJsonbValue(ps, tok, &repl);
		return;
	}
	if (v->type == jbvBinary)
	{
		if (!st->encrypt && rewrite_marker(st, v->val.binary.data, &repl))
		{
			pushJsonbValue(ps, tok, &repl);
			return;
		}
		/* only objects lead to declared paths; markers may be anywhere */
		if (!st->encrypt || JsonContainerIsObject(v->val.binary.data))
		{
			(void) rewrite_container(st, v->val.binary.data, ps);
			return;
		}
	}
	pushJsonbValue(ps, tok, v);
}

static JsonbValue *
rewrite_container(RewriteState *st, JsonbContainer *c, JsonbParseState **ps)
{
	JsonbIterator *it = JsonbIteratorInit(c);
	JsonbIteratorToken tok;
	JsonbValue	v;
	JsonbValue *res = NULL;
	int			base = st->path.len;

	while ((tok = JsonbIteratorNext(&it, &v, true)) != WJB_DONE)
	{
		switch (tok)
		{
			case WJB_KEY:
				pushJsonbValue(ps, WJB_KEY, &v);
				if (st->encrypt)
				{
					st->path.len = base;
					st->path.data[base] = '\0';
					if (base > 0)
						appendStringInfoChar(&st->path, '.');
					appendBinaryStringInfo(&st->path, v.val.string.val, v.val.string.len);
				}
				break;
			case WJB_VALUE:
				rewrite_push(st, ps, WJB_VALUE, &v);
				break;
			case WJB_ELEM:
				if (st->encrypt)
				{
					/* arrays hold no declared path */
					pushJsonbValue(ps, WJB_ELEM, &v);
				}
				else
					rewrite_push(st, ps, WJB_ELEM, &v);
				break;
			default:
				res = pushJsonbValue(ps, tok, tok == WJB_BEGIN_ARRAY || tok == WJB_BEGIN_OBJECT ||
									 tok == WJB_END_ARRAY || tok == WJB_END_OBJECT ? NULL : &v);
				break;
		}
	}
	st->path.len = base;
	st->path.data[base] = '\0';
	return res;
}

/* data rewritten, or NULL when nothing changed */
static Jsonb *
rewrite(RewriteState *st, Jsonb *data)
{
	JsonbParseState *ps = NULL;
	JsonbValue *res;

	st->changed = false;
	if (JB_ROOT_IS_SCALAR(data))
		return NULL;
	initStringInfo(&st->path);
	res = rewrite_container(st, &data->root, &ps);
	if (!st->changed)
		return NULL;
	return JsonbValueToJsonb(res);
}

/* ----------------------------------------------------------------
 * Append
 * ----------------------------------------------------------------
 */

/* metadata with "$es_personal": {"subject": s, "fields": [...]} added */
static Jsonb *
flag_metadata(Jsonb *metadata, const EsPersonal *p)
{
	JsonbParseState *ps = NULL;
	JsonbValue	k;
	JsonbValue	s;
	JsonbValue *res;
	int			i;

	pushJsonbValue(&ps, WJB_BEGIN_OBJECT, NULL);
	if (metadata != NULL)
	{
		JsonbIterator *it = JsonbIteratorInit(&metadata->root);
		JsonbIteratorToken tok;
		JsonbValue	v;

		while ((tok = JsonbIteratorNext(&it, &v, true)) != WJB_DONE)
			if (tok == WJB_KEY || tok == WJB_VALUE)
				pushJsonbValue(&ps, tok, &v);
	}
	k.type = jbvString;
	k.val.string.val = METADATA_FLAG;
	k.val.string.len = strlen(METADATA_FLAG);
	pushJsonbValue(&ps, WJB_KEY, &k);
	pushJsonbValue(&ps, WJB_BEGIN_OBJECT, NULL);
	k.val.string.val = "subject";
	k.val.string.len = 7;
	pushJsonbValue(&ps, WJB_KEY, &k);
	s.type = jbvString;
	s.val.string.val = p->subject;
	s.val.string.len = strlen(p->subject);
	pushJsonbValue(&ps, WJB_VALUE, &s);
	k.val.string.val = "fields";
	k.val.string.len = 6;
	pushJsonbValue(&ps, WJB_KEY, &k);
	pushJsonbValue(&ps, WJB_BEGIN_ARRAY, NULL);
	for (i = 0; i < p->nfields; i++)
	{
		s.val.string.val = p->fields[i];
		s.val.string.len = strlen(p->fields[i]);
		pushJsonbValue(&ps, WJB_ELEM, &s);
	}
	pushJsonbValue(&ps, WJB_END_ARRAY, NULL);
	pushJsonbValue(&ps, WJB_END_OBJECT, NULL);
	res = pushJsonbValue(&ps, WJB_END_OBJECT, NULL);
	return JsonbValueToJsonb(res);
}

/*
 * EsEncryptEvents
 *		es_append, under SPI, after the stream row lock: replace the declared
 *		fields of each event's data by markers and flag its metadata.
 */
void
EsEncryptEvents(EsEvent *events, int n)
{
	SubjectKeys *sk = NULL;
	int			i;

	for (i = 0; i < n; i++)
	{
		RewriteState st;
		Jsonb	   *data;

		if (events[i].personal == NULL)
			continue;
		if (sk == NULL)
		{
			/* the keys would be per node (citus.c) */
			EsRefuseDistributed("personal data", "Crypto-shredding is not supported on a distributed event store.");
			pgcrypto_functions();
			sk = palloc0(sizeof(SubjectKeys));
		}
		if (sk->subject[0] == '\0' || strcmp(sk->subject, events[i].personal->subject) != 0)
		{
			/* another tenant's subject: refused before its key is looked up */
			EsTenantCheckSubject(CStringGetTextDatum(events[i].personal->subject));
			key_for_append(events[i].personal->subject, sk);
		}

		memset(&st, 0, sizeof(st));
		st.encrypt = true;
		st.sk = sk;
		st.personal = events[i].personal;
		data = rewrite(&st, events[i].data);
		if (data == NULL)
			elog(ERROR, "personal fields of an event were not found");
		events[i].data = data;
		events[i].metadata = flag_metadata(events[i].metadata, events[i].personal);
	}
	if (sk != NULL)
		explicit_bzero(sk, sizeof(SubjectKeys));
}

/*
 * EsPersonalStoredDiffers
 *		For the idempotent retry of an event with a "personal" declaration
 *		(append.c compares a retried batch with the stored events): the key
 *		("data", "metadata") in which the stored event, as EsEncryptEvents
 *		stored it, differs from ev, or NULL.  The declared fields are not
 *		compared: their stored values are ciphertext under a random IV, and
 *		comparing clear values would let a writer test guesses of stored
 *		personal data.  The rest of data, the metadata and the declaration
 *		itself (subject and fields, from the stored flag) must be equal.
 */
const char *
EsPersonalStoredDiffers(const EsEvent *ev, Jsonb *stored_data, Jsonb *stored_metadata)
{
	RewriteState st;
	Jsonb	   *a;
	Jsonb	   *b;
	Jsonb	   *flagged;

	Assert(ev->personal != NULL);
	memset(&st, 0, sizeof(st));
	st.encrypt = true;
	st.mask = true;
	st.personal = ev->personal;
	a = rewrite(&st, ev->data);
	b = rewrite(&st, stored_data);
	if (a == NULL || b == NULL ||
		!DatumGetBool(DirectFunctionCall2(jsonb_eq, JsonbPGetDatum(a), JsonbPGetDatum(b))))
		return "data";
	flagged = flag_metadata(ev->metadata, ev->personal);
	if (stored_metadata == NULL ||
		!DatumGetBool(DirectFunctionCall2(jsonb_eq, JsonbPGetDatum(flagged),
										  JsonbPGetDatum(stored_metadata))))
		return "metadata";
	return NULL;
}

/* ----------------------------------------------------------------
 * Read
 * ----------------------------------------------------------------
 */

/*
 * EsDecryptorBegin
 *		Per-call decryption state for data read for role, in the current
 *		memory context; NULL when there is nothing to decrypt (no key was
 *		ever made in this database).  When role may not decrypt, the
 *		decryptor leaves data alone (readers return the markers as stored).
 */
EsDecryptor *
EsDecryptorBegin(Oid role)
{
	EsDecryptor *d;

	/* (an extension still at 0.1.0 has no key table) */
	if (!OidIsValid(get_relname_relid("subject_keys", EsSchemaOid())) ||
		!*(bool *) EsTableCacheGet(&any_key_cache))
		return NULL;
	d = palloc0(sizeof(EsDecryptor));
	d->allowed = (pg_class_aclcheck(EsRelationOid("subject_keys"), role, ACL_SELECT) == ACLCHECK_OK);
	if (!d->allowed)
		return d;
	d->cxt = CurrentMemoryContext;	/* the keys' table is made on first use */
	return d;
}

/*
 * EsDecryptorAllowed
 *		May the decryptor's role decrypt?  (Otherwise EsDecryptData changes
 *		nothing, and readers can keep stored rows as they are.)
 */
bool
EsDecryptorAllowed(const EsDecryptor *d)
{
	return d != NULL && d->allowed;
}

/*
 * EsHasPersonal
 *		Does an event with this metadata hold encrypted fields?  The one
 *		check readers make for every event.
 */
bool
EsHasPersonal(Datum metadata, bool isnull)
{
	Jsonb	   *m;

	if (isnull)
		return false;
	m = DatumGetJsonbP(metadata);
	if (!JB_ROOT_IS_OBJECT(m))
		return false;
	return find_key(&m->root, METADATA_FLAG, strlen(METADATA_FLAG)) != NULL;
}

/*
 * EsDecryptData
 *		data with its markers decrypted (in the current memory context), or
 *		NULL when it has none.  d must not be NULL.
 */
Jsonb *
EsDecryptData(EsDecryptor *d, Jsonb *data)
{
	RewriteState st;

	if (!d->allowed)
		return NULL;
	memset(&st, 0, sizeof(st));
	st.dec = d;
	return rewrite(&st, data);
}

/*
 * EsDecryptTuple
 *		An es.events row (desc, attrs) as role may see it: tuple itself when
 *		it has no encrypted field or role may not decrypt, else a new tuple
 *		with its data decrypted.  For es_project's handlers (projection.c).
 */
HeapTuple
EsDecryptTuple(HeapTuple tuple, TupleDesc desc, const EsEventAttrs *attrs, Oid role)
{
	bool		isnull;
	Datum		m = heap_getattr(tuple, attrs->metadata, desc, &isnull);
	EsDecryptor *d;
	Jsonb	   *clear;
	Datum	   *values;
	bool	   *nulls;

	if (!EsHasPersonal(m, isnull))
		return tuple;
	d = EsDecryptorBegin(role);
	if (d == NULL || !d->allowed)
		return tuple;
	clear = EsDecryptData(d, DatumGetJsonbP(heap_getattr(tuple, attrs->data, desc, &isnull)));
	if (clear == NULL)
		return tuple;
	values = palloc(sizeof(Datum) * desc->natts);
	nulls = palloc(sizeof(bool) * desc->natts);
	heap_deform_tuple(tuple, desc, values, nulls);
	values[attrs->data - 1] = JsonbPGetDatum(clear);
	return heap_form_tuple(desc, values, nulls);
}

/* the key table's relation, checked for the caller's SELECT */
static void
check_may_decrypt(void)
{
	Oid			relid = EsRelationOid("subject_keys");

	if (pg_class_aclcheck(relid, GetUserId(), ACL_SELECT) != ACLCHECK_OK)
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied to decrypt personal data"),
				 errhint("Grant the role es_pii_reader.")));
}

PG_FUNCTION_INFO_V1(es_decrypt);

/*
 * es_decrypt(data jsonb) RETURNS jsonb
 *		data (an event's, an outbox row's, a trigger's NEW.data) with every
 *		marker decrypted, or redacted when its subject was forgotten.  For
 *		members of es_pii_reader.
 */
Datum
es_decrypt(PG_FUNCTION_ARGS)
{
	Jsonb	   *data;
	EsDecryptor *d;
	Jsonb	   *res;

	/* not STRICT: the privilege is checked for a NULL too */
	check_may_decrypt();
	if (PG_ARGISNULL(0))
		PG_RETURN_NULL();
	data = PG_GETARG_JSONB_P(0);
	d = palloc0(sizeof(EsDecryptor));
	d->allowed = true;
	d->cxt = CurrentMemoryContext;
	res = EsDecryptData(d, data);
	PG_RETURN_JSONB_P(res != NULL ? res : data);
}

PG_FUNCTION_INFO_V1(es_forget_subject);

/*
 * es_forget_subject(subject text) RETURNS boolean
 *		Destroy the subject's key: its personal fields become unreadable
 *		everywhere (events, outbox rows) without rewriting any, and later
 *		appends for it are refused.  Returns true when a key was destroyed,
 *		false when the subject had none (never used, or already forgotten:
 *		it is recorded as forgotten all the same).
 */
Datum
es_forget_subject(PG_FUNCTION_ARGS)
{
	Datum		arg;
	KeyAccess	ka;
	volatile bool destroyed = false;
	bool		isnull;
	text	   *subject;

	EsCheckWritable("es_forget_subject()");
	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("subject cannot be null")));
	subject = PG_GETARG_TEXT_PP(0);
	if (VARSIZE_ANY_EXHDR(subject) == 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("subject cannot be empty")));
	if (VARSIZE_ANY_EXHDR(subject) > ES_MAX_NAME_BYTES)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("subject is too long"),
				 errdetail("Subject ids are limited to %d bytes.", ES_MAX_NAME_BYTES)));
	arg = PointerGetDatum(subject);

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	/* as the caller, before the key is looked up (tenant.c) */
	EsTenantCheckSubject(arg);
	key_access_begin(&ka);
	PG_TRY();
	{
		int			rc;

		EsAllowNextUpsert(EsRelationOid("subject_keys"));
		rc = SPI_execute_plan(EsGetPlan(&key_forget_plan), &arg, NULL, false, 0);
		if (rc != SPI_OK_INSERT_RETURNING)
			elog(ERROR, "could not write \"es.subject_keys\": %s", SPI_result_code_string(rc));
		if (SPI_processed == 1)
		{
			destroyed = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc,
												   1, &isnull));
			if (isnull)
				destroyed = false;
		}
	}
	PG_FINALLY();
	{
		EsClearAllowedWrite();
		key_access_end(&ka);
	}
	PG_END_TRY();
	SPI_finish();
	PG_RETURN_BOOL(destroyed);
}
