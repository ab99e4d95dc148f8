"""The ``store_cases`` agent's work on fakes: report-status records become f0_cases rows
(pseudonymous, with the case's ward), reports traced earlier are copied at start, and
every bad record is dead-lettered with the reason."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime

import orjson

from infra.faults import AgentHealth
from streams.cases import CaseRecorder
from streams.guard import Guard
from streams.scans import RawRecord
from tests.fakes import MemoryDeadLetters
from tracing.reports import ReportState

NOW = datetime(2021, 11, 12, 3, 0, tzinfo=UTC)


def state(report_id: str, person: str, status: str, offset: int | None) -> ReportState:
    body = {
        "report_id": report_id,
        "person_id": person,
        "sample_time": "2021-11-10T02:00:00+00:00",
        "reported_at": "2021-11-11T02:00:00+00:00",
    }
    return ReportState(report_id, person, f"key-{person}", body, status, offset=offset)  # type: ignore[arg-type]


class Reports:
    def __init__(self, *states: ReportState) -> None:
        self.held = {s.report_id: s for s in states}

    async def get(self, report_id: str) -> ReportState | None:
        return self.held.get(report_id)

    async def states(self, since: datetime) -> list[ReportState]:
        return list(self.held.values())


class People:
    async def get_many(self, ids: Sequence[str]) -> list[dict[str, str] | None]:
        home = {"001090000001": {"district": "Ba Đình", "ward": "Phường Kim Mã"}}
        return [home.get(i) for i in ids]


class Sink:
    def __init__(self, fail_first: int = 0) -> None:
        self.rows: list[list[object]] = []
        self.fail_first = fail_first

    async def insert(self, rows: Sequence[Sequence[object]]) -> None:
        if self.fail_first:
            self.fail_first -= 1
            raise ConnectionError("ClickHouse away")
        self.rows.extend(list(r) for r in rows)


def recorder(reports: Reports, sink: Sink, dead: MemoryDeadLetters) -> CaseRecorder:
    return CaseRecorder(
        reports=reports,
        people=People(),
        sink=sink,
        guard=Guard(dead, AgentHealth(), retry_delay=0.001, max_delay=0.002),
        topic="report-status",
        clock=lambda: NOW,
    )


def record(value: object, offset: int) -> RawRecord:
    if isinstance(value, dict) and "status" in value:  # a whole ReportStatusChanged
        value = {"counts": {}, "rule_version": "v1", "changed_at": NOW.isoformat(), **value}
    raw = value if isinstance(value, bytes) else orjson.dumps(value)
    return RawRecord(raw, 0, offset)


def test_statuses_become_case_rows_and_bad_records_dead_letters() -> None:
    reports = Reports(
        state("r1", "001090000001", "done", 7),
        state("r2", "001090000002", "withdrawn", 9),
        state("r3", "001090000003", "tracing", None),
    )
    sink, dead = Sink(fail_first=2), MemoryDeadLetters()
    batch = [
        record({"report_id": "r1", "status": "held"}, 0),
        record({"report_id": "r1", "status": "done"}, 1),  # the same report: one row
        record({"report_id": "r2", "status": "withdrawn"}, 2),
        record({"report_id": "r3", "status": "tracing"}, 3),  # not decided yet: no row
        record({"report_id": "gone", "status": "done"}, 4),  # past the retention: no row
        record(b"{not json", 5),
        record({"status": "done"}, 6),
    ]
    asyncio.run(recorder(reports, sink, dead).handle(batch))
    assert (
        sink.rows
        == [
            [
                "r1",
                "key-001090000001",  # the pseudonym, never the ID number
                "Ba Đình",
                "Phường Kim Mã",
                datetime(2021, 11, 10, 2, 0, tzinfo=UTC),
                datetime(2021, 11, 11, 2, 0, tzinfo=UTC),
                "done",
                7,
                NOW,
            ],
            ["r2", "key-001090000002", "", "", *sink.rows[1][4:6], "withdrawn", 9, NOW],
        ]
    )
    assert [(d.offset, d.reason.split(":")[0]) for d in dead.letters] == [
        (5, "record"),  # "record: Invalid JSON: ..."
        (6, "report_id"),
    ]
    assert "Invalid JSON" in dead.letters[0].reason


def test_reports_traced_before_are_copied_at_start() -> None:
    reports = Reports(
        state("r1", "001090000001", "held", 3), state("r3", "001090000003", "tracing", None)
    )
    sink, dead = Sink(), MemoryDeadLetters()
    copied = asyncio.run(recorder(reports, sink, dead).backfill())
    assert copied == 1
    assert [(r[0], r[6], r[7]) for r in sink.rows] == [("r1", "held", 3)]
    assert dead.letters == []
