-- The pseudonymous side of the registry: no raw ID number, no name.
CREATE TABLE IF NOT EXISTS {db}.residents
(
    person_key     String,
    household_key  String,
    district       LowCardinality(String),
    ward           LowCardinality(String),
    gender         LowCardinality(String),
    birth_year     UInt16,
    has_address    UInt8,
    doses          UInt8,
    colour         LowCardinality(String),
    rule_version   LowCardinality(String),
    source         LowCardinality(String),
    updated_at     DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(updated_at)
ORDER BY person_key;

CREATE TABLE IF NOT EXISTS {db}.checkpoints
(
    checkpoint_id  String,
    name           String,
    type           LowCardinality(String),
    district       LowCardinality(String),
    ward           LowCardinality(String),
    capacity       UInt32,
    updated_at     DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(updated_at)
ORDER BY checkpoint_id
