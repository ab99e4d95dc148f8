"""POST /v1/checkpoints: register checkpoints (district, ward, type, capacity)."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter
from pydantic import BaseModel, Field

from api.deps import ClientsDep

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


class CheckpointCreate(BaseModel):
    checkpoint_id: str = Field(min_length=1, max_length=128)
    name: str = ""
    type: CheckpointType = "other"
    district: str = Field(min_length=1)
    ward: str = ""
    capacity: int = Field(default=0, ge=0)


class CheckpointsCreated(BaseModel):
    registered: int


@router.post("/checkpoints", status_code=201, response_model=CheckpointsCreated)
async def register(body: list[CheckpointCreate], clients: ClientsDep) -> CheckpointsCreated:
    n = await clients.checkpoints.put_many(
        {k: str(v) for k, v in cp.model_dump().items()} for cp in body
    )
    return CheckpointsCreated(registered=n)
