"""GET /v1/quality: completeness, match rates and freshness of the registry's data."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from api.deps import ClientsDep
from registry.quality import quality_report

router = APIRouter(prefix="/v1", tags=["quality"])


@router.get("/quality")
async def quality(clients: ClientsDep) -> dict[str, Any]:
    return await quality_report(clients.analytics, clients.ledger)
