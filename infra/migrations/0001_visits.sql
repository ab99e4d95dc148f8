-- Visits: one row per recorded scan. People are keyed by a keyed hash, never a raw ID.
-- ReplacingMergeTree on the scan's own key: a scan re-inserted after a crash collapses.
CREATE TABLE IF NOT EXISTS {db}.visits
(
    scan_id        String,
    person_key     String,
    checkpoint_id  String,
    district       LowCardinality(String),
    ward           LowCardinality(String),
    t_in           DateTime64(3, 'UTC'),
    t_out          DateTime64(3, 'UTC'),
    source         LowCardinality(String),
    recorded_at    DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(recorded_at)
PARTITION BY toYYYYMM(t_in)
ORDER BY (checkpoint_id, t_in, scan_id)
