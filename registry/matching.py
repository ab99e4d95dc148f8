"""Matching an imported record against the registry: the ID must exist, and name and birth
date must agree. Names are compared without diacritics, case or spacing (a clerk's
"Nguyen van  an" is "Nguyễn Văn An") with rapidfuzz's similarity."""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from datetime import date
from functools import lru_cache

from rapidfuzz import fuzz

NAME_THRESHOLD = 90.0  # similarity (0–100) at or above which two normalised names agree


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


def verify(
    name: str | None,
    dob: date | None,
    registry_name: str,
    registry_dob: date,
    threshold: float = NAME_THRESHOLD,
) -> MatchResult:
    """Compare a record's name and birth date with the registry's (the ID already matched)."""
    problems = []
    if name:
        score = name_similarity(name, registry_name)
        if score < threshold:
            problems.append(f"name does not match the registry (similarity {score:.0f}/100)")
    if dob is not None and dob != registry_dob:
        problems.append(f"birth date {dob.isoformat()} does not match the registry")
    if problems:
        return MatchResult(False, "; ".join(problems))
    return MatchResult(True, "ID found; name and birth date agree")
