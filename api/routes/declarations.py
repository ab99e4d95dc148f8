"""Declarations by residents: health (symptoms, contact with an F0, places visited) and
travel (from and to province, dates, transport). Validated here, sent through Kafka
(``health-records``, keyed by person) to the status agent like any health record; a
symptomatic declaration, or one naming contact with an F0, flags the resident for
testing (``test_needed_since``)."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Annotated, Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from api.access import Hidden, PrincipalDep, check_resident
from api.audit import AuditDep
from api.deps import ClientsDep
from api.errors import BadInput
from infra.credentials import Principal
from registry.imports import KINDS, record_key
from registry.reference import provinces
from tracing.events import MAX_CLOCK_SKEW, PersonId, Timestamp, validation_errors

router = APIRouter(prefix="/v1/declarations", tags=["declarations"])

Text = Annotated[str, Field(max_length=200)]


class Place(BaseModel):
    model_config = ConfigDict(extra="forbid")
    place: Text = Field(min_length=1)
    date: date


class HealthDeclaration(BaseModel):
    model_config = ConfigDict(extra="forbid")
    person_id: PersonId
    declared_at: Timestamp | None = None  # default: now
    symptoms: list[Annotated[str, Field(min_length=1, max_length=50)]] = Field(
        default_factory=list, max_length=20
    )
    contact_with_f0: bool = False
    places: list[Place] = Field(default_factory=list, max_length=50)
    note: str = Field(default="", max_length=500)


def _province(code: str) -> str:
    if code not in provinces():
        raise ValueError(f"unknown province code {code!r} (3 digits, e.g. 001 for Hà Nội)")
    return code


class TravelDeclaration(BaseModel):
    model_config = ConfigDict(extra="forbid")
    person_id: PersonId
    declared_at: Timestamp | None = None
    from_province: str = Field(pattern=r"^\d{3}$")
    to_province: str = Field(default="001", pattern=r"^\d{3}$")
    departure_date: date
    arrival_date: date
    transport: str = Field(default="", max_length=50)

    @model_validator(mode="after")
    def _consistent(self) -> TravelDeclaration:
        _province(self.from_province)
        _province(self.to_province)
        if self.arrival_date < self.departure_date:
            raise ValueError("arrival_date: must not be before departure_date")
        return self


def _parse(model: type[BaseModel], body: dict[str, Any]) -> Any:
    try:
        item = model.model_validate(body)
    except ValidationError as exc:
        raise BadInput("; ".join(validation_errors(exc))) from exc
    now = datetime.now(UTC)
    declared = getattr(item, "declared_at", None) or now
    if declared > now + MAX_CLOCK_SKEW:
        raise BadInput(f"declared_at: {declared.isoformat()} is in the future")
    return item, declared


async def _send(
    clients: Any, who: Principal, kind: str, person_id: str, record: dict[str, object]
) -> str:
    """Send the declaration on; an official declares for their own district's residents
    (anyone else answers as not registered)."""
    try:
        check_resident(who, person_id, await clients.residents.get(person_id))
    except Hidden as exc:
        raise BadInput(f"person_id: {exc.message}") from exc
    record_id = record_key(KINDS[kind], person_id, record)
    await clients.health_records.send(
        [
            {
                "record_id": record_id,
                "kind": kind,
                "person_id": person_id,
                "import_id": "declarations",
                "record": record,
            }
        ]
    )
    return record_id


@router.post("/health", status_code=202)
async def declare_health(
    body: dict[str, Any], clients: ClientsDep, principal: PrincipalDep, audit: AuditDep
) -> JSONResponse:
    """202 ``{"declaration_id", "needs_test"}``: symptoms or contact with an F0 flag the
    resident for testing."""
    item, declared = _parse(HealthDeclaration, body)
    needs_test = bool(item.symptoms) or item.contact_with_f0
    record: dict[str, object] = {
        "declared_at": declared.isoformat(),
        "symptoms": bool(item.symptoms),
        "symptom_list": item.symptoms,
        "contact_with_f0": item.contact_with_f0,
        "places": [{"place": p.place, "date": p.date.isoformat()} for p in item.places],
        "note": item.note,
        "needs_test": needs_test,
    }
    record_id = await _send(clients, principal, "health-declarations", item.person_id, record)
    await audit("health-declaration", [item.person_id], subject=record_id)
    return JSONResponse({"declaration_id": record_id, "needs_test": needs_test}, status_code=202)


@router.post("/travel", status_code=202)
async def declare_travel(
    body: dict[str, Any], clients: ClientsDep, principal: PrincipalDep, audit: AuditDep
) -> JSONResponse:
    """202 ``{"declaration_id"}``."""
    item, declared = _parse(TravelDeclaration, body)
    record: dict[str, object] = {
        "declared_at": declared.isoformat(),
        "from_province": item.from_province,
        "to_province": item.to_province,
        "departure_date": item.departure_date.isoformat(),
        "arrival_date": item.arrival_date.isoformat(),
        "to_district": "",
        "transport": item.transport,
    }
    record_id = await _send(clients, principal, "travel-declarations", item.person_id, record)
    await audit("travel-declaration", [item.person_id], subject=record_id)
    return JSONResponse({"declaration_id": record_id}, status_code=202)
