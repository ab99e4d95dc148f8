"""GET /v1/audit: the append-only audit log (ClickHouse), newest first (admins)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query

from api.deps import ClientsDep
from api.errors import BadInput
from registry.ids import check_id

router = APIRouter(prefix="/v1", tags=["audit"])


@router.get("/audit")
async def audit_log(
    clients: ClientsDep,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 100,
    actor: Annotated[str, Query(max_length=100, description="only this caller's reads")] = "",
    person_id: Annotated[
        str, Query(max_length=12, description="only the reads that showed this person")
    ] = "",
    since: Annotated[datetime | None, Query(description="only entries from this time")] = None,
) -> list[dict[str, object]]:
    """The newest audit entries: who (and their role), which route, which people (by
    pseudonym), when, and the stated purpose."""
    key = ""
    if person_id:
        if not check_id(person_id).valid:
            raise BadInput(f"person_id: not a valid personal ID: {person_id!r}")
        key = clients.pseudonymize(person_id)
    return await clients.audit.recent(limit, actor=actor, person_key=key, since=since)
