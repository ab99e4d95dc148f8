"""The dashboard's pure aggregates on hand-computed groups: age bands, coverage, card
colours with live flags, epidemic levels per ward and district, time series."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest

from registry.analytics import (
    AGE_BANDS,
    assess_levels,
    band_label,
    colour_rows,
    coverage_rows,
    day_ends,
    day_rows,
    flagged_colour,
    hour_start,
    level_cuts,
    ward_figures,
)
from registry.epidemic import load_levels

BOOK = load_levels()
NOV_2021 = date(2021, 11, 12)


def test_band_labels() -> None:
    assert [band_label(b, AGE_BANDS) for b in range(7)] == [
        "unknown",
        "0-11",
        "12-17",
        "18-49",
        "50-64",
        "65+",
        "unknown",
    ]


def test_coverage_rows_share_with_one_dose() -> None:
    rows = coverage_rows([("Ba Đình", 3, 200, 150, 120), ("Ba Đình", 0, 0, 0, 0)])
    assert rows == [
        {
            "district": "Ba Đình",
            "age_band": "18-49",
            "residents": 200,
            "one_dose": 150,
            "full": 120,
            "coverage": 0.75,
        },
        {
            "district": "Ba Đình",
            "age_band": "unknown",
            "residents": 0,
            "one_dose": 0,
            "full": 0,
            "coverage": 0.0,
        },
    ]


@pytest.mark.parametrize(
    "stored, tier, shown",
    [
        ("green", 0, "red"),  # F0
        ("none", 1, "red"),  # F1
        ("green", 2, "yellow"),  # F2: capped
        ("yellow", 2, "yellow"),
        ("none", 2, "none"),  # the cap never raises a colour
        ("red", 2, "red"),
    ],
)
def test_flagged_colour(stored: str, tier: int, shown: str) -> None:
    assert flagged_colour(stored, tier, "yellow") == shown


def test_colour_rows_move_the_flagged_people() -> None:
    stored = [("Ba Đình", "green", 10), ("Ba Đình", "none", 3), ("Tây Hồ", "yellow", 4)]
    flagged = [
        ("Ba Đình", "green", 1, 2),  # two F1s, green before
        ("Ba Đình", "green", 2, 1),  # an F2: green → yellow
        ("Ba Đình", "none", 2, 1),  # an F2 with no card: stays none
        ("Tây Hồ", "yellow", 0, 1),  # an F0
        ("Tây Hồ", "green", 1, 1),  # not in the stored groups yet: never below zero
    ]
    assert colour_rows(stored, flagged, "yellow") == [
        {"district": "Ba Đình", "colour": "green", "residents": 7},
        {"district": "Ba Đình", "colour": "yellow", "residents": 1},
        {"district": "Ba Đình", "colour": "red", "residents": 2},
        {"district": "Ba Đình", "colour": "none", "residents": 3},
        {"district": "Tây Hồ", "colour": "yellow", "residents": 3},
        {"district": "Tây Hồ", "colour": "red", "residents": 2},
    ]


def test_level_cuts_follow_the_rule_version() -> None:
    assert level_cuts(BOOK, NOV_2021) == (0, 18, 50)  # 4800: adults 18+, older 50+
    assert level_cuts(BOOK, date(2022, 2, 1)) == (0, 50)  # 218: everyone, high-risk 50+
    assert level_cuts(BOOK, date(2022, 2, 1), "4800") == (0, 18, 50)
    with pytest.raises(ValueError, match="no epidemic level rules '9'"):
        level_cuts(BOOK, NOV_2021, "9")


def test_levels_per_ward_then_per_district() -> None:
    cuts = (0, 18, 50)
    # Two wards of 10,000 (ages 0–17: 2,000; 18–49: 6,000; 50+: 2,000) and one person of
    # unknown age. W1 meets coverage (75% of adults with a dose, 85% of 50+ full); W2 not
    # (50% of its 50+ fully vaccinated).
    groups = [
        ("Ba Đình", "W1", 1, 2000, 0, 0),
        ("Ba Đình", "W1", 2, 6000, 4300, 4000),
        ("Ba Đình", "W1", 3, 2000, 1700, 1700),
        ("Ba Đình", "W2", 1, 2000, 0, 0),
        ("Ba Đình", "W2", 2, 6000, 4300, 4000),
        ("Ba Đình", "W2", 3, 2000, 1500, 1000),
        ("Ba Đình", "W2", 0, 1, 0, 0),
    ]
    wards = ward_figures(groups, cuts)
    assert wards[("Ba Đình", "W2")].population == 10_001
    # 1 case in W1 (10 per 100,000 → 1), 3 in W2 (≈30 → 2, coverage not met → 3), and a
    # case without a ward: the district's only.
    cases = [("Ba Đình", "W1", 1), ("Ba Đình", "W2", 3), ("Ba Đình", "", 1)]
    out = assess_levels(wards, cases, BOOK, NOV_2021)
    assert out["rule_version"] == "4800"
    w1, w2 = out["wards"]  # type: ignore[misc]
    assert (w1["ward"], w1["level"], w1["colour"], w1["cases_7d"]) == ("W1", 1, "green", 1)
    assert w1["coverage"] == {"adults_one_dose": 0.75, "older_full": 0.85}
    assert (w2["ward"], w2["level"], w2["colour"], w2["cases_per_100k"]) == (
        "W2",
        3,
        "orange",
        30.0,
    )
    (district,) = out["districts"]  # type: ignore[misc]
    # 5 cases in 20,001: 25 per 100,000 → 2; older_full (1700 + 1000) / 4000 < 80% → 3
    assert (district["level"], district["cases_7d"], district["population"]) == (3, 5, 20_001)
    assert district["coverage"]["older_full"] == 0.675
    assert "ward" not in district
    # Version 218 asked for by name: 25 per 100,000 is level 1 there; coverage unmet → 2.
    again = assess_levels(wards, cases, BOOK, NOV_2021, "218")
    assert again["rule_version"] == "218"
    assert again["districts"][0]["level"] == 2  # type: ignore[index]


def test_hours_and_days() -> None:
    now = datetime(2021, 11, 12, 3, 30, tzinfo=UTC)  # 10:30 in Hà Nội
    assert hour_start(now, 1) == datetime(2021, 11, 12, 3, 0, tzinfo=UTC)
    assert hour_start(now, 48) == datetime(2021, 11, 10, 4, 0, tzinfo=UTC)
    late = datetime(2021, 11, 12, 18, 0, tzinfo=UTC)  # already the 13th in Hà Nội
    dates, ends = day_ends(late, 2)
    assert dates == [date(2021, 11, 12), date(2021, 11, 13)]
    assert ends == [datetime(2021, 11, 12, 17, 0, tzinfo=UTC), late]
    assert day_rows(dates, [(1, 2, 3, 4)]) == [
        {"day": "2021-11-12", "f0": 0, "f1": 0, "f2": 0},
        {"day": "2021-11-13", "f0": 2, "f1": 3, "f2": 4},
    ]
