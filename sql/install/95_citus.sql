/*
 * ========================================================================
 * sql/install/95_citus.sql — a distributed event store on Citus (issue 16):
 * es.distribute(), the per-node ranges of the sequences, and es_read_log,
 * the global log merged from the log of every node.  See README, "Scaling
 * out with Citus", and src/citus.c.
 * ========================================================================
 */

/*
 * es_node_ranges: give this node's sequences (event positions, outbox
 * positions) their own range, from the node's Citus group id g:
 * [g * 2^48 + 1, (g + 1) * 2^48 - 1].  A position is then unique across the
 * cluster, and says which node's log it belongs to: the node that appended
 * the event (its group, global_position >> 48), whose transaction ids order
 * it (es_read_log).  Run on every node by es.distribute(); idempotent.
 */
CREATE OR REPLACE FUNCTION @extschema@.es_node_ranges()
RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
	g integer;
	lo bigint;
	hi bigint;
	seq regclass;
	last bigint;
BEGIN
	IF NOT EXISTS (SELECT FROM pg_catalog.pg_extension WHERE extname OPERATOR(pg_catalog.=) 'citus') THEN
		RAISE EXCEPTION 'extension "citus" is not installed'
			USING ERRCODE = '55000', HINT = 'es.distribute() runs this on every node of a Citus cluster.';
	END IF;
	/* these sequences are this node's own: Citus must not send the DDL on */
	PERFORM pg_catalog.set_config('citus.enable_ddl_propagation', 'off', true);
	SELECT groupid INTO g FROM pg_catalog.pg_dist_local_group;
	IF g IS NULL OR g < 0 OR g >= 32767 THEN
		RAISE EXCEPTION 'this node has no Citus group id'
			USING ERRCODE = '55000';
	END IF;
	lo := (g::bigint << 48) + 1;
	hi := ((g::bigint + 1) << 48) - 1;
	FOREACH seq IN ARRAY ARRAY['@extschema@.events_global_position_seq'::regclass,
							   '@extschema@.outbox_position_seq'::regclass]
	LOOP
		SELECT s.last_value INTO last FROM pg_catalog.pg_sequences AS s
		 WHERE s.schemaname OPERATOR(pg_catalog.=) '@extschema@'
		   AND (pg_catalog.quote_ident(s.schemaname) || '.' || pg_catalog.quote_ident(s.sequencename))::regclass
			   OPERATOR(pg_catalog.=) seq;
		IF last IS NOT NULL AND last > hi THEN
			RAISE EXCEPTION 'sequence % is beyond the range of Citus group %', seq, g
				USING ERRCODE = '55000',
					  DETAIL = pg_catalog.format('Its last value is %s; the group''s range ends at %s.', last, hi);
		END IF;
		IF last IS NULL OR last < lo THEN
			EXECUTE pg_catalog.format('ALTER SEQUENCE %s MINVALUE %s MAXVALUE %s START WITH %s RESTART WITH %s',
									  seq, lo, hi, lo, lo);
		ELSE
			EXECUTE pg_catalog.format('ALTER SEQUENCE %s MINVALUE %s MAXVALUE %s START WITH %s', seq, lo, hi, lo);
		END IF;
	END LOOP;
	RETURN g;
END
$fn$;
COMMENT ON FUNCTION @extschema@.es_node_ranges() IS
	'gives this node''s es_ext sequences the range of its Citus group (run on every node by es.distribute())';
REVOKE ALL ON FUNCTION @extschema@.es_node_ranges() FROM PUBLIC;

/*
 * distribute: turn this database's event store into a distributed one, on
 * the Citus cluster it is the coordinator of.  Re-runnable: run it again
 * after adding nodes (their sequences get their range).
 */
CREATE OR REPLACE FUNCTION @extschema@.distribute(shard_count integer DEFAULT 32)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
	r record;
	t regclass;
	ours text;
BEGIN
	IF shard_count IS NULL OR shard_count < 1 OR shard_count > 64000 THEN
		RAISE EXCEPTION 'shard count % is out of range', shard_count
			USING ERRCODE = '22023', HINT = 'Give a shard count between 1 and 64000.';
	END IF;
	IF NOT EXISTS (SELECT FROM pg_catalog.pg_extension WHERE extname OPERATOR(pg_catalog.=) 'citus') THEN
		RAISE EXCEPTION 'extension "citus" is not installed'
			USING ERRCODE = '55000',
				  HINT = 'es.distribute() needs a Citus cluster: shared_preload_libraries = ''citus'', CREATE EXTENSION citus, then the worker nodes (citus_add_node).';
	END IF;
	IF NOT (SELECT r2.rolsuper FROM pg_catalog.pg_roles AS r2 WHERE r2.rolname OPERATOR(pg_catalog.=) current_user) THEN
		RAISE EXCEPTION 'permission denied to distribute the event store'
			USING ERRCODE = '42501', DETAIL = 'Only a superuser may run es.distribute().';
	END IF;
	IF NOT pg_catalog.citus_is_coordinator() THEN
		RAISE EXCEPTION 'es.distribute() must run on the Citus coordinator'
			USING ERRCODE = '55000';
	END IF;
	IF (SELECT pg_catalog.count(*) FROM pg_catalog.pg_dist_node AS n
		 WHERE n.isactive AND n.noderole OPERATOR(pg_catalog.=) 'primary'
		   AND n.groupid OPERATOR(pg_catalog.<>) 0) = 0 THEN
		RAISE EXCEPTION 'the Citus cluster has no worker node'
			USING ERRCODE = '55000', HINT = 'Add the workers first: SELECT citus_add_node(host, port).';
	END IF;
	IF NOT EXISTS (SELECT FROM pg_catalog.pg_dist_node AS n WHERE n.groupid OPERATOR(pg_catalog.=) 0) THEN
		RAISE EXCEPTION 'the coordinator is not in the Citus metadata'
			USING ERRCODE = '55000',
				  HINT = 'Run SELECT citus_set_coordinator_host(host, port) first: the registries are reference tables, read on every node.';
	END IF;
	/* the features that are not supported on a distributed store */
	IF EXISTS (SELECT FROM pg_catalog.pg_policy AS p
				WHERE p.polrelid OPERATOR(pg_catalog.=) '@extschema@.streams'::regclass) THEN
		RAISE EXCEPTION 'cannot distribute an event store with tenant isolation'
			USING ERRCODE = '0A000', HINT = 'Run es.es_disable_tenancy() first; tenancy is not supported on a distributed event store.';
	END IF;
	IF EXISTS (SELECT FROM @extschema@.subject_keys) THEN
		RAISE EXCEPTION 'cannot distribute an event store that holds personal data'
			USING ERRCODE = '0A000', DETAIL = 'es.subject_keys has keys; crypto-shredding is not supported on a distributed event store.';
	END IF;

	/* es_ext, at this version, on every node */
	SELECT e.extversion INTO ours FROM pg_catalog.pg_extension AS e
	 WHERE e.extname OPERATOR(pg_catalog.=) 'es_ext';
	FOR r IN SELECT * FROM pg_catalog.run_command_on_all_nodes(
				 'SELECT extversion FROM pg_catalog.pg_extension WHERE extname = ''es_ext''')
	LOOP
		IF NOT r.success OR r.result IS DISTINCT FROM ours THEN
			RAISE EXCEPTION 'es_ext % is not installed on Citus node %', ours, r.nodeid
				USING ERRCODE = '55000',
					  DETAIL = pg_catalog.format('The node answered: %s', r.result),
					  HINT = 'Install the same es_ext on every node (CREATE EXTENSION on the coordinator propagates it).';
		END IF;
	END LOOP;

	/*
	 * es_ext preloaded on every node: its planner hook keeps a NULL stream
	 * from Citus's function delegation, which crashes on it (src/citus.c)
	 */
	FOR r IN SELECT * FROM pg_catalog.run_command_on_all_nodes(
				 'SELECT pg_catalog.current_setting(''shared_preload_libraries'')')
	LOOP
		IF NOT r.success OR r.result IS NULL OR r.result !~ '(^|[\s,])"?es_ext"?($|[\s,])' THEN
			RAISE EXCEPTION 'es_ext is not in shared_preload_libraries on Citus node %', r.nodeid
				USING ERRCODE = '55000',
					  DETAIL = pg_catalog.format('The node answered: %s', r.result),
					  HINT = 'Set shared_preload_libraries = ''citus,es_ext'' on every node and restart it.';
		END IF;
	END LOOP;

	/* each node's sequences get its own range */
	FOR r IN SELECT * FROM pg_catalog.run_command_on_all_nodes('SELECT es.es_node_ranges()')
	LOOP
		IF NOT r.success THEN
			RAISE EXCEPTION 'could not set the sequence ranges of Citus node %', r.nodeid
				USING ERRCODE = '55000', DETAIL = r.result;
		END IF;
	END LOOP;

	/*
	 * The guard triggers are statement triggers that fire on each shard;
	 * Citus asks for this setting to keep triggers on distributed tables.
	 */
	PERFORM pg_catalog.set_config('citus.enable_unsafe_triggers', 'on', true);

	/* the stream-keyed tables, co-located by stream */
	IF NOT EXISTS (SELECT FROM pg_catalog.pg_dist_partition AS p
					WHERE p.logicalrelid OPERATOR(pg_catalog.=) '@extschema@.streams'::regclass) THEN
		PERFORM pg_catalog.create_distributed_table('@extschema@.streams', 'stream_id',
													shard_count => shard_count, colocate_with => 'none');
	END IF;
	FOREACH t IN ARRAY ARRAY['@extschema@.events'::regclass, '@extschema@.snapshots'::regclass,
							 '@extschema@.archived_events'::regclass, '@extschema@.erasures'::regclass]
	LOOP
		IF NOT EXISTS (SELECT FROM pg_catalog.pg_dist_partition AS p
						WHERE p.logicalrelid OPERATOR(pg_catalog.=) t) THEN
			PERFORM pg_catalog.create_distributed_table(t, 'stream_id', colocate_with => '@extschema@.streams');
		END IF;
	END LOOP;

	/* the registries that every node reads */
	FOREACH t IN ARRAY ARRAY['@extschema@.upcasters'::regclass, '@extschema@.outbox_routes'::regclass,
							 '@extschema@.outbox_groups'::regclass]
	LOOP
		IF NOT EXISTS (SELECT FROM pg_catalog.pg_dist_partition AS p
						WHERE p.logicalrelid OPERATOR(pg_catalog.=) t) THEN
			PERFORM pg_catalog.create_reference_table(t);
		END IF;
	END LOOP;

	/* the functions of one stream run on the node that holds it */
	PERFORM pg_catalog.create_distributed_function(f, '$1', colocate_with => '@extschema@.streams',
												   force_delegation => true)
	   FROM pg_catalog.unnest(ARRAY[
			'@extschema@.es_append(text, bigint, jsonb)',
			'@extschema@.es_append(text, bigint, jsonb, jsonb, @extschema@.log_cursor)',
			'@extschema@.es_read_stream(text, bigint, bigint, text)',
			'@extschema@.es_stream_version(text)',
			'@extschema@.es_fold(text, regprocedure, jsonb, bigint, timestamptz)',
			'@extschema@.es_fold_state(text, regprocedure, jsonb, bigint, timestamptz)',
			'@extschema@.es_snapshot_save(text, regprocedure, jsonb, bigint)',
			'@extschema@.es_snapshot_delete(text, regprocedure)',
			'@extschema@.es_verify(text)'
		]::regprocedure[]) AS f;
END
$fn$;
COMMENT ON FUNCTION @extschema@.distribute(integer) IS
	'distributes the event store on the Citus cluster this database coordinates: stream-keyed tables by stream_id, registries as reference tables, per-stream functions delegated, per-node sequence ranges (re-run after adding nodes)';
REVOKE ALL ON FUNCTION @extschema@.distribute(integer) FROM PUBLIC;

/*
 * es_read_log: the global log of a distributed event store, merged from the
 * log of every node.  A node's log is the events it appended (their
 * positions are in its range, see es_node_ranges), ordered by (era, tx_id,
 * global_position) with that node's transaction ids, gap-safe below that
 * node's horizon, wherever a shard move has since put them.  The cursor is
 * one es.log_cursor per node log (its node is global_position >> 48): each
 * row carries the whole cursor to resume after it.  Works on one node too
 * (one log).  Rows of the node logs are interleaved one by one, in each
 * node log's own order.
 */
CREATE OR REPLACE FUNCTION @extschema@.es_read_log(after @extschema@.log_cursor[] DEFAULT NULL,
												   max_count integer DEFAULT 1000,
												   category text DEFAULT NULL,
												   event_types text[] DEFAULT NULL)
RETURNS TABLE (global_position bigint, stream_id text, version bigint, event_id uuid,
			   event_type text, data jsonb, metadata jsonb, recorded_at timestamptz,
			   node integer, log_cursor @extschema@.log_cursor,
			   cursors @extschema@.log_cursor[])
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
	distributed boolean;
	nodes integer[];
	eras integer[];
	horizons xid8[];
	cur @extschema@.log_cursor[];
	c @extschema@.log_cursor;
	g integer;
	i integer;
	r record;
	evs @extschema@.events[];
	preds jsonb;
	pred jsonb;
	blocked integer[];
	emitted integer;
	nxt integer[];
	k integer;
	progress boolean;
BEGIN
	/* the arguments as es_read_all checks them */
	IF max_count IS NULL THEN
		RAISE EXCEPTION 'max_count cannot be null'
			USING ERRCODE = '22004';
	END IF;
	IF max_count < 1 THEN
		RAISE EXCEPTION 'max_count must be greater than zero'
			USING ERRCODE = '22023';
	END IF;
	IF category IS NOT NULL AND category OPERATOR(pg_catalog.=) '' THEN
		RAISE EXCEPTION 'category cannot be empty'
			USING ERRCODE = '22023', HINT = 'Use NULL to read every category.';
	END IF;
	IF event_types IS NOT NULL THEN
		IF pg_catalog.array_ndims(event_types) IS DISTINCT FROM 1
		   OR pg_catalog.cardinality(event_types) OPERATOR(pg_catalog.=) 0 THEN
			RAISE EXCEPTION 'event_types must be a non-empty one-dimensional array'
				USING ERRCODE = '22023', HINT = 'Use NULL to read every event type.';
		END IF;
		IF pg_catalog.array_position(event_types, NULL) IS NOT NULL THEN
			RAISE EXCEPTION 'event_types cannot contain null'
				USING ERRCODE = '22004';
		END IF;
	END IF;
	IF after IS NOT NULL THEN
		FOREACH c IN ARRAY after LOOP
			IF c IS NULL OR c.era IS NULL OR c.tx_id IS NULL OR c.global_position IS NULL
			   OR c.global_position < 1 THEN
				RAISE EXCEPTION 'invalid log cursor %', c
					USING ERRCODE = '22023', HINT = 'Pass the cursors of a row es_read_log returned.';
			END IF;
		END LOOP;
		IF (SELECT pg_catalog.count(DISTINCT (x.global_position OPERATOR(pg_catalog.>>) 48))
			  FROM pg_catalog.unnest(after) AS x) OPERATOR(pg_catalog.<>) pg_catalog.cardinality(after) THEN
			RAISE EXCEPTION 'log cursor has two positions for one node'
				USING ERRCODE = '22023', HINT = 'Pass the cursors of a row es_read_log returned.';
		END IF;
	END IF;

	/* the statement naming pg_dist_partition is planned only with Citus */
	distributed := false;
	IF EXISTS (SELECT FROM pg_catalog.pg_extension WHERE extname OPERATOR(pg_catalog.=) 'citus') THEN
		distributed := EXISTS (SELECT FROM pg_catalog.pg_dist_partition AS p
								WHERE p.logicalrelid OPERATOR(pg_catalog.=) '@extschema@.events'::regclass);
	END IF;

	/*
	 * Each node log: its node's era and horizon, taken before the reads.
	 * The horizons come from new transactions on the nodes: the reads must
	 * see at least what committed below them, so each read takes a new
	 * snapshot (VOLATILE), which REPEATABLE READ and SERIALIZABLE do not.
	 */
	IF distributed AND pg_catalog.current_setting('transaction_isolation') OPERATOR(pg_catalog.<>) 'read committed' THEN
		RAISE EXCEPTION 'es_read_log() on a distributed event store needs READ COMMITTED'
			USING ERRCODE = '0A000',
				  DETAIL = 'The nodes'' horizons are read after this transaction''s snapshot was taken: events below them could be missing from it.';
	END IF;
	IF distributed THEN
		nodes := '{}';
		eras := '{}';
		horizons := '{}';
		FOR r IN SELECT n.groupid, x.success, x.result
				   FROM pg_catalog.run_command_on_all_nodes(
						'SELECT coalesce((SELECT era FROM es.config), 0) || '','' || es.es_log_horizon()') AS x
				   JOIN pg_catalog.pg_dist_node AS n ON n.nodeid OPERATOR(pg_catalog.=) x.nodeid
				  WHERE n.noderole OPERATOR(pg_catalog.=) 'primary'
		LOOP
			IF NOT r.success THEN
				RAISE EXCEPTION 'could not read the log horizon of Citus node group %', r.groupid
					USING ERRCODE = '08006', DETAIL = r.result,
						  HINT = 'Every node''s horizon is needed: no event of its log can be returned safely without it.';
			END IF;
			nodes := nodes || r.groupid;
			eras := eras || pg_catalog.split_part(r.result, ',', 1)::integer;
			horizons := horizons || pg_catalog.split_part(r.result, ',', 2)::xid8;
		END LOOP;
	ELSE
		nodes := ARRAY[0];
		eras := ARRAY[coalesce((SELECT x.era FROM @extschema@.config AS x), 0)];
		horizons := ARRAY[@extschema@.es_log_horizon()];
	END IF;

	/* each node log's next events, in its own order */
	/* one dimension, from 1: the cursors are found by their position in it */
	cur := ARRAY(SELECT x FROM pg_catalog.unnest(after) AS x);
	evs := '{}';
	FOR i IN 1 .. pg_catalog.cardinality(nodes) LOOP
		g := nodes[i];
		c := NULL;
		SELECT x.* INTO c FROM pg_catalog.unnest(cur) AS x
		 WHERE (x.global_position OPERATOR(pg_catalog.>>) 48) OPERATOR(pg_catalog.=) g;
		evs := evs OPERATOR(pg_catalog.||) ARRAY(
			SELECT ev FROM @extschema@.events AS ev
			 WHERE ev.global_position OPERATOR(pg_catalog.>=) ((g::bigint OPERATOR(pg_catalog.<<) 48) OPERATOR(pg_catalog.+) 1)
			   AND ev.global_position OPERATOR(pg_catalog.<) ((g::bigint OPERATOR(pg_catalog.+) 1) OPERATOR(pg_catalog.<<) 48)
			   AND (c.global_position IS NULL OR (ev.era, ev.tx_id, ev.global_position)
					OPERATOR(pg_catalog.>) (c.era, c.tx_id, c.global_position))
			   AND (ev.era, ev.tx_id) OPERATOR(pg_catalog.<) (eras[i], horizons[i])
			   AND (es_read_log.category IS NULL OR ev.category OPERATOR(pg_catalog.=) es_read_log.category)
			   AND (es_read_log.event_types IS NULL OR ev.event_type OPERATOR(pg_catalog.=) ANY (es_read_log.event_types))
			 ORDER BY ev.era, ev.tx_id, ev.global_position
			 LIMIT max_count);
	END LOOP;

	/*
	 * A stream's events are in several node logs once its shard has moved:
	 * the predecessors of the candidates that are in another node log.  A
	 * candidate waits (and its node log with it) until that predecessor was
	 * returned, in this read or before the cursor.
	 */
	SELECT pg_catalog.jsonb_object_agg(p.version OPERATOR(pg_catalog.||) ':' OPERATOR(pg_catalog.||) p.stream_id,
									   pg_catalog.jsonb_build_array(p.era, p.tx_id::text, p.global_position))
	  INTO preds
	  FROM @extschema@.events AS p
	 WHERE p.stream_id OPERATOR(pg_catalog.=) ANY (ARRAY(SELECT DISTINCT u.stream_id FROM pg_catalog.unnest(evs) AS u))
	   AND p.version OPERATOR(pg_catalog.=) ANY (ARRAY(SELECT DISTINCT u.version OPERATOR(pg_catalog.-) 1
														FROM pg_catalog.unnest(evs) AS u))
	   AND (es_read_log.category IS NULL OR p.category OPERATOR(pg_catalog.=) es_read_log.category)
	   AND (es_read_log.event_types IS NULL OR p.event_type OPERATOR(pg_catalog.=) ANY (es_read_log.event_types));

	/*
	 * Interleaved one by one, each node log in its order.  A row waits
	 * while its predecessor, in another node log, was not returned: its
	 * node log stops there for this pass; passes repeat while they return
	 * something (the predecessor may come later in the pass).
	 */
	nxt := pg_catalog.array_fill(1, ARRAY[pg_catalog.cardinality(nodes)]);
	emitted := 0;
	LOOP
		progress := false;
		blocked := '{}';
		FOR r IN
			SELECT u.*, u AS ev, (u.global_position OPERATOR(pg_catalog.>>) 48)::integer AS g,
				   pg_catalog.row_number() OVER (PARTITION BY u.global_position OPERATOR(pg_catalog.>>) 48
												 ORDER BY u.era, u.tx_id, u.global_position) AS rn
			  FROM pg_catalog.unnest(evs) AS u
			 ORDER BY rn, g
		LOOP
			EXIT WHEN emitted OPERATOR(pg_catalog.>=) max_count;
			k := pg_catalog.array_position(nodes, r.g);
			CONTINUE WHEN r.g OPERATOR(pg_catalog.=) ANY (blocked) OR r.rn OPERATOR(pg_catalog.<>) nxt[k];
			pred := preds OPERATOR(pg_catalog.->) ((r.version OPERATOR(pg_catalog.-) 1)::text OPERATOR(pg_catalog.||) ':' OPERATOR(pg_catalog.||) r.stream_id);
			IF pred IS NOT NULL
			   AND ((pred OPERATOR(pg_catalog.->>) 2)::bigint OPERATOR(pg_catalog.>>) 48) OPERATOR(pg_catalog.<>) r.g THEN
				c := NULL;
				SELECT x.* INTO c FROM pg_catalog.unnest(cur) AS x
				 WHERE (x.global_position OPERATOR(pg_catalog.>>) 48)
					   OPERATOR(pg_catalog.=) ((pred OPERATOR(pg_catalog.->>) 2)::bigint OPERATOR(pg_catalog.>>) 48);
				IF c.global_position IS NULL
				   OR ((pred OPERATOR(pg_catalog.->>) 0)::integer, (pred OPERATOR(pg_catalog.->>) 1)::xid8,
					   (pred OPERATOR(pg_catalog.->>) 2)::bigint)
					  OPERATOR(pg_catalog.>) (c.era, c.tx_id, c.global_position) THEN
					blocked := blocked OPERATOR(pg_catalog.||) r.g;
					CONTINUE;
				END IF;
			END IF;
			nxt[k] := nxt[k] OPERATOR(pg_catalog.+) 1;
			progress := true;
			emitted := emitted OPERATOR(pg_catalog.+) 1;
			g := r.g;
			c := ROW(r.era, r.tx_id, r.global_position)::@extschema@.log_cursor;
			i := pg_catalog.array_position(ARRAY(SELECT x.global_position OPERATOR(pg_catalog.>>) 48
												   FROM pg_catalog.unnest(cur) AS x)::bigint[], g::bigint);
			IF i IS NULL THEN
				cur := cur OPERATOR(pg_catalog.||) c;
			ELSE
				cur[i] := c;
			END IF;
			global_position := r.global_position;
			stream_id := r.stream_id;
			version := r.version;
			event_id := r.event_id;
			event_type := r.event_type;
			data := (@extschema@.es_upcast(r.ev)).data;
			metadata := r.metadata;
			recorded_at := r.recorded_at;
			node := g;
			log_cursor := c;
			cursors := cur;
			RETURN NEXT;
		END LOOP;
		EXIT WHEN NOT progress OR emitted OPERATOR(pg_catalog.>=) max_count
			OR pg_catalog.cardinality(blocked) OPERATOR(pg_catalog.=) 0;
	END LOOP;
END
$fn$;
COMMENT ON FUNCTION @extschema@.es_read_log(@extschema@.log_cursor[], integer, text, text[]) IS
	'the global log merged from every node''s log (a distributed event store; one log on a single node): events after the cursors, below each node''s horizon; each row carries the cursors to resume after it';
REVOKE ALL ON FUNCTION @extschema@.es_read_log(@extschema@.log_cursor[], integer, text, text[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@.es_read_log(@extschema@.log_cursor[], integer, text, text[]) TO es_reader;

/*
 * es_outbox_undelivered: how many messages of a stream older than a version
 * this node's outbox has not yet delivered to a consumer group.  es_outbox_claim
 * asks every node before it releases the messages it held back after a
 * shard move (src/outbox.c, outbox_handoff).
 */
CREATE OR REPLACE FUNCTION @extschema@.es_outbox_undelivered(consumer_group text, stream text,
															 before_version bigint)
RETURNS bigint
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
	RETURN (SELECT pg_catalog.count(*)
			  FROM @extschema@.outbox_deliveries AS d
			  JOIN @extschema@.outbox_groups AS g ON g.group_id OPERATOR(pg_catalog.=) d.group_id
			  JOIN @extschema@.outbox AS o ON o.position OPERATOR(pg_catalog.=) d.position
			 WHERE g.name OPERATOR(pg_catalog.=) consumer_group
			   AND d.stream_key OPERATOR(pg_catalog.=) pg_catalog.hashtextextended(stream, 0)
			   AND o.aggregateid OPERATOR(pg_catalog.=) stream
			   AND o.stream_version OPERATOR(pg_catalog.<) before_version);
END
$fn$;
COMMENT ON FUNCTION @extschema@.es_outbox_undelivered(text, text, bigint) IS
	'messages of a stream older than a version that this node has not delivered to a consumer group (distributed event store: see es_outbox_claim)';
REVOKE ALL ON FUNCTION @extschema@.es_outbox_undelivered(text, text, bigint) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@.es_outbox_undelivered(text, text, bigint) TO es_consumer, es_admin;
