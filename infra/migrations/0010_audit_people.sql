-- The access issue: an audit record names the caller's role, the route, and every person
-- it showed (by pseudonym) with their count.
ALTER TABLE {db}.audit_log ADD COLUMN IF NOT EXISTS role LowCardinality(String) DEFAULT '';
ALTER TABLE {db}.audit_log ADD COLUMN IF NOT EXISTS route String DEFAULT '';
ALTER TABLE {db}.audit_log ADD COLUMN IF NOT EXISTS people Array(String) DEFAULT [];
ALTER TABLE {db}.audit_log ADD COLUMN IF NOT EXISTS people_count UInt32 DEFAULT 0
