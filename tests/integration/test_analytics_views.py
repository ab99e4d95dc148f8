"""The dashboard's views on a real (embedded) ClickHouse: the migrations backfill what a
store already holds, the views count what arrives after, and each query of
``infra.analytics`` gives the hand-computed aggregates (replaced resident rows counted
once, withdrawn reports and flags left out, F0 > F1 > F2 per person, expiries by the
card rules' days). No Kafka or Redis: chDB in this process, one database per test."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from infra import clickhouse as clickhouse_module
from infra.analytics import CASE_COLUMNS, Analytics
from infra.clickhouse import VISIT_COLUMNS, ClickHouse
from registry.analytics import day_ends
from registry.residents import ANALYTICS_COLUMNS

pytestmark = pytest.mark.integration

NOW = datetime(2021, 11, 12, 3, 30, tzinfo=UTC)  # 10:30 in Hà Nội
HOUR = NOW.replace(minute=0)
BEFORE_VIEWS = 20  # the first analytics migration


@pytest.fixture(scope="module")
def chdb_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # chDB opens one data path per process: every test here shares it, each its database.
    return tmp_path_factory.mktemp("chdb")


@pytest.fixture
def ch(chdb_path: Path) -> Iterator[ClickHouse]:
    store = ClickHouse(f"chdb://{chdb_path}", f"t{uuid.uuid4().hex[:10]}")
    yield store
    store.call(lambda c: c.command(f"DROP DATABASE IF EXISTS {store.db}"))


def migrate_before_views(ch: ClickHouse, monkeypatch: pytest.MonkeyPatch) -> None:
    """The schema as it was before the analytics migrations."""
    every = clickhouse_module.migrations()
    with monkeypatch.context() as m:
        m.setattr(clickhouse_module, "migrations", lambda: [x for x in every if x[0] < 20])
        ch.migrate()


def insert(ch: ClickHouse, table: str, columns: list[str], rows: list[list[object]]) -> None:
    ch.call(lambda c: c.insert(f"{ch.db}.{table}", rows, column_names=columns))


def visit(scan: str, cp: str, district: str, t: datetime) -> list[object]:
    return [scan, f"k-{scan}", cp, district, "", t, t + timedelta(minutes=30), "gate", NOW]


def resident(key: str, ward: str, year: int, doses: int, colour: str, at: int = 0) -> list[object]:
    district = ward.split("/")[0]
    return [key, "h", district, ward, "Nam", year, 1, doses, colour, "v", "test",
            NOW + timedelta(seconds=at)]  # fmt: skip


def test_visit_views_are_backfilled_then_fed_by_every_insert(
    ch: ClickHouse, monkeypatch: pytest.MonkeyPatch
) -> None:
    migrate_before_views(ch, monkeypatch)
    insert(
        ch,
        "checkpoints",
        ["checkpoint_id", "name", "type", "district", "ward", "capacity", "updated_at"],
        [
            ["cp-a", "Chợ Ngọc Hà", "market", "Ba Đình", "", 0, NOW],
            ["cp-b", "Ga Hà Nội", "station", "Đống Đa", "", 0, NOW],
        ],
    )
    before = [
        visit("s1", "cp-a", "Ba Đình", HOUR - timedelta(hours=2, minutes=-5)),
        visit("s2", "cp-a", "Ba Đình", HOUR - timedelta(hours=2, minutes=-50)),
        visit("s3", "cp-b", "Đống Đa", HOUR - timedelta(hours=1, minutes=-1)),
        visit("s4", "cp-b", "Đống Đa", HOUR - timedelta(hours=30)),  # a day earlier
    ]
    insert(ch, "visits", VISIT_COLUMNS, before)
    insert(ch, "visits", VISIT_COLUMNS, before[:1])  # a re-sent scan: one visit in the store
    assert ch.migrate() == [20, 21, 22]  # backfilled from the visits held

    store = Analytics(ch)
    since = HOUR - timedelta(hours=23)
    assert store.scans_by_hour(since) == [
        (HOUR - timedelta(hours=2), "Ba Đình", 2),
        (HOUR - timedelta(hours=1), "Đống Đa", 1),
    ]
    insert(
        ch,
        "visits",
        VISIT_COLUMNS,
        [
            visit("s5", "cp-b", "Đống Đa", HOUR + timedelta(minutes=10)),
            visit("s6", "cp-b", "Đống Đa", HOUR + timedelta(minutes=20)),
            visit("s7", "cp-b", "Đống Đa", HOUR - timedelta(minutes=20)),
        ],
    )
    assert store.scans_by_hour(since) == [
        (HOUR - timedelta(hours=2), "Ba Đình", 2),
        (HOUR - timedelta(hours=1), "Đống Đa", 2),
        (HOUR, "Đống Đa", 2),
    ]
    assert store.scans_by_hour(since, "Ba Đình") == [(HOUR - timedelta(hours=2), "Ba Đình", 2)]
    assert len(store.scans_by_hour(HOUR - timedelta(hours=47))) == 4  # s4's hour too
    assert store.top_checkpoints(since, 10) == [
        ("cp-b", "Ga Hà Nội", "Đống Đa", 4),
        ("cp-a", "Chợ Ngọc Hà", "Ba Đình", 2),
    ]
    assert store.top_checkpoints(since, 1) == [("cp-b", "Ga Hà Nội", "Đống Đa", 4)]
    assert store.top_checkpoints(HOUR, 10) == [("cp-b", "Ga Hà Nội", "Đống Đa", 2)]
    # A checkpoint never registered: no name, district unknown (as the visit sink has it).
    insert(ch, "visits", VISIT_COLUMNS, [visit("s8", "cp-z", "unknown", HOUR)])
    assert store.top_checkpoints(HOUR, 10)[-1] == ("cp-z", "", "unknown", 1)


def test_resident_groups_count_each_resident_once_as_last_written(
    ch: ClickHouse, monkeypatch: pytest.MonkeyPatch
) -> None:
    migrate_before_views(ch, monkeypatch)
    insert(
        ch,
        "residents",
        list(ANALYTICS_COLUMNS),
        [
            resident("p1", "Ba Đình/W1", 1990, 0, "none"),
            resident("p1", "Ba Đình/W1", 1990, 2, "green", at=5),  # later: replaces it
            resident("p2", "Ba Đình/W1", 1960, 1, "yellow"),
            resident("p3", "Ba Đình/W2", 2015, 0, "none"),
            resident("p4", "Ba Đình/W2", 0, 3, "green"),  # birth year unknown
            resident("p5", "Tây Hồ/W9", 1970, 2, "green"),
        ],
    )
    ch.migrate()  # the migration counts the residents already held
    store = Analytics(ch)
    bounds = [0, 12, 18, 50, 65]
    assert store.coverage_groups(2021, bounds, 2) == [
        ("Ba Đình", 0, 1, 1, 1),  # p4, age unknown
        ("Ba Đình", 1, 1, 0, 0),  # p3, 6
        ("Ba Đình", 3, 1, 1, 1),  # p1, 31
        ("Ba Đình", 4, 1, 1, 0),  # p2, 61: not yet 65
        ("Tây Hồ", 4, 1, 1, 1),  # p5, 51
    ]
    assert store.colour_groups() == [
        ("Ba Đình", "green", 2),
        ("Ba Đình", "none", 1),
        ("Ba Đình", "yellow", 1),
        ("Tây Hồ", "green", 1),
    ]
    insert(
        ch,
        "residents",
        list(ANALYTICS_COLUMNS),
        [resident("p3", "Ba Đình/W2", 2015, 1, "none", at=9)],
    )
    store.refresh_residents()
    assert store.coverage_groups(2021, [0, 18, 50], 2, by_ward=True) == [
        ("Ba Đình", "Ba Đình/W1", 2, 1, 1, 1),
        ("Ba Đình", "Ba Đình/W1", 3, 1, 1, 0),
        ("Ba Đình", "Ba Đình/W2", 0, 1, 1, 1),
        ("Ba Đình", "Ba Đình/W2", 1, 1, 1, 0),  # p3's first dose, counted once
        ("Tây Hồ", "Tây Hồ/W9", 3, 1, 1, 1),
    ]


def case(report: str, key: str, ward: str, reported: timedelta, status: str = "done",
         version: int = 1) -> list[object]:  # fmt: skip
    """A report ``reported`` ago, its sample a day before."""
    at = NOW - reported
    return [report, key, "Ba Đình", ward, at - timedelta(days=1), at, status, version, NOW]


def flag(key: str, tier: str, flagged: timedelta, contact: timedelta, withdrawn: int = 0,
         report: str = "r1") -> list[object]:  # fmt: skip
    return [f"{report}:{key}", report, key, tier, "a", "co-location", "cp", "", NOW - contact,
            NOW - contact, 20.0, "moh-2021", NOW - flagged, withdrawn, 1]  # fmt: skip


EXPOSURE_COLUMNS = [
    "exposure_id", "report_id", "person_key", "tier", "via_key", "reason", "checkpoint_id",
    "district", "overlap_start", "overlap_end", "overlap_minutes", "rule_version",
    "flagged_at", "withdrawn", "version",
]  # fmt: skip


def test_cases_flags_and_new_cases(ch: ClickHouse) -> None:
    ch.migrate()
    day = timedelta(days=1)
    insert(
        ch,
        "f0_cases",
        CASE_COLUMNS,
        [
            case("r1", "a", "Ba Đình/W1", 2 * day),  # sample 3 days ago
            case("r2", "b", "Ba Đình/W1", 1 * day),
            case("r2", "b", "Ba Đình/W1", 1 * day, "withdrawn", version=2),
            case("r3", "c", "Ba Đình/W2", 10 * day),  # recovered 5 days ago
            case("r4", "h", "", 3 * day, "held"),  # ward unknown, held by the brake
        ],
    )
    insert(
        ch,
        "health_records",
        ["person_key", "record_id", "kind", "record", "supersedes", "import_id", "applied_at"],
        [["c", "rec1", "recoveries", '{"recovered_date": "2021-11-07"}', 0, "i", NOW]],
    )
    insert(
        ch,
        "exposures",
        EXPOSURE_COLUMNS,
        [
            flag("a", "F1", 2 * day, 3 * day, report="r9"),  # a is F0: counted as F0 only
            flag("d", "F1", 2 * day, 2 * day),  # red until 7 days after the contact
            flag("e", "F2", 2 * day, 2 * day),
            flag("f", "F1", 2 * day, 2 * day, withdrawn=1),
            flag("g", "F2", 9 * day, 9 * day),  # monitoring over 2 days ago
        ],
    )
    insert(
        ch,
        "residents",
        list(ANALYTICS_COLUMNS),
        [
            resident("a", "Ba Đình/W1", 1990, 2, "green"),
            resident("d", "Ba Đình/W1", 1990, 2, "green"),
            resident("e", "Tây Hồ/W9", 1990, 1, "yellow"),
            resident("g", "Tây Hồ/W9", 1990, 2, "green"),
        ],
    )
    store = Analytics(ch)
    dates, ends = day_ends(NOW, 12)
    active = {
        dates[i].isoformat(): row for i, *row in store.active_by_day(ends[0], len(ends), NOW, 7, 7)
    }
    # Each day counted at its end in Hà Nội (17:00 UTC), today at NOW. F0: c from its
    # sample (1 Nov) to its recovery (midnight starting 7 Nov), h (held) from 8 Nov, a
    # from 9 Nov; F1: d from its flag (10 Nov); F2: g from its flag (3 Nov) to 7 days
    # after its contact (10 Nov, 10:30), then e from 10 Nov.
    assert active == {
        "2021-11-01": [1, 0, 0],
        "2021-11-02": [1, 0, 0],
        "2021-11-03": [1, 0, 1],
        "2021-11-04": [1, 0, 1],
        "2021-11-05": [1, 0, 1],
        "2021-11-06": [0, 0, 1],
        "2021-11-07": [0, 0, 1],
        "2021-11-08": [1, 0, 1],
        "2021-11-09": [2, 0, 1],
        "2021-11-10": [2, 1, 1],
        "2021-11-11": [2, 1, 1],
        "2021-11-12": [2, 1, 1],
    }
    # Shorter rules end the flags sooner: F1 for a day after the contact, to 11 Nov 10:30.
    short = {
        dates[i].isoformat(): row for i, *row in store.active_by_day(ends[0], len(ends), NOW, 1, 7)
    }
    assert (short["2021-11-10"], short["2021-11-11"]) == ([2, 1, 1], [2, 0, 1])
    # Now: a and h F0 (h has no resident row: not in the colours), d F1, e F2.
    assert sorted(store.flagged_now(NOW, 7, 7)) == [
        ("Ba Đình", "green", 0, 1),
        ("Ba Đình", "green", 1, 1),
        ("Tây Hồ", "yellow", 2, 1),
    ]
    # New cases in the 7 days to NOW: r1 (a) and r4 (h, ward unknown); r2 was withdrawn,
    # r3 reported 10 days ago.
    assert sorted(store.new_cases(NOW - 7 * day, NOW)) == [
        ("Ba Đình", "", 1),
        ("Ba Đình", "Ba Đình/W1", 1),
    ]
