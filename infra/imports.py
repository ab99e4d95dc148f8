"""Importing records from sources: validate every row, match it against the registry,
send matched records through Kafka, and keep a report and one outcome per row.

Every row ends in exactly one outcome with a reason (matched, mismatch, unknown-id,
invalid, duplicate). Mismatches wait in a review queue for a data steward.
"""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer
from redis.asyncio import Redis

from infra import topics
from infra.residents import ResidentStore
from infra.settings import Settings
from registry.imports import KINDS, Kind, ParsedRow, header_problems, parse_row
from registry.matching import verify

CHUNK = 10_000
SAMPLES = 5
FP_BUCKETS = 64


class ImportFailed(ValueError):
    """The import as a whole cannot run (unknown kind, missing columns, unreadable file)."""


@dataclass
class ImportReport:
    import_id: str
    kind: str
    source: str
    started_at: str
    finished_at: str = ""
    rows: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)
    reasons: dict[str, dict[str, int]] = field(default_factory=dict)
    samples: dict[str, list[dict[str, object]]] = field(default_factory=dict)
    ignored_columns: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def match_rate(self) -> float:
        considered = self.rows - self.outcomes.get("duplicate", 0)
        return self.outcomes.get("matched", 0) / considered if considered else 0.0

    def as_dict(self) -> dict[str, object]:
        return {**asdict(self), "match_rate": round(self.match_rate, 4)}


def _reason_key(reason: str) -> str:
    """Group reasons without their per-row details (numbers and quoted values)."""
    return re.sub(r"'[^']*'|\d+", "…", reason)


class ImportLedger:
    """Where imports leave their trace: reports and outcomes (data dir + Redis), duplicate
    fingerprints and the review queue (Redis), source freshness (Redis)."""

    def __init__(self, redis: Redis, prefix: str, data_dir: Path) -> None:
        self.r = redis
        self.p = prefix
        self.dir = data_dir / "imports"

    def records_path(self, import_id: str) -> Path:
        return self.dir / import_id / "records.jsonl"

    async def save_report(self, report: ImportReport) -> None:
        await self.r.hset(
            f"{self.p}imports",
            report.import_id,  # type: ignore[misc]
            orjson.dumps(report.as_dict()).decode(),
        )

    async def report(self, import_id: str) -> dict[str, Any] | None:
        raw = await self.r.hget(f"{self.p}imports", import_id)  # type: ignore[misc]
        return orjson.loads(raw) if raw else None

    async def reports(self) -> list[dict[str, Any]]:
        raw = await self.r.hvals(f"{self.p}imports")  # type: ignore[misc]
        return sorted((orjson.loads(v) for v in raw), key=lambda r: r["started_at"])

    def _bucket(self, fp: str) -> str:
        return f"{self.p}imported:{int(fp[:4], 16) % FP_BUCKETS}"

    async def imported(self, fingerprints: list[str]) -> list[bool]:
        by: dict[str, list[int]] = defaultdict(list)
        for i, fp in enumerate(fingerprints):
            by[self._bucket(fp)].append(i)
        out = [False] * len(fingerprints)
        async with self.r.pipeline(transaction=False) as pipe:
            for bucket, idx in by.items():
                pipe.smismember(bucket, [fingerprints[i] for i in idx])
            found = await pipe.execute()
        for idx, flags in zip(by.values(), found, strict=True):
            for i, f in zip(idx, flags, strict=True):
                out[i] = bool(f)
        return out

    async def mark_imported(self, fingerprints: list[str]) -> None:
        by: dict[str, list[str]] = defaultdict(list)
        for fp in fingerprints:
            by[self._bucket(fp)].append(fp)
        async with self.r.pipeline(transaction=False) as pipe:
            for bucket, fps in by.items():
                pipe.sadd(bucket, *fps)
            await pipe.execute()

    async def queue_review(self, items: list[dict[str, object]]) -> None:
        if items:
            await self.r.hset(
                f"{self.p}review",
                mapping={  # type: ignore[misc]
                    str(i["review_id"]): orjson.dumps(i).decode() for i in items
                },
            )

    async def review_items(self, limit: int = 100) -> list[dict[str, Any]]:
        raw = await self.r.hvals(f"{self.p}review")  # type: ignore[misc]
        return sorted((orjson.loads(v) for v in raw), key=lambda i: i["review_id"])[:limit]

    async def take_review(self, review_id: str) -> dict[str, Any] | None:
        raw = await self.r.hget(f"{self.p}review", review_id)  # type: ignore[misc]
        if raw is None:
            return None
        await self.r.hdel(f"{self.p}review", review_id)  # type: ignore[misc]
        return dict(orjson.loads(raw))

    async def touch_freshness(self, source: str, newest: str) -> None:
        key = f"{self.p}freshness"
        old = await self.r.hget(key, source)  # type: ignore[misc]
        if old is None or str(old) < newest:
            await self.r.hset(key, source, newest)  # type: ignore[misc]

    async def freshness(self) -> dict[str, str]:
        raw = await self.r.hgetall(f"{self.p}freshness")  # type: ignore[misc]
        return {str(k): str(v) for k, v in raw.items()}


def _record_time(kind: Kind, record: dict[str, object]) -> str:
    value = record.get(kind.time_column)
    return str(value) if value else ""


async def send_records(
    producer: AIOKafkaProducer,
    settings: Settings,
    events: list[dict[str, object]],
    per_message: int = 500,
) -> None:
    """Produce matched records to ``health-records`` (arrays), durable before returning."""
    topic = settings.topic(topics.HEALTH_RECORDS)
    futures = []
    for i in range(0, len(events), per_message):
        chunk = events[i : i + per_message]
        futures.append(
            await producer.send(topic, orjson.dumps(chunk), key=str(chunk[0]["person_id"]).encode())
        )
    await asyncio.gather(*futures)


class Importer:
    def __init__(
        self,
        settings: Settings,
        store: ResidentStore,
        ledger: ImportLedger,
        producer: AIOKafkaProducer,
    ) -> None:
        self.settings = settings
        self.store = store
        self.ledger = ledger
        self.producer = producer

    async def run(
        self,
        kind_name: str,
        header: list[str],
        rows: Iterator[dict[str, str | None]],
        source: str,
        progress: Callable[[int], None] = lambda n: None,
    ) -> ImportReport:
        kind = KINDS.get(kind_name)
        if kind is None:
            raise ImportFailed(
                f"unknown import kind {kind_name!r}; one of: " + ", ".join([*KINDS, "residents"])
            )
        missing, extra = header_problems(kind, header)
        if missing:
            raise ImportFailed(
                f"{kind.name} needs column(s) {', '.join(missing)}; the file "
                f"has {', '.join(header) or 'none'}"
            )
        t0 = time.perf_counter()
        now = datetime.now(UTC)
        import_id = f"imp-{now:%Y%m%d%H%M%S}-{uuid.uuid4().hex[:6]}"
        report = ImportReport(import_id, kind.name, source, now.isoformat(), ignored_columns=extra)
        out_path = self.ledger.records_path(import_id)
        out_path.parent.mkdir(parents=True, exist_ok=True)
        counts: Counter[str] = Counter()
        reasons: dict[str, Counter[str]] = defaultdict(Counter)
        samples: dict[str, list[dict[str, object]]] = defaultdict(list)
        seen_here: set[str] = set()
        newest = ""
        with open(out_path, "wb") as out:
            number = 0
            while True:
                chunk = []
                for raw in rows:
                    number += 1
                    if "__error__" in raw:
                        chunk.append(ParsedRow(number, None, error=str(raw["__error__"])))
                    else:
                        chunk.append(parse_row(kind, number, raw))
                    if len(chunk) >= CHUNK:
                        break
                if not chunk:
                    break
                outcomes, chunk_newest = await self._chunk(kind, import_id, chunk, seen_here)
                newest = max(newest, chunk_newest)
                lines = []
                for parsed, (outcome, reason) in zip(chunk, outcomes, strict=True):
                    line = {
                        "row": parsed.row,
                        "outcome": outcome,
                        "reason": reason,
                        "person_id": parsed.person_id,
                    }
                    lines.append(orjson.dumps(line))
                    counts[outcome] += 1
                    reasons[outcome][_reason_key(reason)] += 1
                    if len(samples[outcome]) < SAMPLES:
                        samples[outcome].append(line)
                out.write(b"\n".join(lines) + b"\n")
                progress(len(chunk))
        report.rows = sum(counts.values())
        report.outcomes = {
            o: counts.get(o, 0)
            for o in ("matched", "mismatch", "unknown-id", "invalid", "duplicate")
        }
        report.reasons = {o: dict(c.most_common(20)) for o, c in reasons.items()}
        report.samples = dict(samples)
        report.finished_at = datetime.now(UTC).isoformat()
        report.seconds = round(time.perf_counter() - t0, 2)
        await self.ledger.save_report(report)
        if newest:
            await self.ledger.touch_freshness(kind.name, newest)
        return report

    async def _chunk(
        self, kind: Kind, import_id: str, chunk: list[ParsedRow], seen_here: set[str]
    ) -> tuple[list[tuple[str, str]], str]:
        result: list[tuple[str, str] | None] = [None] * len(chunk)
        candidates: list[int] = []
        for i, p in enumerate(chunk):
            if p.error:
                result[i] = ("invalid", p.error)
            elif p.fingerprint in seen_here:
                result[i] = ("duplicate", "the same record appears earlier in this file")
            else:
                seen_here.add(p.fingerprint)
                candidates.append(i)
        before = await self.ledger.imported([chunk[i].fingerprint for i in candidates])
        fresh = []
        for i, done in zip(candidates, before, strict=True):
            if done:
                result[i] = ("duplicate", "already imported")
            else:
                fresh.append(i)
        registry = await self.store.get_identities([str(chunk[i].person_id) for i in fresh])
        events: list[dict[str, object]] = []
        reviews: list[dict[str, object]] = []
        newest = ""
        for i, known in zip(fresh, registry, strict=True):
            p = chunk[i]
            if known is None:
                result[i] = ("unknown-id", "ID not found in the registry")
                continue
            name, dob = known
            rec_dob = p.record.get("dob")
            match = verify(
                p.record.get("name"),  # type: ignore[arg-type]
                rec_dob if isinstance(rec_dob, date) else None,
                name,
                date.fromisoformat(dob),
            )
            record = {k: (v.isoformat() if isinstance(v, date) else v) for k, v in p.record.items()}
            event: dict[str, object] = {
                "record_id": p.fingerprint,
                "kind": kind.name,
                "person_id": p.person_id,
                "import_id": import_id,
                "record": record,
            }
            if match.matched:
                result[i] = ("matched", match.reason)
                events.append(event)
                newest = max(newest, _record_time(kind, p.record))
            else:
                result[i] = ("mismatch", match.reason + "; sent to the review queue")
                reviews.append(
                    {
                        "review_id": p.fingerprint,
                        "row": p.row,
                        "reason": match.reason,
                        "event": event,
                    }
                )
        if events:
            await send_records(self.producer, self.settings, events)
            await self.ledger.mark_imported([str(e["record_id"]) for e in events])
        await self.ledger.queue_review(reviews)
        return [r for r in result if r is not None], newest
