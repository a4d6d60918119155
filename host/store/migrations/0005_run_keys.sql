-- Keys that start a run at most once: a webhook's delivery id (`webhook-id`, `X-GitHub-Delivery`) under the scope
-- `hook:<playbook>`, or a client's `Idempotency-Key` under `token:<token id>`. The row is written in the transaction
-- that creates the run, so a key and its run exist together or not at all. Expired rows are pruned as new keys are
-- claimed (and replaced when their key comes again).
CREATE TABLE run_keys (
    scope       TEXT NOT NULL,
    key         TEXT NOT NULL,
    fingerprint TEXT NOT NULL,              -- SHA-256 (hex) of what was asked: a different request under the key
    run_id      TEXT NOT NULL,
    created_at  INTEGER NOT NULL,           -- unix ms
    expires_at  INTEGER NOT NULL,           -- unix ms; after it the key may start a new run
    PRIMARY KEY (scope, key)
) WITHOUT ROWID;

CREATE INDEX run_keys_expiry ON run_keys (expires_at);
