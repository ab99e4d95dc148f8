"""Exposure tracing on the real services: a report's F1 and F2 with the evidence, on
Kafka and in statuses at the gate; a corrected and a withdrawn report; a late scan joined
into its report; the brake holding a large report until an official approves."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import orjson
import pytest
from aiokafka import AIOKafkaConsumer
from redis.asyncio import Redis

from tests.integration.conftest import Platform

pytestmark = pytest.mark.integration

NAMES = ["A", "B", "C", "D", "G", "H", "E", "Y", "X"]
IDS = {n: f"0010900001{i:02d}" for i, n in enumerate(NAMES)}
T0 = (datetime.now(UTC) - timedelta(hours=12)).replace(second=0, microsecond=0)
REPORTED = T0 + timedelta(hours=10)
DISTRICT = "Ba Đình"  # where every resident of the scenario lives


def residents_csv() -> str:
    lines = ["id,name,dob,gender,address,district,ward,household_id"]
    for n, pid in IDS.items():
        home = "HA" if n in ("A", "H") else f"H{n}"
        lines.append(
            f"{pid},Nguyễn Văn {n},1990-01-01,Nam,Số 1 Kim Mã,{DISTRICT},Phường Kim Mã,{home}"
        )
    return "\n".join(lines) + "\n"


def scan(name: str, cp: str, start: int, end: int) -> dict[str, object]:
    """A visit from ``start`` to ``end`` minutes after T0."""
    return {
        "scan_id": f"{name}-{cp}-{start}",
        "person_id": IDS[name],
        "checkpoint_id": cp,
        "ts": (T0 + timedelta(minutes=start)).isoformat(),
        "t_out": (T0 + timedelta(minutes=end)).isoformat(),
        "source": "gate",
    }


SCANS = [
    scan("A", "cp1", 0, 60),
    scan("B", "cp1", 46, 90),  # 14 minutes with A: not F1, but 44 with C: F2
    scan("C", "cp1", 45, 90),  # 15 minutes: F1
    scan("D", "cp1", 44, 120),  # 16 minutes: F1
    scan("C", "cp3", 180, 240),
    scan("G", "cp3", 190, 240),  # F2 through C
    scan("X", "cp3", 700, 760),  # after the report: not traced
    scan("C", "cp3", 700, 760),
]


def report(report_id: str, **changes: object) -> dict[str, object]:
    return {
        "report_id": report_id,
        "person_id": IDS["A"],
        "sample_time": (T0 + timedelta(hours=5)).isoformat(),
        "symptomatic": False,
        "reported_at": REPORTED.isoformat(),
        **changes,
    }


def wait_for(fetch, check, timeout: float = 60):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    value = None
    while time.monotonic() < deadline:
        value = fetch()
        if check(value):
            return value
        time.sleep(0.2)
    raise AssertionError(f"not reached in {timeout}s: {value}")


def official(p: Platform) -> httpx.Client:
    """An official of the residents' district: reports, statuses, exposures, evidence."""
    return p.api("official", DISTRICT)


def device(p: Platform) -> httpx.Client:
    """The gates of the scenario's checkpoints."""
    return p.as_device("cp1", "cp3", "cp5")


def state(p: Platform, report_id: str) -> dict:  # type: ignore[type-arg]
    r = official(p).get(f"/v1/reports/f0/{report_id}", timeout=10)
    assert r.status_code == 200, r.text
    return dict(r.json())


def exposures(p: Platform, f0: str) -> dict[str, dict]:  # type: ignore[type-arg]
    r = official(p).get("/v1/exposures", params={"f0": f0}, timeout=10)
    assert r.status_code == 200, r.text
    names = {pid: n for n, pid in IDS.items()}
    return {names[x["person_id"]]: x for x in r.json()}


def colour(p: Platform, name: str) -> str:
    r = official(p).get(f"/v1/residents/{IDS[name]}/status", timeout=10)
    assert r.status_code == 200, r.text
    return str(r.json()["colour"])


def prepare(p: Platform, tmp: Path) -> None:
    (tmp / "residents.csv").write_text(residents_csv(), encoding="utf-8")
    loaded = p.run_cli("import", "residents", str(tmp / "residents.csv"))
    assert loaded.returncode == 0, loaded.stderr
    p.start()
    r = p.api("steward").post(
        "/v1/checkpoints",
        json=[
            {"checkpoint_id": cp, "type": "restaurant", "district": DISTRICT}
            for cp in ("cp1", "cp3", "cp5")
        ],
        timeout=10,
    )
    assert r.status_code == 201, r.text
    r = device(p).post("/v1/scans", json=SCANS, timeout=10)
    assert r.status_code == 202, r.text
    p.wait_processed(len(SCANS))


def flags_on_kafka(p: Platform, expected: int) -> list[dict]:  # type: ignore[type-arg]
    async def read() -> list[dict]:  # type: ignore[type-arg]
        consumer = AIOKafkaConsumer(
            p.settings.topic("exposures"),
            bootstrap_servers=p.settings.kafka_bootstrap,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
        )
        await consumer.start()
        out: list[dict] = []  # type: ignore[type-arg]
        try:
            deadline = time.monotonic() + 30
            while len(out) < expected and time.monotonic() < deadline:
                batch = await consumer.getmany(timeout_ms=500)
                out.extend(orjson.loads(m.value) for ms in batch.values() for m in ms)
        finally:
            await consumer.stop()
        return out

    return asyncio.run(read())


def test_report_correct_withdraw_and_a_late_scan(platform: Platform, tmp_path: Path) -> None:
    prepare(platform, tmp_path)
    api = official(platform)
    # Unknown and invalid people, bad times: clear errors, nothing sent.
    bad = api.post("/v1/reports/f0", json=report("x1", person_id="001090999999"))
    assert bad.status_code == 422 and "not in the registry" in bad.json()["error"]
    bad = api.post("/v1/reports/f0", json=report("x1", person_id="12"))
    assert bad.status_code == 422 and "person_id" in bad.json()["error"]
    late_sample = (REPORTED + timedelta(hours=1)).isoformat()
    bad = api.post("/v1/reports/f0", json=report("x1", sample_time=late_sample))
    assert bad.status_code == 422 and "sample_time" in bad.json()["error"]
    assert api.get("/v1/reports/f0/x1").status_code == 404
    # An official of another district may not report this district's residents.
    elsewhere = platform.api("official", "Hoàn Kiếm")
    bad = elsewhere.post("/v1/reports/f0", json=report("x1"))  # answered as not registered
    assert bad.status_code == 422 and "not in the registry of district" in bad.json()["error"]

    r = api.post("/v1/reports/f0", json=report("r1"), timeout=10)
    assert r.status_code == 202 and r.json() == {"report_id": "r1", "status": "tracing"}
    done = wait_for(lambda: state(platform, "r1"), lambda s: s["status"] == "done")
    assert done["counts"] == {"F1": 3, "F2": 2} and done["rule_version"] == "moh-2021"
    assert done["window"]["end"] == REPORTED.isoformat()
    # The same report again is harmless; a different body needs PUT.
    assert api.post("/v1/reports/f0", json=report("r1")).status_code == 202
    other = report("r1", symptomatic=True, onset_date=T0.date().isoformat())
    assert api.post("/v1/reports/f0", json=other).status_code == 409

    found = exposures(platform, "r1")
    assert {(n, x["tier"]) for n, x in found.items()} == {
        ("C", "F1"),
        ("D", "F1"),
        ("H", "F1"),
        ("B", "F2"),
        ("G", "F2"),
    }
    assert found["C"]["via"] == IDS["A"] and found["C"]["overlap_minutes"] == 15.0
    assert found["C"]["checkpoint_id"] == "cp1" and found["C"]["reason"] == "co-location"
    assert found["H"]["reason"] == "household" and found["H"]["checkpoint_id"] is None
    assert found["G"]["via"] == IDS["C"] and found["G"]["checkpoint_id"] == "cp3"
    assert exposures(platform, IDS["A"]) == found  # by the F0's person ID too
    assert colour(platform, "C") == "red" and colour(platform, "A") == "red"
    # Another district's official reads neither the report nor these residents' exposures.
    assert elsewhere.get("/v1/reports/f0/r1").status_code == 403
    assert elsewhere.get("/v1/exposures", params={"f0": "r1"}).json() == []
    assert elsewhere.get(f"/v1/residents/{IDS['C']}/why").status_code == 404  # as unknown
    why = api.get(f"/v1/residents/{IDS['G']}/why").json()
    assert why["tier"] == "F2"
    (chain,) = why["evidence"]
    assert [(s["tier"], s["person_id"], s["via"]) for s in chain["chain"]] == [
        ("F2", IDS["G"], IDS["C"]),
        ("F1", IDS["C"], IDS["A"]),
    ]
    contacts = api.get(f"/v1/contacts/{IDS['A']}").json()
    assert {c["person_id"] for c in contacts} == {IDS["C"], IDS["D"]}
    epidemiologist = platform.api("epidemiologist")
    (cluster,) = epidemiologist.get("/v1/clusters").json()
    assert cluster["cases"] == 1 and cluster["people"] >= 6
    graph = epidemiologist.get(f"/v1/clusters/{cluster['cluster_id']}/graph").json()
    tiers = sorted(n["tier"] for n in graph["nodes"] if n["tier"] != "place")
    assert tiers == ["F0", "F1", "F1", "F1", "F2", "F2"]
    assert {e["reason"] for e in graph["edges"]} == {"co-location", "household"}
    assert IDS["C"] not in str(graph)  # pseudonymous
    assert epidemiologist.get("/v1/hotspots").json() == []  # one F0 only
    # ... who reads no one by name
    assert epidemiologist.get(f"/v1/residents/{IDS['C']}/why").status_code == 403
    flags = flags_on_kafka(platform, 5)
    assert {f["tier"] for f in flags} == {"F1", "F2"} and not any(f["withdrawn"] for f in flags)
    assert all("person_id" not in f for f in flags)  # pseudonymous on Kafka

    # A late scan: E's gate was offline; Y met E after E's exposure (and was indexed
    # before E's scan arrived). E becomes F1 and Y F2, within seconds.
    assert device(platform).post("/v1/scans", json=[scan("Y", "cp5", 300, 360)]).status_code == 202
    platform.wait_processed(len(SCANS) + 1)
    late = [scan("E", "cp1", 30, 80), scan("E", "cp5", 300, 340)]
    assert device(platform).post("/v1/scans", json=late).status_code == 202
    found = wait_for(lambda: exposures(platform, "r1"), lambda f: "E" in f and "Y" in f, 30)
    assert found["E"]["tier"] == "F1" and found["E"]["overlap_minutes"] == 30.0
    assert found["Y"]["tier"] == "F2" and found["Y"]["via"] == IDS["E"]
    assert state(platform, "r1")["counts"] == {"F1": 4, "F2": 3}

    # Corrected: A was isolated at T0+50 min (sampled at T0+40). C and D overlapped A
    # for 5 and 6 minutes before that, E for 20: C, D and every F2 are withdrawn.
    fixed = report(
        "r1",
        sample_time=(T0 + timedelta(minutes=40)).isoformat(),
        reported_at=(T0 + timedelta(minutes=50)).isoformat(),
    )
    r = api.put("/v1/reports/f0/r1", json=fixed, timeout=10)
    assert r.status_code == 202, r.text
    after = wait_for(
        lambda: state(platform, "r1"),
        lambda s: s["status"] == "done" and s["counts"] == {"F1": 2, "F2": 0},
    )
    assert after["window"]["end"] == (T0 + timedelta(minutes=50)).isoformat()
    assert set(exposures(platform, "r1")) == {"E", "H"}
    assert colour(platform, "C") != "red" and colour(platform, "E") == "red"
    flags = flags_on_kafka(platform, 7 + 5)
    withdrawn = {f["person_key"] for f in flags if f["withdrawn"]}
    assert len(withdrawn) == 5  # C, D, B, G, Y

    # Withdrawn: every status it caused is restored.
    assert elsewhere.delete("/v1/reports/f0/r1").status_code == 403
    r = api.delete("/v1/reports/f0/r1", timeout=10)
    assert r.status_code == 202 and r.json()["status"] == "withdrawn"
    wait_for(lambda: state(platform, "r1"), lambda s: s["status"] == "withdrawn")
    assert exposures(platform, "r1") == {}
    assert all(colour(platform, n) != "red" for n in NAMES)
    put = api.put("/v1/reports/f0/r1", json=fixed, timeout=10)
    assert put.status_code == 409 and "withdrawn" in put.json()["error"]

    # An f0-positives import feeds the same topic: X is reported, and traced.
    csv = "person_id,name,dob,sample_time,reported_at\n" + (
        f"{IDS['X']},Nguyễn Văn X,1990-01-01,{(T0 + timedelta(hours=11)).isoformat()},"
        f"{(T0 + timedelta(hours=12)).isoformat()}\n"  # now, never tomorrow in Hà Nội
    )
    r = platform.api("steward").post(
        "/v1/imports/f0-positives?filename=f0.csv", content=csv.encode(), timeout=60
    )
    assert r.status_code == 201 and r.json()["outcomes"]["matched"] == 1, r.text
    found = wait_for(
        lambda: api.get("/v1/exposures", params={"f0": IDS["X"]}),
        lambda r: r.status_code == 200 and len(r.json()) == 1,
    )
    (c_again,) = found.json()
    assert c_again["person_id"] == IDS["C"] and c_again["checkpoint_id"] == "cp3"
    assert colour(platform, "X") == "red"

    # ClickHouse holds every flag, pseudonymous, the last version of each: the seven of
    # r1 withdrawn, C's from the import flagged (once the sink agent committed them all).
    platform.wait_sink_drained()
    platform.stop()
    from infra.clickhouse import ClickHouse

    ch = ClickHouse(platform.settings.clickhouse_url, platform.settings.clickhouse.database)
    try:
        rows = ch.call(
            lambda c: (
                c.query(
                    "SELECT report_id, withdrawn, count() FROM "
                    f"{ch.db}.exposures FINAL GROUP BY report_id, withdrawn ORDER BY report_id"
                ).result_rows
            )
        )
        text = str(ch.call(lambda c: c.query(f"SELECT * FROM {ch.db}.exposures").result_rows))
    finally:
        ch.close()
    assert [(r, w, n) for r, w, n in rows if r == "r1"] == [("r1", 1, 7)]
    assert [w for r, w, _ in rows if r.startswith("imp-")] == [0]
    assert not any(pid in text for pid in IDS.values())


def test_the_brake(base_settings, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    p = Platform(base_settings, tmp_path / "dancu", DANCU_HOLD_ABOVE="2")
    try:
        prepare(p, tmp_path)
        assert official(p).post("/v1/reports/f0", json=report("big")).status_code == 202
        held = wait_for(lambda: state(p, "big"), lambda s: s["status"] == "held")
        assert held["counts"] == {"F1": 3, "F2": 2}
        assert held["preview"] == {"F1": {"Ba Đình": 3}, "F2": {"Ba Đình": 2}}
        assert exposures(p, "big") == {} and colour(p, "C") != "red" and colour(p, "A") != "red"
        refused = p.api("official", "Hoàn Kiếm").post("/v1/reports/f0/big/approve")
        assert refused.status_code == 403 and "outside district" in refused.json()["error"]
        r = official(p).post("/v1/reports/f0/big/approve", timeout=10)
        assert r.status_code == 202, r.text
        wait_for(lambda: state(p, "big"), lambda s: s["status"] == "done")
        assert set(exposures(p, "big")) == {"B", "C", "D", "G", "H"}
        assert colour(p, "C") == "red"
        again = official(p).post("/v1/reports/f0/big/approve", timeout=10)
        assert again.status_code == 409 and "not held" in again.json()["error"]

        # Redis lost: the registry export re-imported, then `dancu rebuild` puts the
        # exposures still flagged (from ClickHouse) back on their residents.
        p.wait_sink_drained()
        p.stop()

        async def forget() -> None:
            redis = Redis.from_url(p.settings.redis_url)
            async for key in redis.scan_iter(match=f"{p.settings.redis_prefix}*", count=1000):
                await redis.delete(key)
            await redis.aclose()

        asyncio.run(forget())
        p.sign_out()  # the credentials went with the rest
        loaded = p.run_cli("import", "residents", str(tmp_path / "residents.csv"))
        assert loaded.returncode == 0, loaded.stderr
        rebuilt = p.run_cli("rebuild")
        assert rebuilt.returncode == 0, rebuilt.stderr
        assert orjson.loads(rebuilt.stdout)["exposures_restored"] == 5
        p.start()
        assert colour(p, "C") == "red" and colour(p, "H") == "red"
        why = official(p).get(f"/v1/residents/{IDS['G']}/why").json()
        assert why["tier"] == "F2"
    finally:
        p.stop()
        p.sign_out()
