"""The registry on the real services: residents loaded from an export, a vaccination
import with every outcome, the live colour change at a gate, review, quality, seeding."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import orjson
import pytest

from tests.integration.conftest import Platform
from tests.samples import RESIDENTS, VACCINATIONS

pytestmark = pytest.mark.integration


BA_DINH = "Ba Đình"  # where An and Bình live (tests.samples.RESIDENTS)


def gate(p: Platform, person_id: str, checkpoint: str = "HN001-restaurant-1") -> dict:
    """A gate check from the checkpoint's own device."""
    r = p.as_device(checkpoint).post(
        "/v1/gate/check",
        json={"checkpoint_id": checkpoint, "person_id": person_id},
        timeout=10,
    )
    assert r.status_code == 200, r.text
    return dict(r.json())


def wait_for(check: object, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return
        time.sleep(0.3)
    raise AssertionError("condition not reached in time")


def test_import_every_outcome_then_live_colour_change_at_the_gate(
    platform: Platform, tmp_path: Path
) -> None:
    residents = tmp_path / "residents.csv"
    residents.write_text(RESIDENTS, encoding="utf-8")
    loaded = platform.run_cli(
        "import", "residents", str(residents), "--outcomes", str(tmp_path / "res.jsonl")
    )
    assert loaded.returncode == 0, loaded.stderr
    report = orjson.loads(loaded.stdout)
    assert report["outcomes"] == {"loaded": 3, "rejected": 2}
    assert report["ignored_columns"] == ["nickname"]
    lines = [orjson.loads(x) for x in (tmp_path / "res.jsonl").read_text().splitlines()]
    assert [x["outcome"] for x in lines] == ["loaded"] * 3 + ["rejected"] * 2
    assert "not a ward of Hoàn Kiếm" in lines[3]["reason"]
    assert "unknown province code 099" in lines[4]["reason"]
    again = orjson.loads(platform.run_cli("import", "residents", str(residents)).stdout)
    assert again["outcomes"] == {"loaded": 3, "rejected": 2}  # re-loading changes nothing

    platform.start()
    steward = platform.api("steward")
    official = platform.api("official", BA_DINH)
    r = steward.post(
        "/v1/checkpoints",
        json=[
            {"checkpoint_id": "HN001-restaurant-1", "type": "restaurant", "district": "Ba Đình"},
            {"checkpoint_id": "HN001-hospital-1", "type": "hospital", "district": "Ba Đình"},
        ],
    )
    assert r.status_code == 201
    before = gate(platform, "001090123456")
    assert before["decision"] == "deny" and before["colour"] == "none"
    assert "restaurant admits only green" in before["reasons"]
    assert gate(platform, "001090123456", "HN001-hospital-1")["decision"] == "allow"
    # the restaurant's device may not check people in at the hospital
    r = platform.as_device("HN001-restaurant-1").post(
        "/v1/gate/check", json={"checkpoint_id": "HN001-hospital-1", "person_id": "001090123456"}
    )
    assert r.status_code == 403 and "HN001-hospital-1" in r.json()["error"]

    r = steward.post(
        "/v1/imports/vaccinations?filename=vax.csv",
        content=VACCINATIONS.encode(),
        timeout=60,
    )
    assert r.status_code == 201, r.text
    rep = r.json()
    assert rep["rows"] == 7
    assert rep["outcomes"] == {
        "matched": 2,
        "mismatch": 1,
        "unknown-id": 1,
        "invalid": 2,
        "duplicate": 1,
    }
    assert rep["ignored_columns"] == ["batch_no"]
    assert rep == steward.get(f"/v1/imports/{rep['import_id']}").json()
    records = [
        orjson.loads(x)
        for x in steward.get(f"/v1/imports/{rep['import_id']}/records").text.splitlines()
    ]
    assert [x["row"] for x in records] == list(range(1, 8))
    assert [x["outcome"] for x in records] == [
        "matched",
        "matched",
        "duplicate",
        "mismatch",
        "unknown-id",
        "invalid",
        "invalid",
    ]
    assert "name differs" in records[3]["reason"]
    assert "dose: not a whole number" in records[6]["reason"]

    # matched records flow through Kafka and update the resident live
    wait_for(lambda: gate(platform, "001090123456")["colour"] == "green")
    after = gate(platform, "001090123456")
    assert after["decision"] == "allow" and any("2 doses" in x for x in after["reasons"])
    status = official.get("/v1/residents/001090123456/status").json()
    assert status["colour"] == "green" and status["rule_version"] == "hn-2021-10"
    # an official of another district, and a steward, may not read An's status; the
    # official hears exactly what an unregistered ID gets (not where An lives)
    hk = platform.api("official", "Hoàn Kiếm")
    other = hk.get("/v1/residents/001090123456/status")
    nobody = hk.get("/v1/residents/001090123457/status")
    assert other.status_code == nobody.status_code == 404
    assert other.json()["error"].replace("123456", "") == nobody.json()["error"].replace(
        "123457", ""
    )
    assert steward.get("/v1/residents/001090123456/status").status_code == 403

    # re-importing the same file changes nothing
    rep2 = steward.post("/v1/imports/vaccinations", content=VACCINATIONS.encode()).json()
    assert rep2["outcomes"]["matched"] == 0 and rep2["outcomes"]["duplicate"] == 3

    # the steward accepts the mismatch: Bình gets her dose
    queue = steward.get("/v1/review").json()
    assert len(queue) == 1 and queue[0]["event"]["person_id"] == "001190654321"
    r = steward.post(f"/v1/review/{queue[0]['review_id']}", json={"decision": "accept"})
    assert r.status_code == 200
    wait_for(lambda: gate(platform, "001190654321")["colour"] == "yellow")
    assert steward.get("/v1/review").json() == []

    # the camera reads An's card QR at the restaurant: allowed
    qr = (
        "001090123456|012345678|Nguyễn Văn An|15031990|Nam|Số 12 Ngõ 34 Kim Mã, Phường Kim Mã, "
        "Quận Ba Đình, Hà Nội|10052021"
    )
    r = platform.as_device("HN001-restaurant-1").post(
        "/v1/gate/check", json={"checkpoint_id": "HN001-restaurant-1", "qr": qr}
    )
    assert r.json()["decision"] == "allow"

    # a positive test imported from the command line turns An red at once
    f0 = tmp_path / "f0.jsonl"
    f0.write_bytes(
        orjson.dumps(
            {
                "person_id": "001090123456",
                "name": "Nguyễn Văn An",
                "dob": "1990-03-15",
                "sample_time": "2021-11-25T09:00:00",
                "symptomatic": "yes",
                "onset_date": "2021-11-24",
            }
        )
        + b"\n{broken json\n"
    )
    done = platform.run_cli(
        "import", "f0-positives", str(f0), "--outcomes", str(tmp_path / "f0-out.jsonl")
    )
    assert done.returncode == 0, done.stderr
    assert orjson.loads(done.stdout)["outcomes"]["matched"] == 1
    f0_lines = (tmp_path / "f0-out.jsonl").read_text().splitlines()
    assert [orjson.loads(x)["outcome"] for x in f0_lines] == ["matched", "invalid"]
    wait_for(lambda: gate(platform, "001090123456")["colour"] == "red")
    red = gate(platform, "001090123456", "HN001-hospital-1")
    assert red["decision"] == "allow" and "F0 since 2021-11-25" in red["reasons"][0]

    q = steward.get("/v1/quality").json()
    assert q["completeness"]["residents"] == 3
    assert q["completeness"]["by_district"]["Ba Đình"]["vaccination_share"] == 1.0
    assert q["match_rates"]["by_source"]["vaccinations"]["matched"] == 2
    assert "vaccinations" in q["freshness"]


def test_bad_input_at_the_registry_routes(platform: Platform) -> None:
    platform.start()
    steward, official = platform.api("steward"), platform.api("official", BA_DINH)
    device = platform.as_device("x")
    assert steward.post("/v1/imports/vaccines", content=b"a,b\n1,2").status_code == 404
    r = steward.post("/v1/imports/vaccinations", content=b"person_id,name\n1,2")
    assert r.status_code == 422 and "needs column(s) dob, dose, vaccine, date" in r.json()["error"]
    assert steward.post("/v1/imports/vaccinations", content=b"").status_code == 422
    r = official.get("/v1/residents/123/status")
    assert r.status_code == 422 and "12 digits" in r.json()["error"]
    assert official.get("/v1/residents/001090123456/status").status_code == 404
    r = device.post("/v1/gate/check", json={"checkpoint_id": "x", "qr": "a|b"})
    assert r.status_code == 422 and "expected 7 fields" in r.json()["error"]
    r = device.post("/v1/gate/check", json={"checkpoint_id": "x"})
    assert r.status_code == 422 and "person_id or qr" in r.json()["error"]
    assert steward.get("/v1/imports/imp-nope").status_code == 404
    # no credentials, or the wrong role: refused before any input is read
    r = httpx.post(f"{platform.url}/v1/imports/vaccinations", content=b"person_id,name\n1,2")
    assert r.status_code == 401 and "credentials required" in r.json()["error"]
    r = official.post("/v1/imports/vaccinations", content=b"person_id,name\n1,2")
    assert r.status_code == 403 and "steward" in r.json()["error"]


def test_seed_two_hundred_thousand_residents(platform: Platform) -> None:
    result = platform.run_cli("seed", "--residents", "200000", "--seed", "7", timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    report = orjson.loads(result.stdout)
    assert report["residents"] == 200_000 and report["checkpoints"] == 1000
    assert sum(report["colours"].values()) == 200_000
    platform.start()
    q = platform.api("epidemiologist").get("/v1/quality", timeout=120).json()
    assert q["completeness"]["residents"] == 200_000
    assert len(q["completeness"]["by_district"]) == 30
    assert 0.6 < q["completeness"]["vaccination_share"] < 0.95
