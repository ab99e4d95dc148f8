"""The dashboard's aggregates (pure): age bands and vaccination coverage, card colours
with the live F0/F1/F2 flags applied, epidemic levels per ward and district, day series.
Grouped rows in (from ClickHouse), plain JSON-ready rows out; nobody named.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from registry.epidemic import Area, Level, LevelBook, LevelRules, combine, epidemic_level

VN_TZ = ZoneInfo("Asia/Ho_Chi_Minh")

# Lower bounds of the age bands shown: Việt Nam's 2021–22 campaign vaccinated adults
# (18+) first, those aged 12–17 from October 2021 and 5–11 from April 2022; 50+ is the
# high-risk group the epidemic levels count, 65+ the oldest priority group.
AGE_BANDS: tuple[int, ...] = (0, 12, 18, 50, 65)

# Card colours from the most restrictive up, as registry.cards ranks them: an F2 cap
# lowers a colour, never raises it.
COLOUR_ORDER: tuple[str, ...] = ("red", "none", "yellow", "green")

F0, F1, F2 = 0, 1, 2


# Age bands and vaccination coverage ------------------------------------------------------
def band_label(band: int, bounds: Sequence[int]) -> str:
    """The label of band ``band`` (how many bounds an age reaches; 0: age unknown)."""
    if band <= 0 or band > len(bounds):
        return "unknown"
    low = bounds[band - 1]
    return f"{low}+" if band == len(bounds) else f"{low}-{bounds[band] - 1}"


def coverage_rows(
    groups: Iterable[tuple[str, int, int, int, int]], bounds: Sequence[int] = AGE_BANDS
) -> list[dict[str, object]]:
    """``(district, band, residents, one_dose, full)`` → rows with the band's label and
    ``coverage``, the share with at least one dose (how 2021 reports headlined it)."""
    out = []
    for district, band, n, one, full in groups:
        out.append(
            {
                "district": district,
                "age_band": band_label(band, bounds),
                "residents": n,
                "one_dose": one,
                "full": full,
                "coverage": round(one / n, 4) if n else 0.0,
            }
        )
    return out


# Card colours ---------------------------------------------------------------------------
def flagged_colour(stored: str, tier: int, f2_colour: str) -> str:
    """A flagged person's card: F0 and F1 red; an F2 at most ``f2_colour`` (the card
    rulebook's cap)."""
    if tier in (F0, F1):
        return "red"
    rank = {c: i for i, c in enumerate(COLOUR_ORDER)}
    if rank.get(stored, 0) <= rank.get(f2_colour, 0):
        return stored
    return f2_colour


def colour_rows(
    stored: Iterable[tuple[str, str, int]],
    flagged: Iterable[tuple[str, str, int, int]],
    f2_colour: str,
) -> list[dict[str, object]]:
    """Residents by district and card colour: the stored colours (``(district, colour,
    residents)``), with the people flagged now (``(district, stored colour, tier,
    people)``) moved to the colour their flag gives them. A count the two sources
    disagree on for a moment (the stored groups are recounted every few seconds) never
    goes below zero."""
    counts: Counter[tuple[str, str]] = Counter()
    for district, colour, n in stored:
        counts[(district, colour)] += n
    for district, colour, tier, n in flagged:
        now = flagged_colour(colour, tier, f2_colour)
        if now != colour:
            counts[(district, colour)] = max(0, counts[(district, colour)] - n)
            counts[(district, now)] += n
    order = {c: i for i, c in enumerate(("green", "yellow", "red", "none"))}
    return [
        {"district": d, "colour": c, "residents": n}
        for (d, c), n in sorted(counts.items(), key=lambda x: (x[0][0], order.get(x[0][1], 9)))
        if n > 0
    ]


# Epidemic levels ------------------------------------------------------------------------
def level_cuts(book: LevelBook, on: date, version: str | None = None) -> tuple[int, ...]:
    """The ages the rule version's coverage criteria start at (0 first): bands that fine
    are all :func:`registry.epidemic.coverage_shares` needs."""
    rules = rules_for(book, on, version)
    return tuple(sorted({0, *(c.min_age for c in rules.coverage)}))


def rules_for(book: LevelBook, on: date, version: str | None = None) -> LevelRules:
    """The rule version in force on ``on``, or the one named (ValueError if unknown)."""
    if version is None:
        return book.for_(on)
    for rules in book.versions:
        if rules.version == version:
            return rules
    known = ", ".join(v.version for v in book.versions)
    raise ValueError(f"version: no epidemic level rules {version!r} (known: {known})")


@dataclass(frozen=True, slots=True)
class AreaFigures:
    """One ward's people: how many, and by age band ``(min age, people, one dose, full)``."""

    population: int
    ages: tuple[tuple[int, int, int, int], ...]


def ward_figures(
    groups: Iterable[tuple[str, str, int, int, int, int]], cuts: Sequence[int]
) -> dict[tuple[str, str], AreaFigures]:
    """``(district, ward, band, residents, one_dose, full)`` (band as in
    :func:`band_label` over ``cuts``) → each ward's figures. People of unknown age count
    in the population, not in any age band."""
    population: Counter[tuple[str, str]] = Counter()
    ages: dict[tuple[str, str], list[tuple[int, int, int, int]]] = defaultdict(list)
    for district, ward, band, n, one, full in groups:
        key = (district, ward)
        population[key] += n
        if 1 <= band <= len(cuts):
            ages[key].append((cuts[band - 1], n, one, full))
    return {k: AreaFigures(population[k], tuple(sorted(ages[k]))) for k in population}


def _level_row(level: Level, area: Area) -> dict[str, object]:
    return {
        "level": level.level,
        "name": level.name,
        "colour": level.colour,
        "cases_7d": area.new_cases_7d,
        "cases_per_100k": level.figures["cases_per_100k_7d"],
        "coverage": {
            k.removeprefix("coverage_"): v
            for k, v in level.figures.items()
            if k.startswith("coverage_")
        },
        "population": area.population,
        "reasons": level.reasons,
    }


def assess_levels(
    wards: dict[tuple[str, str], AreaFigures],
    cases: Iterable[tuple[str, str, int]],
    book: LevelBook,
    on: date,
    version: str | None = None,
) -> dict[str, object]:
    """Levels per ward, then per district from its wards summed (Nghị quyết 128/NQ-CP):
    ``cases`` are ``(district, ward, new cases over 7 days)``; a case whose ward is
    unknown counts for its district only. Areas without residents are not assessed."""
    rules = rules_for(book, on, version)
    one = LevelBook((rules,), book.names)
    ward_cases: Counter[tuple[str, str]] = Counter()
    district_cases: Counter[str] = Counter()
    for district, ward, n in cases:
        ward_cases[(district, ward)] += n
        district_cases[district] += n
    by_district: dict[str, list[Area]] = defaultdict(list)
    ward_rows = []
    for (district, ward), f in sorted(wards.items()):
        area = Area(f.population, ward_cases[(district, ward)], f.ages)
        by_district[district].append(area)
        if f.population > 0 and ward:
            level = epidemic_level(area, one, on)
            ward_rows.append({"district": district, "ward": ward, **_level_row(level, area)})
    district_rows = []
    for district, areas in sorted(by_district.items()):
        summed = combine(areas)
        area = Area(summed.population, district_cases[district], summed.ages)
        if area.population > 0 and district:
            level = epidemic_level(area, one, on)
            district_rows.append({"district": district, **_level_row(level, area)})
    return {"rule_version": rules.version, "districts": district_rows, "wards": ward_rows}


# Time series ----------------------------------------------------------------------------
def hour_start(now: datetime, hours: int) -> datetime:
    """The start of the first of the last ``hours`` clock hours, this one included."""
    return now.replace(minute=0, second=0, microsecond=0) - timedelta(hours=hours - 1)


def day_ends(now: datetime, days: int) -> tuple[list[date], list[datetime]]:
    """The last ``days`` Hà Nội days (today included) and the instant each is counted
    at: its end (the next midnight), or now for today."""
    today = now.astimezone(VN_TZ).date()
    dates = [today - timedelta(days=i) for i in range(days - 1, -1, -1)]
    ends = [min(datetime.combine(d + timedelta(days=1), time(0), VN_TZ), now) for d in dates]
    return dates, ends


def day_rows(
    dates: Sequence[date], counts: Iterable[tuple[int, int, int, int]]
) -> list[dict[str, object]]:
    """``(index into dates, f0, f1, f2)`` → one row per day, days without anyone at 0."""
    found = {i: (a, b, c) for i, a, b, c in counts}
    return [
        dict(zip(("day", "f0", "f1", "f2"), (d.isoformat(), *found.get(i, (0, 0, 0))), strict=True))
        for i, d in enumerate(dates)
    ]
