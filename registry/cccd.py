"""CCCD chip-card QR payloads (2021–2024 cards).

Classic layout, UTF-8, ``|``-separated:
``ID12|old CMND 9 digits or empty|Full name|ddmmyyyy birth|Nam or Nữ|address|ddmmyyyy issue``.
Newer cards may order fields differently, so when the classic order does not fit, fields
are recognised by content (12 digits = ID, 9 digits = old ID, dates, gender, the address
has commas).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import date, datetime

from registry.errors import InvalidQrPayload, quote
from registry.ids import GENDERS, check_id

_ID = re.compile(r"[0-9]{12}")
_OLD = re.compile(r"[0-9]{9}")
_DATE = re.compile(r"[0-9]{8}")
# A chip card's QR holds about 150-300 characters; anything far longer is not one.
MAX_PAYLOAD = 1024


@dataclass(frozen=True, slots=True)
class CccdCard:
    id: str
    old_id: str | None
    name: str
    dob: date
    gender: str
    address: str
    issued: date

    def as_dict(self) -> dict[str, object]:
        d = asdict(self)
        d["dob"], d["issued"] = self.dob.isoformat(), self.issued.isoformat()
        return d


def _date(text: str, what: str, errors: list[str], today: date) -> date | None:
    if not _DATE.fullmatch(text):
        errors.append(f"{what} must be ddmmyyyy, got {quote(text)}")
        return None
    try:
        value = datetime.strptime(text, "%d%m%Y").date()  # noqa: DTZ007 - a calendar date
    except ValueError:
        errors.append(f"{what} {text} is not a real date")
        return None
    if value > today:
        errors.append(f"{what} {value.isoformat()} is in the future")
    return value


def _by_content(fields: list[str]) -> tuple[list[str], list[int]]:
    """Reorder a newer-layout payload into the classic order by recognising each field;
    also the positions of non-empty fields that fit nowhere (a second gender, a third
    date, a third text): a card's text is refused rather than read with parts ignored."""
    taken: set[int] = set()

    def take(match: Callable[[str], object], n: int = 1) -> list[str]:
        found = [i for i, f in enumerate(fields) if f and i not in taken and match(f)][:n]
        taken.update(found)
        return [fields[i] for i in found]

    ids = take(_ID.fullmatch)
    olds = take(_OLD.fullmatch)
    dates = take(_DATE.fullmatch, 2)
    genders = take(lambda f: f in GENDERS)
    texts = [i for i, f in enumerate(fields) if f and i not in taken]
    address = next(
        (i for i in texts if "," in fields[i]),
        max(texts, key=lambda i: len(fields[i]), default=None),
    )
    name = next((i for i in texts if i != address), None)
    left = [i for i in texts if i not in (address, name)]

    def key(d: str) -> str:
        return d[4:] + d[2:4] + d[:2]

    dates = sorted(dates, key=key)
    dob, issued = ([*dates, "", ""])[:2]
    ordered = [
        ids[0] if ids else "",
        olds[0] if olds else "",
        fields[name] if name is not None else "",
        dob,
        genders[0] if genders else "",
        fields[address] if address is not None else "",
        issued,
    ]
    return ordered, left


def parse_cccd(payload: str | bytes, *, today: date | None = None) -> CccdCard:
    """Parse and validate a CCCD QR payload; raises InvalidQrPayload naming every problem."""
    today = today or date.today()  # noqa: DTZ011 - a calendar date; callers may inject
    if isinstance(payload, bytes):
        try:
            payload = payload.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InvalidQrPayload(
                [f"payload is not UTF-8 ({exc.reason} at byte {exc.start})"]
            ) from exc
    if len(payload) > MAX_PAYLOAD:
        raise InvalidQrPayload(
            [f"payload is {len(payload):,} characters; a card's is under {MAX_PAYLOAD}"]
        )
    text = payload.strip()
    if not text:
        raise InvalidQrPayload(["payload is empty"])
    fields = [f.strip() for f in text.split("|")]
    if not 6 <= len(fields) <= 9:
        raise InvalidQrPayload([f"expected 7 fields separated by '|', got {len(fields)}"])
    errors: list[str] = []
    numbers = {f for f in fields if _ID.fullmatch(f)}
    if len(numbers) > 1:  # whose card would it be?
        errors.append(f"{len(numbers)} different ID numbers in one payload; a card holds one")
    left: list[int] = []
    if len(fields) != 7 or (not _ID.fullmatch(fields[0]) and numbers):
        fields, left = _by_content(fields)
    if left:  # named by position only: the field may be someone's name
        where = ", ".join(str(i + 1) for i in left)
        errors.append(
            f"field {where} is none of a card's (ID, old ID, name, dates, gender, address)"
        )
    number, old, name, dob_s, gender, address, issued_s = fields
    if old and not _OLD.fullmatch(old):
        errors.append(f"old ID must be 9 digits or empty, got {quote(old)}")
    if not name:
        errors.append("name is empty")
    elif any(ch.isdigit() for ch in name):
        errors.append(f"name contains digits: {quote(name)}")
    dob = _date(dob_s, "birth date", errors, today)
    issued = _date(issued_s, "issue date", errors, today)
    if gender not in GENDERS:
        errors.append(f"gender must be Nam or Nữ, got {quote(gender)}")
    if not address:
        errors.append("address is empty")
    if dob and issued and issued < dob:
        errors.append("issue date is before the birth date")
    id_check = check_id(number, dob=dob, gender=gender if gender in GENDERS else None, today=today)
    errors.extend(f"ID {e}" if not e.startswith("birth year") else e for e in id_check.errors)
    if errors or dob is None or issued is None:
        raise InvalidQrPayload(errors)
    return CccdCard(number, old or None, " ".join(name.split()), dob, gender, address, issued)
