"""GET /healthz: Kafka, Redis and ClickHouse reachability, and what the agents are
retrying; 503 when one is down or an agent is waiting on a store."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from api.deps import ClientsDep

router = APIRouter(tags=["health"])


async def _check(coro: object) -> dict[str, object]:
    try:
        await asyncio.wait_for(coro, 3.0)  # type: ignore[arg-type]  # an awaitable
        return {"ok": True}
    except Exception as exc:
        return {"ok": False, "error": f"{type(exc).__name__}: {exc}"[:300]}


@router.get("/healthz")
async def healthz(clients: ClientsDep) -> JSONResponse:
    kafka, redis, clickhouse = await asyncio.gather(
        _check(clients.lag.ping()),
        _check(clients.redis.ping()),
        _check(asyncio.to_thread(clients.clickhouse.ping)),
    )
    failing = clients.health.report()  # steps the agents are retrying right now
    agents: dict[str, object] = {"ok": not failing}
    if failing:
        agents["waiting_on"] = failing
    checks = {"kafka": kafka, "redis": redis, "clickhouse": clickhouse, "agents": agents}
    ok = all(c["ok"] for c in checks.values())
    return JSONResponse(
        {"status": "ok" if ok else "degraded", "checks": checks}, status_code=200 if ok else 503
    )
