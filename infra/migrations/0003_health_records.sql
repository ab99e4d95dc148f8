-- Every applied health record (vaccination, test, F0, recovery, declaration), keyed by the
-- person's pseudonym: the history from which Redis's statuses are rebuilt. No ID number,
-- no name, no birth date (the record's identity fields are dropped before it lands here).
CREATE TABLE IF NOT EXISTS {db}.health_records
(
    person_key   String,
    record_id    String,   -- keyed hash of the natural key (never the plain one)
    kind         LowCardinality(String),
    record       String,
    supersedes   UInt8,
    import_id    String,
    applied_at   DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(applied_at)
ORDER BY (person_key, record_id)
