"""POST /v1/admin/rebuild: restore Redis's derived state from ClickHouse.

The embedded ClickHouse belongs to the running process, so the CLI asks it here.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import asdict
from datetime import timedelta

from fastapi import APIRouter
from pydantic import BaseModel

from api.deps import ClientsDep
from api.errors import Unavailable
from infra.rebuild import rebuild_all

router = APIRouter(prefix="/v1/admin", tags=["admin"])


class Rebuilt(BaseModel):
    visits_restored: int
    residents_restored: int
    checkpoints_restored: int
    exposures_restored: int


@router.post("/rebuild", response_model=Rebuilt)
async def rebuild(clients: ClientsDep) -> Rebuilt:
    """Restore Redis's derived state from ClickHouse: checkpoints, residents' facts and
    colours, applied marks, visit indexes, exposures still flagged. Waits (up to two
    minutes) for the ClickHouse sink to write what workers sent it: a rebuild before that
    would restore older states than Redis held (503 naming the backlog otherwise)."""
    deadline = time.monotonic() + 120
    while (backlog := await clients.lag.sink_backlog()) > 0:
        if time.monotonic() > deadline:
            raise Unavailable(
                f"the ClickHouse sink still has {backlog} record(s) to write; rebuild once it "
                "has caught up (GET /metrics: dancu_consumer_lag, group sink)"
            )
        await asyncio.sleep(1.0)
    done = await rebuild_all(
        clients.clickhouse,
        clients.index,
        clients.residents,
        clients.checkpoints,
        clients.ledger,
        clients.pseudonymize,
        clients.rules,
        timedelta(days=clients.settings.visit_window_days),
    )
    return Rebuilt(**asdict(done))
