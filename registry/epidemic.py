"""Epidemic levels (cấp độ dịch) per ward and district, in the spirit of Nghị quyết
128/NQ-CP: pure, from a week of new cases and vaccination coverage, by a versioned
rulebook (``registry/data/epidemic_levels.yaml``, thresholds never in code).

- Criterion 1: new community cases per 100,000 people over 7 days (version 218 adds cases
  needing oxygen and deaths; the highest level any of them reaches counts).
- Criterion 2: vaccination coverage; when not met the level goes up by one (never above
  4, and not where there were no cases).
- Criterion 3: when treatment capacity is not ensured the level may not go down from the
  previous assessment.
"""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass, field
from datetime import date
from importlib import resources

import yaml


@dataclass(frozen=True, slots=True)
class CoverageRule:
    name: str
    min_age: int
    doses: int
    share: float


@dataclass(frozen=True, slots=True)
class LevelRules:
    version: str
    valid_from: date
    cases_per_100k: tuple[float, ...]
    oxygen_per_100k: tuple[float, ...] = ()
    deaths_per_100k: tuple[float, ...] = ()
    coverage: tuple[CoverageRule, ...] = ()
    coverage_unmet_raises: int = 1


@dataclass(frozen=True, slots=True)
class LevelBook:
    versions: tuple[LevelRules, ...]
    names: dict[int, tuple[str, str]]  # level → (name, colour)

    def for_(self, on: date) -> LevelRules:
        valid = [v for v in self.versions if v.valid_from <= on]
        return max(valid or self.versions[:1], key=lambda v: v.valid_from)


@dataclass(frozen=True, slots=True)
class Area:
    """What one ward (or district) looks like this week."""

    population: int
    new_cases_7d: int
    # people by age band: (min age, people, with ≥ 1 dose, fully vaccinated); bands may
    # be as fine as single years, the rules sum the ones at or above their min age
    ages: tuple[tuple[int, int, int, int], ...] = ()
    oxygen_7d: int = 0
    deaths_7d: int = 0
    capacity_ensured: bool = True
    previous_level: int | None = None


@dataclass(frozen=True, slots=True)
class Level:
    level: int
    name: str
    colour: str
    rule_version: str
    reasons: list[str] = field(default_factory=list)
    figures: dict[str, float] = field(default_factory=dict)


def load_levels(text: str | None = None) -> LevelBook:
    if text is None:
        text = resources.files("registry").joinpath("data", "epidemic_levels.yaml").read_text()
    raw = yaml.safe_load(text)
    versions = []
    for v in raw["versions"]:
        bounds = tuple(float(x) for x in v["cases_per_100k"])
        if len(bounds) != 3 or list(bounds) != sorted(bounds):
            raise ValueError(f"levels {v['version']}: cases_per_100k needs 3 rising bounds")
        versions.append(
            LevelRules(
                version=str(v["version"]),
                valid_from=v["valid_from"],
                cases_per_100k=bounds,
                oxygen_per_100k=tuple(float(x) for x in v.get("oxygen_per_100k") or ()),
                deaths_per_100k=tuple(float(x) for x in v.get("deaths_per_100k") or ()),
                coverage=tuple(
                    CoverageRule(str(k), int(c["min_age"]), int(c["doses"]), float(c["share"]))
                    for k, c in (v.get("coverage") or {}).items()
                ),
                coverage_unmet_raises=int(v.get("coverage_unmet_raises", 1)),
            )
        )
    names = {int(k): (str(x["name"]), str(x["colour"])) for k, x in raw["levels"].items()}
    return LevelBook(tuple(versions), names)


def _per_100k(n: int, population: int) -> float:
    return n * 100_000 / population if population > 0 else 0.0


def _by_bounds(value: float, bounds: tuple[float, ...]) -> int:
    return 1 + bisect_right(bounds, value) if bounds else 1


def coverage_shares(area: Area, rules: LevelRules) -> dict[str, float]:
    """Each coverage rule's share in the area (people at or above its age)."""
    out = {}
    for c in rules.coverage:
        people = sum(n for age, n, _, _ in area.ages if age >= c.min_age)
        done = sum(
            (one if c.doses <= 1 else full) for age, _, one, full in area.ages if age >= c.min_age
        )
        out[c.name] = done / people if people else 0.0
    return out


def epidemic_level(area: Area, book: LevelBook, on: date) -> Level:
    """The level of one area on a day, with the figures and reasons behind it."""
    rules = book.for_(on)
    cases = _per_100k(area.new_cases_7d, area.population)
    level = _by_bounds(cases, rules.cases_per_100k)
    figures = {"population": float(area.population), "cases_per_100k_7d": round(cases, 1)}
    reasons = [f"{cases:.1f} new cases per 100,000 over 7 days → level {level}"]
    for name, count, bounds in (
        ("oxygen_per_100k_7d", area.oxygen_7d, rules.oxygen_per_100k),
        ("deaths_per_100k_7d", area.deaths_7d, rules.deaths_per_100k),
    ):
        if bounds:
            value = _per_100k(count, area.population)
            figures[name] = round(value, 2)
            other = _by_bounds(value, bounds)
            if other > level:
                reasons.append(f"{name.replace('_', ' ')} {value:.2f} → level {other}")
                level = other
    shares = coverage_shares(area, rules)
    figures.update({f"coverage_{k}": round(v, 3) for k, v in shares.items()})
    unmet = [c for c in rules.coverage if shares[c.name] < c.share]
    if unmet and area.new_cases_7d > 0:
        raised = min(4, level + rules.coverage_unmet_raises)
        if raised > level:
            names = ", ".join(f"{c.name} {shares[c.name]:.0%} < {c.share:.0%}" for c in unmet)
            reasons.append(f"vaccination coverage not met ({names}) → level {raised}")
            level = raised
    elif rules.coverage:
        reasons.append("vaccination coverage met")
    if (
        not area.capacity_ensured
        and area.previous_level is not None
        and level < area.previous_level
    ):
        reasons.append(f"treatment capacity not ensured: stays at level {area.previous_level}")
        level = area.previous_level
    name, colour = book.names[level]
    return Level(level, name, colour, rules.version, reasons, figures)


def combine(areas: list[Area]) -> Area:
    """A district from its wards: the sums (then assessed by the same rules)."""
    bands: dict[int, list[int]] = {}
    for a in areas:
        for age, n, one, full in a.ages:
            b = bands.setdefault(age, [0, 0, 0])
            b[0] += n
            b[1] += one
            b[2] += full
    return Area(
        population=sum(a.population for a in areas),
        new_cases_7d=sum(a.new_cases_7d for a in areas),
        ages=tuple((age, *b) for age, b in sorted(bands.items())),  # type: ignore[misc]
        oxygen_7d=sum(a.oxygen_7d for a in areas),
        deaths_7d=sum(a.deaths_7d for a in areas),
        capacity_ensured=all(a.capacity_ensured for a in areas),
    )
