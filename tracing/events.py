"""One pydantic model per message: shared by producers, agents and the API.

Names say what happened (STYLE.md §3). Times are timezone-aware; UTC inside.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from typing import Annotated, Literal, TypeVar
from zoneinfo import ZoneInfo

import orjson
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from registry.errors import quote
from registry.ids import check_id

# A device clock may run a little ahead of ours; more than this is a bad timestamp.
MAX_CLOCK_SKEW = timedelta(minutes=5)
# A scan older than the tracing retention can no longer matter (and is refused).
MAX_SCAN_AGE = timedelta(days=21)
VN_TZ = ZoneInfo("Asia/Ho_Chi_Minh")


def _valid_person_id(value: str) -> str:
    result = check_id(value)
    if not result.valid:
        raise ValueError("invalid personal ID: " + "; ".join(result.errors))
    return value


PersonId = Annotated[str, AfterValidator(_valid_person_id)]


def _iso_with_zone(value: object) -> datetime:
    """Strict ISO 8601 with a zone: no epoch numbers, no dates alone, no naive times."""
    if not isinstance(value, str):
        raise ValueError(
            f"must be an ISO 8601 string with a timezone (e.g. 2021-09-01T10:00:00+07:00), "
            f"got {type(value).__name__}"
        )
    if len(value) > 40:
        raise ValueError(f"not an ISO 8601 timestamp: {quote(value)}")
    try:
        ts = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"not an ISO 8601 timestamp: {quote(value)}") from None
    if ts.tzinfo is None:
        raise ValueError("timestamp must carry a timezone (e.g. +07:00 or Z)")
    if not 2000 <= ts.year <= 2200:  # far outside any plausible range; keeps arithmetic safe
        raise ValueError(f"year {ts.year} is out of range")
    return ts.astimezone(UTC)


Timestamp = Annotated[datetime, BeforeValidator(_iso_with_zone)]


def _aware(value: object) -> object:
    """A time as a producer builds it (an aware datetime) or as a record carries it (a
    strict ISO 8601 string, see :func:`_iso_with_zone`), in the same range."""
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError("timestamp must carry a timezone (e.g. +07:00 or Z)")
        if not 2000 <= value.year <= 2200:
            raise ValueError(f"year {value.year} is out of range")
        return value
    return _iso_with_zone(value)


AwareTime = Annotated[datetime, BeforeValidator(_aware)]
# What ClickHouse's UInt64 and orjson both hold, and no less than zero.
Version = Annotated[int, Field(ge=0, lt=2**63)]
# IDs, names and versions inside records: never a field of thousands of characters.
SHORT_TEXT = 256
ShortText = Annotated[str, Field(max_length=SHORT_TEXT)]


class ScanRecorded(BaseModel):
    """A resident was seen at a checkpoint (gate camera read their card, or they scanned)."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    # No '|' (the index's member separator), no spaces or control characters.
    scan_id: str = Field(min_length=1, max_length=128, pattern=r"^[^|\s\x00-\x1f]+$")
    person_id: PersonId
    checkpoint_id: str = Field(min_length=1, max_length=128, pattern=r"^[^|\s\x00-\x1f]+$")
    ts: Timestamp
    source: Literal["gate", "self"]
    t_out: Timestamp | None = None  # a check-out, when the checkpoint records one

    @model_validator(mode="after")
    def _pseudonymous(self) -> ScanRecorded:
        # The scan and checkpoint IDs are kept as they are in analytics (ClickHouse), where
        # people appear by pseudonym only: an ID that spells out the person's is refused.
        for name in ("scan_id", "checkpoint_id"):
            if self.person_id in getattr(self, name):
                raise ValueError(f"{name}: must not hold the person's ID number")
        return self

    def check_time(self, now: datetime, max_age: timedelta | None = MAX_SCAN_AGE) -> None:
        """Refuse scans stamped in the future (beyond a small device clock skew) or older
        than the tracing retention, and check-outs before check-ins (or over a day later)."""
        if self.ts > now + MAX_CLOCK_SKEW:
            raise ValueError(f"ts: {self.ts.isoformat()} is in the future")
        if max_age is not None and self.ts < now - max_age:
            raise ValueError(
                f"ts: {self.ts.isoformat()} is older than the tracing retention "
                f"({max_age.days} days)"
            )
        if self.t_out is not None and not self.ts <= self.t_out <= self.ts + timedelta(days=1):
            raise ValueError("t_out: must be after ts and within a day of it")


M = TypeVar("M", bound=BaseModel)


def parse_record(model: type[M], raw: bytes | None) -> M:
    """A Kafka record into its model, parsed as strict JSON first (orjson: no NaN, no
    Infinity, no lone surrogates, which pydantic's own JSON parser lets through), so every
    reader of a topic refuses the same records. Invalid JSON is a ValidationError too."""
    try:
        body = orjson.loads(raw or b"")
    except orjson.JSONDecodeError as exc:
        raise ValidationError.from_exception_data(
            model.__name__,
            [{"type": "json_invalid", "loc": (), "input": "", "ctx": {"error": str(exc)}}],
        ) from None
    return model.model_validate(body)


def validation_errors(exc: ValidationError) -> list[str]:
    """One ``field: problem`` line per error of a model's validation."""
    return [f"{'.'.join(str(x) for x in e['loc']) or 'record'}: {e['msg']}" for e in exc.errors()]


def validate_scan(
    item: object, now: datetime, max_age: timedelta | None = MAX_SCAN_AGE
) -> tuple[ScanRecorded | None, list[str]]:
    """A scan from untrusted JSON (a device's request, a Kafka record), or why not: the
    one validation the API and the agent share."""
    if not isinstance(item, dict):
        return None, [f"expected a JSON object, got {type(item).__name__}"]
    try:
        scan = ScanRecorded.model_validate(item)
        scan.check_time(now, max_age)
    except ValidationError as exc:
        return None, validation_errors(exc)
    except ValueError as exc:
        return None, [str(exc)]
    return scan, []


def _onset(value: object) -> object:
    """An onset is a day (``2021-11-10``, taken at midnight in Việt Nam) or a timestamp."""
    if isinstance(value, str) and len(value) == 10:
        try:
            day = date.fromisoformat(value)
        except ValueError:
            raise ValueError(f"not an ISO 8601 date: {quote(value)}") from None
        return datetime.combine(day, time(0, 0), tzinfo=VN_TZ).isoformat()
    return value


REPORT_ID = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$"


class F0Reported(BaseModel):
    """A positive case (F0) was confirmed."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    report_id: str = Field(pattern=REPORT_ID)
    person_id: PersonId
    sample_time: Timestamp
    symptomatic: bool = False
    onset_date: Annotated[Timestamp | None, BeforeValidator(_onset)] = None
    reported_at: Timestamp

    @model_validator(mode="after")
    def _in_order(self) -> F0Reported:
        if self.sample_time > self.reported_at:
            raise ValueError("sample_time: must not be after reported_at")
        if self.onset_date is not None and self.onset_date > self.reported_at:
            raise ValueError("onset_date: must not be after reported_at")
        return self

    def check_time(self, now: datetime) -> None:
        if self.reported_at > now + MAX_CLOCK_SKEW:
            raise ValueError(f"reported_at: {self.reported_at.isoformat()} is in the future")


class ExposureFlagged(BaseModel):
    """A resident was flagged F1 or F2 by a report (or the flag was withdrawn), with the
    evidence. Pseudonymous: people by keyed hash; the API maps them to IDs for officials.
    Keyed by ``person_key`` on ``exposures``; ``version`` orders the flags of one
    (report, person) pair (the offset of the f0-reports record that decided it)."""

    model_config = ConfigDict(frozen=True)

    exposure_id: ShortText
    report_id: ShortText
    person_key: ShortText
    tier: Literal["F1", "F2"]
    via_key: ShortText
    reason: Literal["co-location", "household"]
    checkpoint_id: ShortText | None
    district: ShortText = ""
    # Bounded like every other record's (a hostile record's times, numbers and versions
    # must be refused here, by every reader alike, not by one store's insert).
    overlap_start: AwareTime
    overlap_end: AwareTime
    overlap_minutes: float = Field(ge=0, allow_inf_nan=False)
    rule_version: ShortText
    flagged_at: AwareTime  # the report's reported_at: event time, the same on a replay
    withdrawn: bool = False
    version: Version = 0


class ReportStatusChanged(BaseModel):
    """An F0 report's tracing state changed (``report-status``): the preview of a held
    report, the counts of a finished one."""

    report_id: str = Field(pattern=REPORT_ID)
    status: Literal["tracing", "done", "held", "withdrawn"]
    counts: dict[str, Version]
    preview: dict[str, dict[str, Version]] | None = None
    rule_version: ShortText
    changed_at: AwareTime


DEAD_PAYLOAD_LIMIT = 10_000


def payload_text(value: object, raw: bytes | None = None) -> str:
    """A dead letter's payload: the value as JSON, or (when it cannot be written back, e.g.
    nested deeper than orjson writes) the raw record's bytes; never more than the limit."""
    if isinstance(value, bytes):
        return value[:DEAD_PAYLOAD_LIMIT].decode("utf-8", "replace")
    try:
        return orjson.dumps(value, default=str)[:DEAD_PAYLOAD_LIMIT].decode("utf-8", "replace")
    except (TypeError, ValueError, RecursionError):
        return (raw or b"")[:DEAD_PAYLOAD_LIMIT].decode("utf-8", "replace")


class DeadLetter(BaseModel):
    """A record we could not process, kept with the reason so nothing is silently lost.
    Bounded, so a dead letter itself is never too large for its topic."""

    topic: str
    reason: str
    payload: str
    partition: int | None = None
    offset: int | None = None
    failed_at: datetime = Field(default_factory=lambda: datetime.now(UTC))

    @field_validator("reason", "payload")
    @classmethod
    def _bounded(cls, value: str) -> str:
        return value[:DEAD_PAYLOAD_LIMIT]


class HealthRecordImported(BaseModel):
    """A record from a source (vaccination centre, lab, hospital, declaration) matched to a
    resident; the status agent applies it and recomputes the card colour."""

    model_config = ConfigDict(frozen=True)

    # The record's natural key (kind, person, key fields), hashed: hexadecimal, which the
    # import ledger buckets by (registry.imports.record_key).
    record_id: str = Field(pattern=r"^[0-9a-f]{4,64}$")
    kind: ShortText
    person_id: PersonId
    import_id: ShortText
    record: dict[str, object]
    supersedes: bool = False  # accepted by a steward over a conflicting applied record
