-- Issue 4: installed plugin packages with their grants, trusted vendor keys, encrypted secrets.

-- Vendor public keys the administrator trusts to sign plugin packages.
CREATE TABLE trusted_keys (
    id          TEXT PRIMARY KEY,          -- 16 hex digits of SHA-256(public key)
    public_key  TEXT NOT NULL,             -- the `.pub` file's line
    vendor      TEXT NOT NULL,
    added_by    TEXT NOT NULL,
    added_at    INTEGER NOT NULL
);

-- One row per installed package version; at most one active version per plugin name.
CREATE TABLE plugin_installs (
    name             TEXT NOT NULL,
    version          TEXT NOT NULL,
    package_digest   TEXT NOT NULL,        -- SHA-256 of what the signature covers
    component_sha256 TEXT NOT NULL,        -- what playbook versions pin
    manifest         TEXT NOT NULL,        -- JSON
    grants           TEXT NOT NULL,        -- JSON: what the administrator granted
    signer           TEXT,                 -- trusted key id; NULL: installed unsigned in development mode
    file             TEXT NOT NULL,        -- the package file, relative to the data directory
    installed_by     TEXT NOT NULL,
    installed_at     INTEGER NOT NULL,
    active           INTEGER NOT NULL DEFAULT 1,
    PRIMARY KEY (name, version)
);
CREATE UNIQUE INDEX plugin_installs_one_active ON plugin_installs (name) WHERE active = 1;

-- Secret values, encrypted (XChaCha20-Poly1305, the secret's name as associated data) with the data
-- directory's key. Values never leave the store in any API response, run record or log.
CREATE TABLE secrets (
    name        TEXT PRIMARY KEY,
    sealed      BLOB NOT NULL,             -- nonce (24 bytes) || ciphertext || tag
    updated_by  TEXT NOT NULL,
    updated_at  INTEGER NOT NULL
);

-- TLP marks the caller put on a run's inputs: {"<input>": "red", "*": "amber"} ("*": every input).
ALTER TABLE runs ADD COLUMN tlp TEXT;
