"""Card colours (green / yellow / red / none) from a resident's health record.

Rules are data (``data/card_rules.yaml``), versioned per province and date, because
provinces changed them month by month in 2021–22. Every status says which rule version
produced it and why.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from importlib import resources
from typing import Literal

import yaml

Colour = Literal["green", "yellow", "red", "none"]


@dataclass(frozen=True, slots=True)
class CardRules:
    version: str
    province: str
    valid_from: date
    full_course_doses: int = 2
    min_days_after_dose: int = 14
    recovered_green_days: int = 180
    negative_test_hours: int = 72
    f1_quarantine_days: int = 7
    # An F2 is watched at home while their F1 is tested: at most this colour, this long.
    f2_monitor_days: int = 7
    f2_colour: Colour = "yellow"


@dataclass(frozen=True, slots=True)
class RuleBook:
    rules: tuple[CardRules, ...]
    gate_policies: dict[str, frozenset[str]] = field(default_factory=dict)

    def for_(self, province: str, on: date) -> CardRules:
        """The newest rule in force on a date: the province's own before the national one."""
        for scope in (province, "*"):
            candidates = [r for r in self.rules if r.province == scope and r.valid_from <= on]
            if candidates:
                return max(candidates, key=lambda r: r.valid_from)
        return min(self.rules, key=lambda r: r.valid_from)


def load_rulebook(text: str | None = None) -> RuleBook:
    if text is None:
        text = resources.files("registry").joinpath("data", "card_rules.yaml").read_text()
    raw = yaml.safe_load(text)
    return RuleBook(
        tuple(CardRules(**{**r, "province": str(r["province"])}) for r in raw["rules"]),
        {k: frozenset(v) for k, v in (raw.get("gate_policies") or {}).items()},
    )


def gate_decision(book: RuleBook, checkpoint_type: str, colour: str) -> tuple[bool, str]:
    """Does a checkpoint of this type let this colour in? With the policy as the reason."""
    allowed = book.gate_policies.get(checkpoint_type) or book.gate_policies.get("other")
    if allowed is None:
        return True, "no gate policy configured: allowed"
    colours = ", ".join(sorted(allowed))
    if colour in allowed:
        return True, f"{checkpoint_type} admits {colours}"
    return False, f"{checkpoint_type} admits only {colours}"


@dataclass(frozen=True, slots=True)
class HealthRecord:
    """What the registry knows about one resident's COVID status (all times aware)."""

    doses: tuple[date, ...] = ()
    f0_since: datetime | None = None
    recovered_at: datetime | None = None
    f1_since: datetime | None = None
    negative_test_at: datetime | None = None
    f2_since: datetime | None = None


@dataclass(frozen=True, slots=True)
class CardStatus:
    colour: Colour
    reasons: list[str] = field(default_factory=list)
    rule_version: str = ""


# Colours from the most restrictive up: an F2 cap lowers a colour, never raises it.
_RANK = {"red": 0, "none": 1, "yellow": 2, "green": 3}


def card_colour(record: HealthRecord, rules: CardRules, now: datetime) -> CardStatus:
    """Apply one rule version to one record at one moment: the colour from the facts,
    then, for an F2 under monitoring, capped at the rule's ``f2_colour``."""
    base = _base_colour(record, rules, now)
    if record.f2_since is None:
        return base
    until = record.f2_since + timedelta(days=rules.f2_monitor_days)
    if now >= until or _RANK[base.colour] <= _RANK[rules.f2_colour]:
        return base
    reason = f"F2 under monitoring until {until.date().isoformat()}"
    return CardStatus(rules.f2_colour, [reason, *base.reasons], rules.version)


def _base_colour(record: HealthRecord, rules: CardRules, now: datetime) -> CardStatus:
    today = now.date()
    ready = today - timedelta(days=rules.min_days_after_dose)
    doses = sorted(record.doses)
    done = [d for d in doses if d <= ready]

    def status(colour: Colour, *reasons: str) -> CardStatus:
        return CardStatus(colour, list(reasons), rules.version)

    f0_active = record.f0_since is not None and (
        record.recovered_at is None or record.recovered_at < record.f0_since
    )
    if f0_active:
        assert record.f0_since is not None
        return status("red", f"F0 since {record.f0_since.date().isoformat()}")
    if record.f1_since is not None:
        until = record.f1_since + timedelta(days=rules.f1_quarantine_days)
        if now < until:
            return status("red", f"F1 in quarantine until {until.date().isoformat()}")
    if len(doses) >= rules.full_course_doses and doses[-1] <= ready:
        return status(
            "green",
            f"{len(doses)} doses, last on {doses[-1].isoformat()} "
            f"(≥ {rules.min_days_after_dose} days ago)",
        )
    if record.recovered_at is not None:
        age = now - record.recovered_at
        if age <= timedelta(days=rules.recovered_green_days):
            return status(
                "green",
                f"recovered on {record.recovered_at.date().isoformat()} "
                f"(within {rules.recovered_green_days} days)",
            )
    if done:
        return status(
            "yellow",
            f"{len(done)} dose(s) at least {rules.min_days_after_dose} "
            "days ago; primary course not complete",
        )
    if record.negative_test_at is not None and now - record.negative_test_at <= timedelta(
        hours=rules.negative_test_hours
    ):
        return status("yellow", f"negative test within {rules.negative_test_hours} h")
    if doses:
        return status(
            "none",
            f"last dose on {doses[-1].isoformat()} is less than "
            f"{rules.min_days_after_dose} days ago",
        )
    return status("none", "no vaccination record")
