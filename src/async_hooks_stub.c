/*-------------------------------------------------------------------------
 *
 * async_hooks_stub.c
 *	  Temporary no-op wake-ups of the asynchronous projections, until the
 *	  projection workers (projection_worker.c) land.  Without them a
 *	  projection is applied by es_run_projections.
 *
 * src/async_hooks_stub.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "es_ext.h"

void
EsProjectionWorkerRequest(void)
{
}

void
EsProjectionWakeAtCommit(void)
{
}
