"""F0 reports in, exposures and their evidence out.

A report is accepted here (validated, the person checked against the registry), written
down as ``tracing`` and sent to ``f0-reports``; the ``trace_exposures`` agent does the
work and the routes read what it wrote. Reads of named people's exposures, contacts and
evidence are audited."""

from __future__ import annotations

import asyncio
import re
import time
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Path, Query
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from api.access import Hidden, PrincipalDep, check_district, check_resident
from api.audit import AuditDep
from api.deps import ClientsDep
from api.errors import ApiError, BadInput
from infra import topics
from infra.clients import Clients
from infra.credentials import Principal
from registry.errors import quote
from registry.ids import check_id
from registry.residents import exposure_entries, status_view
from tracing.events import REPORT_ID, F0Reported, validation_errors
from tracing.exposure import Exposure, MemoryVisits, Window, co_locations
from tracing.graph import Outbreak, outbreak
from tracing.reports import ReportState, stamp

router = APIRouter(prefix="/v1", tags=["tracing"])

ReportId = Annotated[str, Path(pattern=REPORT_ID, description="the report's ID")]


class NotFound(ApiError):
    status_code = 404


class Conflict(ApiError):
    status_code = 409


def _valid_id(person_id: str, field: str = "person_id") -> str:
    result = check_id(person_id)
    if not result.valid:
        raise BadInput(f"{field}: invalid personal ID: " + "; ".join(result.errors))
    return person_id


def _report(body: dict[str, Any]) -> F0Reported:
    try:
        report = F0Reported.model_validate(body)
        report.check_time(datetime.now(UTC))
    except ValidationError as exc:
        raise BadInput("; ".join(validation_errors(exc))) from exc
    except ValueError as exc:
        raise BadInput(str(exc)) from exc
    if re.search(r"\d{9,}", report.report_id):
        # a report's ID is shown to epidemiologists and kept in ClickHouse: never a CCCD
        raise BadInput("report_id: must not hold a personal ID number (9 or more digits in a row)")
    return report


async def _known(clients: Clients, person_id: str, who: Principal) -> None:
    """The F0 is a registered resident of the official's own district (anyone else is
    answered as not registered: the answer does not say where someone lives)."""
    try:
        check_resident(who, person_id, await clients.residents.get(person_id))
    except Hidden as exc:
        raise BadInput(f"person_id: {exc.message}") from exc


async def _own_report(clients: Clients, state: ReportState, who: Principal) -> None:
    """An official acts on and reads the reports of their own district's F0s."""
    districts = await clients.residents.districts_of([state.person_id])
    check_district(who, districts.get(state.person_id), f"report {state.report_id}'s F0")


async def _shown(
    clients: Clients, who: Principal, keys: list[str]
) -> tuple[dict[str, str], dict[str, str]]:
    """(pseudonym → ID of the people this official may see by ID, pseudonym → district):
    people of other districts appear by pseudonym only."""
    ids = await clients.residents.ids_of(keys)
    districts = await clients.residents.districts_of(sorted(set(ids.values())))
    visible = {
        k: i for k, i in ids.items() if who.role != "official" or districts.get(i) == who.district
    }
    return visible, {k: districts.get(i, "") for k, i in ids.items()}


async def _send(clients: Clients, report_id: str, body: dict[str, object]) -> None:
    await clients.producer.send_and_wait(
        clients.settings.topic(topics.F0_REPORTS), orjson.dumps(body), key=report_id.encode()
    )


async def _view(clients: Clients, report_id: str) -> ReportState | None:
    """The report as the tracer left it, shown as ``tracing`` while a newer submission
    (POST or PUT) is on its way; a submission the tracer has not reached yet alone."""
    state = await clients.tracing.get(report_id)
    submitted = await clients.tracing.submitted(report_id)
    if submitted is None:
        return state
    seq, body = submitted
    if state is None:
        person_id = str(body.get("person_id", ""))
        return ReportState(
            report_id, person_id, clients.pseudonymize(person_id), body, updated_at=stamp()
        )
    if seq > state.seq and state.status != "withdrawn":
        state.status = "tracing"
    return state


async def _state(clients: Clients, report_id: str) -> ReportState:
    state = await _view(clients, report_id)
    if state is None:
        raise NotFound(f"no F0 report {quote(report_id)}")
    return state


def _accepted(report_id: str, status: str) -> JSONResponse:
    return JSONResponse({"report_id": report_id, "status": status}, status_code=202)


async def _submit(clients: Clients, report: F0Reported, action: str) -> JSONResponse:
    """Number the submission, then send it: the tracer alone writes the report's state.
    A failed send leaves the submission numbered; re-posting it sends it again."""
    body = report.model_dump(mode="json")
    seq = await clients.tracing.submit(report.report_id, body)
    await _send(clients, report.report_id, {"action": action, "seq": seq, **body})
    return _accepted(report.report_id, "tracing")


@router.post("/reports/f0", status_code=202)
async def report_f0(
    body: dict[str, Any], clients: ClientsDep, principal: PrincipalDep, audit: AuditDep
) -> JSONResponse:
    """An F0 (positive case) of the official's district: traced at once. → 202
    ``{"report_id", "status": "tracing"}``. Re-posting the same report is harmless; a
    changed one is corrected with PUT."""
    report = _report(body)
    await _known(clients, report.person_id, principal)
    await audit("f0-report-post", [report.person_id], subject=report.report_id)
    old = await _view(clients, report.report_id)
    if old is not None:
        if old.status == "withdrawn":
            raise Conflict(
                f"report {quote(report.report_id)} was withdrawn; report it again under a "
                "new report_id"
            )
        if old.body != report.model_dump(mode="json"):
            raise Conflict(
                f"report {quote(report.report_id)} exists ({old.status}) with other details; "
                "correct it with PUT /v1/reports/f0/{report_id}"
            )
        if old.status != "tracing":
            return _accepted(old.report_id, old.status)  # the same report, traced: nothing to do
    return await _submit(clients, report, "report")


@router.put("/reports/f0/{report_id}", status_code=202)
async def correct_f0(
    report_id: ReportId,
    body: dict[str, Any],
    clients: ClientsDep,
    principal: PrincipalDep,
    audit: AuditDep,
) -> JSONResponse:
    """A corrected report (same body as POST): its exposures are recomputed, the flags
    that no longer hold are withdrawn."""
    if body.get("report_id", report_id) != report_id:
        raise BadInput("report_id: the body names another report than the path")
    report = _report({**body, "report_id": report_id})
    await _known(clients, report.person_id, principal)
    old = await _state(clients, report_id)
    await _own_report(clients, old, principal)
    await audit("f0-report-correct", [report.person_id, old.person_id], subject=report_id)
    if old.status == "withdrawn":
        raise Conflict(
            f"report {quote(report_id)} was withdrawn; report it again under a new report_id"
        )
    return await _submit(clients, report, "correct")


@router.delete("/reports/f0/{report_id}", status_code=202)
async def withdraw_f0(
    report_id: ReportId, clients: ClientsDep, principal: PrincipalDep, audit: AuditDep
) -> JSONResponse:
    """Withdraw a report (a false positive): its exposures are withdrawn and the statuses
    that only it caused restored."""
    state = await _state(clients, report_id)
    await _own_report(clients, state, principal)
    await audit("f0-report-withdraw", [state.person_id], subject=report_id)
    if state.status != "withdrawn":
        await _send(clients, report_id, {"action": "withdraw", "report_id": report_id})
    return _accepted(report_id, "withdrawn")


@router.post("/reports/f0/{report_id}/approve", status_code=202)
async def approve_f0(
    report_id: ReportId, clients: ClientsDep, principal: PrincipalDep, audit: AuditDep
) -> JSONResponse:
    """Release a held report (more people than the brake's limit): it is applied."""
    state = await _state(clients, report_id)
    await _own_report(clients, state, principal)
    if state.status != "held":
        raise Conflict(f"report {quote(report_id)} is {state.status}, not held")
    await _send(
        clients,
        report_id,
        {"action": "approve", "report_id": report_id, "by": principal.name[:100]},
    )
    await audit("f0-approve", [state.person_id], subject=report_id)
    return JSONResponse({"report_id": report_id, "status": "tracing"}, status_code=202)


@router.get("/reports/f0/{report_id}")
async def get_f0(
    report_id: ReportId,
    clients: ClientsDep,
    principal: PrincipalDep,
    audit: AuditDep,
) -> dict[str, object]:
    """``{"report_id", "person_id", "status", "window", "counts", "rule_version"}``
    (and ``preview`` while held). Names the F0: audited."""
    state = await _state(clients, report_id)
    await _own_report(clients, state, principal)
    await audit("f0-report", [state.person_id], subject=report_id)
    return state.public()


async def _exposure_rows(
    clients: Clients, exposures: list[Exposure], who: Principal
) -> list[dict[str, object]]:
    """The exposures of the caller's district (an official sees their own residents; the
    F0 or F1 they were exposed through appears by ID when also theirs, else by pseudonym)."""
    keys = sorted({e.person_key for e in exposures} | {e.via for e in exposures})
    ids, districts = await _shown(clients, who, keys)
    return [
        {
            "person_id": ids.get(e.person_key),
            "person_key": e.person_key,
            "district": districts.get(e.person_key, ""),
            "tier": e.tier,
            "via": ids.get(e.via, e.via),
            "checkpoint_id": e.checkpoint_id,
            "reason": e.reason,
            "overlap_start": e.overlap_start.isoformat(),
            "overlap_end": e.overlap_end.isoformat(),
            "overlap_minutes": round(e.overlap_minutes, 1),
            "report_id": e.report_id,
        }
        for e in exposures
        if e.person_key in ids
    ]


@router.get("/exposures")
async def exposures(
    clients: ClientsDep,
    principal: PrincipalDep,
    audit: AuditDep,
    f0: Annotated[str, Query(max_length=128, description="a report ID or an F0's person ID")],
) -> list[dict[str, object]]:
    """Everyone a report flagged (F1, F2) in the official's district, with the evidence;
    complete once the report's status is ``done``. ``f0`` is a report ID, or a person ID
    (all their reports)."""
    state = await _view(clients, f0)
    if state is not None:
        report_ids = [state.report_id]
    elif check_id(f0).valid:
        district = (await clients.residents.districts_of([f0])).get(f0)
        check_resident(principal, f0, {"district": district} if district else None)
        report_ids = await clients.tracing.reports_of(clients.pseudonymize(f0))
        if not report_ids:
            raise NotFound(f"no F0 report about {f0}")
    else:
        raise NotFound(f"f0: no report {quote(f0)}, and it is not a valid personal ID")
    rows: list[dict[str, object]] = []
    for report_id in report_ids:
        rows.extend(
            await _exposure_rows(clients, await clients.tracing.exposures(report_id), principal)
        )
    shown = {str(r["person_id"]) for r in rows} | {
        str(r["via"]) for r in rows if check_id(str(r["via"])).valid
    }
    await audit("exposures", shown, subject=",".join(report_ids)[:200])
    return rows


@router.get("/residents/{person_id}/why")
async def why(
    person_id: Annotated[str, Path(max_length=64)],
    clients: ClientsDep,
    principal: PrincipalDep,
    audit: AuditDep,
) -> dict[str, object]:
    """The chain of evidence behind a person's tier: each report that flagged them, the
    visit and overlap, and (for an F2) the F1's own evidence back to the F0. People of
    other districts in the chain appear by pseudonym."""
    found = await clients.residents.get(_valid_id(person_id))
    try:
        fields = check_resident(principal, person_id, found)
    except Hidden:
        await audit("why", [person_id])  # asking about someone is a read too
        raise
    shown: set[str] = {person_id}
    key = clients.pseudonymize(person_id)
    chains: list[dict[str, object]] = []
    for report_id, entry in sorted(exposure_entries(fields).items()):
        state = await clients.tracing.get(report_id)
        f0_ids, _ = await _shown(clients, principal, [state.person_key] if state else [])
        link: dict[str, object] = {
            "tier": entry.get("tier"),
            "report_id": report_id,
            "report_status": state.status if state else None,
            "f0_person_id": f0_ids.get(state.person_key) if state else None,
            "window": {"start": state.window_start, "end": state.window_end} if state else None,
        }
        steps: list[Exposure] = []
        if entry.get("tier") != "F0":
            by_key = {e.person_key: e for e in await clients.tracing.exposures(report_id)}
            e = by_key.get(key)
            while e is not None and len(steps) < 3:  # F2 → their F1 → the F0
                steps.append(e)
                e = by_key.get(e.via)
        ids, _ = await _shown(
            clients, principal, sorted({s.person_key for s in steps} | {s.via for s in steps})
        )
        shown.update(ids.values())
        shown.update(str(v) for v in f0_ids.values())
        link["chain"] = [
            {
                "tier": s.tier,
                "person_id": ids.get(s.person_key),
                "person_key": s.person_key,
                "via": ids.get(s.via, s.via),
                "reason": s.reason,
                "checkpoint_id": s.checkpoint_id,
                "overlap_start": s.overlap_start.isoformat(),
                "overlap_end": s.overlap_end.isoformat(),
                "overlap_minutes": round(s.overlap_minutes, 1),
            }
            for s in steps
        ]
        chains.append(link)
    rank = {"F0": 0, "F1": 1, "F2": 2}
    tier = min((str(c["tier"]) for c in chains), key=lambda x: rank.get(x, 9), default=None)
    status = status_view(fields, clients.rules, datetime.now(UTC))
    await audit("why", shown)
    return {"person_id": person_id, "tier": tier, "colour": status["colour"], "evidence": chains}


@router.get("/contacts/{person_id}")
async def contacts(
    person_id: Annotated[str, Path(max_length=64)],
    clients: ClientsDep,
    principal: PrincipalDep,
    audit: AuditDep,
    since: datetime | None = None,
    until: datetime | None = None,
) -> list[dict[str, object]]:
    """Everyone co-located with this person for at least the rules' minimum overlap in
    [since, until] (default: the last 14 days), with the evidence: for a suspected case
    before a test result. Contacts of other districts appear by pseudonym."""
    _valid_id(person_id)
    district = (await clients.residents.districts_of([person_id])).get(person_id)
    check_resident(principal, person_id, {"district": district} if district else None)
    now = datetime.now(UTC)
    until = until or now
    since = since or until - timedelta(days=14)
    if since.tzinfo is None or until.tzinfo is None:
        raise BadInput("since, until: give a timezone (e.g. 2021-11-01T00:00:00+07:00)")
    if not (since.year >= 2000 and until.year <= 2200):
        raise BadInput("since, until: years from 2000 to 2200")
    if since >= until:
        raise BadInput("since: must be before until")
    if until - since > timedelta(days=clients.settings.visit_window_days):
        raise BadInput(f"the period is at most {clients.settings.visit_window_days} days")
    rules = clients.exposure_rules.for_(until.date())
    key = clients.pseudonymize(person_id)
    own = await clients.candidates.visits_of(key, since, until)
    near = []
    for v in own:
        near.extend(
            await clients.candidates.visits_at(
                v.checkpoint_id, max(v.t_in, since), min(v.t_out, until)
            )
        )
    found = sorted(
        co_locations(key, own, Window(since, until), MemoryVisits.of([*own, *near]), rules),
        key=lambda c: (c.overlap_start, c.person_key, c.checkpoint_id),
    )
    ids, _ = await _shown(clients, principal, sorted({c.person_key for c in found}))
    await audit("contacts", [person_id, *ids.values()])
    return [
        {
            "person_id": ids.get(c.person_key),
            "person_key": c.person_key,
            "checkpoint_id": c.checkpoint_id,
            "overlap_start": c.overlap_start.isoformat(),
            "overlap_end": c.overlap_end.isoformat(),
            "overlap_minutes": round(c.overlap_minutes, 1),
        }
        for c in found
    ]


_CACHE: dict[int, tuple[float, Outbreak, list[ReportState]]] = {}


async def _recent(clients: Clients) -> tuple[Outbreak, list[ReportState]]:
    """The graph of every active report of the last 28 days, and those reports: read and
    built at most every 2 s (the dashboard polls), the graph off the event loop."""
    hit = _CACHE.get(id(clients))
    if hit is not None and hit[0] > time.monotonic():
        return hit[1], hit[2]
    since = datetime.now(UTC) - timedelta(days=28)
    cases: dict[str, str] = {}
    exposures: list[Exposure] = []
    visits = []
    states = []
    for state, xs, f0v in await clients.tracing.recent(since):
        states.append(state)
        if state.status != "done":
            continue
        cases[state.report_id] = state.person_key
        exposures.extend(xs)
        visits.extend(f0v)
    result = await asyncio.to_thread(outbreak, cases, exposures, visits)
    _CACHE.clear()
    _CACHE[id(clients)] = (time.monotonic() + 2.0, result, states)
    return result, states


async def _outbreak(clients: Clients) -> Outbreak:
    return (await _recent(clients))[0]


@router.get("/clusters")
async def list_clusters(clients: ClientsDep) -> list[dict[str, object]]:
    """F0s joined through shared F1s or shared places, largest first (pseudonymous)."""
    o = await _outbreak(clients)
    return [
        {
            "cluster_id": c.cluster_id,
            "cases": len(c.cases),
            "people": c.people,
            "checkpoints": list(c.checkpoints),
            "case_keys": list(c.cases),
        }
        for c in o.clusters
    ]


@router.get("/clusters/{cluster_id}/graph")
async def cluster_graph(
    cluster_id: Annotated[str, Path(max_length=64)], clients: ClientsDep
) -> dict[str, object]:
    """Nodes (people by pseudonym, with tier; places) and edges (the evidence)."""
    graph = (await _outbreak(clients)).cluster_graph(cluster_id)
    if graph is None:
        raise NotFound(f"no cluster {quote(cluster_id)}")
    return {"cluster_id": cluster_id, **graph}


@router.get("/hotspots")
async def list_hotspots(clients: ClientsDep) -> list[dict[str, object]]:
    """Checkpoints visited by at least two F0s within 7 days."""
    o = await _outbreak(clients)
    places = await clients.checkpoints.lookup([h.checkpoint_id for h in o.hotspots])
    return [
        {
            "checkpoint_id": h.checkpoint_id,
            "cases": len(h.cases),
            "first_visit": h.first_visit,
            "last_visit": h.last_visit,
            "district": places.get(h.checkpoint_id, {}).get("district", ""),
            "name": places.get(h.checkpoint_id, {}).get("name", ""),
        }
        for h in o.hotspots
    ]


@router.get("/tracing/summary")
async def tracing_summary(clients: ClientsDep) -> dict[str, object]:
    """Aggregates for the dashboard (no one named): reports by status, F1 and F2 flagged,
    the latest reports, the largest clusters and the hotspots."""
    o, recent = await _recent(clients)
    by_status = {"tracing": 0, "done": 0, "held": 0, "withdrawn": 0}
    flagged = {"F1": 0, "F2": 0}
    for state in recent:
        by_status[state.status] = by_status.get(state.status, 0) + 1
        if state.status == "done":
            flagged["F1"] += state.counts.get("F1", 0)
            flagged["F2"] += state.counts.get("F2", 0)
    latest = sorted(recent, key=lambda r: str(r.body.get("reported_at")), reverse=True)[:10]
    return {
        "reports": by_status,
        "flagged": flagged,
        "latest": [
            {
                # no one named: a long run of digits (an ID someone used as a report's
                # name) is masked
                "report_id": re.sub(r"\d{9,}", "…", s.report_id),
                "status": s.status,
                "counts": s.counts,
                "reported_at": s.body.get("reported_at"),
                "preview": s.preview,
            }
            for s in latest
        ],
        "clusters": [
            {"cluster_id": c.cluster_id, "cases": len(c.cases), "people": c.people}
            for c in o.clusters[:10]
        ],
        "hotspots": [
            {"checkpoint_id": h.checkpoint_id, "cases": len(h.cases), "last_visit": h.last_visit}
            for h in o.hotspots[:10]
        ],
    }
