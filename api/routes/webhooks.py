"""Webhooks: an audience (a district's officials, an organisation) registers receivers
that get each of its alert events as a signed JSON POST, in order, retried with back-off
until acknowledged (api/webhook_delivery.py). The secret is shown once, at creation.

Where a receiver may be is limited (SSRF): see :mod:`infra.webhooks`."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Path, Response
from pydantic import BaseModel, Field

from api.access import Forbidden, PrincipalDep
from api.alert_views import scope_of
from api.audit import AuditDep
from api.deps import ClientsDep
from api.errors import ApiError, BadInput
from infra.clients import Clients
from infra.credentials import Principal
from infra.webhooks import Webhook, url_problem

router = APIRouter(prefix="/v1", tags=["alerts"])

WebhookId = Annotated[str, Path(pattern=r"^wh-[0-9a-f]{16}$", description="the webhook's ID")]


class NotFound(ApiError):
    status_code = 404


class Conflict(ApiError):
    status_code = 409


class WebhookCreate(BaseModel):
    url: str = Field(min_length=1, max_length=2000, description="an http(s) receiver")
    description: str = Field(default="", max_length=200)


class WebhookCreated(BaseModel):
    webhook_id: str
    secret: str = Field(description="the HMAC key of X-Dancu-Signature; shown only now")
    url: str
    description: str
    last_event_id: str = Field(description="delivery starts with the events after this one")


@router.post("/webhooks", status_code=201, response_model=WebhookCreated)
async def add_webhook(
    body: WebhookCreate, clients: ClientsDep, principal: PrincipalDep, audit: AuditDep
) -> WebhookCreated:
    """Register a receiver for the caller's alerts (from the next event on)."""
    scope = scope_of(principal)
    try:
        problem = await asyncio.wait_for(
            asyncio.to_thread(url_problem, body.url, clients.settings.webhook_allowed), 10
        )
    except TimeoutError:
        problem = "url: the host name could not be resolved in 10 s"
    if problem:
        raise BadInput(problem)
    try:
        hook = await clients.webhooks.add(
            scope,
            body.url,
            body.description,
            principal.name,
            principal.role,
            await clients.alerts.last_id(scope),
        )
    except ValueError as exc:
        raise Conflict(str(exc)) from None
    # Alerts (personal data, for a district) will leave dancu through it: audited.
    await audit("webhook-add", subject=f"{hook.webhook_id} {body.url}"[:200])
    return WebhookCreated(
        webhook_id=hook.webhook_id,
        secret=hook.secret,
        url=hook.url,
        description=hook.description,
        last_event_id=hook.cursor,
    )


@router.get("/webhooks")
async def list_webhooks(clients: ClientsDep, principal: PrincipalDep) -> list[dict[str, Any]]:
    """The caller's receivers and how delivery goes (delivered, failing attempts)."""
    return [h.public() for h in await clients.webhooks.of_scope(scope_of(principal))]


async def _own(clients: Clients, principal: Principal, webhook_id: str) -> Webhook:
    hook = await clients.webhooks.get(webhook_id)
    if hook is None:
        raise NotFound(f"no webhook {webhook_id}")
    if hook.scope != scope_of(principal):
        raise Forbidden(f"webhook {webhook_id} is not your district's or organisation's")
    return hook


@router.delete("/webhooks/{webhook_id}", status_code=204)
async def delete_webhook(
    webhook_id: WebhookId, clients: ClientsDep, principal: PrincipalDep, audit: AuditDep
) -> Response:
    """Stop sending to a receiver (at once; nothing more is sent to it)."""
    hook = await _own(clients, principal, webhook_id)
    await clients.webhooks.delete(hook)
    await audit("webhook-delete", subject=f"{hook.webhook_id} {hook.url}"[:200])
    return Response(status_code=204)
