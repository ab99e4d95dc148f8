"""Epidemic levels (Nghị quyết 128/NQ-CP) on hand-computed wards, by rulebook version."""

from __future__ import annotations

from datetime import date

import pytest

from registry.epidemic import Area, combine, epidemic_level, load_levels

BOOK = load_levels()
NOV_2021 = date(2021, 11, 12)
FEB_2022 = date(2022, 2, 1)
# 10,000 people: 8,000 adults (18–49: 6,000; 50+: 2,000). Coverage met: 75% of adults
# with a dose, 85% of the 50+ fully vaccinated.
MET = ((0, 2000, 0, 0), (18, 6000, 4300, 4000), (50, 2000, 1700, 1700))
# Not met: only 50% of the 50+ fully vaccinated.
UNMET = ((0, 2000, 0, 0), (18, 6000, 4300, 4000), (50, 2000, 1500, 1000))


@pytest.mark.parametrize(
    "cases, ages, level, colour",
    [
        (0, UNMET, 1, "green"),  # no cases: coverage does not raise it
        (1, MET, 1, "green"),  # 10 per 100,000
        (1, UNMET, 2, "yellow"),  # raised by one
        (2, MET, 2, "yellow"),  # exactly 20 per 100,000
        (3, UNMET, 3, "orange"),  # 30 → 2, raised
        (5, MET, 3, "orange"),  # 50 → 3
        (15, MET, 4, "red"),  # 150 → 4
        (15, UNMET, 4, "red"),  # never above 4
    ],
)
def test_levels_by_cases_and_coverage(cases: int, ages, level: int, colour: str) -> None:  # type: ignore[no-untyped-def]
    result = epidemic_level(Area(10_000, cases, ages), BOOK, NOV_2021)
    assert (result.level, result.colour, result.rule_version) == (level, colour, "4800")
    assert result.figures["cases_per_100k_7d"] == cases * 10


def test_the_figures_and_reasons_are_kept() -> None:
    result = epidemic_level(Area(10_000, 3, UNMET), BOOK, NOV_2021)
    assert result.figures["coverage_older_full"] == 0.5
    assert result.figures["coverage_adults_one_dose"] == 0.725
    assert "older_full 50% < 80%" in result.reasons[-1]


def test_capacity_not_ensured_keeps_the_level_from_going_down() -> None:
    held = epidemic_level(
        Area(10_000, 1, MET, capacity_ensured=False, previous_level=3), BOOK, NOV_2021
    )
    assert held.level == 3 and "capacity" in held.reasons[-1]
    assert epidemic_level(Area(10_000, 1, MET, previous_level=3), BOOK, NOV_2021).level == 1


def test_version_218_from_27_january_2022() -> None:
    # 30 cases in 10,000: 300 per 100,000 → level 3 under 218 (would be 4 under 4800)
    result = epidemic_level(Area(10_000, 30, MET), BOOK, FEB_2022)
    assert result.rule_version == "218"
    # coverage under 218: 75% of everyone fully vaccinated — not met here (57%)
    assert result.level == 4 and "population_full" in result.reasons[-1]
    deaths = epidemic_level(Area(10_000, 1, MET, deaths_7d=1), BOOK, FEB_2022)
    assert deaths.level == 4  # 10 deaths per 100,000 a week: very high


def test_a_district_is_assessed_from_its_wards_summed() -> None:
    wards = [Area(10_000, 0, MET), Area(10_000, 6, UNMET)]
    district = combine(wards)
    assert district.population == 20_000 and district.new_cases_7d == 6
    result = epidemic_level(district, BOOK, NOV_2021)
    assert result.figures["cases_per_100k_7d"] == 30.0
    assert result.figures["coverage_older_full"] == 0.675  # (1700 + 1000) / 4000
    assert result.level == 3  # 30 → 2, coverage not met → 3
