/*-------------------------------------------------------------------------
 *
 * es_ext.c
 *	  Module magic and initialization of es_ext.
 *
 * _PG_init only registers the extension's settings; everything else lives in
 * one file per concern (append.c, read.c, guard.c).
 *
 * src/es_ext.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "fmgr.h"
#include "utils/guc.h"

#include "es_ext.h"

PG_MODULE_MAGIC;

/* Largest batch accepted by es_append, in events. */
int			es_max_batch_events = 10000;

/* Largest batch accepted by es_append, in bytes of its JSON. */
int			es_max_batch_size = 64 * 1024 * 1024;

/* Largest single event accepted by es_append, in bytes of its JSON. */
int			es_max_event_size = 1024 * 1024;

void		_PG_init(void);

void
_PG_init(void)
{
	DefineCustomIntVariable("es.max_batch_events",
							"Sets the largest number of events es_append accepts in one batch.",
							NULL,
							&es_max_batch_events,
							10000,
							1,
							INT_MAX,
							PGC_SUSET,
							0,
							NULL, NULL, NULL);

	DefineCustomIntVariable("es.max_batch_size",
							"Sets the largest batch es_append accepts, in bytes of its JSON.",
							NULL,
							&es_max_batch_size,
							64 * 1024 * 1024,
							1024,
							INT_MAX,
							PGC_SUSET,
							GUC_UNIT_BYTE,
							NULL, NULL, NULL);

	DefineCustomIntVariable("es.max_event_size",
							"Sets the largest event es_append accepts, in bytes of its JSON.",
							NULL,
							&es_max_event_size,
							1024 * 1024,
							64,
							INT_MAX,
							PGC_SUSET,
							GUC_UNIT_BYTE,
							NULL, NULL, NULL);

	MarkGUCPrefixReserved("es");
}
