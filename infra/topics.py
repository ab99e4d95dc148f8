"""Logical topic names (STYLE.md §13); the real name adds Settings.topic_prefix."""

SCANS = "scans"
F0_REPORTS = "f0-reports"
EXPOSURES = "exposures"
DEAD_LETTERS = "dead-letters"
HEALTH_RECORDS = "health-records"
REPORT_STATUS = "report-status"
# Rows for ClickHouse from the workers to the store's owner (infra/sink.py).
STORE_ROWS = "store-rows"

ALL = (SCANS, F0_REPORTS, EXPOSURES, DEAD_LETTERS, HEALTH_RECORDS, REPORT_STATUS, STORE_ROWS)
