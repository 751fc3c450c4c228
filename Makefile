# es_ext — PGXS build.  The version comes from es_ext.control (one source of truth).
EXTENSION    = es_ext
EXTVERSION   = $(shell sed -n "s/^default_version[[:space:]]*=[[:space:]]*'\([^']*\)'.*/\1/p" $(EXTENSION).control)
MODULE_big   = es_ext
OBJS         = src/es_ext.o src/guard.o src/append.o src/read.o src/spi_util.o src/projection.o

DATA         = $(wildcard sql/$(EXTENSION)--*.sql)

# pg_regress: one file per topic (sql/<topic>.sql, expected/<topic>.out)
REGRESS      = setup append read_stream read_all immutability privileges search_path limits projection
REGRESS_OPTS = --load-extension=$(EXTENSION)

# isolationtester specs live in test/specs, their output in test/expected
ISOLATION      = append_conflict append_any read_all_gap read_all_abort read_all_stream_order projection
ISOLATION_OPTS = --inputdir=test --load-extension=$(EXTENSION)

TAP_TESTS    = 1
PROVE_TESTS  = test/t/*.pl

PG_CPPFLAGS  = -I$(srcdir)/src
PG_CFLAGS    = -Wall -Wextra -Werror -Wno-unused-parameter -Wno-missing-field-initializers -Wno-sign-compare

PG_CONFIG   ?= pg_config
PGXS        := $(shell $(PG_CONFIG) --pgxs)
include $(PGXS)

.PHONY: test demo demo-stop bench
test:
	bash test/run

demo:
	bash examples/demo

demo-stop:
	bash examples/demo stop

bench:
	bash bench/run
