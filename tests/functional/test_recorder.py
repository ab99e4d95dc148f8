from datetime import UTC, datetime, timedelta

import orjson

from registry.pseudonym import Pseudonymizer
from streams.scans import RawRecord, ScanRecorder
from tests.fakes import MemoryDeadLetters, MemoryIndex, MemoryPlaces, MemorySink

NOW = datetime(2026, 11, 27, 10, 0, tzinfo=UTC)


def recorder(
    sink: MemorySink | None = None,
) -> tuple[ScanRecorder, MemoryIndex, MemorySink, MemoryDeadLetters]:
    index, sink, dead = MemoryIndex(), sink or MemorySink(), MemoryDeadLetters()
    r = ScanRecorder(
        index=index,
        sink=sink,
        places=MemoryPlaces(),
        dead_letters=dead,
        pseudonymize=Pseudonymizer(b"k" * 32),
        topic="scans",
        clock=lambda: NOW,
        retry_delay=0.01,
    )
    return r, index, sink, dead


def records(n: int, start: int = 0) -> list[RawRecord]:
    return [
        RawRecord(
            orjson.dumps(
                {
                    "scan_id": f"s{i}",
                    "person_id": "001090123456",
                    "checkpoint_id": f"cp{i % 7}",
                    "ts": (NOW - timedelta(minutes=i % 60)).isoformat(),
                    "source": "self",
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


async def test_store_outage_is_retried_not_dropped() -> None:
    r, index, sink, _ = recorder(MemorySink(fail_times=2))
    result = await r.record(records(5))
    assert result.recorded == 5 and len(sink.rows) == 5 and index.processed == 5


async def test_bad_records_go_to_dead_letters_and_good_ones_survive() -> None:
    r, _index, _, dead = recorder()
    bad = [RawRecord(b"garbage"), RawRecord(orjson.dumps({"scan_id": "x"}))]
    result = await r.record(records(3) + bad)
    assert result.recorded == 3
    assert len(dead.letters) == 2 and "not valid JSON" in dead.letters[0].reason
