-- Deployments over MQTT. deployment_documents holds each core's desired
-- deployment document (the retained deployments message), re-published on
-- broker start and when the core connects. deployment_waits holds the
-- deployment items that wait for their core's report, with the deadline the
-- sweeper enforces. A row exists only while the item waits.
CREATE TABLE deployment_documents (
    core          TEXT PRIMARY KEY,
    task_id       TEXT NOT NULL,
    deployment_id TEXT NOT NULL,
    template_name TEXT NOT NULL,
    template_version INTEGER NOT NULL,
    document      TEXT NOT NULL,
    updated_at    BIGINT NOT NULL
);
CREATE TABLE deployment_waits (
    task_id       TEXT NOT NULL,
    core          TEXT NOT NULL,
    batch         INTEGER NOT NULL,
    deployment_id TEXT NOT NULL,
    deadline      BIGINT NOT NULL,
    PRIMARY KEY (task_id, core)
);
CREATE INDEX deployment_waits_deadline ON deployment_waits (deadline);
CREATE INDEX deployment_waits_core ON deployment_waits (core);
