"""Import row schemas: which columns each kind has, how a row is parsed and validated,
and the natural key that makes re-importing a file change nothing. Pure: no I/O."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Literal
from zoneinfo import ZoneInfo

import orjson

from registry.errors import quote
from registry.ids import GENDERS, check_id
from registry.residents import Resident

VN_TZ = ZoneInfo("Asia/Ho_Chi_Minh")
Outcome = Literal["matched", "mismatch", "unknown-id", "invalid", "duplicate"]
OUTCOMES: tuple[Outcome, ...] = ("matched", "mismatch", "unknown-id", "invalid", "duplicate")


class RowError(ValueError):
    """A row that cannot be used; the message names the column and the problem."""


# Plausible ranges: nobody alive was born before 1900, and nothing about COVID-19 (a test,
# a dose, a declaration) happened before December 2019.
EARLIEST_BIRTH = date(1900, 1, 1)
EARLIEST_EVENT = date(2019, 12, 1)


def _today() -> date:
    return datetime.now(VN_TZ).date()


def _in_range(value: date, column: str, earliest: date) -> date:
    if value < earliest:
        raise RowError(f"{column}: {value.isoformat()} is before {earliest.isoformat()}")
    if value > _today():
        raise RowError(f"{column}: {value.isoformat()} is in the future")
    return value


def parse_date(value: str, column: str, earliest: date = EARLIEST_EVENT) -> date:
    """A calendar date (YYYY-MM-DD, DD/MM/YYYY, DD-MM-YYYY or DDMMYYYY) inside the
    plausible range for its column."""
    text = value.strip()
    if len(text) == 10 and text[4] == "-":
        try:
            return _in_range(date.fromisoformat(text), column, earliest)  # common case, in C
        except ValueError as exc:
            if isinstance(exc, RowError):
                raise
    for fmt in ("%Y-%m-%d", "%d/%m/%Y", "%d-%m-%Y", "%d%m%Y"):
        try:
            day = datetime.strptime(text, fmt).date()  # noqa: DTZ007 - a calendar date
        except ValueError:
            continue
        return _in_range(day, column, earliest)
    raise RowError(f"{column}: not a date (YYYY-MM-DD or DD/MM/YYYY): {quote(value)}")


def parse_time(value: str, column: str) -> datetime:
    """An ISO 8601 timestamp (a date alone means noon); without a zone it is Hà Nội time
    (Asia/Ho_Chi_Minh). It must fall between December 2019 and a few minutes from now."""
    text = value.strip()
    try:
        ts = datetime.fromisoformat(text)
    except ValueError:
        try:
            ts = datetime.combine(parse_date(text, column), time(12, 0))
        except RowError as exc:
            raise RowError(f"{column}: not a timestamp: {quote(value)}") from exc
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=VN_TZ)
    if not EARLIEST_EVENT.year <= ts.year <= _today().year + 1:
        raise RowError(f"{column}: year {ts.year} is out of range")
    _in_range(ts.astimezone(VN_TZ).date(), column, EARLIEST_EVENT)
    return ts.astimezone(UTC)


def parse_bool(value: str, column: str) -> bool:
    text = value.strip().casefold()
    if text in ("1", "true", "yes", "y", "có", "co", "x"):
        return True
    if text in ("0", "false", "no", "n", "không", "khong", ""):
        return False
    raise RowError(f"{column}: expected yes/no, got {quote(value)}")


@dataclass(frozen=True)
class Kind:
    name: str
    required: tuple[str, ...]
    optional: tuple[str, ...]
    key: tuple[str, ...]  # natural key (with the person) for duplicate detection
    time_column: str  # the record's own time (freshness)
    parse: Callable[[dict[str, str]], dict[str, object]]
    # The facts that must agree for two records with the same key to be "the same record"
    # (free text such as a site name or a note may differ in spelling).
    content: tuple[str, ...] = ()

    @property
    def columns(self) -> tuple[str, ...]:
        return self.required + self.optional


def _common(row: dict[str, str]) -> dict[str, object]:
    return {
        "name": row.get("name", "").strip() or None,
        "dob": (
            parse_date(row["dob"], "dob", EARLIEST_BIRTH) if row.get("dob", "").strip() else None
        ),
    }


def _vaccination(row: dict[str, str]) -> dict[str, object]:
    try:
        dose = int(row["dose"])
    except ValueError as exc:
        raise RowError(f"dose: not a whole number: {quote(row['dose'])}") from exc
    if not 1 <= dose <= 5:
        raise RowError(f"dose: must be 1-5, got {dose}")
    if not row["vaccine"].strip():
        raise RowError("vaccine: empty")
    return {
        **_common(row),
        "dose": dose,
        "vaccine": row["vaccine"].strip(),
        "date": parse_date(row["date"], "date").isoformat(),
        "site": row.get("site", "").strip(),
    }


def _f0(row: dict[str, str]) -> dict[str, object]:
    onset = row.get("onset_date", "").strip()
    sampled = parse_time(row["sample_time"], "sample_time")
    reported = row.get("reported_at", "").strip()
    # Without the lab's report time: a day after the sample (the result's usual delay),
    # or the import if sooner; written into the record, so tracing it again (a replay)
    # gives the same window.
    reported_at = (
        parse_time(reported, "reported_at")
        if reported
        else min(sampled + timedelta(days=1), datetime.now(UTC))
    )
    if reported_at < sampled:
        raise RowError("reported_at: must not be before sample_time")
    return {
        **_common(row),
        "sample_time": sampled.isoformat(),
        "symptomatic": parse_bool(row.get("symptomatic", ""), "symptomatic"),
        "onset_date": parse_date(onset, "onset_date").isoformat() if onset else None,
        "reported_at": reported_at.isoformat(),
    }


def _recovery(row: dict[str, str]) -> dict[str, object]:
    return {
        **_common(row),
        "recovered_date": parse_date(row["recovered_date"], "recovered_date").isoformat(),
    }


def _health(row: dict[str, str]) -> dict[str, object]:
    return {
        **_common(row),
        "declared_at": parse_time(row["declared_at"], "declared_at").isoformat(),
        "symptoms": parse_bool(row.get("symptoms", ""), "symptoms"),
        "contact_with_f0": parse_bool(row.get("contact_with_f0", ""), "contact_with_f0"),
        "note": row.get("note", "").strip(),
    }


def _travel(row: dict[str, str]) -> dict[str, object]:
    return {
        **_common(row),
        "declared_at": parse_time(row["declared_at"], "declared_at").isoformat(),
        "from_province": row["from_province"].strip(),
        "to_district": row.get("to_district", "").strip(),
        "arrival_date": parse_date(row["arrival_date"], "arrival_date").isoformat(),
        "transport": row.get("transport", "").strip(),
    }


def _test_result(row: dict[str, str]) -> dict[str, object]:
    result = row["result"].strip().casefold()
    if result not in ("positive", "negative"):
        raise RowError(f"result: must be positive or negative, got {quote(row['result'])}")
    test_type = row["test_type"].strip()
    if test_type.casefold() not in ("pcr", "rapid"):
        raise RowError(f"test_type: must be PCR or rapid, got {quote(test_type)}")
    return {
        **_common(row),
        "result": result,
        "test_type": "PCR" if test_type.casefold() == "pcr" else "rapid",
        "sampled_at": parse_time(row["sampled_at"], "sampled_at").isoformat(),
    }


def _staff(row: dict[str, str]) -> dict[str, object]:
    organisation = row["organisation"].strip()
    if not organisation:
        raise RowError("organisation: empty")
    if len(organisation) > 200:
        raise RowError("organisation: longer than 200 characters")
    return {**_common(row), "organisation": organisation, "unit": row.get("unit", "").strip()}


KINDS: dict[str, Kind] = {
    k.name: k
    for k in (
        Kind(
            "vaccinations",
            ("person_id", "name", "dob", "dose", "vaccine", "date"),
            ("site",),
            ("dose",),
            "date",
            _vaccination,
            ("dose", "vaccine", "date"),
        ),
        Kind(
            "f0-positives",
            ("person_id", "name", "dob", "sample_time"),
            ("symptomatic", "onset_date", "reported_at"),
            ("sample_time",),
            "sample_time",
            _f0,
            ("sample_time", "symptomatic", "onset_date"),
        ),
        Kind(
            "recoveries",
            ("person_id", "name", "dob", "recovered_date"),
            (),
            ("recovered_date",),
            "recovered_date",
            _recovery,
            ("recovered_date",),
        ),
        Kind(
            "health-declarations",
            ("person_id", "name", "dob", "declared_at"),
            ("symptoms", "contact_with_f0", "note"),
            ("declared_at",),
            "declared_at",
            _health,
            ("declared_at", "symptoms", "contact_with_f0"),
        ),
        Kind(
            "travel-declarations",
            ("person_id", "name", "dob", "declared_at", "from_province", "arrival_date"),
            ("to_district", "transport"),
            ("declared_at",),
            "declared_at",
            _travel,
            ("declared_at", "from_province", "arrival_date", "to_district"),
        ),
        Kind(
            "test-results",
            ("person_id", "name", "dob", "result", "test_type", "sampled_at"),
            (),
            ("sampled_at", "test_type"),
            "sampled_at",
            _test_result,
            ("result", "test_type", "sampled_at"),
        ),
        # An organisation's staff list (the access issue): who works where, so its owner
        # sees their card colours and exposure tiers.
        Kind(
            "staff",
            ("person_id", "name", "dob", "organisation"),
            ("unit",),
            ("organisation",),
            "",
            _staff,
            ("organisation", "unit"),
        ),
    )
}


def content_of(kind: str, record: dict[str, object]) -> str:
    """The record's facts as they are compared with another record of the same key:
    compact JSON of the kind's content fields (no name, no birth date)."""
    spec = KINDS.get(kind)
    fields = spec.content if spec is not None else tuple(sorted(record))
    return orjson.dumps({f: record.get(f) for f in fields}, default=str).decode()


def record_key(kind: Kind, person_id: str, record: dict[str, object]) -> str:
    """The natural key of a record (kind, person, the kind's key fields), hashed: two
    records with the same key are the same fact, or conflict."""
    key = "|".join([kind.name, person_id, *(str(record[k]) for k in kind.key)])
    return hashlib.blake2b(key.encode(), digest_size=12).hexdigest()


@dataclass
class ParsedRow:
    row: int
    person_id: str | None
    record: dict[str, object] = field(default_factory=dict)
    error: str | None = None
    fingerprint: str = ""  # the natural key: kind, person and the kind's key fields
    content: str = ""  # the facts compared when another record has the same key
    id_birth_year: int | None = None  # what the ID number says, checked against dob later


def header_problems(kind: Kind, header: list[str]) -> tuple[list[str], list[str]]:
    """(missing required columns, unknown extra columns) of a file's header."""
    present = {h.strip() for h in header}
    missing = [c for c in kind.required if c not in present]
    extra = sorted(present - set(kind.columns))
    return missing, extra


def parse_row(kind: Kind, number: int, row: dict[str, str | None]) -> ParsedRow:
    """Validate one row: its ID's structure, every typed column; fingerprint its key."""
    clean = {k.strip(): (v or "") for k, v in row.items() if k}
    person_id = clean.get("person_id", "").strip() or None
    if person_id is None:
        return ParsedRow(number, None, error="person_id: empty")
    missing = [c for c in kind.required if not clean.get(c, "").strip()]
    if missing:
        return ParsedRow(number, person_id, error="empty required column(s): " + ", ".join(missing))
    problems = []
    record: dict[str, object] = {}
    try:
        record = kind.parse(clean)
    except (RowError, KeyError) as exc:
        problems.append(str(exc))
    # Only the ID's own structure makes a row invalid; a birth date that contradicts the
    # ID is a well-formed disagreement, decided by a steward (a mismatch), not dropped.
    check = check_id(person_id)
    if not check.valid:
        problems.insert(0, "person_id: " + "; ".join(check.errors))
    if problems:
        return ParsedRow(number, person_id, error="; ".join(problems))
    return ParsedRow(
        number,
        person_id,
        record,
        fingerprint=record_key(kind, person_id, record),
        content=content_of(kind.name, record),
        id_birth_year=check.birth_year,
    )


RESIDENT_COLUMNS = ("id", "name", "dob", "gender", "address", "district", "ward", "household_id")


def parse_resident(row: dict[str, str | None], wards: dict[str, set[str]]) -> Resident:
    """Validate one registry export row (raises RowError naming every problem)."""
    clean = {k.strip(): (v or "").strip() for k, v in row.items() if k}
    errors = [f"{c}: empty" for c in RESIDENT_COLUMNS if not clean.get(c)]
    if errors:
        raise RowError("; ".join(errors))
    dob = None
    try:
        dob = parse_date(clean["dob"], "dob", EARLIEST_BIRTH)
    except RowError as exc:
        errors.append(str(exc))
    gender = clean["gender"]
    if gender not in GENDERS:
        errors.append(f"gender: must be Nam or Nữ, got {quote(gender)}")
    check = check_id(clean["id"], dob=dob, gender=gender if gender in GENDERS else None)
    errors.extend(f"id: {e}" for e in check.errors)
    district, ward = clean["district"], clean["ward"]
    if district not in wards:
        errors.append(f"district: not a Hà Nội district: {quote(district)}")
    elif ward not in wards[district]:
        errors.append(f"ward: {quote(ward)} is not a ward of {district}")
    if errors or dob is None:
        raise RowError("; ".join(errors))
    return Resident(
        clean["id"],
        " ".join(clean["name"].split()),
        dob,
        gender,
        clean["address"],
        district,
        ward,
        clean["household_id"],
    )
