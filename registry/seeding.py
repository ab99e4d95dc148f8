"""Seeding a synthetic city (the use case): residents into the live registry, their
pseudonymous rows into analytics, and the checkpoints."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from registry.cards import HealthRecord, RuleBook, card_colour
from registry.ports import CheckpointRegistry, RegistryAnalytics, ResidentRegistry
from registry.residents import analytics_row, doses_json, status_fields
from registry.synthetic import ResidentChunk, SeedPlan, SyntheticCity, checkpoints


@dataclass
class SeedReport:
    residents: int = 0
    households: int = 0
    checkpoints: int = 0
    colours: dict[str, int] | None = None


def _chunk_rows(
    chunk: ResidentChunk,
    rules: RuleBook,
    now: datetime,
    pseudonymize: Callable[[str], str],
    colours: dict[str, int],
) -> tuple[list[dict[str, str]], list[list[object]]]:
    rule = rules.for_("001", now.date())
    redis_rows: list[dict[str, str]] = []
    ch_rows: list[list[object]] = []
    for i in range(len(chunk)):
        doses = chunk.doses[i]
        recovered = chunk.recovered_at[i]
        status = card_colour(
            HealthRecord(doses=tuple(d for d, _ in doses), recovered_at=recovered), rule, now
        )
        colours[status.colour] = colours.get(status.colour, 0) + 1
        pid = chunk.ids[i]
        dob = chunk.dob[i]
        row = {
            "id": pid,
            "name": chunk.names[i],
            "dob": dob.isoformat(),
            "gender": chunk.gender[i],
            "province": "001",
            "birth_province": chunk.province[i],
            "district": chunk.district[i],
            "ward": chunk.ward[i],
            "address": chunk.address[i],
            "household": chunk.household[i],
            "doses": doses_json([(d, v, n + 1) for n, (d, v) in enumerate(doses)]),
            **status_fields(status, now),
            "source": "seed",
        }
        if recovered is not None:
            row["recovered_at"] = recovered.isoformat()
        redis_rows.append(row)
        ch_rows.append(analytics_row(row, pseudonymize, "seed", now))
    return redis_rows, ch_rows


async def seed_city(
    plan: SeedPlan,
    *,
    registry: ResidentRegistry,
    places: CheckpointRegistry,
    analytics: RegistryAnalytics,
    pseudonymize: Callable[[str], str],
    rules: RuleBook,
    progress: Callable[[int], None] = lambda n: None,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> SeedReport:
    """Generate and load a plan; the Redis load of one chunk overlaps ClickHouse's insert."""
    now = clock()
    report = SeedReport(colours={})
    assert report.colours is not None
    households: set[str] = set()
    pending: asyncio.Future[None] | None = None
    for chunk in SyntheticCity(plan).chunks():
        redis_rows, ch_rows = _chunk_rows(chunk, rules, now, pseudonymize, report.colours)
        households.update(chunk.household)
        if pending:
            await pending
        pending = asyncio.ensure_future(analytics.insert_residents(ch_rows))
        await registry.put_many(redis_rows)
        report.residents += len(chunk)
        progress(len(chunk))
    if pending:
        await pending
    cps = checkpoints(plan)
    await places.put_many(
        {
            "checkpoint_id": c.checkpoint_id,
            "name": c.name,
            "type": c.type,
            "district": c.district,
            "ward": c.ward,
            "capacity": str(c.capacity),
        }
        for c in cps
    )
    await analytics.insert_checkpoints(
        [[c.checkpoint_id, c.name, c.type, c.district, c.ward, c.capacity, now] for c in cps]
    )
    report.households = len(households)
    report.checkpoints = len(cps)
    return report
