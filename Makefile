# es_ext — PGXS build.  The version comes from es_ext.control (one source of truth).
EXTENSION    = es_ext
EXTVERSION   = $(shell sed -n "s/^default_version[[:space:]]*=[[:space:]]*'\([^']*\)'.*/\1/p" $(EXTENSION).control)
MODULE_big   = es_ext
OBJS         = src/es_ext.o src/guard.o src/append.o src/read.o src/spi_util.o src/projection.o src/event.o src/routine.o src/upcast.o src/snapshot.o src/fold.o src/fold_agg.o \
               src/outbox.o src/outbox_api.o src/notify.o src/era.o src/dump.o src/batch.o src/fingerprint.o src/cache.o src/stats.o \
               src/replica.o src/checkpoint.o src/async.o src/rebuild.o src/wait.o src/projection_worker.o src/stream_scan.o src/import.o \
               src/query.o src/condition.o src/chain.o src/crypto.o src/tenant.o
# tamper evidence: checking the hash chains (issue 15)
OBJS        += src/verify.o src/rechain.o
OBJS        += src/lifecycle.o src/retention.o src/retention_worker.o
OBJS        += src/citus.o

# sql/$(EXTENSION)--$(EXTVERSION).sql, the install script of the current version, is
# generated from sql/install/ (below) and never committed: DATA names it even
# before it exists; the other scripts (released installs, upgrades) are committed
EXT_INSTALL_SQL = sql/$(EXTENSION)--$(EXTVERSION).sql
DATA         = $(filter-out $(EXT_INSTALL_SQL),$(wildcard sql/$(EXTENSION)--*.sql)) $(EXT_INSTALL_SQL)

# pg_regress: one file per topic (sql/<topic>.sql, expected/<topic>.out)
REGRESS      = setup append append_triggers read_stream read_all immutability privileges search_path limits projection replication fold snapshot upcast trust outbox_routes outbox_groups outbox_claim outbox_dead outbox_cleanup outbox_replay outbox_notify outbox_privileges outbox_tables outbox_errors example_orders privilege_audit search_path_audit restore stats read_only checkpoint async async_attack rebuild_shadow rebuild_mode wait append_ids append_ids_hidden import dcb_attack dcb verify verify_tamper
REGRESS     += lifecycle lifecycle_errors tenancy crypto tenancy_crypto tenancy_views tenancy_retention chain_attack chain_import lifecycle_verify lifecycle_adversary
REGRESS     += citus_single
REGRESS_OPTS = --load-extension=$(EXTENSION)

# isolationtester specs live in test/specs, their output in test/expected
ISOLATION      = append_conflict append_any append_ids append_ids_more read_all_gap read_all_abort read_all_stream_order projection fold_consistent outbox_claim outbox_order outbox_notify outbox_cleanup outbox_group checkpoint_horizon async async_attack rebuild_shadow wait import_append dcb_attack dcb_import dcb_same_tag dcb_one_snapshot dcb_empty dcb_self verify_concurrent
ISOLATION   += lifecycle_erase lifecycle_archive lifecycle_retention lifecycle_rebuild tenancy crypto chain_race projection_trigdesc lifecycle_adversary
ISOLATION_OPTS = --inputdir=test --load-extension=$(EXTENSION)

TAP_TESTS    = 1
PROVE_TESTS  = test/t/*.pl

PG_CPPFLAGS  = -I$(srcdir)/src
PG_CFLAGS    = -Wall -Wextra -Werror -Wno-unused-parameter -Wno-missing-field-initializers -Wno-sign-compare

# es_relay, the outbox consumer program (libpq): built by "make", installed
# into pg_config --bindir by "make install" (PGXS allows one MODULE_big or
# PROGRAM per Makefile, so it has rules of its own)
RELAY        = src/relay/es_relay
EXTRA_CLEAN  = $(RELAY) $(EXT_INSTALL_SQL)

PG_CONFIG   ?= pg_config
PGXS        := $(shell $(PG_CONFIG) --pgxs)
include $(PGXS)

# every object is rebuilt when the shared header changes (PGXS tracks no header
# dependencies: a struct that grew would otherwise be read with its old layout)
$(OBJS): src/es_ext.h

RELAY_CPPFLAGS = -I$(shell $(PG_CONFIG) --includedir)
RELAY_LDFLAGS  = -L$(shell $(PG_CONFIG) --libdir)

all: $(RELAY) $(EXT_INSTALL_SQL)

# the install script: the area files of sql/install/ in name order (pg_cron's way)
$(EXT_INSTALL_SQL): $(sort $(wildcard sql/install/*.sql))
	cat $^ > $@

$(RELAY): src/relay/es_relay.c
	$(CC) $(CFLAGS) -Wall -Wextra -Werror $(RELAY_CPPFLAGS) -DES_RELAY_VERSION='"$(EXTVERSION)"' \
		-o $@ $< $(RELAY_LDFLAGS) -lpq

install: install-relay
.PHONY: install-relay
install-relay: $(RELAY)
	$(MKDIR_P) '$(DESTDIR)$(bindir)'
	$(INSTALL_PROGRAM) $(RELAY) '$(DESTDIR)$(bindir)/es_relay'

.PHONY: test citus-check demo demo-stop bench
test:
	bash test/run

# the Citus tier (test/citus): builds Citus from ../shared/vendor when it is
# not installed, installs es_ext into that tree, runs test/citus/t/*.pl
citus-check:
	bash test/citus/run

demo:
	bash examples/demo

demo-stop:
	bash examples/demo stop

bench:
	bash bench/run

# static analysis (cppcheck, clang-tidy) and the suites against an
# AddressSanitizer build: see test/lint and test/asan
.PHONY: lint asan-check package
lint:
	bash test/lint

asan-check:
	bash test/asan

# the Debian package (debian/, pg_buildext): build it, install it, check it
package:
	bash test/package
