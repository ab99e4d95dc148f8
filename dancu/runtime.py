"""Wiring the platform's processes: API, Faust workers, the ClickHouse sink, simulator."""

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
from pathlib import Path

import faust
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
from streams.app import make_app, make_sink_app

console = Console(stderr=True)


@dataclass
class RunOptions:
    role: str = "all"  # all | store | worker | api
    workers: int = 1  # worker processes `all` starts beside the store's and the API's
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


def faust_agents(settings: Settings, build: Callable[[Settings, Clients], faust.App]) -> Extra:
    """Run a Faust app (the worker's or the sink's) for the life of the API app."""

    @asynccontextmanager
    async def run(_: FastAPI, clients: Clients) -> AsyncIterator[None]:
        app = build(settings, clients)
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
                    lag = await clients.lag.pipeline()
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


_LIBC = ctypes.CDLL("libc.so.6", use_errno=True)  # loaded here: never dlopen in a child


def _die_with_parent(parent: int) -> Callable[[], None]:
    """In the child: be killed when the parent dies (even by SIGKILL), so a crashed
    `dancu up` never leaves a process holding the store and its port; and if the parent
    died before that took effect, die now."""

    def arm() -> None:
        _LIBC.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        if os.getppid() != parent:
            os.kill(os.getpid(), signal.SIGKILL)

    return arm


@dataclass
class Child:
    """A process of the platform ``dancu up`` started and watches."""

    name: str  # store | worker-1 …
    command: list[str]
    env: dict[str, str]
    log: Path
    pidfile: Path
    restart: bool  # started again when it exits on its own
    proc: subprocess.Popen[bytes] | None = None
    restarts: list[float] = field(default_factory=list)

    def start(self) -> None:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        self.pidfile.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as log:  # the child keeps its own descriptor
            self.proc = subprocess.Popen(
                self.command,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                # A session of its own: a Ctrl-C at the terminal reaches this process only,
                # which then stops the children in order (SIGTERM, each ends its batch).
                start_new_session=True,
                preexec_fn=_die_with_parent(os.getpid()),  # async-signal-safe calls only
            )
        self.pidfile.write_text(str(self.proc.pid))


def child_processes(settings: Settings, workers: int) -> list[Child]:
    """The store's owner (the ClickHouse sink and analytics, on ``store_port``) and
    ``workers`` worker processes (validation, Redis state, tracing; any free port)."""
    base = {k: v for k, v in os.environ.items() if k != "DANCU_STORE_URL"}
    command = [sys.executable, "-m", "dancu", "up", "--no-services", "--no-simulate"]
    logs = settings.data_dir / "logs"
    run = settings.data_dir / "run"
    store = Child(
        "store",
        [*command, "--role", "store"],
        {**base, "DANCU_API_PORT": str(settings.store_port), "DANCU_API_HOST": "127.0.0.1"},
        logs / "store.log",
        run / "store.pid",
        restart=True,
    )
    worker_env = {
        **base,
        "DANCU_API_PORT": "0",  # health and metrics on a port of its own, any free one
        "DANCU_API_HOST": "127.0.0.1",
        "DANCU_STORE_URL": f"http://127.0.0.1:{settings.store_port}",
    }
    return [
        store,
        *(
            Child(
                f"worker-{i}",
                [*command, "--role", "worker"],
                worker_env,
                logs / f"worker-{i}.log",
                run / f"worker-{i}.pid",
                restart=True,
            )
            for i in range(1, workers + 1)
        ),
    ]


def supervise(children: list[Child], stopping: threading.Event, lock: threading.Lock) -> None:
    """Watch each child: one that exits on its own is started again after a back-off (1 s,
    doubling to 30 s while it keeps exiting; a worker's partitions went to the others
    meanwhile and come back by rebalance; the store's rows waited in Kafka). More than five
    exits in a minute stops this process instead of answering gates while scans pile up
    unprocessed. ``lock`` orders a restart against the stop: no child is started once
    stopping is set."""

    def watch(child: Child) -> None:
        while True:
            assert child.proc is not None
            code = child.proc.wait()
            if stopping.is_set():
                return
            now = time.monotonic()
            child.restarts = [t for t in child.restarts if now - t < 600] + [now]
            if len([t for t in child.restarts if now - t < 60]) > 5:
                console.print(f"[red]the {child.name} process exited ({code}); stopping[/red]")
                os.kill(os.getpid(), signal.SIGTERM)
                return
            delay = min(30.0, 2.0 ** (len(child.restarts) - 1))
            console.print(
                f"[yellow]the {child.name} process exited ({code}); restarting in "
                f"{delay:.0f} s[/yellow]"
            )
            if stopping.wait(delay):
                return
            with lock:
                if stopping.is_set():
                    return
                child.start()

    for child in children:
        name = f"{child.name}-watch"
        threading.Thread(target=watch, args=(child,), name=name, daemon=True).start()


def stop_processes(children: list[Child], timeout: float = 60) -> None:
    """SIGTERM to every child at once (each finishes its batch), SIGKILL past ``timeout``."""
    live = [c.proc for c in children if c.proc is not None and c.proc.poll() is None]
    for proc in live:
        proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for proc in live:
        try:
            proc.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    for c in children:
        c.pidfile.unlink(missing_ok=True)


def serve(settings: Settings, options: RunOptions) -> RunSummary:
    """Run the platform until interrupted (or for ``options.duration`` seconds).

    ``all`` is several processes: the store's owner (the ClickHouse sink + analytics),
    ``options.workers`` Faust workers sharing the topics' partitions, and the public API
    (gate checks, scans, imports; analytics forwarded to the store), so gate answers never
    wait behind batch work on one event loop.
    """
    if options.role != "all":
        return _serve(settings, options)
    # uvicorn re-raises the signal that stopped it once it has shut down; SIGTERM's default
    # action would then end this process before it stops the store's process gracefully
    # (which would die by PDEATHSIG, SIGKILL: a Faust batch or a webhook delivery cut
    # short). As an exception it unwinds through the ``finally`` below instead.
    signal.signal(signal.SIGTERM, _exit_on_signal)
    children = child_processes(settings, max(1, options.workers))
    for stale in (settings.data_dir / "run").glob("*.pid"):  # a SIGKILLed run's
        stale.unlink(missing_ok=True)
    stopping = threading.Event()
    lock = threading.Lock()
    try:
        for child in children:
            child.start()
        supervise(children, stopping, lock)
        api_settings = settings.model_copy(
            update={"store_url": f"http://127.0.0.1:{settings.store_port}"}
        )
        return _serve(api_settings, options)
    finally:
        with lock:
            stopping.set()
        stop_processes(children)


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
    if options.role == "store":
        extras.append(faust_agents(settings, make_sink_app))
    if options.role == "worker":
        extras.append(faust_agents(settings, make_app))
    if options.role == "all":
        extras.append(simulator_and_timer(settings, options, stop_server, summary))
    # A worker never opens ClickHouse (chDB allows one process per data path; the sink
    # owns it): it writes through Kafka, and its analytics routes go to the store.
    app = create_app(settings, extras=extras, owns_store=options.role != "worker")
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
