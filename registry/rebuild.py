"""Rebuilding residents' statuses in the live registry from the history in analytics (the
use case behind ``dancu rebuild``): Redis is live state, ClickHouse holds every applied
health record by pseudonym, so after Redis is lost and the registry export re-imported,
replaying each resident's records gives the same facts, colour and reasons as before."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from registry.cards import RuleBook
from registry.health import apply_record
from registry.imports import KINDS, content_of, record_key
from registry.residents import recompute

# The facts that come only from health records: reset, then replayed from the history.
REPLAYED_FIELDS = ("doses", "f0_since", "recovered_at", "neg_test_at")


@dataclass(frozen=True, slots=True)
class PastRecord:
    record_id: str
    kind: str
    record: dict[str, object]
    supersedes: bool


class HistoryPort(Protocol):
    async def records_of(self, person_keys: Sequence[str]) -> dict[str, list[PastRecord]]:
        """Each person's applied records, oldest first (one per natural key)."""
        ...


class LiveRegistryPort(Protocol):
    def chunks_of_ids(self, size: int) -> AsyncIterator[list[str]]: ...
    async def get_many(self, ids: Sequence[str]) -> list[dict[str, str] | None]: ...
    async def update_many(self, updates: dict[str, dict[str, str]]) -> None: ...


class AppliedMarksPort(Protocol):
    async def mark_applied(self, contents: dict[str, str]) -> None: ...


async def rebuild_statuses(
    registry: LiveRegistryPort,
    history: HistoryPort,
    applied: AppliedMarksPort,
    pseudonymize: Callable[[str], str],
    rules: RuleBook,
    *,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    progress: Callable[[int], None] = lambda n: None,
    chunk: int = 5_000,
) -> int:
    """Replay every resident's history onto their registry record; returns residents
    whose health facts were restored."""
    now = clock()
    restored = 0
    async for ids in registry.chunks_of_ids(chunk):
        current = await registry.get_many(ids)
        keys = {pseudonymize(i): i for i in ids}
        past = await history.records_of(list(keys))
        updates: dict[str, dict[str, str]] = {}
        marks: dict[str, str] = {}
        for pid, fields in zip(ids, current, strict=True):
            if fields is None:
                continue
            records = past.get(pseudonymize(pid), [])
            merged = {k: v for k, v in fields.items() if k not in REPLAYED_FIELDS}
            for r in records:
                merged.update(apply_record(merged, r.kind, r.record, replace=r.supersedes))
                kind = KINDS.get(r.kind)
                if kind is not None:  # the plain key, recomputed: analytics keeps it keyed
                    marks[record_key(kind, pid, r.record)] = content_of(r.kind, r.record)
            merged.update(recompute(merged, rules, now))
            change = {k: v for k, v in merged.items() if fields.get(k) != v}
            for k in REPLAYED_FIELDS:  # a fact the history no longer holds is cleared
                if fields.get(k) and k not in merged:
                    change[k] = ""
            if change:
                updates[pid] = change
            restored += bool(records)
        if updates:
            await registry.update_many(updates)
        if marks:
            await applied.mark_applied(marks)
        progress(len(ids))
    return restored
