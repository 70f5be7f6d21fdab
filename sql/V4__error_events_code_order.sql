-- Listing error events of one code newest first ("what were the last E4001s?") walks this index in
-- order instead of filtering the whole table by code.
CREATE INDEX error_events_code_id_idx ON error_events (code, id);
DROP INDEX error_events_code_idx;
