"""Resident status and gate checks, answered from Redis. Every read of a resident's record
is written to the append-only audit log (who, what, when, why)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal, cast

from fastapi import APIRouter, Path
from pydantic import BaseModel, Field, model_validator

from api.access import PrincipalDep, check_checkpoint, check_resident
from api.audit import AuditDep, audit_entry
from api.deps import ClientsDep
from api.errors import ApiError, BadInput
from api.routes.checkpoints import CHECKPOINT_ID
from infra.clients import Clients
from infra.credentials import Principal
from infra.metrics import timed_gate
from registry.cards import gate_decision
from registry.cccd import MAX_PAYLOAD, parse_cccd
from registry.errors import InvalidQrPayload, quote
from registry.ids import check_id
from registry.residents import status_view

router = APIRouter(prefix="/v1", tags=["residents"])
GATE_ROUTE = "POST /v1/gate/check"


class NotFound(ApiError):
    status_code = 404


class ResidentStatus(BaseModel):
    colour: Literal["green", "yellow", "red", "none"]
    reasons: list[str]
    rule_version: str
    updated_at: str


def _valid_id(person_id: str) -> str:
    result = check_id(person_id)
    if not result.valid:
        raise BadInput("person_id: invalid personal ID: " + "; ".join(result.errors))
    return person_id


@router.get("/residents/{person_id}/status", response_model=ResidentStatus)
async def resident_status(
    person_id: Annotated[str, Path(max_length=64)],
    clients: ClientsDep,
    principal: PrincipalDep,
    audit: AuditDep,
) -> dict[str, Any]:
    """A resident's card colour and its reasons (officials of the resident's district;
    audited with the stated ``X-Purpose``)."""
    fields = await clients.residents.get(_valid_id(person_id))
    await audit("status", [person_id])  # asking about someone is a read too
    fields = check_resident(principal, person_id, fields)
    return status_view(fields, clients.rules, datetime.now(UTC))


class GateCheck(BaseModel):
    checkpoint_id: str = Field(pattern=CHECKPOINT_ID)
    person_id: str | None = Field(default=None, max_length=12)
    qr: str | None = Field(
        default=None, max_length=MAX_PAYLOAD, description="raw CCCD QR text read by the camera"
    )

    @model_validator(mode="after")
    def _one_of(self) -> GateCheck:
        if not self.person_id and not self.qr:
            raise ValueError("give person_id or qr")
        return self


class GateDecision(BaseModel):
    decision: Literal["allow", "deny"]
    colour: Literal["green", "yellow", "red", "none"]
    reasons: list[str]


@router.post("/gate/check", response_model=GateDecision)
async def gate_check(
    body: GateCheck,
    clients: ClientsDep,
    principal: PrincipalDep,
) -> GateDecision:
    """Allow or deny at a checkpoint by the resident's card colour and the place's policy
    (a device, for its own checkpoint).

    (Served by :class:`api.gate_path.GateFastPath` ahead of the router, with this same
    logic: a gate answer skips routing and dependency resolution.)"""
    return await decide_gate(clients, body, principal)


@timed_gate  # dancu_gate_decision_seconds, for the route and the fast path alike
async def decide_gate(clients: Clients, body: GateCheck, who: Principal) -> GateDecision:
    check_checkpoint(who, [body.checkpoint_id])
    if body.qr:
        try:
            person_id = parse_cccd(body.qr).id
        except InvalidQrPayload as exc:
            raise BadInput("qr: " + "; ".join(exc.errors)) from exc
        if body.person_id and body.person_id != person_id:
            raise BadInput("person_id and qr name different people; send one of them")
    else:
        person_id = _valid_id(str(body.person_id))
    place = (await clients.checkpoints.lookup([body.checkpoint_id]))[body.checkpoint_id]
    if not place:
        raise NotFound(f"checkpoint {quote(body.checkpoint_id)} is not registered")
    # The resident's record and the audit entry in one round trip.
    fields = await clients.residents.get_audited(
        person_id,
        audit_entry(
            clients, who, GATE_ROUTE, "gate-check", [person_id], "gate", body.checkpoint_id
        ),
    )
    if fields is None:
        return GateDecision(
            decision="deny", colour="none", reasons=["ID not found in the registry"]
        )
    status = status_view(fields, clients.rules, datetime.now(UTC))
    allow, why = gate_decision(clients.rules, place.get("type", "other"), str(status["colour"]))
    reasons = cast(list[str], status["reasons"])
    return GateDecision(
        decision="allow" if allow else "deny",
        colour=status["colour"],  # type: ignore[arg-type]  # a stored Colour
        reasons=[*reasons, why],
    )
