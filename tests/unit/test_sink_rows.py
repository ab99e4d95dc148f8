"""The store-rows codec (infra/sink.py): rows round-trip with their times, records stay
under the size bound, and what the sink cannot write is refused with a named reason."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
import pytest

from infra.sink import RECORD_BYTES, TABLES, SinkRecordError, decode, encode

T = datetime(2021, 8, 1, 9, 30, tzinfo=UTC)


def visit(i: int) -> list[object]:
    return [f"s{i}", "pk", "cp1", "Ba Đình", "Kim Mã", T, T, "gate", T]


def test_rows_round_trip_with_their_times() -> None:
    [record] = encode("visits", [visit(1), visit(2)])
    table, rows, replayed = decode(record)
    assert table.name == "visits" and table.counted_by == "scan_id"
    assert rows == [visit(1), visit(2)]
    assert not replayed


def test_a_worker_marks_rows_it_may_have_sent_before() -> None:
    [record] = encode("visits", [visit(1)], replayed=True)
    assert decode(record) == (decode(encode("visits", [visit(1)])[0]).table, [visit(1)], True)
    assert not TABLES["residents"].counted_by and not TABLES["health_records"].counted_by


def test_large_batches_are_split_under_the_record_bound() -> None:
    rows = [visit(i) for i in range(40_000)]
    records = encode("visits", rows)
    assert len(records) > 1
    assert all(len(r) <= RECORD_BYTES + 1024 for r in records)
    assert [row[0] for r in records for row in decode(r)[1]] == [row[0] for row in rows]


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (b"\xff\xfe", "not valid JSON"),
        (b"[1, 2]", "a JSON object"),
        (orjson.dumps({"table": "secrets", "columns": [], "rows": []}), "unknown table"),
        (orjson.dumps({"table": "visits", "columns": ["scan_id"], "rows": []}), "do not match"),
        (encode("visits", [visit(1)])[0].replace(b'"rows":[', b'"rows":[[1],'), "9 values"),
        (encode("visits", [visit(1)])[0].replace(b"2021-08-01T09:30:00+00:00", b"soon"), "ISO"),
        (encode("visits", [visit(1)], replayed=True)[0].replace(b"true", b'"yes"'), "replayed"),
    ],
)
def test_what_cannot_be_written_is_refused_by_name(value: bytes, reason: str) -> None:
    with pytest.raises(SinkRecordError, match=reason):
        decode(value)


def test_only_known_tables_can_be_encoded() -> None:
    with pytest.raises(KeyError):
        encode("audit_log", [[1]])
