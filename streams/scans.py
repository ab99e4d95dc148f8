"""Recording scans: decode a batch of raw records, drop duplicates, index, sink, count.

The recorder talks to small ports (STYLE.md §6) so it is tested with in-memory fakes;
the Faust agent in :mod:`streams.app` only feeds it batches.

A record on ``scans`` is one ``ScanRecorded`` JSON object, or a JSON array of them (a
device's batch, produced as one record by the API). Bad records or bad items go to the
dead-letter topic with the reason; good items around them are processed.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Protocol

import orjson

from streams.guard import Guard
from tracing.events import MAX_SCAN_AGE, DeadLetter, ScanRecorded, payload_text, validate_scan
from tracing.visits import DEFAULT_DWELL, Visit, visit_from_scan

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RawRecord:
    value: bytes | None
    partition: int | None = None
    offset: int | None = None


class VisitIndexPort(Protocol):
    async def unseen(self, scan_ids: Sequence[str]) -> list[bool]: ...
    async def add(self, visits: Sequence[Visit], *, count: bool = True) -> int: ...


class PlacesPort(Protocol):
    async def lookup(self, ids: Iterable[str]) -> dict[str, dict[str, str]]: ...


class VisitSinkPort(Protocol):
    async def insert(
        self,
        visits: Sequence[Visit],
        places: dict[str, dict[str, str]],
        again: Collection[str] = frozenset(),
        lanes: Mapping[str, int] | None = None,
    ) -> None:
        """``again``: scan IDs possibly written before (only what is missing is kept);
        ``lanes``: each scan's partition on ``scans``, whose rows keep one order (so a
        resend never overtakes the first send)."""


class ReplayMarksPort(Protocol):
    async def advance(self, highest: Mapping[int, int]) -> dict[int, int]: ...


_warned_at = float("-inf")


async def maybe_written(marks: ReplayMarksPort | None, records: Sequence[RawRecord]) -> list[bool]:
    """Per record, whether an earlier delivery may have written it already: at or below
    its partition's replay mark as the mark stood before this batch (infra/replays.py).
    Raises the marks past the batch, so call it before the batch's first write. Without
    marks every record is new; when the marks do not answer, every record counts as
    possibly written (a check costs a query; a count made twice is wrong)."""
    if marks is None or not records:
        return [False] * len(records)
    highest: dict[int, int] = {}
    for rec in records:
        if rec.partition is not None and rec.offset is not None:
            highest[rec.partition] = max(highest.get(rec.partition, -1), rec.offset)
    try:
        before = await marks.advance(highest)
    except Exception as exc:
        global _warned_at
        if time.monotonic() - _warned_at > 10:  # once in a while, not once a batch
            _warned_at = time.monotonic()
            log.warning("replay marks unavailable (%s): batches are checked as replays", exc)
        return [True] * len(records)
    return [
        rec.partition is not None
        and rec.offset is not None
        and rec.offset <= before.get(rec.partition, -1)
        for rec in records
    ]


def bounded(records: Sequence[RawRecord], max_bytes: int) -> Iterator[list[RawRecord]]:
    """Split a batch so that no part holds more than ``max_bytes`` of payload (a part
    always holds at least one record): batches are bounded in bytes as well as records."""
    part: list[RawRecord] = []
    size = 0
    for rec in records:
        n = len(rec.value or b"")
        if part and size + n > max_bytes:
            yield part
            part, size = [], 0
        part.append(rec)
        size += n
    if part:
        yield part


@dataclass
class BatchResult:
    recorded: int = 0
    duplicates: int = 0
    refused: int = 0
    dead: list[DeadLetter] = field(default_factory=list)


def decode_scans(
    records: Sequence[RawRecord],
    topic: str,
    now: datetime,
    max_age: timedelta | None = MAX_SCAN_AGE,
    origins: list[RawRecord] | None = None,
) -> tuple[list[ScanRecorded], list[DeadLetter]]:
    """Parse raw records into scans; everything unusable becomes a dead letter with a reason.
    ``origins``, when given, receives each scan's record (in the same order)."""
    scans: list[ScanRecorded] = []
    dead: list[DeadLetter] = []

    def bury(reason: str, payload: object, rec: RawRecord) -> None:
        dead.append(
            DeadLetter(
                topic=topic,
                reason=reason,
                payload=payload_text(payload, rec.value),
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
        if body == []:
            bury("empty batch: no scan in it", body, rec)
        items = body if isinstance(body, list) else [body]
        for item in items:
            scan, errors = validate_scan(item, now, max_age)
            if scan is None:
                bury("; ".join(errors), item, rec)
            else:
                scans.append(scan)
                if origins is not None:
                    origins.append(rec)
    return scans, dead


class ScanRecorder:
    """Turns batches of scan records into visits in the analytics sink and the index."""

    def __init__(
        self,
        *,
        index: VisitIndexPort,
        sink: VisitSinkPort,
        places: PlacesPort,
        guard: Guard,
        pseudonymize: Callable[[str], str],
        topic: str,
        dwell: Callable[[datetime, str | None], timedelta] = lambda ts, kind: DEFAULT_DWELL,
        max_age: timedelta | None = MAX_SCAN_AGE,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        join: Callable[[Sequence[Visit]], Awaitable[object]] | None = None,
        marks: ReplayMarksPort | None = None,
    ) -> None:
        self.index = index
        self.sink = sink
        self.places = places
        self.guard = guard
        self.pseudonymize = pseudonymize
        self.topic = topic
        self.dwell = dwell
        self.max_age = max_age
        self.clock = clock
        self.join = join
        self.marks = marks

    async def _maybe_sent(
        self, records: Sequence[RawRecord], origin: Mapping[str, RawRecord]
    ) -> set[str]:
        """The scan IDs whose records may have reached the sink before."""
        flags = await maybe_written(self.marks, records)
        suspect = {id(rec) for rec, f in zip(records, flags, strict=True) if f}
        return {scan_id for scan_id, rec in origin.items() if id(rec) in suspect}

    def _letter(self, item: tuple[ScanRecorded, Visit], reason: str) -> DeadLetter:
        return DeadLetter(topic=self.topic, reason=reason, payload=item[0].model_dump_json())

    async def record(self, records: Sequence[RawRecord]) -> BatchResult:
        """Every record ends written or dead-lettered before this returns (see Guard)."""
        origins: list[RawRecord] = []
        scans, dead = decode_scans(records, self.topic, self.clock(), self.max_age, origins)
        result = BatchResult(dead=dead)
        await self.guard.bury(dead)
        # Drop duplicates inside the batch, then those recorded before (replays, re-sends).
        unique: dict[str, ScanRecorded] = {}
        origin: dict[str, RawRecord] = {}
        for s, rec in zip(scans, origins, strict=True):
            unique.setdefault(s.scan_id, s)
            origin.setdefault(s.scan_id, rec)
        try:
            flags = await self.guard.retry("dedup lookup", lambda: self.index.unseen(list(unique)))
        except Exception:  # a refused lookup: write them all, the writes are idempotent
            log.exception("dedup lookup refused; writing the batch without it")
            flags = [True] * len(unique)
        fresh = [s for s, ok in zip(unique.values(), flags, strict=True) if ok]
        seen = [s for s, ok in zip(unique.values(), flags, strict=True) if not ok]
        result.duplicates = len(scans) - len(fresh)
        # A replay re-joins the scans it finds already indexed: a crash between the index
        # write and the join must not lose a late exposure (a join that changes nothing
        # is harmless).
        rejoin = seen if self.join is not None else []
        if not fresh and not rejoin:
            return result
        try:
            places = await self.guard.retry(
                "checkpoint lookup",
                lambda: self.places.lookup({s.checkpoint_id for s in [*fresh, *rejoin]}),
            )
        except Exception:
            log.exception("checkpoint lookup refused; visits go without district")
            places = {}

        def pair(s: ScanRecorded) -> tuple[ScanRecorded, Visit]:
            # Without a check-out a visit lasts its checkpoint type's dwell (the rules).
            kind = (places.get(s.checkpoint_id) or {}).get("type")
            return s, visit_from_scan(s, self.pseudonymize(s.person_id), self.dwell(s.ts, kind))

        pairs = [pair(s) for s in fresh]

        def visits(items: Sequence[tuple[ScanRecorded, Visit]]) -> list[Visit]:
            return [v for _, v in items]

        # Sink first, index (which marks scans seen) last: a crash in between replays the
        # batch, and both writes are idempotent by scan_id. The sink is told which scans
        # may have been sent already (by this worker or the one before it on these
        # partitions, or by a try that failed after part of it was sent), so the
        # dashboard's insert-time counts take them once; and each scans partition's rows
        # keep a lane of their own, so a resend arrives after what it repeats.
        again = await self._maybe_sent(records, origin) if pairs else set()
        lanes = {
            scan_id: rec.partition for scan_id, rec in origin.items() if rec.partition is not None
        }
        tried: set[str] = set()

        async def sink(items: Sequence[tuple[ScanRecorded, Visit]]) -> None:
            try:
                await self.sink.insert(visits(items), places, again | tried, lanes)
            finally:
                tried.update(s.scan_id for s, _ in items)

        written = await self.guard.write_each("ClickHouse insert", pairs, sink, self._letter)
        indexed = await self.guard.write_each(
            "Redis index", written, lambda items: self.index.add(visits(items)), self._letter
        )
        result.recorded = len(indexed)
        result.refused = len(pairs) - len(indexed)
        joinable = [*indexed, *(pair(s) for s in rejoin)]
        if self.join is not None and joinable:
            # After the index write: joined against the infectious intervals, so a late
            # scan reaches the reports it touches (see streams.tracer). A join refused for
            # good dead-letters its scans (recorded already; a replay of the letter joins
            # them again).
            join = self.join
            await self.guard.write_each(
                "late-scan join",
                joinable,
                lambda items: join(visits(items)),
                lambda item, reason: self._letter(item, f"{reason} (the scan is recorded)"),
            )
        return result
