"""Checkpoints: registered once (``POST /v1/checkpoints``), changed only by an explicit,
audited update (``PUT /v1/checkpoints/{id}``): a second POST never silently turns a
hospital into a restaurant, which would change who may enter."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Path
from pydantic import BaseModel, Field, model_validator

from api.access import Forbidden, PrincipalDep
from api.audit import AuditDep
from api.deps import ClientsDep
from api.errors import ApiError, BadInput
from infra.clients import Clients
from infra.credentials import Principal
from registry.errors import quote
from registry.reference import hanoi_wards
from registry.residents import checkpoint_row

router = APIRouter(prefix="/v1", tags=["checkpoints"])

CheckpointType = Literal[
    "shop",
    "office",
    "market",
    "school",
    "hospital",
    "gate",
    "home",
    "restaurant",
    "station",
    "other",
]
CHECKPOINT_ID = r"^[A-Za-z0-9][A-Za-z0-9._:/-]{0,127}$"
MAX_PER_REQUEST = 10_000


class Conflict(ApiError):
    status_code = 409


class NotFound(ApiError):
    status_code = 404


class CheckpointFields(BaseModel):
    name: str = Field(default="", max_length=200)
    type: CheckpointType = "other"
    district: str = Field(min_length=1, max_length=60)
    ward: str = Field(default="", max_length=80)
    capacity: int = Field(default=0, ge=0, le=1_000_000)
    owner: str = Field(
        default="",
        max_length=200,
        description="the business or organisation that registered it (set for owners)",
    )

    @model_validator(mode="after")
    def _known_place(self) -> CheckpointFields:
        wards = hanoi_wards()
        if self.district not in wards:
            raise ValueError(f"district: not a Hà Nội district: {quote(self.district)}")
        if self.ward and self.ward not in {w.name for w in wards[self.district]}:
            raise ValueError(f"ward: {quote(self.ward)} is not a ward of {self.district}")
        return self


class CheckpointCreate(CheckpointFields):
    checkpoint_id: str = Field(pattern=CHECKPOINT_ID)


class CheckpointsCreated(BaseModel):
    registered: int
    unchanged: int = 0


def _stored(cp: CheckpointFields, checkpoint_id: str) -> dict[str, str]:
    fields = {k: str(v) for k, v in cp.model_dump().items()}
    return {**fields, "checkpoint_id": checkpoint_id}


async def _to_analytics(clients: Clients, rows: list[dict[str, str]]) -> None:
    """Checkpoints live in ClickHouse too: the dashboards, and a rebuild of Redis."""
    now = datetime.now(UTC)
    await clients.analytics.insert_checkpoints([checkpoint_row(r, now) for r in rows])


def _owned(principal: Principal, cp: CheckpointFields) -> CheckpointFields:
    """An owner registers checkpoints for its own organisation, whatever the body says."""
    if principal.role != "owner":
        return cp
    if cp.owner and cp.owner != principal.organisation:
        raise Forbidden(f"owner: you speak for {quote(principal.organisation)} only")
    return cp.model_copy(update={"owner": principal.organisation})


@router.post("/checkpoints", status_code=201, response_model=CheckpointsCreated)
async def register(
    body: list[CheckpointCreate], clients: ClientsDep, principal: PrincipalDep
) -> CheckpointsCreated:
    """Register new checkpoints. Re-sending one exactly as registered is harmless; sending
    a registered ID with other details is a 409 naming it (use PUT to change it). An
    owner's checkpoints belong to its organisation."""
    if not body:
        raise BadInput("no checkpoints in the body")
    if len(body) > MAX_PER_REQUEST:
        raise BadInput(f"at most {MAX_PER_REQUEST} checkpoints per request, got {len(body)}")
    rows = [_stored(_owned(principal, cp), cp.checkpoint_id) for cp in body]
    created, unchanged, conflicts = await clients.checkpoints.create_many(rows)
    stored = [r for r in rows if r["checkpoint_id"] not in conflicts]
    await _to_analytics(clients, stored)
    for owner in {r["owner"] for r in stored if r["owner"]}:
        await clients.staff.own(owner, [r["checkpoint_id"] for r in stored if r["owner"] == owner])
    if conflicts:
        raise Conflict(
            f"{len(conflicts)} checkpoint(s) already registered with other details "
            f"(first: {quote(conflicts[0])}); change one with PUT /v1/checkpoints/{{id}}",
            details={"conflicts": conflicts[:100], "registered": created},
        )
    return CheckpointsCreated(registered=created, unchanged=unchanged)


@router.put("/checkpoints/{checkpoint_id}")
async def update(
    checkpoint_id: Annotated[str, Path(pattern=CHECKPOINT_ID)],
    body: CheckpointFields,
    clients: ClientsDep,
    principal: PrincipalDep,
    audit: AuditDep,
) -> dict[str, object]:
    """Change a registered checkpoint's details; the change is audited (before → after).
    An owner changes only its own organisation's checkpoints."""
    current = (await clients.checkpoints.lookup([checkpoint_id]))[checkpoint_id]
    if principal.role == "owner" and current and current.get("owner") != principal.organisation:
        raise Forbidden(f"checkpoint {quote(checkpoint_id)} is not your organisation's")
    if "owner" not in body.model_fields_set and current:  # unsaid: the owner stays
        body = body.model_copy(update={"owner": current.get("owner", "")})
    body = _owned(principal, body)
    before = await clients.checkpoints.replace(checkpoint_id, _stored(body, checkpoint_id))
    if before is None:
        raise NotFound(f"checkpoint {quote(checkpoint_id)} is not registered; POST it first")
    await _to_analytics(clients, [_stored(body, checkpoint_id)])
    if body.owner:
        await clients.staff.own(body.owner, [checkpoint_id])
    if before.get("owner") and before["owner"] != body.owner:  # the old owner lets go
        await clients.staff.disown(before["owner"], [checkpoint_id])
    changed = sorted(k for k, v in _stored(body, checkpoint_id).items() if before.get(k) != v)
    await audit(
        "checkpoint-update",
        subject=f"{checkpoint_id}: "
        + ", ".join(f"{k} {before.get(k)!s}→{getattr(body, k)}" for k in changed),
    )
    return {"checkpoint_id": checkpoint_id, "changed": changed}
