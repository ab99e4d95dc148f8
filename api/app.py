"""The FastAPI app factory. The lifespan builds clients once; extra lifespans (the Faust
worker, the simulator) are composed in by the CLI, so api/ never imports streams/."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from importlib import metadata, resources

from fastapi import FastAPI
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

from api import errors, openapi
from api.access import Access
from api.flood import FloodGuard, FloodLimits
from api.gate_path import GateFastPath
from api.limits import BodyLimit, ServerTiming
from api.observe import RequestLog
from api.proxy import StoreProxy
from api.routes import (
    access_admin,
    admin,
    alerts,
    analytics,
    audit,
    checkins,
    checkpoints,
    declarations,
    health,
    imports,
    metrics,
    owners,
    posters,
    quality,
    residents,
    scans,
    stats,
    testing,
    tracing,
    webhooks,
)
from api.webhook_delivery import WebhookDeliverer
from infra.clickhouse import ClickHouse
from infra.clients import Clients
from infra.secrets import metrics_token
from infra.settings import Settings

Extra = Callable[[FastAPI, Clients], AbstractAsyncContextManager[None]]


def create_app(
    settings: Settings,
    *,
    clickhouse: ClickHouse | None = None,
    extras: Sequence[Extra] = (),
    owns_store: bool = True,
) -> FastAPI:
    """The API app. ``owns_store`` False: this process never opens ClickHouse (a worker,
    or an API forwarding analytics to ``settings.store_url``)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.metrics_token = metrics_token(settings)  # made now: readable before a scrape
        clients = await Clients.open(
            settings, clickhouse, owns_store=owns_store and settings.store_url is None
        )
        app.state.clients = clients
        drain = asyncio.create_task(
            clients.audit.run() if clients.owns_store else asyncio.Event().wait(),
            name="audit-drain",
        )
        # Webhook deliveries: from the store's owner (one deliverer per webhook anyway).
        delivery_stop = asyncio.Event()
        delivery = asyncio.create_task(
            WebhookDeliverer(clients).run(delivery_stop)
            if clients.owns_store
            else delivery_stop.wait(),
            name="webhook-delivery",
        )
        async with AsyncExitStack() as stack:
            try:
                for extra in extras:
                    await stack.enter_async_context(extra(app, clients))
                yield
            finally:
                await stack.aclose()
                delivery_stop.set()  # a delivery in flight finishes and records its ack
                with contextlib.suppress(BaseException):
                    await asyncio.wait_for(delivery, 30)
                drain.cancel()
                with contextlib.suppress(BaseException):
                    await drain
                if clients.owns_store:
                    with contextlib.suppress(Exception):
                        await clients.audit.drain_once()  # nothing audited is left behind
                await clients.close()

    app = FastAPI(title="dancu", version=metadata.version("dancu"), lifespan=lifespan)
    errors.install(app)
    # Set when the server begins to shut down (dancu/runtime.py): open alert streams end,
    # so a graceful stop does not wait on clients that never hang up.
    app.state.closing = asyncio.Event()
    if settings.store_url:  # inside the body limit: a forwarded body is bounded too
        app.add_middleware(StoreProxy, store_url=settings.store_url)
    app.add_middleware(GateFastPath)
    app.add_middleware(Access)  # inside the body limit: a signed body is bounded too
    app.add_middleware(BodyLimit)
    app.add_middleware(ServerTiming)
    # 429 over a cap of requests in flight, before a body is read (inside the request log,
    # so refusals are counted and logged like any answer)
    app.add_middleware(FloodGuard, limits=FloodLimits.of(settings))
    app.add_middleware(RequestLog)  # outermost: request ID, access log, HTTP metrics
    openapi.install(app)
    for module in (
        health,
        scans,
        stats,
        checkpoints,
        posters,
        checkins,
        admin,
        audit,
        imports,
        residents,
        quality,
        tracing,
        declarations,
        testing,
        access_admin,
        owners,
        metrics,
        alerts,
        webhooks,
        analytics,
    ):
        app.include_router(module.router)

    # The dashboard: a public shell at / and its script, style and vendored files under
    # /static (no data in them; the page asks for a token and sends it with each request).
    app.mount("/static", StaticFiles(packages=[("api", "static")]), name="static")
    page = resources.files("api").joinpath("static", "dashboard.html").read_text("utf-8")

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def dashboard() -> str:
        return page

    return app
