-- Exposures (F1, F2) as flagged or withdrawn, pseudonymous: people by keyed hash only.
-- One row per (report, person) survives: the highest version (the offset of the f0-reports
-- record that decided it), so replays and corrections converge.
CREATE TABLE IF NOT EXISTS {db}.exposures
(
    exposure_id     String,
    report_id       String,
    person_key      String,
    tier            LowCardinality(String),
    via_key         String,
    reason          LowCardinality(String),
    checkpoint_id   String,
    district        LowCardinality(String),
    overlap_start   DateTime64(3, 'UTC'),
    overlap_end     DateTime64(3, 'UTC'),
    overlap_minutes Float32,
    rule_version    LowCardinality(String),
    flagged_at      DateTime64(3, 'UTC'),
    withdrawn       UInt8,
    version         UInt64
)
ENGINE = ReplacingMergeTree(version)
ORDER BY exposure_id
