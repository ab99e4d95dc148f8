"""The scan recorder over in-memory fakes: exactly once, dead letters, and faults at every
step (transient ones retried, permanent ones isolated), never a stall, never a loss."""

from datetime import UTC, datetime, timedelta

import orjson
import pytest

from infra.faults import AgentHealth
from registry.pseudonym import Pseudonymizer
from streams.guard import Guard
from streams.scans import RawRecord, ScanRecorder, bounded
from tests.fakes import (
    Faults,
    MemoryDeadLetters,
    MemoryIndex,
    MemoryMarks,
    MemoryPlaces,
    MemorySink,
)

NOW = datetime(2026, 11, 27, 10, 0, tzinfo=UTC)


def recorder(
    sink: MemorySink | None = None, faults: Faults | None = None, marks: MemoryMarks | None = None
) -> tuple[ScanRecorder, MemoryIndex, MemorySink, MemoryDeadLetters]:
    faults = faults or Faults()
    index, dead = MemoryIndex(faults), MemoryDeadLetters(faults)
    sink = sink or MemorySink(faults=faults)
    r = ScanRecorder(
        index=index,
        sink=sink,
        places=MemoryPlaces(),
        guard=Guard(dead, AgentHealth(), retry_delay=0.001, max_delay=0.002),
        pseudonymize=Pseudonymizer(b"k" * 32),
        topic="scans",
        clock=lambda: NOW,
        marks=marks,
    )
    return r, index, sink, dead


def records(n: int, start: int = 0, **over: object) -> list[RawRecord]:
    return [
        RawRecord(
            orjson.dumps(
                {
                    "scan_id": f"s{i}",
                    "person_id": "001090123456",
                    "checkpoint_id": f"cp{i % 7}",
                    "ts": (NOW - timedelta(minutes=i % 60)).isoformat(),
                    "source": "self",
                    **over,
                }
            )
        )
        for i in range(start, start + n)
    ]


async def test_duplicates_inside_and_across_batches_count_once() -> None:
    r, index, sink, _ = recorder()
    first = await r.record(records(100) + records(10))
    again = await r.record(records(100))
    assert (first.recorded, first.duplicates) == (100, 10)
    assert (again.recorded, again.duplicates) == (0, 100)
    assert len(index.visits) == 100 and index.processed == 100 and len(sink.rows) == 100


async def test_visits_are_pseudonymous_and_default_to_dwell() -> None:
    r, _index, sink, _ = recorder()
    await r.record(records(1))
    v = sink.rows[0]
    assert "001090123456" not in v.person_key and len(v.person_key) == 32
    assert v.t_out - v.t_in == timedelta(minutes=30)


async def test_bad_records_go_to_dead_letters_and_good_ones_survive() -> None:
    r, _index, _, dead = recorder()
    bad = [RawRecord(b"garbage"), RawRecord(orjson.dumps({"scan_id": "x"}))]
    result = await r.record(records(3) + bad)
    assert result.recorded == 3
    assert len(dead.letters) == 2 and "not valid JSON" in dead.letters[0].reason


@pytest.mark.parametrize(
    ("step", "when"),
    [
        ("dedup", "before"),
        ("sink", "before"),
        ("sink", "after"),
        ("index", "before"),
        ("index", "after"),
        ("dead-letters", "before"),
        ("dead-letters", "after"),
    ],
)
async def test_transient_failures_at_every_step_are_retried_and_count_once(
    step: str, when: str
) -> None:
    faults = Faults()
    faults.plan(step, when, ConnectionError(f"{step} unreachable"), times=3)
    r, index, sink, dead = recorder(faults=faults)
    result = await r.record([*records(50), RawRecord(b"not json")])
    assert faults.raised.count((step, when)) == 3
    assert result.recorded == 50 and index.processed == 50 and len(index.visits) == 50
    assert sink.distinct == 50
    assert len({d.payload for d in dead.letters}) == 1  # the bad record, buried (once or
    # twice if the dead-letter reply was lost: the topic is at-least-once, like Kafka)
    assert r.guard.health.failing == {}  # reported while failing, cleared once it passed


async def test_health_reports_a_step_while_it_is_failing() -> None:
    faults = Faults()
    faults.plan("sink", "before", ConnectionError("ClickHouse unreachable"), times=2)
    health = AgentHealth()
    seen: list[dict[str, object]] = []

    class Watching(MemorySink):
        async def insert(self, visits, places, again=frozenset(), lanes=None):  # type: ignore[no-untyped-def]
            seen.append(dict(health.report()))
            await super().insert(visits, places, again, lanes)

    sink = Watching(faults=faults)
    r, _, _, _dead = recorder(sink=sink, faults=faults)
    r.guard.health = health
    await r.record(records(5))
    assert "ClickHouse insert" in seen[1] and "unreachable" in str(seen[1])
    assert health.failing == {}


async def test_a_refused_record_is_dead_lettered_and_the_rest_written() -> None:
    def refuse(visits):  # type: ignore[no-untyped-def]
        bad = [v for v in visits if v.checkpoint_id == "cp3"]
        return "Code: 53. Type mismatch in column checkpoint_id" if bad else None

    r, index, sink, dead = recorder(sink=MemorySink(refuse=refuse))
    result = await r.record(records(70))
    assert result.recorded == 60 and result.refused == 10
    assert sink.distinct == 60 and index.processed == 60
    assert len(dead.letters) == 10
    assert all("Type mismatch" in d.reason and "cp3" in d.payload for d in dead.letters)


async def test_a_batch_spanning_too_many_partitions_is_split_not_stalled() -> None:
    # ClickHouse refuses an insert touching more than 100 monthly partitions; scans over
    # 101 months once stalled the worker for good.
    def refuse(visits):  # type: ignore[no-untyped-def]
        months = {(v.t_in.year, v.t_in.month) for v in visits}
        return "Too many partitions for single INSERT block" if len(months) > 100 else None

    r, _index, sink, dead = recorder(sink=MemorySink(refuse=refuse))
    r.max_age = timedelta(days=31 * 110)
    batch = [
        RawRecord(
            orjson.dumps(
                {
                    "scan_id": f"m{i}",
                    "person_id": "001090123456",
                    "checkpoint_id": "cp",
                    "ts": (NOW - timedelta(days=31 * i)).isoformat(),
                    "source": "gate",
                }
            )
        )
        for i in range(101)
    ]
    result = await r.record(batch)
    assert result.recorded == 101 and sink.distinct == 101 and dead.letters == []


def test_batches_are_bounded_in_bytes() -> None:
    recs = [RawRecord(b"x" * 400) for _ in range(10)]
    parts = list(bounded(recs, 1000))
    assert [len(p) for p in parts] == [2, 2, 2, 2, 2]
    assert [len(p) for p in bounded([RawRecord(b"y" * 5000)], 1000)] == [1]


async def test_records_nested_deeper_than_json_writes_are_dead_lettered() -> None:
    r, _index, _, dead = recorder()
    deep = b'{"scan_id": ' + b"[" * 300 + b"]" * 300 + b"}"
    result = await r.record([*records(2), RawRecord(deep)])
    assert result.recorded == 2 and len(dead.letters) == 1
    assert dead.letters[0].payload.startswith('{"scan_id": [[[')


async def test_stopping_while_a_store_is_away_abandons_instead_of_acknowledging() -> None:
    import asyncio

    abandoned: list[str] = []
    faults = Faults()
    faults.plan("sink", "before", ConnectionError("ClickHouse unreachable"), times=1000)
    r, _, sink, _ = recorder(faults=faults)
    r.guard.abandon = abandoned.append
    task = asyncio.create_task(r.record(records(5)))
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert abandoned == ["ClickHouse insert"] and sink.rows == []


class Crash(BaseException):
    """The process killed mid-batch (nothing after it runs)."""


def at(partition: int, first: int, recs: list[RawRecord]) -> list[RawRecord]:
    return [RawRecord(r.value, partition, first + i) for i, r in enumerate(recs)]


async def test_a_batch_replayed_after_a_crash_tells_the_sink_what_it_may_have_sent() -> None:
    faults = Faults()
    r, index, sink, _ = recorder(faults=faults, marks=MemoryMarks())
    await r.record(at(0, 0, records(10)))
    await r.record(at(1, 0, records(10, start=100)))
    assert sink.resent == []  # nothing replayed: nothing marked
    # Killed after the sink took s10..s19 and before the index (and the offset commit).
    faults.plan("index", "before", Crash())
    with pytest.raises(Crash):
        await r.record(at(0, 10, records(10, start=10)))
    # Started again: the uncommitted records come back, with new ones after them, and
    # another partition's new records in the same batch.
    result = await r.record(
        at(0, 10, records(10, start=10))
        + at(0, 20, records(5, start=20))
        + at(1, 10, records(5, start=110))
    )
    assert result.recorded == 20 and len(index.visits) == 40
    assert sorted(sink.resent) == sorted(f"s{i}" for i in range(10, 20))
    # Each partition's rows in a lane of their own: a resend follows what it repeats.
    lanes = dict(sink.lanes)
    assert {lanes[f"s{i}"] for i in range(25)} == {0}
    assert {lanes[f"s{i}"] for i in range(100, 115)} == {1}
    # Past the replay, nothing is marked again.
    await r.record(at(0, 25, records(5, start=25)))
    assert len(sink.resent) == 10


async def test_without_replay_marks_every_scan_is_sent_as_possibly_sent_before() -> None:
    faults = Faults()
    faults.plan("marks", "before", ConnectionError("Redis unreachable"))
    r, _, sink, _ = recorder(faults=faults, marks=MemoryMarks(faults))
    result = await r.record(at(0, 0, records(8)))
    assert result.recorded == 8 and sorted(sink.resent) == sorted(f"s{i}" for i in range(8))
    await r.record(at(0, 8, records(8, start=8)))  # the marks answer again
    assert len(sink.resent) == 8


async def test_a_try_that_may_have_been_sent_goes_again_marked() -> None:
    """The sink's reply lost (the records sent, the acknowledgement not seen): the retry
    says these rows may be there already."""
    faults = Faults()
    faults.plan("sink", "after", ConnectionError("connection reset"))
    r, index, sink, _ = recorder(faults=faults, marks=MemoryMarks())
    result = await r.record(at(0, 0, records(5)))
    assert result.recorded == 5 and len(index.visits) == 5
    assert len(sink.rows) == 10  # sent twice...
    assert sorted(sink.resent) == sorted(f"s{i}" for i in range(5))  # ...the second marked
