"""What a business or organisation (role ``owner``) sees: its checkpoints' live visit
counts, and its staff's card colours and exposure tiers (a staff list it uploaded with
``POST /v1/imports/staff``; reading it is audited). Never who visited."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from typing import Annotated, Any
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Query

from api.access import PrincipalDep
from api.audit import AuditDep
from api.deps import ClientsDep
from registry.residents import exposure_entries, status_view

router = APIRouter(prefix="/v1", tags=["owners"])
VN_TZ = ZoneInfo("Asia/Ho_Chi_Minh")


@router.get("/owner/checkpoints")
async def owner_checkpoints(clients: ClientsDep, principal: PrincipalDep) -> list[dict[str, Any]]:
    """The organisation's checkpoints with their visits in the last hour and since
    midnight (Hà Nội time): counts only."""
    ids = await clients.staff.checkpoints(principal.organisation)
    if not ids:
        return []
    now = datetime.now(UTC)
    midnight = datetime.combine(now.astimezone(VN_TZ).date(), time(0, 0), tzinfo=VN_TZ)
    places = await clients.checkpoints.lookup(ids)
    counts = await clients.index.count_at_many(
        [(c, now - timedelta(hours=1), now) for c in ids] + [(c, midnight, now) for c in ids]
    )
    return [
        {
            "checkpoint_id": c,
            "name": (places.get(c) or {}).get("name", ""),
            "type": (places.get(c) or {}).get("type", ""),
            "district": (places.get(c) or {}).get("district", ""),
            "visits_last_hour": counts[i],
            "visits_today": counts[len(ids) + i],
        }
        for i, c in enumerate(ids)
    ]


@router.get("/organisations/staff")
async def organisation_staff(
    clients: ClientsDep,
    principal: PrincipalDep,
    audit: AuditDep,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
) -> dict[str, Any]:
    """The organisation's staff (from its uploaded list) with each one's card colour, the
    reasons, and their exposure tiers (F0, F1, F2) with the report and since when."""
    staff = await clients.staff.staff(principal.organisation, limit)
    ids = list(staff)
    records = await clients.residents.get_many(ids) if ids else []
    now = datetime.now(UTC)
    rows = []
    for person_id, fields in zip(ids, records, strict=True):
        if fields is None:
            continue
        status = status_view(fields, clients.rules, now)
        rows.append(
            {
                "person_id": person_id,
                "unit": staff[person_id],
                "colour": status["colour"],
                "reasons": status["reasons"],
                "exposures": [
                    {"tier": e.get("tier"), "since": e.get("since"), "report_id": rid}
                    for rid, e in sorted(exposure_entries(fields).items())
                ],
            }
        )
    await audit("staff-status", ids, subject=principal.organisation)
    return {"organisation": principal.organisation, "staff": rows}
