"""Faults on the real services: a store away (transient: waited out, nothing acknowledged
lost, reported by /healthz), a store refusing data (permanent: split, never a stall),
imports marked only once applied, and a rebuild of all of Redis from ClickHouse."""

from __future__ import annotations

import asyncio
import hashlib
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import orjson
import pytest
from redis.asyncio import Redis

from infra import services
from infra.settings import Settings
from tests.integration.conftest import Platform
from tests.integration.helpers import make_scans
from tests.integration.test_ingest import redis_counts
from tests.samples import RESIDENTS, VACCINATIONS

pytestmark = pytest.mark.integration
TEST_RESULTS = """person_id,name,dob,result,test_type,sampled_at
001190654321,Trần Thị Bình,1990-07-01,negative,PCR,{recent}
001085111222,Lê Văn Cường,1985-01-20,positive,rapid,2021-11-20T08:00:00+07:00
"""
# Where the residents of tests.samples.RESIDENTS live: an official of that district reads them.
DISTRICTS = {"001090123456": "Ba Đình", "001190654321": "Ba Đình", "001085111222": "Hoàn Kiếm"}
GATEWAY = [f"cp-{i}" for i in range(50)]  # every checkpoint make_scans names


def wait_for(check: object, timeout: float = 90, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return
        time.sleep(0.3)
    raise AssertionError(f"{what} not reached in {timeout}s")


def load_residents(platform: Platform, tmp_path: Path) -> None:
    path = tmp_path / "residents.csv"
    path.write_text(RESIDENTS, encoding="utf-8")
    done = platform.run_cli("import", "residents", str(path))
    assert done.returncode == 0, done.stderr


def health(platform: Platform) -> httpx.Response:
    return httpx.get(f"{platform.url}/healthz", timeout=15)


def status(platform: Platform, person_id: str) -> dict:  # type: ignore[type-arg]
    """A resident's status, read by an official of the resident's district."""
    official = platform.api("official", DISTRICTS[person_id])
    return dict(official.get(f"/v1/residents/{person_id}/status").json())


def test_redis_away_mid_stream_is_waited_out_and_nothing_is_lost(
    platform: Platform, base_settings: Settings, tmp_path: Path
) -> None:
    load_residents(platform, tmp_path)
    platform.start()
    scans = make_scans(4000, seed=21)
    device = platform.as_device(*GATEWAY)
    assert device.post("/v1/scans", json=scans[:2000]).status_code == 202
    platform.wait_processed(2000)
    r = platform.api("steward").post("/v1/imports/vaccinations", content=VACCINATIONS.encode())
    assert r.status_code == 201

    redis = services.RedisService(base_settings)
    redis.stop()
    try:
        # Devices keep posting (the API needs only Kafka for scans); the worker waits.
        for i in range(2000, 4000, 250):
            r = device.post("/v1/scans", json=scans[i : i + 250])
            assert r.status_code == 202, r.text
        wait_for(lambda: health(platform).status_code == 503, 30, "a 503 from /healthz")
        body = health(platform).json()
        assert body["checks"]["redis"]["ok"] is False
    finally:
        redis.start()
    wait_for(lambda: health(platform).status_code == 200, 60, "healthy again")
    stats = platform.wait_processed(4000, timeout=120)
    assert stats["scans_processed"] == 4000 and stats["visits_total"] == 4000
    assert asyncio.run(redis_counts(platform)) == (4000, 4000)
    # The import's records waited on health-records (not counted by wait_processed, which
    # is about scans): applied within the status agent's back-off (at most 10 s) after.
    wait_for(
        lambda: status(platform, "001090123456")["colour"] == "green", 60, "the import applied"
    )


def test_a_batch_clickhouse_refuses_is_split_not_stalled(
    base_settings: Settings, tmp_path: Path
) -> None:
    # Scans over 101 months in one device batch: ClickHouse refuses an insert touching more
    # than 100 monthly partitions. It once stalled the worker for good.
    platform = Platform(base_settings, tmp_path / "dancu", DANCU_VISIT_WINDOW_DAYS="3400")
    try:
        platform.start()
        now = datetime.now(UTC)
        batch = [
            {
                "scan_id": f"month-{i}",
                "person_id": "001090123456",
                "checkpoint_id": "cp-old",
                "ts": (now - timedelta(days=31 * i + 1)).isoformat(),
                "source": "gate",
            }
            for i in range(101)
        ]
        device = platform.as_device("cp-old", *GATEWAY)
        r = device.post("/v1/scans", json=batch)
        assert r.status_code == 202 and r.json()["accepted"] == 101
        after = platform.wait_processed(101, timeout=120)
        assert after["visits_total"] == 101
        ok = device.post("/v1/scans", json=make_scans(10, seed=5))
        assert ok.status_code == 202
        assert platform.wait_processed(111, timeout=60)["visits_total"] == 111
    finally:
        platform.stop()
        platform.sign_out()


def test_imports_are_marked_only_once_applied(platform: Platform, tmp_path: Path) -> None:
    load_residents(platform, tmp_path)
    vax = tmp_path / "vax.csv"
    vax.write_text(VACCINATIONS, encoding="utf-8")
    # No worker runs yet: the records wait in Kafka, so nothing is applied, and importing
    # the file again is not "duplicate" (that once hid records whose batch failed).
    first = orjson.loads(platform.run_cli("import", "vaccinations", str(vax)).stdout)
    again = orjson.loads(platform.run_cli("import", "vaccinations", str(vax)).stdout)
    assert first["outcomes"]["matched"] == again["outcomes"]["matched"] == 2
    platform.start()
    wait_for(lambda: status(platform, "001090123456")["colour"] == "green")
    r = platform.api("steward").post("/v1/imports/vaccinations", content=VACCINATIONS.encode())
    assert r.json()["outcomes"]["matched"] == 0 and r.json()["outcomes"]["duplicate"] == 3


def _digest(platform: Platform, ids: list[str]) -> str:
    rows = []
    for pid in ids:
        s = status(platform, pid)
        rows.append([pid, s["colour"], s["reasons"], s["rule_version"]])
    return hashlib.sha256(orjson.dumps(rows)).hexdigest()


def test_rebuild_restores_every_status_after_redis_is_lost(
    platform: Platform, tmp_path: Path
) -> None:
    load_residents(platform, tmp_path)
    platform.start()
    steward = platform.api("steward")
    recent = (datetime.now(UTC) - timedelta(hours=5)).isoformat()
    for kind, body in (
        ("vaccinations", VACCINATIONS),
        ("test-results", TEST_RESULTS.format(recent=recent)),
    ):
        r = steward.post(f"/v1/imports/{kind}", content=body.encode())
        assert r.status_code == 201, r.text
    cps = [{"checkpoint_id": "HN-r1", "type": "restaurant", "district": "Ba Đình"}]
    assert steward.post("/v1/checkpoints", json=cps).status_code == 201
    ids = list(DISTRICTS)
    wait_for(
        lambda: [status(platform, i)["colour"] for i in ids] == ["green", "yellow", "red"],
        what="statuses applied",
    )
    before = _digest(platform, ids)
    platform.wait_sink_drained()  # the rebuild reads what the sink wrote
    platform.stop()

    async def flushall() -> None:
        redis = Redis.from_url(platform.settings.redis_url, socket_timeout=120)
        await redis.flushall()  # synchronous: seconds on a server with a large AOF
        await redis.aclose()

    asyncio.run(flushall())
    platform.sign_out()  # the credentials went with the rest
    load_residents(platform, tmp_path)  # the registry export, again
    rebuilt = platform.run_cli("rebuild")
    assert rebuilt.returncode == 0, rebuilt.stderr
    report = orjson.loads(rebuilt.stdout)
    assert report["residents_restored"] == 3 and report["checkpoints_restored"] >= 1
    platform.start()
    assert _digest(platform, ids) == before
    gate = platform.as_device("HN-r1").post(
        "/v1/gate/check", json={"checkpoint_id": "HN-r1", "person_id": "001090123456"}
    )
    assert gate.status_code == 200 and gate.json()["decision"] == "allow"
    r = platform.api("steward").post("/v1/imports/vaccinations", content=VACCINATIONS.encode())
    assert r.json()["outcomes"]["duplicate"] == 3  # the applied marks came back too
