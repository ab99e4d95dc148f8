-- The full audit log (who, what, when, why) of reads and changes of personal and registry
-- data. Redis keeps a capped stream for the live path, and every entry lands here, keyed by
-- its stream ID (a re-drained entry collapses). People appear only by pseudonym.
CREATE TABLE IF NOT EXISTS {db}.audit_log
(
    entry_id    String,
    at          DateTime64(3, 'UTC'),
    actor       String,
    action      LowCardinality(String),
    person_key  String,
    subject     String,
    why         String
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(at)
ORDER BY (at, entry_id)
