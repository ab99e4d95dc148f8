"""Rebuild Redis's visit indexes from ClickHouse (Redis is live state, not the record)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from infra.clickhouse import ClickHouse
from infra.redis_store import VisitIndex


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
        await index.add(chunk, count=False)
        restored += len(chunk)
        progress(restored)
    await index.r.set(f"{index.p}stats:processed", restored)
    return restored
