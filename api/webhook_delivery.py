"""Delivering alerts to webhooks: each alert event of the webhook's audience, in stream
order, as a signed JSON POST; retried with exponential back-off while the receiver fails;
the webhook's cursor moves past an event only after the receiver answered 2xx.

So delivery resumes where it stopped after the receiver or dancu was down: nothing is
lost, and nothing a receiver acknowledged is sent again. One deliverer per webhook at a
time (a lease in Redis), so several processes may run this safely. On a graceful stop a
delivery in flight is finished and its acknowledgement recorded before the task ends; a
process killed between a receiver's 2xx and the cursor write sends that one event again
on restart, with the same ``X-Dancu-Event-Id`` (receivers may drop it by that ID).

Runs in the store's owner process (api/app.py lifespan)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from datetime import timedelta
from importlib import metadata

import httpx
import orjson

from api.alert_views import event_views
from api.audit import audit_entry
from infra.alerts import AlertEvent
from infra.clients import Clients
from infra.credentials import Principal
from infra.faults import is_transient
from infra.metrics import ALERTS_SENT
from infra.webhooks import (
    EVENT_HEADER,
    LEASE_MS,
    SIGNATURE_HEADER,
    WEBHOOK_HEADER,
    Webhook,
    backoff,
    resolve_host,
    signature,
    url_problem,
)

log = logging.getLogger(__name__)

READ_BLOCK = timedelta(seconds=1)
REFRESH_S = 2.0  # how soon a new webhook starts getting deliveries
TIMEOUT_S = 10.0  # a receiver answers within this, or the attempt failed


async def _wait(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)


class WebhookDeliverer:
    def __init__(self, clients: Clients, http: httpx.AsyncClient | None = None) -> None:
        self.clients = clients
        s = clients.settings
        self.base = s.webhook_retry_base
        self.cap = s.webhook_retry_cap
        self.allow = s.webhook_allowed
        self.http = http or httpx.AsyncClient(timeout=TIMEOUT_S, follow_redirects=False)
        self.agent = f"dancu/{metadata.version('dancu')}"

    async def run(self, stop: asyncio.Event) -> None:
        """Keep one delivery task per webhook until ``stop``; then let each finish the
        delivery in flight."""
        tasks: dict[str, asyncio.Task[None]] = {}
        try:
            while not stop.is_set():
                try:
                    ids = set(await self.clients.webhooks.all_ids())
                except Exception as exc:
                    if not is_transient(exc):
                        raise
                    ids = set(tasks)
                for webhook_id in ids - set(tasks):
                    tasks[webhook_id] = asyncio.create_task(
                        self.serve(webhook_id, stop), name=f"webhook-{webhook_id}"
                    )
                for webhook_id in [w for w, t in tasks.items() if t.done()]:
                    task = tasks.pop(webhook_id)
                    if not task.cancelled() and task.exception() is not None:
                        log.error("webhook %s deliverer failed: %r", webhook_id, task.exception())
                await _wait(stop, REFRESH_S)
        finally:
            log.info("webhook deliveries stopping (%d webhook(s))", len(tasks))
            if tasks:
                _, pending = await asyncio.wait(tasks.values(), timeout=TIMEOUT_S + 5)
                for task in pending:
                    task.cancel()
            await self.http.aclose()
            log.info("webhook deliveries stopped")

    async def serve(self, webhook_id: str, stop: asyncio.Event) -> None:
        """Deliver to one webhook while it exists and this process holds its lease."""
        token = uuid.uuid4().hex
        store = self.clients.webhooks
        try:
            async with self.clients.alerts.reader(READ_BLOCK) as reader:
                while not stop.is_set():
                    try:
                        if not await store.lease(webhook_id, token):
                            await _wait(stop, LEASE_MS / 3000)  # another process delivers
                            continue
                        hook = await store.get(webhook_id)
                        if hook is None:
                            return  # deleted
                        if not await self.clients.credentials.active(hook.created_by):
                            # its official was revoked or their tokens expired: nothing
                            # more leaves until they (or a colleague) register it again
                            await _wait(stop, 5.0)
                            continue
                        events = await reader.next(hook.scope, hook.cursor, count=50)
                        for event in events:
                            if not await self.deliver(hook, event, token, stop):
                                break
                    except Exception as exc:
                        if not is_transient(exc):
                            raise
                        log.warning("webhook %s: a store is away (%s); retrying", webhook_id, exc)
                        await _wait(stop, 1.0)
        finally:
            with contextlib.suppress(Exception):
                await store.release(webhook_id, token)

    async def _body(self, hook: Webhook, event: AlertEvent) -> bytes:
        """The event as its audience sees it; a district's (naming a person) is audited as
        an export to the receiver."""
        (view,), people = await event_views(self.clients, [event])
        if people:
            district = hook.scope.removeprefix("d:")
            who = Principal(hook.created_by, hook.created_role, district)
            stream, fields, maxlen = audit_entry(
                self.clients,
                who,
                f"WEBHOOK {hook.webhook_id}",
                "alert-webhook",
                people,
                hook.description or "alert webhook",
                hook.url,
            )
            await self.clients.redis.xadd(stream, fields, maxlen=maxlen, approximate=True)  # type: ignore[arg-type]
        return orjson.dumps(view)

    async def deliver(
        self, hook: Webhook, event: AlertEvent, token: str, stop: asyncio.Event
    ) -> bool:
        """Send one event until the receiver acknowledges it (True), or stop, deletion or
        a lost lease ends the attempts (False)."""
        store = self.clients.webhooks
        body = await self._body(hook, event)
        headers = {
            "Content-Type": "application/json",
            "User-Agent": self.agent,
            SIGNATURE_HEADER: signature(hook.secret, body),
            EVENT_HEADER: event.event_id,
            WEBHOOK_HEADER: hook.webhook_id,
        }
        attempt = 0
        while not stop.is_set():
            if not await store.lease(hook.webhook_id, token):
                return False  # another process took over: it resends from the cursor
            if attempt and await store.get(hook.webhook_id) is None:
                return False  # deleted meanwhile
            problem = await asyncio.to_thread(url_problem, hook.url, self.allow, resolve_host)
            if problem is None:
                try:
                    r = await self.http.post(hook.url, content=body, headers=headers)
                    if 200 <= r.status_code < 300:
                        log.debug(
                            "webhook %s: event %s acknowledged", hook.webhook_id, event.event_id
                        )
                        ALERTS_SENT.labels("webhook").inc()
                        return await store.advance(hook.webhook_id, token, event.event_id)
                    problem = f"the receiver answered HTTP {r.status_code}"
                except httpx.HTTPError as exc:
                    problem = f"{type(exc).__name__}: {exc}"[:300]
            attempt += 1
            delay = backoff(attempt - 1, self.base, self.cap)
            log.warning(
                "webhook %s: event %s not delivered (%s); attempt %d, next in %.1fs",
                hook.webhook_id,
                event.event_id,
                problem,
                attempt,
                delay,
            )
            await store.failed(hook.webhook_id, attempt, problem)
            deadline = time.monotonic() + delay
            while not stop.is_set() and time.monotonic() < deadline:
                # A long back-off keeps the lease (renewed at each step of the wait).
                await _wait(stop, min(deadline - time.monotonic(), LEASE_MS / 3000))
                if not await store.lease(hook.webhook_id, token):
                    return False
        return False
