"""Reference data shipped with the package (copied from shared/reference)."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from functools import cache
from importlib import resources


@dataclass(frozen=True, slots=True)
class Province:
    code: str
    name: str


@dataclass(frozen=True, slots=True)
class District:
    code: str
    name: str
    kind: str


def _rows(name: str) -> list[dict[str, str]]:
    text = resources.files("dancu.registry").joinpath("data", name).read_text("utf-8")
    return list(csv.DictReader(text.splitlines()))


@cache
def provinces() -> dict[str, Province]:
    """The 63 province codes of the personal ID number (pre-2025 provinces)."""
    return {r["code"]: Province(r["code"], r["name"]) for r in _rows("province_codes.csv")}


@cache
def hanoi_districts() -> dict[str, District]:
    """Hà Nội's 30 district-level units before the 2025 reform, by 3-digit code."""
    return {
        r["code"]: District(r["code"], r["name"], r["type"]) for r in _rows("hanoi_districts.csv")
    }
