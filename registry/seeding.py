"""Seeding a synthetic city (the use case): residents into the live registry, their
pseudonymous rows into analytics, and the checkpoints."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import orjson

from registry.cards import RuleBook
from registry.health import VN_TZ, apply_record
from registry.imports import KINDS, Kind, record_key
from registry.ports import CheckpointRegistry, RegistryAnalytics, ResidentRegistry
from registry.residents import analytics_row, checkpoint_row, recompute
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
) -> tuple[list[dict[str, str]], list[list[object]], list[list[object]]]:
    """(registry rows, analytics rows, history rows) of a chunk. Seeded health facts go
    through the same records and the same ``apply_record`` as imported ones, so the
    history in analytics rebuilds exactly the seeded statuses."""
    redis_rows: list[dict[str, str]] = []
    ch_rows: list[list[object]] = []
    history: list[list[object]] = []
    vaccinations, recoveries = KINDS["vaccinations"], KINDS["recoveries"]
    for i in range(len(chunk)):
        pid = chunk.ids[i]
        row = {
            "id": pid,
            "name": chunk.names[i],
            "dob": chunk.dob[i].isoformat(),
            "gender": chunk.gender[i],
            "province": "001",
            "birth_province": chunk.province[i],
            "district": chunk.district[i],
            "ward": chunk.ward[i],
            "address": chunk.address[i],
            "household": chunk.household[i],
        }
        records: list[tuple[Kind, dict[str, object]]] = [
            (vaccinations, {"dose": n + 1, "vaccine": v, "date": d.isoformat()})
            for n, (d, v) in enumerate(chunk.doses[i])
        ]
        recovered = chunk.recovered_at[i]
        if recovered is not None:
            day = recovered.astimezone(VN_TZ).date().isoformat()
            records.append((recoveries, {"recovered_date": day}))
        key = pseudonymize(pid)
        for kind, record in records:
            row.update(apply_record(row, kind.name, record))
            history.append(
                [
                    key,
                    pseudonymize("record:" + record_key(kind, pid, record)),
                    kind.name,
                    orjson.dumps(record).decode(),
                    0,
                    "seed",
                    now,
                ]
            )
        row.update(recompute(row, rules, now))
        row["source"] = "seed"
        colours[row["colour"]] = colours.get(row["colour"], 0) + 1
        redis_rows.append(row)
        ch_rows.append(analytics_row(row, pseudonymize, "seed", now))
    return redis_rows, ch_rows, history


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
    pending: asyncio.Future[tuple[None, None]] | None = None
    for chunk in SyntheticCity(plan).chunks():
        redis_rows, ch_rows, history = _chunk_rows(chunk, rules, now, pseudonymize, report.colours)
        households.update(chunk.household)
        if pending:
            await pending
        pending = asyncio.gather(
            analytics.insert_residents(ch_rows), analytics.insert_health_records(history)
        )
        await registry.put_many(redis_rows)
        report.residents += len(chunk)
        progress(len(chunk))
    if pending:
        await pending
    cps = [
        {
            "checkpoint_id": c.checkpoint_id,
            "name": c.name,
            "type": c.type,
            "district": c.district,
            "ward": c.ward,
            "capacity": str(c.capacity),
        }
        for c in checkpoints(plan)
    ]
    await places.put_many(cps)
    await analytics.insert_checkpoints([checkpoint_row(c, now) for c in cps])
    report.households = len(households)
    report.checkpoints = len(cps)
    return report
