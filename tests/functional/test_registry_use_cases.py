"""The registry's use cases (imports, residents import, review, seeding, quality) over
in-memory fakes of their ports."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from infra.tables import table_from_bytes
from registry.cards import load_rulebook
from registry.importer import Importer, decide_review
from registry.imports import content_of
from registry.pseudonym import Pseudonymizer
from registry.quality import quality_report
from registry.reports import ImportFailed
from registry.residents_import import load_residents
from registry.seeding import seed_city
from registry.synthetic import SeedPlan
from tests.fakes import (
    MemoryAnalytics,
    MemoryCheckpoints,
    MemoryLedger,
    MemoryRecords,
    MemoryRegistry,
)
from tests.samples import RESIDENTS, VACCINATIONS

NOW = datetime(2021, 11, 1, 9, 0, tzinfo=UTC)
PSEUDO = Pseudonymizer(b"functional-test-secret")


async def _load(registry: MemoryRegistry, ledger: MemoryLedger, analytics: MemoryAnalytics):  # type: ignore[no-untyped-def]
    header, rows = table_from_bytes(RESIDENTS.encode(), "residents.csv")
    return await load_residents(
        header,
        rows,
        source="residents.csv",
        registry=registry,
        ledger=ledger,
        analytics=analytics,
        pseudonymize=PSEUDO,
        rules=load_rulebook(),
        clock=lambda: NOW,
    )


async def _registry() -> tuple[MemoryRegistry, MemoryLedger, MemoryAnalytics]:
    registry, ledger, analytics = MemoryRegistry(), MemoryLedger(), MemoryAnalytics()
    await _load(registry, ledger, analytics)
    return registry, ledger, analytics


async def test_residents_import_loads_good_rows_rejects_bad_and_keeps_no_identity() -> None:
    registry, ledger, analytics = MemoryRegistry(), MemoryLedger(), MemoryAnalytics()
    report = await _load(registry, ledger, analytics)
    assert report.outcomes == {"loaded": 3, "rejected": 2}
    assert report.ignored_columns == ["nickname"]
    lines = ledger.lines(report.import_id)
    assert [x["outcome"] for x in lines] == ["loaded"] * 3 + ["rejected"] * 2
    assert "not a ward of Hoàn Kiếm" in lines[3]["reason"]
    assert "unknown province code 099" in lines[4]["reason"]
    assert set(registry.rows) == {"001090123456", "001190654321", "001085111222"}
    assert registry.rows["001090123456"]["colour"] == "none"
    flat = repr(analytics.residents)
    assert len(analytics.residents) == 3
    assert "001090123456" not in flat and "Nguyễn" not in flat
    assert ledger.saved[report.import_id]["outcomes"] == report.outcomes

    registry.rows["001090123456"]["colour"] = "green"  # health and status are kept
    again = await _load(registry, ledger, analytics)
    assert again.outcomes == {"loaded": 3, "rejected": 2}
    assert registry.rows["001090123456"]["colour"] == "green"


async def test_residents_import_needs_its_columns() -> None:
    header, rows = table_from_bytes(b"id,name\n1,2\n", "x.csv")
    with pytest.raises(ImportFailed, match="dob"):
        await load_residents(
            header,
            rows,
            source="x",
            registry=MemoryRegistry(),
            ledger=MemoryLedger(),
            analytics=MemoryAnalytics(),
            pseudonymize=PSEUDO,
            rules=load_rulebook(),
        )


async def test_importer_gives_every_row_one_outcome_and_reimport_only_duplicates() -> None:
    registry, ledger, _ = await _registry()
    records = MemoryRecords()
    importer = Importer(registry, ledger, records, clock=lambda: NOW)
    header, rows = table_from_bytes(VACCINATIONS.encode(), "vax.csv")
    report = await importer.run("vaccinations", header, rows, source="vax.csv")
    assert report.rows == 7
    assert report.outcomes == {
        "matched": 2,
        "mismatch": 1,
        "unknown-id": 1,
        "invalid": 2,
        "duplicate": 1,
    }
    assert report.ignored_columns == ["batch_no"]
    outcomes = [x["outcome"] for x in ledger.lines(report.import_id)]
    assert outcomes == [
        "matched",
        "matched",
        "duplicate",
        "mismatch",
        "unknown-id",
        "invalid",
        "invalid",
    ]
    assert [e["record"]["dose"] for e in records.sent] == [1, 2]  # type: ignore[index]
    assert len(ledger.review) == 1
    assert ledger.fresh["vaccinations"] == "2021-09-01"

    # The status agent marks what it applied; only that makes a later record a duplicate.
    await ledger.mark_applied(
        {str(e["record_id"]): content_of(str(e["kind"]), e["record"]) for e in records.sent}  # type: ignore[arg-type]
    )
    header, rows = table_from_bytes(VACCINATIONS.encode(), "vax.csv")
    again = await importer.run("vaccinations", header, rows, source="vax.csv")
    assert again.outcomes["duplicate"] == 3 and again.outcomes["matched"] == 0
    assert len(records.sent) == 2


async def test_importer_refuses_unknown_kinds_and_missing_columns() -> None:
    importer = Importer(MemoryRegistry(), MemoryLedger(), MemoryRecords())
    with pytest.raises(ImportFailed, match="unknown import kind"):
        await importer.run("x-rays", ["person_id"], iter([]), source="x")
    with pytest.raises(ImportFailed, match="needs column"):
        await importer.run("vaccinations", ["person_id"], iter([]), source="x")


async def test_review_accept_sends_the_record_before_it_leaves_the_queue() -> None:
    registry, ledger, _ = await _registry()
    header, rows = table_from_bytes(VACCINATIONS.encode(), "vax.csv")
    await Importer(registry, ledger, MemoryRecords()).run("vaccinations", header, rows, "vax")
    (review_id,) = ledger.review

    failing = MemoryRecords(fail_times=1)
    with pytest.raises(ConnectionError):
        await decide_review(ledger, failing, registry, review_id, accept=True)
    assert review_id in ledger.review  # nothing lost: still waiting for a decision

    item = await decide_review(ledger, failing, registry, review_id, accept=True)
    assert item is not None and failing.sent == [item["event"]]
    assert review_id not in ledger.review
    assert await decide_review(ledger, failing, registry, review_id, accept=True) is None


async def test_review_reject_drops_without_applying() -> None:
    registry, ledger, _ = await _registry()
    header, rows = table_from_bytes(VACCINATIONS.encode(), "vax.csv")
    await Importer(registry, ledger, MemoryRecords()).run("vaccinations", header, rows, "vax")
    (review_id,) = ledger.review
    records = MemoryRecords()
    assert await decide_review(ledger, records, registry, review_id, accept=False) is not None
    assert records.sent == [] and ledger.review == {}


async def test_seeding_fills_registry_analytics_and_checkpoints_consistently() -> None:
    registry, places, analytics = MemoryRegistry(), MemoryCheckpoints(), MemoryAnalytics()
    report = await seed_city(
        SeedPlan(residents=3000, seed=3),
        registry=registry,
        places=places,
        analytics=analytics,
        pseudonymize=PSEUDO,
        rules=load_rulebook(),
        clock=lambda: NOW,
    )
    assert report.residents == len(registry.rows) == len(analytics.residents) == 3000
    assert report.colours is not None and sum(report.colours.values()) == 3000
    assert report.checkpoints == len(places.rows) == len(analytics.checkpoints) > 0
    assert await analytics.colours() == report.colours
    cells = {str(c) for row in analytics.residents for c in row}
    identity = {r[f] for r in registry.rows.values() for f in ("id", "name", "address")}
    assert not cells & identity


async def test_quality_report_from_analytics_and_ledger() -> None:
    registry, ledger, analytics = await _registry()
    header, rows = table_from_bytes(VACCINATIONS.encode(), "vax.csv")
    await Importer(registry, ledger, MemoryRecords()).run("vaccinations", header, rows, "vax")
    q = await quality_report(analytics, ledger, clock=lambda: NOW)
    assert q["completeness"]["residents"] == 3
    assert q["completeness"]["by_district"]["Ba Đình"]["residents"] == 2
    assert q["completeness"]["colours"] == {"none": 3}
    vax = q["match_rates"]["by_source"]["vaccinations"]
    assert vax == {"imports": 1, "rows": 7, "matched": 2, "match_rate": round(2 / 6, 4)}
    assert q["freshness"]["vaccinations"]["newest_record"] == "2021-09-01"
    assert "residents" in q["freshness"]


class MemoryStaff:
    """Organisations' staff lists (the importer's staff sink)."""

    def __init__(self) -> None:
        self.lists: dict[str, dict[str, str]] = {}

    async def send(self, events: list[dict[str, object]]) -> None:
        for e in events:
            record = e["record"]
            assert isinstance(record, dict)
            self.lists.setdefault(str(record["organisation"]), {})[str(e["person_id"])] = str(
                record.get("unit", "")
            )


STAFF = """person_id,name,dob,organisation,unit
001090123456,Nguyễn Văn An,1990-03-15,Công ty Thử,kho
001190654321,Trần Thị Hoa,1990-07-01,Công ty Thử,bán hàng
001085111222,Lê Văn Cường,1985-01-20,Công ty Khác,
"""


async def test_an_owners_staff_list_goes_to_its_organisation_never_to_the_status_agent() -> None:
    registry, ledger, _ = await _registry()
    records, staff = MemoryRecords(), MemoryStaff()
    importer = Importer(registry, ledger, records, staff=staff)
    header, rows = table_from_bytes(STAFF.encode(), "staff.csv")
    report = await importer.run("staff", header, rows, source="t", organisation="Công ty Thử")
    # An matches; Bình is under another name (review); a row naming another organisation
    # is invalid for this owner
    assert report.outcomes == {
        "matched": 1,
        "mismatch": 1,
        "invalid": 1,
        "unknown-id": 0,
        "duplicate": 0,
    }
    assert staff.lists == {"Công ty Thử": {"001090123456": "kho"}} and records.sent == []
    # the steward accepts her: she joins the list (not the health records)
    (item,) = ledger.review.values()
    await decide_review(ledger, records, registry, str(item["review_id"]), True, staff=staff)
    assert staff.lists["Công ty Thử"] == {"001090123456": "kho", "001190654321": "bán hàng"}
    assert records.sent == []
    # re-importing changes nothing
    header, rows = table_from_bytes(STAFF.encode(), "staff.csv")
    again = await importer.run("staff", header, rows, source="t", organisation="Công ty Thử")
    assert again.outcomes["duplicate"] == 2 and again.outcomes["matched"] == 0
