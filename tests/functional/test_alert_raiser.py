"""The alert agents' work on fakes: flags become district alerts, bad records are
dead-lettered with the reason, and a report's venue alerts follow its state (raised,
updated, withdrawn) without naming anyone."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta

import orjson

from infra.faults import AgentHealth
from streams.alerts import AlertRaiser
from streams.guard import Guard
from streams.scans import RawRecord
from tests.fakes import MemoryDeadLetters
from tracing.alerts import AlertDraft
from tracing.events import ExposureFlagged, ReportStatusChanged
from tracing.exposure import Exposure
from tracing.reports import ReportState
from tracing.visits import Visit

T = datetime(2021, 11, 10, 10, tzinfo=UTC)


class MemoryAlerts:
    """Records what the raiser writes; remembers each report's live venue alerts."""

    def __init__(self) -> None:
        self.written: list[AlertDraft] = []
        self.venues: dict[str, dict[str, str]] = {}

    async def apply(self, drafts: Sequence[AlertDraft], report_id: str = "") -> list[str]:
        self.written.extend(drafts)
        for d in drafts:
            if report_id and d.withdrawn:
                self.venues.get(report_id, {}).pop(d.alert_id, None)
            elif report_id:
                self.venues.setdefault(report_id, {})[d.alert_id] = d.scope
        return [d.alert_id for d in drafts]

    async def venue_alerts_of(self, report_id: str) -> dict[str, str]:
        return dict(self.venues.get(report_id, {}))


class Reports:
    def __init__(self) -> None:
        self.states: dict[str, ReportState] = {}
        self.applied: dict[str, list[Exposure]] = {}
        self.visits: dict[str, list[Visit]] = {}

    async def get(self, report_id: str) -> ReportState | None:
        return self.states.get(report_id)

    async def exposures(self, report_id: str) -> list[Exposure]:
        return self.applied.get(report_id, [])

    async def f0_visits(self, report_id: str) -> list[Visit]:
        return self.visits.get(report_id, [])


class Places:
    async def lookup(self, ids: Iterable[str]) -> dict[str, dict[str, str]]:
        owned = {"shop": {"owner": "Hoa", "name": "Cửa hàng Hoa"}}
        return {i: owned.get(i, {"district": "Ba Đình"}) for i in ids}


def world() -> tuple[AlertRaiser, MemoryAlerts, Reports, MemoryDeadLetters]:
    alerts, reports, dead = MemoryAlerts(), Reports(), MemoryDeadLetters()
    raiser = AlertRaiser(
        alerts=alerts,
        reports=reports,
        places=Places(),
        guard=Guard(dead, AgentHealth(), retry_delay=0.001),
        exposures_topic="exposures",
        status_topic="report-status",
    )
    return raiser, alerts, reports, dead


def flag(person: str, **changes: object) -> bytes:
    fields: dict[str, object] = {
        "exposure_id": f"{person:0>24}",
        "report_id": "r1",
        "person_key": person,
        "tier": "F1",
        "via_key": "A",
        "reason": "co-location",
        "checkpoint_id": "shop",
        "district": "Ba Đình",
        "overlap_start": T,
        "overlap_end": T + timedelta(minutes=20),
        "overlap_minutes": 20.0,
        "rule_version": "moh-2021",
        "flagged_at": T + timedelta(hours=8),
        "version": 1,
    }
    return ExposureFlagged(**{**fields, **changes}).model_dump_json().encode()  # type: ignore[arg-type]


def records(*values: bytes) -> list[RawRecord]:
    return [RawRecord(v, 0, i) for i, v in enumerate(values)]


def test_flags_become_district_alerts_and_bad_records_are_dead_lettered() -> None:
    raiser, alerts, _, dead = world()
    batch = records(
        flag("C"),
        flag("Z", district=""),  # not in the registry: no official to tell
        b"{not json",
        orjson.dumps({"exposure_id": "x"}),
        flag("C", version=2, withdrawn=True, district=""),
    )
    assert asyncio.run(raiser.on_exposures(batch)) == 2
    assert [(d.alert_id[-1], d.scope, d.withdrawn) for d in alerts.written] == [
        ("C", "d:Ba Đình", False),
        ("C", "", True),  # a withdrawal goes where the alert lives
    ]
    assert [(x.offset, x.topic) for x in dead.letters] == [(2, "exposures"), (3, "exposures")]
    assert "report_id" in dead.letters[1].reason


def status(report_id: str, what: str) -> bytes:
    return (
        ReportStatusChanged(
            report_id=report_id,
            status=what,  # type: ignore[arg-type]
            counts={},
            rule_version="moh-2021",
            changed_at=T,
        )
        .model_dump_json()
        .encode()
    )


def state(status_: str) -> ReportState:
    return ReportState(
        "r1",
        "001090000001",
        "A",
        {"reported_at": (T + timedelta(hours=8)).isoformat()},
        status=status_,  # type: ignore[arg-type]
        window_start=(T - timedelta(days=2)).isoformat(),
        window_end=(T + timedelta(hours=8)).isoformat(),
    )


def test_venue_alerts_follow_the_report() -> None:
    raiser, alerts, reports, dead = world()
    reports.visits["r1"] = [
        Visit("a1", "A", "shop", T, T + timedelta(hours=1), ""),
        Visit("a2", "A", "gate", T, T + timedelta(hours=1), ""),  # nobody owns it
    ]
    c = Exposure("r1", "C", "F1", "A", "co-location", "shop", T, T + timedelta(minutes=20))
    reports.applied["r1"] = [c]
    reports.states["r1"] = state("held")
    asyncio.run(raiser.on_statuses(records(status("r1", "held"))))
    assert alerts.written == []  # held: nothing changes for anyone yet

    reports.states["r1"] = state("done")
    asyncio.run(raiser.on_statuses(records(status("r1", "done"), status("r1", "done"))))
    (venue,) = alerts.written  # read once per batch
    assert venue.scope == "o:Hoa" and venue.body["visitors_flagged"] == 1
    assert "C" not in orjson.dumps(venue.body).decode().split('"')

    reports.states["r1"] = state("withdrawn")
    asyncio.run(raiser.on_statuses(records(status("r1", "withdrawn"), b"[]")))
    assert [(d.alert_id, d.withdrawn) for d in alerts.written[1:]] == [(venue.alert_id, True)]
    assert [x.offset for x in dead.letters] == [1]


class FlakyAlerts(MemoryAlerts):
    """Redis away for the first ``fail`` writes (after writing the first half: a write
    that dies mid-batch), then back."""

    def __init__(self, fail: int) -> None:
        super().__init__()
        self.fail = fail

    async def apply(self, drafts: Sequence[AlertDraft], report_id: str = "") -> list[str]:
        if self.fail:
            self.fail -= 1
            await super().apply(drafts[: len(drafts) // 2], report_id)
            raise ConnectionError("Redis away")
        return await super().apply(drafts, report_id)


def test_a_store_failing_mid_batch_is_retried_and_nothing_is_lost() -> None:
    alerts, dead = FlakyAlerts(fail=2), MemoryDeadLetters()
    raiser = AlertRaiser(
        alerts=alerts,
        reports=Reports(),
        places=Places(),
        guard=Guard(dead, AgentHealth(), retry_delay=0.001),
        exposures_topic="exposures",
        status_topic="report-status",
    )
    batch = records(*(flag(p) for p in "CDEFGH"))
    asyncio.run(raiser.on_exposures(batch))
    # every flag reached the store (a half-written attempt is written again: the store's
    # apply is idempotent by alert ID, tests/integration/test_alert_store.py), none lost
    assert {d.alert_id[-1] for d in alerts.written} == set("CDEFGH")
    assert dead.letters == []
