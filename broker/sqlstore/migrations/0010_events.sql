-- Published events (spec §9), kept for SSE Last-Event-ID replay and webhook
-- delivery. seq comes from event_sequence, so it never goes back even when
-- old events are pruned.
CREATE TABLE events (
    seq         BIGINT PRIMARY KEY,
    source      TEXT NOT NULL,
    detail_type TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    detail      TEXT NOT NULL
);
CREATE TABLE event_sequence (
    id       INTEGER PRIMARY KEY,
    last_seq BIGINT NOT NULL
);
INSERT INTO event_sequence (id, last_seq) VALUES (1, 0);
-- The last event delivered to each webhook URL.
CREATE TABLE webhook_cursors (
    url        TEXT PRIMARY KEY,
    seq        BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
