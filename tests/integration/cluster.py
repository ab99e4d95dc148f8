"""A private three-broker Kafka cluster for a test module, and checkpoint devices that
stream scans to a platform the way real ones do: paced, and every refused request
(5xx, a timeout, a connection cut) retried until the API acknowledges it."""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from infra.kafka_cluster import KafkaCluster
from infra.services import KafkaService, ServiceError
from infra.settings import Settings
from tests.integration.conftest import IN_CI, Platform


def start_cluster(base: Settings, root: Path, brokers: int = 3) -> KafkaCluster:
    """Three brokers on free ports under ``root``, from the shared broker's jars (the
    caller stops it). Without a JDK it skips, or fails under CI."""
    cluster = KafkaCluster(root, brokers=brokers, libs=KafkaService(base).libs)
    try:
        cluster.start(timeout=300)
    except ServiceError as exc:
        cluster.stop(10)
        if IN_CI:
            pytest.fail(f"the Kafka cluster could not start under CI: {exc}")
        pytest.skip(f"the Kafka cluster could not start: {exc}")
    return cluster


def on_cluster(base: Settings, cluster: KafkaCluster) -> Settings:
    """The shared settings with the cluster as Kafka (its Redis stays the shared one)."""
    return base.model_copy(update={"kafka": cluster.kafka_settings()})


def cluster_platform(base: Settings, cluster: KafkaCluster, data_dir: Path) -> Platform:
    """A platform whose every process talks to the cluster (replication 3, min ISR 2)."""
    platform = Platform(on_cluster(base, cluster), data_dir, **cluster.settings_env())
    platform.up_args = ["--workers", "2"]  # two workers share the partitions
    return platform


@dataclass
class Tally:
    """What the devices saw: scan IDs the API acknowledged (2xx, every scan of the batch
    accepted), every refused attempt by its cause (status code or exception), and the
    longest a batch waited for its acknowledgement (retries included)."""

    acked: list[str] = field(default_factory=list)
    slowest: float = 0.0
    refusals: Counter[str] = field(default_factory=Counter)
    refused_scans: int = 0
    first_refusal: float | None = None
    last_refusal: float | None = None
    error: BaseException | None = None

    def refused(self, cause: str, scans: int) -> None:
        now = time.monotonic()
        self.refusals[cause] += 1
        self.refused_scans += scans
        self.first_refusal = self.first_refusal or now
        self.last_refusal = now


class DeviceStream:
    """Devices (one per group of checkpoints, each its own key) posting their scans in
    batches at ``rate`` scans/s in all, in a thread of their own; a device whose request
    is refused waits (``Retry-After``, else 1 s) and sends the same batch again, then
    catches up (its queue drains as fast as the API takes it)."""

    def __init__(
        self,
        platform: Platform,
        scans: Sequence[dict[str, object]],
        *,
        devices: int = 4,
        batch: int = 50,
        rate: float = 250.0,
        give_up_after: float = 300.0,
    ) -> None:
        self.url = platform.url
        self.batch, self.rate, self.give_up_after = batch, rate, give_up_after
        groups: dict[int, list[dict[str, object]]] = {d: [] for d in range(devices)}
        owner: dict[str, int] = {}
        for s in scans:
            cp = str(s["checkpoint_id"])
            groups[owner.setdefault(cp, len(owner) % devices)].append(s)
        self.queues = [
            (platform.device(*sorted({str(s["checkpoint_id"]) for s in g})), g)
            for g in groups.values()
            if g
        ]
        self.tally = Tally()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> DeviceStream:
        self._thread.start()
        return self

    def acked(self) -> int:
        return len(self.tally.acked)

    def join(self, timeout: float) -> Tally:
        self._thread.join(timeout)
        assert not self._thread.is_alive(), f"devices still sending after {timeout}s"
        if self.tally.error is not None:
            raise self.tally.error
        return self.tally

    def _run(self) -> None:
        try:
            asyncio.run(self._all())
        except BaseException as exc:
            self.tally.error = exc

    async def _all(self) -> None:
        per_device = self.rate / len(self.queues)
        started = time.monotonic()
        await asyncio.gather(
            *(self._device(auth, scans, per_device, started) for auth, scans in self.queues)
        )

    async def _device(
        self, auth: httpx.Auth, scans: list[dict[str, object]], rate: float, started: float
    ) -> None:
        async with httpx.AsyncClient(base_url=self.url, auth=auth, timeout=60) as http:
            for i in range(0, len(scans), self.batch):
                due = started + i / rate
                if (wait := due - time.monotonic()) > 0:
                    await asyncio.sleep(wait)
                await self._send(http, scans[i : i + self.batch])

    async def _send(self, http: httpx.AsyncClient, batch: list[dict[str, object]]) -> None:
        first = time.monotonic()
        while True:
            pause = 1.0
            try:
                r = await http.post("/v1/scans", json={"scans": batch})
            except httpx.TransportError as exc:
                self.tally.refused(type(exc).__name__, len(batch))
            else:
                if r.is_success:
                    body = r.json()
                    assert body["accepted"] == len(batch) and not body["rejected"], r.text
                    self.tally.acked.extend(str(s["scan_id"]) for s in batch)
                    self.tally.slowest = max(self.tally.slowest, time.monotonic() - first)
                    return
                assert r.status_code >= 500, f"refused for good: {r.status_code} {r.text}"
                self.tally.refused(str(r.status_code), len(batch))
                pause = float(r.headers.get("retry-after", 1.0))
            assert time.monotonic() - first < self.give_up_after, (
                f"a batch refused for {self.give_up_after:.0f}s: {dict(self.tally.refusals)}"
            )
            await asyncio.sleep(pause)
