-- bench/proj_setup.sql — the "append with one projection" contender, in its
-- own database es_proj (bench/run loads setup.sql there first): a row-level
-- AFTER INSERT projection keeping an account balance read model, as in the
-- README's Projections section.
\set ON_ERROR_STOP on
SET client_min_messages = warning;
CREATE TABLE account_balance (stream_id text PRIMARY KEY, balance numeric NOT NULL, events bigint NOT NULL)
	WITH (fillfactor = 70);
CREATE FUNCTION account_balance_project() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	INSERT INTO account_balance AS b VALUES (NEW.stream_id, (NEW.data ->> 'amount')::numeric, 1)
	ON CONFLICT (stream_id) DO UPDATE
		SET balance = b.balance + excluded.balance, events = b.events + 1;
	RETURN NULL;
END
$$;
INSERT INTO account_balance
SELECT stream_id, sum((data ->> 'amount')::numeric), count(*) FROM es.events GROUP BY stream_id;
CREATE TRIGGER account_balance AFTER INSERT ON es.events
	FOR EACH ROW WHEN (NEW.category = 'account') EXECUTE FUNCTION account_balance_project();
VACUUM ANALYZE;
CHECKPOINT;
