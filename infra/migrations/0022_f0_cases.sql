-- F0 cases as the tracer last left their report (done, held or withdrawn), pseudonymous:
-- the person by keyed hash, with the district and ward they lived in when reported (the
-- epidemic levels count new cases per ward). Written by the ``store_cases`` agent from
-- ``report-status``; the reports already traced are copied from the tracer's state when
-- the agent starts (they live in Redis, not here). One row per report survives: the
-- highest version (the offset of the f0-reports record the state reflects).
CREATE TABLE IF NOT EXISTS {db}.f0_cases
(
    report_id    String,
    person_key   String,
    district     LowCardinality(String),
    ward         LowCardinality(String),
    sample_time  DateTime64(3, 'UTC'),
    reported_at  DateTime64(3, 'UTC'),
    status       LowCardinality(String),
    version      UInt64,
    recorded_at  DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(version)
ORDER BY report_id
