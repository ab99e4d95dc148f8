"""A network partition between a worker and Redis: the platform reaches a Redis of the
test's own through a TCP proxy the test controls (tests/chaos/proxy.py). For about 20 s
one worker process's connections are dropped and its new ones blackholed (accepted, then
silent), while the API process, on the same URL, still reaches Redis and keeps taking
scans and an F0 report. Once the partition heals, the same worker (no restart) catches
up: every scan the API acknowledged is in ClickHouse once and in both Redis indexes
once, and the report's exposures appear once each."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta
from pathlib import Path

import httpx
import orjson
import pytest

from infra.redis_store import VisitIndex, make_redis
from infra.settings import Settings
from tests.chaos import scenario as sc
from tests.chaos.proxy import Proxy
from tests.chaos.report import Outcome, record
from tests.chaos.support import (
    PrivateRedis,
    alive,
    indexed,
    on_redis,
    once,
    poll,
    roles,
    statuses,
    stored,
)
from tests.integration.conftest import Platform

pytestmark = [pytest.mark.integration, pytest.mark.chaos]

CUT_SECONDS = 20
BATCH, PAUSE = 250, 0.25  # scans per request while cut, and the pause between requests
REPORT = "chaos-partition"


def processed(settings: Settings) -> int:
    """The platform's count of scans recorded, read straight from Redis."""

    async def read() -> int:
        redis = make_redis(settings.redis_url)
        try:
            return await VisitIndex(redis, settings.redis_prefix, timedelta(days=1)).processed()
        finally:
            await redis.aclose()

    return asyncio.run(read())


def status_of(report: object) -> str:
    return str(report.get("status")) if isinstance(report, dict) else repr(report)[:100]


def post(
    client: httpx.Client, path: str, body: object, deadline: float | None = None
) -> tuple[bool, int]:
    """Post as a device does: again until the API answers 202 (or ``deadline`` passes);
    (whether it was acknowledged, how many attempts were refused)."""
    refused = 0
    while True:
        try:
            r = client.post(path, json=body, timeout=30)
        except httpx.HTTPError:
            r = None
        if r is not None and r.status_code == 202:
            return True, refused
        assert r is None or r.status_code >= 500 or r.status_code == 429, r.text
        refused += 1
        if deadline is not None and time.monotonic() > deadline:
            return False, refused
        time.sleep(1)


def test_a_worker_partitioned_from_redis_loses_no_acknowledged_work_and_resumes(
    base_settings: Settings, private_redis: PrivateRedis, tmp_path: Path
) -> None:
    with Proxy(private_redis.port) as proxy:
        # The platform reaches Redis through the proxy; the test reads it directly.
        platform = Platform(
            on_redis(base_settings, private_redis.url), tmp_path / "dancu", REDIS_URL=proxy.url
        )
        try:
            _run(platform, proxy, tmp_path)
        finally:
            platform.stop()
            platform.sign_out()


def _run(platform: Platform, proxy: Proxy, tmp_path: Path) -> None:
    (tmp_path / "residents.csv").write_text(sc.residents_csv([]), encoding="utf-8")
    loaded = platform.run_cli("import", "residents", str(tmp_path / "residents.csv"))
    assert loaded.returncode == 0, loaded.stderr[-3000:]
    platform.start()
    places = [
        *sc.checkpoints(),
        *({"checkpoint_id": cp, "type": "shop", "district": sc.DISTRICT}
          for cp in sc.BULK_CHECKPOINTS),
    ]  # fmt: skip
    assert platform.api("steward").post("/v1/checkpoints", json=places).status_code == 201
    device = platform.as_device(*sc.CHECKPOINTS, *sc.BULK_CHECKPOINTS)
    official = platform.api("official", sc.DISTRICT)
    acked: list[dict[str, object]] = [*sc.visits(), *sc.bulk_scans(2000, "part-before", seed=5)]
    for i in range(0, len(acked), 500):
        assert post(device, "/v1/scans", acked[i : i + 500])[0]
    platform.wait_processed(len(acked), timeout=180)
    who = roles(platform)
    cut_off = who.workers[:1]  # one worker; the API and any other worker keep Redis

    # The partition: scans and the report keep coming to the API meanwhile.
    dropped = proxy.cut(cut_off, mode="blackhole")
    cut_at = time.monotonic()
    counted_at_cut = processed(platform.settings)
    # (When the cut takes the API too, what it refused is sent again after the cut.)
    deadline = cut_at + CUT_SECONDS
    reported, refused = post(official, "/v1/reports/f0", sc.report(REPORT), deadline)
    during = sc.bulk_scans(int(CUT_SECONDS / PAUSE) * BATCH, "part-during", seed=6)
    later: list[list[dict[str, object]]] = []
    sent = 0
    while time.monotonic() < deadline and sent < len(during):
        batch = during[sent : sent + BATCH]
        ok, n = post(device, "/v1/scans", batch, deadline)
        refused += n
        if ok:
            acked += batch
        else:
            later.append(batch)
        sent += BATCH
        time.sleep(PAUSE)
    time.sleep(max(0.0, deadline - time.monotonic()))
    counted_in_cut = processed(platform.settings) - counted_at_cut
    held = proxy.counts.held
    proxy.restore()
    restored_at = time.monotonic()

    if not reported:
        assert post(official, "/v1/reports/f0", sc.report(REPORT))[0]
    after = sc.bulk_scans(1000, "part-after", seed=7)
    for batch in [*later, after[:500], after[500:]]:
        assert post(device, "/v1/scans", batch)[0]
        acked += batch
    total = len(acked)
    stats = platform.wait_processed(total, timeout=240)
    caught_up = time.monotonic() - restored_at
    traced, report = poll(
        lambda: official.get(f"/v1/reports/f0/{REPORT}", timeout=30).json(),
        lambda s: s["status"] == "done",
        90,
    )
    # Caught up: every scan recorded and the report traced (the scans alone when the
    # report never is: its loss shows in the lost column).
    recovery = time.monotonic() - restored_at if traced else caught_up
    shown = official.get("/v1/exposures", params={"f0": REPORT}, timeout=30).json()
    names = {pid: n for n, pid in sc.IDS.items()}
    flagged = sorted((names[x["person_id"]], x["tier"]) for x in shown)
    colours = {names[p]: s[0] for p, s in statuses(platform, sc.IDS.values(), sc.DISTRICT).items()}
    still = roles(platform)
    up = platform.proc is not None and platform.proc.poll() is None
    resumed = up and all(alive(p) for p in who.workers)
    index = indexed(platform.settings)
    platform.stop()
    scan_ids = [str(s["scan_id"]) for s in acked]
    ch = stored(platform)
    p_once, c_once, ch_once = (
        once(scan_ids, index.by_person),
        once(scan_ids, index.by_checkpoint),
        once(scan_ids, ch.visits),
    )
    tiers = sorted(t for (rep, _, t), n in ch.exposures.items() if rep == REPORT for _ in range(n))
    want_tiers = ["F1"] * len(sc.F1) + ["F2"] * len(sc.F2)
    record(
        Outcome(
            "a worker partitioned from Redis",
            total + 1,
            max(p_once[0], c_once[0], ch_once[0]) + max(0, len(want_tiers) - len(tiers)),
            max(p_once[1], c_once[1], ch_once[1]) + max(0, len(tiers) - len(want_tiers)),
            recovery,
            f"{who.worker_what} cut off {CUT_SECONDS} s (TCP proxy: {dropped} connections "
            f"dropped, {held} new ones blackholed) while the API took "
            f"{sent - BATCH * len(later):,} scans and an F0 report; {counted_in_cut} recorded "
            "meanwhile; "
            + ("the same worker resumed" if resumed and still == who else "a worker restarted")
            + ("" if traced else f"; the report is still {status_of(report)}, its exposures lost"),
        )
    )
    # The partition was real: the worker recorded nothing while cut off (the only one:
    # others would go on with their own partitions)...
    assert dropped + held >= 1
    if len(who.workers) == 1:
        assert counted_in_cut == 0
    # ... and the API (on its own connections) never refused a device.
    if who.api not in cut_off:
        assert refused == 0
    # The same processes afterwards: the worker resumed, nothing restarted.
    assert still == who and resumed, (who, still)
    assert stats["scans_processed"] == total and stats["visits_total"] == total, stats
    assert (p_once, c_once, ch_once) == ((0, 0, 0),) * 3
    assert ch.visits == {s: 1 for s in scan_ids}
    assert traced, f"the report acknowledged during the partition was not traced: {report}"
    assert flagged == sorted([*((n, "F1") for n in sc.F1), *((n, "F2") for n in sc.F2)])
    assert tiers == want_tiers, orjson.dumps(dict(ch.exposures)).decode()[:2000]
    assert [colours[n] for n in ("A", *sorted(sc.F1))] == ["red"] * (1 + len(sc.F1))
