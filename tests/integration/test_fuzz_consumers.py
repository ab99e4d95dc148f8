"""Hostile records at volume on every topic a Faust agent consumes, against the running
platform: thousands per topic (random bytes, empty and null values, truncated, oversized
and deeply nested JSON, NaN, invalid UTF-8, wrong types, huge numbers, valid-looking
records with bad IDs and times, empty batches, null keys), mixed with good records.

Afterwards, exactly: every process is alive and healthy; every consumer group has
committed every record of every topic it reads (nothing stalls); every good record was
processed (scans indexed and in ClickHouse, health records applied, reports traced,
flags stored and alerted, store rows inserted) and none dead-lettered; every bad record
is in ``dead-letters`` once per agent that reads its topic, with a reason that names the
problem (the field, or what is wrong with the bytes), and nothing else is.

The topics and their agents are read from the Faust apps themselves (built over stub
clients): an agent added on a topic this test does not fuzz fails the test.

Seeded (``DANCU_FUZZ_SEED``; the seed is in every failure); ``DANCU_FUZZ_BAD`` sets the
hostile records per topic (2,000).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import random
import re
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from unittest.mock import MagicMock

import httpx
import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from infra import topics
from infra.clickhouse import ClickHouse
from infra.settings import Settings
from registry.ids import make_id
from tests.integration.conftest import Platform

pytestmark = pytest.mark.integration

SEED = int(os.environ.get("DANCU_FUZZ_SEED", "1127"))
BAD = int(os.environ.get("DANCU_FUZZ_BAD", "2000"))
DISTRICT = "Ba Đình"
NOW = datetime.now(UTC)
RESIDENTS = [make_id("001", 1960 + i % 40, ("Nam", "Nữ")[i % 2], 500_000 + i) for i in range(200)]
STRANGER = make_id("001", 1980, "Nam", 999_001)  # a valid ID not in the registry
GOOD = {
    topics.SCANS: 1000,
    topics.HEALTH_RECORDS: 300,
    topics.F0_REPORTS: 20,
    topics.EXPOSURES: 200,
    topics.REPORT_STATUS: 20,
    "store-rows": 200,
}
# Reasons name the problem: for the bytes-level hostile records, one of these words.
ABOUT_BYTES = (
    "json",
    "empty",
    "expected",
    "object",
    "input",
    "required",
    "recursion",
    "utf",
    "dictionary",
    "eof",
)
TAG = f"fz{SEED}"


def iso(t: datetime) -> str:
    return t.isoformat()


# --- the records --------------------------------------------------------------------


@dataclass
class Record:
    topic: str  # logical name
    value: bytes | None
    key: bytes | None
    good: bool
    what: str  # how it was made
    marker: str = ""  # an ID inside it (for a dead letter that carries no offset)
    expect: tuple[str, ...] = ()  # one of these is in each of its dead letters' reasons
    partition: int = -1
    offset: int = -1


def scan(i: int) -> dict[str, object]:
    return {
        "scan_id": f"{TAG}-scan-{i}",
        "person_id": RESIDENTS[i % len(RESIDENTS)],
        "checkpoint_id": f"{TAG}-cp-{i % 7}",
        "ts": iso(NOW - timedelta(minutes=5 + i % 600)),
        "source": ("gate", "self")[i % 2],
    }


def hexed(text: str) -> str:
    """A marker as a health record's ID must be: a hexadecimal hash."""
    return hashlib.blake2b(text.encode(), digest_size=12).hexdigest()


def health(i: int) -> dict[str, object]:
    return {
        "record_id": hexed(f"{TAG}-rec-{i}"),
        "kind": "vaccinations",
        "person_id": RESIDENTS[i % len(RESIDENTS)],
        "import_id": f"{TAG}-imp",
        "record": {"dose": 1 + i // len(RESIDENTS), "vaccine": "Pfizer", "date": "2021-09-01"},
    }


def report(i: int) -> dict[str, object]:
    return {
        "action": "report",
        "report_id": f"{TAG}-r-{i}",
        "person_id": RESIDENTS[i % len(RESIDENTS)],
        "sample_time": iso(NOW - timedelta(hours=3)),
        "symptomatic": False,
        "reported_at": iso(NOW - timedelta(hours=1)),
    }


def flag(i: int) -> dict[str, object]:
    return {
        "exposure_id": f"{TAG}-x-{i}",
        "report_id": f"{TAG}-xr-{i % 10}",
        "person_key": f"pk-{TAG}-{i}",
        "tier": ("F1", "F2")[i % 2],
        "via_key": f"pk-{TAG}-via",
        "reason": "co-location",
        "checkpoint_id": f"{TAG}-cp-1",
        "district": DISTRICT,
        "overlap_start": iso(NOW - timedelta(hours=5)),
        "overlap_end": iso(NOW - timedelta(hours=4)),
        "overlap_minutes": 60.0,
        "rule_version": "fuzz",
        "flagged_at": iso(NOW - timedelta(hours=1)),
        "withdrawn": False,
        "version": i,
    }


def status(i: int) -> dict[str, object]:
    return {
        "report_id": f"{TAG}-r-{i % GOOD[topics.F0_REPORTS]}",
        "status": "done",
        "counts": {"F1": 0, "F2": 0},
        "rule_version": "fuzz",
        "changed_at": iso(NOW),
    }


def visit_row(i: int) -> list[object]:
    return [
        f"{TAG}-row-{i}",
        f"pk-{TAG}-{i}",
        f"{TAG}-cp-1",
        DISTRICT,
        "",
        iso(NOW - timedelta(hours=2)),
        iso(NOW - timedelta(hours=1)),
        "gate",
        iso(NOW),
    ]


def store_rows(rows: list[list[object]]) -> dict[str, object]:
    from infra.sink import TABLES  # the store-rows format (only where that topic exists)

    return {"table": "visits", "columns": list(TABLES["visits"].columns), "rows": rows}


# Per topic: a good record by number, the field holding its marker, and fields with values
# the model must refuse (wrong types, huge numbers, bad IDs and times), by field.
@dataclass
class Spec:
    good: Callable[[int], Any]
    marker: str
    mark: Callable[[str], str] = str  # a marker as the marker field takes it
    about: tuple[str, ...] = ()  # more words that name a bytes-level problem here
    wrong: dict[str, list[object]] = field(default_factory=dict)
    # whole records, valid-looking but bad, with the reason's fragment
    odd: list[tuple[Callable[[dict[str, Any]], Any], tuple[str, ...]]] = field(default_factory=list)


BAD_IDS: list[object] = [
    "099090123456",
    "00109012345",
    "٠٠١٠٩٠١٢٣٤٥٦",
    "001090123456\n",
    "１２３４５６７８９０１２",
    "",
    1090123456,
    10**30,
    1e308,
    None,
    ["001090123456"],
    {"id": "001090123456"},
]
BAD_TIMES: list[object] = [
    "2021-09-01T10:00:00",
    "1970-01-01T00:00:00+00:00",
    "9999-12-31T23:59:59+00:00",
    "2021-13-01T00:00:00+00:00",
    "yesterday",
    "",
    1630000000,
    -(2**63),
    1e308,
    None,
    ["2021-09-01T10:00:00+07:00"],
]


def _without(name: str) -> Callable[[dict[str, Any]], Any]:
    return lambda r: {k: v for k, v in r.items() if k != name}


def _with(**changes: object) -> Callable[[dict[str, Any]], Any]:
    return lambda r: {**r, **changes}


SPECS: dict[str, Spec] = {
    topics.SCANS: Spec(
        scan,
        "scan_id",
        wrong={
            "scan_id": ["a|b", "has space", "", "x" * 129, 123, None, ["s"]],
            "person_id": BAD_IDS,
            "checkpoint_id": ["cp|1", "", "c" * 129, 7, None],
            "ts": BAD_TIMES,
            "source": ["camera", "", 1, None],
            "t_out": ["2000-01-01T00:00:00+00:00", "later", 5],
        },
        odd=[
            (_with(ts=iso(NOW + timedelta(days=30))), ("in the future",)),
            (_without("person_id"), ("person_id",)),
            (_without("ts"), ("ts",)),
            (lambda r: {**r, "t_out": iso(NOW + timedelta(days=9))}, ("t_out",)),
            (lambda r: {**r, "scan_id": f"v-{r['person_id']}"}, ("scan_id",)),
        ],
    ),
    topics.HEALTH_RECORDS: Spec(
        health,
        "record_id",
        hexed,
        wrong={
            "person_id": BAD_IDS,
            "record_id": [5, None, ["r"]],
            "kind": [5, None, "bogus", ""],
            "import_id": [5, None],
            "record": ["dose 1", 5, None, ["dose"], {"dose": "one", "vaccine": "x", "date": "d"}],
            "supersedes": ["maybe", 5, [True]],
        },
        odd=[
            (_with(person_id=STRANGER), ("not in the registry",)),
            (_without("record"), ("record",)),
            (lambda r: {**r, "record": {"vaccine": "Pfizer"}}, ("record",)),
        ],
    ),
    topics.F0_REPORTS: Spec(
        report,
        "report_id",
        wrong={
            "report_id": ["has space", "x" * 200, "", 5, None, ["r"]],
            "person_id": BAD_IDS,
            "sample_time": BAD_TIMES,
            "reported_at": BAD_TIMES,
            "action": ["explode", 5, ["report"], {"a": 1}, "[" * 3],
        },
        odd=[
            (lambda r: {**r, "sample_time": iso(NOW)}, ("sample_time",)),
            (
                lambda r: {"action": "withdraw", "report_id": r["report_id"] + "-none"},
                ("no report",),
            ),
            (
                lambda r: {"action": "approve", "report_id": r["report_id"] + "-none"},
                ("no report",),
            ),
            (lambda r: {"action": "late", "report_id": r["report_id"] + "-none"}, ("no report",)),
            (lambda r: {"action": "withdraw"}, ("report_id",)),
            (_without("sample_time"), ("sample_time",)),
        ],
    ),
    topics.EXPOSURES: Spec(
        flag,
        "exposure_id",
        wrong={
            "exposure_id": [5, None, ["x"]],
            "tier": ["F3", "", 1, None],
            "reason": ["gossip", 5],
            "overlap_minutes": ["an hour", None, [60], -5, 1e308 * 10],
            "version": ["v1", -1, 10**30, 2**63, 1.5],
            "overlap_start": BAD_TIMES,
            "flagged_at": BAD_TIMES,
            "withdrawn": [[], {"x": 1}, "perhaps"],
            "checkpoint_id": [5, ["c"]],
        },
        odd=[(_without("person_key"), ("person_key",)), (_without("tier"), ("tier",))],
    ),
    topics.REPORT_STATUS: Spec(
        status,
        "report_id",
        wrong={
            "report_id": [5, None, ["r"], ""],
            "status": ["bogus", 5, None],
            "counts": [{"F1": "many"}, [1, 2], "x", None],
            "changed_at": BAD_TIMES,
            "rule_version": [5, None],
        },
        odd=[(_without("report_id"), ("report_id",)), (_without("status"), ("status",))],
    ),
}


def _rows_spec() -> Spec:
    def good(i: int) -> dict[str, object]:
        return store_rows([visit_row(i)])

    return Spec(
        good,
        "",
        about=("table",),  # "unknown table 'None'": a record that names no table
        odd=[
            (_with(table="nope"), ("unknown table",)),
            (_with(table=5), ("unknown table",)),
            (_with(columns=["scan_id"]), ("columns",)),
            (_with(rows="many"), ("rows",)),
            (_with(rows=[[1, 2]]), ("values",)),
            (lambda r: {**r, "rows": [[*visit_row(0)[:5], "soon", *visit_row(0)[6:]]]}, ("iso",)),
            (lambda r: list(r.values()), ("object",)),
        ],
    )


def hostile_bytes(good: bytes, rng: random.Random) -> tuple[bytes | None, str, tuple[str, ...]]:
    """A record that is bad whatever the topic: (value, how, reason fragments)."""
    kind = rng.randrange(12)
    if kind == 0:
        return rng.randbytes(rng.choice((1, 7, 100, 3000))), "random bytes", ABOUT_BYTES
    if kind == 1:
        return rng.choice((b"", None)), "empty", ABOUT_BYTES
    if kind == 2:
        return good[: rng.randrange(1, len(good))], "truncated", ("json", "eof")
    if kind == 3:
        at = good.index(b'"', 2) + 1
        return good[:at] + b"\xff\xfe\xc0" + good[at:], "invalid UTF-8", ("json", "utf")
    if kind == 4:
        return good.replace(b"{", b'{"n": NaN, ', 1), "NaN", ("json",)
    if kind == 5:
        depth = rng.choice((100, 1000, 1100, 20_000))
        return b"[" * depth + b"]" * depth, f"nested {depth}", ABOUT_BYTES
    if kind == 6:
        depth = rng.choice((300, 1100))
        return b'{"a":' * depth + b"1" + b"}" * depth, f"nested objects {depth}", ABOUT_BYTES
    if kind == 7:
        value = rng.choice((b"null", b"123", b'"text"', b"true", b"1e999", b"-0", b"{}"))
        return value, f"top-level {value[:8]!r}", (*ABOUT_BYTES, "field")
    if kind == 8:
        return (
            b"[" + b"[" * 6 + b"]" * 6 + b"]",  # one item: a list in lists
            "a batch of a nested item",
            (
                *ABOUT_BYTES,
                "list",
            ),
        )
    if kind == 9:
        if rng.random() < 0.5:
            at = good.index(b'"', 2) + 1
            return good[:at] + b"\\ud800" + good[at:], "a lone surrogate", ("json", "utf")
        return b"\x00" * rng.randrange(1, 100) + good, "NUL prefix", ABOUT_BYTES
    if kind == 10:
        return good + b"garbage", "trailing garbage", ("json", "trailing")
    size = 1_500_000 if rng.random() < 0.1 else 20_000
    return orjson.dumps({"x" * size: 1}), f"a key of {size:,} bytes", (*ABOUT_BYTES, "field")


@dataclass(frozen=True)
class Deep:
    """A value nested ``depth`` lists deep (written by hand: orjson writes 255 at most)."""

    depth: int

    def json(self) -> bytes:
        return b"[" * self.depth + b'"x"' + b"]" * self.depth

    def __str__(self) -> str:
        return f"<nested {self.depth} deep>"


def dumps(body: dict[str, Any]) -> bytes:
    """A record's JSON, with any Deep value written in place."""
    deep = {k: v for k, v in body.items() if isinstance(v, Deep)}
    # the standard library writes integers past 64 bits, which orjson refuses
    plain = json.dumps({k: v for k, v in body.items() if k not in deep}).encode()
    for k, v in deep.items():
        plain = plain[:-1] + (b"," if plain != b"{}" else b"") + orjson.dumps(k) + b":"
        plain += v.json() + b"}"
    return plain


def make_records(topic: str, spec: Spec, rng: random.Random) -> list[Record]:
    """GOOD[topic] good records and BAD hostile ones, shuffled (seeded)."""
    out: list[Record] = []
    n_good = GOOD[topic]
    i = 0
    while i < n_good:  # good ones, some as batches where the topic takes them
        size = rng.choice((1, 1, 1, 5, 20)) if topic in (topics.SCANS,) else 1
        bodies = [spec.good(j) for j in range(i, min(i + size, n_good))]
        value = orjson.dumps(bodies if size > 1 else bodies[0])
        for body in bodies:
            key = None if rng.random() < 0.2 else f"{TAG}-k{i % 13}".encode()
            marker = str(body.get(spec.marker, "")) if isinstance(body, dict) else ""
            out.append(Record(topic, None, key, True, "good", marker))
        out[-1].value = value  # one record carries the batch; the others only count
        for r in out[-len(bodies) : -1]:
            r.what = "good (in a batch)"
        i += len(bodies)
    for b in range(BAD):
        base = spec.good(n_good + b)
        marker = spec.mark(f"{TAG}-bad-{topic}-{b}")
        if isinstance(base, dict) and spec.marker:
            base[spec.marker] = marker
        key = None if rng.random() < 0.2 else f"{TAG}-b{b % 11}".encode()
        roll = rng.random()
        if roll < 0.35:
            value, how, expect = hostile_bytes(orjson.dumps(base), rng)
            out.append(Record(topic, value, key, False, how, "", (*expect, *spec.about)))
            continue
        # a fifth of scans and health records go in a batch between good items, which
        # must survive it: such a bad item stays parseable and writable (one nested
        # thousands deep would make the whole batch one unparseable record)
        batched = topic in (topics.SCANS, topics.HEALTH_RECORDS) and rng.random() < 0.2
        if roll < 0.75 and spec.wrong:
            name = rng.choice(sorted(spec.wrong))
            extreme: list[object] = [] if batched else [Deep(rng.choice((50, 1000, 2000)))]
            if rng.random() < 0.2 and not batched:
                extreme.append("9" * 100_000)
            choice = rng.choice([*spec.wrong[name], *extreme])
            body: Any = {**base, name: choice}
            how = f"{name} = {str(choice)[:40]!r}"
            expect: tuple[str, ...] = (name, "json", "recursion")
            if name == spec.marker:
                marker = ""
        elif spec.odd:
            mutate, expect = rng.choice(spec.odd)
            body = mutate(base)
            how = f"odd: {expect[0]}"
        else:
            value, how, expect = hostile_bytes(orjson.dumps(base), rng)
            out.append(Record(topic, value, key, False, how, "", (*expect, *spec.about)))
            continue
        value = dumps(body) if isinstance(body, dict) else orjson.dumps(body)
        if batched:  # counted as good records; the Kafka record is the bad one's
            good_items = [spec.good(10_000 + b * 3 + j) for j in range(2)]
            for g in good_items:
                g[spec.marker] = spec.mark(f"{TAG}-bg-{topic}-{b}-{g[spec.marker]}")
                out.append(
                    Record(topic, None, key, True, "good (beside a bad item)", g[spec.marker])
                )
            value = b"[" + orjson.dumps(good_items[0]) + b"," + value + b","
            value += orjson.dumps(good_items[1]) + b"]"
            how = f"in a batch: {how}"
        out.append(Record(topic, value, key, False, how, marker, expect))
    if topic in (topics.SCANS, topics.HEALTH_RECORDS):
        out.append(Record(topic, b"[]", None, False, "empty batch", "", ("empty",)))
    # keep each batch's carrier after its counted members: shuffle whole groups
    groups: list[list[Record]] = []
    for r in out:
        if groups and groups[-1][-1].value is None:
            groups[-1].append(r)
        else:
            groups.append([r])
    rng.shuffle(groups)
    return [r for g in groups for r in g]


# --- the agents, as the Faust apps declare them --------------------------------------


def consumers(settings: Settings) -> dict[str, list[tuple[str, str]]]:
    """Logical topic → [(consumer group, agent name)], from the worker's and the sink's
    Faust apps built over stub clients."""
    import streams.app as streams_app

    builders = [streams_app.make_app]
    if hasattr(streams_app, "make_sink_app"):
        builders.append(streams_app.make_sink_app)
    found: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for build in builders:
        app = build(settings, MagicMock())
        for agent in app.agents.values():
            real = agent.channel.get_topic_name()  # type: ignore[attr-defined]
            logical = real.removeprefix(settings.topic_prefix)
            found[logical].append((app.conf.id, agent.name.rsplit(".", 1)[-1]))
    return dict(found)


# --- Kafka ----------------------------------------------------------------------------


async def produce(settings: Settings, records: list[Record]) -> None:
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap, max_request_size=8 << 20, linger_ms=5
    )
    await producer.start()
    try:
        sends = [r for r in records if r.value is not None or r.what == "empty"]
        for r in sends:
            if r.value is None and r.key is None:
                r.key = b"tombstone"  # a Kafka record has a key or a value
        futures = [await producer.send(settings.topic(r.topic), r.value, key=r.key) for r in sends]
        for r, meta in zip(sends, await asyncio.gather(*futures), strict=True):
            r.partition, r.offset = meta.partition, meta.offset
    finally:
        await producer.stop()


async def end_offsets(settings: Settings, names: list[str]) -> dict[TopicPartition, int]:
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap)
    await consumer.start()
    try:
        # the platform creates every topic with this many partitions
        tps = [
            TopicPartition(settings.topic(n), p)
            for n in names
            for p in range(settings.kafka.partitions)
        ]
        return dict(await consumer.end_offsets(tps))
    finally:
        await consumer.stop()


async def wait_committed(
    settings: Settings, groups: dict[str, set[str]], timeout: float
) -> dict[str, dict[str, int]]:
    """Until every group has committed every record of its topics; returns what is left
    (group → topic → records) when the time runs out."""
    names = sorted({t for ts in groups.values() for t in ts})
    ends = await end_offsets(settings, names)
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    await admin.start()
    assert ends, names
    left: dict[str, dict[str, int]] = {}
    try:
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            left = {}
            for group, wanted in groups.items():
                committed = await admin.list_consumer_group_offsets(group)
                for tp, end in ends.items():
                    logical = tp.topic.removeprefix(settings.topic_prefix)
                    if logical not in wanted:
                        continue
                    meta = committed.get(tp)
                    behind = end - (meta.offset if meta is not None and meta.offset >= 0 else 0)
                    if behind > 0:
                        left.setdefault(group, {}).setdefault(logical, 0)
                        left[group][logical] += behind
            if not left or asyncio.get_running_loop().time() > deadline:
                return left
            await asyncio.sleep(2)
    finally:
        await admin.close()


async def read_dead_letters(settings: Settings) -> list[dict[str, Any]]:
    name = settings.topic(topics.DEAD_LETTERS)
    ends = await end_offsets(settings, [topics.DEAD_LETTERS])
    consumer = AIOKafkaConsumer(
        name,
        bootstrap_servers=settings.kafka_bootstrap,
        group_id=f"fuzz-{uuid.uuid4().hex[:6]}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        max_partition_fetch_bytes=8 << 20,
    )
    await consumer.start()
    out: list[dict[str, Any]] = []
    try:
        async with asyncio.timeout(300):
            while True:
                positions = {tp: await consumer.position(tp) for tp in ends}
                if all(positions[tp] >= end for tp, end in ends.items()):
                    return out
                batch = await consumer.getmany(timeout_ms=1000, max_records=5000)
                for msgs in batch.values():
                    out.extend(orjson.loads(m.value) for m in msgs)
    finally:
        await consumer.stop()


# --- the test -----------------------------------------------------------------------


def residents_csv(path: Path) -> Path:
    lines = ["id,name,dob,gender,address,district,ward,household_id"]
    for i, pid in enumerate(RESIDENTS):
        year = 1960 + i % 40
        gender = ("Nam", "Nữ")[i % 2]
        lines.append(
            f"{pid},Người Thử {i},{year}-01-01,{gender},Số {i} Kim Mã,{DISTRICT},Phường Kim Mã,H{i}"
        )
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def pids(data_dir: Path) -> dict[str, int]:
    """The platform's child processes (the store's, the workers') by name."""
    found = {p.stem: int(p.read_text()) for p in (data_dir / "run").glob("*.pid")}
    assert found, f"no child process recorded under {data_dir / 'run'}"
    return found


MARKERS = re.compile(r"fz\d+-[A-Za-z0-9_.:-]+|[0-9a-f]{24}")


def source_of(
    letter: dict[str, Any],
    by_offset: dict[tuple[str, int, int], Record],
    by_marker: dict[str, Record],
) -> Record | None:
    """The record a dead letter stands for: a good record its payload names (a good one
    dead-lettered), else the record at its offset, else the record its payload names."""
    named = [
        by_marker[m] for m in MARKERS.findall(str(letter.get("payload", ""))) if m in by_marker
    ]
    good = [r for r in named if r.good]
    if good:
        return good[0]
    if letter.get("partition") is not None and letter.get("offset") is not None:
        found = by_offset.get((letter["topic"], letter["partition"], letter["offset"]))
        if found is not None:
            return found
    return named[0] if named else None


def test_hostile_records_on_every_consumed_topic(platform: Platform, tmp_path: Path) -> None:
    settings = platform.settings
    agents = consumers(settings)
    specs = dict(SPECS)
    if "store-rows" in agents:
        specs["store-rows"] = _rows_spec()
    unfuzzed = sorted(set(agents) - set(specs))
    assert not unfuzzed, f"agents read topics this test does not fuzz: {unfuzzed} ({agents})"
    rng = random.Random(SEED)
    records = {t: make_records(t, specs[t], rng) for t in sorted(agents)}

    loaded = platform.run_cli("import", "residents", str(residents_csv(tmp_path / "r.csv")))
    assert loaded.returncode == 0, loaded.stderr
    platform.start(timeout=180)
    children = pids(settings.data_dir)
    everything = [r for t in sorted(records) for r in records[t]]
    asyncio.run(produce(settings, everything))
    groups: dict[str, set[str]] = defaultdict(set)
    for topic, readers in agents.items():
        for group, _ in readers:
            groups[group].add(topic)
    left = asyncio.run(wait_committed(settings, groups, timeout=900))
    context = f"seed {SEED}, {BAD} hostile records per topic"
    assert not left, f"{context}: records never committed (an agent stalled or died): {left}"

    # every process alive (the same ones: none restarted) and healthy, no agent crashed
    assert platform.proc is not None and platform.proc.poll() is None
    assert pids(settings.data_dir) == children, (context, children)
    for pid in children.values():
        os.kill(pid, 0)  # alive
    logs = [settings.data_dir / "platform.log", *(settings.data_dir / "logs").glob("*.log")]
    crashed = [line for f in logs for line in f.read_text().splitlines() if "Crashed" in line]
    assert not crashed, (context, crashed[:3])
    health = httpx.get(f"{platform.url}/healthz", timeout=30)
    assert health.status_code == 200, health.text

    # dead letters: exactly the bad records, once per agent reading their topic
    letters = asyncio.run(read_dead_letters(settings))
    by_offset = {
        (settings.topic(r.topic), r.partition, r.offset): r for r in everything if r.offset >= 0
    }
    by_marker = {r.marker: r for r in everything if r.marker}
    counted: Counter[int] = Counter()
    problems: list[str] = []
    for letter in letters:
        rec = source_of(letter, by_offset, by_marker)
        reason = str(letter.get("reason") or "")
        if rec is None:
            problems.append(f"a dead letter of no record sent: {str(letter)[:300]}")
            continue
        counted[id(rec)] += 1
        if rec.good:
            problems.append(
                f"{rec.topic}: a good record dead-lettered ({rec.what}): {reason[:300]}"
            )
        elif not reason.strip():
            problems.append(f"{rec.topic}: no reason for {rec.what}")
        elif rec.expect and not any(x.lower() in reason.lower() for x in rec.expect):
            problems.append(
                f"{rec.topic}: {rec.what}: reason {reason[:200]!r} names none of {rec.expect}"
            )
    per_topic: dict[str, Counter[str]] = defaultdict(Counter)
    for topic, recs in records.items():
        readers = len(agents[topic])
        for r in recs:
            if r.good:
                continue
            n = counted[id(r)]
            per_topic[topic]["bad"] += 1
            per_topic[topic]["letters"] += n
            if n != readers:
                problems.append(
                    f"{topic}: {r.what} (p{r.partition} o{r.offset}): {n} dead letters, "
                    f"{readers} expected (one per agent: {agents[topic]})"
                )
    summary = {t: dict(c) for t, c in per_topic.items()}
    kinds = Counter(re.sub(r"\(p\d+ o\d+\)|'.*", "", p)[:160] for p in problems)
    assert not problems, (
        f"{context}: {len(problems)} problem(s), {summary}\nby kind:\n"
        + "\n".join(f"{n:5} {k}" for k, n in kinds.most_common(60))
        + "\nfirst ones:\n"
        + "\n".join(problems[:30])
    )

    # the good records were processed
    n_scans = GOOD[topics.SCANS] + sum(
        1 for r in records[topics.SCANS] if r.good and r.what.startswith("good (beside")
    )
    stats = platform.wait_processed(n_scans, timeout=300)
    assert stats["scans_processed"] == n_scans, (context, stats)
    official = platform.api("official", DISTRICT)
    for i in range(GOOD[topics.F0_REPORTS]):
        r = official.get(f"/v1/reports/f0/{TAG}-r-{i}")
        assert r.status_code == 200 and r.json()["status"] == "done", (context, r.text)
    alerts = official.get("/v1/alerts", params={"limit": 1000}).json()["alerts"]
    mine = {a["alert_id"] for a in alerts if str(a["alert_id"]).startswith(f"{TAG}-x-")}
    assert len(mine) == GOOD[topics.EXPOSURES], (context, len(mine))
    n_health = GOOD[topics.HEALTH_RECORDS] + sum(
        1 for r in records[topics.HEALTH_RECORDS] if r.good and r.what.startswith("good (beside")
    )
    platform.stop()
    ch = ClickHouse(settings.clickhouse_url, settings.clickhouse.database)
    try:

        def count(sql: str) -> int:
            return int(ch.call(lambda c: c.query(sql).result_rows[0][0]))

        db = settings.clickhouse.database
        n_rows = GOOD["store-rows"] if "store-rows" in records else 0
        assert count(f"SELECT uniqExact(scan_id) FROM {db}.visits") == n_scans + n_rows, context
        mine = f"startsWith(exposure_id, '{TAG}-x-')"  # besides the flags the reports raised
        assert (
            count(f"SELECT uniqExact(exposure_id) FROM {db}.exposures WHERE {mine}")
            == GOOD[topics.EXPOSURES]
        ), context
        assert (
            count(f"SELECT uniqExact(person_key, record_id) FROM {db}.health_records") == n_health
        ), context
        assert count(f"SELECT uniqExact(report_id) FROM {db}.f0_cases") == GOOD[topics.F0_REPORTS]
    finally:
        ch.close()
    print(f"{context}: {summary}")
