"""Applying matched health records: update the resident's record and card colour in
Redis (live gate answers) and its pseudonymous row in ClickHouse (analytics)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Protocol

import orjson
from pydantic import ValidationError

from registry.cards import RuleBook
from registry.health import apply_record
from registry.residents import recompute
from streams.scans import DeadLetterPort, RawRecord
from tracing.events import DeadLetter, HealthRecordImported


class ResidentPort(Protocol):
    async def get_many(self, ids: Sequence[str]) -> list[dict[str, str] | None]: ...
    async def update_many(self, updates: dict[str, dict[str, str]]) -> None: ...


class ResidentSinkPort(Protocol):
    async def upsert(self, residents: Sequence[dict[str, str]]) -> None: ...


class StatusUpdater:
    def __init__(
        self,
        *,
        residents: ResidentPort,
        sink: ResidentSinkPort,
        dead_letters: DeadLetterPort,
        rules: RuleBook,
        topic: str,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.residents = residents
        self.sink = sink
        self.dead_letters = dead_letters
        self.rules = rules
        self.topic = topic
        self.clock = clock

    def decode(
        self, records: Sequence[RawRecord]
    ) -> tuple[list[HealthRecordImported], list[DeadLetter]]:
        events, dead = [], []
        for rec in records:
            try:
                body = orjson.loads(rec.value or b"")
            except orjson.JSONDecodeError as exc:
                dead.append(
                    DeadLetter(
                        topic=self.topic,
                        reason=f"not valid JSON: {exc}",
                        payload=(rec.value or b"").decode("utf-8", "replace"),
                        partition=rec.partition,
                        offset=rec.offset,
                    )
                )
                continue
            for item in body if isinstance(body, list) else [body]:
                try:
                    events.append(HealthRecordImported.model_validate(item))
                except ValidationError as exc:
                    dead.append(
                        DeadLetter(
                            topic=self.topic,
                            reason=str(exc).splitlines()[0]
                            + ": "
                            + "; ".join(e["msg"] for e in exc.errors()),
                            payload=orjson.dumps(item).decode()[:10_000],
                            partition=rec.partition,
                            offset=rec.offset,
                        )
                    )
        return events, dead

    async def apply(self, records: Sequence[RawRecord]) -> int:
        events, dead = self.decode(records)
        by_person: dict[str, list[HealthRecordImported]] = defaultdict(list)
        for e in events:
            by_person[e.person_id].append(e)
        ids = list(by_person)
        current = await self.residents.get_many(ids)
        now = self.clock()
        updates: dict[str, dict[str, str]] = {}
        for pid, fields in zip(ids, current, strict=True):
            if fields is None:
                dead.extend(
                    DeadLetter(
                        topic=self.topic,
                        reason="person_id not in the registry",
                        payload=e.model_dump_json(),
                    )
                    for e in by_person[pid]
                )
                continue
            merged = dict(fields)
            for e in by_person[pid]:
                merged.update(apply_record(merged, e.kind, e.record))
            merged.update(recompute(merged, self.rules, now))
            changed = {k: v for k, v in merged.items() if fields.get(k) != v}
            if set(changed) - {"updated_at"}:
                updates[pid] = changed
        if dead:
            await self.dead_letters.send(dead)
        if updates:
            await self.residents.update_many(updates)
            await self.sink.upsert(
                [
                    {**(f or {}), **updates[pid], "source": by_person[pid][-1].kind}
                    for pid, f in zip(ids, current, strict=True)
                    if pid in updates
                ]
            )
        return len(updates)
