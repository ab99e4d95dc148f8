"""POST /v1/admin/rebuild: restore Redis's visit indexes from ClickHouse.

The embedded ClickHouse belongs to the running process, so the CLI asks it here.
"""

from __future__ import annotations

from datetime import timedelta

from fastapi import APIRouter
from pydantic import BaseModel

from api.deps import ClientsDep
from infra.rebuild import rebuild_visit_index

router = APIRouter(prefix="/v1/admin", tags=["admin"])


class Rebuilt(BaseModel):
    visits_restored: int


@router.post("/rebuild", response_model=Rebuilt)
async def rebuild(clients: ClientsDep) -> Rebuilt:
    n = await rebuild_visit_index(
        clients.clickhouse, clients.index, timedelta(days=clients.settings.visit_window_days)
    )
    return Rebuilt(visits_restored=n)
