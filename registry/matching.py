"""Matching an imported record against the registry: the ID must exist, and name and birth
date must agree. Names are compared without diacritics, case or spacing (a clerk's
"Nguyen van  an" is "Nguyễn Văn An") with rapidfuzz's similarity."""

from __future__ import annotations

import unicodedata
from collections.abc import Collection
from dataclasses import dataclass
from datetime import date
from functools import lru_cache

from rapidfuzz import fuzz


@lru_cache(maxsize=200_000)
def normalise_name(name: str) -> str:
    """Lower-case ASCII with single spaces: 'Đặng  THỊ Hồng' → 'dang thi hong'."""
    text = name.replace("Đ", "D").replace("đ", "d")
    text = unicodedata.normalize("NFD", text)
    text = "".join(ch for ch in text if unicodedata.category(ch) != "Mn")
    return " ".join(text.casefold().split())


def name_similarity(a: str, b: str) -> float:
    return float(fuzz.ratio(normalise_name(a), normalise_name(b)))


@dataclass(frozen=True, slots=True)
class MatchResult:
    matched: bool
    reason: str
    name_differs: bool = False  # accepting the record makes this spelling an alias


def verify(
    name: str | None,
    dob: date | None,
    registry_name: str,
    registry_dob: date,
    *,
    aliases: Collection[str] = (),
    id_birth_year: int | None = None,
) -> MatchResult:
    """Compare a record's name and birth date with the registry's (the ID already matched).

    Names agree only when equal after removing diacritics, case and spacing, or equal to an
    alias a steward accepted before; any other difference (An / Anh) is a mismatch showing
    the similarity, for a person to decide. A birth date that disagrees with the registry
    or with the year the ID encodes is a mismatch too.
    """
    problems = []
    name_differs = False
    if name:
        spelled = normalise_name(name)
        if spelled != normalise_name(registry_name) and spelled not in aliases:
            name_differs = True
            score = name_similarity(name, registry_name)
            problems.append(f"name differs from the registry's (similarity {score:.0f}/100)")
    if dob is not None:
        if dob != registry_dob:
            problems.append(f"birth date {dob.isoformat()} does not match the registry")
        if id_birth_year is not None and dob.year != id_birth_year:
            problems.append(f"birth year {dob.year} contradicts the ID ({id_birth_year})")
    if problems:
        return MatchResult(False, "; ".join(problems), name_differs)
    return MatchResult(True, "ID found; name and birth date agree")
