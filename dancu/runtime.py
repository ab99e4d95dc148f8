"""Wiring the all-in-one process: API + Faust worker + ClickHouse sink + simulator."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import httpx
import uvicorn
from fastapi import FastAPI
from rich.console import Console

from api.app import Extra, create_app
from gate.http_auth import BearerAuth, DeviceAuth
from gate.simulate import Access, TrafficSimulator
from infra.clients import Clients
from infra.logs import configure_logging
from infra.settings import Settings
from registry.synthetic import SeedPlan
from streams.app import make_app

console = Console(stderr=True)


@dataclass
class RunOptions:
    role: str = "all"  # all | store | worker | api
    simulate: bool = True
    rate: float = 200.0
    duration: float | None = None
    drain_timeout: float = 60.0
    city: int = 50_000  # the seeded city the simulator walks (SeedPlan residents, seed 1)


@dataclass
class RunSummary:
    produced: int = 0
    processed: int = 0
    lag: int | None = None
    seconds: float = 0.0
    extra: dict[str, object] = field(default_factory=dict)


def faust_worker(settings: Settings) -> Extra:
    @asynccontextmanager
    async def run(_: FastAPI, clients: Clients) -> AsyncIterator[None]:
        app = make_app(settings, clients)
        await app.start()
        try:
            yield
        finally:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(app.stop(), 30)

    return run


def simulator_and_timer(
    settings: Settings, options: RunOptions, on_done: Callable[[], None], summary: RunSummary
) -> Extra:
    @asynccontextmanager
    async def run(_: FastAPI, clients: Clients) -> AsyncIterator[None]:
        stop = asyncio.Event()
        start_processed = await clients.index.processed()
        started = time.monotonic()
        sim = (
            TrafficSimulator(
                settings.api_url, rate=options.rate, plan=SeedPlan(residents=options.city, seed=1)
            )
            if options.simulate
            else None
        )
        if sim is not None:
            sim.access = await simulator_access(clients, sim)
        sim_task = None

        async def start_sim() -> None:
            await asyncio.sleep(0.5)  # let uvicorn bind before the devices post
            assert sim is not None
            try:
                await sim.run(stop)
            except Exception as exc:  # say so: a silent simulator looks like a dead platform
                console.print(f"[red]the traffic simulator stopped: {exc}[/red]")
                raise

        if sim is not None:
            sim_task = asyncio.create_task(start_sim())

        async def timer() -> None:
            assert options.duration is not None
            await asyncio.sleep(options.duration)
            stop.set()
            if sim_task:
                with contextlib.suppress(Exception):
                    await sim_task
            deadline = time.monotonic() + options.drain_timeout
            lag = None
            while time.monotonic() < deadline:
                with contextlib.suppress(Exception):
                    lag = await clients.lag.lag()
                if lag == 0:
                    break
                await asyncio.sleep(0.5)
            await asyncio.sleep(1.5)  # the last batch's Redis counters
            summary.produced = sim.stats.produced if sim else 0
            summary.processed = await clients.index.processed() - start_processed
            summary.lag = lag
            summary.seconds = time.monotonic() - started
            if sim is not None:
                with contextlib.suppress(Exception):
                    summary.extra.update(await sim.tracing_totals())
            on_done()

        timer_task = asyncio.create_task(timer()) if options.duration else None
        try:
            yield
        finally:
            stop.set()
            for t in (sim_task, timer_task):
                if t and not t.done():
                    t.cancel()
                    with contextlib.suppress(BaseException):
                        await t

    return run


async def simulator_access(clients: Clients, sim: TrafficSimulator) -> Access:
    """Credentials for the simulated city, valid a day: a data steward, and for each
    district a gateway device for its checkpoints and an official."""
    creds = clients.credentials
    tag = secrets.token_hex(3)
    token, _ = await creds.add_user(f"sim-steward-{tag}", "steward", days=1)
    by_district: dict[str, list[str]] = {}
    for place in sim.city.places:
        by_district.setdefault(str(place["district"]), []).append(str(place["checkpoint_id"]))
    devices: dict[str, httpx.Auth] = {}
    officials: dict[str, httpx.Auth] = {}
    for district in sorted(set(by_district) | set(sim.city.district.values())):
        if by_district.get(district):
            devices[district] = DeviceAuth(*await creds.add_device(*by_district[district]))
        official, _ = await creds.add_user(
            f"sim-official-{tag}-{district}", "official", district, 1
        )
        officials[district] = BearerAuth(official)
    return Access(BearerAuth(token), devices, officials)


def _die_with_parent() -> None:
    """In the child: be killed when the parent dies (even by SIGKILL), so a crashed
    `dancu up` never leaves a process holding the store and its port."""
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def start_store_process(settings: Settings) -> subprocess.Popen[bytes]:
    """The store's owner (Faust worker, ClickHouse sink, analytics) on ``store_port``."""
    logs = settings.data_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "DANCU_API_PORT": str(settings.store_port),
        "DANCU_API_HOST": "127.0.0.1",
    }
    env.pop("DANCU_STORE_URL", None)
    command = [sys.executable, "-m", "dancu", "up", "--role", "store", "--no-services"]
    with open(logs / "store.log", "ab") as log:  # the child keeps its own descriptor
        return subprocess.Popen(
            [*command, "--no-simulate"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent,  # before any thread exists in this process
        )


def watch_store(proc: subprocess.Popen[bytes], stopping: threading.Event) -> None:
    """If the store's process dies on its own, this one stops too, instead of
    answering gates while scans pile up unprocessed."""

    def watch() -> None:
        code = proc.wait()
        if not stopping.is_set():
            console.print(f"[red]the store's process exited ({code}); stopping[/red]")
            os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="store-watch", daemon=True).start()


def stop_process(proc: subprocess.Popen[bytes], timeout: float = 60) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def serve(settings: Settings, options: RunOptions) -> RunSummary:
    """Run the platform until interrupted (or for ``options.duration`` seconds).

    ``all`` is two processes: the store's owner (Faust worker + ClickHouse + analytics) and
    the public API (gate checks, scans, imports; analytics forwarded to the store), so
    gate answers never wait behind batch work on one event loop.
    """
    if options.role != "all":
        return _serve(settings, options)
    # uvicorn re-raises the signal that stopped it once it has shut down; SIGTERM's default
    # action would then end this process before it stops the store's process gracefully
    # (which would die by PDEATHSIG, SIGKILL: a Faust batch or a webhook delivery cut
    # short). As an exception it unwinds through the ``finally`` below instead.
    signal.signal(signal.SIGTERM, _exit_on_signal)
    store = start_store_process(settings)
    stopping = threading.Event()
    watch_store(store, stopping)
    try:
        api_settings = settings.model_copy(
            update={"store_url": f"http://127.0.0.1:{settings.store_port}"}
        )
        return _serve(api_settings, options)
    finally:
        stopping.set()
        stop_process(store)


def _exit_on_signal(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)


class ClosingServer(uvicorn.Server):
    """Tells the app when shutdown begins (``app.state.closing``): open alert streams
    (Server-Sent Events) end then, so a graceful stop never waits on clients that never
    hang up (they reconnect to the next server with Last-Event-ID)."""

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        closing = getattr(getattr(self.config.app, "state", None), "closing", None)
        if isinstance(closing, asyncio.Event):
            closing.set()
        await super().shutdown(sockets)


def _serve(settings: Settings, options: RunOptions) -> RunSummary:
    configure_logging(settings.log_level)
    summary = RunSummary()
    servers: list[uvicorn.Server] = []

    def stop_server() -> None:
        servers[0].should_exit = True

    extras: list[Extra] = []
    if options.role in ("store", "worker"):
        extras.append(faust_worker(settings))
    if options.role == "all":
        extras.append(simulator_and_timer(settings, options, stop_server, summary))
    app = create_app(settings, extras=extras)
    server = ClosingServer(
        uvicorn.Config(
            app,
            host=settings.api_host,
            port=settings.api_port,
            log_level=settings.log_level.lower(),
            log_config=None,  # keep configure_logging's JSON lines
            access_log=False,  # api.observe.RequestLog writes the access log
            lifespan="on",
            loop="uvloop",
        )
    )
    servers.append(server)
    server.run()
    if not server.started:
        raise SystemExit(3)
    return summary
