"""In-memory fakes of the ports (functional tests only)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import date
from typing import Any

import orjson

from infra.credentials import Principal
from registry.residents import ANALYTICS_COLUMNS, Identity
from tracing.events import DeadLetter
from tracing.visits import Visit


class Faults:
    """Failures planned per step: ``plan("sink", "after", ConnectionError("…"))`` makes the
    next sink call write and then raise (a lost reply); "before" raises without writing."""

    def __init__(self) -> None:
        self.planned: dict[tuple[str, str], list[BaseException]] = defaultdict(list)
        self.raised: list[tuple[str, str]] = []

    def plan(self, step: str, when: str, exc: BaseException, times: int = 1) -> None:
        self.planned[(step, when)].extend([exc] * times)

    def check(self, step: str, when: str) -> None:
        queue = self.planned.get((step, when))
        if queue:
            self.raised.append((step, when))
            raise queue.pop(0)


NO_FAULTS = Faults()


class MemoryIndex:
    def __init__(self, faults: Faults = NO_FAULTS) -> None:
        self.visits: dict[str, Visit] = {}
        self.processed = 0
        self.faults = faults

    async def unseen(self, scan_ids: Sequence[str]) -> list[bool]:
        self.faults.check("dedup", "before")
        return [s not in self.visits for s in scan_ids]

    async def add(self, visits: Sequence[Visit], *, count: bool = True) -> int:
        self.faults.check("index", "before")
        new = 0
        for v in visits:
            new += v.scan_id not in self.visits
            self.visits[v.scan_id] = v
        if count:
            self.processed += new  # only what was newly added, as the Redis script does
        self.faults.check("index", "after")
        return new


class MemorySink:
    """The visit sink; ``refuse(visits)`` returns a reason to refuse a batch (permanent)."""

    def __init__(
        self,
        fail_times: int = 0,
        faults: Faults = NO_FAULTS,
        refuse: Callable[[Sequence[Visit]], str | None] = lambda visits: None,
    ) -> None:
        self.rows: list[Visit] = []
        self.resent: list[str] = []  # rows sent marked as possibly sent before
        self.lanes: list[tuple[str, int | None]] = []  # (scan ID, lane) of each row
        self.fail_times = fail_times
        self.faults = faults
        self.refuse = refuse

    async def insert(
        self,
        visits: Sequence[Visit],
        places: dict[str, dict[str, str]],
        again: Collection[str] = frozenset(),
        lanes: Mapping[str, int] | None = None,
    ) -> None:
        if self.fail_times:
            self.fail_times -= 1
            raise ConnectionError("ClickHouse is down")
        self.faults.check("sink", "before")
        reason = self.refuse(visits)
        if reason:
            raise ValueError(reason)
        self.rows.extend(visits)
        self.resent.extend(v.scan_id for v in visits if v.scan_id in again)
        self.lanes.extend((v.scan_id, (lanes or {}).get(v.scan_id)) for v in visits)
        self.faults.check("sink", "after")

    @property
    def distinct(self) -> int:
        return len({v.scan_id for v in self.rows})


class MemoryMarks:
    """Replay marks (infra/replays.py) in a dict."""

    def __init__(self, faults: Faults = NO_FAULTS) -> None:
        self.marks: dict[int, int] = {}
        self.faults = faults

    async def advance(self, highest: Mapping[int, int]) -> dict[int, int]:
        self.faults.check("marks", "before")
        before = {p: self.marks.get(p, -1) for p in highest}
        for p, offset in highest.items():
            self.marks[p] = max(self.marks.get(p, -1), offset)
        return before


class MemoryPlaces:
    async def lookup(self, ids: Iterable[str]) -> dict[str, dict[str, str]]:
        return {i: {"district": "Ba Đình"} for i in ids}


class MemoryDeadLetters:
    def __init__(self, faults: Faults = NO_FAULTS) -> None:
        self.letters: list[DeadLetter] = []
        self.faults = faults

    async def send(self, letters: Sequence[DeadLetter]) -> None:
        self.faults.check("dead-letters", "before")
        self.letters.extend(letters)
        self.faults.check("dead-letters", "after")


class MemoryRegistry:
    """The resident registry port: flat string fields per ID."""

    def __init__(self, residents: Sequence[dict[str, str]] = (), faults: Faults = NO_FAULTS):
        self.rows: dict[str, dict[str, str]] = {r["id"]: dict(r) for r in residents}
        self.faults = faults

    async def get_identities(self, ids: Sequence[str]) -> list[Identity | None]:
        out: list[Identity | None] = []
        for i in ids:
            r = self.rows.get(i)
            aliases = frozenset(orjson.loads(r.get("aliases", "[]"))) if r else frozenset()
            out.append(Identity(r["name"], date.fromisoformat(r["dob"]), aliases) if r else None)
        return out

    async def add_alias(self, person_id: str, alias: str) -> None:
        row = self.rows[person_id]
        row["aliases"] = orjson.dumps(
            sorted({*orjson.loads(row.get("aliases", "[]")), alias})
        ).decode()

    async def get_many(self, ids: Sequence[str]) -> list[dict[str, str] | None]:
        return [dict(self.rows[i]) if i in self.rows else None for i in ids]

    async def put_many(self, rows: Sequence[dict[str, str]]) -> int:
        for r in rows:
            self.rows[r["id"]] = {**self.rows.get(r["id"], {}), **r}
        return len(rows)

    async def update_many(self, updates: dict[str, dict[str, str]]) -> None:
        self.faults.check("registry-update", "before")
        for pid, fields in updates.items():
            self.rows.setdefault(pid, {}).update(fields)
        self.faults.check("registry-update", "after")


class MemoryCheckpoints:
    def __init__(self) -> None:
        self.rows: dict[str, dict[str, str]] = {}

    async def put_many(self, checkpoints: Iterable[dict[str, str]]) -> int:
        n = 0
        for c in checkpoints:
            self.rows[c["checkpoint_id"]] = dict(c)
            n += 1
        return n


class MemoryLedger:
    """The import ledger port: reports, outcome lines, applied marks, review queue."""

    def __init__(self, faults: Faults = NO_FAULTS) -> None:
        self.faults = faults
        self.records: dict[str, bytearray] = {}
        self.saved: dict[str, dict[str, object]] = {}
        self.applied_contents: dict[str, str] = {}
        self.review: dict[str, dict[str, Any]] = {}
        self.fresh: dict[str, str] = {}

    @contextmanager
    def records_writer(self, import_id: str) -> Iterator[_Writable]:
        yield _Writable(self.records.setdefault(import_id, bytearray()))

    def lines(self, import_id: str) -> list[dict[str, Any]]:
        return [orjson.loads(x) for x in bytes(self.records[import_id]).splitlines()]

    async def save_report(self, report: dict[str, object]) -> None:
        self.saved[str(report["import_id"])] = report

    async def reports(self) -> list[dict[str, Any]]:
        return list(self.saved.values())

    async def applied(self, keys: list[str]) -> list[str | None]:
        return [self.applied_contents.get(k) for k in keys]

    async def mark_applied(self, contents: dict[str, str]) -> None:
        self.faults.check("mark-applied", "before")
        self.applied_contents.update(contents)

    async def queue_review(self, items: list[dict[str, object]]) -> None:
        for i in items:
            self.review[str(i["review_id"])] = dict(i)

    async def review_item(self, review_id: str) -> dict[str, Any] | None:
        return self.review.get(review_id)

    async def drop_review(self, review_id: str) -> bool:
        return self.review.pop(review_id, None) is not None

    async def touch_freshness(self, source: str, newest: str) -> None:
        if newest > self.fresh.get(source, ""):
            self.fresh[source] = newest

    async def freshness(self) -> dict[str, str]:
        return dict(self.fresh)


class _Writable:
    def __init__(self, buf: bytearray) -> None:
        self.buf = buf

    def write(self, data: bytes) -> int:
        self.buf.extend(data)
        return len(data)


class MemoryRecords:
    """The health-record sink port; fails the first ``fail_times`` sends."""

    def __init__(self, fail_times: int = 0) -> None:
        self.sent: list[dict[str, object]] = []
        self.fail_times = fail_times

    async def send(self, events: list[dict[str, object]]) -> None:
        if self.fail_times:
            self.fail_times -= 1
            raise ConnectionError("Kafka is down")
        self.sent.extend(events)


class MemoryAnalytics:
    """The registry analytics port: rows as inserted, completeness computed from them."""

    def __init__(self) -> None:
        self.residents: list[list[object]] = []
        self.checkpoints: list[list[object]] = []
        self.history: list[list[object]] = []

    async def insert_residents(self, rows: Sequence[Sequence[object]]) -> None:
        self.residents.extend(list(r) for r in rows)

    async def insert_checkpoints(self, rows: Sequence[Sequence[object]]) -> None:
        self.checkpoints.extend(list(r) for r in rows)

    async def insert_health_records(self, rows: Sequence[Sequence[object]]) -> None:
        self.history.extend(list(r) for r in rows)

    def _latest(self) -> list[dict[str, object]]:
        latest: dict[object, dict[str, object]] = {}
        for row in self.residents:
            latest[row[0]] = dict(zip(ANALYTICS_COLUMNS, row, strict=True))
        return list(latest.values())

    async def completeness(self) -> list[tuple[str, int, int, int]]:
        by: dict[str, list[int]] = {}
        for r in self._latest():
            t = by.setdefault(str(r["district"]), [0, 0, 0])
            t[0] += 1
            t[1] += int(r["doses"] > 0)  # type: ignore[operator]  # an int column
            t[2] += int(r["has_address"] == 1)
        return [(d, *v) for d, v in sorted(by.items())]  # type: ignore[misc]  # 3 ints

    async def colours(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for r in self._latest():
            out[str(r["colour"])] = out.get(str(r["colour"]), 0) + 1
        return out


class MemoryResidentSink:
    """The status agent's ClickHouse port: resident rows and the facts behind them."""

    def __init__(self, faults: Faults = NO_FAULTS) -> None:
        self.residents: list[dict[str, str]] = []
        self.facts: dict[str, object] = {}
        self.faults = faults

    async def upsert(self, residents: Sequence[dict[str, str]], facts: Sequence[Any]) -> None:
        self.faults.check("resident-sink", "before")
        self.residents.extend(dict(r) for r in residents)
        self.facts.update({f.record_id: f for f in facts})
        self.faults.check("resident-sink", "after")


class MemoryCandidates:
    """The candidate-visit port over a dict of visits (async, like the Redis index)."""

    def __init__(self, index: MemoryIndex) -> None:
        self.index = index

    async def visits_of(self, person_key: str, start: Any, end: Any) -> list[Visit]:
        return [
            v
            for v in self.index.visits.values()
            if v.person_key == person_key and v.t_in < end and v.t_out > start
        ]

    async def visits_at(self, checkpoint_id: str, start: Any, end: Any) -> list[Visit]:
        return [
            v
            for v in self.index.visits.values()
            if v.checkpoint_id == checkpoint_id and v.t_in < end and v.t_out > start
        ]

    async def visits_of_many(self, queries: Sequence[Any]) -> list[list[Visit]]:
        return [await self.visits_of(*q) for q in queries]

    async def visits_at_many(self, queries: Sequence[Any]) -> list[list[Visit]]:
        return [await self.visits_at(*q) for q in queries]

    async def count_at_many(self, queries: Sequence[Any]) -> list[int]:
        return [len(await self.visits_at(*q)) for q in queries]


class MemoryTracingStore:
    """Reports, their exposures and the infectious intervals, in memory."""

    def __init__(self) -> None:
        from tracing.exposure import Exposure, Interval
        from tracing.reports import ReportState

        self.states: dict[str, ReportState] = {}
        self.applied: dict[str, list[Exposure]] = {}
        self.held: dict[str, list[Exposure]] = {}
        self.intervals: dict[str, set[Interval]] = defaultdict(set)
        self.people: dict[str, set[tuple[str, Any, Any]]] = defaultdict(set)

    async def get(self, report_id: str) -> Any:
        import copy

        return copy.deepcopy(self.states.get(report_id))

    async def save(
        self, state: Any, exposures: Any = None, *, pending: Any = None, f0_visits: Any = None
    ) -> None:
        import copy

        self.states[state.report_id] = copy.deepcopy(state)
        if exposures is not None:
            self.applied[state.report_id] = list(exposures)
        if pending is not None:
            self.held[state.report_id] = list(pending)

    async def exposures(self, report_id: str) -> list[Any]:
        return list(self.applied.get(report_id, []))

    async def pending(self, report_id: str) -> list[Any]:
        return list(self.held.get(report_id, []))

    async def forget_person(self, state: Any, person_key: str) -> None:
        pass

    async def expired(self, retention: Any) -> list[Any]:
        return []

    async def drop(self, state: Any) -> None:
        self.states.pop(state.report_id, None)

    async def register(
        self, report_id: str, intervals: Sequence[Any], people: Sequence[Any]
    ) -> None:
        self.intervals[report_id].update(intervals)
        self.people[report_id].update(people)

    async def unregister(
        self, report_id: str, keep: Sequence[Any] = (), keep_people: Sequence[Any] = ()
    ) -> None:
        self.intervals[report_id] &= set(keep)
        self.people[report_id] &= set(keep_people)

    async def touched(self, visits: Sequence[Visit], rules: Any) -> list[tuple[str, Visit]]:
        from tracing.exposure import spends

        out = set()
        for v in visits:
            for report_id, intervals in self.intervals.items():
                if any(i.touches(v, rules) for i in intervals):
                    out.add((report_id, v))
            for report_id, people in self.people.items():
                if any(p == v.person_key and spends(v, a, b, rules) for p, a, b in people):
                    out.add((report_id, v))
        return sorted(out, key=lambda pair: (pair[0], pair[1].scan_id))


class MemoryPeople:
    """Residents with the tracer's fields, households and the pseudonym map."""

    def __init__(self, residents: dict[str, dict[str, str]], pseudonymize: Callable[[str], str]):
        self.residents = residents
        self.keys = {pseudonymize(i): i for i in residents}

    async def ids_of(self, person_keys: Sequence[str]) -> dict[str, str]:
        return {k: self.keys[k] for k in person_keys if k in self.keys}

    async def household_of(self, person_id: str) -> list[str]:
        home = self.residents.get(person_id, {}).get("household")
        if not home:
            return [person_id]
        return sorted(i for i, r in self.residents.items() if r.get("household") == home)

    async def districts_of(self, ids: Sequence[str]) -> dict[str, str]:
        return {i: self.residents.get(i, {}).get("district", "") for i in ids}

    async def set_fields(self, changes: dict[str, dict[str, str | None]]) -> None:
        for pid, fields in changes.items():
            for k, val in fields.items():
                if val is None:
                    self.residents[pid].pop(k, None)
                else:
                    self.residents[pid][k] = val

    async def get_many(self, ids: Sequence[str]) -> list[dict[str, str] | None]:
        return [dict(self.residents[i]) if i in self.residents else None for i in ids]

    async def update_many(self, updates: dict[str, dict[str, str]]) -> None:
        for pid, fields in updates.items():
            self.residents[pid].update(fields)


class MemoryTracingOut:
    """The tracer's outputs; ``late`` records are queued for the test to feed back."""

    def __init__(self) -> None:
        self.flags: list[Any] = []
        self.statuses: list[Any] = []
        self.late_records: list[bytes] = []

    async def exposures(self, events: Sequence[Any]) -> None:
        self.flags.extend(events)

    async def status(self, event: Any) -> None:
        self.statuses.append(event)

    async def late(self, items: Sequence[tuple[str, Visit]]) -> None:
        from tracing.reports import late_record

        self.late_records.extend(late_record(r, v) for r, v in items)


class MemoryCredentials:
    """People's tokens and devices' keys in memory (the Access middleware's store)."""

    def __init__(self) -> None:
        self.people: dict[str, Principal] = {}
        self.devices: dict[str, tuple[frozenset[str], str]] = {}
        self.seen: set[str] = set()

    def add_token(self, role: str, district: str = "", organisation: str = "") -> str:
        token = f"tok-{role}-{len(self.people)}"
        self.people[token] = Principal(
            f"{role}-{len(self.people)}", role, district, organisation=organisation
        )
        return token

    def add_device(self, *checkpoints: str) -> tuple[str, str]:
        device_id = f"dev-{len(self.devices)}"
        self.devices[device_id] = (frozenset(checkpoints), f"key-{device_id}")
        return device_id, f"key-{device_id}"

    async def person(self, token: str) -> Principal | None:
        return self.people.get(token)

    async def device(self, device_id: str) -> tuple[frozenset[str], str] | None:
        return self.devices.get(device_id)

    async def first_use(self, signature: str) -> bool:
        if signature in self.seen:
            return False
        self.seen.add(signature)
        return True
