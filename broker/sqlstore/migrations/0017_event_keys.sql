-- Idempotency keys of events (issue #8): an event that belongs to one task
-- item carries a key naming it (task id and item name), and at most one
-- event per (detail_type, event_key) is stored, so an item re-run after a
-- crash or on another replica does not store its event a second time.
-- Events without a key (NULL) are never deduplicated: NULLs are distinct in
-- unique indexes on both engines.
ALTER TABLE events ADD COLUMN event_key TEXT;
CREATE UNIQUE INDEX events_detail_type_key ON events (detail_type, event_key);
