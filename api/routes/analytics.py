"""The epidemiologists' dashboard: aggregates from ClickHouse's pre-aggregated tables
(scans per hour, active F0/F1/F2 per day, vaccination coverage, card colours, top
checkpoints) and the epidemic levels per ward and district, computed when asked.

Aggregates only: no one is named or keyed. Each answer is kept ~2 s (dashboards poll;
officials in many districts ask the same thing), and every ClickHouse query runs in a
thread, never on the event loop. The store's owner serves these routes (api/proxy.py).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Annotated

import orjson
from fastapi import APIRouter, Query, Response
from pydantic import BaseModel

from api.deps import ClientsDep
from api.errors import BadInput
from infra.analytics import Analytics
from infra.clients import Clients
from registry import analytics as rules
from registry.cards import CardRules
from registry.epidemic import LevelBook, load_levels
from registry.errors import quote
from registry.reference import hanoi_wards

router = APIRouter(tags=["analytics"])

CACHE_SECONDS = 2.0
_CACHE_SIZE = 256
MAX_HOURS = 24 * 90
MAX_DAYS = 90
# The visit sink's district for a checkpoint it could not place.
UNPLACED = "unknown"
# Card rules are per province of the ID number; the dashboard counts with Hà Nội's.
PROVINCE = "001"

_cache: dict[tuple[object, ...], tuple[float, bytes]] = {}
# The last levels assessed, with the figures they came from: the figures change far less
# often than dashboards ask, and assessing ~560 areas in Python costs more than reading.
_assessed: dict[tuple[object, ...], tuple[object, dict[str, object]]] = {}


async def _answer(
    clients: Clients, key: tuple[object, ...], compute: Callable[[], object]
) -> Response:
    """``compute()``'s answer as JSON, made in a thread (the queries block), or the same
    bytes again within ``CACHE_SECONDS``. Written with orjson, without a validation pass:
    the rows are built here, and the response models only document them."""
    full = (id(clients), *key)
    now = time.monotonic()
    hit = _cache.get(full)
    if hit is not None and hit[0] > now:
        return Response(hit[1], media_type="application/json")
    body = await asyncio.to_thread(lambda: orjson.dumps(compute()))
    if len(_cache) >= _CACHE_SIZE:
        for k in [k for k, (until, _) in _cache.items() if until <= now] or list(_cache)[:1]:
            _cache.pop(k, None)
    _cache[full] = (time.monotonic() + CACHE_SECONDS, body)
    return Response(body, media_type="application/json")


def _utc(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@cache
def _levels() -> LevelBook:
    return load_levels()


def _card_rules(clients: Clients, now: datetime) -> CardRules:
    return clients.rules.for_(PROVINCE, now.astimezone(rules.VN_TZ).date())


Hours = Annotated[
    int, Query(ge=1, le=MAX_HOURS, description="the last N clock hours, this one included")
]


class ScanHour(BaseModel):
    hour: datetime
    district: str
    scans: int


class CaseDay(BaseModel):
    day: str
    f0: int
    f1: int
    f2: int


class Coverage(BaseModel):
    district: str
    age_band: str
    residents: int
    one_dose: int
    full: int
    coverage: float


class Colours(BaseModel):
    district: str
    colour: str
    residents: int


class TopCheckpoint(BaseModel):
    checkpoint_id: str
    name: str
    district: str
    visits: int


class AreaLevel(BaseModel):
    district: str
    ward: str | None = None
    level: int
    name: str
    colour: str
    cases_7d: int
    cases_per_100k: float
    coverage: dict[str, float]
    population: int
    reasons: list[str]


class Levels(BaseModel):
    rule_version: str
    assessed_at: datetime
    districts: list[AreaLevel]
    wards: list[AreaLevel]


@router.get("/v1/analytics/scans", response_model=list[ScanHour])
async def scans_per_hour(
    clients: ClientsDep,
    hours: Hours = 48,
    district: Annotated[str | None, Query(max_length=60, description="one district")] = None,
) -> Response:
    """Scans per hour (of check-in, UTC) and district; hours without scans are left out."""
    if district is not None and district not in hanoi_wards() and district != UNPLACED:
        raise BadInput(f"district: not a Hà Nội district: {quote(district)}")
    since = rules.hour_start(datetime.now(UTC), hours)

    def compute() -> object:
        rows = Analytics(clients.clickhouse).scans_by_hour(since, district)
        stamps = {h: _utc(h) for h in {h for h, _, _ in rows}}  # an hour has many rows
        return [{"hour": stamps[h], "district": d, "scans": n} for h, d, n in rows]

    return await _answer(clients, ("scans", since, district), compute)


@router.get("/v1/analytics/cases", response_model=list[CaseDay])
async def cases_per_day(
    clients: ClientsDep,
    days: Annotated[int, Query(ge=1, le=MAX_DAYS, description="the last N days")] = 30,
) -> Response:
    """People F0, F1 and F2 at the end of each Hà Nội day (today: now), each once at their
    most severe tier: F0 from the sample until a recovery; F1 and F2 from the report that
    flagged them until the card rulebook's quarantine or monitoring ends."""
    now = datetime.now(UTC)
    card = _card_rules(clients, now)
    dates, ends = rules.day_ends(now, days)

    def compute() -> object:
        found = Analytics(clients.clickhouse).active_by_day(
            ends[0], len(ends), now, card.f1_quarantine_days, card.f2_monitor_days
        )
        return rules.day_rows(dates, found)

    return await _answer(clients, ("cases", days, dates[-1]), compute)


@router.get("/v1/analytics/vaccination", response_model=list[Coverage])
async def vaccination(clients: ClientsDep) -> Response:
    """Residents by district and age band (age reached this year): with at least one
    dose, with the full primary course (the card rulebook's), and ``coverage``, the
    share with at least one dose."""
    now = datetime.now(UTC)
    full = _card_rules(clients, now).full_course_doses
    year = now.astimezone(rules.VN_TZ).year

    def compute() -> object:
        store = Analytics(clients.clickhouse)
        return rules.coverage_rows(store.coverage_groups(year, rules.AGE_BANDS, full))

    return await _answer(clients, ("vaccination", year, full), compute)


@router.get("/v1/analytics/colours", response_model=list[Colours])
async def colours(clients: ClientsDep) -> Response:
    """Residents by district and card colour: the colours stored with each resident,
    with everyone F0, F1 or F2 now shown as their flag makes them (F0 and F1 red, F2 at
    most the rulebook's cap). Expiries since a resident's last record are not applied."""
    now = datetime.now(UTC)
    card = _card_rules(clients, now)

    def compute() -> object:
        store = Analytics(clients.clickhouse)
        flagged = store.flagged_now(now, card.f1_quarantine_days, card.f2_monitor_days)
        return rules.colour_rows(store.colour_groups(), flagged, card.f2_colour)

    return await _answer(clients, ("colours",), compute)


@router.get("/v1/analytics/checkpoints/top", response_model=list[TopCheckpoint])
async def top_checkpoints(
    clients: ClientsDep,
    hours: Hours = 24,
    limit: Annotated[int, Query(ge=1, le=100, description="how many")] = 10,
) -> Response:
    """The most visited checkpoints over the last hours (visits by check-in hour)."""
    since = rules.hour_start(datetime.now(UTC), hours)

    def compute() -> object:
        rows = Analytics(clients.clickhouse).top_checkpoints(since, limit)
        return [{"checkpoint_id": i, "name": n, "district": d, "visits": v} for i, n, d, v in rows]

    return await _answer(clients, ("top", since, limit), compute)


@router.get("/v1/levels", response_model=Levels)
async def levels(
    clients: ClientsDep,
    version: Annotated[
        str | None,
        Query(max_length=20, description="a rulebook version (default: the one in force)"),
    ] = None,
) -> Response:
    """Epidemic level (cấp độ dịch, Nghị quyết 128/NQ-CP) of every ward, then of every
    district from its wards summed: new cases per 100,000 over the last 7 days, raised
    by one where vaccination coverage is not met (``registry/data/epidemic_levels.yaml``),
    with the figures and reasons behind each."""
    now = datetime.now(UTC)
    today = now.astimezone(rules.VN_TZ).date()
    book = _levels()
    try:
        cuts = rules.level_cuts(book, today, version)
    except ValueError as exc:
        raise BadInput(str(exc)) from exc
    full = _card_rules(clients, now).full_course_doses

    key = (id(clients), version, today, full)

    def compute() -> object:
        store = Analytics(clients.clickhouse)
        figures = (
            tuple(store.coverage_groups(today.year, cuts, full, by_ward=True)),
            tuple(sorted(store.new_cases(now - timedelta(days=7), now))),
        )
        last = _assessed.get(key)
        if last is not None and last[0] == figures:
            assessed = last[1]  # the same figures: the same levels
        else:
            groups, cases = figures
            assessed = rules.assess_levels(
                rules.ward_figures(groups, cuts), cases, book, today, version
            )
            if len(_assessed) >= _CACHE_SIZE:
                _assessed.clear()
            _assessed[key] = (figures, assessed)
        return {**assessed, "assessed_at": _utc(now)}

    return await _answer(clients, ("levels", version, today, full), compute)
