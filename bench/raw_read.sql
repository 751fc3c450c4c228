-- bench/raw_read.sql — read ceiling: a plain SELECT of a 100-event stream
-- (read-1 .. read-100) from raw.events, in version order (primary key).
\set sid random(1, :streams)
SELECT * FROM raw.events WHERE stream_id = 'read-' || :sid ORDER BY version;
