"""Import reports: every input row ends in one outcome with its reason; the report counts
outcomes, groups reasons and keeps a few samples of each. One assembly for every kind
(residents included), so all imports read the same way."""

from __future__ import annotations

import re
import uuid
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime

import orjson

from registry.errors import quote

SAMPLES = 5


class ImportFailed(ValueError):
    """The import as a whole cannot run (unknown kind, missing columns, unreadable file)."""


def columns_text(header: list[str], limit: int = 20) -> str:
    """A file's columns as shown in an error: at most ``limit``, each cut short."""
    shown = ", ".join(quote(h, 40) for h in header[:limit]) or "none"
    return shown + (f" … ({len(header)} columns)" if len(header) > limit else "")


def new_import_id(now: datetime) -> str:
    return f"imp-{now:%Y%m%d%H%M%S}-{uuid.uuid4().hex[:6]}"


def reason_key(reason: str) -> str:
    """Group reasons without their per-row details (numbers and quoted values)."""
    return re.sub(r"'[^']*'|\d+", "…", reason)


@dataclass
class ImportReport:
    import_id: str
    kind: str
    source: str
    started_at: str
    finished_at: str = ""
    rows: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)
    reasons: dict[str, dict[str, int]] = field(default_factory=dict)
    samples: dict[str, list[dict[str, object]]] = field(default_factory=dict)
    ignored_columns: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def match_rate(self) -> float:
        considered = self.rows - self.outcomes.get("duplicate", 0)
        return self.outcomes.get("matched", 0) / considered if considered else 0.0

    def as_dict(self) -> dict[str, object]:
        return {**asdict(self), "match_rate": round(self.match_rate, 4)}


class ReportBuilder:
    """Collects the outcome of each row (as the JSON line written to the records file) and
    assembles the report at the end."""

    def __init__(
        self,
        kind: str,
        source: str,
        outcomes: tuple[str, ...],
        ignored_columns: list[str],
        now: datetime,
    ) -> None:
        self.now = now
        # A hostile header must not bloat every report: a few names, each cut short.
        ignored = [h[:64] for h in ignored_columns[:50]]
        self.report = ImportReport(
            new_import_id(now), kind, source[:200], now.isoformat(), ignored_columns=ignored
        )
        self._outcomes = outcomes
        self._counts: Counter[str] = Counter()
        self._reasons: dict[str, Counter[str]] = defaultdict(Counter)
        self._samples: dict[str, list[dict[str, object]]] = defaultdict(list)

    @property
    def import_id(self) -> str:
        return self.report.import_id

    def add(self, row: int, outcome: str, reason: str, person_id: str | None) -> bytes:
        """Count one row's outcome; returns its line for the records file."""
        line: dict[str, object] = {
            "row": row,
            "outcome": outcome,
            "reason": reason,
            "person_id": person_id,
        }
        self._counts[outcome] += 1
        self._reasons[outcome][reason_key(reason)] += 1
        if len(self._samples[outcome]) < SAMPLES:
            self._samples[outcome].append(line)
        return orjson.dumps(line)

    def finish(self, seconds: float) -> ImportReport:
        r = self.report
        r.rows = sum(self._counts.values())
        r.outcomes = {o: self._counts.get(o, 0) for o in self._outcomes}
        r.reasons = {o: dict(c.most_common(20)) for o, c in self._reasons.items()}
        r.samples = dict(self._samples)
        r.finished_at = datetime.now(UTC).isoformat()
        r.seconds = round(seconds, 2)
        return r
