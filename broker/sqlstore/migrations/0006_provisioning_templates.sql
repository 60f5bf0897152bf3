-- Provisioning templates: the raw AWS IoT provisioning template documents
-- (with their optional CDF section), exactly as they were put.
CREATE TABLE provisioning_templates (
    name       TEXT PRIMARY KEY,
    document   TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL DEFAULT 0
);
