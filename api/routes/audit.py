"""GET /v1/audit: the append-only audit log (ClickHouse), newest first."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from api.deps import ClientsDep

router = APIRouter(prefix="/v1", tags=["audit"])


@router.get("/audit")
async def audit_log(
    clients: ClientsDep, limit: Annotated[int, Query(ge=1, le=10_000)] = 100
) -> list[dict[str, object]]:
    """The newest audit entries: who, what, when, why (people by pseudonym only)."""
    return await clients.audit.recent(limit)
