"""The dashboard's analytics on the real platform: residents, vaccinations, checkpoints,
scans and an F0 report put in through the API as the roles that may, then every analytics
route and the epidemic levels read back as an epidemiologist (through the public API,
which forwards them to the store's owner), with the hand-computed aggregates. Nobody is
named; bad parameters get a 422 naming the parameter; other roles are refused."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest

from infra.redis_store import make_redis
from infra.settings import Settings
from infra.tracing_store import TracingStore
from registry.ids import make_id
from tests.integration.conftest import Platform
from tracing.reports import ReportState

pytestmark = pytest.mark.integration

VN = ZoneInfo("Asia/Ho_Chi_Minh")
YEAR = datetime.now(VN).year
BD, TH = "Ba Đình", "Tây Hồ"
KIM_MA, NHAT_TAN = "Phường Kim Mã", "Phường Nhật Tân"
# name: (age this year, gender, district, ward, household, doses)
PEOPLE = {
    "A": (30, "Nam", BD, KIM_MA, "HA", 2),  # the F0
    "H": (55, "Nữ", BD, KIM_MA, "HA", 2),  # A's household: F1
    "C": (70, "Nam", BD, KIM_MA, "HC", 1),  # 15 minutes with A: F1
    "G": (15, "Nam", BD, KIM_MA, "HG", 0),  # 50 minutes with C: F2
    "D": (40, "Nữ", BD, KIM_MA, "HD", 0),  # at A's place, hours later: nothing
    "X": (30, "Nam", TH, NHAT_TAN, "HX", 1),
    "Y": (8, "Nữ", TH, NHAT_TAN, "HY", 0),
}
IDS = {
    n: make_id("001", YEAR - age, gender, 500 + i)
    for i, (n, (age, gender, *_)) in enumerate(PEOPLE.items())
}
T0 = (datetime.now(UTC) - timedelta(hours=12)).replace(second=0, microsecond=0)
REPORTED = T0 + timedelta(hours=10)
CHECKPOINTS = {"an-cp1": (BD, KIM_MA), "an-cp3": (BD, KIM_MA), "an-cp9": (TH, NHAT_TAN)}
# (who, where, from, to) in minutes after T0
VISITS = [
    ("A", "an-cp1", 0, 60),
    ("C", "an-cp1", 45, 90),
    ("D", "an-cp1", 200, 230),
    ("C", "an-cp3", 180, 240),
    ("G", "an-cp3", 190, 240),
    ("X", "an-cp9", 30, 60),
    ("Y", "an-cp9", 300, 320),
]


def residents_csv() -> str:
    lines = ["id,name,dob,gender,address,district,ward,household_id"]
    for n, (age, gender, district, ward, home, _) in PEOPLE.items():
        lines.append(
            f"{IDS[n]},Người {n},{YEAR - age}-01-01,{gender},Số 1,{district},{ward},{home}"
        )
    return "\n".join(lines) + "\n"


def vaccinations_csv() -> str:
    lines = ["person_id,name,dob,dose,vaccine,date"]
    for n, (age, _, _, _, _, doses) in PEOPLE.items():
        for dose, day in list(zip((1, 2), ("2021-07-01", "2021-09-01"), strict=True))[:doses]:
            lines.append(f"{IDS[n]},Người {n},{YEAR - age}-01-01,{dose},AstraZeneca,{day}")
    return "\n".join(lines) + "\n"


def scans() -> list[dict[str, object]]:
    return [
        {
            "scan_id": f"an-{who}-{cp}-{start}",
            "person_id": IDS[who],
            "checkpoint_id": cp,
            "ts": (T0 + timedelta(minutes=start)).isoformat(),
            "t_out": (T0 + timedelta(minutes=end)).isoformat(),
            "source": "gate",
        }
        for who, cp, start, end in VISITS
    ]


def eventually(fetch: Callable[[], Any], expected: Any, timeout: float = 60) -> None:
    """``fetch()`` equals ``expected`` within ``timeout`` (views refresh every 10 s)."""
    deadline = time.monotonic() + timeout
    value = None
    while time.monotonic() < deadline:
        value = fetch()
        if value == expected:
            return
        time.sleep(0.5)
    assert value == expected


def test_analytics_and_levels(platform: Platform, tmp_path: Path) -> None:
    (tmp_path / "residents.csv").write_text(residents_csv(), encoding="utf-8")
    loaded = platform.run_cli("import", "residents", str(tmp_path / "residents.csv"))
    assert loaded.returncode == 0, loaded.stderr
    platform.start()
    r = platform.api("steward").post(
        "/v1/checkpoints",
        json=[
            {
                "checkpoint_id": cp,
                "name": f"Quán {cp}",
                "type": "restaurant",
                "district": d,
                "ward": w,
            }
            for cp, (d, w) in CHECKPOINTS.items()
        ],
    )
    assert r.status_code == 201, r.text
    r = platform.api("steward").post("/v1/imports/vaccinations", content=vaccinations_csv())
    assert r.status_code == 201 and r.json()["outcomes"]["matched"] == 6, r.text
    r = platform.as_device(*CHECKPOINTS).post("/v1/scans", json=scans())
    assert r.status_code == 202, r.text
    platform.wait_processed(len(VISITS))
    official = platform.api("official", BD)
    report = {
        "report_id": "an-r1",
        "person_id": IDS["A"],
        "sample_time": (T0 + timedelta(hours=5)).isoformat(),
        "reported_at": REPORTED.isoformat(),
    }
    assert official.post("/v1/reports/f0", json=report).status_code == 202
    eventually(lambda: official.get("/v1/reports/f0/an-r1").json()["counts"], {"F1": 2, "F2": 1})

    epi = platform.api("epidemiologist")

    def get(path: str, **params: object) -> Any:
        r = epi.get(path, params=params)
        assert r.status_code == 200, r.text
        return r.json()

    # Scans per hour and district: the hours of the check-ins.
    per_hour = Counter(
        (
            (T0 + timedelta(minutes=start)).replace(minute=0).isoformat().replace("+00:00", "Z"),
            CHECKPOINTS[cp][0],
        )
        for _, cp, start, _ in VISITS
    )
    expected = [{"hour": h, "district": d, "scans": n} for (h, d), n in sorted(per_hour.items())]
    assert get("/v1/analytics/scans", hours=48) == expected
    assert get("/v1/analytics/scans", hours=48, district=TH) == [
        x for x in expected if x["district"] == TH
    ]
    assert get("/v1/analytics/checkpoints/top", hours=24, limit=2) == [
        {"checkpoint_id": "an-cp1", "name": "Quán an-cp1", "district": BD, "visits": 3},
        {"checkpoint_id": "an-cp3", "name": "Quán an-cp3", "district": BD, "visits": 2},
    ]

    # Vaccination by age band (age reached this year), once the recount has run.
    def band(district: str, label: str, n: int, one: int, full: int) -> dict[str, object]:
        return {"district": district, "age_band": label, "residents": n, "one_dose": one,
                "full": full, "coverage": round(one / n, 4)}  # fmt: skip

    eventually(
        lambda: get("/v1/analytics/vaccination"),
        [
            band(BD, "12-17", 1, 0, 0),  # G
            band(BD, "18-49", 2, 1, 1),  # A, D
            band(BD, "50-64", 1, 1, 1),  # H
            band(BD, "65+", 1, 1, 0),  # C
            band(TH, "0-11", 1, 0, 0),  # Y
            band(TH, "18-49", 1, 1, 0),  # X
        ],
    )
    # Colours: A (F0), H and C (F1) red whatever their card said; G (F2) had no card.
    eventually(
        lambda: get("/v1/analytics/colours"),
        [
            {"district": BD, "colour": "red", "residents": 3},
            {"district": BD, "colour": "none", "residents": 2},
            {"district": TH, "colour": "yellow", "residents": 1},
            {"district": TH, "colour": "none", "residents": 1},
        ],
    )
    cases = get("/v1/analytics/cases", days=2)
    today = datetime.now(VN).date()
    assert [c["day"] for c in cases] == [(today - timedelta(days=1)).isoformat(), str(today)]
    assert cases[-1] == {"day": str(today), "f0": 1, "f1": 2, "f2": 1}

    # Levels: Kim Mã's one case in 5 people is far above every bound; Nhật Tân has none.
    levels = get("/v1/levels")
    assert levels["rule_version"] == "218"  # in force since 27 Jan 2022
    shown = {
        (a["district"], a.get("ward")): (a["level"], a["colour"], a["cases_7d"], a["population"])
        for a in levels["districts"] + levels["wards"]
    }
    assert shown == {
        (BD, None): (4, "red", 1, 5),
        (BD, KIM_MA): (4, "red", 1, 5),
        (TH, None): (1, "green", 0, 2),
        (TH, NHAT_TAN): (1, "green", 0, 2),
    }
    kim_ma = levels["wards"][0]
    assert kim_ma["cases_per_100k"] == 20_000.0
    # full course: A and H of 5; of the 50+ (H, C), H
    assert kim_ma["coverage"] == {"population_full": 0.4, "high_risk_full": 0.5}
    older = get("/v1/levels", version="4800")
    assert older["rule_version"] == "4800"
    # one dose among the adults (A, H, C of A, H, C, D); full among the 50+ (H of H, C)
    assert older["districts"][0]["coverage"] == {"adults_one_dose": 0.75, "older_full": 0.5}

    # Aggregates only: no ID number, no pseudonym anywhere.
    everything = str([get(p) for p in ("/v1/analytics/colours", "/v1/levels")])
    assert not any(i in everything for i in IDS.values())

    # Clear refusals of bad parameters, naming them.
    for path, params, field in [
        ("/v1/analytics/scans", {"hours": 0}, "hours"),
        ("/v1/analytics/scans", {"hours": "two"}, "hours"),
        ("/v1/analytics/scans", {"district": "Atlantis"}, "district"),
        ("/v1/analytics/cases", {"days": 1000}, "days"),
        ("/v1/analytics/checkpoints/top", {"limit": 0}, "limit"),
        ("/v1/levels", {"version": "9"}, "version"),
    ]:
        r = epi.get(path, params=params)
        assert r.status_code == 422 and field in r.json()["error"], (path, r.text)
    # Who may ask: aggregates roles only.
    assert official.get("/v1/levels").status_code == 200
    assert platform.api("steward").get("/v1/analytics/scans").status_code == 403
    assert httpx.get(f"{platform.url}/v1/analytics/colours", timeout=10).status_code == 401


def test_report_states_are_read_alone_for_the_case_backfill(base_settings: Settings) -> None:
    """What ``store_cases`` copies when it starts: every report's state from Redis, by
    reported_at, without the exposures stored beside it."""

    async def go() -> list[tuple[str, str]]:
        redis = make_redis(base_settings.redis_url)
        prefix = f"t{uuid.uuid4().hex[:8]}:"
        store = TracingStore(redis, prefix, timedelta(days=21))
        try:
            for rid, status, days in (("old", "done", 30), ("new", "held", 1)):
                at = (datetime.now(UTC) - timedelta(days=days)).isoformat()
                state = ReportState(rid, "001090000001", "k", {"reported_at": at}, status)  # type: ignore[arg-type]
                await store.save(state, exposures=[])
            found = await store.states(datetime.now(UTC) - timedelta(days=7))
            every = await store.states(datetime(1970, 1, 1, tzinfo=UTC))
            return [(s.report_id, s.status) for s in found] + [("all", str(len(every)))]
        finally:
            keys = [k async for k in redis.scan_iter(match=f"{prefix}*")]
            if keys:
                await redis.delete(*keys)
            await redis.aclose()

    assert asyncio.run(go()) == [("new", "held"), ("all", "2")]
