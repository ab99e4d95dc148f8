"""The gate's SQLite scan queue: durable across close and reopen, in order, exactly
what was acknowledged leaves it."""

import sqlite3
import time
from pathlib import Path

from gate.queue import ScanQueue


def scan(i: int) -> dict[str, object]:
    return {
        "scan_id": f"g{i:04d}",
        "person_id": "001090123456",
        "checkpoint_id": "cp-1",
        "ts": "2021-09-01T08:00:00+07:00",
        "source": "gate",
    }


def test_pending_scans_survive_a_reopen_in_order(tmp_path: Path) -> None:
    path = tmp_path / "q" / "gate.sqlite"
    with ScanQueue(path) as q:
        for i in range(20):
            assert q.put(scan(i))
        assert q.mark_sent(["g0000", "g0001", "g0005"]) == 3
    with ScanQueue(path) as q:
        pending = q.pending(100)
        ids = [p.scan_id for p in pending]
        assert ids == [f"g{i:04d}" for i in range(20) if i not in (0, 1, 5)]
        assert pending[0].scan == scan(2)
        assert q.depth() == 17
        assert [p.scan_id for p in q.pending(3)] == ["g0002", "g0003", "g0004"]


def test_the_file_is_wal_and_fully_synchronous(tmp_path: Path) -> None:
    q = ScanQueue(tmp_path / "gate.sqlite")
    try:
        assert q._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert q._db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    finally:
        q.close()


def test_a_committed_put_is_visible_to_another_connection_at_once(tmp_path: Path) -> None:
    """What a crash right after put() would leave: the row is in the database files."""
    path = tmp_path / "gate.sqlite"
    q = ScanQueue(path)
    q.put(scan(1))
    other = sqlite3.connect(path)
    try:
        assert other.execute("SELECT scan_id FROM scans WHERE state='pending'").fetchall() == [
            ("g0001",)
        ]
    finally:
        other.close()
        q.close()


def test_a_repeated_scan_id_is_queued_once(tmp_path: Path) -> None:
    with ScanQueue(tmp_path / "gate.sqlite") as q:
        assert q.put(scan(1))
        assert not q.put(scan(1))
        assert q.depth() == 1
        q.mark_sent(["g0001"])
        assert not q.put(scan(1))  # already sent: not queued again
        assert q.depth() == 0


def test_mark_sent_counts_only_pending_scans(tmp_path: Path) -> None:
    with ScanQueue(tmp_path / "gate.sqlite") as q:
        q.put(scan(1))
        assert q.mark_sent(["g0001", "g9999"]) == 1
        assert q.mark_sent(["g0001"]) == 0
        assert q.mark_sent([]) == 0
        assert q.counts() == {"pending": 0, "sent": 1, "rejected": 0}


def test_rejected_scans_leave_the_pending_list_with_their_reason(tmp_path: Path) -> None:
    with ScanQueue(tmp_path / "gate.sqlite") as q:
        for i in range(3):
            q.put(scan(i))
        assert q.mark_rejected({"g0001": "ts: older than the tracing retention"}) == 1
        assert [p.scan_id for p in q.pending()] == ["g0000", "g0002"]
        row = q._db.execute("SELECT error FROM scans WHERE scan_id='g0001'").fetchone()
        assert row == ("ts: older than the tracing retention",)


def test_prune_forgets_old_finished_scans_never_pending_ones(tmp_path: Path) -> None:
    with ScanQueue(tmp_path / "gate.sqlite") as q:
        for i in range(3):
            q.put(scan(i))
        q.mark_sent(["g0000"])
        q.mark_rejected({"g0001": "bad"})
        time.sleep(0.01)
        assert q.prune(keep_seconds=0) == 2
        assert [p.scan_id for p in q.pending()] == ["g0002"]


def test_last_known_decisions_are_kept_per_card(tmp_path: Path) -> None:
    path = tmp_path / "gate.sqlite"
    with ScanQueue(path) as q:
        assert q.recall("001090123456") is None
        q.remember("001090123456", "deny", "red", ["F1"])
        q.remember("001090123456", "allow", "green", ["vaccinated"])
    with ScanQueue(path) as q:
        known = q.recall("001090123456")
        assert known is not None
        assert (known.decision, known.colour, known.reasons) == ("allow", "green", ["vaccinated"])
