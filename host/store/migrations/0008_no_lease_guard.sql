-- A settle by a lease holder that finds its task taken over is refused by the journal itself now (a `Conflict`
-- for its command alone), not by a failing insert into this table.
DROP TABLE lease_guard;
