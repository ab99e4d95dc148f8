"""The exposure rulebook: versions of :class:`tracing.exposure.ExposureRules`, read from
``tracing/data/exposure_rules.yaml`` (or another file), chosen by the report's date."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import date, timedelta
from importlib import resources
from pathlib import Path

import yaml

from tracing.exposure import ExposureRules


@dataclass(frozen=True, slots=True)
class ExposureRuleBook:
    versions: tuple[tuple[date, ExposureRules], ...]

    def for_(self, on: date) -> ExposureRules:
        """The newest version in force on a date (the oldest before any)."""
        valid = [(d, r) for d, r in self.versions if d <= on]
        return max(valid or self.versions[:1], key=lambda pair: pair[0])[1]

    def loosest(self) -> ExposureRules:
        """The version with the shortest minimum overlap: what the late-scan join uses to
        pick candidates (each report then applies its own version)."""
        return min((r for _, r in self.versions), key=lambda r: r.min_overlap)

    def latest(self) -> ExposureRules:
        return max(self.versions, key=lambda pair: pair[0])[1]


def _minutes(value: object, name: str) -> timedelta:
    if not isinstance(value, int | float) or isinstance(value, bool) or value < 0:
        raise ValueError(f"exposure rules: {name} must be a number of minutes ≥ 0, got {value!r}")
    return timedelta(minutes=value)


def _rules(raw: dict[str, object]) -> tuple[date, ExposureRules]:
    dwell = raw.get("dwell_minutes") or {}
    if not isinstance(dwell, dict):
        raise ValueError("exposure rules: dwell_minutes must map checkpoint types to minutes")
    valid_from = raw["valid_from"]
    if not isinstance(valid_from, date):
        raise ValueError(f"exposure rules: valid_from must be a date, got {valid_from!r}")
    return valid_from, ExposureRules(
        version=str(raw["version"]),
        pre_onset=timedelta(days=float(raw.get("pre_onset_days", 2))),  # type: ignore[arg-type]
        lookback=timedelta(days=float(raw.get("lookback_days", 14))),  # type: ignore[arg-type]
        min_overlap=_minutes(raw.get("min_overlap_minutes", 15), "min_overlap_minutes"),
        default_dwell=_minutes(raw.get("default_dwell_minutes", 30), "default_dwell_minutes"),
        dwell_by_type={str(k): _minutes(v, f"dwell_minutes.{k}") for k, v in dwell.items()},
        hold_above=int(raw.get("hold_above", 500)),  # type: ignore[call-overload]
    )


def load_exposure_rules(
    path: Path | None = None, hold_above: int | None = None
) -> ExposureRuleBook:
    """The packaged rulebook, or another file; ``hold_above`` overrides every version's
    brake (an operator's setting)."""
    if path is None:
        text = resources.files("tracing").joinpath("data", "exposure_rules.yaml").read_text()
    else:
        text = path.read_text()
    raw = yaml.safe_load(text)
    versions = tuple(_rules(r) for r in raw["rules"])
    if hold_above is not None:
        versions = tuple((d, replace(r, hold_above=hold_above)) for d, r in versions)
    if not versions:
        raise ValueError("exposure rules: no versions")
    return ExposureRuleBook(versions)
