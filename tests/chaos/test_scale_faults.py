"""Faults of the scaled platform (``dancu up --workers N``: workers sharing the topics'
partitions, the ClickHouse sink in the store's process):

- a worker SIGKILLed while 100,000 scans stream and an F0 report arrives; the supervisor
  starts another and the partitions rebalance: every scan and every exposure exactly once;
- the ClickHouse sink stopped (SIGSTOP) for a minute under load: the rows wait in Kafka and
  arrive once it is back, with no duplicate, while the gates keep answering and the workers
  keep recording (they never wait on ClickHouse).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import threading
import time
from datetime import timedelta
from pathlib import Path

import httpx
import pytest

from infra import topics
from infra.kafka_io import KafkaLag
from infra.redis_store import VisitIndex, make_redis
from infra.settings import Settings
from tests.chaos import scenario as sc
from tests.chaos.report import Outcome, record
from tests.chaos.support import (
    alive,
    hourly_counts,
    indexed,
    once,
    resends_skipped,
    roles,
    statuses,
    stored,
    wait_for,
)
from tests.integration.conftest import Platform

pytestmark = [pytest.mark.integration, pytest.mark.chaos]

EXTRA = 40  # residents besides the report's six


def prepare(platform: Platform, tmp_path: Path) -> None:
    """The registry loaded, the platform started, the checkpoints registered."""
    path = tmp_path / "residents.csv"
    path.write_text(sc.residents_csv(sc.bystanders(EXTRA)), encoding="utf-8")
    done = platform.run_cli("import", "residents", str(path))
    assert done.returncode == 0, done.stderr[-3000:]
    platform.start(timeout=180)
    places = [
        *sc.checkpoints(),
        *({"checkpoint_id": cp, "type": "shop", "district": sc.DISTRICT}
          for cp in sc.BULK_CHECKPOINTS),
    ]  # fmt: skip
    assert platform.api("steward").post("/v1/checkpoints", json=places).status_code == 201


class Sender:
    """Posts scans as a gateway device in batches from a thread of its own, counting what
    the API acknowledged; a refused batch (the API busy) is sent again, as a device does."""

    def __init__(self, platform: Platform, scans: list[dict[str, object]], batch: int) -> None:
        self.url = platform.url
        self.auth = platform.device(*sc.CHECKPOINTS, *sc.BULK_CHECKPOINTS)
        self.scans, self.batch = scans, batch
        self.acknowledged = 0
        self.retries = 0
        self.pace = 0.0  # seconds between batches (0: as fast as the API answers)
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self.thread.start()

    def join(self, timeout: float) -> None:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "the sender did not finish"
        if self.error:
            raise self.error

    def _run(self) -> None:
        try:
            asyncio.run(self._send())
        except BaseException as exc:
            self.error = exc

    async def _send(self) -> None:
        async with httpx.AsyncClient(base_url=self.url, auth=self.auth, timeout=60) as http:
            for i in range(0, len(self.scans), self.batch):
                part = self.scans[i : i + self.batch]
                while True:
                    try:
                        r = await http.post("/v1/scans", json={"scans": part})
                    except httpx.HTTPError:
                        r = None
                    if r is not None and r.status_code == 202:
                        assert r.json()["accepted"] == len(part), r.text
                        self.acknowledged += len(part)
                        break
                    assert r is None or r.status_code in (429, 503), r.text
                    self.retries += 1
                    await asyncio.sleep(0.5)
                if self.pace:
                    await asyncio.sleep(self.pace)


def processed(settings: Settings) -> int:
    """Scans the workers recorded (the Redis counter; no call through the API)."""

    async def read() -> int:
        redis = make_redis(settings.redis_url)
        try:
            index = VisitIndex(redis, settings.redis_prefix, timedelta(days=21))
            return await index.processed()
        finally:
            await redis.aclose()

    return asyncio.run(read())


def lags(settings: Settings) -> tuple[int, int]:
    """(scans waiting for a worker, rows waiting for the sink)."""

    async def read() -> tuple[int, int]:
        lag = KafkaLag(settings)
        await lag.start()
        try:
            return (
                await lag.lag(topics.SCANS),
                await lag.lag(topics.STORE_ROWS, settings.sink_group),
            )
        finally:
            await lag.stop()

    return asyncio.run(read())


@pytest.mark.parametrize("redis", ["one server", "Redis Cluster"])
def test_a_worker_killed_mid_stream_loses_nothing_and_counts_nothing_twice(
    base_settings: Settings, tmp_path: Path, redis: str, request: pytest.FixtureRequest
) -> None:
    bulk = sc.bulk_scans(100_000, "worker-kill", seed=11)
    scans = [*sc.visits(), *bulk]
    scan_ids = [str(s["scan_id"]) for s in scans]
    report_id = "chaos-worker-kill"
    on = base_settings if redis == "one server" else request.getfixturevalue("cluster_settings")
    platform = Platform(on, tmp_path / "dancu")
    platform.up_args = ["--workers", "2"]
    try:
        prepare(platform, tmp_path)
        workers = roles(platform).workers
        assert len(workers) == 2, "two worker processes"
        sender = Sender(platform, scans, batch=1000)
        sender.start()
        official = platform.api("official", sc.DISTRICT)
        wait_for(lambda: processed(platform.settings), lambda n: n >= 20_000, 300, "20k scans")
        r = official.post("/v1/reports/f0", json=sc.report(report_id))
        assert r.status_code == 202, r.text
        wait_for(lambda: processed(platform.settings), lambda n: n >= 35_000, 300, "35k scans")
        victim = workers[0]
        os.kill(victim, signal.SIGKILL)
        killed_at = time.monotonic()
        killed_after = processed(platform.settings)
        # The supervisor starts another worker; the group rebalances onto it.
        replaced = wait_for(
            lambda: roles(platform).workers,
            lambda pids: len(pids) == 2 and victim not in pids and all(alive(p) for p in pids),
            60,
            "a worker started in the killed one's place",
        )
        sender.join(600)
        assert sender.acknowledged == len(scans)
        stats = platform.wait_processed(len(scans), timeout=600)
        recovery = time.monotonic() - killed_at
        state = wait_for(
            lambda: official.get(f"/v1/reports/f0/{report_id}").json(),
            lambda s: s["status"] == "done",
            300,
            "the report traced",
        )
        flagged = {
            x["person_id"]: x["tier"]
            for x in official.get("/v1/exposures", params={"f0": sc.IDS["A"]}).json()
        }
        colours = {p: s[0] for p, s in statuses(platform, sc.IDS.values(), sc.DISTRICT).items()}
        index = indexed(platform.settings)
        platform.stop()
        ch = stored(platform, scan_ids)
        hourly = hourly_counts(platform)
        skipped = resends_skipped(platform)

        v_missing, v_dup, v_extra = once(scan_ids, ch.visits)
        p_missing, p_dup, _ = once(scan_ids, index.by_person)
        c_missing, c_dup, _ = once(scan_ids, index.by_checkpoint)
        exposure_dups = sum(1 for n in ch.exposures.values() if n > 1)
        replayed = sum(ch.visit_rows.values()) - len(ch.visit_rows)
        record(
            Outcome(
                f"a worker SIGKILLed mid-stream (2 workers, {redis}), another started",
                len(scans) + 1,
                v_missing + p_missing + c_missing,
                v_dup + p_dup + c_dup + exposure_dups,
                recovery,
                f"{len(scans):,} scans and an F0 report; killed after {killed_after:,} scans; "
                f"recovery: kill → every scan in Redis and ClickHouse; {skipped:,} rows "
                f"sent again by the replay found written and skipped, {replayed:,} written "
                "twice; the hourly views counted each scan once",
            )
        )
        assert hourly == (len(scans), len(scans)), hourly
        assert replayed == 0, f"{replayed} rows written twice"
        assert len(replaced) == 2
        assert stats["scans_processed"] == len(scans), stats
        assert stats["visits_total"] == len(scans), stats
        assert (v_missing, v_dup, v_extra) == (0, 0, 0)
        assert (p_missing, p_dup, c_missing, c_dup) == (0, 0, 0, 0)
        assert state["counts"] == {"F1": len(sc.F1), "F2": len(sc.F2)}, state
        assert flagged == {sc.IDS[n]: "F1" for n in sc.F1} | {sc.IDS[n]: "F2" for n in sc.F2}
        tiers = sorted(
            t for (r, _, t), n in ch.exposures.items() if r == report_id for _ in range(n)
        )
        assert tiers == ["F1"] * len(sc.F1) + ["F2"] * len(sc.F2)
        assert all(colours[sc.IDS[n]] == "red" for n in ("A", *sc.F1)), colours
    finally:
        platform.stop()
        platform.sign_out()


@pytest.mark.parametrize("redis", ["one server", "Redis Cluster"])
def test_the_clickhouse_sink_stopped_for_a_minute_under_load(
    base_settings: Settings, tmp_path: Path, redis: str, request: pytest.FixtureRequest
) -> None:
    scans = sc.bulk_scans(40_000, "sink-stop", seed=13)
    scan_ids = [str(s["scan_id"]) for s in scans]
    on = base_settings if redis == "one server" else request.getfixturevalue("cluster_settings")
    platform = Platform(on, tmp_path / "dancu")
    try:
        prepare(platform, tmp_path)
        store = platform.pid_of("store")
        gate = platform.as_device(*sc.CHECKPOINTS)
        check = {"checkpoint_id": sc.CHECKPOINTS[0], "person_id": sc.IDS["C"]}
        baseline = gate.post("/v1/gate/check", json=check)
        assert baseline.status_code == 200, baseline.text
        sender = Sender(platform, scans, batch=250)
        sender.pace = 0.25  # ~1,000 scans/s for ~40 s, then the backlog
        sender.start()
        wait_for(lambda: processed(platform.settings), lambda n: n >= 2_000, 120, "2k scans")
        os.kill(store, signal.SIGSTOP)
        stopped_at = time.monotonic()
        try:
            before = processed(platform.settings)
            answers = []
            while time.monotonic() - stopped_at < 60:
                r = gate.post("/v1/gate/check", json=check, timeout=10)
                answers.append((r.status_code, r.json()))
                time.sleep(0.5)
            during = processed(platform.settings) - before
            waiting = lags(platform.settings)
        finally:
            os.kill(store, signal.SIGCONT)
        resumed_at = time.monotonic()
        sender.join(600)
        stats = platform.wait_processed(len(scans), timeout=600)
        recovery = time.monotonic() - resumed_at
        index = indexed(platform.settings)
        platform.stop()
        ch = stored(platform, scan_ids)

        v_missing, v_dup, v_extra = once(scan_ids, ch.visits)
        p_missing, p_dup, _ = once(scan_ids, index.by_person)
        c_missing, c_dup, _ = once(scan_ids, index.by_checkpoint)
        record(
            Outcome(
                f"the ClickHouse sink stopped for a minute under load ({redis})",
                len(scans),
                v_missing + p_missing + c_missing,
                v_dup + p_dup + c_dup,
                recovery,
                f"{during:,} scans recorded in Redis while the sink was stopped, "
                f"{waiting[1]:,} row records waiting in Kafka at its end; "
                f"{len(answers)} gate checks answered meanwhile; recovery: SIGCONT → "
                "ClickHouse caught up",
            )
        )
        assert all(status == 200 for status, _ in answers), answers[:3]
        assert all(body == baseline.json() for _, body in answers), answers[:3]
        assert during > 0, "the workers kept recording while the sink was stopped"
        assert waiting[1] > 0, "rows waited in Kafka"
        assert sender.acknowledged == len(scans)
        assert stats["visits_total"] == len(scans), stats
        assert (v_missing, v_dup, v_extra) == (0, 0, 0)
        assert (p_missing, p_dup, c_missing, c_dup) == (0, 0, 0, 0)
    finally:
        if platform.proc is not None:
            with contextlib.suppress(OSError):
                os.kill(platform.pid_of("store"), signal.SIGCONT)
        platform.stop()
        platform.sign_out()


def test_the_store_process_killed_under_load_counts_every_scan_once(
    base_settings: Settings, tmp_path: Path
) -> None:
    """The store's process SIGKILLed under ~1,000 scans/s: on one machine it holds the
    ClickHouse sink and the agents, so both stop between a write and its offset commit.
    The supervisor starts it again; what it had written is delivered again (to the agents
    and to the sink), and the replay marks keep every scan once in the table and in the
    dashboard's insert-time hourly views."""
    scans = sc.bulk_scans(30_000, "store-kill", seed=17)
    scan_ids = [str(s["scan_id"]) for s in scans]
    platform = Platform(base_settings, tmp_path / "dancu")
    try:
        prepare(platform, tmp_path)
        sender = Sender(platform, scans, batch=250)
        sender.pace = 0.25
        sender.start()
        wait_for(lambda: processed(platform.settings), lambda n: n >= 8_000, 180, "8k scans")
        victim = platform.pid_of("store")
        os.kill(victim, signal.SIGKILL)
        killed_at = time.monotonic()
        killed_after = processed(platform.settings)
        wait_for(
            lambda: platform.pid_of("store"),
            lambda pid: pid != victim and alive(pid),
            60,
            "the store's process started again",
        )
        sender.join(600)
        stats = platform.wait_processed(len(scans), timeout=600)
        recovery = time.monotonic() - killed_at
        index = indexed(platform.settings)
        platform.stop()
        ch = stored(platform, scan_ids)
        hourly = hourly_counts(platform)
        skipped = resends_skipped(platform)

        v_missing, v_dup, v_extra = once(scan_ids, ch.visits)
        p_missing, p_dup, _ = once(scan_ids, index.by_person)
        c_missing, c_dup, _ = once(scan_ids, index.by_checkpoint)
        replayed = sum(ch.visit_rows.values()) - len(ch.visit_rows)
        record(
            Outcome(
                "the store's process (sink and agents) SIGKILLed under load",
                len(scans),
                v_missing + p_missing + c_missing,
                v_dup + p_dup + c_dup + max(0, hourly[0] - len(scans)),
                recovery,
                f"killed after {killed_after:,} scans, the supervisor started it again; "
                f"{skipped:,} rows sent or read again found written and skipped, "
                f"{replayed:,} written twice; the hourly views counted {hourly[0]:,} "
                "visits; recovery: kill → every scan in Redis and ClickHouse",
            )
        )
        assert sender.acknowledged == len(scans)
        assert stats["visits_total"] == len(scans), stats
        assert (v_missing, v_dup, v_extra) == (0, 0, 0)
        assert (p_missing, p_dup, c_missing, c_dup) == (0, 0, 0, 0)
        assert hourly == (len(scans), len(scans)), hourly
        assert replayed == 0, f"{replayed} rows written twice"
    finally:
        platform.stop()
        platform.sign_out()
