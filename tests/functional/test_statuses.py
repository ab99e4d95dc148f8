"""The status agent's work over fakes: ClickHouse first, then Redis, then the ledger;
faults at every step retried or isolated; only applied records become duplicates."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
import pytest

from infra.faults import AgentHealth
from infra.tables import table_from_bytes
from registry.cards import load_rulebook
from registry.importer import Importer, decide_review
from streams.guard import Guard
from streams.scans import RawRecord
from streams.statuses import StatusUpdater
from tests.fakes import (
    Faults,
    MemoryDeadLetters,
    MemoryLedger,
    MemoryRecords,
    MemoryRegistry,
    MemoryResidentSink,
)

NOW = datetime(2021, 11, 1, 9, 0, tzinfo=UTC)
AN = {
    "id": "001090123456",
    "name": "Nguyễn Văn An",
    "dob": "1990-03-15",
    "district": "Ba Đình",
    "province": "001",
}
BINH = {"id": "001190654321", "name": "Trần Thị Bình", "dob": "1990-07-01", "province": "001"}
HEADER = "person_id,name,dob,dose,vaccine,date,site\n"


class World:
    def __init__(self, faults: Faults | None = None) -> None:
        self.faults = faults or Faults()
        self.registry = MemoryRegistry([AN, BINH], faults=self.faults)
        self.ledger = MemoryLedger(faults=self.faults)
        self.records = MemoryRecords()
        self.sink = MemoryResidentSink(self.faults)
        self.dead = MemoryDeadLetters()
        self.updater = StatusUpdater(
            residents=self.registry,
            sink=self.sink,
            applied=self.ledger,
            guard=Guard(self.dead, AgentHealth(), retry_delay=0.001, max_delay=0.002),
            rules=load_rulebook(),
            topic="health-records",
            clock=lambda: NOW,
        )

    async def run(self, csv: str) -> dict[str, object]:
        header, rows = table_from_bytes((HEADER + csv).encode(), "v.csv")
        report = await Importer(self.registry, self.ledger, self.records).run(
            "vaccinations", header, rows, "v.csv"
        )
        return report.as_dict()

    async def apply_sent(self) -> None:
        """What the agent does with what the importer sent through Kafka."""
        sent, self.records.sent = self.records.sent, []
        await self.updater.apply([RawRecord(orjson.dumps([e])) for e in sent])

    def outcomes(self, report: dict[str, object]) -> list[str]:
        return [x["outcome"] for x in self.ledger.lines(str(report["import_id"]))]


async def test_only_an_applied_record_makes_a_later_one_a_duplicate() -> None:
    w = World()
    row = "001090123456,Nguyễn Văn An,1990-03-15,1,AstraZeneca,2021-07-01,TYT\n"
    first = await w.run(row)
    again = await w.run(row)  # not applied yet: it is matched (and sent) again, harmlessly
    assert w.outcomes(first) == w.outcomes(again) == ["matched"]
    await w.apply_sent()
    assert w.outcomes(await w.run(row)) == ["duplicate"]
    assert w.registry.rows["001090123456"]["colour"] == "yellow"
    assert orjson.loads(w.registry.rows["001090123456"]["doses"]) == [
        ["2021-07-01", "AstraZeneca", 1]
    ]


async def test_same_key_other_content_is_a_conflict_for_review_never_lost() -> None:
    w = World()
    await w.run("001090123456,Nguyễn Văn An,1990-03-15,2,AstraZeneca,2021-09-01,TYT\n")
    await w.apply_sent()
    report = await w.run(
        "001090123456,Nguyễn Văn An,1990-03-15,2,Pfizer,2021-09-03,TYT\n"
        "001090123456,Nguyễn Văn An,1990-03-15,3,Pfizer,2021-10-01,TYT\n"
        "001090123456,Nguyễn Văn An,1990-03-15,3,Moderna,2021-10-01,TYT\n"
    )
    assert w.outcomes(report) == ["mismatch", "matched", "mismatch"]
    lines = w.ledger.lines(str(report["import_id"]))
    assert "vaccine AstraZeneca → Pfizer" in lines[0]["reason"]
    assert "date 2021-09-01 → 2021-09-03" in lines[0]["reason"]
    assert "vaccine Pfizer → Moderna" in lines[2]["reason"]  # against row 2 of this file
    items = sorted(w.ledger.review.values(), key=lambda i: i["row"])
    assert items[0]["conflicts_with"] == {"dose": 2, "vaccine": "AstraZeneca", "date": "2021-09-01"}
    assert items[0]["event"]["record"]["vaccine"] == "Pfizer"  # both, side by side

    await w.apply_sent()
    assert await decide_review(w.ledger, w.records, w.registry, items[0]["review_id"], True)
    await w.apply_sent()
    doses = orjson.loads(w.registry.rows["001090123456"]["doses"])
    assert ["2021-09-03", "Pfizer", 2] in doses and ["2021-09-01", "AstraZeneca", 2] not in doses


async def test_rows_that_did_not_apply_never_block_a_later_good_row() -> None:
    w = World()
    report = await w.run(
        "001090123456,Nguyễn Văn Anh,1990-03-15,1,AstraZeneca,2021-07-01,TYT\n"  # mismatch
        "001090123456,Nguyễn Văn An,1990-13-15,1,AstraZeneca,2021-07-01,TYT\n"  # invalid
        "001090123456,Nguyễn Văn An,1990-03-15,1,AstraZeneca,2021-07-01,TYT\n"  # good
    )
    assert w.outcomes(report) == ["mismatch", "invalid", "matched"]


async def test_a_new_spelling_is_a_mismatch_until_accepted_then_an_alias() -> None:
    w = World()
    report = await w.run("001090123456,Nguyễn Văn Anh,1990-03-15,1,AZ,2021-07-01,TYT\n")
    lines = w.ledger.lines(str(report["import_id"]))
    assert lines[0]["outcome"] == "mismatch" and "similarity 96/100" in lines[0]["reason"]
    (review_id,) = w.ledger.review
    await decide_review(w.ledger, w.records, w.registry, review_id, accept=True)
    await w.apply_sent()
    again = await w.run("001090123456,NGUYEN VAN ANH,1990-03-15,2,AZ,2021-09-01,TYT\n")
    assert w.outcomes(again) == ["matched"]


async def test_a_birth_year_contradicting_the_id_goes_to_review() -> None:
    w = World()
    report = await w.run("001090123456,Nguyễn Văn An,1991-03-15,1,AZ,2021-07-01,TYT\n")
    lines = w.ledger.lines(str(report["import_id"]))
    assert lines[0]["outcome"] == "mismatch" and "contradicts the ID (1990)" in lines[0]["reason"]


@pytest.mark.parametrize(
    ("step", "when"),
    [
        ("resident-sink", "before"),
        ("resident-sink", "after"),
        ("registry-update", "before"),
        ("registry-update", "after"),
        ("mark-applied", "before"),
    ],
)
async def test_transient_faults_while_applying_are_retried_and_converge(
    step: str, when: str
) -> None:
    faults = Faults()
    w = World(faults)
    await w.run(
        "001090123456,Nguyễn Văn An,1990-03-15,1,AZ,2021-07-01,TYT\n"
        "001190654321,Trần Thị Bình,1990-07-01,1,AZ,2021-07-01,TYT\n"
    )
    faults.plan(step, when, ConnectionError(f"{step} unreachable"), times=2)
    await w.apply_sent()
    # A write that landed before its reply was lost is not repeated: the retry re-reads
    # and finds nothing left to change.
    assert faults.raised.count((step, when)) >= 1
    assert {r["colour"] for r in w.registry.rows.values()} == {"yellow"}
    assert len(w.ledger.applied_contents) == 2 and len(w.sink.facts) == 2
    assert w.dead.letters == []


async def test_a_refused_person_is_dead_lettered_and_the_others_applied() -> None:
    faults = Faults()
    w = World(faults)
    await w.run(
        "001090123456,Nguyễn Văn An,1990-03-15,1,AZ,2021-07-01,TYT\n"
        "001190654321,Trần Thị Bình,1990-07-01,1,AZ,2021-07-01,TYT\n"
    )

    class Refusing(MemoryResidentSink):
        async def upsert(self, residents, facts):  # type: ignore[no-untyped-def]
            if any(f.person_id == "001190654321" for f in facts):
                raise ValueError("Code: 27. Cannot parse input")
            await super().upsert(residents, facts)

    w.updater.sink = Refusing()
    await w.apply_sent()
    assert w.registry.rows["001090123456"]["colour"] == "yellow"
    assert "colour" not in w.registry.rows["001190654321"]
    assert len(w.dead.letters) == 1 and "Cannot parse input" in w.dead.letters[0].reason
    assert list(w.ledger.applied_contents) and len(w.ledger.applied_contents) == 1


async def test_unknown_people_and_garbage_go_to_dead_letters() -> None:
    w = World()
    event = {
        "record_id": "0123456789abcdef01234567",  # a hashed natural key
        "kind": "vaccinations",
        "person_id": "001085999999",
        "import_id": "imp",
        "record": {"dose": 1, "vaccine": "AZ", "date": "2021-07-01"},
    }
    n = await w.updater.apply([RawRecord(b"{oops"), RawRecord(orjson.dumps([event]))])
    assert n == 0 and len(w.dead.letters) == 2
    assert "not in the registry" in w.dead.letters[1].reason


async def test_two_sources_disagreeing_before_either_applied_keep_both() -> None:
    w = World()
    await w.run("001090123456,Nguyễn Văn An,1990-03-15,2,AstraZeneca,2021-09-01,A\n")
    await w.run("001090123456,Nguyễn Văn An,1990-03-15,2,Pfizer,2021-09-03,B\n")  # matched too
    await w.apply_sent()
    doses = orjson.loads(w.registry.rows["001090123456"]["doses"])
    assert doses == [["2021-09-01", "AstraZeneca", 2]]
    (item,) = w.ledger.review.values()  # the second waits for a steward, not lost
    assert "found when applying" in item["reason"] and item["event"]["supersedes"] is True
    assert item["conflicts_with"]["vaccine"] == "AstraZeneca"
    assert len(w.sink.facts) == 1  # the history holds only what was applied


async def test_a_corrected_test_result_clears_the_one_it_supersedes() -> None:
    w = World()
    header = "person_id,name,dob,result,test_type,sampled_at\n"
    row = "001090123456,Nguyễn Văn An,1990-03-15,{r},PCR,2021-11-01T08:00:00+07:00\n"
    for result in ("positive", "negative"):
        h, rows = table_from_bytes((header + row.format(r=result)).encode(), "t.csv")
        await Importer(w.registry, w.ledger, w.records).run("test-results", h, rows, "t")
        await w.apply_sent()
    assert w.registry.rows["001090123456"]["f0_since"]  # the positive stands...
    (item,) = w.ledger.review.values()  # ...until a steward accepts the correction
    await decide_review(w.ledger, w.records, w.registry, str(item["review_id"]), True)
    await w.apply_sent()
    assert w.registry.rows["001090123456"]["f0_since"] == ""
    assert w.registry.rows["001090123456"]["neg_test_at"]


async def test_records_nested_too_deep_to_write_back_are_dead_lettered() -> None:
    w = World()
    deep = b'{"record_id": ' + b"[" * 300 + b"]" * 300 + b"}"
    n = await w.updater.apply([RawRecord(deep)])
    assert n == 0 and len(w.dead.letters) == 1 and w.dead.letters[0].payload.startswith("{")


async def test_a_refused_registry_read_dead_letters_the_batch() -> None:
    w = World()
    await w.run("001090123456,Nguyễn Văn An,1990-03-15,1,AZ,2021-07-01,TYT\n")

    async def refuse(ids):  # type: ignore[no-untyped-def]
        raise ValueError("NOPERM this user has no permissions")

    w.registry.get_many = refuse  # type: ignore[method-assign]
    assert await w.updater.apply([RawRecord(orjson.dumps([e])) for e in w.records.sent]) == 0
    assert len(w.dead.letters) == 1 and "NOPERM" in w.dead.letters[0].reason
