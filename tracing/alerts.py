"""Alerts, pure: what the people who act are told when tracing flags someone, and how an
alert moves as they follow it up.

- An **exposure alert** goes to the health officials of the exposed person's district: one
  per (report, person), the flag's ID (``exposure_id``). A correction updates it, a
  withdrawal retracts it. It stays pseudonymous here; the API names the person to an
  official of that district only.
- A **venue alert** goes to the organisation that owns a checkpoint an F0 visited inside
  the infectious window: the checkpoint, the time slot (coarsened, so a slot cannot point
  at one visitor on the owner's own camera) and how many visitors were flagged there,
  never who (issue 9, item 5).

An alert is ``open`` until an official acknowledges it or records a follow-up
(``acknowledged``), and ``closed`` once a test result is recorded; ``withdrawn`` when the
flag behind it was withdrawn.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

import orjson

from tracing.events import ExposureFlagged
from tracing.exposure import Exposure
from tracing.visits import Visit

AlertKind = Literal["exposure", "venue"]
Status = Literal["open", "acknowledged", "closed", "withdrawn"]
STATUSES: tuple[Status, ...] = ("open", "acknowledged", "closed", "withdrawn")
Action = Literal["contacted", "quarantined", "tested", "result"]
Result = Literal["positive", "negative"]
# What a stream entry says happened to its alert.
Change = Literal["flagged", "updated", "withdrawn", "acknowledged", "followup"]

# An owner sees when an F0 was on the premises to the half hour, not to the minute.
VENUE_SLOT = timedelta(minutes=30)


class AlertError(Exception):
    """An alert cannot take this step (the message says why)."""


class AlertWithdrawn(AlertError):
    pass


def district_scope(district: str) -> str:
    """The audience of a district's health officials."""
    return f"d:{district}"


def organisation_scope(organisation: str) -> str:
    """The audience of an organisation (a checkpoint's owner)."""
    return f"o:{organisation}"


@dataclass(frozen=True, slots=True)
class AlertDraft:
    """One change to one alert, as the alert agent writes it (idempotent by
    ``fingerprint``: the same decision applied twice changes nothing)."""

    alert_id: str
    kind: AlertKind
    scope: str  # empty for a withdrawal: the audience the alert lives in
    withdrawn: bool
    version: int
    fingerprint: str
    at: datetime  # event time (the report's reported_at): orders and trims the indexes
    body: Mapping[str, object]  # JSON-ready, pseudonymous; empty for a bare withdrawal


def _digest(*parts: object) -> str:
    return hashlib.blake2b(orjson.dumps(parts), digest_size=12).hexdigest()


def _iso(ts: datetime) -> str:
    return ts.astimezone(UTC).isoformat()


def exposure_alert(e: ExposureFlagged) -> AlertDraft | None:
    """The alert of one flag (or of its withdrawal), for the person's district; None when
    a flag's district is unknown (no official could act on it). A withdrawal goes wherever
    the alert lives (the tracer does not look the district up again; ``scope`` is empty)
    and leaves the alert's evidence as it was."""
    if not e.district and not e.withdrawn:
        return None
    body: dict[str, object] = {
        "report_id": e.report_id,
        "person_key": e.person_key,
        "tier": e.tier,
        "reason": e.reason,
        "checkpoint_id": e.checkpoint_id,
        "overlap_start": _iso(e.overlap_start),
        "overlap_end": _iso(e.overlap_end),
        "overlap_minutes": e.overlap_minutes,
        "rule_version": e.rule_version,
        "flagged_at": _iso(e.flagged_at),
        "district": e.district,
    }
    return AlertDraft(
        alert_id=e.exposure_id,
        kind="exposure",
        scope=district_scope(e.district) if e.district else "",
        withdrawn=e.withdrawn,
        version=e.version,
        # The decision itself (which record, flag or withdrawal, and what it says): a
        # replayed record has the same one, a correction a new one.
        fingerprint=_digest(e.exposure_id, e.version, e.withdrawn, e.via_key, body),
        at=e.flagged_at,
        body={} if e.withdrawn else body,
    )


def _floor(ts: datetime, step: timedelta) -> datetime:
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    return epoch + ((ts - epoch) // step) * step


def _ceil(ts: datetime, step: timedelta) -> datetime:
    down = _floor(ts, step)
    return down if down == ts else down + step


def venue_alert_id(report_id: str, checkpoint_id: str, organisation: str) -> str:
    """Stable per (report, checkpoint, owner): a re-trace updates the same alert, a
    change of owner raises a new one (and withdraws the old)."""
    return _digest("venue", report_id, checkpoint_id, organisation)


def venue_alerts(
    report_id: str,
    f0_key: str,
    f0_visits: Sequence[Visit],
    exposures: Iterable[Exposure],
    places: Mapping[str, Mapping[str, str]],
    window: tuple[datetime, datetime],
    flagged_at: datetime,
    slot: timedelta = VENUE_SLOT,
) -> list[AlertDraft]:
    """One alert per owned checkpoint the F0 visited inside ``window``: the merged time
    slots (rounded out to ``slot``) and how many distinct visitors were flagged F1 there
    by being with the F0 — counts only, never who."""
    start, end = window
    spans: dict[str, list[tuple[datetime, datetime]]] = {}
    for v in f0_visits:
        if v.person_key != f0_key or not places.get(v.checkpoint_id, {}).get("owner"):
            continue
        lo, hi = max(v.t_in, start), min(v.t_out, end)
        if hi > lo:
            spans.setdefault(v.checkpoint_id, []).append((_floor(lo, slot), _ceil(hi, slot)))
    met: dict[str, list[Exposure]] = {}
    for e in exposures:
        if e.tier == "F1" and e.reason == "co-location" and e.via == f0_key and e.checkpoint_id:
            met.setdefault(e.checkpoint_id, []).append(e)
    drafts = []
    for checkpoint_id in sorted(spans):
        merged: list[tuple[datetime, datetime]] = []
        for lo, hi in sorted(spans[checkpoint_id]):
            if merged and lo <= merged[-1][1]:
                merged[-1] = (merged[-1][0], max(hi, merged[-1][1]))
            else:
                merged.append((lo, hi))
        here = met.get(checkpoint_id, [])
        slots = [
            {
                "start": _iso(lo),
                "end": _iso(hi),
                "visitors_flagged": len(
                    {e.person_key for e in here if e.overlap_start < hi and e.overlap_end > lo}
                ),
            }
            for lo, hi in merged
        ]
        meta = places[checkpoint_id]
        organisation = meta["owner"]
        body: dict[str, object] = {
            "checkpoint_id": checkpoint_id,
            "checkpoint_name": meta.get("name", ""),
            "organisation": organisation,
            "slots": slots,
            "visitors_flagged": len({e.person_key for e in here}),
            "flagged_at": _iso(flagged_at),
        }
        alert_id = venue_alert_id(report_id, checkpoint_id, organisation)
        drafts.append(
            AlertDraft(
                alert_id=alert_id,
                kind="venue",
                scope=organisation_scope(organisation),
                withdrawn=False,
                version=0,
                fingerprint=_digest(alert_id, body),
                at=flagged_at,
                body=body,
            )
        )
    return drafts


def withdrawal(alert_id: str, kind: AlertKind, scope: str, at: datetime) -> AlertDraft:
    """Retract an alert whose cause is gone (a withdrawn report, a venue no longer in it)."""
    return AlertDraft(alert_id, kind, scope, True, 0, _digest(alert_id, "withdrawn"), at, {})


def next_status(status: str, step: Literal["ack"] | Action) -> Status:
    """Where an alert goes when an official acknowledges it or records a follow-up:
    any step acknowledges an open alert; a test result closes it. A withdrawn alert
    takes no step (its person was not exposed after all)."""
    if status == "withdrawn":
        raise AlertWithdrawn("the alert was withdrawn (its exposure no longer stands)")
    if status not in STATUSES:
        raise AlertError(f"unknown alert status {status!r}")
    if step == "result":
        return "closed"
    if status == "open":
        return "acknowledged"
    return status  # type: ignore[return-value]  # checked against STATUSES above
