-- SIEM: normalised events with their raw record, records that could not be parsed (dead letters), and alerts
-- raised by detection rules (deduplicated per rule and group key).

-- Text columns compare case-insensitively (ASCII), so `user = ?` and its index agree with the query language.
-- IP addresses are kept as text (for display) and as 16 bytes (IPv4 as IPv4-mapped IPv6) so that a CIDR is a
-- BLOB range. Times are unix microseconds.
CREATE TABLE events (
    id                 INTEGER PRIMARY KEY,
    time_us            INTEGER NOT NULL,   -- when it happened (from the record)
    received_us        INTEGER NOT NULL,   -- when Qila received it
    dataset            TEXT NOT NULL COLLATE NOCASE,
    host               TEXT COLLATE NOCASE,
    source_ip          TEXT,
    source_ip_bin      BLOB,
    source_port        INTEGER,
    destination_ip     TEXT,
    destination_ip_bin BLOB,
    destination_port   INTEGER,
    user               TEXT COLLATE NOCASE,
    process            TEXT COLLATE NOCASE,
    action             TEXT COLLATE NOCASE,
    outcome            TEXT COLLATE NOCASE,
    fields             TEXT NOT NULL,      -- JSON object: every other field
    raw                TEXT NOT NULL       -- the record as received
);
-- Each index ends with time_us (and, implicitly, id), so a search on one field pages newest first from the index.
-- Every index costs ingest throughput (each batch touches a page per distinct value in each), so only the fields
-- an analyst pivots on are indexed: the addresses, the account and the host. `dataset`, `action`, `outcome` and
-- `process` are filtered along the time index.
CREATE INDEX events_by_time ON events (time_us);
CREATE INDEX events_by_host ON events (host, time_us);
CREATE INDEX events_by_user ON events (user, time_us);
CREATE INDEX events_by_source_ip ON events (source_ip_bin, time_us);
CREATE INDEX events_by_destination_ip ON events (destination_ip_bin, time_us);

-- Records that could not be parsed, kept verbatim so nothing received is lost.
CREATE TABLE dead_letters (
    id          INTEGER PRIMARY KEY,
    received_us INTEGER NOT NULL,
    source      TEXT NOT NULL,             -- http | syslog-udp | syslog-tcp | file:NAME ...
    location    TEXT NOT NULL,             -- where in the source: `line 12`, `record 3` ...
    reason      TEXT NOT NULL,
    raw         TEXT NOT NULL
);
CREATE INDEX dead_letters_by_received ON dead_letters (received_us);

CREATE TABLE alerts (
    id         TEXT PRIMARY KEY,           -- UUIDv7
    rule_id    TEXT NOT NULL,
    rule_title TEXT NOT NULL,
    level      TEXT NOT NULL,
    tags       TEXT NOT NULL,              -- JSON array (ATT&CK tags)
    group_key  TEXT NOT NULL,              -- what alerts of one rule are deduplicated on ('' for none)
    first_us   INTEGER NOT NULL,
    last_us    INTEGER NOT NULL,
    count      INTEGER NOT NULL,
    event_ids  TEXT NOT NULL,              -- JSON array of event ids, the first 100
    details    TEXT NOT NULL,              -- JSON
    status     TEXT NOT NULL,              -- open | acknowledged | closed
    created_us INTEGER NOT NULL,
    updated_us INTEGER NOT NULL
);
CREATE INDEX alerts_dedup ON alerts (rule_id, group_key, last_us);
CREATE INDEX alerts_by_status ON alerts (status, id);
