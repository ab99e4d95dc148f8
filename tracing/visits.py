"""Visits: a person at one checkpoint over ``[t_in, t_out]``."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from tracing.events import ScanRecorded

# Without a check-out a visit lasts the checkpoint's dwell (DESIGN.md: default 30 min).
DEFAULT_DWELL = timedelta(minutes=30)


@dataclass(frozen=True, slots=True)
class Visit:
    scan_id: str
    person_key: str
    checkpoint_id: str
    t_in: datetime
    t_out: datetime
    source: str


def visit_from_scan(scan: ScanRecorded, person_key: str, dwell: timedelta = DEFAULT_DWELL) -> Visit:
    """The visit a scan stands for; ``t_out`` defaults to ``t_in + dwell``."""
    t_out = scan.t_out or scan.ts + dwell
    return Visit(scan.scan_id, person_key, scan.checkpoint_id, scan.ts, t_out, scan.source)
