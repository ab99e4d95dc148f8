"""Alerts for the people who act on them: the live stream (Server-Sent Events), the list,
and officials' acknowledgements and follow-ups (contacted, quarantined, tested, result).

An official sees the alerts of their district (exposed residents, named: audited); an
owner those of their organisation (venue alerts: counts, never names). The stream's event
IDs are the audience's Redis stream IDs, so a client that reconnects with
``Last-Event-ID`` (or ``?last_event_id=``) gets exactly what it missed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Annotated, Any, Literal

import orjson
from fastapi import APIRouter, Header, Path, Query, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, model_validator

from api.access import Forbidden, PrincipalDep
from api.alert_views import alert_views, event_views, scope_of
from api.audit import AuditDep
from api.deps import ClientsDep
from api.errors import ApiError, Unavailable
from infra.alerts import Alert, StepRaced
from infra.clients import Clients
from infra.credentials import Principal
from infra.metrics import ALERTS_SENT
from tracing.alerts import Action, AlertWithdrawn, Result, Status, next_status

log = logging.getLogger(__name__)
router = APIRouter(prefix="/v1", tags=["alerts"])

STREAM_ID = r"^[0-9]{1,20}(-[0-9]{1,20})?$"
AlertId = Annotated[str, Path(pattern=r"^[0-9a-f]{24}$", description="the alert's ID")]
REVOKED = b'event: end\ndata: {"reason": "credentials revoked or expired"}\n\n'
HEARTBEAT_S = 15.0  # a comment line this often keeps proxies from closing a quiet stream
# Each read waits this long at most: the stream notices a shutdown or a gone client soon.
READ_BLOCK = timedelta(seconds=1)
MAX_STREAMS = 1000  # open streams per process (each holds one Redis connection)


class NotFound(ApiError):
    status_code = 404


class Conflict(ApiError):
    status_code = 409


async def _scoped(clients: Clients, principal: Principal, alert_id: str) -> Alert:
    alert = await clients.alerts.get(alert_id, history=True)
    if alert is None:
        raise NotFound(f"no alert {alert_id} (it never existed, or expired)")
    if alert.scope != scope_of(principal):
        raise Forbidden(f"alert {alert_id} is not for your district or organisation")
    return alert


def _sse(event_id: str, data: dict[str, Any]) -> bytes:
    return b"id: " + event_id.encode() + b"\nevent: alert\ndata: " + orjson.dumps(data) + b"\n\n"


def _older(a: str, b: str) -> bool:
    """Stream ID ``a`` comes before ``b``."""

    def parts(x: str) -> tuple[int, int]:
        ms, _, seq = x.partition("-")
        return int(ms), int(seq or 0)

    return parts(a) < parts(b)


@router.get(
    "/alerts/stream",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}, "description": "alert events"}},
)
async def alert_stream(
    request: Request,
    clients: ClientsDep,
    principal: PrincipalDep,
    audit: AuditDep,
    last_event_id: Annotated[
        str | None,
        Query(pattern=STREAM_ID, description="resume after this event (as Last-Event-ID)"),
    ] = None,
    last_event_id_header: Annotated[
        str | None, Header(alias="Last-Event-ID", pattern=STREAM_ID)
    ] = None,
) -> StreamingResponse:
    """The live alerts of the caller's district (officials) or organisation (owners), as
    Server-Sent Events: ``id:`` the event ID, ``event: alert``, ``data:`` the change and
    the alert as JSON. Without a resume point it starts with what comes next; a heartbeat
    comment comes every 15 s."""
    scope = scope_of(principal)
    state = request.app.state
    if getattr(state, "alert_streams", 0) >= MAX_STREAMS:
        raise Unavailable("too many open alert streams on this server; retry shortly")
    resume = last_event_id_header or last_event_id
    start = resume or await clients.alerts.last_id(scope)
    kept_from = await clients.alerts.kept_from(scope) if resume else None
    closing: asyncio.Event = getattr(state, "closing", None) or asyncio.Event()

    async def events() -> AsyncIterator[bytes]:
        state.alert_streams = getattr(state, "alert_streams", 0) + 1
        try:
            yield b"retry: 3000\n: connected\n\n"
            if resume and kept_from is not None and _older(resume, kept_from):
                # Entries after the resume point were trimmed: say so (the client reloads
                # the list), then go on from what is kept.
                gap = {"resume_from": resume, "oldest_kept": kept_from}
                yield b"event: gap\ndata: " + orjson.dumps(gap) + b"\n\n"
            cursor = start
            quiet = checked = time.monotonic()
            async with clients.alerts.reader(READ_BLOCK) as reader:
                while not closing.is_set():
                    if time.monotonic() - checked >= HEARTBEAT_S:
                        # a revoked or expired credential ends the stream (it was checked
                        # once, when the stream opened)
                        if not await clients.credentials.still_valid(principal):
                            yield REVOKED
                            return
                        checked = time.monotonic()
                    batch = await reader.next(scope, cursor)
                    if not batch:
                        if time.monotonic() - quiet >= HEARTBEAT_S:
                            yield b": keepalive\n\n"
                            quiet = time.monotonic()
                        continue
                    views, people = await event_views(clients, batch)
                    if people:
                        await audit("alerts-stream", people)
                    yield b"".join(_sse(v["event_id"], v) for v in views)
                    ALERTS_SENT.labels("sse").inc(len(views))
                    cursor = batch[-1].event_id
                    quiet = time.monotonic()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a store away: the client reconnects and resumes
            log.warning("alert stream for %s ended: %s", scope, exc)
        finally:
            state.alert_streams -= 1

    return StreamingResponse(
        events(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


@router.get("/alerts")
async def list_alerts(
    clients: ClientsDep,
    principal: PrincipalDep,
    audit: AuditDep,
    status: Status = "open",
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> dict[str, Any]:
    """The caller's alerts in one status, newest first, with the count in each status and
    ``last_event_id``: open the stream from there to miss nothing after this list."""
    scope = scope_of(principal)
    last = await clients.alerts.last_id(scope)  # before the list: no gap between the two
    views, people = await alert_views(clients, await clients.alerts.in_status(scope, status, limit))
    if people:
        await audit("alerts-list", people)
    return {
        "alerts": views,
        "counts": await clients.alerts.counts(scope),
        "last_event_id": last,
    }


@router.get("/alerts/{alert_id}")
async def get_alert(
    alert_id: AlertId, clients: ClientsDep, principal: PrincipalDep, audit: AuditDep
) -> dict[str, Any]:
    """One alert with its history (who acknowledged it, each follow-up)."""
    (view,), people = await alert_views(clients, [await _scoped(clients, principal, alert_id)])
    if people:
        await audit("alert", people)
    return view


class FollowUp(BaseModel):
    model_config = ConfigDict(extra="forbid")

    action: Action
    result: Result | None = Field(default=None, description="for action 'result' only")
    note: str = Field(default="", max_length=1000)

    @model_validator(mode="after")
    def _result_with_result(self) -> FollowUp:
        if self.action == "result" and self.result is None:
            raise ValueError("result: required when action is 'result' (positive or negative)")
        if self.action != "result" and self.result is not None:
            raise ValueError("result: only with action 'result'")
        return self


async def _step(
    clients: Clients,
    principal: Principal,
    alert_id: str,
    step: Literal["ack"] | Action,
    entry: dict[str, object],
) -> dict[str, Any]:
    """Apply an official's step (retried if the alert changed meanwhile)."""
    for _ in range(5):
        alert = await _scoped(clients, principal, alert_id)
        try:
            new = next_status(alert.status, step)
        except AlertWithdrawn as exc:
            raise Conflict(f"alert {alert_id}: {exc}") from None
        if step == "ack" and new == alert.status:
            break  # acknowledged already: nothing to record
        try:
            await clients.alerts.step(
                alert, new, "acknowledged" if step == "ack" else "followup", entry
            )
        except StepRaced:
            continue
        except KeyError:
            raise NotFound(f"no alert {alert_id} (it expired)") from None
        break
    else:
        raise Conflict(f"alert {alert_id} keeps changing; retry")
    (view,), _ = await alert_views(clients, [await _scoped(clients, principal, alert_id)])
    return view


@router.post("/alerts/{alert_id}/ack")
async def acknowledge(
    alert_id: AlertId, clients: ClientsDep, principal: PrincipalDep, audit: AuditDep
) -> dict[str, Any]:
    """An official of the alert's district has seen it and takes it on."""
    view = await _step(clients, principal, alert_id, "ack", {"by": principal.name})
    await audit("alert-ack", [view["person_id"]] if view.get("person_id") else [])
    return view


@router.post("/alerts/{alert_id}/followup")
async def follow_up(
    alert_id: AlertId,
    body: FollowUp,
    clients: ClientsDep,
    principal: PrincipalDep,
    audit: AuditDep,
) -> dict[str, Any]:
    """Record what was done (contacted, quarantined, tested) or the test result, which
    closes the alert. Every step is kept in the alert's history."""
    entry: dict[str, object] = {"by": principal.name, "action": body.action, "note": body.note}
    if body.result is not None:
        entry["result"] = body.result
    view = await _step(clients, principal, alert_id, body.action, entry)
    await audit("alert-followup", [view["person_id"]] if view.get("person_id") else [])
    return view
