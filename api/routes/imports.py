"""Imports by data stewards: POST /v1/imports/{kind} (a CSV or JSON Lines body), the report,
one outcome per row, and the review queue of mismatches."""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, Literal

import orjson
from fastapi import APIRouter, Query, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field

from api.access import Forbidden, PrincipalDep
from api.audit import AuditDep
from api.deps import ClientsDep
from api.errors import ApiError, BadInput
from infra.tables import TableError, read_stream
from registry.errors import quote
from registry.importer import Importer, decide_review
from registry.imports import KINDS, OUTCOMES
from registry.reports import ImportFailed

router = APIRouter(prefix="/v1", tags=["imports"])
SPOOL_IN_MEMORY = 8 << 20


class NotFound(ApiError):
    status_code = 404


@router.post("/imports/{kind}", status_code=201)
async def create_import(
    kind: str,
    request: Request,
    clients: ClientsDep,
    principal: PrincipalDep,
    audit: AuditDep,
    filename: Annotated[str, Query(max_length=200)] = "upload",
) -> dict[str, Any]:
    """Import a file of records (CSV with a header row, or JSON Lines). The body streams
    into a spool file (memory up to 8 MiB, disk beyond), so its size costs no memory.
    An owner imports only its own organisation's staff list (kind ``staff``)."""
    if kind not in KINDS:
        raise NotFound(f"unknown import kind {quote(kind)}; one of: {', '.join(KINDS)}")
    if principal.role == "owner" and kind != "staff":
        raise Forbidden("an owner imports its staff list only (POST /v1/imports/staff)")
    spool = tempfile.SpooledTemporaryFile(max_size=SPOOL_IN_MEMORY)  # noqa: SIM115 - closed by the rows
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        spool.write(chunk)
    if size == 0:
        spool.close()
        raise BadInput("empty body: send a CSV (with a header row) or JSON Lines file")
    spool.seek(0)
    try:
        header, rows = read_stream(spool, filename)  # type: ignore[arg-type]  # a binary file
        importer = Importer(
            clients.residents, clients.ledger, clients.health_records, staff=clients.staff
        )
        report = await importer.run(
            kind,
            header,
            rows,
            source=f"api:{filename}",
            organisation=principal.organisation if principal.role == "owner" else None,
        )
    except (TableError, ImportFailed) as exc:
        raise BadInput(str(exc)) from exc
    finally:
        spool.close()
    result = report.as_dict()
    await audit(
        "import",
        _sampled([result]),
        subject=f"{kind} {result.get('import_id', '')}: {filename}"[:200],
    )
    if principal.role == "owner":
        # An owner learns how many rows matched, not why the others did not (a reason
        # such as "name differs from the registry's" would answer questions about
        # people who are not its staff).
        return {
            k: result[k]
            for k in ("import_id", "kind", "started_at", "rows", "outcomes", "match_rate")
            if k in result
        }
    return result


def _sampled(reports: list[dict[str, Any]]) -> list[str]:
    """The person IDs in reports' sample rows (a read of them is audited)."""
    return [
        str(line["person_id"])
        for r in reports
        for lines in (r.get("samples") or {}).values()
        for line in lines
        if line.get("person_id")
    ]


@router.get("/imports")
async def list_imports(clients: ClientsDep, audit: AuditDep) -> list[dict[str, Any]]:
    """Every import's report (with a few sample rows per outcome: audited)."""
    reports = await clients.ledger.reports()
    await audit("import-reports", _sampled(reports), subject=f"{len(reports)} imports")
    return reports


@router.get("/imports/{import_id}")
async def get_import(import_id: str, clients: ClientsDep, audit: AuditDep) -> dict[str, Any]:
    report = await clients.ledger.report(import_id)
    if report is None:
        raise NotFound(f"no import {quote(import_id)}")
    await audit("import-report", _sampled([report]), subject=import_id)
    return report


@router.get("/imports/{import_id}/records")
async def get_import_records(
    import_id: str,
    clients: ClientsDep,
    audit: AuditDep,
    outcome: Annotated[str | None, Query(description="only this outcome")] = None,
) -> StreamingResponse:
    """One JSON line per input row: {"row", "outcome", "reason", "person_id"} (audited:
    the lines carry ID numbers)."""
    try:
        path = clients.ledger.records_path(import_id)
    except KeyError:
        path = None
    if path is None or not path.exists():
        raise NotFound(f"no records for import {quote(import_id)}")
    known = (*OUTCOMES, "loaded", "rejected")
    if outcome is not None and outcome not in known:
        raise BadInput(f"outcome must be one of {', '.join(known)}; got {quote(outcome)}")
    wanted = f'"outcome":"{outcome}"'.encode() if outcome else None
    # The export names everyone in the import (their pseudonyms, as far as the record
    # holds them, and their count).
    people = await asyncio.to_thread(_people_in, path, wanted)
    await audit("import-records", people, subject=f"import {import_id}")

    def lines() -> Iterator[bytes]:
        with open(path, "rb") as handle:
            for line in handle:
                if wanted is None or wanted in line:
                    yield line

    return StreamingResponse(lines(), media_type="application/x-ndjson")


def _people_in(path: Path, wanted: bytes | None) -> list[str]:
    found = []
    with open(path, "rb") as handle:
        for line in handle:
            if wanted is None or wanted in line:
                pid = orjson.loads(line).get("person_id")
                if pid:
                    found.append(str(pid))
    return found


class ReviewDecision(BaseModel):
    decision: Literal["accept", "reject"]
    note: str = Field(default="", max_length=1000)


@router.get("/review")
async def review_queue(
    clients: ClientsDep,
    audit: AuditDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[dict[str, Any]]:
    """Mismatched records waiting for a data steward (names, birth dates, IDs: audited)."""
    items = await clients.ledger.review_items(limit)
    people = [str(i.get("event", {}).get("person_id") or "") for i in items]
    await audit("review-list", [p for p in people if p], subject=f"{len(items)} items")
    return items


@router.post("/review/{review_id}")
async def decide(
    review_id: str,
    body: ReviewDecision,
    clients: ClientsDep,
    audit: AuditDep,
) -> dict[str, Any]:
    item = await decide_review(
        clients.ledger,
        clients.health_records,
        clients.residents,
        review_id,
        body.decision == "accept",
        staff=clients.staff,
    )
    if item is None:
        raise NotFound(f"no review item {quote(review_id)}")
    note = f"{body.decision}: {body.note}"[:200]
    await audit("review-decision", [str(item["event"]["person_id"])], subject=note)
    return {
        "review_id": review_id,
        "decision": body.decision,
        "record": orjson.loads(orjson.dumps(item["event"])),
    }
