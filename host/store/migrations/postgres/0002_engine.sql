-- The engine's tables on PostgreSQL: the final shape of the SQLite migrations 0001-0007 (without the SIEM's events,
-- dead letters and alerts, which are in 0001_siem.sql), plus what several workers on one database need: run leases
-- with fencing epochs, the workers' heartbeats, concurrency and rate limits kept in rows, and Sigma correlation
-- windows shared by every worker.
--
-- Conventions, so that both stores give back the same values:
-- - Times are `bigint` unix times in the unit of the SQLite column of the same name: milliseconds, except the
--   columns that say microseconds (`*_us`, `steps.changed_at`, `transitions.at`).
-- - JSON that comes from outside the host (a caller's inputs, a plugin's output or manifest, a playbook's text, an
--   audit detail) is `json`: kept as the exact text written, like SQLite's TEXT, and accepting `\u0000`, which
--   `jsonb` refuses. `jsonb` is used only for JSON the host makes itself from hex digests and names it checked.
-- - Flags that SQLite keeps as 0/1 are `boolean`.
-- - `text` cannot hold a NUL character in PostgreSQL (SQLite's TEXT can): the backend must replace NUL in the free
--   texts it stores (error messages, comments) before writing them.

-- Key-value data that plugins keep across runs, one namespace per plugin.
CREATE TABLE plugin_kv (
    namespace  text   NOT NULL,
    key        text   NOT NULL,
    value      bytea  NOT NULL,
    updated_at bigint NOT NULL,             -- unix ms
    PRIMARY KEY (namespace, key)
);

-- Raises for any UPDATE or DELETE on the table it guards (the append-only and immutable tables below).
CREATE FUNCTION refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '%', TG_ARGV[0] USING ERRCODE = 'restrict_violation';
END;
$$;

-- Immutable published versions of playbooks.
CREATE TABLE playbook_versions (
    name         text   NOT NULL,
    version      bigint NOT NULL CHECK (version > 0),  -- 1, 2, ... per name, assigned at publication
    source       text   NOT NULL,           -- the YAML as published
    digest       text   NOT NULL,           -- sha256 of source, hex
    plugins      jsonb  NOT NULL,           -- plugin name -> sha256 of its component, pinned
    triggers     json   NOT NULL,           -- summary of `on:` (for listing)
    published_at bigint NOT NULL,           -- unix ms
    published_by text   NOT NULL,
    PRIMARY KEY (name, version)
);
CREATE TRIGGER playbook_versions_immutable BEFORE UPDATE ON playbook_versions
FOR EACH ROW EXECUTE FUNCTION refuse_change('published playbook versions are immutable');

CREATE TABLE runs (
    id               text    PRIMARY KEY,   -- UUIDv7
    playbook         text    NOT NULL,
    version          bigint  NOT NULL,
    status           text    NOT NULL
        CHECK (status IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')),
    inputs           json    NOT NULL,      -- object
    outputs          json,                  -- object, once succeeded
    error            text,
    trigger          text    NOT NULL,      -- manual | webhook | schedule | event | rerun | playbook
    started_by       text    NOT NULL,      -- token name, `schedule`, `hook:<playbook>`, ...
    parent_run       text    REFERENCES runs (id) ON DELETE SET NULL,  -- set for a run started by a `core.playbook` step ...
    parent_step      text,                  -- ... that step ...
    parent_item      bigint,                -- ... and its for_each item (-1 for none)
    parent_wait      boolean NOT NULL DEFAULT false,  -- the parent step waits for this run
    rerun_of         text    REFERENCES runs (id) ON DELETE SET NULL,
    cancel_requested boolean NOT NULL DEFAULT false,
    created_at       bigint  NOT NULL,      -- unix ms
    started_at       bigint,
    finished_at      bigint,
    tlp              json,                  -- TLP marks the caller put on the inputs: {"<input>": "red", "*": "amber"}
    resumes          bigint  NOT NULL DEFAULT 0,  -- starts in a row that resumed the run, saw it work, and died
    -- Scale-out: the worker that owns the run. Only the owner drives it; it holds the lease until `lease_until_us`
    -- and extends it with its heartbeats. Taking a run over (its lease expired: the owner died or froze) increments
    -- `lease_epoch` in the same statement, and every step record is written with the epoch its writer holds
    -- (`steps.epoch`, checked by `steps_fenced` below), so a worker that lost the run can never commit to it again,
    -- even if it wakes up believing it still owns it.
    lease_owner      text,                  -- workers.id, while owned
    lease_until_us   bigint,                -- unix µs; past it the run may be taken over
    lease_epoch      bigint  NOT NULL DEFAULT 0,  -- fencing epoch: +1 at every change of owner
    due_us           bigint,                -- unix µs when the run next has work for a worker (now: ready steps; a
                                            -- timer's time; NULL while it only waits for an outside event)
    FOREIGN KEY (playbook, version) REFERENCES playbook_versions (name, version)
);
CREATE INDEX runs_by_created ON runs (created_at DESC);
CREATE INDEX runs_by_playbook ON runs (playbook, created_at DESC);
CREATE INDEX runs_unfinished ON runs (status) WHERE status IN ('queued', 'running');
CREATE INDEX runs_by_parent ON runs (parent_run) WHERE parent_run IS NOT NULL;
CREATE INDEX runs_by_owner ON runs (lease_owner) WHERE lease_owner IS NOT NULL;
-- Scale-out: the runs a worker may claim, soonest due first. A claim takes a batch in one statement:
--     SELECT id FROM runs
--     WHERE status IN ('queued', 'running') AND due_us <= $now AND (lease_until_us IS NULL OR lease_until_us < $now)
--     ORDER BY due_us LIMIT $n FOR UPDATE SKIP LOCKED
-- then sets lease_owner, lease_until_us and lease_epoch = lease_epoch + 1 on the rows it got; workers claiming at
-- the same time skip each other's rows instead of waiting for them.
CREATE INDEX runs_claimable ON runs (due_us) WHERE status IN ('queued', 'running') AND due_us IS NOT NULL;

-- One row per task: a step, or one item of a `for_each` step (item >= 0; the step's own row has item -1).
CREATE TABLE steps (
    run_id      text   NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    step_id     text   NOT NULL,
    item        bigint NOT NULL DEFAULT -1 CHECK (item >= -1),
    position    bigint NOT NULL,            -- the step's index in its playbook
    action      text   NOT NULL,            -- plugin.action
    status      text   NOT NULL
        CHECK (status IN ('queued', 'running', 'waiting', 'succeeded', 'failed', 'skipped', 'cancelled')),
    attempt     bigint NOT NULL DEFAULT 0,  -- attempts started so far
    input       json,                       -- as rendered for the plugin
    output      json,
    error_kind  text,
    error       text,
    lease_owner text,                       -- the worker executing it, while running
    lease_until bigint,                     -- unix ms; an expired lease may be claimed again
    wake_at     bigint,                     -- unix ms: end of a backoff, a sleep, an approval's expiry
    started_at  bigint,
    finished_at bigint,
    changed_at  bigint NOT NULL,            -- unix µs of the last transition
    epoch       bigint NOT NULL DEFAULT 0,  -- the run's lease_epoch its writer held (scale-out fencing)
    PRIMARY KEY (run_id, step_id, item)
);
CREATE INDEX steps_timers ON steps (wake_at) WHERE status = 'waiting' AND wake_at IS NOT NULL;
CREATE INDEX steps_leased ON steps (lease_owner) WHERE status = 'running';

-- Scale-out fencing (SQLite's `lease_guard` in one process): a step record written under an epoch that is no
-- longer its run's is refused, which aborts the writer's transaction. The run's row is read FOR SHARE, so a
-- takeover (which updates that row) waits for a writer that still holds the epoch to commit, and a writer that
-- comes after the takeover sees the new epoch. The error has SQLSTATE QL001, for the backend to report as a lost
-- lease.
CREATE FUNCTION steps_fenced() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    current bigint;
BEGIN
    SELECT lease_epoch INTO current FROM runs WHERE id = NEW.run_id FOR SHARE;
    IF current IS DISTINCT FROM NEW.epoch THEN
        RAISE EXCEPTION 'lease lost: run % is at epoch %, this write holds %', NEW.run_id, current, NEW.epoch
            USING ERRCODE = 'QL001';
    END IF;
    RETURN NEW;
END;
$$;
CREATE TRIGGER steps_fenced BEFORE INSERT OR UPDATE ON steps FOR EACH ROW EXECUTE FUNCTION steps_fenced();

-- Append-only history of every task transition (what the SSE stream replays).
CREATE TABLE transitions (
    seq     bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    run_id  text   NOT NULL REFERENCES runs (id) ON DELETE CASCADE DEFERRABLE INITIALLY DEFERRED,
    step_id text,                           -- NULL for a run-level transition
    item    bigint NOT NULL DEFAULT -1,
    status  text   NOT NULL,
    attempt bigint NOT NULL DEFAULT 0,
    at      bigint NOT NULL,                -- unix µs
    detail  text
);
CREATE INDEX transitions_by_run ON transitions (run_id, seq);
CREATE TRIGGER transitions_no_update BEFORE UPDATE ON transitions
FOR EACH ROW EXECUTE FUNCTION refuse_change('the transition history is append-only');

-- Every change of a task's status or attempt is appended to the history by the database itself, in the same
-- statement, so no writer can change a task without leaving its trace (and it costs no extra round trip).
CREATE FUNCTION steps_history() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO transitions (run_id, step_id, item, status, attempt, at, detail)
    VALUES (NEW.run_id, NEW.step_id, NEW.item, NEW.status, NEW.attempt, NEW.changed_at, NEW.error);
    RETURN NULL;
END;
$$;
CREATE TRIGGER steps_history_insert AFTER INSERT ON steps FOR EACH ROW EXECUTE FUNCTION steps_history();
CREATE TRIGGER steps_history_update AFTER UPDATE OF status, attempt ON steps
FOR EACH ROW WHEN (NEW.status IS DISTINCT FROM OLD.status OR NEW.attempt IS DISTINCT FROM OLD.attempt)
EXECUTE FUNCTION steps_history();

CREATE TABLE approvals (
    run_id          text    NOT NULL,
    step_id         text    NOT NULL,
    item            bigint  NOT NULL DEFAULT -1,
    message         text    NOT NULL,
    approvers       json    NOT NULL,       -- array: "role:analyst", "user:<token name>"
    default_approve boolean NOT NULL DEFAULT false,
    expires_at      bigint,                 -- unix ms
    created_at      bigint  NOT NULL,
    decision        text CHECK (decision IN ('approved', 'denied', 'expired')),  -- once decided
    decided_by      text,
    comment         text,
    decided_at      bigint,
    PRIMARY KEY (run_id, step_id, item),
    FOREIGN KEY (run_id, step_id, item) REFERENCES steps (run_id, step_id, item)
        ON DELETE CASCADE DEFERRABLE INITIALLY DEFERRED
);
CREATE INDEX approvals_pending ON approvals (created_at) WHERE decision IS NULL;

-- Schedules of published playbooks: the next firing is advanced in the same transaction that starts its run, on
-- the condition that it still has the value the firing read, so that of several workers one fires each tick.
CREATE TABLE schedules (
    playbook     text   NOT NULL,
    idx          bigint NOT NULL,           -- position in the playbook's `on.schedule` list
    cron         text   NOT NULL,
    next_fire_at bigint NOT NULL,           -- unix ms
    PRIMARY KEY (playbook, idx)
);
CREATE INDEX schedules_due ON schedules (next_fire_at);

-- Per-playbook webhook secrets (also the HMAC key).
CREATE TABLE hooks (
    playbook   text   PRIMARY KEY,
    secret     text   NOT NULL,             -- sealed by the vault
    created_at bigint NOT NULL
);

CREATE TABLE tokens (
    id         text   PRIMARY KEY,          -- public identifier (prefix of the token)
    hash       text   NOT NULL UNIQUE,      -- sha256 of the whole token, hex
    name       text   NOT NULL,
    role       text   NOT NULL CHECK (role IN ('admin', 'engineer', 'analyst', 'viewer', 'ingest')),
    created_at bigint NOT NULL,
    created_by text   NOT NULL,
    revoked_at bigint
);

-- Who changed what, when. Append-only: updates and deletes are refused by triggers.
CREATE TABLE audit (
    seq    bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at     bigint NOT NULL,                 -- unix ms
    actor  text   NOT NULL,
    action text   NOT NULL,                 -- e.g. playbook.publish, run.start, run.cancel, approval.approve
    target text   NOT NULL,
    detail json
);
CREATE INDEX audit_by_at ON audit (at);
CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit
FOR EACH ROW EXECUTE FUNCTION refuse_change('the audit log is append-only');
CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit
FOR EACH ROW EXECUTE FUNCTION refuse_change('the audit log is append-only');
-- Row triggers do not see TRUNCATE.
CREATE TRIGGER audit_no_truncate BEFORE TRUNCATE ON audit
FOR EACH STATEMENT EXECUTE FUNCTION refuse_change('the audit log is append-only');

-- Vendor public keys the administrator trusts to sign plugin packages.
CREATE TABLE trusted_keys (
    id         text   PRIMARY KEY,          -- 16 hex digits of SHA-256(public key)
    public_key text   NOT NULL,             -- the `.pub` file's line
    vendor     text   NOT NULL,
    added_by   text   NOT NULL,
    added_at   bigint NOT NULL
);

-- One row per installed package version; at most one active version per plugin name. `signer` is not a foreign
-- key: distrusting a key later leaves the record of who signed what was installed.
CREATE TABLE plugin_installs (
    name             text    NOT NULL,
    version          text    NOT NULL,
    package_digest   text    NOT NULL,      -- SHA-256 of what the signature covers
    component_sha256 text    NOT NULL,      -- what playbook versions pin
    manifest         json    NOT NULL,
    grants           jsonb   NOT NULL,      -- what the administrator granted
    signer           text,                  -- trusted key id; NULL: installed unsigned in development mode
    file             text    NOT NULL,      -- the package file, relative to the data directory
    installed_by     text    NOT NULL,
    installed_at     bigint  NOT NULL,
    active           boolean NOT NULL DEFAULT true,
    PRIMARY KEY (name, version)
);
CREATE UNIQUE INDEX plugin_installs_one_active ON plugin_installs (name) WHERE active;

-- Secret values, encrypted (XChaCha20-Poly1305, the secret's name as associated data) with the data
-- directory's key. Values never leave the store in any API response, run record or log.
CREATE TABLE secrets (
    name       text   PRIMARY KEY,
    sealed     bytea  NOT NULL,             -- nonce (24 bytes) || ciphertext || tag
    updated_by text   NOT NULL,
    updated_at bigint NOT NULL
);

-- Keys that start a run at most once: a webhook's delivery id under the scope `hook:<playbook>`, or a client's
-- `Idempotency-Key` under `token:<token id>`, written in the transaction that creates the run.
CREATE TABLE run_keys (
    scope       text   NOT NULL,
    key         text   NOT NULL,
    fingerprint text   NOT NULL,            -- SHA-256 (hex) of what was asked: a different request under the key
    run_id      text   NOT NULL REFERENCES runs (id) ON DELETE CASCADE DEFERRABLE INITIALLY DEFERRED,
    created_at  bigint NOT NULL,            -- unix ms
    expires_at  bigint NOT NULL,            -- unix ms; after it the key may start a new run
    PRIMARY KEY (scope, key)
);
CREATE INDEX run_keys_expiry ON run_keys (expires_at);

-- One row that readiness probes update, so that "the store can write" is checked by committing a write.
CREATE TABLE health_probe (
    id integer PRIMARY KEY CHECK (id = 1),
    at bigint  NOT NULL
);
INSERT INTO health_probe (id, at) VALUES (1, 0);

-- Scale-out: the `qila serve` processes sharing this database, all equal. Each inserts its row at start and
-- updates `heartbeat_us` every few seconds, extending the leases of the runs it owns in the same transaction; a
-- worker whose heartbeat is older than the lease is dead (or frozen), and its runs are claimed by the others once
-- their leases expire. Rows of workers dead for long are pruned by whichever worker notices.
CREATE TABLE workers (
    id           text   PRIMARY KEY,        -- chosen at start (UUIDv7), never reused
    started_us   bigint NOT NULL,
    heartbeat_us bigint NOT NULL,
    address      text                       -- where its API listens (host:port), for operators
);
CREATE INDEX workers_by_heartbeat ON workers (heartbeat_us);

-- Scale-out: concurrency limits (`concurrency: {key, limit}`) held in rows, so that a limit holds across workers.
-- A task takes a free slot number below the limit with
--     INSERT INTO limit_slots (key, slot, run_id, step_id, item, acquired_us)
--     SELECT $key, s, $run, $step, $item, $now FROM generate_series(0, $limit - 1) AS s
--     WHERE s NOT IN (SELECT slot FROM limit_slots WHERE key = $key) LIMIT 1 ON CONFLICT DO NOTHING
-- (no row inserted: the limit is reached, or another worker took that slot at the same moment; the task stays
-- queued). The primary key makes more than `limit` holders impossible; the slot is deleted when the task ends, and
-- the owner of a run taken over releases the slots of its tasks that are no longer running.
CREATE TABLE limit_slots (
    key         text   NOT NULL,
    slot        bigint NOT NULL CHECK (slot >= 0),
    run_id      text   NOT NULL,
    step_id     text   NOT NULL,
    item        bigint NOT NULL DEFAULT -1,
    acquired_us bigint NOT NULL,
    PRIMARY KEY (key, slot),
    UNIQUE (key, run_id, step_id, item),    -- a task holds at most one slot of a key
    FOREIGN KEY (run_id, step_id, item) REFERENCES steps (run_id, step_id, item) ON DELETE CASCADE
);
CREATE INDEX limit_slots_by_task ON limit_slots (run_id, step_id, item);

-- Scale-out: rate limits (`concurrency: {key, rate}`) as token buckets in rows. A task spends a token with one
-- conditional update, which the row lock serialises across workers:
--     UPDATE limit_rates SET tokens = least($burst, tokens + ($now - refilled_us) * $per_us) - 1, refilled_us = $now
--     WHERE key = $key AND least($burst, tokens + ($now - refilled_us) * $per_us) >= 1
-- (after an `INSERT ... ON CONFLICT DO NOTHING` of a full bucket at the key's first use).
CREATE TABLE limit_rates (
    key         text             PRIMARY KEY,
    tokens      double precision NOT NULL CHECK (tokens >= 0),
    refilled_us bigint           NOT NULL
);

-- Scale-out: Sigma correlation windows (event_count, value_count, temporal), one row per rule, group key and
-- window, so that the events of one group key are counted together whichever worker received them, and a window
-- survives a restart. A worker adds its events with `INSERT ... ON CONFLICT (rule_id, group_key, window_start_us)
-- DO UPDATE`, which is atomic across workers; windows older than their rule's timespan are deleted by
-- `updated_us`. `state` holds what a count alone cannot (the distinct values of a value_count, as hex digests so
-- that no event text is copied into it; the rules seen by a temporal correlation).
CREATE TABLE correlation_windows (
    rule_id         text   NOT NULL,
    group_key       text   NOT NULL,        -- the values of the rule's `group-by` ('' for none)
    window_start_us bigint NOT NULL,
    count           bigint NOT NULL DEFAULT 0 CHECK (count >= 0),
    state           jsonb  NOT NULL DEFAULT '{}',
    updated_us      bigint NOT NULL,
    PRIMARY KEY (rule_id, group_key, window_start_us)
);
CREATE INDEX correlation_windows_by_updated ON correlation_windows (updated_us);
