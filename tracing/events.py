"""One pydantic model per message: shared by producers, agents and the API.

Names say what happened (STYLE.md §3). Times are timezone-aware; UTC inside.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
)

from registry.ids import check_id

# A device clock may run a little ahead of ours; more than this is a bad timestamp.
MAX_CLOCK_SKEW = timedelta(minutes=5)


def _valid_person_id(value: str) -> str:
    result = check_id(value)
    if not result.valid:
        raise ValueError("invalid personal ID: " + "; ".join(result.errors))
    return value


PersonId = Annotated[str, AfterValidator(_valid_person_id)]


def _aware_utc(value: datetime) -> datetime:
    if value.tzinfo is None:
        raise ValueError("timestamp must carry a timezone (e.g. +07:00 or Z)")
    return value.astimezone(UTC)


class ScanRecorded(BaseModel):
    """A resident was seen at a checkpoint (gate camera read their card, or they scanned)."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    scan_id: str = Field(min_length=1, max_length=128)
    person_id: PersonId
    checkpoint_id: str = Field(min_length=1, max_length=128)
    ts: datetime
    source: Literal["gate", "self"]
    t_out: datetime | None = None  # a check-out, when the checkpoint records one

    @field_validator("ts", "t_out")
    @classmethod
    def _utc(cls, value: datetime | None) -> datetime | None:
        return None if value is None else _aware_utc(value)

    def check_not_future(self, now: datetime) -> None:
        """Reject scans stamped in the future (beyond a small device clock skew)."""
        if self.ts > now + MAX_CLOCK_SKEW:
            raise ValueError(f"ts {self.ts.isoformat()} is in the future")
        if self.t_out is not None and self.t_out < self.ts:
            raise ValueError("t_out is before ts")


def validation_errors(exc: ValidationError) -> list[str]:
    """One ``field: problem`` line per error of a model's validation."""
    return [f"{'.'.join(str(x) for x in e['loc']) or 'record'}: {e['msg']}" for e in exc.errors()]


def validate_scan(item: object, now: datetime) -> tuple[ScanRecorded | None, list[str]]:
    """A scan from untrusted JSON (a device's request, a Kafka record), or why not: the
    one validation the API and the agent share."""
    if not isinstance(item, dict):
        return None, [f"expected a JSON object, got {type(item).__name__}"]
    try:
        scan = ScanRecorded.model_validate(item)
        scan.check_not_future(now)
    except ValidationError as exc:
        return None, validation_errors(exc)
    except ValueError as exc:
        return None, [str(exc)]
    return scan, []


class F0Reported(BaseModel):
    """A positive case (F0) was confirmed."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    report_id: str = Field(min_length=1, max_length=128)
    person_id: PersonId
    sample_time: datetime
    symptomatic: bool = False
    onset_date: datetime | None = None
    reported_at: datetime
    withdrawn: bool = False

    @field_validator("sample_time", "reported_at", "onset_date")
    @classmethod
    def _utc(cls, value: datetime | None) -> datetime | None:
        return None if value is None else _aware_utc(value)


class ExposureFlagged(BaseModel):
    """A resident was flagged as F1/F2 by co-location with a case."""

    model_config = ConfigDict(frozen=True)

    exposure_id: str
    person_key: str
    level: Literal["F1", "F2"]
    source_key: str
    checkpoint_id: str
    overlap_start: datetime
    overlap_end: datetime
    flagged_at: datetime
    withdrawn: bool = False


class DeadLetter(BaseModel):
    """A record we could not process, kept with the reason so nothing is silently lost."""

    topic: str
    reason: str
    payload: str
    partition: int | None = None
    offset: int | None = None
    failed_at: datetime = Field(default_factory=lambda: datetime.now(UTC))


class HealthRecordImported(BaseModel):
    """A record from a source (vaccination centre, lab, hospital, declaration) matched to a
    resident; the status agent applies it and recomputes the card colour."""

    model_config = ConfigDict(frozen=True)

    record_id: str
    kind: str
    person_id: PersonId
    import_id: str
    record: dict[str, object]
