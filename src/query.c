/*-------------------------------------------------------------------------
 *
 * query.c
 *	  Queries over the global log by event types and tags: the "Query" of
 *	  the Dynamic Consistency Boundary specification (dcb.events), parsed
 *	  and validated once, for es_read_query (read.c) and for the condition
 *	  of a conditional append (condition.c).
 *
 * A query is a JSON array of items, or an object {"items": [...]}.  An
 * item is an object with an optional "types" (event types, OR'ed) and an
 * optional "tags" (tags, AND'ed); the items are OR'ed.  An item without
 * types and tags matches every event: a read may ask for that, a condition
 * may not (it would make every append of the database wait for it; see
 * condition.c).  The whole query is checked before anything is read or
 * written, so a malformed one changes nothing.
 *
 * Memory: the parsed query lives in the caller's memory context.  No SPI,
 * no locks.
 *
 * src/query.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"

#include "es_ext.h"

/* Error context while a query is parsed. */
typedef struct EsQueryContext
{
	const char *what;			/* "query", "condition" */
	int			item;			/* 1-based item number, 0 = the whole query */
} EsQueryContext;

static void
query_error_callback(void *arg)
{
	EsQueryContext *ctx = (EsQueryContext *) arg;

	if (ctx->item > 0)
		errcontext("item %d of the %s", ctx->item, ctx->what);
}

#define QUERY_HINT \
	"A query is a JSON array of items such as [{\"types\": [\"Enrolled\"], \"tags\": [\"course:c1\"]}]; types are OR'ed, tags AND'ed, items OR'ed."

/*
 * parse_item
 *		Parse one item of the query into item.
 */
static void
parse_item(JsonbValue *elem, EsQueryItem *item, const char *what, bool for_condition)
{
	JsonbIterator *it;
	JsonbIteratorToken tok;
	JsonbValue	v;

	if (elem->type != jbvBinary || !JsonContainerIsObject(elem->val.binary.data))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s item must be a JSON object", what),
				 errdetail("Got a JSON %s.", EsJsonbTypeName(elem)),
				 errhint(QUERY_HINT)));

	item->types = NULL;
	item->tags = NULL;
	it = JsonbIteratorInit(elem->val.binary.data);
	while ((tok = JsonbIteratorNext(&it, &v, true)) != WJB_DONE)
	{
		char	   *key;
		int			keylen;

		if (tok != WJB_KEY)
			continue;
		key = v.val.string.val;
		keylen = v.val.string.len;
		tok = JsonbIteratorNext(&it, &v, true);
		Assert(tok == WJB_VALUE);

		if (keylen == 5 && memcmp(key, "types", 5) == 0)
			item->types = EsJsonStringArray(&v, "query item \"types\"", ES_MAX_QUERY_TYPES);
		else if (keylen == 4 && memcmp(key, "tags", 4) == 0)
			item->tags = EsJsonStringArray(&v, "query item \"tags\"", ES_MAX_EVENT_TAGS);
		else
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("unknown key \"%.*s\" in %s item", keylen, key, what),
					 errhint("A query item is an object with the keys \"types\" and \"tags\".")));
	}

	if (for_condition && item->types == NULL && item->tags == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("condition item must name event types or tags"),
				 errdetail("An item without types and tags matches every event of the database."),
				 errhint("Name the tags (or event types) of the decision's consistency boundary; for one stream, use expected_version.")));
}

/*
 * EsParseQuery
 *		Validate and parse a query.  what names it in errors ("query",
 *		"condition"); for_condition refuses items that match every event.
 */
EsQuery *
EsParseQuery(Jsonb *query, const char *what, bool for_condition)
{
	EsQueryContext qctx;
	ErrorContextCallback errcb;
	JsonbContainer *items;
	EsQuery    *q;
	int			i;

	items = &query->root;
	if (JB_ROOT_IS_OBJECT(query))
	{
		JsonbValue *v;

		/* {"items": [...]}, the specification's shape, and nothing else */
		if (JB_ROOT_COUNT(query) != 1 ||
			(v = getKeyJsonValueFromContainer(&query->root, "items", 5, NULL)) == NULL)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("%s object must have exactly the key \"items\"", what),
					 errhint(QUERY_HINT)));
		if (v->type != jbvBinary || !JsonContainerIsArray(v->val.binary.data))
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("%s \"items\" must be a JSON array", what),
					 errdetail("Got a JSON %s.", EsJsonbTypeName(v)),
					 errhint(QUERY_HINT)));
		items = v->val.binary.data;
	}
	else if (!JB_ROOT_IS_ARRAY(query) || JB_ROOT_IS_SCALAR(query))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s must be a JSON array of items", what),
				 errdetail("Got a JSON scalar."),
				 errhint(QUERY_HINT)));

	q = palloc(sizeof(EsQuery));
	q->nitems = JsonContainerSize(items);
	if (q->nitems == 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s must have at least one item", what),
				 errhint(QUERY_HINT)));
	if (q->nitems > ES_MAX_QUERY_ITEMS)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("%s has too many items", what),
				 errdetail("It has %d items; the limit is %d.", q->nitems, ES_MAX_QUERY_ITEMS)));
	q->items = palloc(sizeof(EsQueryItem) * q->nitems);

	qctx.what = what;
	errcb.callback = query_error_callback;
	errcb.arg = &qctx;
	errcb.previous = error_context_stack;
	error_context_stack = &errcb;
	for (i = 0; i < q->nitems; i++)
	{
		JsonbValue *elem = getIthJsonbValueFromContainer(items, i);

		qctx.item = i + 1;
		parse_item(elem, &q->items[i], what, for_condition);
	}
	error_context_stack = errcb.previous;

	return q;
}
