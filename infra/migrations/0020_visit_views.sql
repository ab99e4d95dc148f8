-- Analytics over visits read small pre-aggregated tables, never the raw visits: two
-- materialised views count each inserted visit once, by hour (event time, t_in) and
-- district, and by hour and checkpoint (its name and district are the registered ones,
-- joined when read). Sums, so parts merge to one row per key.
--
-- Counts are of the visits ClickHouse received, so each must be inserted once: the scan
-- recorder drops re-sent scans before the insert (its Redis dedup), and rows that a crash
-- makes a worker or the sink write again are checked first (the replay marks,
-- infra/replays.py and streams/rows.py). The raw ``visits`` table (ReplacingMergeTree)
-- stays exact whatever happens, and the backfill below reads it with FINAL.
CREATE TABLE IF NOT EXISTS {db}.scans_hourly
(
    hour      DateTime('UTC'),
    district  LowCardinality(String),
    scans     UInt64
)
ENGINE = SummingMergeTree
PARTITION BY toYYYYMM(hour)
ORDER BY (hour, district);

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.scans_hourly_mv TO {db}.scans_hourly AS
SELECT toStartOfHour(toDateTime(t_in, 'UTC')) AS hour, district, count() AS scans
FROM {db}.visits
GROUP BY hour, district;

CREATE TABLE IF NOT EXISTS {db}.checkpoint_visits_hourly
(
    hour           DateTime('UTC'),
    checkpoint_id  String,
    visits         UInt64
)
ENGINE = SummingMergeTree
PARTITION BY toYYYYMM(hour)
ORDER BY (hour, checkpoint_id);

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.checkpoint_visits_hourly_mv
TO {db}.checkpoint_visits_hourly AS
SELECT toStartOfHour(toDateTime(t_in, 'UTC')) AS hour, checkpoint_id, count() AS visits
FROM {db}.visits
GROUP BY hour, checkpoint_id;

-- Backfill what the store already holds. Migrations run before any writer starts (the
-- store's owner migrates at start-up, before its agents), so nothing reaches the views
-- twice; emptying the targets first makes a re-run after a crash converge.
TRUNCATE TABLE {db}.scans_hourly;
INSERT INTO {db}.scans_hourly
SELECT toStartOfHour(toDateTime(t_in, 'UTC')) AS hour, district, count() AS scans
FROM {db}.visits FINAL
GROUP BY hour, district;

TRUNCATE TABLE {db}.checkpoint_visits_hourly;
INSERT INTO {db}.checkpoint_visits_hourly
SELECT toStartOfHour(toDateTime(t_in, 'UTC')) AS hour, checkpoint_id, count() AS visits
FROM {db}.visits FINAL
GROUP BY hour, checkpoint_id
