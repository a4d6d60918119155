-- One row that readiness probes (`GET /api/v1/health/ready`) update, so that "the store can write" is checked by
-- committing a write, not assumed.
CREATE TABLE health_probe (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    at INTEGER NOT NULL
);
INSERT INTO health_probe (id, at) VALUES (1, 0);
