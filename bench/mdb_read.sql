-- bench/mdb_read.sql — Message DB: get_stream_messages of a 100-message
-- stream (default batch size 1000: the whole stream).
\set sid random(1, :streams)
SELECT * FROM message_store.get_stream_messages('read-' || :sid);
