-- Durable orchestration: published playbook versions, runs and their tasks with leases and timers, approvals,
-- an append-only history of transitions, triggers, API tokens and the audit log.
-- Nothing had been released on 0001's schema, so its run tables are replaced rather than migrated.
DROP TABLE steps;
DROP TABLE runs;

-- Immutable published versions of playbooks.
CREATE TABLE playbook_versions (
    name         TEXT NOT NULL,
    version      INTEGER NOT NULL,          -- 1, 2, ... per name, assigned at publication
    source       TEXT NOT NULL,             -- the YAML as published
    digest       TEXT NOT NULL,             -- sha256 of source, hex
    plugins      TEXT NOT NULL,             -- JSON object: plugin name -> sha256 of its component, pinned
    triggers     TEXT NOT NULL,             -- JSON summary of `on:` (for listing)
    published_at INTEGER NOT NULL,          -- unix ms
    published_by TEXT NOT NULL,
    PRIMARY KEY (name, version)
);
CREATE TRIGGER playbook_versions_immutable BEFORE UPDATE ON playbook_versions
BEGIN SELECT RAISE(ABORT, 'published playbook versions are immutable'); END;

CREATE TABLE runs (
    id           TEXT PRIMARY KEY,          -- UUIDv7
    playbook     TEXT NOT NULL,
    version      INTEGER NOT NULL,
    status       TEXT NOT NULL,             -- queued | running | succeeded | failed | cancelled
    inputs       TEXT NOT NULL,             -- JSON object
    outputs      TEXT,                      -- JSON object, once succeeded
    error        TEXT,
    trigger      TEXT NOT NULL,             -- manual | webhook | schedule | event | rerun | playbook
    started_by   TEXT NOT NULL,             -- token name, `schedule`, `hook:<playbook>`, ...
    parent_run   TEXT,                      -- set for a run started by a `core.playbook` step ...
    parent_step  TEXT,                      -- ... that step ...
    parent_item  INTEGER,                   -- ... and its for_each item (-1 for none)
    parent_wait  INTEGER NOT NULL DEFAULT 0,-- 1 when the parent step waits for this run
    rerun_of     TEXT,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    created_at   INTEGER NOT NULL,
    started_at   INTEGER,
    finished_at  INTEGER,
    FOREIGN KEY (playbook, version) REFERENCES playbook_versions (name, version)
);
CREATE INDEX runs_by_created ON runs (created_at DESC);
CREATE INDEX runs_by_playbook ON runs (playbook, created_at DESC);
CREATE INDEX runs_unfinished ON runs (status) WHERE status IN ('queued', 'running');

-- One row per task: a step, or one item of a `for_each` step (item >= 0; the step's own row has item -1).
CREATE TABLE steps (
    run_id      TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    step_id     TEXT NOT NULL,
    item        INTEGER NOT NULL DEFAULT -1,
    position    INTEGER NOT NULL,           -- the step's index in its playbook
    action      TEXT NOT NULL,              -- plugin.action
    status      TEXT NOT NULL,              -- queued | running | waiting | succeeded | failed | skipped | cancelled
    attempt     INTEGER NOT NULL DEFAULT 0, -- attempts started so far
    input       TEXT,                       -- JSON, as rendered for the plugin
    output      TEXT,                       -- JSON
    error_kind  TEXT,
    error       TEXT,
    lease_owner TEXT,                       -- the worker executing it, while running
    lease_until INTEGER,                    -- unix ms; an expired lease may be claimed again
    wake_at     INTEGER,                    -- unix ms: end of a backoff, a sleep, an approval's expiry
    started_at  INTEGER,
    finished_at INTEGER,
    changed_at  INTEGER NOT NULL,           -- unix microseconds of the last transition
    PRIMARY KEY (run_id, step_id, item)
);
CREATE INDEX steps_timers ON steps (wake_at) WHERE status = 'waiting' AND wake_at IS NOT NULL;
CREATE INDEX steps_leased ON steps (lease_owner) WHERE status = 'running';

-- Never holds a row: a write that must change a task (a settle by its lease holder) is followed by an insert here
-- that fails this check when the write changed nothing, which aborts the transaction.
CREATE TABLE lease_guard (ok INTEGER NOT NULL CONSTRAINT lease_lost CHECK (ok > 0));

-- Append-only history of every task transition (what the SSE stream replays).
CREATE TABLE transitions (
    seq      INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id   TEXT NOT NULL,
    step_id  TEXT,                          -- NULL for a run-level transition
    item     INTEGER NOT NULL DEFAULT -1,
    status   TEXT NOT NULL,
    attempt  INTEGER NOT NULL DEFAULT 0,
    at       INTEGER NOT NULL,              -- unix microseconds
    detail   TEXT
);
CREATE INDEX transitions_by_run ON transitions (run_id, seq);
CREATE TRIGGER transitions_no_update BEFORE UPDATE ON transitions
BEGIN SELECT RAISE(ABORT, 'the transition history is append-only'); END;

-- Every change of a task's status or attempt is appended to the history by the database itself, in the same
-- statement, so no writer can change a task without leaving its trace (and it costs no extra round trip).
CREATE TRIGGER steps_history_insert AFTER INSERT ON steps
BEGIN
    INSERT INTO transitions (run_id, step_id, item, status, attempt, at, detail)
    VALUES (NEW.run_id, NEW.step_id, NEW.item, NEW.status, NEW.attempt, NEW.changed_at, NEW.error);
END;
CREATE TRIGGER steps_history_update AFTER UPDATE OF status, attempt ON steps
WHEN NEW.status IS NOT OLD.status OR NEW.attempt IS NOT OLD.attempt
BEGIN
    INSERT INTO transitions (run_id, step_id, item, status, attempt, at, detail)
    VALUES (NEW.run_id, NEW.step_id, NEW.item, NEW.status, NEW.attempt, NEW.changed_at, NEW.error);
END;

CREATE TABLE approvals (
    run_id      TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    step_id     TEXT NOT NULL,
    item        INTEGER NOT NULL DEFAULT -1,
    message     TEXT NOT NULL,
    approvers   TEXT NOT NULL,              -- JSON array: "role:analyst", "user:<token name>"
    default_approve INTEGER NOT NULL DEFAULT 0,
    expires_at  INTEGER,
    created_at  INTEGER NOT NULL,
    decision    TEXT,                       -- approved | denied | expired, once decided
    decided_by  TEXT,
    comment     TEXT,
    decided_at  INTEGER,
    PRIMARY KEY (run_id, step_id, item)
);
CREATE INDEX approvals_pending ON approvals (created_at) WHERE decision IS NULL;

-- Schedules of published playbooks: the next firing is advanced in the same transaction that starts its run.
CREATE TABLE schedules (
    playbook     TEXT NOT NULL,
    idx          INTEGER NOT NULL,          -- position in the playbook's `on.schedule` list
    cron         TEXT NOT NULL,
    next_fire_at INTEGER NOT NULL,          -- unix ms
    PRIMARY KEY (playbook, idx)
);

-- Per-playbook webhook secrets (also the HMAC key).
CREATE TABLE hooks (
    playbook   TEXT PRIMARY KEY,
    secret     TEXT NOT NULL,
    created_at INTEGER NOT NULL
);

CREATE TABLE tokens (
    id         TEXT PRIMARY KEY,            -- public identifier (prefix of the token)
    hash       TEXT NOT NULL UNIQUE,        -- sha256 of the whole token, hex
    name       TEXT NOT NULL,
    role       TEXT NOT NULL,               -- admin | engineer | analyst | viewer
    created_at INTEGER NOT NULL,
    created_by TEXT NOT NULL,
    revoked_at INTEGER
);

-- Who changed what, when. Append-only: updates and deletes are refused by triggers.
CREATE TABLE audit (
    seq    INTEGER PRIMARY KEY AUTOINCREMENT,
    at     INTEGER NOT NULL,                -- unix ms
    actor  TEXT NOT NULL,
    action TEXT NOT NULL,                   -- e.g. playbook.publish, run.start, run.cancel, approval.approve
    target TEXT NOT NULL,
    detail TEXT                             -- JSON
);
CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
