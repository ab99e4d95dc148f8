"""Recording scans: decode a batch of raw records, drop duplicates, index, sink, count.

The recorder talks to small ports (STYLE.md §6) so it is tested with in-memory fakes;
the Faust agent in :mod:`streams.app` only feeds it batches.

A record on ``scans`` is one ``ScanRecorded`` JSON object, or a JSON array of them (a
device's batch, produced as one record by the API). Bad records or bad items go to the
dead-letter topic with the reason; good items around them are processed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Protocol, TypeVar

import orjson

from tracing.events import MAX_SCAN_AGE, DeadLetter, ScanRecorded, validate_scan
from tracing.visits import Visit, visit_from_scan

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class RawRecord:
    value: bytes | None
    partition: int | None = None
    offset: int | None = None


class VisitIndexPort(Protocol):
    async def unseen(self, scan_ids: Sequence[str]) -> list[bool]: ...
    async def add(self, visits: Sequence[Visit], *, count: bool = True) -> int: ...


class PlacesPort(Protocol):
    async def lookup(self, ids: Sequence[str]) -> dict[str, dict[str, str]]: ...


class VisitSinkPort(Protocol):
    async def insert(self, visits: Sequence[Visit], places: dict[str, dict[str, str]]) -> None: ...


class DeadLetterPort(Protocol):
    async def send(self, letters: Sequence[DeadLetter]) -> None: ...


@dataclass
class BatchResult:
    recorded: int = 0
    duplicates: int = 0
    dead: list[DeadLetter] = field(default_factory=list)


def decode_scans(
    records: Sequence[RawRecord], topic: str, now: datetime, max_age: timedelta = MAX_SCAN_AGE
) -> tuple[list[ScanRecorded], list[DeadLetter]]:
    """Parse raw records into scans; everything unusable becomes a dead letter with a reason."""
    scans: list[ScanRecorded] = []
    dead: list[DeadLetter] = []

    def bury(reason: str, payload: object, rec: RawRecord) -> None:
        text = (
            payload.decode("utf-8", "replace")
            if isinstance(payload, bytes)
            else (orjson.dumps(payload).decode())
        )
        dead.append(
            DeadLetter(
                topic=topic,
                reason=reason,
                payload=text[:10_000],
                partition=rec.partition,
                offset=rec.offset,
            )
        )

    for rec in records:
        if not rec.value:
            bury("empty record", b"", rec)
            continue
        try:
            body = orjson.loads(rec.value)
        except orjson.JSONDecodeError as exc:
            bury(f"not valid JSON: {exc}", rec.value, rec)
            continue
        items = body if isinstance(body, list) else [body]
        for item in items:
            scan, errors = validate_scan(item, now, max_age)
            if scan is None:
                bury("; ".join(errors), item, rec)
            else:
                scans.append(scan)
    return scans, dead


class ScanRecorder:
    """Turns batches of scan records into visits in the index and the analytics sink."""

    def __init__(
        self,
        *,
        index: VisitIndexPort,
        sink: VisitSinkPort,
        places: PlacesPort,
        dead_letters: DeadLetterPort,
        pseudonymize: Callable[[str], str],
        topic: str,
        dwell: timedelta = timedelta(minutes=30),
        max_age: timedelta = MAX_SCAN_AGE,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        retry_delay: float = 0.5,
    ) -> None:
        self.index = index
        self.sink = sink
        self.places = places
        self.dead_letters = dead_letters
        self.pseudonymize = pseudonymize
        self.topic = topic
        self.dwell = dwell
        self.max_age = max_age
        self.clock = clock
        self.retry_delay = retry_delay

    async def record(self, records: Sequence[RawRecord]) -> BatchResult:
        scans, dead = decode_scans(records, self.topic, self.clock(), self.max_age)
        result = BatchResult(dead=dead)
        if dead:
            await self._retry("dead-letter send", lambda: self.dead_letters.send(dead))
        # Drop duplicates inside the batch, then those recorded before (replays, re-sends).
        unique: dict[str, ScanRecorded] = {}
        for s in scans:
            unique.setdefault(s.scan_id, s)
        fresh_flags = await self._retry("dedup lookup", lambda: self.index.unseen(list(unique)))
        fresh = [s for s, ok in zip(unique.values(), fresh_flags, strict=True) if ok]
        result.duplicates = len(scans) - len(fresh)
        if not fresh:
            return result
        visits = [visit_from_scan(s, self.pseudonymize(s.person_id), self.dwell) for s in fresh]
        places = await self._retry(
            "checkpoint lookup", lambda: self.places.lookup([v.checkpoint_id for v in visits])
        )
        # Sink first, index (which marks scans seen) last: a crash in between replays the
        # batch, and both writes are idempotent by scan_id.
        await self._retry("ClickHouse insert", lambda: self.sink.insert(visits, places))
        await self._retry("Redis index", lambda: self.index.add(visits))
        result.recorded = len(visits)
        return result

    async def _retry(self, what: str, action: Callable[[], Awaitable[T]]) -> T:
        delay = self.retry_delay
        while True:
            try:
                return await action()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a store is down: wait and retry, never drop the batch
                log.warning("%s failed (%s); retrying in %.1fs", what, exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)
