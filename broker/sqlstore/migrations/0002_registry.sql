-- The local provider's registry: things, certificates, policies, thing
-- groups, Greengrass core-device registrations and client-device associations.
CREATE TABLE registry_things (
    name       TEXT PRIMARY KEY,
    thing_type TEXT NOT NULL DEFAULT '',
    attributes TEXT NOT NULL DEFAULT '{}',
    created_at BIGINT NOT NULL
);
CREATE TABLE registry_certificates (
    id         TEXT PRIMARY KEY,
    pem        TEXT NOT NULL,
    ca_id      TEXT NOT NULL DEFAULT '',
    status     TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE TABLE registry_thing_principals (
    thing_name TEXT NOT NULL REFERENCES registry_things (name) ON DELETE CASCADE,
    cert_id    TEXT NOT NULL REFERENCES registry_certificates (id) ON DELETE CASCADE,
    PRIMARY KEY (thing_name, cert_id)
);
CREATE INDEX registry_thing_principals_cert ON registry_thing_principals (cert_id);
CREATE TABLE registry_policies (
    name       TEXT PRIMARY KEY,
    document   TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE TABLE registry_policy_attachments (
    policy_name TEXT NOT NULL REFERENCES registry_policies (name) ON DELETE CASCADE,
    cert_id     TEXT NOT NULL REFERENCES registry_certificates (id) ON DELETE CASCADE,
    PRIMARY KEY (policy_name, cert_id)
);
CREATE INDEX registry_policy_attachments_cert ON registry_policy_attachments (cert_id);
CREATE TABLE registry_thing_groups (
    name        TEXT PRIMARY KEY,
    description TEXT NOT NULL DEFAULT '',
    created_at  BIGINT NOT NULL
);
CREATE TABLE registry_group_members (
    group_name TEXT NOT NULL REFERENCES registry_thing_groups (name) ON DELETE CASCADE,
    thing_name TEXT NOT NULL REFERENCES registry_things (name) ON DELETE CASCADE,
    PRIMARY KEY (group_name, thing_name)
);
CREATE INDEX registry_group_members_thing ON registry_group_members (thing_name);
CREATE TABLE registry_core_devices (
    name           TEXT PRIMARY KEY,
    registered_at  BIGINT NOT NULL,
    status         TEXT NOT NULL DEFAULT '',
    core_version   TEXT NOT NULL DEFAULT '',
    platform       TEXT NOT NULL DEFAULT '',
    architecture   TEXT NOT NULL DEFAULT '',
    last_status_at BIGINT NOT NULL DEFAULT 0
);
CREATE TABLE registry_client_devices (
    core_name     TEXT NOT NULL,
    device_name   TEXT NOT NULL,
    associated_at BIGINT NOT NULL,
    PRIMARY KEY (core_name, device_name)
);
CREATE INDEX registry_client_devices_device ON registry_client_devices (device_name);
