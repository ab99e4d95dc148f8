"""Rebuilding Redis from ClickHouse (Redis is live state, not the record): the visit
indexes, checkpoints, and residents' statuses."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from infra.clickhouse import ClickHouse
from infra.ledger import ImportLedger
from infra.redis_store import CheckpointDirectory, VisitIndex
from infra.residents import ClickHouseRegistry, ResidentStore
from registry.cards import RuleBook
from registry.rebuild import rebuild_statuses


async def rebuild_visit_index(
    clickhouse: ClickHouse,
    index: VisitIndex,
    window: timedelta,
    progress: Callable[[int], None] = lambda n: None,
) -> int:
    """Re-add every visit of the tracing window to the indexes; returns visits restored."""
    since = datetime.now(UTC) - window
    chunks = clickhouse.iter_visits(since)
    restored = 0
    while True:
        chunk = await asyncio.to_thread(next, chunks, None)
        if chunk is None:
            break
        # Counted like live scans: only marks that were missing grow the counters, so a
        # rebuild over a live index adds nothing and after a loss restores the count.
        await index.add(chunk, count=True)
        restored += len(chunk)
        progress(restored)
    return restored


@dataclass
class Rebuilt:
    visits_restored: int
    residents_restored: int
    checkpoints_restored: int


async def rebuild_all(
    clickhouse: ClickHouse,
    index: VisitIndex,
    residents: ResidentStore,
    places: CheckpointDirectory,
    ledger: ImportLedger,
    pseudonymize: Callable[[str], str],
    rules: RuleBook,
    window: timedelta,
    progress: Callable[[str, int], None] = lambda what, n: None,
) -> Rebuilt:
    """Restore all of Redis that is derived state: checkpoints, residents' health facts,
    colours and applied marks (from the history), and the visit indexes. The registry's
    identities come from re-importing its export first (`dancu import residents`)."""
    analytics = ClickHouseRegistry(clickhouse)
    cps = await analytics.all_checkpoints()
    await places.put_many(cps)
    people = await rebuild_statuses(
        residents,
        analytics,
        ledger,
        pseudonymize,
        rules,
        progress=lambda n: progress("residents", n),
    )
    visits = await rebuild_visit_index(clickhouse, index, window, lambda n: progress("visits", n))
    return Rebuilt(visits, people, len(cps))
