"""The tracing agent's work over fakes: a report flags F1 and F2 with evidence and sets
their statuses; a correction applies only the difference; a withdrawal restores what only
it caused; the brake holds a large report until approved; a late scan joins in."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import orjson
import pytest

from infra.faults import AgentHealth
from registry.cards import load_rulebook
from registry.residents import status_view
from streams.guard import Guard
from streams.scans import RawRecord
from streams.tracer import Tracer
from tests.fakes import (
    MemoryCandidates,
    MemoryDeadLetters,
    MemoryIndex,
    MemoryPeople,
    MemoryTracingOut,
    MemoryTracingStore,
)
from tracing.exposure import Case, MemoryVisits, trace
from tracing.rules import ExposureRuleBook, load_exposure_rules
from tracing.visits import Visit

NOW = datetime(2021, 11, 13, 9, 0, tzinfo=UTC)
CARDS = load_rulebook()


def pid(name: str) -> str:
    return "00109000" + f"{sum(map(ord, name)) * 7:04d}"[-4:]


def key(name: str) -> str:
    return "k" + pid(name)


def t(day: int, hh: int, mm: int = 0) -> datetime:
    return datetime(2021, 11, day, hh, mm, tzinfo=UTC)


def v(person: str, cp: str, start: datetime, end: datetime) -> Visit:
    return Visit(f"{person}-{cp}-{start:%d%H%M}", key(person), cp, start, end, "gate")


NAMES = ["A", "B", "C", "D", "G", "H1", "X", "Y", "E"]
VISITS = [
    v("A", "cp1", t(10, 10), t(10, 11)),
    v("B", "cp1", t(10, 10, 46), t(10, 11, 30)),  # 14 minutes with A: not F1
    v("C", "cp1", t(10, 10, 45), t(10, 11, 30)),  # 15 minutes: F1
    v("D", "cp1", t(10, 10, 44), t(10, 12)),  # 16 minutes: F1
    v("C", "cp3", t(10, 14), t(10, 15)),
    v("G", "cp3", t(10, 14, 10), t(10, 15)),  # F2 through C
    v("C", "cp4", t(9, 9), t(9, 10)),  # before C's exposure began
    v("X", "cp4", t(9, 9), t(9, 10)),  # ... so X is not F2
]
REPORT = {
    "action": "report",
    "report_id": "r1",
    "person_id": pid("A"),
    "sample_time": t(11, 8).isoformat(),
    "symptomatic": True,
    "onset_date": t(10, 0).isoformat(),
    "reported_at": t(12, 12).isoformat(),
}


class World:
    def __init__(self, hold_above: int = 500) -> None:
        self.index = MemoryIndex()
        for visit in VISITS:
            self.index.visits[visit.scan_id] = visit
        residents = {
            pid(n): {
                "id": pid(n),
                "household": "hh-a" if n in ("A", "H1") else f"hh-{n}",
                "district": "Ba Đình" if n in "ABCD" else "Đống Đa",
                "doses": '[["2021-08-01", "AZ", 1], ["2021-09-01", "AZ", 2]]',
                "province": "001",
            }
            for n in NAMES
        }
        self.people = MemoryPeople(residents, lambda i: "k" + i)
        self.store = MemoryTracingStore()
        self.out = MemoryTracingOut()
        self.dead = MemoryDeadLetters()
        book = load_exposure_rules()
        self.rulebook = ExposureRuleBook(
            tuple((d, replace(r, hold_above=hold_above)) for d, r in book.versions)
        )
        self.tracer = Tracer(
            store=self.store,
            candidates=MemoryCandidates(self.index),
            people=self.people,
            out=self.out,
            guard=Guard(self.dead, AgentHealth(), retry_delay=0.001, max_delay=0.002),
            pseudonymize=lambda i: "k" + i,
            rulebook=self.rulebook,
            topic="f0-reports",
            clock=lambda: NOW,
        )
        self.offset = 0

    async def send(self, body: dict[str, object]) -> None:
        self.offset += 1
        await self.tracer.handle([RawRecord(orjson.dumps(body), 0, self.offset)])

    async def drain_late(self) -> None:
        while self.out.late_records:
            record = self.out.late_records.pop(0)
            self.offset += 1
            await self.tracer.handle([RawRecord(record, 0, self.offset)])

    def colour(self, name: str) -> str:
        return str(status_view(self.people.residents[pid(name)], CARDS, NOW)["colour"])

    def flagged(self) -> dict[tuple[str, str], bool]:
        """(tier, person) → withdrawn, the last flag of each."""
        last = {}
        for f in self.out.flags:
            last[(f.tier, f.person_key)] = f.withdrawn
        return last


def tiers(exposures) -> set[tuple[str, str]]:  # type: ignore[no-untyped-def]
    return {(e.tier, e.person_key) for e in exposures}


async def test_a_report_flags_f1_and_f2_with_evidence_and_statuses() -> None:
    w = World()
    await w.send(REPORT)
    state = w.store.states["r1"]
    assert state.status == "done" and state.counts == {"F1": 3, "F2": 2}
    assert {(f.tier, f.person_key) for f in w.out.flags} == {
        ("F1", key("C")),
        ("F1", key("D")),
        ("F1", key("H1")),
        ("F2", key("B")),  # 14 minutes with A, but 44 with C at cp1
        ("F2", key("G")),
    }
    c = next(f for f in w.out.flags if f.person_key == key("C"))
    assert (c.checkpoint_id, c.overlap_minutes, c.via_key) == ("cp1", 15.0, key("A"))
    assert c.district == "Ba Đình" and c.rule_version == "moh-2021"
    assert w.colour("A") == "red" and w.colour("C") == "red" and w.colour("H1") == "red"
    assert w.colour("G") == "yellow"  # F2: fully vaccinated, capped at yellow
    assert w.colour("X") == "green" and w.colour("B") == "yellow"
    assert w.out.statuses[-1].status == "done"
    # Replayed (same offset): nothing is emitted again.
    before = len(w.out.flags)
    await w.tracer.handle([RawRecord(orjson.dumps(REPORT), 0, w.offset)])
    assert len(w.out.flags) == before


async def test_a_correction_applies_the_difference_and_a_withdrawal_restores() -> None:
    w = World()
    await w.send(REPORT)
    # Asymptomatic, sampled later: the window now starts at 10th 10:50, so A's visit
    # at cp1 overlaps C and D for 10 minutes only.
    corrected = {**REPORT, "action": "correct", "symptomatic": False, "onset_date": None}
    corrected["sample_time"] = t(12, 10, 50).isoformat()
    await w.send(corrected)
    assert w.store.states["r1"].counts == {"F1": 1, "F2": 0}
    assert w.flagged() == {
        ("F1", key("C")): True,
        ("F1", key("D")): True,
        ("F1", key("H1")): False,
        ("F2", key("B")): True,
        ("F2", key("G")): True,
    }
    assert w.colour("C") == "green" and w.colour("G") == "green" and w.colour("H1") == "red"
    await w.send({"action": "withdraw", "report_id": "r1"})
    assert w.store.states["r1"].status == "withdrawn"
    assert w.flagged()[("F1", key("H1"))] is True
    assert all(w.colour(n) == "green" for n in NAMES)
    assert not any(k.startswith(("x:", "f0:")) for r in w.people.residents.values() for k in r)


async def test_two_reports_on_one_person_withdrawing_one_keeps_the_other() -> None:
    w = World()
    await w.send(REPORT)
    second = {**REPORT, "report_id": "r2", "person_id": pid("D")}
    await w.send(second)  # D is an F0 too; C met D at cp1 as well
    assert w.colour("C") == "red"
    await w.send({"action": "withdraw", "report_id": "r1"})
    assert w.colour("C") == "red"  # still F1 of r2
    fields = w.people.residents[pid("C")]
    assert "x:r2" in fields and "x:r1" not in fields


async def test_the_brake_holds_a_large_report_until_approved() -> None:
    w = World(hold_above=2)
    await w.send(REPORT)
    state = w.store.states["r1"]
    assert state.status == "held" and state.counts == {"F1": 3, "F2": 2}
    assert state.preview == {"F1": {"Ba Đình": 2, "Đống Đa": 1}, "F2": {"Ba Đình": 1, "Đống Đa": 1}}
    assert w.out.flags == [] and w.colour("C") == "green" and w.colour("A") == "green"
    assert w.out.statuses[-1].status == "held" and w.out.statuses[-1].preview
    await w.send({"action": "approve", "report_id": "r1"})
    assert w.store.states["r1"].status == "done"
    assert len(w.out.flags) == 5 and w.colour("C") == "red"


async def test_a_late_scan_is_joined_into_its_report() -> None:
    w = World()
    await w.send(REPORT)
    # E's gate was offline: the scan at cp1 (20 minutes with A) arrives now, and with it
    # one at cp3 where E met Y after the exposure (Y becomes F2 through E).
    late = [v("E", "cp1", t(10, 10, 40), t(10, 11, 20)), v("Y", "cp5", t(11, 9), t(11, 10))]
    late.append(v("E", "cp5", t(11, 9), t(11, 10)))
    for visit in late:
        w.index.visits[visit.scan_id] = visit
        assert await w.tracer.join([visit]) >= 0
    await w.drain_late()
    expected = trace(
        Case("r1", key("A"), t(11, 8), t(12, 12), True, t(10, 0)),
        MemoryVisits.of(w.index.visits.values()),
        [key("A"), key("H1")],
        w.rulebook.latest(),
    )
    assert tiers(await w.store.exposures("r1")) == tiers(expected)
    assert ("F1", key("E")) in tiers(expected) and ("F2", key("Y")) in tiers(expected)
    assert w.flagged()[("F1", key("E"))] is False and w.colour("E") == "red"


@pytest.mark.parametrize(
    "body, reason",
    [
        ({"action": "report", "report_id": "r9", "person_id": "123"}, "person_id"),
        ({"action": "explode", "report_id": "r1"}, "action"),
        ({"action": "withdraw", "report_id": "nope"}, "no report"),
        ({**REPORT, "sample_time": t(13, 0).isoformat()}, "sample_time"),
    ],
)
async def test_bad_records_are_dead_lettered_with_the_reason(body: dict, reason: str) -> None:  # type: ignore[type-arg]
    w = World()
    await w.send(body)
    (letter,) = w.dead.letters
    assert reason in letter.reason and letter.topic == "f0-reports"


async def test_a_crash_between_the_index_and_the_join_loses_no_late_exposure() -> None:
    """The scan was indexed, the worker died before joining it: the replayed batch finds
    it already indexed and joins it anyway."""
    from streams.scans import ScanRecorder
    from tests.fakes import MemoryPlaces, MemorySink

    w = World()
    await w.send(REPORT)
    late = {
        "scan_id": "late-E",
        "person_id": pid("E"),
        "checkpoint_id": "cp1",
        "ts": t(10, 10, 40).isoformat(),
        "t_out": t(10, 11, 20).isoformat(),
        "source": "gate",
    }
    record = [RawRecord(orjson.dumps(late), 0, 1)]

    def recorder(join):  # type: ignore[no-untyped-def]
        return ScanRecorder(
            index=w.index,
            sink=MemorySink(),
            places=MemoryPlaces(),
            guard=Guard(w.dead, AgentHealth(), retry_delay=0.001),
            pseudonymize=lambda i: "k" + i,
            topic="scans",
            max_age=None,
            join=join,
        )

    await recorder(None).record(record)  # indexed, then the worker died
    assert w.out.late_records == []
    replay = await recorder(w.tracer.join).record(record)
    assert replay.duplicates == 1 and len(w.out.late_records) == 1
    await w.drain_late()
    assert w.flagged()[("F1", key("E"))] is False
