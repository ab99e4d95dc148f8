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

import hashlib
from bisect import bisect_left
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal, Protocol

from tracing.visits import Visit

Tier = Literal["F1", "F2"]


@dataclass(frozen=True, slots=True)
class ExposureRules:
    """One version of the exposure rules (``tracing/data/exposure_rules.yaml``)."""

    version: str = "moh-2021"
    pre_onset: timedelta = timedelta(days=2)
    lookback: timedelta = timedelta(days=14)
    min_overlap: timedelta = timedelta(minutes=15)
    # A visit without check-out lasts its checkpoint type's dwell (DESIGN.md: 30 min).
    default_dwell: timedelta = timedelta(minutes=30)
    dwell_by_type: Mapping[str, timedelta] = field(default_factory=dict)
    # The brake: a report that would flag more people than this waits for an official.
    hold_above: int = 500

    def dwell(self, checkpoint_type: str | None) -> timedelta:
        return self.dwell_by_type.get(checkpoint_type or "", self.default_dwell)


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

    @property
    def exposure_id(self) -> str:
        """Stable per (report, person): a correction re-flags the same exposure."""
        return exposure_id(self.report_id, self.person_key)

    def evidence(self) -> tuple[datetime, str, datetime, str]:
        """The order in which evidence is preferred: earliest overlap first, then the
        source, the end and the checkpoint, so the choice never depends on arrival."""
        return (self.overlap_start, self.via, self.overlap_end, self.checkpoint_id or "")


def exposure_id(report_id: str, person_key: str) -> str:
    return hashlib.blake2b(f"{report_id}|{person_key}".encode(), digest_size=12).hexdigest()


class VisitLookup(Protocol):
    def of_person(self, person_key: str, window: Window) -> Sequence[Visit]: ...
    def at_checkpoint(self, checkpoint_id: str, window: Window) -> Sequence[Visit]: ...


@dataclass
class MemoryVisits:
    """A :class:`VisitLookup` over visits in memory (the agent fills one from Redis).

    Each person's and each checkpoint's visits are kept sorted by check-in, with the
    longest stay among them, so a lookup bisects to the visits that can overlap."""

    by_person: dict[str, list[Visit]] = field(default_factory=dict)
    by_checkpoint: dict[str, list[Visit]] = field(default_factory=dict)
    _starts: dict[tuple[bool, str], list[datetime]] = field(default_factory=dict)
    _longest: dict[tuple[bool, str], timedelta] = field(default_factory=dict)

    @classmethod
    def of(cls, visits: Iterable[Visit]) -> MemoryVisits:
        lookup = cls()
        for v in visits:
            lookup.by_person.setdefault(v.person_key, []).append(v)
            lookup.by_checkpoint.setdefault(v.checkpoint_id, []).append(v)
        for person, group in ((True, lookup.by_person), (False, lookup.by_checkpoint)):
            for name, items in group.items():
                items.sort(key=lambda v: v.t_in)
                lookup._starts[(person, name)] = [v.t_in for v in items]
                lookup._longest[(person, name)] = max(v.t_out - v.t_in for v in items)
        return lookup

    def _find(self, person: bool, name: str, window: Window) -> list[Visit]:
        items = (self.by_person if person else self.by_checkpoint).get(name)
        if not items:
            return []
        starts = self._starts[(person, name)]
        lo = bisect_left(starts, window.start - self._longest[(person, name)])
        hi = bisect_left(starts, window.end)
        return [v for v in items[lo:hi] if v.t_out > window.start]

    def of_person(self, person_key: str, window: Window) -> Sequence[Visit]:
        return self._find(True, person_key, window)

    def at_checkpoint(self, checkpoint_id: str, window: Window) -> Sequence[Visit]:
        return self._find(False, checkpoint_id, window)


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


@dataclass(frozen=True, slots=True)
class Contact:
    """One qualifying co-location: who, where, and the overlap."""

    person_key: str
    checkpoint_id: str
    overlap_start: datetime
    overlap_end: datetime

    @property
    def overlap_minutes(self) -> float:
        return (self.overlap_end - self.overlap_start).total_seconds() / 60


def co_locations(
    source: str,
    source_visits: Sequence[Visit],
    window: Window,
    visits: VisitLookup,
    rules: ExposureRules,
) -> list[Contact]:
    """Every overlap of ≥ min_overlap between ``source``'s visits and anyone else's at the
    same checkpoint, inside ``window`` (the evidence behind F1, F2 and a contact list),
    in no particular order."""
    found = []
    for v in source_visits:
        clipped = Window(max(v.t_in, window.start), min(v.t_out, window.end))
        if clipped.end <= clipped.start:
            continue
        for c in visits.at_checkpoint(v.checkpoint_id, clipped):
            if c.person_key == source:
                continue
            span = _overlap(v, c, window)
            if span is not None and span[1] - span[0] >= rules.min_overlap:
                found.append(Contact(c.person_key, v.checkpoint_id, span[0], span[1]))
    return found


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
    for c in co_locations(source, source_visits, window, visits, rules):
        if c.person_key in exclude:
            continue
        candidate = (c.overlap_start, c.overlap_end, c.checkpoint_id)
        best = found.get(c.person_key)
        if best is None or candidate < best:
            found[c.person_key] = candidate
    return found


def _f1_window(case: Case, exposure: Exposure) -> Window:
    """An F1's own window: from the start of their exposure to the report (event time)."""
    return Window(exposure.overlap_start, case.reported_at)


def _f2_through(
    case: Case, f1: Exposure, visits: VisitLookup, rules: ExposureRules, exclude: set[str]
) -> list[Exposure]:
    own = _f1_window(case, f1)
    if own.end <= own.start:
        return []
    person = f1.person_key
    return [
        Exposure(case.report_id, contact, "F2", person, "co-location", cp, start, end)
        for contact, (start, end, cp) in _contacts(
            person, visits.of_person(person, own), own, visits, rules, exclude
        ).items()
    ]


def _keep_best(into: dict[str, Exposure], exposures: Iterable[Exposure]) -> None:
    for e in exposures:
        best = into.get(e.person_key)
        if best is None or e.evidence() < best.evidence():
            into[e.person_key] = e


def _ordered(f1: dict[str, Exposure], f2: dict[str, Exposure]) -> list[Exposure]:
    return sorted([*f1.values(), *f2.values()], key=lambda e: (e.tier, e.person_key))


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
    for _, exposure in sorted(f1.items()):
        _keep_best(f2, _f2_through(case, exposure, visits, rules, not_f2))
    return _ordered(f1, f2)


def extend(
    case: Case,
    current: Sequence[Exposure],
    visit: Visit,
    visits: VisitLookup,
    rules: ExposureRules,
) -> list[Exposure] | None:
    """The exposures of a traced report after one late visit arrived (``visits`` holds it
    with whatever else the store has around it): the incremental step of the join, equal
    to :func:`trace` over all visits. ``None`` when the visit is the F0's own: that moves
    the source of every F1, and the caller traces the report again.

    The late visit's person ``x`` can become F1 (it overlaps the F0 at the same place), or
    get earlier F1 evidence, which widens their own window; then x's F2s are recomputed.
    Otherwise x can become F2 through an F1 who was there.
    """
    if visit.person_key == case.person_key:
        return None
    window = infectious_window(case, rules)
    f1 = {e.person_key: e for e in current if e.tier == "F1"}
    f2 = {e.person_key: e for e in current if e.tier == "F2"}
    x = visit.person_key
    around = [c for c in visits.at_checkpoint(visit.checkpoint_id, Window(visit.t_in, visit.t_out))]
    for f0_visit in (c for c in around if c.person_key == case.person_key):
        span = _overlap(f0_visit, visit, window)
        if span is None or span[1] - span[0] < rules.min_overlap:
            continue
        candidate = Exposure(
            case.report_id, x, "F1", case.person_key, "co-location", visit.checkpoint_id, *span
        )
        best = f1.get(x)
        if best is None or (
            best.reason == "co-location" and candidate.evidence() < best.evidence()
        ):
            f1[x] = candidate
    if x in f1:
        f2.pop(x, None)
        # x's F2s over x's (possibly wider) window; the others' F2 evidence stands.
        _keep_best(f2, _f2_through(case, f1[x], visits, rules, {case.person_key, *f1}))
        return _ordered(f1, f2)
    for other in (c for c in around if c.person_key in f1):
        own = _f1_window(case, f1[other.person_key])
        span = _overlap(other, visit, own)
        if span is not None and span[1] - span[0] >= rules.min_overlap:
            _keep_best(
                f2,
                [
                    Exposure(
                        case.report_id,
                        x,
                        "F2",
                        other.person_key,
                        "co-location",
                        visit.checkpoint_id,
                        *span,
                    )
                ],
            )
    return _ordered(f1, f2)


@dataclass(frozen=True, slots=True)
class Interval:
    """Time an infectious person (the F0, or an F1 inside their own window) spent at a
    checkpoint: what the scan stream is joined against, so a late scan finds its report."""

    report_id: str
    person_key: str
    tier: Literal["F0", "F1"]
    checkpoint_id: str
    t_in: datetime
    t_out: datetime
    window_start: datetime
    window_end: datetime

    def touches(self, visit: Visit, rules: ExposureRules) -> bool:
        """Could this visit be an exposure (or, for the person themselves, a new source)?"""
        if visit.checkpoint_id != self.checkpoint_id:
            return False
        if visit.person_key == self.person_key:
            return spends(visit, self.window_start, self.window_end, rules)
        span = _overlap(
            Visit("", self.person_key, self.checkpoint_id, self.t_in, self.t_out, ""),
            visit,
            Window(self.window_start, self.window_end),
        )
        return span is not None and span[1] - span[0] >= rules.min_overlap


def spends(visit: Visit, start: datetime, end: datetime, rules: ExposureRules) -> bool:
    """Does an infectious person's own visit last ≥ min_overlap inside their window (so
    that it could expose someone)? Scans after isolation, or passing through, cannot."""
    return min(visit.t_out, end) - max(visit.t_in, start) >= rules.min_overlap


def intervals_of(
    case: Case, exposures: Sequence[Exposure], visits: VisitLookup, rules: ExposureRules
) -> list[Interval]:
    """The F0's visits inside the infectious window and each F1's inside their own."""
    window = infectious_window(case, rules)
    out = [
        Interval(
            case.report_id, case.person_key, "F0", v.checkpoint_id, v.t_in, v.t_out, *_w(window)
        )
        for v in visits.of_person(case.person_key, window)
    ]
    for e in exposures:
        if e.tier != "F1":
            continue
        own = _f1_window(case, e)
        if own.end <= own.start:
            continue
        out.extend(
            Interval(case.report_id, e.person_key, "F1", v.checkpoint_id, v.t_in, v.t_out, *_w(own))
            for v in visits.of_person(e.person_key, own)
        )
    return out


def _w(window: Window) -> tuple[datetime, datetime]:
    return window.start, window.end
