"""Every Redis store on a real three-master Redis Cluster (a private one on free ports,
started by infra/redis_cluster.py): no CROSSSLOT error anywhere, the same answers as on
one server, the keys spread over every master; then a whole dancu platform on it, scans
and an F0 report in, statuses and exposures out, Redis lost and rebuilt. And `dancu
services start` with REDIS_CLUSTER=1."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import orjson
import pytest
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster

from infra.alerts import AlertStore, StepRaced
from infra.audit import AuditDrain
from infra.credentials import Credentials
from infra.faults import is_transient
from infra.ledger import ImportLedger
from infra.redis_cluster import RedisCluster, free_ports
from infra.redis_store import CheckpointDirectory, VisitIndex, make_redis, slot
from infra.residents import ResidentStore
from infra.services import port_open
from infra.settings import Settings
from infra.staff import StaffStore
from infra.tracing_store import TracingStore
from infra.webhooks import WebhookStore
from registry.pseudonym import Pseudonymizer
from tests.integration.conftest import Platform
from tests.integration.test_alert_store import drafts, flag
from tests.integration.test_tracing import (
    IDS,
    SCANS,
    colour,
    exposures,
    official,
    prepare,
    report,
    residents_csv,
    state,
    wait_for,
)
from tracing.alerts import venue_alerts, withdrawal
from tracing.exposure import ExposureRules, Interval
from tracing.reports import ReportState
from tracing.visits import Visit

pytestmark = pytest.mark.integration
T = TypeVar("T")
NOW = datetime.now(UTC).replace(microsecond=0)


def on_cluster(cluster: RedisCluster, test: Callable[[Redis, str], Awaitable[T]]) -> T:
    """Run ``test(client, prefix)`` on the cluster with a prefix of its own, deleting its
    keys afterwards (a SCAN over every master)."""

    async def go() -> T:
        redis = make_redis(cluster.url)
        assert isinstance(redis, AsyncRedisCluster)  # the URL names a cluster
        prefix = f"t{uuid.uuid4().hex[:8]}:"
        try:
            return await test(redis, prefix)
        finally:
            async for key in redis.scan_iter(match=f"{prefix}*", count=1000):
                await redis.delete(key)
            await redis.aclose()

    return asyncio.run(go())


async def keys_per_master(redis: Redis, prefix: str) -> list[int]:
    """How many of the prefix's keys each master holds."""
    cluster: Any = redis
    counts = []
    for node in cluster.get_primaries():
        n = 0
        cursor = 0
        while True:
            cursor, keys = await node.execute_command(
                "SCAN", cursor, "MATCH", f"{prefix}*", "COUNT", 1000
            )
            n += len(keys)
            if int(cursor) == 0:
                break
        counts.append(n)
    return counts


def visits(n: int, people: int, places: int) -> list[Visit]:
    out = []
    for i in range(n):
        t_in = NOW - timedelta(hours=5, minutes=i % 240)
        out.append(
            Visit(
                f"s{i}",
                f"pk{i % people}",
                f"cp{i % places}",
                t_in,
                t_in + timedelta(minutes=30),
                "",
            )
        )
    return out


def test_visit_index(redis_cluster: RedisCluster) -> None:
    batch = visits(2500, people=400, places=37)

    async def test(redis: Redis, prefix: str) -> None:
        index = VisitIndex(redis, prefix, timedelta(days=21))
        try:
            assert index.cluster
            assert await index.unseen(["s1", "s2"]) == [True, True]
            assert await index.add(batch) == 2500
            assert await index.add(batch) == 0  # a replay counts nothing
            assert await index.processed() == 2500
            await asyncio.sleep(1.1)  # the rate counts whole seconds past
            assert await index.rate(300) == 2500 / 300
            assert await index.unseen(["s1", "s2", "new"]) == [False, False, True]
            assert await index.count_indexed() == (2500, 2500)
            start, end = NOW - timedelta(days=2), NOW
            mine = await index.visits_of("pk7", start, end)
            assert sorted(v.scan_id for v in mine) == sorted(
                v.scan_id for v in batch if v.person_key == "pk7"
            )
            many = await index.visits_at_many([("cp3", start, end), ("cp4", start, end)])
            for cp, found in zip(("cp3", "cp4"), many, strict=True):
                want = sorted(v.scan_id for v in batch if v.checkpoint_id == cp)
                assert sorted(v.scan_id for v in found) == want
            (people,) = await index.visits_of_many([("pk9", start, end)])
            assert len(people) == len([v for v in batch if v.person_key == "pk9"])
            counts = await index.count_at_many([("cp3", start, end), ("nowhere", start, end)])
            assert counts == [len([v for v in batch if v.checkpoint_id == "cp3"]), 0]
            # the longest stay (30 min) bounds a checkpoint's lookback: a span starting
            # 40 minutes after a visit began does not reach back to it
            late = batch[0].t_in + timedelta(minutes=40)
            (after,) = await index.visits_at_many([(batch[0].checkpoint_id, late, NOW)])
            assert batch[0].scan_id not in {v.scan_id for v in after}
            await index.forget_before(NOW.timestamp())
            assert await index.unseen(["s1"]) == [True]  # marks older than the cutoff go
            assert await index.processed() == 2500  # the count stays
            assert all(n > 0 for n in await keys_per_master(redis, prefix))
        finally:
            index.close_sync()

    on_cluster(redis_cluster, test)


def test_residents_checkpoints_staff_and_ledger(
    redis_cluster: RedisCluster, tmp_path: Path
) -> None:
    pseudonymize = Pseudonymizer(b"k" * 32)
    rows = [
        {
            "id": f"0010900{i:05d}",
            "name": f"Người {i}",
            "dob": "1990-01-01",
            "district": "Ba Đình" if i % 2 else "Hoàn Kiếm",
            "household": f"H{i // 3}",
        }
        for i in range(300)
    ]

    async def test(redis: Redis, prefix: str) -> None:
        people = ResidentStore(redis, prefix, pseudonymize)
        try:
            assert await people.put_many(rows) == 300
            ids: list[str] = []
            async for chunk in people.chunks_of_ids(70):  # a SCAN over every master
                ids.extend(chunk)
            assert sorted(ids) == sorted(r["id"] for r in rows)
            assert await people.index_people(chunk=50) == 300
            keys = [pseudonymize(r["id"]) for r in rows[:5]]
            assert await people.ids_of(keys) == {
                k: r["id"] for k, r in zip(keys, rows[:5], strict=True)
            }
            assert await people.household_of(rows[4]["id"]) == [r["id"] for r in rows[3:6]]
            since = (NOW - timedelta(days=1)).isoformat()
            await people.update_many(
                {
                    rows[1]["id"]: {"test_needed_since": since},
                    rows[3]["id"]: {"test_needed_since": since},
                    rows[2]["id"]: {"colour": "yellow"},
                }
            )
            flagged = await people.flagged_for_testing("Ba Đình")
            assert sorted(flagged) == [rows[1]["id"], rows[3]["id"]]
            await people.update_many({rows[1]["id"]: {"neg_test_at": NOW.isoformat()}})
            assert await people.flagged_for_testing("Ba Đình") == [rows[3]["id"]]
            await people.set_fields({rows[2]["id"]: {"colour": None, "x:r1": "F1"}})
            got = await people.get(rows[2]["id"])
            assert got is not None and "colour" not in got and got["x:r1"] == "F1"
            await people.add_alias(rows[0]["id"], "Tí")
            (who,) = await people.get_identities([rows[0]["id"]])
            assert who is not None and who.aliases == frozenset({"Tí"})
            stream = f"{prefix}audit"
            found = await people.get_audited(rows[0]["id"], (stream, {"actor": "an"}, 100))
            assert found is not None and found["name"] == "Người 0"
            assert await redis.xlen(stream) == 1
        finally:
            people.close_sync()

        places = CheckpointDirectory(redis, prefix)
        made = [
            {"checkpoint_id": f"cp{i}", "type": "shop", "district": "Ba Đình"} for i in range(20)
        ]
        assert await places.create_many(made) == (20, 0, [])
        assert await places.create_many(made[:2]) == (0, 2, [])
        assert (await places.lookup(["cp3"]))["cp3"]["type"] == "shop"

        staff = StaffStore(redis, prefix)
        await staff.send([{"person_id": "p1", "record": {"organisation": "Hoa", "unit": "A"}}])
        await staff.own("Hoa", ["cp1", "cp2"])
        assert await staff.staff("Hoa") == {"p1": "A"}
        assert await staff.checkpoints("Hoa") == ["cp1", "cp2"]

        ledger = ImportLedger(redis, prefix, tmp_path)
        marks = {f"{i:04x}{'0' * 60}": f"c{i}" for i in range(0, 4000, 97)}
        await ledger.mark_applied(marks)
        assert await ledger.applied([*marks, "ffff"]) == [*marks.values(), None]
        await ledger.queue_review([{"review_id": "rv1", "why": "name"}])
        assert [i["review_id"] for i in await ledger.review_items()] == ["rv1"]
        await ledger.touch_freshness("vaccinations", "2021-11-01")
        assert await ledger.freshness() == {"vaccinations": "2021-11-01"}

    on_cluster(redis_cluster, test)


def test_tracing_state(redis_cluster: RedisCluster) -> None:
    rules = ExposureRules()
    t0 = NOW - timedelta(hours=6)
    intervals = [
        Interval(
            "r1", "pkA", "F0", f"cp{i}", t0, t0 + timedelta(hours=2), t0 - timedelta(days=2), NOW
        )
        for i in range(12)
    ]
    infectious = [(f"pkI{i}", t0 - timedelta(days=1), NOW) for i in range(12)]

    async def test(redis: Redis, prefix: str) -> None:
        store = TracingStore(redis, prefix, timedelta(days=21))
        body = {"report_id": "r1", "reported_at": NOW.isoformat()}
        st = ReportState("r1", "001090000001", "pkA", body, status="done")
        assert await store.submit("r1", body) == 1
        await store.save(st, [], f0_visits=[])
        assert (await store.get("r1")) == st
        assert await store.reports_of("pkA") == ["r1"]
        assert [s.report_id for s in await store.states(NOW - timedelta(days=1))] == ["r1"]
        assert [s.report_id for s, _, _ in await store.recent(NOW - timedelta(days=1))] == ["r1"]
        await store.register("r1", intervals, infectious)
        probe = [
            Visit("late1", "pkZ", "cp5", t0 + timedelta(minutes=30), t0 + timedelta(hours=1), ""),
            Visit("late2", "pkI3", "cpQ", t0, t0 + timedelta(hours=1), ""),
            Visit("late3", "pkZ", "cpQ", t0, t0 + timedelta(hours=1), ""),
        ]
        touched = await store.touched(probe, rules)
        assert sorted(v.scan_id for _, v in touched) == ["late1", "late2"]
        assert await store.prune() == 0  # every directory entry still has its key
        # Keep four checkpoints and three people; the rest is unregistered.
        await store.unregister("r1", intervals[:4], infectious[:3])
        assert sorted(v.scan_id for _, v in await store.touched(probe, rules)) == []
        kept = [Visit("k", "pkZ", "cp1", t0, t0 + timedelta(hours=1), "")]
        assert len(await store.touched(kept, rules)) == 1
        assert await store.prune() == 8 + 9  # the emptied keys' directory entries
        await store.drop(st)
        assert await store.get("r1") is None and await store.reports_of("pkA") == []
        assert await store.touched(kept, rules) == []
        assert await store.prune() == 4 + 3
        assert await store.expired(timedelta(days=1)) == []

    on_cluster(redis_cluster, test)


def test_credentials(redis_cluster: RedisCluster) -> None:
    async def test(redis: Redis, prefix: str) -> None:
        creds = Credentials(redis, prefix)
        first, _ = await creds.add_user("lan", "official", "Ba Đình")
        second, _ = await creds.add_user("lan", "official", "Ba Đình")
        who = await creds.person(first)
        assert who is not None and who.district == "Ba Đình" and await creds.active("lan")
        assert await creds.revoke_user("lan") == 2
        assert await creds.person(first) is None and await creds.person(second) is None
        assert not await creds.active("lan")
        device, key = await creds.add_device("cp-1", "cp-2")
        assert await creds.device(device) == (frozenset({"cp-1", "cp-2"}), key)
        assert await creds.first_use("sig") and not await creds.first_use("sig")

    on_cluster(redis_cluster, test)


def test_alerts_and_webhooks(redis_cluster: RedisCluster) -> None:
    async def test(redis: Redis, prefix: str) -> None:
        alerts = AlertStore(redis, prefix, redis_cluster.url)
        batch = drafts(*(flag(f"P{i}") for i in range(8)))
        assert len(await alerts.apply(batch)) == 8
        assert await alerts.apply(batch) == []  # the replay
        c = f"{'P0':0>24}"
        # a person who moved: withdrawn there, flagged here (two scopes, two slots)
        assert slot(alerts.stream_key("d:Ba Đình")) != slot(alerts.stream_key("d:Hoàn Kiếm"))
        assert len(await alerts.apply(drafts(flag("P0", version=4, district="Hoàn Kiếm")))) == 2
        moved = await alerts.get(c, history=True)
        assert moved is not None and moved.scope == "d:Hoàn Kiếm" and moved.status == "open"
        assert (await alerts.counts("d:Ba Đình"))["withdrawn"] == 1
        assert len(await alerts.in_status("d:Ba Đình", "open", 100)) == 7
        read = await alerts.get(f"{'P1':0>24}")
        assert read is not None
        await alerts.step(read, "acknowledged", "acknowledged", {"by": "an"})
        with pytest.raises(StepRaced):
            await alerts.step(read, "acknowledged", "acknowledged", {"by": "binh"})
        changes = [e.change for e in await alerts.after("d:Ba Đình", "0-0", count=100)]
        assert changes == ["flagged"] * 8 + ["withdrawn", "acknowledged"]
        # the blocking reader (a client of its own) on the stream's node
        start = await alerts.last_id("d:Hoàn Kiếm")
        async with alerts.reader(timedelta(seconds=2)) as reader:
            assert await reader.next("d:Hoàn Kiếm", start) == []
            await alerts.apply(drafts(flag("P9", district="Hoàn Kiếm")))
            (event,) = await reader.next("d:Hoàn Kiếm", start)
            assert event.alert_id == f"{'P9':0>24}" and event.change == "flagged"
        # venue alerts of a report, then withdrawn
        places = {"shop": {"owner": "Hoa", "name": "Hoa"}}
        f0 = [Visit("s1", "A", "shop", NOW - timedelta(hours=3), NOW - timedelta(hours=2), "")]
        (venue,) = venue_alerts("r1", "A", f0, [], places, (NOW - timedelta(days=2), NOW), NOW)
        assert len(await alerts.apply([venue], report_id="r1")) == 1
        assert await alerts.venue_alerts_of("r1") == {venue.alert_id: "o:Hoa"}
        gone = withdrawal(venue.alert_id, "venue", "o:Hoa", NOW)
        assert len(await alerts.apply([gone], report_id="r1")) == 1
        assert [e.change for e in await alerts.after("o:Hoa", "0-0")] == ["flagged", "withdrawn"]

        hooks = WebhookStore(redis, prefix)
        hook = await hooks.add("d:Ba Đình", "http://127.0.0.1:1/", "", "an", "official", "0-0")
        assert [h.webhook_id for h in await hooks.of_scope("d:Ba Đình")] == [hook.webhook_id]
        assert await hooks.lease(hook.webhook_id, "mine")
        assert not await hooks.lease(hook.webhook_id, "theirs")
        assert not await hooks.advance(hook.webhook_id, "theirs", "5-0")
        assert await hooks.advance(hook.webhook_id, "mine", "5-0")
        await hooks.failed(hook.webhook_id, 1, "HTTP 500")
        await hooks.release(hook.webhook_id, "mine")
        found = await hooks.get(hook.webhook_id)
        assert found is not None and found.cursor == "5-0" and found.delivered == 1
        await hooks.delete(hook)
        assert await hooks.get(hook.webhook_id) is None and await hooks.all_ids() == []

    on_cluster(redis_cluster, test)


class _RecordingClickHouse:
    """Stands in for ClickHouse behind the audit drain: records the inserted rows."""

    db = "audit"

    def __init__(self) -> None:
        self.rows: list[list[object]] = []

    def call(self, fn: Callable[[Any], T]) -> T:
        return fn(self)

    def insert(self, table: str, rows: list[list[object]], column_names: list[str]) -> None:
        self.rows.extend(rows)


def test_audit_stream_drains(redis_cluster: RedisCluster) -> None:
    async def test(redis: Redis, prefix: str) -> None:
        sink = _RecordingClickHouse()
        drain = AuditDrain(redis, prefix, sink, batch=40)  # type: ignore[arg-type]
        for i in range(100):
            await redis.xadd(drain.stream, {"at": NOW.isoformat(), "actor": f"a{i}"})
        assert await drain.drain_once() == 40
        while await drain.drain_once():
            pass
        assert [r[2] for r in sink.rows] == [f"a{i}" for i in range(100)]
        assert await redis.xlen(drain.stream) == 1  # only the drained mark stays

    on_cluster(redis_cluster, test)


# A whole platform on the cluster ---------------------------------------------------------


def test_a_platform_on_the_cluster_traces_and_rebuilds(
    cluster_settings: Settings, redis_cluster: RedisCluster, tmp_path: Path
) -> None:
    platform = Platform(cluster_settings, tmp_path / "dancu")
    assert platform.env["REDIS_URL"] == redis_cluster.url
    try:
        prepare(platform, tmp_path)  # residents, checkpoints, the scenario's scans
        api = official(platform)
        r = api.post("/v1/reports/f0", json=report("r1"), timeout=10)
        assert r.status_code == 202, r.text
        done = wait_for(lambda: state(platform, "r1"), lambda s: s["status"] == "done")
        assert done["counts"] == {"F1": 3, "F2": 2}
        found = exposures(platform, "r1")
        tiers = {(n, x["tier"]) for n, x in found.items()}
        assert tiers == {("C", "F1"), ("D", "F1"), ("H", "F1"), ("B", "F2"), ("G", "F2")}
        assert colour(platform, "A") == colour(platform, "C") == "red"
        before = statuses(platform)
        stats = platform.stats()
        assert stats["scans_processed"] == len(SCANS)
        counts = asyncio.run(indexed(platform))
        assert counts == (len(SCANS), len(SCANS))
        platform.wait_sink_drained()  # the rebuild reads what the sink wrote
        platform.stop()

        # Redis lost (every master flushed): the registry export again, then a rebuild.
        asyncio.run(flush(redis_cluster))
        platform.sign_out()
        (tmp_path / "again").mkdir()
        prepare_registry_only(platform, tmp_path / "again")
        rebuilt = platform.run_cli("rebuild")
        assert rebuilt.returncode == 0, rebuilt.stderr
        done_report = orjson.loads(rebuilt.stdout)
        assert done_report["visits_restored"] == len(SCANS)
        assert done_report["exposures_restored"] == 5
        platform.start()
        # Every exposed resident's status comes back. (The F0's own, A's, is set by the
        # tracer from the f0-reports topic, which `dancu rebuild` does not replay: so on
        # one server too.)
        after = statuses(platform)
        assert {n: s for n, s in after.items() if n != "A"} == {
            n: s for n, s in before.items() if n != "A"
        }
        assert before["C"][0] == after["C"][0] == "red"
        assert asyncio.run(indexed(platform)) == counts
        assert platform.stats()["scans_processed"] == len(SCANS)
    finally:
        platform.stop()
        platform.sign_out()


def statuses(platform: Platform) -> dict[str, tuple[str, object, str]]:
    """Every scenario resident's status: colour, reasons, rule version."""
    out = {}
    for name, pid in IDS.items():
        r = official(platform).get(f"/v1/residents/{pid}/status", timeout=10)
        assert r.status_code == 200, r.text
        s = r.json()
        out[name] = (s["colour"], s["reasons"], s["rule_version"])
    return out


def prepare_registry_only(platform: Platform, tmp: Path) -> None:
    (tmp / "residents.csv").write_text(residents_csv(), encoding="utf-8")
    loaded = platform.run_cli("import", "residents", str(tmp / "residents.csv"))
    assert loaded.returncode == 0, loaded.stderr


async def indexed(platform: Platform) -> tuple[int, int]:
    redis = make_redis(platform.settings.redis_url)
    index = VisitIndex(redis, platform.settings.redis_prefix, timedelta(days=21))
    try:
        return await index.count_indexed()
    finally:
        index.close_sync()
        await redis.aclose()


async def flush(cluster: RedisCluster) -> None:
    redis: Any = make_redis(cluster.url)
    try:
        await redis.flushall(target_nodes=AsyncRedisCluster.PRIMARIES)
        assert await redis.dbsize(target_nodes=AsyncRedisCluster.PRIMARIES) == 0
    finally:
        await redis.aclose()


# `dancu services` ------------------------------------------------------------------------


def test_services_start_a_cluster_with_redis_cluster_1(
    base_settings: Settings, tmp_path: Path
) -> None:
    base = consecutive_free_ports()
    env = {
        **os.environ,
        "REDIS_CLUSTER": "1",
        "REDIS_PORT": str(base),
        "KAFKA_BOOTSTRAP": base_settings.kafka_bootstrap,  # external: not started here
        "DANCU_DATA_DIR": str(tmp_path / "dancu"),
    }

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "dancu", "services", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )

    try:
        started = cli("start")
        assert started.returncode == 0, started.stdout + started.stderr
        assert "redis-cluster" in started.stdout and "running" in started.stdout
        cluster = RedisCluster(tmp_path / "dancu" / "redis-cluster", [base, base + 1, base + 2])
        assert all(cluster.ok(n) for n in range(3))
        assert cli("start").returncode == 0  # idempotent
    finally:
        stopped = cli("stop")
    assert stopped.returncode == 0 and "stopped" in stopped.stdout


def consecutive_free_ports() -> int:
    """A port free with the two after it (and their cluster-bus ports, +10000)."""
    for _ in range(100):
        base = free_ports(1)[0]
        wanted = (base, base + 1, base + 2)
        if base + 10002 < 65536 and not any(port_open(p) or port_open(p + 10000) for p in wanted):
            return base
    raise AssertionError("no three consecutive free ports")


# Faults: the launcher's kill and restart ------------------------------------------------


def test_a_master_killed_comes_back_with_its_slots(redis_cluster: RedisCluster) -> None:
    """(Last in this module: the cluster is whole again afterwards.)"""

    async def test(redis: Redis, prefix: str) -> None:
        cluster: Any = redis
        keys = [f"{prefix}k{i}" for i in range(300)]
        for k in keys:
            await redis.set(k, k)
        port = redis_cluster.ports[0]
        theirs = [k for k in keys if cluster.get_node_from_key(k).port == port]
        others = [k for k in keys if k not in theirs]
        assert theirs and others
        redis_cluster.kill(0)
        with pytest.raises(Exception) as refused:  # the node's slots are away ...
            await redis.get(theirs[0])
        assert is_transient(refused.value)  # ... which the agents wait out
        assert await redis.get(others[0]) == others[0]  # the other masters serve theirs
        redis_cluster.start_node(0)
        assert [await redis.get(k) for k in keys] == keys  # from its append-only file
        redis_cluster.kill(0)
        redis_cluster.start_node(0, empty=True)  # a replaced machine: slots, no data
        assert [await redis.get(k) for k in theirs] == [None] * len(theirs)
        assert [await redis.get(k) for k in others] == others

    on_cluster(redis_cluster, test)
    assert all(redis_cluster.ok(n) for n in range(3))
