"""The sink's writer (streams/rows.py) over in-memory fakes: a table with insert-time
views receives each row once, whether the rows come again from a worker's resend, from
the sink's own replay after a stop, twice in one batch, or from an insert retried after
a lost reply; nothing new is checked and nothing is lost."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

import pytest

from infra.faults import AgentHealth
from infra.sink import TABLES, Table
from streams.guard import Guard
from streams.rows import Item, RowWriter
from streams.scans import RawRecord
from tests.fakes import Faults, MemoryDeadLetters, MemoryMarks
from tracing.events import DeadLetter

T = datetime(2021, 8, 1, 9, 30, tzinfo=UTC)
VISITS = TABLES["visits"]
RESIDENTS = TABLES["residents"]


class MemoryRows:
    """The store: rows per table; ``written`` answers from them."""

    def __init__(self, faults: Faults) -> None:
        self.rows: dict[str, list[Sequence[object]]] = {}
        self.checked = 0  # rows asked about
        self.faults = faults

    async def insert(self, table: Table, rows: Sequence[Sequence[object]]) -> None:
        self.faults.check("insert", "before")
        self.rows.setdefault(table.name, []).extend(rows)
        self.faults.check("insert", "after")

    async def written(self, table: Table, rows: Sequence[Sequence[object]]) -> set[str]:
        self.faults.check("written", "before")
        self.checked += len(rows)
        key = table.columns.index(table.counted_by)
        held = {str(r[key]) for r in self.rows.get(table.name, [])}
        return {str(r[key]) for r in rows} & held

    def keys(self, table: Table = VISITS) -> list[str]:
        return sorted(str(r[0]) for r in self.rows.get(table.name, []))


def visit(scan_id: str) -> list[object]:
    return [scan_id, "pk", "cp1", "Ba Đình", "", T, T, "gate", T]


def items(rec: RawRecord, *scan_ids: str, table: Table = VISITS) -> list[Item]:
    return [(rec, table, visit(s)) for s in scan_ids]


def writer(faults: Faults | None = None) -> tuple[RowWriter, MemoryRows, MemoryMarks]:
    faults = faults or Faults()
    store, marks = MemoryRows(faults), MemoryMarks(faults)

    def letter(item: Item, reason: str) -> DeadLetter:
        return DeadLetter(topic="store-rows", reason=reason, payload=str(item[2][0]))

    guard = Guard(MemoryDeadLetters(), AgentHealth(), retry_delay=0.001, max_delay=0.002)
    return RowWriter(store, guard, marks, letter), store, marks


async def test_new_records_are_written_without_a_check() -> None:
    w, store, _ = writer()
    a, b = RawRecord(b"", 0, 0), RawRecord(b"", 1, 0)
    await w.write([*items(a, "s1", "s2"), *items(b, "s3")], set())
    await w.write(items(RawRecord(b"", 0, 1), "s4"), set())
    assert store.keys() == ["s1", "s2", "s3", "s4"] and store.checked == 0


async def test_a_worker_resend_writes_only_what_is_missing() -> None:
    w, store, _ = writer()
    await w.write(items(RawRecord(b"", 0, 0), "s1", "s2"), set())
    resend = RawRecord(b"", 0, 1)
    await w.write(items(resend, "s1", "s2", "s3"), {id(resend)})
    assert store.keys() == ["s1", "s2", "s3"] and store.checked == 3


async def test_the_sinks_own_replay_below_its_mark_is_checked() -> None:
    w, store, marks = writer()
    await w.write(items(RawRecord(b"", 0, 0), "s1"), set())
    await w.write(items(RawRecord(b"", 0, 1), "s2"), set())
    # Stopped before its commit: offsets 0 and 1 come again, then offset 2 is new.
    await w.write(
        [*items(RawRecord(b"", 0, 0), "s1"), *items(RawRecord(b"", 0, 1), "s2"),
         *items(RawRecord(b"", 0, 2), "s3")],
        set(),
    )  # fmt: skip
    assert store.keys() == ["s1", "s2", "s3"] and store.checked == 2
    assert marks.marks == {0: 2}


async def test_a_row_twice_in_one_batch_is_written_once() -> None:
    w, store, _ = writer()
    first, resend = RawRecord(b"", 0, 0), RawRecord(b"", 0, 1)
    await w.write([*items(first, "s1"), *items(resend, "s1", "s2")], {id(resend)})
    assert store.keys() == ["s1", "s2"]


async def test_an_insert_retried_after_a_lost_reply_is_not_written_twice() -> None:
    faults = Faults()
    faults.plan("insert", "after", ConnectionError("reply lost"))
    w, store, _ = writer(faults)
    await w.write(items(RawRecord(b"", 0, 0), "s1", "s2"), set())
    assert store.keys() == ["s1", "s2"]


async def test_without_marks_every_row_is_checked_and_none_lost() -> None:
    faults = Faults()
    faults.plan("marks", "before", ConnectionError("Redis away"), times=2)
    w, store, _ = writer(faults)
    await w.write(items(RawRecord(b"", 0, 0), "s1"), set())
    await w.write(items(RawRecord(b"", 0, 1), "s1", "s2"), set())
    assert store.keys() == ["s1", "s2"] and store.checked == 3


async def test_a_refused_check_writes_the_rows_anyway() -> None:
    faults = Faults()
    faults.plan("written", "before", ValueError("Code: 62. Max query size exceeded"))
    w, store, _ = writer(faults)
    resend = RawRecord(b"", 0, 0)
    await w.write(items(resend, "s1"), {id(resend)})
    assert store.keys() == ["s1"]


async def test_a_retry_whose_check_is_refused_writes_the_rows_not_dead_letters() -> None:
    faults = Faults()
    faults.plan("insert", "before", ConnectionError("ClickHouse away"))
    faults.plan("written", "before", ValueError("Code: 62. Max query size exceeded"), times=10)
    w, store, _ = writer(faults)
    await w.write(items(RawRecord(b"", 0, 0), "s1", "s2"), set())
    assert store.keys() == ["s1", "s2"]


async def test_a_record_of_repeated_rows_still_raises_the_mark() -> None:
    w, _, marks = writer()
    await w.write([*items(RawRecord(b"", 0, 10), "s1"), *items(RawRecord(b"", 0, 11), "s1")], set())
    assert marks.marks == {0: 11}


@pytest.mark.parametrize("replayed", [False, True])
async def test_tables_without_insert_time_views_take_rows_as_they_come(replayed: bool) -> None:
    w, store, marks = writer()
    rec = RawRecord(b"", 0, 0)
    rows: list[Item] = [(rec, RESIDENTS, ["pk1", *[""] * (len(RESIDENTS.columns) - 1)])] * 2
    await w.write(rows, {id(rec)} if replayed else set())
    assert len(store.rows["residents"]) == 2 and store.checked == 0 and marks.marks == {}
