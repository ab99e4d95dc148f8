"""Rebuilding Redis from ClickHouse (Redis is live state, not the record): the visit
indexes, checkpoints, residents' statuses, and the exposures still flagged."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from infra.clickhouse import ClickHouse, as_utc
from infra.ledger import ImportLedger
from infra.redis_store import CheckpointDirectory, VisitIndex
from infra.residents import ClickHouseRegistry, ResidentStore
from infra.staff import StaffStore
from registry.cards import RuleBook
from registry.rebuild import rebuild_statuses
from tracing.exposure import Exposure
from tracing.reports import status_entry


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


async def rebuild_exposures(clickhouse: ClickHouse, residents: ResidentStore) -> int:
    """Every exposure still flagged (the ClickHouse ``exposures`` table, last version of
    each) back on its resident (``x:<report_id>``), so F1 and F2 statuses survive a loss
    of Redis; returns how many were restored (people in the registry only)."""
    sql = (
        "SELECT report_id, person_key, tier, via_key, reason, checkpoint_id, overlap_start, "
        f"overlap_end FROM {clickhouse.db}.exposures FINAL WHERE withdrawn = 0"
    )
    rows = await asyncio.to_thread(clickhouse.call, lambda c: list(c.query(sql).result_rows))
    exposures = [
        Exposure(str(r), str(k), t, str(via), reason, cp or None, as_utc(a), as_utc(b))
        for r, k, t, via, reason, cp, a, b in rows
    ]
    restored = 0
    for i in range(0, len(exposures), 10_000):
        part = exposures[i : i + 10_000]
        ids = await residents.ids_of(sorted({e.person_key for e in part}))
        changes: dict[str, dict[str, str | None]] = {}
        for e in part:
            if e.person_key in ids:
                changes.setdefault(ids[e.person_key], {})[f"x:{e.report_id}"] = status_entry(e)
                restored += 1
        await residents.set_fields(changes)
    return restored


@dataclass
class Rebuilt:
    visits_restored: int
    residents_restored: int
    checkpoints_restored: int
    exposures_restored: int = 0


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
    owned: dict[str, list[str]] = {}
    for cp in cps:
        if cp.get("owner"):
            owned.setdefault(cp["owner"], []).append(cp["checkpoint_id"])
    organisations = StaffStore(residents.r, residents.p)  # owners see their checkpoints again
    for organisation, ids in owned.items():
        await organisations.own(organisation, ids)
    people = await rebuild_statuses(
        residents,
        analytics,
        ledger,
        pseudonymize,
        rules,
        progress=lambda n: progress("residents", n),
    )
    visits = await rebuild_visit_index(clickhouse, index, window, lambda n: progress("visits", n))
    await residents.index_people()  # pseudonym → ID and households, for tracing
    exposures = await rebuild_exposures(clickhouse, residents)
    await rebuild_cases(clickhouse, residents)
    return Rebuilt(visits, people, len(cps), exposures)


async def rebuild_cases(clickhouse: ClickHouse, residents: ResidentStore) -> int:
    """Every F0 of a report traced (the ClickHouse ``f0_cases`` table, last version of
    each, status done) back on its resident (``f0:<report_id>`` = the sample time, as the
    tracer writes it), so a reported F0 stays red after a loss of Redis; returns how many
    residents were restored."""
    sql = (
        "SELECT report_id, person_key, sample_time FROM "
        f"{clickhouse.db}.f0_cases FINAL WHERE status = 'done'"
    )
    rows = await asyncio.to_thread(clickhouse.call, lambda c: list(c.query(sql).result_rows))
    ids = await residents.ids_of(sorted({str(k) for _, k, _ in rows}))
    changes: dict[str, dict[str, str | None]] = {}
    for report_id, key, sample_time in rows:
        if key in ids:
            changes.setdefault(ids[key], {})[f"f0:{report_id}"] = as_utc(sample_time).isoformat()
    await residents.set_fields(changes)
    return len(changes)
