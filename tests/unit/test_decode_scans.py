from datetime import UTC, datetime, timedelta

import orjson

from streams.scans import RawRecord, decode_scans

NOW = datetime(2026, 11, 27, 10, 0, tzinfo=UTC)


def scan(i: int, **over: object) -> dict[str, object]:
    body: dict[str, object] = {
        "scan_id": f"s{i}",
        "person_id": "001090123456",
        "checkpoint_id": "cp1",
        "ts": (NOW - timedelta(minutes=1)).isoformat(),
        "source": "gate",
    }
    body.update(over)
    return body


def rec(value: object) -> RawRecord:
    return RawRecord(value if isinstance(value, bytes) else orjson.dumps(value), 0, 1)


def test_single_and_batched_records_decode() -> None:
    scans, dead = decode_scans([rec(scan(1)), rec([scan(2), scan(3)])], "scans", NOW)
    assert [s.scan_id for s in scans] == ["s1", "s2", "s3"]
    assert dead == []
    assert scans[0].ts.tzinfo is not None


def test_every_kind_of_bad_record_is_a_dead_letter_with_its_reason() -> None:
    bad_id = scan(4, person_id="099090123456")
    missing = {k: v for k, v in scan(5).items() if k != "checkpoint_id"}
    future = scan(6, ts=(NOW + timedelta(hours=1)).isoformat())
    naive = scan(7, ts="2026-11-27T09:00:00")
    records = [
        rec(b"{not json"),
        rec(scan(1)),
        rec([bad_id, scan(2), missing]),
        rec(future),
        rec(naive),
        rec(b""),
        rec([1]),
    ]
    scans, dead = decode_scans(records, "scans", NOW)
    assert [s.scan_id for s in scans] == ["s1", "s2"]
    reasons = [d.reason for d in dead]
    assert len(dead) == 7
    assert reasons[0].startswith("not valid JSON")
    assert "unknown province code 099" in reasons[1]
    assert "checkpoint_id" in reasons[2] and "Field required" in reasons[2]
    assert "in the future" in reasons[3]
    assert "timezone" in reasons[4]
    assert reasons[5] == "empty record"
    assert "expected a JSON object" in reasons[6]
    assert all(d.topic == "scans" and d.offset == 1 for d in dead)
