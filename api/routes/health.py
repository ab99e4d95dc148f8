"""GET /healthz: Kafka, Redis and ClickHouse reachability, and what the agents are
retrying; 503 when one is down or an agent is waiting on a store."""

from __future__ import annotations

import asyncio

import httpx
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


async def _store_checks(clients: ClientsDep) -> dict[str, dict[str, object]]:
    try:
        async with httpx.AsyncClient(base_url=str(clients.settings.store_url), timeout=5) as c:
            checks = (await c.get("/healthz")).json()["checks"]
        return {"clickhouse": checks["clickhouse"], "agents": checks["agents"]}
    except Exception as exc:
        down = {"ok": False, "error": f"the store's process does not answer: {exc}"[:300]}
        return {"clickhouse": down, "agents": down}


@router.get("/healthz")
async def healthz(clients: ClientsDep) -> JSONResponse:
    if getattr(clients, "owns_store", True):
        kafka, redis, clickhouse = await asyncio.gather(
            _check(clients.lag.ping()),
            _check(clients.redis.ping()),
            _check(asyncio.to_thread(clients.clickhouse.ping)),
        )
        failing = clients.health.report()  # steps the agents are retrying right now
        agents: dict[str, object] = {"ok": not failing}
        if failing:
            agents["waiting_on"] = failing
    else:  # ClickHouse and the agents live in the store's process: ask it
        kafka, redis, store = await asyncio.gather(
            _check(clients.lag.ping()), _check(clients.redis.ping()), _store_checks(clients)
        )
        clickhouse, agents = store["clickhouse"], store["agents"]
    checks = {"kafka": kafka, "redis": redis, "clickhouse": clickhouse, "agents": agents}
    ok = all(c["ok"] for c in checks.values())
    return JSONResponse(
        {"status": "ok" if ok else "degraded", "checks": checks}, status_code=200 if ok else 503
    )
