"""Raising alerts as tracing decides (the ``raise_alerts`` and ``raise_venue_alerts``
agents' work).

- ``exposures`` (ExposureFlagged, keyed by person): each flag becomes an alert for the
  health officials of the person's district, each withdrawal retracts it. Idempotent by
  the decision (:func:`tracing.alerts.exposure_alert`'s fingerprint), so a replayed batch
  adds nothing to the streams.
- ``report-status`` (keyed by report): when a report is done or withdrawn, the venue
  alerts of the owned checkpoints its F0 visited are brought in line with the report as
  the tracer last wrote it (state first, status event last): raised, updated with new
  counts, or withdrawn. Idempotent by content, so replaying any status event converges.

Every record ends written or dead-lettered with the reason before the batch returns.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Protocol

from pydantic import ValidationError

from streams.guard import Guard
from streams.scans import RawRecord
from tracing.alerts import AlertDraft, exposure_alert, venue_alerts, withdrawal
from tracing.events import (
    DeadLetter,
    ExposureFlagged,
    ReportStatusChanged,
    parse_record,
    payload_text,
    validation_errors,
)
from tracing.exposure import Exposure
from tracing.reports import ReportState
from tracing.visits import Visit

log = logging.getLogger(__name__)


class AlertSinkPort(Protocol):
    async def apply(self, drafts: Sequence[AlertDraft], report_id: str = "") -> list[str]: ...
    async def venue_alerts_of(self, report_id: str) -> dict[str, str]: ...


class ReportsPort(Protocol):
    async def get(self, report_id: str) -> ReportState | None: ...
    async def exposures(self, report_id: str) -> list[Exposure]: ...
    async def f0_visits(self, report_id: str) -> list[Visit]: ...


class PlacesPort(Protocol):
    async def lookup(self, ids: Iterable[str]) -> dict[str, dict[str, str]]: ...


class AlertRaiser:
    def __init__(
        self,
        *,
        alerts: AlertSinkPort,
        reports: ReportsPort,
        places: PlacesPort,
        guard: Guard,
        exposures_topic: str,
        status_topic: str,
    ) -> None:
        self.alerts = alerts
        self.reports = reports
        self.places = places
        self.guard = guard
        self.exposures_topic = exposures_topic
        self.status_topic = status_topic

    def _letter(self, topic: str, rec: RawRecord, reason: str) -> DeadLetter:
        return DeadLetter(
            topic=topic,
            reason=reason[:1000],
            payload=payload_text(rec.value or b""),
            partition=rec.partition,
            offset=rec.offset,
        )

    async def on_exposures(self, records: Sequence[RawRecord]) -> int:
        """Alerts for a batch of flags; returns how many changed an alert."""
        drafts: list[tuple[RawRecord, AlertDraft]] = []
        dead = []
        for rec in records:
            try:
                draft = exposure_alert(parse_record(ExposureFlagged, rec.value))
            except ValidationError as exc:
                reason = "; ".join(validation_errors(exc))
                dead.append(self._letter(self.exposures_topic, rec, reason))
                continue
            if draft is None:
                log.info("no alert for a flag without a district (person not in the registry)")
                continue
            drafts.append((rec, draft))
        await self.guard.bury(dead)
        changed: list[str] = []

        async def write(items: Sequence[tuple[RawRecord, AlertDraft]]) -> None:
            changed.extend(await self.alerts.apply([d for _, d in items]))

        await self.guard.write_each(
            "alerts write",
            drafts,
            write,
            lambda item, reason: self._letter(self.exposures_topic, item[0], reason),
        )
        return len(changed)

    async def on_statuses(self, records: Sequence[RawRecord]) -> None:
        """Venue alerts of the reports a batch of status changes finished or withdrew."""
        wanted: dict[str, RawRecord] = {}
        dead = []
        for rec in records:
            try:
                event = parse_record(ReportStatusChanged, rec.value)
            except ValidationError as exc:
                reason = "; ".join(validation_errors(exc))
                dead.append(self._letter(self.status_topic, rec, reason))
                continue
            if event.status in ("done", "withdrawn"):
                wanted[event.report_id] = rec  # the report's state is read once per batch
        await self.guard.bury(dead)
        for report_id, rec in wanted.items():
            try:
                await self.guard.retry(
                    "venue alerts",
                    lambda r=report_id: self.venues(r),  # type: ignore[misc]
                )
            except Exception as exc:  # refused for good: kept with the reason
                reason = f"venue alerts of report {report_id}: {type(exc).__name__}: {exc}"
                await self.guard.bury([self._letter(self.status_topic, rec, reason)])

    async def venues(self, report_id: str) -> list[str]:
        """Bring one report's venue alerts in line with its current state."""
        state = await self.reports.get(report_id)
        if state is None or state.status not in ("done", "withdrawn"):
            return []  # forgotten (its alerts expire too), or not settled yet
        flagged_at = datetime.fromisoformat(str(state.body["reported_at"]))
        drafts: list[AlertDraft] = []
        if state.status == "done" and state.window_start and state.window_end:
            f0_visits = await self.reports.f0_visits(report_id)
            places = await self.places.lookup(sorted({v.checkpoint_id for v in f0_visits}))
            drafts = venue_alerts(
                report_id,
                state.person_key,
                f0_visits,
                await self.reports.exposures(report_id),
                places,
                (
                    datetime.fromisoformat(state.window_start),
                    datetime.fromisoformat(state.window_end),
                ),
                flagged_at,
            )
        keep = {d.alert_id for d in drafts}
        current = await self.alerts.venue_alerts_of(report_id)
        gone = [
            withdrawal(alert_id, "venue", scope, flagged_at)
            for alert_id, scope in sorted(current.items())
            if alert_id not in keep
        ]
        return await self.alerts.apply([*gone, *drafts], report_id=report_id)
