"""Exposure tracing, pure: from an F0 report and the visits around it to F1 and F2, each
with its evidence. No I/O: the caller hands in the visits (from the Redis indexes for the
hot window, ClickHouse beyond it) through :class:`VisitLookup`.

Rules (DESIGN.md "Exposure", Ministry of Health definitions; every number configurable):
- the F0's infectious window starts ``pre_onset`` (2 days) before symptom onset, or before
  the positive sample when asymptomatic, never more than ``lookback`` (14 days) before the
  report, and ends at the report (isolation);
- F1: a visit overlapping one of the F0's visits inside that window by ≥ ``min_overlap``
  (15 min) at the same checkpoint; and every member of the F0's household;
- F2: a visit overlapping one of an F1's visits by ≥ ``min_overlap``, inside the F1's own
  window: from the start of the F1's exposure to the report's ``reported_at`` (event time,
  so a replay gives the same answer); a person who is F1 by one visit and F2 by another
  is F1.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal, Protocol

from tracing.visits import Visit

Tier = Literal["F1", "F2"]


@dataclass(frozen=True, slots=True)
class ExposureRules:
    version: str = "moh-2021"
    pre_onset: timedelta = timedelta(days=2)
    lookback: timedelta = timedelta(days=14)
    min_overlap: timedelta = timedelta(minutes=15)


@dataclass(frozen=True, slots=True)
class Case:
    """An F0 as tracing sees it: a pseudonymous person and the report's times."""

    report_id: str
    person_key: str
    sample_time: datetime
    reported_at: datetime
    symptomatic: bool = False
    onset: datetime | None = None


@dataclass(frozen=True, slots=True)
class Window:
    start: datetime
    end: datetime


@dataclass(frozen=True, slots=True)
class Exposure:
    """One flagged person and why: which report, through whom, where and when."""

    report_id: str
    person_key: str
    tier: Tier
    via: str  # the F0's or F1's person key
    reason: Literal["co-location", "household"]
    checkpoint_id: str | None
    overlap_start: datetime
    overlap_end: datetime

    @property
    def overlap_minutes(self) -> float:
        return (self.overlap_end - self.overlap_start).total_seconds() / 60


class VisitLookup(Protocol):
    def of_person(self, person_key: str, window: Window) -> Sequence[Visit]: ...
    def at_checkpoint(self, checkpoint_id: str, window: Window) -> Sequence[Visit]: ...


@dataclass
class MemoryVisits:
    """A :class:`VisitLookup` over visits in memory (the agent fills one from Redis)."""

    by_person: dict[str, list[Visit]] = field(default_factory=dict)
    by_checkpoint: dict[str, list[Visit]] = field(default_factory=dict)

    @classmethod
    def of(cls, visits: Iterable[Visit]) -> MemoryVisits:
        lookup = cls()
        for v in visits:
            lookup.by_person.setdefault(v.person_key, []).append(v)
            lookup.by_checkpoint.setdefault(v.checkpoint_id, []).append(v)
        return lookup

    def of_person(self, person_key: str, window: Window) -> Sequence[Visit]:
        return [v for v in self.by_person.get(person_key, ()) if _meets(v, window)]

    def at_checkpoint(self, checkpoint_id: str, window: Window) -> Sequence[Visit]:
        return [v for v in self.by_checkpoint.get(checkpoint_id, ()) if _meets(v, window)]


def _meets(v: Visit, w: Window) -> bool:
    return v.t_in < w.end and v.t_out > w.start


def infectious_window(case: Case, rules: ExposureRules) -> Window:
    """From onset (symptomatic) or sample (not) minus ``pre_onset``, clipped to the
    look-back before the report, to the report."""
    anchor = case.onset if case.symptomatic and case.onset is not None else case.sample_time
    start = max(anchor - rules.pre_onset, case.reported_at - rules.lookback)
    return Window(min(start, case.reported_at), case.reported_at)


def _overlap(a: Visit, b: Visit, w: Window) -> tuple[datetime, datetime] | None:
    start = max(a.t_in, b.t_in, w.start)
    end = min(a.t_out, b.t_out, w.end)
    return (start, end) if end > start else None


def _contacts(
    source: str,
    source_visits: Sequence[Visit],
    window: Window,
    visits: VisitLookup,
    rules: ExposureRules,
    exclude: set[str],
) -> dict[str, tuple[datetime, datetime, str]]:
    """Everyone co-located with ``source`` inside ``window`` for ≥ min_overlap: their
    earliest qualifying overlap (start, end, checkpoint)."""
    found: dict[str, tuple[datetime, datetime, str]] = {}
    for v in source_visits:
        clipped = Window(max(v.t_in, window.start), min(v.t_out, window.end))
        if clipped.end <= clipped.start:
            continue
        for c in visits.at_checkpoint(v.checkpoint_id, clipped):
            if c.person_key == source or c.person_key in exclude:
                continue
            span = _overlap(v, c, window)
            if span is None or span[1] - span[0] < rules.min_overlap:
                continue
            best = found.get(c.person_key)
            candidate = (span[0], span[1], v.checkpoint_id)
            if best is None or candidate < best:
                found[c.person_key] = candidate
    return found


def trace(
    case: Case,
    visits: VisitLookup,
    household: Iterable[str],
    rules: ExposureRules,
) -> list[Exposure]:
    """Every F1 and F2 of one report, with evidence, in a deterministic order."""
    window = infectious_window(case, rules)
    f0_visits = visits.of_person(case.person_key, window)
    f1: dict[str, Exposure] = {}
    for person, (start, end, cp) in _contacts(
        case.person_key, f0_visits, window, visits, rules, set()
    ).items():
        f1[person] = Exposure(
            case.report_id, person, "F1", case.person_key, "co-location", cp, start, end
        )
    for member in sorted(set(household) - {case.person_key}):
        # A household contact is exposed for the whole window (and it is the stronger
        # evidence: it replaces a co-location found above).
        f1[member] = Exposure(
            case.report_id,
            member,
            "F1",
            case.person_key,
            "household",
            None,
            window.start,
            window.end,
        )
    f2: dict[str, Exposure] = {}
    not_f2 = {case.person_key, *f1}
    for person, exposure in sorted(f1.items()):
        own = Window(exposure.overlap_start, case.reported_at)
        if own.end <= own.start:
            continue
        their_visits = visits.of_person(person, own)
        for contact, (start, end, cp) in _contacts(
            person, their_visits, own, visits, rules, not_f2
        ).items():
            candidate = Exposure(
                case.report_id, contact, "F2", person, "co-location", cp, start, end
            )
            best = f2.get(contact)
            if best is None or (start, person) < (best.overlap_start, best.via):
                f2[contact] = candidate
    return sorted([*f1.values(), *f2.values()], key=lambda e: (e.tier, e.person_key))
