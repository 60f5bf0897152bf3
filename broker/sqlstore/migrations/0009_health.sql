-- The latest health report and the connection state of each core (broker/health).
-- One row per core, written with one UPSERT per MQTT message (the hot path).
-- Rows go with their core (ON DELETE CASCADE), so a re-created core starts
-- UNKNOWN. Timestamps are unix millis (0 = never), documents are JSON text.
-- registry_synced is 1 once the provider registry holds this row's status,
-- nucleus version, platform and architecture (reset to 0 when they change).
CREATE TABLE core_health (
    core                  TEXT PRIMARY KEY REFERENCES cores (name) ON DELETE CASCADE,
    status                TEXT NOT NULL DEFAULT '',
    nucleus_state         TEXT NOT NULL DEFAULT '',
    nucleus_version       TEXT NOT NULL DEFAULT '',
    components            TEXT NOT NULL DEFAULT '[]',
    effective_deployments TEXT NOT NULL DEFAULT '[]',
    platform              TEXT NOT NULL DEFAULT '',
    architecture          TEXT NOT NULL DEFAULT '',
    agent_version         TEXT NOT NULL DEFAULT '',
    uptime_seconds        BIGINT NOT NULL DEFAULT 0,
    interval_seconds      INTEGER NOT NULL DEFAULT 0,
    system                TEXT NOT NULL DEFAULT '{}',
    certificate_not_after BIGINT NOT NULL DEFAULT 0,
    reported_at           BIGINT NOT NULL DEFAULT 0,
    received_at           BIGINT NOT NULL DEFAULT 0,
    connection_state      TEXT NOT NULL DEFAULT 'OFFLINE',
    last_seen_at          BIGINT NOT NULL DEFAULT 0,
    registry_synced       INTEGER NOT NULL DEFAULT 0
);
