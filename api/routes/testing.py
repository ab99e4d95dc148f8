"""Residents flagged for testing: a health declaration with symptoms, or naming contact
with an F0, flags its resident (``test_needed_since``) until a test result newer than
the flag arrives. Officials see their district's list (audited); the aggregates roles
see how many per district."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query

from api.access import PrincipalDep
from api.audit import AuditDep
from api.deps import ClientsDep
from infra.clients import Clients
from registry.reference import hanoi_wards
from registry.residents import status_view

router = APIRouter(prefix="/v1", tags=["testing"])


def _still_waiting(fields: dict[str, str]) -> bool:
    """Flagged, and no test result (negative or positive) since the flag."""
    since = fields.get("test_needed_since") or ""
    tested = max(fields.get("neg_test_at") or "", fields.get("f0_since") or "")
    if not since:
        return False
    if not tested:
        return True
    return datetime.fromisoformat(tested) < datetime.fromisoformat(since)


async def _waiting(clients: Clients, district: str, limit: int) -> list[tuple[str, dict[str, str]]]:
    ids = await clients.residents.flagged_for_testing(district, limit)
    records = await clients.residents.get_many(ids) if ids else []
    waiting, done = [], []
    for pid, fields in zip(ids, records, strict=True):
        if fields is not None and _still_waiting(fields):
            waiting.append((pid, fields))
        else:
            done.append(pid)
    await clients.residents.tested(district, done)
    return waiting


@router.get("/testing/flagged")
async def flagged(
    clients: ClientsDep,
    principal: PrincipalDep,
    audit: AuditDep,
    limit: Annotated[int, Query(ge=1, le=5000)] = 500,
) -> list[dict[str, Any]]:
    """The official's district's residents waiting for a test, newest flag first."""
    waiting = await _waiting(clients, principal.district, limit)
    now = datetime.now(UTC)
    await audit("testing-flagged", [pid for pid, _ in waiting], subject=principal.district)
    return [
        {
            "person_id": pid,
            "flagged_since": fields.get("test_needed_since"),
            "ward": fields.get("ward", ""),
            "colour": status_view(fields, clients.rules, now)["colour"],
        }
        for pid, fields in waiting
    ]


@router.get("/testing/summary")
async def summary(clients: ClientsDep) -> dict[str, int]:
    """How many residents wait for a test, per district (counts only)."""
    districts = sorted(hanoi_wards())
    async with clients.redis.pipeline(transaction=False) as pipe:
        for d in districts:
            pipe.zcard(clients.residents.testing_key(d))
        counts = await pipe.execute()
    return {d: int(n) for d, n in zip(districts, counts, strict=True) if n}
