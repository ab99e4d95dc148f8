"""Residents as the registry stores them: flat string fields (one Redis hash each), their
health record, and the card status computed from it."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, datetime

from registry.cards import CardStatus, HealthRecord, RuleBook, card_colour

# Health fields of a resident's record (besides identity fields).
HEALTH_FIELDS = ("doses", "f0_since", "recovered_at", "f1_since", "neg_test_at")
STATUS_FIELDS = ("colour", "reasons", "rule_version", "updated_at")
# What identifies a person in an imported record; never kept beside its pseudonym.
IDENTITY_FIELDS = ("name", "dob", "person_id", "id")


@dataclass(frozen=True, slots=True)
class Resident:
    id: str
    name: str
    dob: date
    gender: str
    address: str
    district: str
    ward: str
    household_id: str
    province: str = "001"  # province of residence (rules are chosen by it)

    def fields(self) -> dict[str, str]:
        return {
            "id": self.id,
            "name": self.name,
            "dob": self.dob.isoformat(),
            "gender": self.gender,
            "address": self.address,
            "district": self.district,
            "ward": self.ward,
            "household": self.household_id,
            "province": self.province,
        }


@dataclass(frozen=True, slots=True)
class Identity:
    """What a record is matched against: the registry's name and birth date, and the
    other spellings of the name a data steward accepted (normalised)."""

    name: str
    dob: date
    aliases: frozenset[str] = frozenset()


def _dt(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text) if text else None


def _latest(*values: datetime | None) -> datetime | None:
    present = [v for v in values if v is not None]
    return max(present) if present else None


def exposure_entries(fields: dict[str, str]) -> dict[str, dict[str, str]]:
    """The tracer's fields, one per report: ``x:<report_id>`` (an exposure: tier, since,
    evidence) and ``f0:<report_id>`` (this person is that report's case)."""
    out: dict[str, dict[str, str]] = {}
    for name, value in fields.items():
        if name.startswith("x:") and value:
            out[name[2:]] = json.loads(value)
        elif name.startswith("f0:") and value:
            out[name[3:]] = {"tier": "F0", "since": value, "report_id": name[3:]}
    return out


def health_from_fields(fields: dict[str, str]) -> HealthRecord:
    """The facts behind the card: imported records, and each report's F0 or exposure."""
    doses = tuple(date.fromisoformat(d[0]) for d in json.loads(fields.get("doses") or "[]"))
    traced = exposure_entries(fields).values()

    def since(tier: str) -> datetime | None:
        return _latest(*(_dt(e["since"]) for e in traced if e.get("tier") == tier))

    return HealthRecord(
        doses=doses,
        f0_since=_latest(_dt(fields.get("f0_since")), since("F0")),
        recovered_at=_dt(fields.get("recovered_at")),
        f1_since=_latest(_dt(fields.get("f1_since")), since("F1")),
        negative_test_at=_dt(fields.get("neg_test_at")),
        f2_since=since("F2"),
    )


def status_fields(status: CardStatus, now: datetime) -> dict[str, str]:
    return {
        "colour": status.colour,
        "reasons": json.dumps(status.reasons, ensure_ascii=False),
        "rule_version": status.rule_version,
        "updated_at": now.isoformat(),
    }


def recompute(fields: dict[str, str], rules: RuleBook, now: datetime) -> dict[str, str]:
    """The status fields for a stored resident, under the rule in force for their province."""
    rule = rules.for_(fields.get("province") or "001", now.date())
    return status_fields(card_colour(health_from_fields(fields), rule, now), now)


def status_view(fields: dict[str, str], rules: RuleBook, now: datetime) -> dict[str, object]:
    """The public status, computed now from the stored facts and the rulebook: expiries
    (a negative test's hours, a recovery's 180 days, an F1's quarantine) take effect on
    their own. The stored colour is only a cache for analytics."""
    current = recompute(fields, rules, now)
    return {
        "colour": current["colour"],
        "reasons": json.loads(current["reasons"]),
        "rule_version": current["rule_version"],
        "updated_at": fields.get("updated_at") or current["updated_at"],
    }


def doses_json(doses: Sequence[tuple[object, ...]]) -> str:
    """Doses as stored: ``[["2021-08-29", "AstraZeneca", 1], ...]``."""
    return json.dumps(
        [[d.isoformat() if isinstance(d, date) else d, *rest] for d, *rest in doses],
        ensure_ascii=False,
    )


# The pseudonymous copy of a resident in analytics (ClickHouse ``residents``): keyed
# hashes instead of the ID number and the household, no name, no address.
ANALYTICS_COLUMNS = (
    "person_key",
    "household_key",
    "district",
    "ward",
    "gender",
    "birth_year",
    "has_address",
    "doses",
    "colour",
    "rule_version",
    "source",
    "updated_at",
)


def analytics_row(
    fields: dict[str, str], pseudonymize: Callable[[str], str], source: str, now: datetime
) -> list[object]:
    """The analytics row of a stored resident (columns in :data:`ANALYTICS_COLUMNS`)."""
    return [
        pseudonymize(fields["id"]),
        pseudonymize("household:" + fields.get("household", "")),
        fields.get("district", ""),
        fields.get("ward", ""),
        fields.get("gender", ""),
        int(fields["dob"][:4]) if fields.get("dob") else 0,
        1 if fields.get("address") else 0,
        len(json.loads(fields.get("doses") or "[]")),
        fields.get("colour", "none"),
        fields.get("rule_version", ""),
        source,
        now,
    ]


def checkpoint_row(fields: dict[str, str], now: datetime) -> list[object]:
    """The analytics row of a checkpoint (ClickHouse ``checkpoints``)."""
    return [
        fields["checkpoint_id"],
        fields.get("name", ""),
        fields.get("type", "other"),
        fields.get("district", ""),
        fields.get("ward", ""),
        int(fields.get("capacity") or 0),
        fields.get("owner", ""),
        now,
    ]
