-- Tasks of every kind (core, device, deployment) and their items.
CREATE TABLE tasks (
    id               TEXT PRIMARY KEY,
    kind             TEXT NOT NULL,
    type             TEXT NOT NULL DEFAULT '',
    core_name        TEXT NOT NULL DEFAULT '',
    status           TEXT NOT NULL,
    status_message   TEXT NOT NULL DEFAULT '',
    created_at       BIGINT NOT NULL,
    updated_at       BIGINT NOT NULL DEFAULT 0,
    request          TEXT NOT NULL DEFAULT '{}',
    batches_total    INTEGER NOT NULL DEFAULT 0,
    batches_complete INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX tasks_kind_id ON tasks (kind, id);
CREATE TABLE task_items (
    task_id        TEXT NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    name           TEXT NOT NULL,
    seq            INTEGER NOT NULL,
    batch          INTEGER NOT NULL,
    status         TEXT NOT NULL,
    status_message TEXT NOT NULL DEFAULT '',
    created_at     BIGINT NOT NULL,
    updated_at     BIGINT NOT NULL DEFAULT 0,
    input          TEXT NOT NULL DEFAULT '{}',
    progress       TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (task_id, name)
);
CREATE INDEX task_items_batch ON task_items (task_id, batch, seq);
CREATE INDEX task_items_name ON task_items (name);
CREATE TABLE task_batches (
    task_id TEXT NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    batch   INTEGER NOT NULL,
    PRIMARY KEY (task_id, batch)
);
