"""Simulated city traffic: checkpoint devices posting scans to the API over HTTP.

The city is the synthetic Hà Nội that ``dancu seed`` (and ``make up`` on an empty
registry) loads: the same plan gives the same residents, households and checkpoints, so
the simulator walks *registry* residents through *registry* checkpoints. It first posts
the last hours of history, then live traffic of two kinds:

- visits that can matter for tracing, at a realistic rate (about one per resident per
  day): stays by place type, some households together, half of them checked out (the
  others last their type's dwell);
- the rest of ``rate``: people passing a gate, a station or a shop's door, checked out
  within minutes.

Now and then it reports a resident who walked as an F0 (who then stays home), so tracing
has something to find at once.
A device talks HTTP only: nothing here touches Kafka, Redis or ClickHouse. Like the real
ones it is authenticated (:class:`Access`): each district's checkpoints post through that
district's gateway device (signed requests), F0s are reported by the district's official,
and the checkpoints are registered by a data steward.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from registry.synthetic import SeedPlan, SyntheticCity, checkpoints

log = logging.getLogger(__name__)

# Minutes people stay, by checkpoint type (low, high).
STAY = {
    "restaurant": (30, 90),
    "shop": (5, 30),
    "market": (15, 60),
    "office": (120, 480),
    "school": (180, 360),
    "hospital": (20, 120),
    "station": (5, 30),
    "gate": (1, 5),
    "home": (20, 120),
}
MAX_POST = 2000
# Stays long enough to matter (≥ 15 min possible): about one per resident per day.
VISITS_PER_RESIDENT_DAY = 1.0
# Everything else is passing through: a gate, a station, a shop's door, checked out
# within minutes (too short to be anyone's exposure).
PASS_MINUTES = (1, 5)


@dataclass
class Access:
    """The simulator's credentials: who registers the checkpoints, each district's gateway
    device (httpx auth for its checkpoints) and official (reports that district's F0s)."""

    steward: httpx.Auth
    devices: dict[str, httpx.Auth]  # district → device auth
    officials: dict[str, httpx.Auth]  # district → official's auth


@dataclass
class SimulatorStats:
    produced: int = 0
    rejected: int = 0
    failed_requests: int = 0
    history: int = 0
    f0_reports: list[str] = field(default_factory=list)
    f0_refused: int = 0


class City:
    """The seeded city as the simulator sees it: who lives where with whom, and places."""

    def __init__(self, plan: SeedPlan) -> None:
        self.people: list[str] = []
        self.district: dict[str, str] = {}
        homes: dict[str, list[str]] = defaultdict(list)
        for chunk in SyntheticCity(plan).chunks():
            for pid, district, home in zip(chunk.ids, chunk.district, chunk.household, strict=True):
                self.people.append(pid)
                self.district[pid] = district
                homes[home].append(pid)
        self.household = {pid: members for members in homes.values() for pid in members}
        self.places = [
            {
                "checkpoint_id": c.checkpoint_id,
                "name": c.name,
                "type": c.type,
                "district": c.district,
                "ward": c.ward,
                "capacity": c.capacity,
            }
            for c in checkpoints(plan)
        ]
        self.passes = [p for p in self.places if p["type"] in ("gate", "station", "shop")]
        self.by_district: dict[str, list[dict[str, object]]] = defaultdict(list)
        for p in self.places:
            if p["type"] not in ("gate", "station"):
                self.by_district[str(p["district"])].append(p)


class TrafficSimulator:
    """Posts device batches at roughly ``rate`` scans/s until ``stop`` is set."""

    def __init__(
        self,
        api_url: str,
        rate: float = 200.0,
        seed: int = 7,
        plan: SeedPlan | None = None,
        history_hours: float = 12.0,
        f0_every: float = 20.0,
        access: Access | None = None,
    ) -> None:
        self.api_url = api_url
        self.access = access
        self.rate = rate
        self.rng = random.Random(seed)
        self.city = City(plan or SeedPlan(residents=50_000))
        self.history_hours = history_hours
        self.f0_every = f0_every
        self.walked: list[str] = []
        self.reported: set[str] = set()
        self.report_people: dict[str, str] = {}
        self.stats = SimulatorStats()
        self.district_of = {str(p["checkpoint_id"]): str(p["district"]) for p in self.city.places}

    def _auth(self, who: str, person_id: str = "") -> Any:
        """The credential for a steward's call, or the official of a person's district."""
        if self.access is None:
            return httpx.USE_CLIENT_DEFAULT
        if who == "steward":
            return self.access.steward
        return self.access.officials[self.city.district.get(person_id, "")]

    def _pass(self, pid: str, start: datetime) -> dict[str, object]:
        """Passing through: checked out within minutes."""
        place = self.rng.choice(self.city.passes or self.city.places)
        return {
            "scan_id": uuid.uuid4().hex,
            "person_id": pid,
            "checkpoint_id": place["checkpoint_id"],
            "ts": start.isoformat(),
            "t_out": (start + timedelta(minutes=self.rng.uniform(*PASS_MINUTES))).isoformat(),
            "source": "gate",
        }

    def _visit(
        self, pid: str, start: datetime, place: dict[str, object]
    ) -> list[dict[str, object]]:
        """One visit, or a household's (family members often go together)."""
        lo, hi = STAY.get(str(place["type"]), (10, 60))
        stay = timedelta(minutes=self.rng.uniform(lo, hi))
        group = [pid]
        if self.rng.random() < 0.2:
            family = [m for m in self.city.household.get(pid, []) if m not in self.reported]
            group = self.rng.sample(family, min(len(family), self.rng.randint(1, 3))) or [pid]
        out = []
        for person in group:
            scan: dict[str, object] = {
                "scan_id": uuid.uuid4().hex,
                "person_id": person,
                "checkpoint_id": place["checkpoint_id"],
                "ts": start.isoformat(),
                "source": self.rng.choice(("gate", "self")),
            }
            if self.rng.random() < 0.5:  # a check-out; otherwise the type's dwell applies
                scan["t_out"] = (start + stay).isoformat()
            out.append(scan)
            self.walked.append(person)
        return out

    def _place(self, pid: str) -> dict[str, object]:
        near = self.city.by_district.get(self.city.district.get(pid, ""))
        pool = near if near and self.rng.random() < 0.7 else self.city.places
        return self.rng.choice(pool)

    def _walker(self) -> str:
        while True:
            pid = self.rng.choice(self.city.people)
            if pid not in self.reported:
                return pid

    @property
    def visit_rate(self) -> float:
        """Visits that can matter, per second (about one per resident per day)."""
        return len(self.city.people) * VISITS_PER_RESIDENT_DAY / 86_400

    def history(self, now: datetime) -> list[dict[str, object]]:
        """The last hours of visits, at the city's own rate."""
        if self.history_hours <= 0:
            return []
        n = int(self.visit_rate * self.history_hours * 3600)
        scans = []
        for _ in range(n):
            start = now - timedelta(hours=self.rng.uniform(0.5, self.history_hours))
            pid = self._walker()
            scans.extend(self._visit(pid, start, self._place(pid)))
        return scans

    async def run(self, stop: asyncio.Event, tick: float = 0.25) -> SimulatorStats:
        async with httpx.AsyncClient(base_url=self.api_url, timeout=30.0) as http:
            await self._register(http, stop)
            past = self.history(datetime.now(UTC))
            for i in range(0, len(past), MAX_POST):
                if stop.is_set():
                    break
                await self._post(http, past[i : i + MAX_POST])
            self.stats.history = len(past)
            reporter = asyncio.create_task(self._report_f0s(http, stop))
            carry, visits = 0.0, 0.0
            try:
                while not stop.is_set():
                    carry += self.rate * tick
                    visits += min(self.rate, self.visit_rate) * tick
                    n, carry = int(carry), carry - int(carry)
                    k, visits = int(visits), visits - int(visits)
                    now = datetime.now(UTC)
                    batch: list[dict[str, object]] = []
                    for _ in range(k):
                        pid = self._walker()
                        start = now - timedelta(seconds=self.rng.uniform(0, 30))
                        batch.extend(self._visit(pid, start, self._place(pid)))
                    while len(batch) < n:
                        start = now - timedelta(seconds=self.rng.uniform(0, 30))
                        batch.append(self._pass(self._walker(), start))
                    if batch:
                        await self._post(http, batch)
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), tick)
            finally:
                reporter.cancel()
                with contextlib.suppress(BaseException):
                    await reporter
        return self.stats

    async def _report_f0s(self, http: httpx.AsyncClient, stop: asyncio.Event) -> None:
        """Every ``f0_every`` seconds (the first soon), a resident who walked tests positive."""
        await asyncio.sleep(min(5.0, self.f0_every))
        n = 0
        while not stop.is_set():
            candidates = [p for p in self.walked[-50_000:] if p not in self.reported]
            if candidates:
                pid = self.rng.choice(candidates)
                now = datetime.now(UTC)
                n += 1
                report_id = f"sim-{uuid.uuid4().hex[:8]}-{n}"
                symptomatic = self.rng.random() < 0.6
                body: dict[str, object] = {
                    "report_id": report_id,
                    "person_id": pid,
                    "sample_time": (now - timedelta(hours=self.rng.uniform(2, 20))).isoformat(),
                    "symptomatic": symptomatic,
                    "reported_at": now.isoformat(),
                }
                if symptomatic:
                    body["onset_date"] = (now - timedelta(days=1)).date().isoformat()
                try:
                    r = await http.post(
                        "/v1/reports/f0", json=body, auth=self._auth("official", pid)
                    )
                    if r.status_code == 202:
                        self.stats.f0_reports.append(report_id)
                        self.report_people[report_id] = pid
                        self.reported.add(pid)  # isolated: walks no more
                    else:
                        self.stats.f0_refused += 1
                        log.warning("F0 report refused: %s %s", r.status_code, r.text[:200])
                except httpx.HTTPError:
                    self.stats.f0_refused += 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.f0_every)

    async def tracing_totals(self) -> dict[str, int]:
        """Reports posted, and the F1 and F2 they flagged (or hold), read back from the API."""
        totals = {
            "f0_reports": len(self.stats.f0_reports),
            "f1_flagged": 0,
            "f2_flagged": 0,
            "reports_held": 0,
        }
        async with httpx.AsyncClient(base_url=self.api_url, timeout=10.0) as http:
            for report_id in self.stats.f0_reports:
                with contextlib.suppress(httpx.HTTPError, KeyError, ValueError):
                    pid = self.report_people.get(report_id, "")
                    auth = self._auth("official", pid)
                    state = (await http.get(f"/v1/reports/f0/{report_id}", auth=auth)).json()
                    totals["reports_held"] += state["status"] == "held"
                    if state["status"] == "done":
                        totals["f1_flagged"] += int(state["counts"]["F1"])
                        totals["f2_flagged"] += int(state["counts"]["F2"])
        return totals

    async def _register(self, http: httpx.AsyncClient, stop: asyncio.Event) -> None:
        """Register the city's checkpoints (unchanged if seeded), waiting while the store's
        process starts."""
        delay = 0.5
        body = self.city.places
        while not stop.is_set():
            try:
                r = await http.post("/v1/checkpoints", json=body, auth=self._auth("steward"))
                if r.status_code in (200, 201, 409):
                    return
                if r.status_code < 500:
                    raise RuntimeError(f"checkpoints refused: {r.status_code} {r.text[:300]}")
            except httpx.HTTPError:
                pass
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)

    async def _post(self, http: httpx.AsyncClient, batch: list[dict[str, object]]) -> None:
        """One post per district's gateway device (each signs for its own checkpoints)."""
        if self.access is None:
            await self._post_as(http, batch, httpx.USE_CLIENT_DEFAULT)
            return
        groups: dict[str, list[dict[str, object]]] = defaultdict(list)
        for scan in batch:
            groups[self.district_of[str(scan["checkpoint_id"])]].append(scan)
        await asyncio.gather(
            *(self._post_as(http, g, self.access.devices[d]) for d, g in groups.items())
        )

    async def _post_as(
        self, http: httpx.AsyncClient, batch: list[dict[str, object]], auth: Any
    ) -> None:
        try:
            r = await http.post("/v1/scans", json=batch, auth=auth)
        except httpx.HTTPError:
            self.stats.failed_requests += 1
            return
        if r.status_code == 202:
            body = r.json()
            self.stats.produced += body["accepted"]
            self.stats.rejected += len(body["rejected"])
        else:
            self.stats.failed_requests += 1
            log.warning("scans refused: %s %s", r.status_code, r.text[:200])
