"""The gate's on-disk queue of scans not yet acknowledged by the platform (SQLite).

A gate must never lose an entry: a scan is committed here (WAL, ``synchronous=FULL``, so
the commit is fsync'd before :meth:`ScanQueue.put` returns) before anything tries to
send it, and leaves the pending state only when the platform answered 202 for it. A
restart finds the pending scans in their order and sends them first. A scan that was
sent but whose answer was lost is sent again; that is harmless because its ``scan_id``
is stable and the platform counts a scan ID once.

The same file keeps each card's last online decision at this gate, for the
``last-known`` offline policy (see :mod:`gate.program`).
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

SCHEMA = """
CREATE TABLE IF NOT EXISTS scans (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,   -- the order scans are replayed in
    scan_id TEXT NOT NULL UNIQUE,
    body TEXT NOT NULL,                      -- the scan as sent (JSON)
    queued_at REAL NOT NULL,
    state TEXT NOT NULL DEFAULT 'pending',   -- pending | sent | rejected
    done_at REAL,
    error TEXT                               -- why the platform rejected it
);
CREATE INDEX IF NOT EXISTS scans_pending ON scans (state, seq);
CREATE TABLE IF NOT EXISTS decisions (
    person_id TEXT PRIMARY KEY,
    decision TEXT NOT NULL,
    colour TEXT NOT NULL,
    reasons TEXT NOT NULL,                   -- JSON list
    at REAL NOT NULL                         -- unix time of the online answer
);
"""

# Sent and rejected rows are kept this long (a week of a busy gate is a few MB), so a
# field technician can still see what left the device; pending rows are never pruned.
KEEP_DONE_SECONDS = 7 * 24 * 3600


class QueueError(Exception):
    """The queue file cannot be opened or written."""


@dataclass(frozen=True, slots=True)
class Pending:
    seq: int
    scan_id: str
    scan: dict[str, object]


@dataclass(frozen=True, slots=True)
class KnownDecision:
    decision: str
    colour: str
    reasons: list[str]
    at: float


class ScanQueue:
    """Pending scans in order, durable on every write. Thread-safe (one connection
    behind a lock), so the capture thread and the sender may share it."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fresh = not self.path.exists()
            self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            mode = self._db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise QueueError(f"{self.path}: SQLite refused WAL mode (got {mode!r})")
            self._db.execute("PRAGMA synchronous=FULL")  # fsync the WAL on every commit
            self._db.execute("PRAGMA busy_timeout=5000")
            self._db.executescript(SCHEMA)
        except sqlite3.Error as exc:
            raise QueueError(f"{self.path}: cannot open the scan queue: {exc}") from exc
        if fresh:
            _fsync_dir(self.path.parent)  # the new file's directory entry survives a crash
        self._lock = threading.Lock()
        self.prune()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> ScanQueue:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- scans ----------------------------------------------------------------------

    def put(self, scan: dict[str, object]) -> bool:
        """Append a scan (durable when this returns). False when its scan_id is already
        queued (a repeat is not queued twice)."""
        scan_id = str(scan["scan_id"])
        body = json.dumps(scan, ensure_ascii=False, separators=(",", ":"))
        with self._lock:
            cur = self._db.execute(
                "INSERT OR IGNORE INTO scans (scan_id, body, queued_at) VALUES (?, ?, ?)",
                (scan_id, body, time.time()),
            )
            return cur.rowcount == 1

    def pending(self, limit: int = 500) -> list[Pending]:
        """The oldest pending scans, in the order they were queued."""
        with self._lock:
            rows = self._db.execute(
                "SELECT seq, scan_id, body FROM scans WHERE state = 'pending' ORDER BY seq LIMIT ?",
                (limit,),
            ).fetchall()
        return [Pending(seq, sid, json.loads(body)) for seq, sid, body in rows]

    def mark_sent(self, scan_ids: Iterable[str]) -> int:
        """The platform acknowledged these scans; returns how many were pending."""
        return self._finish(scan_ids, "sent", None)

    def mark_rejected(self, rejected: dict[str, str]) -> int:
        """The platform refused these scans for good (scan_id → its errors): they leave
        the pending list, so one bad scan never blocks the ones behind it."""
        n = 0
        for scan_id, error in rejected.items():
            n += self._finish([scan_id], "rejected", error)
        return n

    def _finish(self, scan_ids: Iterable[str], state: str, error: str | None) -> int:
        ids = list(scan_ids)
        if not ids:
            return 0
        now = time.time()
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                n = 0
                for sid in ids:
                    n += self._db.execute(
                        "UPDATE scans SET state = ?, done_at = ?, error = ? "
                        "WHERE scan_id = ? AND state = 'pending'",
                        (state, now, error, sid),
                    ).rowcount
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return n

    def depth(self) -> int:
        """How many scans wait to be sent."""
        with self._lock:
            row = self._db.execute("SELECT count(*) FROM scans WHERE state = 'pending'").fetchone()
        return int(row[0])

    def counts(self) -> dict[str, int]:
        """Rows by state (pending, sent, rejected)."""
        with self._lock:
            rows = self._db.execute("SELECT state, count(*) FROM scans GROUP BY state").fetchall()
        return {"pending": 0, "sent": 0, "rejected": 0, **{s: int(n) for s, n in rows}}

    def prune(self, keep_seconds: float = KEEP_DONE_SECONDS) -> int:
        """Forget sent and rejected scans older than ``keep_seconds``."""
        with self._lock:
            return self._db.execute(
                "DELETE FROM scans WHERE state != 'pending' AND done_at < ?",
                (time.time() - keep_seconds,),
            ).rowcount

    # --- last known decisions ---------------------------------------------------------

    def remember(self, person_id: str, decision: str, colour: str, reasons: list[str]) -> None:
        """Keep a card's latest online decision here (for the last-known offline policy)."""
        with self._lock:
            self._db.execute(
                "INSERT INTO decisions (person_id, decision, colour, reasons, at) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT (person_id) DO UPDATE SET "
                "decision = excluded.decision, colour = excluded.colour, "
                "reasons = excluded.reasons, at = excluded.at",
                (person_id, decision, colour, json.dumps(reasons, ensure_ascii=False), time.time()),
            )

    def recall(self, person_id: str) -> KnownDecision | None:
        with self._lock:
            row = self._db.execute(
                "SELECT decision, colour, reasons, at FROM decisions WHERE person_id = ?",
                (person_id,),
            ).fetchone()
        if row is None:
            return None
        return KnownDecision(row[0], row[1], list(json.loads(row[2])), float(row[3]))


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return  # not every platform opens directories; the file itself is fsync'd
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
