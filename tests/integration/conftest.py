"""Integration fixtures: the real Kafka, Redis and ClickHouse, started by the project's own
launchers. Each test gets its own topics, consumer group, Redis prefix and chDB path.
Under CI (CI=true) a missing service fails the test; it never skips."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from gate.http_auth import BearerAuth, DeviceAuth
from infra import services
from infra.credentials import Credentials
from infra.redis_cluster import RedisCluster
from infra.redis_store import make_redis
from infra.settings import RedisSettings, Settings
from tests.integration.helpers import isolated_settings

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


@pytest.fixture(scope="session")
def base_settings() -> Settings:
    settings = Settings()
    try:
        services.start_all(settings)
    except services.ServiceError as exc:
        if IN_CI:
            pytest.fail(f"services could not start under CI: {exc}")
        pytest.skip(f"services unavailable: {exc}")
    return settings


def free_port() -> int:
    """A port free now, below the ephemeral range (see infra.services.free_ports)."""
    return services.free_ports(1)[0]


class Platform:
    """One all-in-one dancu process (API + Faust worker + chDB sink) in a subprocess."""

    def __init__(self, base: Settings, data_dir: Path, **env: str) -> None:
        tag = f"t{uuid.uuid4().hex[:8]}"
        self.port = free_port()
        self.settings = isolated_settings(base, data_dir, tag, api_port=self.port)
        s = self.settings
        self.env = {
            **os.environ,
            "DANCU_DATA_DIR": str(data_dir),
            "DANCU_TOPIC_PREFIX": s.topic_prefix,
            "DANCU_REDIS_PREFIX": s.redis_prefix,
            "DANCU_APP_ID": s.app_id,
            "DANCU_API_PORT": str(self.port),
            "DANCU_STORE_PORT": str(free_port()),
            "KAFKA_PORT": str(base.kafka.port),
            "REDIS_PORT": str(base.redis.port),
            # a base on an external Redis (the private cluster of `cluster_settings`)
            **({"REDIS_URL": base.redis.url} if base.redis.url else {}),
            **env,
        }
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = data_dir / "platform.log"
        self._clients: dict[tuple[str, ...], httpx.Client] = {}
        self.up_args: list[str] = []  # more `dancu up` options, e.g. ["--workers", "3"]

    def pid_of(self, name: str) -> int:
        """The pid of one of the platform's processes: ``api`` (the parent), ``store``
        (the ClickHouse sink) or ``worker-N`` (from ``<data dir>/run/<name>.pid``)."""
        if name == "api":
            assert self.proc is not None
            return self.proc.pid
        return int((self.settings.data_dir / "run" / f"{name}.pid").read_text())

    def run_cli(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "dancu", *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def start(self, timeout: float = 90) -> None:
        self.settings.data_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.log, "ab")  # noqa: SIM115 - the child owns it
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "dancu", "up", "--no-simulate", "--no-services", *self.up_args],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"platform exited: {self.log.read_text()[-3000:]}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        raise AssertionError(f"platform not healthy in {timeout}s: {self.log.read_text()[-3000:]}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def token(self, role: str = "admin", district: str = "", org: str = "") -> str:
        """A fresh API token for a person of ``role`` on this platform."""
        name = f"{role}-{uuid.uuid4().hex[:6]}"
        organisation = org or (f"org-{name}" if role == "owner" else "")
        token, _ = with_credentials(
            self.settings, lambda c: c.add_user(name, role, district, organisation=organisation)
        )
        return str(token)

    def auth(self, role: str = "admin", district: str = "", org: str = "") -> BearerAuth:
        return BearerAuth(self.token(role, district, org))

    def device(self, *checkpoints: str) -> DeviceAuth:
        """A signing device for these checkpoints (httpx auth; each request carries a fresh
        nonce, so a repeated request is never refused as a replay)."""
        device_id, key = with_credentials(self.settings, lambda c: c.add_device(*checkpoints))
        return DeviceAuth(device_id, key)

    def client(self, role: str = "admin", district: str = "", **kw: object) -> httpx.Client:
        """An httpx client on this platform, signed in as a person of ``role``."""
        return httpx.Client(
            base_url=self.url,
            auth=self.auth(role, district),
            timeout=60,
            **kw,  # type: ignore[arg-type]
        )

    def api(self, role: str = "admin", district: str = "") -> httpx.Client:
        """The test's client for a person of ``role`` (and ``district``): made on first use,
        then the same one (closed by :meth:`sign_out`)."""
        key = ("person", role, district)
        if key not in self._clients:
            self._clients[key] = self.client(role, district)
        return self._clients[key]

    def as_device(self, *checkpoints: str) -> httpx.Client:
        """The test's client signing as a device of these checkpoints (made on first use)."""
        key = ("device", *sorted(checkpoints))
        if key not in self._clients:
            self._clients[key] = httpx.Client(
                base_url=self.url, auth=self.device(*checkpoints), timeout=60
            )
        return self._clients[key]

    def sign_out(self) -> None:
        """Close the test's clients: at the end, or once the test wiped Redis (their
        credentials are gone; :meth:`api` and :meth:`as_device` then make new ones)."""
        for client in self._clients.values():
            client.close()
        self._clients.clear()

    def stats(self) -> dict[str, object]:
        r = self.api("admin").get("/v1/stats/live", timeout=30)
        r.raise_for_status()
        return dict(r.json())

    def wait_processed(self, n: int, timeout: float = 120) -> dict[str, object]:
        deadline = time.monotonic() + timeout
        stats: dict[str, object] = {}
        while time.monotonic() < deadline:
            stats = self.stats()
            if int(stats["scans_processed"]) >= n and stats["lag"] == 0:  # type: ignore[call-overload]
                return stats
            time.sleep(0.5)
        raise AssertionError(f"not processed in {timeout}s: {stats}")

    def wait_sink_drained(self, timeout: float = 120) -> None:
        """Until the ClickHouse sink has committed everything sent to it so far
        (``store-rows``, ``exposures``, ``report-status``): a stop followed by a rebuild,
        or by a read of ClickHouse, needs it (``dancu rebuild`` refuses a backlog)."""
        from infra.kafka_io import KafkaLag

        async def backlog() -> int:
            lag = KafkaLag(self.settings)
            await lag.start()
            try:
                return await lag.sink_backlog()
            finally:
                await lag.stop()

        deadline = time.monotonic() + timeout
        left = -1
        while time.monotonic() < deadline:
            left = asyncio.run(backlog())
            if left == 0:
                return
            time.sleep(0.3)
        raise AssertionError(f"the sink still had {left} records after {timeout}s")


def with_credentials(settings: Settings, action: Callable[[Credentials], Awaitable[Any]]) -> Any:
    """Run one action on the platform's credential store (own loop and connection)."""

    async def go() -> Any:
        redis = make_redis(settings.redis_url)
        try:
            return await action(Credentials(redis, settings.redis_prefix))
        finally:
            await redis.aclose()

    return asyncio.run(go())


@pytest.fixture
def platform(base_settings: Settings, tmp_path: Path) -> Iterator[Platform]:
    p = Platform(base_settings, tmp_path / "dancu")
    yield p
    p.stop()
    p.sign_out()


@pytest.fixture(scope="module")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisCluster]:
    """A private three-master Redis Cluster on free ports, data under the module's tmp
    dir, stopped afterwards: a test may kill and restart its nodes (``kill(n)``,
    ``start_node(n, empty=...)``); ``url`` is its ``REDIS_URL``."""
    cluster = RedisCluster(tmp_path_factory.mktemp("redis-cluster"))
    try:
        cluster.start()
    except services.ServiceError as exc:
        cluster.stop()
        if IN_CI:
            pytest.fail(f"a Redis Cluster could not start under CI: {exc}")
        pytest.skip(f"a Redis Cluster could not start: {exc}")
    yield cluster
    cluster.stop()


@pytest.fixture(scope="module")
def cluster_settings(base_settings: Settings, redis_cluster: RedisCluster) -> Settings:
    """The shared Kafka with the private Redis Cluster: ``Platform(cluster_settings, …)``
    runs dancu on the cluster (its ``REDIS_URL`` names it)."""
    return base_settings.model_copy(update={"redis": RedisSettings(url=redis_cluster.url)})
