"""An F0 report's tracing state, and how exposures and visits are written down (pure):
what the tracer keeps per report and the API shows."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Literal

import orjson

from tracing.events import F0Reported
from tracing.exposure import Exposure, Interval
from tracing.visits import Visit

Status = Literal["tracing", "done", "held", "withdrawn"]
# Reports, their intervals and the fields they set on residents are kept this long after
# the newest report (event time): far past any quarantine or monitoring they caused.
REPORT_RETENTION = timedelta(days=60)


@dataclass
class ReportState:
    report_id: str
    person_id: str
    person_key: str
    body: dict[str, object]  # the F0Reported as last posted (JSON-ready)
    status: Status = "tracing"
    window_start: str | None = None
    window_end: str | None = None
    counts: dict[str, int] = field(default_factory=lambda: {"F1": 0, "F2": 0})
    rule_version: str = ""
    preview: dict[str, dict[str, int]] | None = None
    approved: bool = False
    partition: int | None = None  # where the last applied f0-reports record was
    offset: int | None = None
    updated_at: str = ""
    seq: int = 0  # the API submission (POST/PUT) this state reflects

    def report(self) -> F0Reported:
        return F0Reported.model_validate(self.body)

    def to_json(self) -> str:
        return orjson.dumps(asdict(self)).decode()

    @classmethod
    def from_json(cls, text: str | bytes) -> ReportState:
        return cls(**orjson.loads(text))

    def done_with(self, partition: int | None, offset: int | None) -> bool:
        """Was this f0-reports record applied already (a replay after a crash)?"""
        return (
            offset is not None
            and self.offset is not None
            and partition == self.partition
            and offset <= self.offset
        )

    def public(self) -> dict[str, object]:
        """The route's view (``GET /v1/reports/f0/{id}``)."""
        out: dict[str, object] = {
            "report_id": self.report_id,
            "person_id": self.person_id,
            "status": self.status,
            "window": {"start": self.window_start, "end": self.window_end},
            "counts": dict(self.counts),
            "rule_version": self.rule_version,
            "updated_at": self.updated_at,
        }
        if self.preview is not None:
            out["preview"] = self.preview
        return out


def stamp() -> str:
    return datetime.now(UTC).isoformat()


def counts(exposures: Iterable[Exposure]) -> dict[str, int]:
    tiers = Counter(e.tier for e in exposures)
    return {"F1": tiers.get("F1", 0), "F2": tiers.get("F2", 0)}


def preview(exposures: Iterable[Exposure], district: dict[str, str]) -> dict[str, dict[str, int]]:
    """A held report's preview: people by tier and by district (no one named)."""
    by: dict[str, Counter[str]] = {"F1": Counter(), "F2": Counter()}
    for e in exposures:
        by[e.tier][district.get(e.person_key) or "unknown"] += 1
    return {tier: dict(sorted(c.items())) for tier, c in by.items()}


EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
SECOND = timedelta(seconds=1)


def _t(value: datetime) -> float:
    return (value - EPOCH) / SECOND


def _dt(value: float) -> datetime:
    return datetime.fromtimestamp(value, UTC)


def dump_exposures(exposures: Sequence[Exposure]) -> bytes:
    return orjson.dumps(
        [
            [
                e.report_id,
                e.person_key,
                e.tier,
                e.via,
                e.reason,
                e.checkpoint_id,
                _t(e.overlap_start),
                _t(e.overlap_end),
            ]
            for e in exposures
        ]
    )


def load_exposures(raw: str | bytes | None) -> list[Exposure]:
    if not raw:
        return []
    return [
        Exposure(r, p, tier, via, reason, cp, _dt(s), _dt(e))
        for r, p, tier, via, reason, cp, s, e in orjson.loads(raw)
    ]


def dump_visits(visits: Sequence[Visit]) -> bytes:
    return orjson.dumps(
        [[v.scan_id, v.person_key, v.checkpoint_id, _t(v.t_in), _t(v.t_out)] for v in visits]
    )


def load_visits(raw: str | bytes | None) -> list[Visit]:
    if not raw:
        return []
    return [Visit(s, p, c, _dt(a), _dt(b), "") for s, p, c, a, b in orjson.loads(raw)]


def interval_member(i: Interval) -> str:
    return orjson.dumps(
        [
            i.report_id,
            i.person_key,
            i.tier,
            i.checkpoint_id,
            _t(i.t_in),
            _t(i.t_out),
            _t(i.window_start),
            _t(i.window_end),
        ]
    ).decode()


def interval_from(member: str | bytes) -> Interval:
    r, p, tier, cp, a, b, ws, we = orjson.loads(member)
    return Interval(r, p, tier, cp, _dt(a), _dt(b), _dt(ws), _dt(we))


def status_entry(e: Exposure) -> str:
    """A person's field for one report (``x:<report_id>``): the tier, and the date it
    counts from (the last contact: quarantine runs from there), with the evidence."""
    return orjson.dumps(
        {
            "tier": e.tier,
            "since": e.overlap_end.isoformat(),
            "report_id": e.report_id,
            "via": e.via,
            "reason": e.reason,
            "checkpoint_id": e.checkpoint_id,
            "overlap_start": e.overlap_start.isoformat(),
            "overlap_end": e.overlap_end.isoformat(),
        }
    ).decode()


def late_record(report_id: str, v: Visit) -> bytes:
    """The ``f0-reports`` record that sends a late visit to its report."""
    visit = {
        "scan_id": v.scan_id,
        "person_key": v.person_key,
        "checkpoint_id": v.checkpoint_id,
        "t_in": v.t_in.isoformat(),
        "t_out": v.t_out.isoformat(),
    }
    return orjson.dumps({"action": "late", "report_id": report_id, "visit": visit})
