-- Vaccination coverage, card colours and the population behind the epidemic levels, from
-- the pseudonymous residents. A resident's row is replaced on every status change
-- (ReplacingMergeTree), which an insert-time view cannot retract, so this view is
-- refreshed: every few seconds it recounts ``residents FINAL`` into a table of groups
-- (ward, birth year, doses, stored colour) and swaps it in atomically. Birth years, not
-- ages, so the groups stay right as the years turn; doses, not "fully vaccinated", so the
-- card rulebook's course length is applied when read.
CREATE TABLE IF NOT EXISTS {db}.resident_groups
(
    district    LowCardinality(String),
    ward        LowCardinality(String),
    birth_year  UInt16,
    doses       UInt8,
    colour      LowCardinality(String),
    residents   UInt64
)
ENGINE = MergeTree
ORDER BY (district, ward, birth_year, doses, colour);

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.resident_groups_mv
REFRESH EVERY 10 SECOND
TO {db}.resident_groups AS
SELECT district, ward, birth_year, doses, colour, count() AS residents
FROM {db}.residents FINAL
GROUP BY district, ward, birth_year, doses, colour;

-- Backfill now, not at the first tick.
SYSTEM REFRESH VIEW {db}.resident_groups_mv;
SYSTEM WAIT VIEW {db}.resident_groups_mv
