"""F0 cases into ClickHouse (``f0_cases``) for the dashboard: active cases over time, and
the new cases per ward behind the epidemic levels.

The tracer keeps each report's state in Redis and announces every change on
``report-status``; the ``store_cases`` agent writes the report as the tracer left it (the
person by pseudonym, the ward they live in, the sample and report times, the status),
versioned by the f0-reports offset the state reflects, so replays converge. Reports traced
before this agent existed are copied once when it starts (:meth:`CaseRecorder.backfill`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Protocol

import faust
import orjson
from pydantic import ValidationError

from infra import topics
from infra.analytics import ClickHouseCaseSink
from infra.clients import Clients
from infra.settings import Settings
from streams.guard import Guard
from streams.scans import RawRecord
from tracing.events import DeadLetter, ReportStatusChanged, parse_record, validation_errors
from tracing.reports import EPOCH, ReportState

log = logging.getLogger(__name__)


class ReportsPort(Protocol):
    async def get(self, report_id: str) -> ReportState | None: ...
    async def states(self, since: datetime) -> list[ReportState]: ...


class PeoplePort(Protocol):
    async def get_many(self, ids: Sequence[str]) -> list[dict[str, str] | None]: ...


class CaseSinkPort(Protocol):
    async def insert(self, rows: Sequence[Sequence[object]]) -> None: ...


def case_row(state: ReportState, home: dict[str, str] | None, now: datetime) -> list[object]:
    """The ``f0_cases`` row of a report (columns in ``infra.analytics.CASE_COLUMNS``):
    pseudonymous, the ID number stays in Redis."""
    return [
        state.report_id,
        state.person_key,
        (home or {}).get("district", ""),
        (home or {}).get("ward", ""),
        datetime.fromisoformat(str(state.body["sample_time"])),
        datetime.fromisoformat(str(state.body["reported_at"])),
        state.status,
        state.offset if state.offset is not None else 0,
        now,
    ]


class CaseRecorder:
    """``report-status`` records → ``f0_cases`` rows; every record written or dead-lettered."""

    def __init__(
        self,
        *,
        reports: ReportsPort,
        people: PeoplePort,
        sink: CaseSinkPort,
        guard: Guard,
        topic: str,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.reports = reports
        self.people = people
        self.sink = sink
        self.guard = guard
        self.topic = topic
        self.clock = clock

    def _letter(self, rec: RawRecord, reason: str) -> DeadLetter:
        return DeadLetter(
            topic=self.topic,
            reason=reason,
            payload=(rec.value or b"")[:10_000].decode("utf-8", "replace"),
            partition=rec.partition,
            offset=rec.offset,
        )

    async def backfill(self) -> int:
        """Copy every report the tracer still holds (idempotent: same rows, same versions)."""
        found = await self.guard.retry("reading reports", lambda: self.reports.states(EPOCH))
        states = [state for state in found if state.status != "tracing"]
        await self._write([(s, None) for s in states])
        return len(states)

    async def handle(self, records: Sequence[RawRecord]) -> None:
        wanted: dict[str, RawRecord] = {}
        dead = []
        for rec in records:
            # The record's one model, as the topic's other reader (streams.alerts) checks
            # it: both refuse the same records, each with a dead letter.
            try:
                report_id = parse_record(ReportStatusChanged, rec.value).report_id
            except ValidationError as exc:
                dead.append(self._letter(rec, "; ".join(validation_errors(exc))[:1000]))
                continue
            wanted[report_id] = rec  # the latest record of a report stands for it
        await self.guard.bury(dead)
        states = []
        for report_id, rec in wanted.items():

            async def read(r: str = report_id) -> ReportState | None:
                return await self.reports.get(r)

            state = await self.guard.retry("reading reports", read)
            if state is None:  # forgotten past the retention since: nothing to count
                log.info("report %s is no longer held; not recorded as a case", report_id)
            elif state.status != "tracing":
                states.append((state, rec))
        await self._write(states)

    async def _write(self, states: Sequence[tuple[ReportState, RawRecord | None]]) -> None:
        if not states:
            return
        ids = [s.person_id for s, _ in states]
        homes = await self.guard.retry("reading residents", lambda: self.people.get_many(ids))
        now = self.clock()
        rows = [
            (rec, case_row(state, home, now))
            for (state, rec), home in zip(states, homes, strict=True)
        ]

        def letter(item: tuple[RawRecord | None, list[object]], reason: str) -> DeadLetter:
            rec = item[0] or RawRecord(orjson.dumps({"report_id": item[1][0]}))
            return self._letter(rec, reason)

        await self.guard.write_each(
            "ClickHouse cases insert",
            rows,
            lambda items: self.sink.insert([row for _, row in items]),
            letter,
        )


def add_case_agent(app: faust.App, settings: Settings, clients: Clients, guard: Guard) -> None:
    """The ``store_cases`` agent on ``report-status`` (the store's owner runs it)."""
    topic = app.topic(
        settings.topic(topics.REPORT_STATUS), value_serializer="raw", key_serializer="raw"
    )
    recorder = CaseRecorder(
        reports=clients.tracing,
        people=clients.residents,
        sink=ClickHouseCaseSink(clients.clickhouse),
        guard=guard,
        topic=topic.get_topic_name(),
    )

    @app.agent(topic, name="store_cases")
    async def store_cases(stream: faust.StreamT) -> None:
        copied = await recorder.backfill()
        if copied:
            log.info("f0_cases: %d report(s) copied from the tracer's state", copied)
        batches = stream.take_events(  # type: ignore[attr-defined]  # see record_scans
            500, within=settings.batch_seconds
        )
        async for events in batches:
            await recorder.handle(
                [RawRecord(e.value, e.message.partition, e.message.offset) for e in events]
            )
