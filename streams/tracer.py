"""Gathering what a trace needs from the visit indexes (the hot window in Redis) before
the pure rules run (:func:`tracing.exposure.trace`): the F0's visits, everyone at those
checkpoints, the F1 candidates' own visits to the report, and everyone at theirs. The
trace then runs in memory over exactly those visits, so it is the same whatever store
the visits came from. (The `trace_exposures` agent that drives it is the tracing issue's.)
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Protocol

from tracing.exposure import Case, Exposure, ExposureRules, MemoryVisits, infectious_window, trace
from tracing.visits import Visit


class CandidatePort(Protocol):
    async def visits_of(self, person_key: str, start: datetime, end: datetime) -> list[Visit]: ...
    async def visits_at(
        self, checkpoint_id: str, start: datetime, end: datetime
    ) -> list[Visit]: ...


async def _around(
    index: CandidatePort, visits: Sequence[Visit], start: datetime, end: datetime
) -> list[Visit]:
    """Everyone at the checkpoints of ``visits`` during [start, end]."""
    places = sorted({v.checkpoint_id for v in visits})
    found = await asyncio.gather(*(index.visits_at(cp, start, end) for cp in places))
    return [v for group in found for v in group]


async def gather_candidates(
    case: Case, index: CandidatePort, household: Iterable[str], rules: ExposureRules
) -> MemoryVisits:
    window = infectious_window(case, rules)
    f0_visits = await index.visits_of(case.person_key, window.start, window.end)
    near_f0 = await _around(index, f0_visits, window.start, window.end)
    # F1 candidates (anyone met, and the household): their visits from the window's start
    # to the report contain every F1's own window.
    people = sorted({v.person_key for v in near_f0} | set(household) - {case.person_key})
    theirs = await asyncio.gather(
        *(index.visits_of(p, window.start, case.reported_at) for p in people)
    )
    f1_visits = [v for group in theirs for v in group]
    near_f1 = await _around(index, f1_visits, window.start, case.reported_at)
    unique = {v.scan_id: v for v in [*f0_visits, *near_f0, *f1_visits, *near_f1]}
    return MemoryVisits.of(unique.values())


async def trace_case(
    case: Case, index: CandidatePort, household: Iterable[str], rules: ExposureRules
) -> list[Exposure]:
    members = list(household)
    visits = await gather_candidates(case, index, members, rules)
    return trace(case, visits, members, rules)
