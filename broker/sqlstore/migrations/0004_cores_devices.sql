-- Core devices (spec §3): template state belongs to the deployments feature.
CREATE TABLE cores (
    name                      TEXT PRIMARY KEY,
    desired_name              TEXT NOT NULL DEFAULT 'None',
    desired_version           INTEGER NOT NULL DEFAULT 0,
    reported_name             TEXT NOT NULL DEFAULT 'None',
    reported_version          INTEGER NOT NULL DEFAULT 0,
    deployment_status         TEXT NOT NULL DEFAULT 'None',
    deployment_status_message TEXT NOT NULL DEFAULT '',
    created_at                BIGINT NOT NULL,
    updated_at                BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX cores_desired ON cores (desired_name, desired_version, name);
CREATE TABLE core_artifacts (
    core       TEXT NOT NULL REFERENCES cores (name) ON DELETE CASCADE,
    kind       TEXT NOT NULL,
    bucket     TEXT NOT NULL,
    key        TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (core, kind)
);
-- Client devices, linked to the core they were provisioned or associated under.
CREATE TABLE client_devices (
    name             TEXT PRIMARY KEY,
    core_name        TEXT NOT NULL,
    certs_bucket     TEXT NOT NULL DEFAULT '',
    certs_key        TEXT NOT NULL DEFAULT '',
    certs_created_at BIGINT NOT NULL DEFAULT 0,
    created_at       BIGINT NOT NULL,
    updated_at       BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX client_devices_core ON client_devices (core_name, name);
