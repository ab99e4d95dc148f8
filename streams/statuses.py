"""Applying matched health records (the ``update_statuses`` agent's work): the resident's
facts and card colour, written to ClickHouse first (the pseudonymous history from which
Redis can be rebuilt), then Redis (live gate answers), then marked applied in the import
ledger, so only an applied record makes a later one a duplicate.

Messages are keyed by ``person_id``: one person's records reach one worker, in order.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Protocol

import orjson
from pydantic import ValidationError

from registry.cards import RuleBook
from registry.errors import quote
from registry.health import apply_record
from registry.importer import conflict_reason, review_item
from registry.imports import KINDS, content_of
from registry.residents import recompute
from streams.guard import Guard
from streams.scans import RawRecord
from tracing.events import DeadLetter, HealthRecordImported, payload_text, validation_errors

log = logging.getLogger(__name__)


class ResidentPort(Protocol):
    async def get_many(self, ids: Sequence[str]) -> list[dict[str, str] | None]: ...
    async def update_many(self, updates: dict[str, dict[str, str]]) -> None: ...


class ResidentSinkPort(Protocol):
    async def upsert(
        self, residents: Sequence[dict[str, str]], facts: Sequence[HealthRecordImported]
    ) -> None: ...


class AppliedPort(Protocol):
    async def applied(self, keys: list[str]) -> list[str | None]: ...
    async def mark_applied(self, contents: dict[str, str]) -> None: ...
    async def queue_review(self, items: list[dict[str, object]]) -> None: ...


class StatusUpdater:
    def __init__(
        self,
        *,
        residents: ResidentPort,
        sink: ResidentSinkPort,
        applied: AppliedPort,
        guard: Guard,
        rules: RuleBook,
        topic: str,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.residents = residents
        self.sink = sink
        self.applied = applied
        self.guard = guard
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
                dead.append(self._letter(f"not valid JSON: {exc}", payload_text(rec.value), rec))
                continue
            if body == []:
                dead.append(self._letter("empty batch: no record in it", "[]", rec))
            for item in body if isinstance(body, list) else [body]:
                try:
                    event = HealthRecordImported.model_validate(item)
                except ValidationError as exc:
                    errors = validation_errors(exc)
                    payload = payload_text(item, rec.value)
                    dead.append(self._letter("; ".join(errors), payload, rec))
                    continue
                problem = self._unusable(event)
                if problem is not None:
                    dead.append(self._letter(problem, payload_text(item, rec.value), rec))
                    continue
                events.append(event)
        return events, dead

    def _unusable(self, e: HealthRecordImported) -> str | None:
        """Why a record cannot be applied to anyone, found alone: in its person's group a
        failure would dead-letter that person's other records with it."""
        if e.kind not in KINDS:
            return f"kind: unknown kind {quote(e.kind)}"
        try:
            recompute(apply_record({}, e.kind, e.record), self.rules, self.clock())
            content_of(e.kind, e.record)
        except Exception as exc:  # the record's content breaks the rules' code
            return f"record: not a usable {e.kind} record ({type(exc).__name__}: {exc})"[:1000]
        return None

    def _letter(self, reason: str, payload: str, rec: RawRecord | None = None) -> DeadLetter:
        return DeadLetter(
            topic=self.topic,
            reason=reason,
            payload=payload,
            partition=rec.partition if rec else None,
            offset=rec.offset if rec else None,
        )

    async def apply(self, records: Sequence[RawRecord]) -> int:
        """Apply a batch; returns how many residents changed. Every record ends applied or
        dead-lettered before this returns."""
        events, dead = self.decode(records)
        by_person: dict[str, list[HealthRecordImported]] = defaultdict(list)
        for e in events:
            by_person[e.person_id].append(e)
        try:
            known = await self.guard.retry(
                "registry read", lambda: self.residents.get_many(list(by_person))
            )
        except Exception as exc:  # refused, not away: the batch is dead-lettered, not lost
            reason = f"registry read refused: {type(exc).__name__}: {exc}"
            dead.extend(
                self._letter(reason, e.model_dump_json()) for es in by_person.values() for e in es
            )
            await self.guard.bury(dead)
            return 0
        for pid, fields in zip(list(by_person), known, strict=True):
            if fields is None:
                dead.extend(
                    self._letter("person_id not in the registry", e.model_dump_json())
                    for e in by_person.pop(pid)
                )
        await self.guard.bury(dead)
        changed = 0

        async def apply_people(pids: Sequence[str]) -> None:
            nonlocal changed
            changed += await self._apply_people(pids, by_person)

        def letter(pid: str, reason: str) -> DeadLetter:
            return self._letter(
                reason, orjson.dumps([e.model_dump(mode="json") for e in by_person[pid]]).decode()
            )

        await self.guard.write_each("status update", list(by_person), apply_people, letter)
        return changed

    async def _apply_people(
        self, pids: Sequence[str], by_person: dict[str, list[HealthRecordImported]]
    ) -> int:
        current = await self.residents.get_many(pids)
        keys = [e.record_id for pid in pids for e in by_person[pid]]
        known = dict(zip(keys, await self.applied.applied(keys), strict=True))
        now = self.clock()
        updates: dict[str, dict[str, str]] = {}
        rows: list[dict[str, str]] = []
        facts: list[HealthRecordImported] = []
        reviews: list[dict[str, object]] = []
        for pid, fields in zip(pids, current, strict=True):
            if fields is None:
                raise LookupError(f"person {pid[:3]}… left the registry during the update")
            merged = dict(fields)
            for e in by_person[pid]:
                content = content_of(e.kind, e.record)
                before = known.get(e.record_id)
                if before is not None and before != content and not e.supersedes:
                    # Two sources disagree on one fact, and neither was applied when the
                    # other was imported: the later one waits for a steward, never lost.
                    reason = conflict_reason(e.kind, before, content) + " (found when applying)"
                    reviews.append(
                        review_item(e.model_dump(mode="json"), reason, conflicts_with=before)
                    )
                    continue
                merged.update(apply_record(merged, e.kind, e.record, replace=e.supersedes))
                known[e.record_id] = content
                facts.append(e)
            merged.update(recompute(merged, self.rules, now))
            change = {k: v for k, v in merged.items() if fields.get(k) != v}
            if set(change) - {"updated_at"}:
                updates[pid] = change
                rows.append({**merged, "source": by_person[pid][-1].kind})
        # ClickHouse first (history, idempotent by record), Redis next, the ledger last: a
        # crash anywhere replays the batch, and every step converges on replay.
        await self.sink.upsert(rows, facts)
        if updates:
            await self.residents.update_many(updates)
        await self.applied.mark_applied({e.record_id: content_of(e.kind, e.record) for e in facts})
        if reviews:
            await self.applied.queue_review(reviews)
        return len(updates)
