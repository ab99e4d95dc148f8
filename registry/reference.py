"""Reference data shipped with the package (copied from shared/reference)."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path


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
    text = resources.files("registry").joinpath("data", name).read_text("utf-8")
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


@dataclass(frozen=True, slots=True)
class Ward:
    district: str
    name: str


_DISTRICT_PREFIXES = ("Quận ", "Huyện ", "Thị xã ", "Thành phố ")


def _short(name: str) -> str:
    for prefix in _DISTRICT_PREFIXES:
        if name.startswith(prefix):
            return name[len(prefix) :]
    return name


@cache
def hanoi_wards() -> dict[str, tuple[Ward, ...]]:
    """Hà Nội's 526 wards/communes by district name (pre-2025 three-level structure,
    from the ``vietnam-provinces`` 0.6 package)."""
    import json

    import vietnam_provinces

    rows = json.loads(Path(vietnam_provinces.FLAT_DIVISIONS_JSON_PATH).read_text("utf-8"))
    out: dict[str, list[Ward]] = {}
    for r in rows:
        if r["province_code"] == 1:
            district = _short(r["district_name"])
            out.setdefault(district, []).append(Ward(district, r["ward_name"]))
    return {d: tuple(ws) for d, ws in out.items()}


@dataclass(frozen=True, slots=True)
class NameTable:
    family: tuple[tuple[str, ...], tuple[float, ...]]
    middle: dict[str, tuple[tuple[str, ...], tuple[float, ...]]]
    given: dict[str, tuple[tuple[str, ...], tuple[float, ...]]]


@cache
def vn_names() -> NameTable:
    """Family, middle and given names with weights (middle and given by gender)."""
    groups: dict[str, tuple[list[str], list[float]]] = {}
    for r in _rows("vn_names.csv"):
        names, weights = groups.setdefault(r["kind"], ([], []))
        names.append(r["name"])
        weights.append(float(r["weight"]))

    def pair(kind: str) -> tuple[tuple[str, ...], tuple[float, ...]]:
        names, weights = groups[kind]
        return tuple(names), tuple(weights)

    return NameTable(
        family=pair("family"),
        middle={"Nam": pair("middle_male"), "Nữ": pair("middle_female")},
        given={"Nam": pair("given_male"), "Nữ": pair("given_female")},
    )
