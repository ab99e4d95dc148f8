"""Logical topic names (STYLE.md §13); the real name adds Settings.topic_prefix."""

SCANS = "scans"
F0_REPORTS = "f0-reports"
EXPOSURES = "exposures"
DEAD_LETTERS = "dead-letters"

ALL = (SCANS, F0_REPORTS, EXPOSURES, DEAD_LETTERS)
