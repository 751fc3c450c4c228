/*
 * test/citus/es_ext--0.2.0--0.2.1citustest.sql — a test-only upgrade step,
 * installed into the Citus test tree by test/citus/run (never shipped), that
 * does what a next release's script would: add a column to a distributed
 * table and to a reference table, (re)create a function, all re-runnable.
 * test/citus/t/003_upgrade.pl runs ALTER EXTENSION es_ext UPDATE with it on a
 * distributed event store and checks that every shard got the columns.
 */
ALTER TABLE @extschema@.events ADD COLUMN IF NOT EXISTS citustest_col integer;
ALTER TABLE @extschema@.upcasters ADD COLUMN IF NOT EXISTS citustest_col integer;
CREATE OR REPLACE FUNCTION @extschema@.es_citustest() RETURNS integer
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp AS 'SELECT 1';
