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

from api import errors
from api.access import Access
from api.gate_path import GateFastPath
from api.limits import BodyLimit, ServerTiming
from api.proxy import StoreProxy
from api.routes import (
    access_admin,
    admin,
    audit,
    checkpoints,
    declarations,
    health,
    imports,
    owners,
    quality,
    residents,
    scans,
    stats,
    tracing,
)
from infra.clickhouse import ClickHouse
from infra.clients import Clients
from infra.settings import Settings

Extra = Callable[[FastAPI, Clients], AbstractAsyncContextManager[None]]


def create_app(
    settings: Settings,
    *,
    clickhouse: ClickHouse | None = None,
    extras: Sequence[Extra] = (),
) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        clients = await Clients.open(settings, clickhouse, owns_store=settings.store_url is None)
        app.state.clients = clients
        drain = asyncio.create_task(
            clients.audit.run() if clients.owns_store else asyncio.Event().wait(),
            name="audit-drain",
        )
        async with AsyncExitStack() as stack:
            try:
                for extra in extras:
                    await stack.enter_async_context(extra(app, clients))
                yield
            finally:
                await stack.aclose()
                drain.cancel()
                with contextlib.suppress(BaseException):
                    await drain
                if clients.owns_store:
                    with contextlib.suppress(Exception):
                        await clients.audit.drain_once()  # nothing audited is left behind
                await clients.close()

    app = FastAPI(title="dancu", version=metadata.version("dancu"), lifespan=lifespan)
    errors.install(app)
    if settings.store_url:  # inside the body limit: a forwarded body is bounded too
        app.add_middleware(StoreProxy, store_url=settings.store_url)
    app.add_middleware(GateFastPath)
    app.add_middleware(Access)  # inside the body limit: a signed body is bounded too
    app.add_middleware(BodyLimit)
    app.add_middleware(ServerTiming)
    for module in (
        health,
        scans,
        stats,
        checkpoints,
        admin,
        audit,
        imports,
        residents,
        quality,
        tracing,
        declarations,
        access_admin,
        owners,
    ):
        app.include_router(module.router)

    page = resources.files("api").joinpath("static", "dashboard.html").read_text("utf-8")

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def dashboard() -> str:
        return page

    return app
