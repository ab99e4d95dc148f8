"""GET /v1/stats/live: what the live dashboard polls."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter
from pydantic import BaseModel

from api.deps import ClientsDep

router = APIRouter(prefix="/v1/stats", tags=["stats"])


class LiveStats(BaseModel):
    scans_processed: int
    rate_per_s: float
    lag: int | None  # scan records not yet in Redis and ClickHouse (workers + sink)
    visits_total: int
    visits_by_district: dict[str, int]


@router.get("/live", response_model=LiveStats)
async def live(clients: ClientsDep) -> LiveStats:
    processed, rate = await asyncio.gather(clients.index.processed(), clients.index.rate())
    try:
        lag: int | None = await asyncio.wait_for(clients.lag.pipeline(), 5.0)
    except Exception:
        lag = None
    totals, by_district = await asyncio.gather(
        asyncio.to_thread(clients.clickhouse.visit_totals),
        asyncio.to_thread(clients.clickhouse.visits_by_district),
    )
    return LiveStats(
        scans_processed=processed,
        rate_per_s=rate,
        lag=lag,
        visits_total=totals[0],
        visits_by_district=by_district,
    )
