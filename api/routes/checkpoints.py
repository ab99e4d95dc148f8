"""Checkpoints: registered once (``POST /v1/checkpoints``), changed only by an explicit,
audited update (``PUT /v1/checkpoints/{id}``): a second POST never silently turns a
hospital into a restaurant, which would change who may enter."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Header, Path
from pydantic import BaseModel, Field, model_validator

from api.audit import audit
from api.deps import ClientsDep
from api.errors import ApiError, BadInput
from infra.clients import Clients
from registry.errors import quote
from registry.reference import hanoi_wards

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
    await clients.analytics.insert_checkpoints(
        [
            [
                r["checkpoint_id"],
                r["name"],
                r["type"],
                r["district"],
                r["ward"],
                int(r["capacity"]),
                now,
            ]
            for r in rows
        ]
    )


@router.post("/checkpoints", status_code=201, response_model=CheckpointsCreated)
async def register(body: list[CheckpointCreate], clients: ClientsDep) -> CheckpointsCreated:
    """Register new checkpoints. Re-sending one exactly as registered is harmless; sending
    a registered ID with other details is a 409 naming it (use PUT to change it)."""
    if not body:
        raise BadInput("no checkpoints in the body")
    if len(body) > MAX_PER_REQUEST:
        raise BadInput(f"at most {MAX_PER_REQUEST} checkpoints per request, got {len(body)}")
    rows = [_stored(cp, cp.checkpoint_id) for cp in body]
    created, unchanged, conflicts = await clients.checkpoints.create_many(rows)
    await _to_analytics(clients, [r for r in rows if r["checkpoint_id"] not in conflicts])
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
    x_actor: Annotated[str, Header(max_length=100)] = "anonymous",
    x_purpose: Annotated[str, Header(max_length=200)] = "checkpoint update",
) -> dict[str, object]:
    """Change a registered checkpoint's details; the change is audited (before → after)."""
    before = await clients.checkpoints.replace(checkpoint_id, _stored(body, checkpoint_id))
    if before is None:
        raise NotFound(f"checkpoint {quote(checkpoint_id)} is not registered; POST it first")
    await _to_analytics(clients, [_stored(body, checkpoint_id)])
    changed = sorted(k for k, v in _stored(body, checkpoint_id).items() if before.get(k) != v)
    await audit(
        clients,
        x_actor,
        "checkpoint-update",
        f"{checkpoint_id}: "
        + ", ".join(f"{k} {before.get(k)!s}→{getattr(body, k)}" for k in changed),
        x_purpose,
        person=False,
    )
    return {"checkpoint_id": checkpoint_id, "changed": changed}
