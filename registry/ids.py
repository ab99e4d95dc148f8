"""Personal ID numbers (số định danh cá nhân): 12 digits, ``PPP G YY RRRRRR``.

PPP is the province of birth registration, G the century and gender (even male, odd
female; 0/1 = 1900s, 2/3 = 2000s, 4/5 = 2100s …), YY the last two digits of the birth
year, then six random digits. There is no check digit (Thông tư 59/2021/TT-BCA), so we
validate structure and consistency with a known birth date and gender.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date

from registry.errors import InvalidPersonalId
from registry.reference import Province, provinces

# ASCII digits only: \d and str.isdigit() also accept Arabic-Indic and full-width digits,
# and "$" matches before a trailing newline.
_DIGITS12 = re.compile(r"[0-9]{12}")
GENDERS = ("Nam", "Nữ")


@dataclass(frozen=True, slots=True)
class IdCheck:
    """The outcome of checking one ID number: what it encodes and which rules it breaks."""

    number: str
    province: Province | None = None
    gender: str | None = None
    birth_year: int | None = None
    errors: list[str] = field(default_factory=list)

    @property
    def valid(self) -> bool:
        return not self.errors

    def as_dict(self) -> dict[str, object]:
        return {
            "number": self.number,
            "valid": self.valid,
            "province": (
                {"code": self.province.code, "name": self.province.name} if self.province else None
            ),
            "gender": self.gender,
            "birth_year": self.birth_year,
            "errors": list(self.errors),
        }


def century_digit(birth_year: int, gender: str) -> int:
    """The G digit for a birth year and gender (Nam even, Nữ odd)."""
    base = (birth_year // 100 - 19) * 2
    return base + (1 if gender == "Nữ" else 0)


def check_id(
    number: str,
    *,
    dob: date | None = None,
    gender: str | None = None,
    today: date | None = None,
) -> IdCheck:
    """Check a personal ID's structure and, when given, its consistency with dob/gender."""
    errors: list[str] = []
    if not _DIGITS12.fullmatch(number):
        ascii_digits = number.isascii() and number.isdigit()
        detail = f"got {len(number)} digits" if ascii_digits else "got other characters"
        return IdCheck(number, errors=[f"must be exactly 12 digits, {detail}"])
    code, g, yy = number[:3], int(number[3]), int(number[4:6])
    province = provinces().get(code)
    if province is None:
        errors.append(f"unknown province code {code}")
    if g > 9 or g // 2 > 4:
        errors.append(f"century digit {g} is outside 0-9")
    birth_year = 1900 + (g // 2) * 100 + yy
    id_gender = "Nữ" if g % 2 else "Nam"
    today = today or date.today()  # noqa: DTZ011 - a calendar date, the caller may inject it
    if birth_year > today.year:
        errors.append(f"birth year {birth_year} encoded by the ID is in the future")
    if gender is not None:
        if gender not in GENDERS:
            errors.append(f"gender must be Nam or Nữ, got {gender!r}")
        elif gender != id_gender:
            errors.append(f"century digit {g} says {id_gender} but gender is {gender}")
    if dob is not None and dob.year != birth_year:
        errors.append(f"birth year {dob.year} but ID says {birth_year}")
    return IdCheck(number, province, id_gender, birth_year, errors)


def validate_id(number: str, **kwargs: object) -> IdCheck:
    """Like :func:`check_id`, raising :class:`InvalidPersonalId` when a rule is broken."""
    result = check_id(number, **kwargs)  # type: ignore[arg-type]  # kwargs mirror check_id
    if not result.valid:
        raise InvalidPersonalId(number, result.errors)
    return result


def make_id(province_code: str, birth_year: int, gender: str, serial: int) -> str:
    """Build a structurally valid ID (used by the synthetic city and tests)."""
    return f"{province_code}{century_digit(birth_year, gender)}{birth_year % 100:02d}{serial:06d}"
