"""Imports by data stewards: POST /v1/imports/{kind} (a CSV or JSON Lines body), the report,
one outcome per row, and the review queue of mismatches."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Any, Literal

import orjson
from fastapi import APIRouter, Query, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel

from api.deps import ClientsDep
from api.errors import ApiError, BadInput
from infra.tables import TableError, table_from_bytes
from registry.importer import Importer, decide_review
from registry.imports import KINDS
from registry.reports import ImportFailed

router = APIRouter(prefix="/v1", tags=["imports"])
MAX_UPLOAD = 256 << 20


class NotFound(ApiError):
    status_code = 404


@router.post("/imports/{kind}", status_code=201)
async def create_import(
    kind: str, request: Request, clients: ClientsDep, filename: str = "upload"
) -> dict[str, Any]:
    """Import a file of records (CSV with a header row, or JSON Lines)."""
    if kind not in KINDS:
        raise NotFound(f"unknown import kind {kind!r}; one of: {', '.join(KINDS)}")
    body = await request.body()
    if not body.strip():
        raise BadInput("empty body: send a CSV (with a header row) or JSON Lines file")
    if len(body) > MAX_UPLOAD:
        raise BadInput(f"upload larger than {MAX_UPLOAD >> 20} MiB; use `dancu import`")
    try:
        header, rows = table_from_bytes(body, filename)
        importer = Importer(clients.residents, clients.ledger, clients.health_records)
        report = await importer.run(kind, header, rows, source=f"api:{filename}")
    except (TableError, ImportFailed) as exc:
        raise BadInput(str(exc)) from exc
    return report.as_dict()


@router.get("/imports")
async def list_imports(clients: ClientsDep) -> list[dict[str, Any]]:
    return await clients.ledger.reports()


@router.get("/imports/{import_id}")
async def get_import(import_id: str, clients: ClientsDep) -> dict[str, Any]:
    report = await clients.ledger.report(import_id)
    if report is None:
        raise NotFound(f"no import {import_id!r}")
    return report


@router.get("/imports/{import_id}/records")
async def get_import_records(
    import_id: str,
    clients: ClientsDep,
    outcome: Annotated[str | None, Query(description="only this outcome")] = None,
) -> StreamingResponse:
    """One JSON line per input row: {"row", "outcome", "reason", "person_id"}."""
    path = clients.ledger.records_path(import_id)
    if not path.exists():
        raise NotFound(f"no records for import {import_id!r}")
    wanted = f'"outcome":"{outcome}"'.encode() if outcome else None

    def lines() -> Iterator[bytes]:
        with open(path, "rb") as handle:
            for line in handle:
                if wanted is None or wanted in line:
                    yield line

    return StreamingResponse(lines(), media_type="application/x-ndjson")


class ReviewDecision(BaseModel):
    decision: Literal["accept", "reject"]
    note: str = ""


@router.get("/review")
async def review_queue(clients: ClientsDep, limit: int = 100) -> list[dict[str, Any]]:
    """Mismatched records waiting for a data steward (ID found, name/DOB disagree)."""
    return await clients.ledger.review_items(limit)


@router.post("/review/{review_id}")
async def decide(review_id: str, body: ReviewDecision, clients: ClientsDep) -> dict[str, Any]:
    item = await decide_review(
        clients.ledger, clients.health_records, review_id, body.decision == "accept"
    )
    if item is None:
        raise NotFound(f"no review item {review_id!r}")
    return {
        "review_id": review_id,
        "decision": body.decision,
        "record": orjson.loads(orjson.dumps(item["event"])),
    }
