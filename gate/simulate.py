"""Simulated city traffic: checkpoint devices posting scans to the API over HTTP."""

from __future__ import annotations

import asyncio
import contextlib
import random
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import httpx

from registry.ids import make_id
from registry.reference import hanoi_districts

TYPES = ("shop", "office", "market", "school", "hospital", "gate", "restaurant", "station")


@dataclass
class SimulatorStats:
    produced: int = 0
    rejected: int = 0
    failed_requests: int = 0


def make_people(rng: random.Random, n: int) -> list[str]:
    people = []
    for i in range(n):
        province = "001" if rng.random() < 0.85 else rng.choice(["027", "030", "034", "036"])
        year = rng.randint(1940, 2015)
        people.append(make_id(province, year, rng.choice(("Nam", "Nữ")), i))
    return people


def make_checkpoints(rng: random.Random, n: int) -> list[dict[str, object]]:
    districts = list(hanoi_districts().values())
    out = []
    for i in range(n):
        d = rng.choice(districts)
        kind = rng.choice(TYPES)
        out.append(
            {
                "checkpoint_id": f"HN{d.code}-{kind}-{i:05d}",
                "name": f"{kind} {i}",
                "type": kind,
                "district": d.name,
                "capacity": rng.randint(10, 500),
            }
        )
    return out


class TrafficSimulator:
    """Posts device batches at roughly ``rate`` scans/s until ``stop`` is set."""

    def __init__(
        self,
        api_url: str,
        rate: float = 200.0,
        seed: int = 7,
        people: int = 20_000,
        checkpoints: int = 300,
    ) -> None:
        self.api_url = api_url
        self.rate = rate
        self.rng = random.Random(seed)
        self.people = make_people(self.rng, people)
        self.checkpoints = make_checkpoints(self.rng, checkpoints)
        self.stats = SimulatorStats()

    async def run(self, stop: asyncio.Event, tick: float = 0.25) -> SimulatorStats:
        async with httpx.AsyncClient(base_url=self.api_url, timeout=10.0) as http:
            await self._register(http, stop)
            carry = 0.0
            while not stop.is_set():
                carry += self.rate * tick
                n, carry = int(carry), carry - int(carry)
                devices = max(1, min(8, n // 10))
                batches: list[list[dict[str, object]]] = [[] for _ in range(devices)]
                now = datetime.now(UTC)
                for d in range(devices):
                    cp = self.rng.choice(self.checkpoints)["checkpoint_id"]
                    for _ in range(n // devices + (1 if d < n % devices else 0)):
                        ts = now - timedelta(seconds=self.rng.uniform(0, 30))
                        batches[d].append(
                            {
                                "scan_id": uuid.uuid4().hex,
                                "person_id": self.rng.choice(self.people),
                                "checkpoint_id": cp,
                                "ts": ts.isoformat(),
                                "source": self.rng.choice(("gate", "self")),
                            }
                        )
                await asyncio.gather(*(self._post(http, b) for b in batches if b))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), tick)
        return self.stats

    async def _register(self, http: httpx.AsyncClient, stop: asyncio.Event) -> None:
        """Register the simulated checkpoints, waiting while the store's process starts."""
        delay = 0.5
        while not stop.is_set():
            try:
                r = await http.post("/v1/checkpoints", json=self.checkpoints)
                if r.status_code in (200, 201):
                    return
                if r.status_code < 500:
                    raise RuntimeError(f"checkpoints refused: {r.status_code} {r.text[:300]}")
            except httpx.HTTPError:
                pass
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)

    async def _post(self, http: httpx.AsyncClient, batch: list[dict[str, object]]) -> None:
        try:
            r = await http.post("/v1/scans", json=batch)
        except httpx.HTTPError:
            self.stats.failed_requests += 1
            return
        if r.status_code == 202:
            body = r.json()
            self.stats.produced += body["accepted"]
            self.stats.rejected += len(body["rejected"])
        else:
            self.stats.failed_requests += 1
