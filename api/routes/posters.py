"""A checkpoint's printable poster: ``GET /v1/checkpoints/{id}/poster.svg`` and
``poster.png``. Its QR code holds a signed text naming the checkpoint
(:mod:`registry.posters`), which residents' phones send back to ``POST /v1/checkins``.
An owner prints its own organisation's posters only."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Path, Request
from fastapi.responses import Response

from api.access import Forbidden, PrincipalDep
from api.deps import ClientsDep
from api.posters import render_png, render_svg
from api.routes.checkpoints import CHECKPOINT_ID, NotFound
from infra.clients import Clients
from infra.credentials import Principal
from infra.secrets import poster_key
from registry.errors import quote
from registry.posters import make_poster_payload
from tracing.events import VN_TZ

router = APIRouter(prefix="/v1", tags=["checkpoints"])
CheckpointId = Annotated[str, Path(pattern=CHECKPOINT_ID)]
PNG: dict[int | str, dict[str, Any]] = {
    200: {"content": {"image/png": {}}, "description": "the poster, A4 at 150 dpi"}
}
SVG: dict[int | str, dict[str, Any]] = {
    200: {"content": {"image/svg+xml": {}}, "description": "the poster, A4 in mm"}
}


def key_of(request: Request, clients: Clients) -> bytes:
    """The poster key, read once per app (a file read on every request is needless)."""
    key: bytes | None = getattr(request.app.state, "poster_key", None)
    if key is None:
        key = poster_key(clients.settings)
        request.app.state.poster_key = key
    return key


async def _poster(
    request: Request, clients: Clients, principal: Principal, checkpoint_id: str
) -> tuple[str, dict[str, str]]:
    fields = (await clients.checkpoints.lookup([checkpoint_id])).get(checkpoint_id) or {}
    if not fields:
        raise NotFound(f"checkpoint {quote(checkpoint_id)} is not registered")
    if principal.role == "owner" and fields.get("owner") != principal.organisation:
        raise Forbidden(f"checkpoint {quote(checkpoint_id)} is not your organisation's")
    issued = datetime.now(VN_TZ).date()
    return make_poster_payload(key_of(request, clients), checkpoint_id, issued), fields


def _headers(checkpoint_id: str, ext: str) -> dict[str, str]:
    safe = "".join(c if c.isalnum() or c in "._-" else "_" for c in checkpoint_id)
    return {
        "Content-Disposition": f'inline; filename="poster-{safe}.{ext}"',
        "Cache-Control": "private, no-store",
    }


@router.get("/checkpoints/{checkpoint_id}/poster.svg", response_class=Response, responses=SVG)
async def poster_svg(
    checkpoint_id: CheckpointId, request: Request, clients: ClientsDep, principal: PrincipalDep
) -> Response:
    """The checkpoint's poster as SVG (vector: for a print shop)."""
    payload, fields = await _poster(request, clients, principal, checkpoint_id)
    body = render_svg(payload, fields, checkpoint_id)
    return Response(body, media_type="image/svg+xml", headers=_headers(checkpoint_id, "svg"))


@router.get("/checkpoints/{checkpoint_id}/poster.png", response_class=Response, responses=PNG)
async def poster_png(
    checkpoint_id: CheckpointId, request: Request, clients: ClientsDep, principal: PrincipalDep
) -> Response:
    """The checkpoint's poster as PNG (A4 at 150 dpi)."""
    payload, fields = await _poster(request, clients, principal, checkpoint_id)
    # ~50 ms of drawing and compression: off the event loop, which answers the gates
    body = await asyncio.to_thread(render_png, payload, fields, checkpoint_id)
    return Response(body, media_type="image/png", headers=_headers(checkpoint_id, "png"))
