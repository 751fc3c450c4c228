/*-------------------------------------------------------------------------
 *
 * es_ext.h
 *	  Declarations shared by the es_ext source files.
 *
 * src/es_ext.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef ES_EXT_H
#define ES_EXT_H

#include "access/transam.h"
#include "executor/spi.h"
#include "utils/snapshot.h"

/* Name of the constraint reported with every expected-version conflict. */
#define ES_EXPECTED_VERSION_CONSTRAINT "es_expected_version"

/* Expected-version spellings accepted by es_append (NULL means "any"). */
#define ES_EXPECT_STREAM_EXISTS	(-1)
#define ES_EXPECT_NO_STREAM		0

/* Longest stream id and event type accepted, in bytes (they are indexed). */
#define ES_MAX_NAME_BYTES		1024

/* GUCs (es_ext.c) */
extern int	es_max_batch_events;
extern int	es_max_batch_size;
extern int	es_max_event_size;

/* guard.c: let exactly one statement write the given es_ext table */
extern void EsAllowNextWrite(Oid relid, uint32 event);
extern void EsClearAllowedWrite(void);

/* read.c: the global log horizon and era (EsCurrentEra needs SPI) */
extern FullTransactionId EsLogHorizon(Snapshot snap);
extern int32 EsCurrentEra(void);

/* spi_util.c: saved plans and catalog lookups */
typedef struct EsPlan
{
	SPIPlanPtr	plan;
	const char *sql;
	int			nargs;
	Oid			argtypes[10];
} EsPlan;

extern SPIPlanPtr EsGetPlan(EsPlan *p);
extern Oid	EsSchemaOid(void);
extern Oid	EsRelationOid(const char *relname);
extern Oid	EsTypeOid(const char *typname);

#endif							/* ES_EXT_H */
