-- Runs of playbooks and the state of each of their steps, written as they happen.
CREATE TABLE runs (
    id               TEXT PRIMARY KEY,
    playbook         TEXT NOT NULL,
    playbook_version INTEGER NOT NULL,
    status           TEXT NOT NULL,      -- running | succeeded | failed
    inputs           TEXT NOT NULL,      -- JSON object
    outputs          TEXT,               -- JSON object, once succeeded
    error            TEXT,
    created_at       INTEGER NOT NULL,   -- unix milliseconds
    finished_at      INTEGER
);
CREATE INDEX runs_by_created ON runs (created_at DESC);
CREATE INDEX runs_by_playbook ON runs (playbook, created_at DESC);

CREATE TABLE steps (
    run_id      TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    step_id     TEXT NOT NULL,
    position    INTEGER NOT NULL,        -- the step's index in its playbook
    action      TEXT NOT NULL,           -- plugin.action
    status      TEXT NOT NULL,           -- running | succeeded | failed | skipped
    attempt     INTEGER NOT NULL,
    input       TEXT,                    -- JSON, as rendered for the plugin
    output      TEXT,                    -- JSON
    error_kind  TEXT,
    error       TEXT,
    started_at  INTEGER,
    finished_at INTEGER,
    PRIMARY KEY (run_id, step_id)
);

-- Key-value data that plugins keep across runs, one namespace per plugin.
CREATE TABLE plugin_kv (
    namespace  TEXT NOT NULL,
    key        TEXT NOT NULL,
    value      BLOB NOT NULL,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (namespace, key)
);
