"""Dashboard benchmark: every analytics endpoint over at least 20 million visits, its p95
over HTTP (authenticated, as an epidemiologist) against the p95 of the ClickHouse queries
behind it run in this same process (target: p95 ≤ 2× the raw query). For reference, the
same aggregate computed from the raw tables (what the endpoint would cost without the
materialised views), and the endpoint through the public API (which forwards it to the
store's owner).

    python bench/dashboard.py [--visits 20000000] [--residents N] [--requests 200]

The data set is generated inside ClickHouse with ``numbers()`` (straight inserts, so the
views are fed exactly as by the visit sink): residents over Hà Nội's 526 wards with 2021
vaccination histories, 5,000 checkpoints per million residents, the visits over 14 days,
and 30 days of F0 cases (1 per 300 residents), their F1/F2 flags (50 per case) and
recoveries. The store's API (``create_app`` owning this process's chDB, as the store
process does) runs on uvicorn in a thread; the public API in another. Route caching is
turned off so every request reaches ClickHouse. Kafka and Redis must be running (the
API's clients use them; ``make bench`` starts them).
"""

from __future__ import annotations

import sys
from pathlib import Path

# Run as `python bench/dashboard.py`, this file's folder comes first on sys.path, where
# bench/tracing.py would hide the `tracing` package: drop it (PYTHONPATH=. finds ours).
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).parent.resolve()]

import argparse
import asyncio
import http.client
import shutil
import statistics
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode, urlsplit

import httpx
import uvicorn

from api.app import create_app
from api.routes import analytics as analytics_routes
from gate.http_auth import BearerAuth
from infra import services
from infra.analytics import Analytics
from infra.clickhouse import ClickHouse
from infra.credentials import Credentials
from infra.redis_store import make_redis
from infra.settings import Settings
from registry.analytics import AGE_BANDS, day_ends, hour_start, level_cuts
from registry.cards import load_rulebook
from registry.epidemic import load_levels
from registry.reference import hanoi_wards
from tests.integration.conftest import free_port
from tests.integration.helpers import isolated_settings

DAYS = 14  # of visits
CASE_DAYS = 30


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


# The data set -------------------------------------------------------------------------
def load(ch: ClickHouse, residents: int, visits: int, now: datetime) -> None:
    """Residents, checkpoints, visits, cases, flags and recoveries, made in ClickHouse."""
    db = ch.db
    wards = [(d, w.name) for d, ws in sorted(hanoi_wards().items()) for w in ws]
    params: dict[str, object] = {
        "d": [d for d, _ in wards],
        "w": [w for _, w in wards],
        "now": int(now.timestamp() * 1000),
    }
    n_wards, checkpoints = len(wards), max(250, residents // 200)
    cases = max(50, residents // 300)
    now_sql = "fromUnixTimestamp64Milli(toInt64(%(now)s), 'UTC')"

    def person(expr: str) -> str:
        return f"hex(sipHash128('p', toUInt64({expr})))"

    steps = [
        (
            f"{residents:,} residents",
            f"""INSERT INTO {db}.residents
            SELECT {person("number")}, hex(sipHash128('h', intDiv(number, 3))), %(d)s[w],
                   %(w)s[w], if(number %% 2 = 0, 'Nam', 'Nữ'),
                   1925 + sipHash64('y', number) %% 98, 1, doses,
                   multiIf(r < 1, 'red', doses = 0, 'none', doses = 1, 'yellow', 'green'),
                   'hn-2021-10', 'bench', {now_sql}
            FROM (SELECT number, 1 + sipHash64('w', number) %% {n_wards} AS w,
                         sipHash64('d', number) %% 100 AS r,
                         toUInt8(multiIf(r < 10, 0, r < 25, 1, r < 80, 2, 3)) AS doses
                  FROM numbers({residents}))""",
        ),
        (
            f"{checkpoints:,} checkpoints",
            f"""INSERT INTO {db}.checkpoints
                (checkpoint_id, name, type, district, ward, capacity, updated_at)
            SELECT concat('HN-cp-', toString(number)), concat('Điểm ', toString(number)),
                   'shop', %(d)s[w], %(w)s[w], 100, {now_sql}
            FROM (SELECT number, 1 + sipHash64('cw', number) %% {n_wards} AS w
                  FROM numbers({checkpoints}))""",
        ),
        (
            f"{visits:,} visits over {DAYS} days",
            f"""INSERT INTO {db}.visits
            SELECT concat('b-', toString(number)),
                   {person(f"sipHash64('vp', number) %% {residents}")},
                   concat('HN-cp-', toString(cp)), %(d)s[w], %(w)s[w], t,
                   t + toIntervalMinute(30), 'gate', {now_sql}
            FROM (SELECT number, sipHash64('vc', number) %% {checkpoints} AS cp,
                         1 + sipHash64('cw', cp) %% {n_wards} AS w,
                         {now_sql} - toIntervalSecond(sipHash64('vt', number)
                                                       %% ({DAYS} * 86400)) AS t
                  FROM numbers({visits}))""",
        ),
        (
            f"{cases:,} F0 cases over {CASE_DAYS} days",
            f"""INSERT INTO {db}.f0_cases
            SELECT concat('r-', toString(number)), {person("p")}, %(d)s[w], %(w)s[w],
                   t - toIntervalDay(1), t, 'done', 1, {now_sql}
            FROM (SELECT number, sipHash64('fp', number) %% {residents} AS p,
                         1 + sipHash64('w', p) %% {n_wards} AS w,
                         {now_sql} - toIntervalSecond(sipHash64('ft', number)
                                                       %% ({CASE_DAYS} * 86400)) AS t
                  FROM numbers({cases}))""",
        ),
        (
            f"{cases * 50:,} F1/F2 flags",
            f"""INSERT INTO {db}.exposures
            SELECT concat('x-', toString(number)), concat('r-', toString(r)),
                   {person(f"sipHash64('xp', number) %% {residents}")},
                   if(number %% 4 = 0, 'F1', 'F2'), '', 'co-location', '', '',
                   t - toIntervalHour(30), t - toIntervalHour(29), 60, 'moh-2021', t, 0, 1
            FROM (SELECT number, intDiv(number, 50) AS r,
                         {now_sql} - toIntervalSecond(sipHash64('ft', r)
                                                       %% ({CASE_DAYS} * 86400)) AS t
                  FROM numbers({cases * 50}))""",
        ),
        (
            "recoveries of the cases older than 10 days",
            f"""INSERT INTO {db}.health_records
            SELECT person_key, concat('rec-', report_id), 'recoveries',
                   concat('{{"recovered_date": "',
                          toString(toDate(sample_time + toIntervalDay(10))), '"}}'),
                   0, 'bench', {now_sql}
            FROM {db}.f0_cases
            WHERE sample_time < {now_sql} - toIntervalDay(10)""",
        ),
    ]
    for what, sql in steps:
        t0 = time.perf_counter()
        ch.call(lambda c, s=sql: c.command(s, parameters=params))
        print(f"  {what}: {time.perf_counter() - t0:.1f} s", flush=True)
    t0 = time.perf_counter()
    for table in ("scans_hourly", "checkpoint_visits_hourly"):
        # One bulk insert leaves the sums in a few large parts; a running store inserts
        # small batches that background merges fold as they come: merge them now.
        ch.call(lambda c, t=table: c.command(f"OPTIMIZE TABLE {db}.{t} FINAL"))
    print(f"  hourly views merged: {time.perf_counter() - t0:.1f} s", flush=True)
    t0 = time.perf_counter()
    Analytics(ch).refresh_residents()
    print(f"  resident groups recounted: {time.perf_counter() - t0:.2f} s", flush=True)
    rows, summed = ch.call(
        lambda c: c.query(
            f"SELECT (SELECT count() FROM {db}.visits), (SELECT sum(scans) FROM {db}.scans_hourly)"
        ).result_rows[0]
    )
    assert rows == summed == visits, f"visits {rows}, counted by the view {summed}"


# The endpoints ------------------------------------------------------------------------
@dataclass
class Endpoint:
    name: str
    path: str
    params: dict[str, object]
    query: Callable[[], object]  # the ClickHouse queries the route runs
    raw: Callable[[], object] | None  # the same aggregate from the raw tables


def endpoints(ch: ClickHouse) -> list[Endpoint]:
    store = Analytics(ch)
    db = ch.db
    card = load_rulebook().for_("001", datetime.now(UTC).date())
    f1, f2, full = card.f1_quarantine_days, card.f2_monitor_days, card.full_course_doses
    book = load_levels()

    def raw(sql: str, **params: object) -> Callable[[], object]:
        return lambda: ch.call(lambda c: c.query(sql, parameters=params).result_rows)

    def both(a: Callable[[], object], b: Callable[[], object]) -> Callable[[], object]:
        return lambda: (a(), b())

    def since(hours: int) -> datetime:
        return hour_start(datetime.now(UTC), hours)

    def cases() -> object:
        now = datetime.now(UTC)
        _, ends = day_ends(now, 30)
        return store.active_by_day(ends[0], len(ends), now, f1, f2)

    def colours() -> object:
        return store.colour_groups(), store.flagged_now(datetime.now(UTC), f1, f2)

    def levels() -> object:
        now = datetime.now(UTC)
        cuts = level_cuts(book, now.date())
        return (
            store.coverage_groups(now.year, cuts, full, by_ward=True),
            store.new_cases(now - timedelta(days=7), now),
        )

    year = datetime.now(UTC).year
    band = "if(birth_year = 0, 0, arrayCount(b -> %(year)s - birth_year >= b, %(bounds)s))"
    return [
        Endpoint(
            "scans per hour (48 h)",
            "/v1/analytics/scans",
            {"hours": 48},
            lambda: store.scans_by_hour(since(48)),
            raw(
                f"SELECT toStartOfHour(t_in) AS h, district, uniqExact(scan_id) "
                f"FROM {db}.visits WHERE t_in >= %(since)s GROUP BY h, district",
                since=since(48).replace(tzinfo=None),
            ),
        ),
        Endpoint(
            "scans per hour, one district",
            "/v1/analytics/scans",
            {"hours": 48, "district": "Đống Đa"},
            lambda: store.scans_by_hour(since(48), "Đống Đa"),
            raw(
                f"SELECT toStartOfHour(t_in) AS h, uniqExact(scan_id) FROM {db}.visits "
                "WHERE t_in >= %(since)s AND district = 'Đống Đa' GROUP BY h",
                since=since(48).replace(tzinfo=None),
            ),
        ),
        Endpoint(
            "top checkpoints (24 h)",
            "/v1/analytics/checkpoints/top",
            {"hours": 24, "limit": 10},
            lambda: store.top_checkpoints(since(24), 10),
            raw(
                f"SELECT checkpoint_id, uniqExact(scan_id) AS n FROM {db}.visits "
                "WHERE t_in >= %(since)s GROUP BY checkpoint_id ORDER BY n DESC LIMIT 10",
                since=since(24).replace(tzinfo=None),
            ),
        ),
        Endpoint("active F0/F1/F2 (30 days)", "/v1/analytics/cases", {"days": 30}, cases, None),
        Endpoint(
            "vaccination coverage",
            "/v1/analytics/vaccination",
            {},
            lambda: store.coverage_groups(year, AGE_BANDS, full),
            raw(
                f"SELECT district, {band} AS band, count(), countIf(doses >= 1), "
                f"countIf(doses >= {full}) FROM {db}.residents FINAL GROUP BY district, band",
                year=year,
                bounds=list(AGE_BANDS),
            ),
        ),
        Endpoint(
            "card colours",
            "/v1/analytics/colours",
            {},
            colours,
            both(
                raw(
                    f"SELECT district, colour, count() FROM {db}.residents FINAL "
                    "GROUP BY district, colour"
                ),
                lambda: store.flagged_now(datetime.now(UTC), f1, f2),
            ),
        ),
        Endpoint(
            "epidemic levels",
            "/v1/levels",
            {},
            levels,
            both(
                raw(
                    f"SELECT district, ward, {band} AS band, count(), countIf(doses >= 1), "
                    f"countIf(doses >= {full}) FROM {db}.residents FINAL "
                    "GROUP BY district, ward, band",
                    year=year,
                    bounds=[0, 18, 50],
                ),
                lambda: store.new_cases(datetime.now(UTC) - timedelta(days=7), datetime.now(UTC)),
            ),
        ),
    ]


# Serving ------------------------------------------------------------------------------
class Served:
    """An ASGI app on uvicorn in a thread of this process."""

    def __init__(self, app: Any, port: int) -> None:
        config = uvicorn.Config(
            app, host="127.0.0.1", port=port, log_level="warning", timeout_keep_alive=600
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.url = f"http://127.0.0.1:{port}"

    def __enter__(self) -> Served:
        self.thread.start()
        deadline = time.monotonic() + 60
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError(f"the API on {self.url} did not start")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(30)


class Lean:
    """A keep-alive HTTP/1.1 client from the standard library, for the timings: what the
    server takes, not what a Python client adds (httpx spends about a millisecond of
    this process's time per request)."""

    def __init__(self, url: str, bearer: str) -> None:
        parts = urlsplit(url)
        self.conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=120)
        self.headers = {"Authorization": f"Bearer {bearer}"}

    def __enter__(self) -> Lean:
        return self

    def __exit__(self, *exc: object) -> None:
        self.conn.close()

    def get(self, path: str, params: dict[str, object]) -> bytes:
        try:
            self.conn.request("GET", f"{path}?{urlencode(params)}", headers=self.headers)
            response = self.conn.getresponse()
        except (http.client.RemoteDisconnected, ConnectionError):  # an idle connection closed
            self.conn.close()
            self.conn.request("GET", f"{path}?{urlencode(params)}", headers=self.headers)
            response = self.conn.getresponse()
        body = response.read()
        if response.status != 200:
            raise RuntimeError(f"GET {path}: {response.status} {body[:300]!r}")
        return body


def token(settings: Settings) -> str:
    async def add() -> str:
        redis = make_redis(settings.redis_url)
        try:
            name = f"bench-{uuid.uuid4().hex[:6]}"
            made, _ = await Credentials(redis, settings.redis_prefix).add_user(
                name, "epidemiologist"
            )
            return str(made)
        finally:
            await redis.aclose()

    return asyncio.run(add())


def timed(fn: Callable[[], object], n: int) -> list[float]:
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t0) * 1000)
    return out


def paired(a: Callable[[], object], b: Callable[[], object], n: int) -> tuple[list[float], ...]:
    """``a`` and ``b`` timed in turn, so both meet the same load on the machine."""
    ta, tb = [], []
    for _ in range(n):
        ta += timed(a, 1)
        tb += timed(b, 1)
    return ta, tb


# The SSE alert latency ------------------------------------------------------------------
def sse_alert_latency(settings: Settings, args: argparse.Namespace) -> list[str]:
    """The SSE alert latency (issue 9, "Speed": an alert on ``GET /v1/alerts/stream``
    ≤ 1 s after its ``ExposureFlagged`` event), measured on a platform of its own by
    ``bench/alerts_latency.py`` after the analytics part; the lines to print."""
    from bench.alerts_latency import measure  # needs PYTHONPATH=. like the rest

    return measure(settings, args.alerts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--visits", type=int, default=20_000_000)
    parser.add_argument(
        "--residents", type=int, default=0, help="default: one per 20 visits (14 days)"
    )
    parser.add_argument("--requests", type=int, default=200, help="per endpoint")
    parser.add_argument("--raw-runs", type=int, default=10, help="of each raw-table query")
    parser.add_argument("--alerts", type=int, default=200, help="flags timed to the SSE stream")
    args = parser.parse_args()
    residents = args.residents or max(10_000, args.visits // 20)

    base = Settings()
    services.start_all(base)
    data = Path(tempfile.mkdtemp(prefix="dancu-bench-dashboard-"))
    tag = f"b{uuid.uuid4().hex[:8]}"
    settings = isolated_settings(base, data / "dancu", tag, store_port=free_port())
    settings.data_dir.mkdir(parents=True)
    ch = ClickHouse(settings.clickhouse_url, settings.clickhouse.database)
    ch.migrate()
    print(f"loading into {settings.clickhouse_url}", flush=True)
    t0 = time.perf_counter()
    load(ch, residents, args.visits, datetime.now(UTC))
    print(f"loaded in {time.perf_counter() - t0:.0f} s", flush=True)

    analytics_routes.CACHE_SECONDS = 0.0  # every request reaches ClickHouse
    store_app = create_app(settings, clickhouse=ch)
    public = settings.model_copy(
        update={"api_port": free_port(), "store_url": f"http://127.0.0.1:{settings.store_port}"}
    )
    bearer = token(settings)
    rows = []
    with (
        Served(store_app, settings.store_port) as store,
        Served(create_app(public), public.api_port) as front,
        httpx.Client(base_url=store.url, auth=BearerAuth(bearer), timeout=120) as client,
        Lean(store.url, bearer) as lean,
        Lean(front.url, bearer) as via_public,
    ):
        for e in endpoints(ch):
            for _ in range(3):  # warm both paths, and check the answer
                r = client.get(e.path, params=e.params)
                assert r.status_code == 200, f"{e.path}: {r.status_code} {r.text[:300]}"
                lean.get(e.path, e.params)
                via_public.get(e.path, e.params)
            n = args.requests
            served, query = paired(lambda e=e: lean.get(e.path, e.params), e.query, n)
            forwarded = timed(lambda e=e: via_public.get(e.path, e.params), max(20, n // 4))
            rawest = timed(e.raw, args.raw_runs) if e.raw else []
            rows.append((e, served, query, forwarded, rawest))
            print(
                f"  {e.name}: HTTP p95 {pct(served, 0.95):.1f} ms, "
                f"query p95 {pct(query, 0.95):.1f} ms",
                flush=True,
            )
    ch.close()

    print()
    print(
        f"Dashboard over {args.visits:,} visits, {residents:,} residents "
        f"({args.requests} requests per endpoint; times in ms)"
    )
    head = (
        f"{'endpoint':30} {'HTTP p50':>9} {'query p50':>10} {'HTTP p95':>9} {'query p95':>10} "
        f"{'ratio':>6} {'public p95':>11} {'raw tables p95':>15}"
    )
    print(head)
    print("-" * len(head))
    worst = 0.0
    for e, served, query, forwarded, rawest in rows:
        ratio = pct(served, 0.95) / pct(query, 0.95)
        worst = max(worst, ratio)
        raw_text = f"{pct(rawest, 0.95):.1f}" if rawest else "(no view)"
        print(
            f"{e.name:30} {statistics.median(served):9.1f} {statistics.median(query):10.1f} "
            f"{pct(served, 0.95):9.1f} {pct(query, 0.95):10.1f} {ratio:5.2f}× "
            f"{pct(forwarded, 0.95):11.1f} {raw_text:>15}"
        )
    verdict = "met" if worst <= 2.0 else "NOT met"
    print(f"\nworst HTTP p95 / query p95: {worst:.2f}× (target ≤ 2×: {verdict})")
    print("raw tables: the same aggregate without the views (visits, residents FINAL)")
    shutil.rmtree(data / "dancu" / "clickhouse", ignore_errors=True)  # ~1.7 GB at 20M visits
    for line in sse_alert_latency(settings, args):
        print(line)


if __name__ == "__main__":
    main()
