"""Who am I (``GET /v1/me``), and the administration of people's tokens and devices' keys
(admins; the same store as ``dancu users`` and ``dancu devices``)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Path
from pydantic import BaseModel, Field

from api.access import PrincipalDep
from api.audit import AuditDep
from api.deps import ClientsDep
from api.errors import ApiError, BadInput
from api.routes.checkpoints import CHECKPOINT_ID
from registry.errors import quote
from registry.reference import hanoi_wards

router = APIRouter(prefix="/v1", tags=["access"])


class NotFound(ApiError):
    status_code = 404


class Me(BaseModel):
    name: str
    role: str
    district: str
    organisation: str
    checkpoints: list[str]


@router.get("/me", response_model=Me)
async def me(principal: PrincipalDep) -> Me:
    """The caller as dancu knows them (the dashboard shows the panels of this role)."""
    return Me(
        name=principal.name,
        role=principal.role,
        district=principal.district,
        organisation=principal.organisation,
        checkpoints=sorted(principal.checkpoints),
    )


class NewUser(BaseModel):
    name: str = Field(min_length=1, max_length=100, pattern=r"^[\w.@-]+$")
    role: Literal["official", "epidemiologist", "steward", "owner", "admin"]
    district: str = Field(default="", max_length=60)
    organisation: str = Field(default="", max_length=200)
    days: int = Field(default=90, ge=1, le=366)


class UserToken(BaseModel):
    name: str
    role: str
    district: str
    organisation: str
    token: str
    expires_at: datetime


@router.post("/users", status_code=201, response_model=UserToken)
async def add_user(body: NewUser, clients: ClientsDep, audit: AuditDep) -> UserToken:
    """A new token for a person (shown once; only its hash is kept)."""
    if body.district and body.district not in hanoi_wards():
        raise BadInput(f"district: not a Hà Nội district: {quote(body.district)}")
    try:
        token, expires = await clients.credentials.add_user(
            body.name, body.role, body.district, body.days, organisation=body.organisation
        )
    except ValueError as exc:
        raise BadInput(str(exc)) from exc
    await audit("user-add", subject=f"{body.name} ({body.role})")
    return UserToken(**body.model_dump(exclude={"days"}), token=token, expires_at=expires)


@router.delete("/users/{name}")
async def revoke_user(
    name: Annotated[str, Path(max_length=100)], clients: ClientsDep, audit: AuditDep
) -> dict[str, object]:
    """Revoke every token of a person, at once."""
    revoked = await clients.credentials.revoke_user(name)
    if not revoked:
        raise NotFound(f"no tokens for {quote(name)}")
    await audit("user-revoke", subject=name)
    return {"name": name, "tokens_revoked": revoked}


class NewDevice(BaseModel):
    checkpoint_ids: list[Annotated[str, Field(pattern=CHECKPOINT_ID)]] = Field(
        min_length=1, max_length=10_000
    )


@router.post("/devices", status_code=201)
async def add_device(body: NewDevice, clients: ClientsDep, audit: AuditDep) -> dict[str, object]:
    """A signing key for a checkpoint's device (or a site gateway's checkpoints), shown
    once. The checkpoints must be registered."""
    places = await clients.checkpoints.lookup(body.checkpoint_ids)
    missing = [c for c in body.checkpoint_ids if not places.get(c)]
    if missing:
        raise BadInput(f"checkpoint_ids: not registered: {', '.join(missing[:5])}")
    device_id, key = await clients.credentials.add_device(*body.checkpoint_ids)
    await audit("device-add", subject=f"{device_id}: {len(body.checkpoint_ids)} checkpoint(s)")
    return {"device_id": device_id, "checkpoint_ids": body.checkpoint_ids, "key": key}


@router.delete("/devices/{device_id}")
async def revoke_device(
    device_id: Annotated[str, Path(max_length=64)], clients: ClientsDep, audit: AuditDep
) -> dict[str, object]:
    """Take a device out of service: its next request is refused."""
    if not await clients.credentials.revoke_device(device_id):
        raise NotFound(f"no device {quote(device_id)}")
    await audit("device-revoke", subject=device_id)
    return {"device_id": device_id, "revoked": True}
