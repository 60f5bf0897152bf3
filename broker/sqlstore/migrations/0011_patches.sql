-- Device patching (spec/device-patcher.md sections 1, 2 and 6). No
-- semicolons in comments: the migration runner splits statements on them.
--
-- patch_templates holds one row per template name with its latest version,
-- patch_template_versions every version's full document (JSON), so a patch
-- can name the exact version it ran. patch_artifacts maps a template's
-- uploaded artifact names to the content-addressed blob (sha256) holding
-- the bytes in the artifact store.
CREATE TABLE patch_templates (
    name       TEXT PRIMARY KEY,
    latest     INTEGER NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE TABLE patch_template_versions (
    name       TEXT NOT NULL REFERENCES patch_templates (name) ON DELETE CASCADE,
    version_no INTEGER NOT NULL,
    document   TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (name, version_no)
);
CREATE TABLE patch_artifacts (
    template_name TEXT NOT NULL,
    name          TEXT NOT NULL,
    sha256        TEXT NOT NULL,
    bytes         BIGINT NOT NULL,
    updated_at    BIGINT NOT NULL,
    PRIMARY KEY (template_name, name)
);
-- Connection profiles of client devices. connection is the JSON profile
-- (never a secret: only credential references), last_probe the JSON of the
-- latest probe request and its result, or '' if never probed.
CREATE TABLE patch_targets (
    device_id  TEXT PRIMARY KEY,
    core_name  TEXT NOT NULL,
    connection TEXT NOT NULL,
    last_probe TEXT NOT NULL DEFAULT '',
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX patch_targets_core ON patch_targets (core_name, device_id);
-- Patch tasks: options is JSON (maxConcurrency, maxFailures,
-- deadlineSeconds), deadline the unix ms after which the task's unfinished
-- patches fail (0 = none).
CREATE TABLE patch_tasks (
    task_id    TEXT PRIMARY KEY,
    options    TEXT NOT NULL,
    deadline   BIGINT NOT NULL DEFAULT 0,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
-- One patch per device per task. dispatched_at is 0 while the patch waits
-- for a dispatch slot, not_before delays a re-dispatch, seq is one more than
-- the last applied event of the current attempt, rev increases with every update
-- (compare-and-swap, so concurrent writers never lose a transition).
CREATE TABLE patches (
    patch_id         TEXT PRIMARY KEY,
    task_id          TEXT NOT NULL,
    device_id        TEXT NOT NULL,
    core_name        TEXT NOT NULL DEFAULT '',
    template_name    TEXT NOT NULL,
    template_version INTEGER NOT NULL DEFAULT 0,
    patch_type       TEXT NOT NULL,
    status           TEXT NOT NULL,
    status_message   TEXT NOT NULL DEFAULT '',
    extra_vars       TEXT NOT NULL DEFAULT '',
    attempt          INTEGER NOT NULL,
    seq              BIGINT NOT NULL DEFAULT 0,
    steps            TEXT NOT NULL DEFAULT '',
    dispatched_at    BIGINT NOT NULL DEFAULT 0,
    not_before       BIGINT NOT NULL DEFAULT 0,
    last_event_at    BIGINT NOT NULL DEFAULT 0,
    deadline         BIGINT NOT NULL DEFAULT 0,
    rev              BIGINT NOT NULL DEFAULT 1,
    created_at       BIGINT NOT NULL,
    updated_at       BIGINT NOT NULL
);
CREATE INDEX patches_task ON patches (task_id, created_at, patch_id);
CREATE INDEX patches_device ON patches (device_id, created_at, patch_id);
CREATE INDEX patches_status ON patches (status);
CREATE INDEX patches_core ON patches (core_name, status);
-- Log chunks the agent streams, keyed as it sends them. The store keeps at
-- most a bounded tail per (patch, attempt, step, stream).
CREATE TABLE patch_logs (
    patch_id    TEXT NOT NULL,
    attempt     INTEGER NOT NULL,
    step        TEXT NOT NULL,
    stream      TEXT NOT NULL,
    seq         BIGINT NOT NULL,
    data        TEXT NOT NULL,
    bytes       BIGINT NOT NULL,
    received_at BIGINT NOT NULL,
    PRIMARY KEY (patch_id, attempt, step, stream, seq)
);
