-- The access issue: a checkpoint registered by a business or organisation (role owner)
-- names it, so the owner sees its checkpoints' counts and alerts, and a rebuild keeps it.
ALTER TABLE {db}.checkpoints ADD COLUMN IF NOT EXISTS owner String DEFAULT '' AFTER capacity
