-- Component templates (spec §2.1). No semicolons in comments: the migration
-- runner splits statements on them. One row per template holds the latest
-- version number (fast "current" lookups and name-ordered listing), one row
-- per version holds the full template. components is a JSON array sorted
-- by key, job_config and deployment_policies are JSON text or '' if unset.
CREATE TABLE templates (
    name       TEXT PRIMARY KEY,
    latest     INTEGER NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE TABLE template_versions (
    name                TEXT NOT NULL REFERENCES templates (name) ON DELETE CASCADE,
    version             INTEGER NOT NULL,
    components          TEXT NOT NULL,
    job_config          TEXT NOT NULL DEFAULT '',
    deployment_policies TEXT NOT NULL DEFAULT '',
    created_at          BIGINT NOT NULL,
    updated_at          BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (name, version)
);
