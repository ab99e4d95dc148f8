"""Tracing as reports arrive (the ``trace_exposures`` agent's work).

Records on ``f0-reports`` are keyed by ``report_id`` (one report's events reach one worker,
in order) and carry an ``action``:

- ``report`` / ``correct``: an F0Reported body: trace it (again), apply the difference;
- ``withdraw``: withdraw every exposure of the report and the F0 status it set;
- ``approve``: an official released a held report: apply it;
- ``late``: a scan indexed after the report touched one of its infectious intervals
  (the scan stream joined against the intervals, :meth:`Tracer.join`): extend the
  report's exposures by that visit (:func:`tracing.exposure.extend`), or trace again when
  the visit is the F0's own.

Candidates come from the visit indexes (Redis for the hot window, ClickHouse beyond it).
The pure rules (:mod:`tracing.exposure`) decide; this module reads, writes and emits:

1. ``ExposureFlagged`` (flagged or withdrawn) on ``exposures``, keyed by person;
2. each person's status in Redis: one field per report (``x:<report_id>``, the tier and
   its date; ``f0:<report_id>`` for the case), so the card rulebook decides the colour
   (computed on every read, as a gate check does) and a withdrawal restores exactly what
   only that report caused;
3. the report's state last (status, counts, exposures): a crash anywhere replays the
   record, and every write converges (the flags are idempotent by exposure id and
   version).

A report that would flag more than ``hold_above`` people is **held**: nothing changes in
the residents' statuses, its preview (counts by tier and district) is published on
``report-status``, and it waits for ``approve``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Protocol

import orjson
from pydantic import ValidationError

from streams.guard import Guard
from streams.scans import RawRecord
from tracing.events import (
    DeadLetter,
    ExposureFlagged,
    F0Reported,
    ReportStatusChanged,
    payload_text,
    validation_errors,
)
from tracing.exposure import (
    Case,
    Exposure,
    ExposureRules,
    Interval,
    MemoryVisits,
    extend,
    infectious_window,
    intervals_of,
    trace,
)
from tracing.reports import ReportState, counts, preview, stamp, status_entry
from tracing.rules import ExposureRuleBook
from tracing.visits import Visit

log = logging.getLogger(__name__)

Infectious = tuple[str, datetime, datetime]


Query = tuple[str, datetime, datetime]


class CandidatePort(Protocol):
    async def visits_of(self, person_key: str, start: datetime, end: datetime) -> list[Visit]: ...
    async def visits_at(
        self, checkpoint_id: str, start: datetime, end: datetime
    ) -> list[Visit]: ...
    async def visits_of_many(self, queries: Sequence[Query]) -> list[list[Visit]]: ...
    async def visits_at_many(self, queries: Sequence[Query]) -> list[list[Visit]]: ...
    async def count_at_many(self, queries: Sequence[Query]) -> list[int]: ...


class ReportStorePort(Protocol):
    async def get(self, report_id: str) -> ReportState | None: ...
    async def save(
        self,
        state: ReportState,
        exposures: Sequence[Exposure] | None = None,
        *,
        pending: Sequence[Exposure] | None = None,
        f0_visits: Sequence[Visit] | None = None,
    ) -> None: ...
    async def exposures(self, report_id: str) -> list[Exposure]: ...
    async def pending(self, report_id: str) -> list[Exposure]: ...
    async def forget_person(self, state: ReportState, person_key: str) -> None: ...
    async def register(
        self, report_id: str, intervals: Sequence[Interval], people: Sequence[Infectious]
    ) -> None: ...
    async def unregister(
        self,
        report_id: str,
        keep: Sequence[Interval] = (),
        keep_people: Sequence[Infectious] = (),
    ) -> None: ...
    async def touched(
        self, visits: Sequence[Visit], rules: ExposureRules
    ) -> list[tuple[str, Visit]]: ...
    async def expired(self, retention: timedelta) -> list[ReportState]: ...
    async def drop(self, state: ReportState) -> None: ...


class PeoplePort(Protocol):
    async def ids_of(self, person_keys: Sequence[str]) -> dict[str, str]: ...
    async def household_of(self, person_id: str) -> list[str]: ...
    async def districts_of(self, ids: Sequence[str]) -> dict[str, str]: ...
    async def set_fields(self, changes: dict[str, dict[str, str | None]]) -> None: ...


class TracingOutPort(Protocol):
    async def exposures(self, events: Sequence[ExposureFlagged]) -> None: ...
    async def status(self, event: ReportStatusChanged) -> None: ...
    async def late(self, items: Sequence[tuple[str, Visit]]) -> None: ...


async def _around(
    index: CandidatePort, visits: Sequence[Visit], start: datetime, end: datetime
) -> list[Visit]:
    """Everyone at the checkpoints of ``visits`` while they were there, inside [start, end]."""
    spans: dict[str, tuple[datetime, datetime]] = {}
    for v in visits:
        lo, hi = max(v.t_in, start), min(v.t_out, end)
        if hi <= lo:
            continue
        old = spans.get(v.checkpoint_id)
        spans[v.checkpoint_id] = (min(lo, old[0]), max(hi, old[1])) if old else (lo, hi)
    found = await index.visits_at_many([(cp, a, b) for cp, (a, b) in spans.items()])
    return [v for group in found for v in group]


def _spans(visits: Sequence[Visit], case: Case) -> list[Query]:
    return [(v.checkpoint_id, v.t_in, min(v.t_out, case.reported_at)) for v in visits]


def _unique(*groups: Iterable[Visit]) -> MemoryVisits:
    return MemoryVisits.of({v.scan_id: v for g in groups for v in g}.values())


async def gather_candidates(
    case: Case, index: CandidatePort, household: Iterable[str], rules: ExposureRules
) -> MemoryVisits:
    """Every visit the rules can look at for one report (no joins registered)."""
    visits, _, _ = await _gather(case, index, list(household), rules, None)
    return visits


F1Hook = Callable[[list[Exposure], list[Visit]], Awaitable[None]]


async def _gather(
    case: Case,
    index: CandidatePort,
    household: list[str],
    rules: ExposureRules,
    store: ReportStorePort | None,
    on_f1: F1Hook | None = None,
) -> tuple[MemoryVisits, list[Interval], list[Infectious]]:
    """The F0's visits, everyone near them, the F1s' own visits and everyone near those.

    With a store, the F0 and then the F1s are registered as infectious (people first,
    then their intervals) *before* the visits around them are read: a scan indexed
    meanwhile is either read here or joined by the scan stream (or both: the flags are
    idempotent), never neither."""
    window = infectious_window(case, rules)
    f0_span: Infectious = (case.person_key, window.start, window.end)
    if store is not None:
        await store.register(case.report_id, [], [f0_span])
    f0_visits = await index.visits_of(case.person_key, window.start, window.end)
    if store is not None:
        await store.register(case.report_id, intervals_of(case, [], _unique(f0_visits), rules), [])
    near_f0 = await _around(index, f0_visits, window.start, window.end)
    f1 = [e for e in trace(case, _unique(f0_visits, near_f0), household, rules) if e.tier == "F1"]
    f1_spans: list[Infectious] = [(e.person_key, e.overlap_start, case.reported_at) for e in f1]
    if store is not None:
        await store.register(case.report_id, [], f1_spans)
    f1_visits = [v for group in await index.visits_of_many(f1_spans) for v in group]
    intervals = intervals_of(case, f1, _unique(f0_visits, f1_visits), rules)
    if store is not None:
        await store.register(case.report_id, intervals, [])
    if on_f1 is not None:  # the F1s are final here: the F2s only need the reads below
        await on_f1(f1, f1_visits)
    near_f1 = await _around(index, f1_visits, window.start, case.reported_at)
    return _unique(f0_visits, near_f0, f1_visits, near_f1), intervals, [f0_span, *f1_spans]


async def trace_case(
    case: Case, index: CandidatePort, household: Iterable[str], rules: ExposureRules
) -> list[Exposure]:
    members = list(household)
    visits = await gather_candidates(case, index, members, rules)
    return trace(case, visits, members, rules)


def flag(
    e: Exposure, *, rules: str, flagged_at: datetime, district: str, version: int, withdrawn: bool
) -> ExposureFlagged:
    # Built from trusted values (the pure rules' output): no validation pass, which for a
    # report with tens of thousands of F2s costs more than the trace.
    return ExposureFlagged.model_construct(
        exposure_id=e.exposure_id,
        report_id=e.report_id,
        person_key=e.person_key,
        tier=e.tier,
        via_key=e.via,
        reason=e.reason,
        checkpoint_id=e.checkpoint_id,
        district=district,
        overlap_start=e.overlap_start,
        overlap_end=e.overlap_end,
        overlap_minutes=round(e.overlap_minutes, 1),
        rule_version=rules,
        flagged_at=flagged_at,
        withdrawn=withdrawn,
        version=version,
    )


def _shown(value: object, quoted: bool = True) -> str:
    """An untrusted value in a message: a short string as it is, anything else by its type
    (``str()`` of a list nested a thousand deep raises RecursionError)."""
    if isinstance(value, str):
        return repr(value[:20]) if quoted else value[:20]
    return f"a {type(value).__name__}"


class Tracer:
    def __init__(
        self,
        *,
        store: ReportStorePort,
        candidates: CandidatePort,
        people: PeoplePort,
        out: TracingOutPort,
        guard: Guard,
        pseudonymize: Callable[[str], str],
        rulebook: ExposureRuleBook,
        topic: str,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.store = store
        self.candidates = candidates
        self.people = people
        self.out = out
        self.guard = guard
        self.pseudonymize = pseudonymize
        self.rulebook = rulebook
        self.topic = topic
        self.clock = clock

    # The scan stream's side of the join -------------------------------------------------
    async def join(self, visits: Sequence[Visit]) -> int:
        """Newly indexed visits against the active infectious intervals: each touch is
        sent to its report as a ``late`` record. Called by the scan recorder after the
        index write (so the trace's reads and this check cannot both miss a visit)."""
        touched = await self.store.touched(visits, self.rulebook.loosest())
        if touched:
            await self.out.late(touched)
        return len(touched)

    async def expire(self, retention: timedelta) -> int:
        """Forget reports older than ``retention`` before the newest one (event time):
        their fields on residents, their intervals, their state. Bounded state."""
        gone = 0
        for state in await self.store.expired(retention):
            applied = await self.store.exposures(state.report_id)
            pending = await self.store.pending(state.report_id)
            keys = sorted({e.person_key for e in [*applied, *pending]} | {state.person_key})
            ids = await self.people.ids_of(keys)
            fields = {f"x:{state.report_id}": None, f"f0:{state.report_id}": None}
            await self.people.set_fields({i: dict(fields) for i in ids.values()})
            await self.store.drop(state)
            gone += 1
        return gone

    # The report stream ------------------------------------------------------------------
    def _letter(self, reason: str, rec: RawRecord, item: object = None) -> DeadLetter:
        return DeadLetter(
            topic=self.topic,
            reason=reason[:1000],
            payload=payload_text(item if item is not None else rec.value, rec.value),
            partition=rec.partition,
            offset=rec.offset,
        )

    async def handle(self, records: Sequence[RawRecord]) -> None:
        """Every record ends applied or dead-lettered before this returns."""
        for rec in records:
            try:
                body = orjson.loads(rec.value or b"")
            except orjson.JSONDecodeError as exc:
                await self.guard.bury([self._letter(f"not valid JSON: {exc}", rec)])
                continue
            if not isinstance(body, dict):
                reason = f"expected a JSON object, got {type(body).__name__}"
                await self.guard.bury([self._letter(reason, rec, body)])
                continue
            step = f"tracing ({_shown(body.get('action', 'report'), quoted=False)})"
            try:
                await self.guard.retry(step, lambda b=body, r=rec: self._one(b, r))  # type: ignore[misc]
            except ValidationError as exc:
                await self._refuse("; ".join(validation_errors(exc)), rec, body)
            except Exception as exc:  # refused by us or by a store: dead-lettered, not lost
                await self._refuse(f"{type(exc).__name__}: {exc}", rec, body)

    async def _refuse(self, reason: str, rec: RawRecord, body: object) -> None:
        log.warning("f0-reports record refused: %s", reason)
        await self.guard.bury([self._letter(reason, rec, body)])

    async def _one(self, body: dict[str, object], rec: RawRecord) -> None:
        action = body.get("action", "report")
        if action in ("report", "correct"):
            report = F0Reported.model_validate(body)
            state = await self.store.get(report.report_id)
            if state is not None and state.status == "withdrawn":
                # A withdrawn report stays withdrawn (a re-import of the same positive, a
                # correction racing the withdrawal): a new report needs a new ID.
                log.info("report %s is withdrawn: %s ignored", report.report_id, action)
                return
            seq = body.get("seq")
            await self._trace(report, rec, approve=False, seq=seq if isinstance(seq, int) else 0)
            return
        if action not in ("approve", "withdraw", "late"):
            raise ValueError(
                f"action: must be report, correct, withdraw, approve or late, got {_shown(action)}"
            )
        report_id = body.get("report_id")
        if not isinstance(report_id, str) or not report_id:
            raise ValueError("report_id: required")
        state = await self.store.get(report_id)
        if state is None:
            raise ValueError(f"report_id: no report {report_id!r} to {action}")
        if state.done_with(rec.partition, rec.offset):
            return  # replayed after it was applied
        if action == "approve":
            if state.status != "held":
                log.info("approve of report %s ignored: it is %s", report_id, state.status)
                return
            await self._trace(state.report(), rec, approve=True, seq=state.seq)
        elif action == "withdraw":
            await self._withdraw(state, rec)
        else:
            await self._late(state, body, rec)

    def _case(self, report: F0Reported) -> Case:
        return Case(
            report.report_id,
            self.pseudonymize(report.person_id),
            sample_time=report.sample_time,
            reported_at=report.reported_at,
            symptomatic=report.symptomatic,
            onset=report.onset_date,
        )

    async def _trace(
        self, report: F0Reported, rec: RawRecord, *, approve: bool, seq: int | None = None
    ) -> None:
        state = await self.store.get(report.report_id)
        if state is not None and state.done_with(rec.partition, rec.offset):
            return  # replayed after it was applied
        case = self._case(report)
        rules = self.rulebook.for_(report.reported_at.date())
        new = ReportState(
            report.report_id,
            report.person_id,
            case.person_key,
            report.model_dump(mode="json"),
            # an approval holds for corrections of the same report, not after a withdrawal
            approved=approve
            or (state is not None and state.approved and state.status != "withdrawn"),
            rule_version=rules.version,
            seq=seq if seq is not None else (state.seq if state else 0),
        )
        if state is not None and state.person_key != case.person_key:
            # A correction naming another person: the first one is no longer this F0.
            await self.store.forget_person(new, state.person_key)
            await self.people.set_fields({state.person_id: {f"f0:{report.report_id}": None}})
        household = [self.pseudonymize(i) for i in await self.people.household_of(report.person_id)]
        applied = await self.store.exposures(report.report_id)

        async def f1_first(f1: list[Exposure], f1_visits: list[Visit]) -> None:
            """Flag the F1s before the F2s are traced, when the brake cannot engage: the
            F1s plus an upper bound of the F2s (every visit at the F1s' places while they
            were there, counted in Redis) stay within the limit, or it was approved."""
            nonlocal applied
            if not new.approved:
                bound = await self.candidates.count_at_many(_spans(f1_visits, case))
                if len(f1) + sum(bound) > rules.hold_above:
                    return  # decided once the F2s are known
            f1_keys = {e.person_key for e in f1}
            interim = [*f1, *(e for e in applied if e.tier == "F2" and e.person_key not in f1_keys)]
            ids, district = await self._people_of(interim, applied, case)
            await self._apply(new, applied, interim, district, ids, rec)
            applied = interim
            # Written down at once: whatever happens next (held after all, a crash), a
            # withdrawal or an approval diffs against what residents really carry.
            await self.store.save(new, applied)

        t0 = time.perf_counter()
        visits, intervals, spans = await _gather(
            case, self.candidates, household, rules, self.store, f1_first
        )
        exposures = trace(case, visits, household, rules)
        await self.store.unregister(report.report_id, intervals, spans)
        await self._settle(new, case, rules, exposures, visits, rec, applied)
        log.info(
            "report %s traced in %.0f ms: %s",
            report.report_id,
            (time.perf_counter() - t0) * 1000,
            new.counts,
        )

    async def _people_of(
        self, exposures: Sequence[Exposure], applied: Sequence[Exposure], case: Case
    ) -> tuple[dict[str, str], dict[str, str]]:
        """(person key → ID, person key → district) of everyone involved."""
        keys = sorted({e.person_key for e in [*exposures, *applied]} | {case.person_key})
        ids = await self.people.ids_of(keys)
        districts = await self.people.districts_of(sorted(set(ids.values())))
        return ids, {k: districts.get(i, "") for k, i in ids.items()}

    async def _settle(
        self,
        state: ReportState,
        case: Case,
        rules: ExposureRules,
        exposures: list[Exposure],
        visits: MemoryVisits,
        rec: RawRecord,
        applied: list[Exposure],
    ) -> None:
        """Hold the report, or apply the difference from what was applied before."""
        window = infectious_window(case, rules)
        state.window_start, state.window_end = window.start.isoformat(), window.end.isoformat()
        state.rule_version = rules.version
        state.counts = counts(exposures)
        state.partition, state.offset = rec.partition, rec.offset
        state.updated_at = stamp()
        f0_visits = visits.of_person(case.person_key, window)
        if len(exposures) > rules.hold_above and not state.approved:
            _, district = await self._people_of(exposures, [], case)
            # The brake: nothing changes for the residents until an official approves;
            # whatever an earlier version of the report applied stays as it was.
            state.status = "held"
            state.preview = preview(exposures, district)
            await self.store.save(state, pending=exposures, f0_visits=f0_visits)
            await self.out.status(self._status_event(state))
            log.warning(
                "report %s held: it would flag %d people (limit %d)",
                state.report_id,
                len(exposures),
                rules.hold_above,
            )
            return
        # Only the people whose flag changes are looked up (a late scan changes one or two).
        before = {e.person_key: e for e in applied}
        after = {e.person_key: e for e in exposures}
        moved = [e for k, e in {**before, **after}.items() if before.get(k) != after.get(k)]
        ids, district = await self._people_of(moved, [], case)
        await self._apply(state, applied, exposures, district, ids, rec)
        f0_id = ids.get(case.person_key)
        if f0_id is not None:
            await self.people.set_fields(
                {f0_id: {f"f0:{state.report_id}": str(state.body["sample_time"])}}
            )
        state.status = "done"
        state.preview = None
        await self.store.save(state, exposures, f0_visits=f0_visits, pending=[])
        await self.out.status(self._status_event(state))

    async def _apply(
        self,
        state: ReportState,
        before: Sequence[Exposure],
        after: Sequence[Exposure],
        district: dict[str, str],
        ids: dict[str, str],
        rec: RawRecord,
    ) -> list[str]:
        """Emit and apply the difference; returns the IDs whose status changed."""
        old = {e.person_key: e for e in before}
        new = {e.person_key: e for e in after}
        gone = [e for k, e in old.items() if k not in new]
        changed = [e for k, e in new.items() if old.get(k) != e]
        flagged_at = datetime.fromisoformat(str(state.body["reported_at"]))
        version = rec.offset if rec.offset is not None else 0
        events = [
            flag(
                e,
                rules=state.rule_version,
                flagged_at=flagged_at,
                district=district.get(e.person_key, ""),
                version=version,
                withdrawn=withdrawn,
            )
            for withdrawn, group in ((True, gone), (False, changed))
            for e in group
        ]
        # Kafka first (the record of what was decided), then the residents' statuses.
        if events:
            await self.out.exposures(events)
        fields: dict[str, dict[str, str | None]] = {}
        for e in gone:
            if e.person_key in ids:
                fields[ids[e.person_key]] = {f"x:{state.report_id}": None}
        for e in changed:
            if e.person_key in ids:
                fields[ids[e.person_key]] = {f"x:{state.report_id}": status_entry(e)}
        await self.people.set_fields(fields)
        return list(fields)

    def _status_event(self, state: ReportState) -> ReportStatusChanged:
        return ReportStatusChanged(
            report_id=state.report_id,
            status=state.status,
            counts=state.counts,
            preview=state.preview,
            rule_version=state.rule_version,
            changed_at=self.clock(),
        )

    async def _withdraw(self, state: ReportState, rec: RawRecord) -> None:
        applied = await self.store.exposures(state.report_id)
        ids = await self.people.ids_of(sorted({e.person_key for e in applied} | {state.person_key}))
        await self._apply(state, applied, [], {}, ids, rec)
        if state.person_key in ids:
            await self.people.set_fields({ids[state.person_key]: {f"f0:{state.report_id}": None}})
        await self.store.unregister(state.report_id)
        state.status = "withdrawn"
        state.counts = {"F1": 0, "F2": 0}
        state.preview = None
        state.partition, state.offset = rec.partition, rec.offset
        state.updated_at = stamp()
        await self.store.save(state, [], pending=[])
        await self.out.status(self._status_event(state))

    async def _late(self, state: ReportState, body: dict[str, object], rec: RawRecord) -> None:
        if state.status not in ("done", "held"):
            return  # withdrawn, or not traced yet (its trace will read the visit)
        raw = body.get("visit")
        if not isinstance(raw, dict):
            raise ValueError("visit: required for a late record")
        visit = Visit(
            str(raw["scan_id"]),
            str(raw["person_key"]),
            str(raw["checkpoint_id"]),
            datetime.fromisoformat(str(raw["t_in"])),
            datetime.fromisoformat(str(raw["t_out"])),
            "",
        )
        report = state.report()
        case = self._case(report)
        if visit.person_key == case.person_key:
            await self._trace(report, rec, approve=False, seq=state.seq)  # the F0's own: again
            return
        rules = self.rulebook.for_(report.reported_at.date())
        window = infectious_window(case, rules)
        current = (
            await self.store.exposures(state.report_id)
            if state.status == "done"
            else await self.store.pending(state.report_id)
        )
        here = await self.candidates.visits_at(visit.checkpoint_id, visit.t_in, visit.t_out)
        step = extend(case, current, visit, _unique([visit], here), rules)
        own = next(
            (e for e in step or () if e.person_key == visit.person_key and e.tier == "F1"), None
        )
        if step is not None and own is not None:
            # The visit's person is F1: their F2s need everyone near their visits, and
            # they become joinable as infectious (registered before those reads).
            span: Infectious = (own.person_key, own.overlap_start, case.reported_at)
            await self.store.register(state.report_id, [], [span])
            mine = await self.candidates.visits_of(*span)
            lookup = _unique([visit], here, mine)
            f1_intervals = [i for i in intervals_of(case, [own], lookup, rules) if i.tier == "F1"]
            await self.store.register(state.report_id, f1_intervals, [])
            near = await _around(self.candidates, mine, window.start, case.reported_at)
            step = extend(case, current, visit, _unique([visit], here, mine, near), rules)
        if step is None or step == current:
            state.partition, state.offset = rec.partition, rec.offset
            await self.store.save(state)
            return
        f0_visits = await self.candidates.visits_of(case.person_key, window.start, window.end)
        applied = current if state.status == "done" else await self.store.exposures(state.report_id)
        await self._settle(state, case, rules, step, _unique(f0_visits), rec, applied)
