"""Capacity figures for docs/capacity.md: what one resident, one visit, one scan costs in
Redis, ClickHouse and Kafka, measured with the project's own code paths.

- **Redis per resident**: the synthetic city seeded by ``registry.seeding.seed_city`` (as
  ``dancu seed`` does) into a private ``redis-server`` (started here on a free port with the
  project's memory settings, stopped after), INFO ``used_memory`` before and after, and
  MEMORY USAGE summed per key family; the pseudonym map (``pk:`` buckets) also at national
  density (100M residents over 65,536 buckets), where its encoding changes; a resident's
  status field for one exposure (``x:<report>``), and the per-key cost of cluster mode.
- **Redis per indexed visit**: visits shaped as in production (uuid scan ids, 32-hex
  person keys, ``HN001-restaurant-000123`` checkpoints) indexed by
  ``infra.redis_store.VisitIndex.add`` at national key densities (each person key holding
  ``per-day x 21`` visits, each checkpoint key ``per-day x 200 x 21``): both indexes, the
  dedup marks and the longest-stay shards; with Redis's default ``zset-max-listpack-value``,
  with 128 (person-index members are 61-72 bytes, just over the default 64), and on a
  one-node Redis Cluster (the cluster write path); with the Redis server's CPU and this
  process's CPU per visit.
- **Tracing state**: bytes of one exposure in a report's ``x`` field and of one infectious
  interval.
- **ClickHouse bytes per visit row** on disk (chDB, ``system.parts``), the columns' share,
  and the residents' analytics rows per resident from the same seeding.
- **API CPU per scan** of ``POST /v1/scans``'s body work (parse, validate, group,
  serialise; no HTTP, no Kafka).
- **Kafka bytes per scan** on the broker's disk (the embedded broker's log directory): a
  device batch of ``--batch`` scans per record and one scan per record, and ``store-rows``
  bytes per visit row as a worker sends them.

    PYTHONPATH=. python bench/capacity.py [--residents 100000] [--visits 200000]
        [--rows 200000] [--scans 100000] [--per-day 3]

Memory and bytes do not depend on the machine's load; CPU per operation does (contention
inflates it), and the rates printed beside them are of whatever else the machine runs.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from itertools import islice
from pathlib import Path

sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).parent.resolve()]

from redis import Redis as SyncRedis  # noqa: E402

from infra import services  # noqa: E402
from infra.clickhouse import ClickHouse, visit_rows  # noqa: E402
from infra.kafka_io import create_topics, make_producer  # noqa: E402
from infra.redis_store import (  # noqa: E402
    SEEN_BUCKETS,
    CheckpointDirectory,
    VisitIndex,
    make_redis,
)
from infra.residents import ClickHouseRegistry, ResidentStore  # noqa: E402
from infra.services import REDIS_MEMORY_ARGS, free_ports  # noqa: E402
from infra.settings import Settings  # noqa: E402
from infra.sink import encode  # noqa: E402
from registry.cards import load_rulebook  # noqa: E402
from registry.ids import make_id  # noqa: E402
from registry.pseudonym import Pseudonymizer  # noqa: E402
from registry.seeding import seed_city  # noqa: E402
from registry.synthetic import CHECKPOINT_TYPES, SeedPlan  # noqa: E402
from tracing.exposure import Exposure, Interval  # noqa: E402
from tracing.reports import dump_exposures, interval_member, status_entry  # noqa: E402
from tracing.visits import Visit  # noqa: E402

NATIONAL_RESIDENTS = 100_000_000
PK_BUCKETS = 16**4  # ResidentStore._pk: the first 4 hex digits of the pseudonym
RESIDENTS_PER_CHECKPOINT = 200  # registry.synthetic: 5,000 checkpoints per million
WINDOW_DAYS = 21
TICK = os.sysconf("SC_CLK_TCK")


def say(label: str, value: str) -> None:
    print(f"{label}: {value}", flush=True)


def free_port() -> int:
    return free_ports(1)[0]


class PrivateRedis:
    """A redis-server of this run only (no persistence), so INFO memory deltas are exact
    and nobody else's keys move them; stopped by its own pid."""

    def __init__(self, root: Path, *, cluster: bool = False) -> None:
        self.port = free_port()
        root.mkdir(parents=True, exist_ok=True)
        args = ["--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(root)]
        args += ["--save", "", "--appendonly", "no", *REDIS_MEMORY_ARGS]
        if cluster:
            args += ["--cluster-enabled", "yes", "--cluster-config-file", str(root / "n.conf")]
        self.proc = subprocess.Popen(
            ["redis-server", *args], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT
        )
        self.client = SyncRedis(port=self.port, decode_responses=True)
        for _ in range(200):
            try:
                self.client.ping()
                break
            except Exception:
                time.sleep(0.05)
        self.cluster = cluster
        if cluster:  # one node owning every slot: cluster-mode memory, no resharding
            self.client.execute_command("CLUSTER", "ADDSLOTSRANGE", 0, 16383)
            for _ in range(200):
                if self.client.cluster("info")["cluster_state"] == "ok":
                    break
                time.sleep(0.05)

    @property
    def url(self) -> str:
        if self.cluster:
            return f"redis+cluster://127.0.0.1:{self.port}"
        return f"redis://127.0.0.1:{self.port}/0"

    def cpu(self) -> float:
        """CPU seconds the server has used (user + system)."""
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TICK

    def used(self) -> int:
        return int(self.client.info("memory")["used_memory"])

    def families(self, prefix: str) -> dict[str, tuple[int, int]]:
        """(keys, MEMORY USAGE bytes) per key family (the key's first segment after the
        prefix: r, pk, hh, cp, v:p, v:c, seen, ...)."""
        out: dict[str, list[int]] = defaultdict(lambda: [0, 0])
        batch: list[str] = []

        def flush() -> None:
            pipe = self.client.pipeline(transaction=False)
            for k in batch:
                pipe.memory_usage(k, samples=0)
            for k, size in zip(batch, pipe.execute(), strict=True):
                rest = k[len(prefix) :]
                head = rest.split(":", 2)
                fam = ":".join(head[:2]) if head[0] == "v" else head[0]
                out[fam][0] += 1
                out[fam][1] += int(size or 0)
            batch.clear()

        for key in self.client.scan_iter(match=f"{prefix}*", count=5000):
            batch.append(key)
            if len(batch) >= 5000:
                flush()
        if batch:
            flush()
        return {k: (v[0], v[1]) for k, v in sorted(out.items())}

    def stop(self) -> None:
        self.client.close()
        self.proc.terminate()
        self.proc.wait(timeout=30)


# Redis: residents ------------------------------------------------------------------------
async def residents(
    redis_url: str, store: PrivateRedis, ch: ClickHouse, n: int
) -> dict[str, float]:
    """Seed ``n`` residents with the project's seeding; bytes per resident."""
    prefix = "cap:"
    redis = make_redis(redis_url)
    pseudonymize = Pseudonymizer(secrets.token_bytes(32))
    people = ResidentStore(redis, prefix, pseudonymize)
    before = store.used()
    t0 = time.perf_counter()
    report = await seed_city(
        SeedPlan(residents=n, seed=11),
        registry=people,
        places=CheckpointDirectory(redis, prefix),
        analytics=ClickHouseRegistry(ch),
        pseudonymize=pseudonymize,
        rules=load_rulebook(),
    )
    seconds = time.perf_counter() - t0
    after = store.used()
    fam = store.families(prefix)
    out: dict[str, float] = {"seed_seconds": seconds}
    say(
        f"seeded {report.residents:,} residents, {report.households:,} households, "
        f"{report.checkpoints:,} checkpoints in {seconds:.1f} s",
        f"used_memory +{(after - before) / 2**20:,.1f} MiB",
    )
    for name, (keys, size) in fam.items():
        say(f"  redis {name}:*", f"{keys:,} keys, {size / 2**20:,.2f} MiB")
    r_bytes = fam["r"][1] / n
    hh_bytes = fam.get("hh", (0, 0))[1] / n
    cp_bytes = fam.get("cp", (0, 0))[1] / max(1, fam.get("cp", (1, 0))[0])
    say("redis bytes per resident, r:<id> hash (MEMORY USAGE)", f"{r_bytes:,.0f}")
    say("redis bytes per resident, hh:<household> sets", f"{hh_bytes:,.0f}")
    say("redis bytes per checkpoint, cp:<id> hash", f"{cp_bytes:,.0f}")
    say(
        "redis used_memory per resident as seeded (pk: buckets at this size's density)",
        f"{(after - before) / n:,.0f}",
    )

    # The pseudonym map at national density: 100M / 65,536 = 1,526 entries per bucket.
    per_bucket = NATIONAL_RESIDENTS // PK_BUCKETS
    sync = SyncRedis.from_url(redis_url, decode_responses=True)
    sizes = []
    encoding = ""
    for b in range(8):
        key = f"capnat:pk:{b:04x}"
        pipe = sync.pipeline(transaction=False)
        mapping = {
            f"{b:04x}{secrets.token_hex(14)}": f"0{random.randint(10**10, 10**11 - 1)}"
            for _ in range(per_bucket)
        }
        pipe.hset(key, mapping=mapping)  # type: ignore[arg-type]  # str map
        pipe.execute()
        sizes.append(int(sync.memory_usage(key, samples=0) or 0))
        encoding = str(sync.object("encoding", key))
        sync.delete(key)
    pk_national = sum(sizes) / (8 * per_bucket)
    say(
        f"redis bytes per resident, pk: map at 100M ({per_bucket:,} per bucket, {encoding})",
        f"{pk_national:,.0f}",
    )
    # One exposure's status field on a resident (x:<report_id>, tracing/reports.py).
    ids = [k[len(prefix) + 2 :] for k in islice(sync.scan_iter(f"{prefix}r:*"), 1000)]
    pipe = sync.pipeline(transaction=False)
    for i in ids:
        pipe.memory_usage(f"{prefix}r:{i}", samples=0)
    sized = pipe.execute()
    now = datetime.now(UTC)
    for i in ids:
        e = Exposure(
            uuid.uuid4().hex,
            pseudonymize(i),
            "F1",
            secrets.token_hex(16),
            "co-location",
            "HN001-restaurant-000123",
            now - timedelta(hours=2),
            now - timedelta(hours=1),
        )
        pipe.hset(f"{prefix}r:{i}", f"x:{e.report_id}", status_entry(e))
    pipe.execute()
    for i in ids:
        pipe.memory_usage(f"{prefix}r:{i}", samples=0)
    grown = pipe.execute()
    x_field = (sum(grown) - sum(sized)) / len(ids)
    say("redis bytes per flagged resident, one x:<report> status field", f"{x_field:,.0f}")
    sync.close()
    await redis.aclose()
    out.update(r=r_bytes, hh=hh_bytes, pk=pk_national, cp=cp_bytes, x_field=x_field)
    out["resident_total"] = r_bytes + hh_bytes + pk_national
    say("redis bytes per resident, total at national density", f"{out['resident_total']:,.0f}")
    return out


def cluster_key_overhead(root: Path, keys: int = 200_000) -> float:
    """used_memory per key in cluster mode minus in standalone mode (the same keys)."""
    per_key = []
    for cluster in (False, True):
        r = PrivateRedis(root / f"keys-{int(cluster)}", cluster=cluster)
        try:
            before = r.used()
            pipe = r.client.pipeline(transaction=False)
            for i in range(keys):
                pipe.set(f"k{{{i % 16384}}}:{i}", "x")
                if i % 10_000 == 9_999:
                    pipe.execute()
            pipe.execute()
            per_key.append((r.used() - before) / keys)
        finally:
            r.stop()
    extra = per_key[1] - per_key[0]
    say("redis cluster mode, extra bytes per key (used_memory, same keys)", f"{extra:,.1f}")
    return extra


# Redis: visit indexes --------------------------------------------------------------------
def national_visits(n: int, per_day: float, seed: int = 5) -> Iterator[Visit]:
    """Visits at national key densities: each person holds per_day x 21 visits over the
    window, each checkpoint per_day x 200 x 21 (5,000 checkpoints per million)."""
    rng = random.Random(seed)
    per_person = max(1, round(per_day * WINDOW_DAYS))
    per_place = max(1, round(per_day * RESIDENTS_PER_CHECKPOINT * WINDOW_DAYS))
    people = [secrets.token_hex(16) for _ in range(max(1, n // per_person))]
    kinds = list(CHECKPOINT_TYPES)
    places = [
        f"HN{rng.randint(1, 30):03d}-{rng.choice(kinds)}-{rng.randrange(10**6):06d}"
        for _ in range(max(1, n // per_place))
    ]
    now = datetime.now(UTC).replace(microsecond=0)
    span = WINDOW_DAYS * 86_400 - 3 * 3600
    for i in range(n):
        t_in = now - timedelta(seconds=rng.randrange(span) + 3 * 3600)
        yield Visit(
            uuid.uuid4().hex,
            people[i % len(people)],
            places[rng.randrange(len(places))],
            t_in,
            t_in + timedelta(minutes=rng.uniform(5, 120)),
            "gate",
        )


async def visit_index(store: PrivateRedis, n: int, per_day: float, tag: str) -> dict[str, float]:
    prefix = f"capv{tag}:"
    redis = make_redis(store.url)
    index = VisitIndex(redis, prefix, timedelta(days=WINDOW_DAYS))
    visits = list(national_visits(n, per_day))
    before = store.used()
    cpu0, own0 = store.cpu(), time.process_time()
    t0 = time.perf_counter()
    for i in range(0, n, 5000):
        await index.add(visits[i : i + 5000])
    seconds = time.perf_counter() - t0
    server_cpu, client_cpu = store.cpu() - cpu0, time.process_time() - own0
    after = store.used()
    fam = store.families(prefix)
    people, places = await index.count_indexed()
    assert people == places == n, (people, places, n)
    index.close_sync()
    await redis.aclose()
    encoding = {
        name: store.client.object("encoding", next(store.client.scan_iter(f"{prefix}{name}:*")))
        for name in ("v:p", "v:c")
    }
    say(
        f"indexed {n:,} visits ({tag}; {per_day:g} visits/resident/day: "
        f"{round(per_day * WINDOW_DAYS)} per person key, "
        f"{round(per_day * RESIDENTS_PER_CHECKPOINT * WINDOW_DAYS):,} per checkpoint key; "
        f"person keys {encoding['v:p']}, checkpoint keys {encoding['v:c']}) in {seconds:.1f} s",
        f"{n / seconds:,.0f} visits/s through VisitIndex.add",
    )
    say(
        f"redis server CPU per indexed visit ({tag})",
        f"{server_cpu / n * 1e6:,.1f} µs ({n / server_cpu:,.0f} visits per Redis CPU-second)",
    )
    say(f"client CPU per indexed visit ({tag}, VisitIndex.add)", f"{client_cpu / n * 1e6:,.1f} µs")
    out: dict[str, float] = {
        "total": (after - before) / n,
        "server_us": server_cpu / n * 1e6,
        "client_us": client_cpu / n * 1e6,
    }
    for name, (keys, size) in fam.items():
        say(f"  redis {name}:* ({keys:,} keys)", f"{size / n:,.1f} bytes per visit")
        out[name] = size / n
    say(f"redis used_memory per indexed visit ({tag})", f"{out['total']:,.1f}")
    return out


def tracing_sizes() -> dict[str, float]:
    """Bytes of one exposure in a report's x field, and one infectious interval member."""
    now = datetime.now(UTC)
    xs = [
        Exposure(
            uuid.uuid4().hex,
            secrets.token_hex(16),
            "F2" if i % 30 else "F1",
            secrets.token_hex(16),
            "co-location",
            "HN001-restaurant-000123",
            now - timedelta(hours=2),
            now - timedelta(hours=1),
        )
        for i in range(10_000)
    ]
    per_x = len(dump_exposures(xs)) / len(xs)
    member = interval_member(
        Interval(
            uuid.uuid4().hex,
            secrets.token_hex(16),
            "F0",
            "HN001-restaurant-000123",
            now - timedelta(hours=2),
            now - timedelta(hours=1),
            now - timedelta(days=2),
            now,
        )
    )
    say("tracing: bytes per exposure in a report's x field (JSON)", f"{per_x:,.0f}")
    say("tracing: bytes per infectious interval member (JSON)", f"{len(member):,}")
    return {"exposure": per_x, "interval": float(len(member))}


# ClickHouse ------------------------------------------------------------------------------
def parts(ch: ClickHouse) -> dict[str, tuple[int, int]]:
    rows = ch.call(
        lambda c: (
            c.query(
                "SELECT table, sum(rows), sum(bytes_on_disk) FROM system.parts "
                f"WHERE active AND database = '{ch.db}' GROUP BY table ORDER BY table"
            ).result_rows
        )
    )
    return {str(t): (int(r), int(b)) for t, r, b in rows}


def clickhouse_visits(ch: ClickHouse, n: int, per_day: float) -> dict[str, float]:
    visits = list(national_visits(n, per_day, seed=9))
    places = {
        v.checkpoint_id: {"district": f"Quận {v.checkpoint_id[2:5]}", "ward": "Phường 1"}
        for v in visits
    }
    t0 = time.perf_counter()
    for i in range(0, n, 5000):  # the sink's insert size (DANCU_BATCH_SIZE)
        ch.insert_visits(visits[i : i + 5000], places)
    seconds = time.perf_counter() - t0
    ch.call(lambda c: c.command(f"OPTIMIZE TABLE {ch.db}.visits FINAL"))
    found = parts(ch)
    rows, size = found["visits"]
    assert rows == n, (rows, n)
    say(
        f"clickhouse: {n:,} visits inserted in batches of 5,000 in {seconds:.1f} s",
        f"{n / seconds:,.0f} rows/s (chDB, in process)",
    )
    say("clickhouse bytes on disk per visit row (visits, merged)", f"{size / n:,.1f}")
    cols = ch.call(
        lambda c: (
            c.query(
                "SELECT name, sum(data_compressed_bytes), sum(data_uncompressed_bytes) "
                f"FROM system.columns WHERE database = '{ch.db}' AND table = 'visits' "
                "GROUP BY name ORDER BY 2 DESC"
            ).result_rows
        )
    )
    for name, packed, raw in cols:
        say(f"  column {name}", f"{packed / n:,.1f} bytes/row compressed ({raw / n:,.1f} raw)")
    views = sum(b for t, (_, b) in found.items() if t.endswith("_hourly"))
    say("clickhouse hourly views' bytes per visit (these visits)", f"{views / n:,.2f}")
    return {"visit_row": size / n, "views": views / n, "insert_rows_s": n / seconds}


# API: what validating a device batch costs per scan -------------------------------------
def api_scan_cost(n: int, batch: int, per_day: float) -> float:
    """CPU per scan of POST /v1/scans's own work, without HTTP and Kafka: parse the body,
    validate every scan (the pydantic model the agent shares), group by checkpoint and
    serialise each group (api/routes/scans.py)."""
    import orjson

    from api.routes.scans import parse_scans

    rng = random.Random(5)
    now = datetime.now(UTC)
    visits = [  # recent scans: the API refuses those older than the window
        replace(v, t_in=now - timedelta(minutes=30), t_out=now - timedelta(minutes=5))
        for v in national_visits(n, per_day, seed=17)
    ]
    ids = [make_id("001", rng.randint(1950, 2010), rng.choice(("Nam", "Nữ")), i) for i in range(n)]
    bodies = [
        orjson.dumps(
            [
                scan_json(v, pid)
                for v, pid in zip(visits[i : i + batch], ids[i : i + batch], strict=True)
            ]
        )
        for i in range(0, n, batch)
    ]
    t0 = time.process_time()
    for body in bodies:
        good, bad = parse_scans(orjson.loads(body), datetime.now(UTC), timedelta(days=21))
        assert not bad, bad[:1]
        groups: dict[str, list[dict[str, object]]] = defaultdict(list)
        for sc in good:
            groups[sc.checkpoint_id].append(sc.model_dump(mode="json", exclude_none=True))
        for group in groups.values():
            orjson.dumps(group[0] if len(group) == 1 else group)
    per_scan = (time.process_time() - t0) / n
    say(
        f"API CPU per scan, POST /v1/scans body work ({batch} per request, no HTTP/Kafka)",
        f"{per_scan * 1e6:,.1f} µs ({1 / per_scan:,.0f} scans per CPU-second)",
    )
    return per_scan


# Kafka -------------------------------------------------------------------------------------
def scan_json(v: Visit, person_id: str) -> dict[str, object]:
    return {
        "scan_id": v.scan_id,
        "person_id": person_id,
        "checkpoint_id": v.checkpoint_id,
        "ts": v.t_in.isoformat(),
        "source": v.source,
        "t_out": v.t_out.isoformat(),
    }


async def kafka_bytes(base: Settings, n: int, batch: int, per_day: float) -> dict[str, float]:
    """Bytes on the broker's disk per scan (device batches and single scans) and per
    store-rows visit row, in topics of this run (deleted after)."""
    import orjson
    from aiokafka.admin import AIOKafkaAdminClient

    if base.kafka.bootstrap:
        say("kafka", "skipped: KAFKA_BOOTSTRAP is external (the log directory is not here)")
        return {}
    tag = f"cap{uuid.uuid4().hex[:6]}"
    s = Settings(
        data_dir=base.data_dir,
        topic_prefix=f"{tag}-",
        kafka=base.kafka.model_copy(update={"partitions": 1}),
        redis=base.redis,
    )
    names = ["scans-batched", "scans-single", "store-rows"]
    await create_topics(s, names)
    visits = list(national_visits(n, per_day, seed=13))
    rng = random.Random(3)
    scans = [
        scan_json(v, make_id("001", rng.randint(1950, 2010), rng.choice(("Nam", "Nữ")), i))
        for i, v in enumerate(visits)
    ]
    places = {v.checkpoint_id: {"district": "Quận Ba Đình", "ward": "Phúc Xá"} for v in visits}
    producer = make_producer(s)
    await producer.start()
    try:
        futures = []
        for i in range(0, n, batch):  # a device batch: one record, keyed by its checkpoint
            chunk = scans[i : i + batch]
            key = str(chunk[0]["checkpoint_id"]).encode()
            futures.append(
                await producer.send(s.topic("scans-batched"), orjson.dumps(chunk), key=key)
            )
        for sc in scans:
            futures.append(
                await producer.send(
                    s.topic("scans-single"),
                    orjson.dumps(sc),
                    key=str(sc["checkpoint_id"]).encode(),
                )
            )
        now = datetime.now(UTC)
        for i in range(0, n, 5000):  # a worker's batch of visits, as KafkaVisitSink sends it
            part = visits[i : i + 5000]
            for value in encode("visits", visit_rows(part, places, now)):
                futures.append(
                    await producer.send(s.topic("store-rows"), value, key=part[0].scan_id.encode())
                )
        await asyncio.gather(*futures)
    finally:
        await producer.stop()
    await asyncio.sleep(1.0)
    data = base.data_dir.resolve() / "kafka" / "data"
    out: dict[str, float] = {}
    for name in names:
        log_dir = data / f"{s.topic(name)}-0"
        size = sum(p.stat().st_size for p in log_dir.glob("*.log"))
        out[name] = size / n
        say(f"kafka bytes on disk per scan, topic {name} (one replica)", f"{size / n:,.1f}")
    say(f"  (scans-batched: {batch} scans per record; store-rows: one visit row per scan)", "")
    admin = AIOKafkaAdminClient(bootstrap_servers=s.kafka_bootstrap)
    await admin.start()
    try:
        await admin.delete_topics([s.topic(name) for name in names])
    finally:
        await admin.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--residents", type=int, default=100_000)
    parser.add_argument("--visits", type=int, default=200_000)
    parser.add_argument("--rows", type=int, default=200_000, help="ClickHouse visit rows")
    parser.add_argument("--scans", type=int, default=100_000, help="Kafka scans")
    parser.add_argument("--batch", type=int, default=50, help="scans per device record")
    parser.add_argument("--per-day", type=float, default=3.0, help="visits/resident/day")
    parser.add_argument("--skip", default="", help="comma list: residents,visits,ch,api,kafka")
    args = parser.parse_args()
    skip = set(args.skip.split(","))
    if shutil.which("redis-server") is None:
        sys.exit("redis-server is needed (Debian's redis-server; `make tools`)")
    root = Path(tempfile.mkdtemp(prefix="dancu-capacity-"))
    base = Settings()
    say("machine", f"{os.cpu_count()} cores, load {os.getloadavg()[0]:.1f} (shared)")
    ch = ClickHouse(f"chdb://{root / 'clickhouse'}", "dancu")
    ch.migrate()
    try:
        if "residents" not in skip:
            r = PrivateRedis(root / "residents")
            try:
                asyncio.run(residents(r.url, r, ch, args.residents))
            finally:
                r.stop()
            found = parts(ch)
            for table in ("residents", "health_records"):
                rows, size = found.get(table, (0, 0))
                say(
                    f"clickhouse bytes on disk per resident, {table} ({rows:,} rows)",
                    f"{size / args.residents:,.1f}",
                )
            cluster_key_overhead(root)
        if "visits" not in skip:
            tracing_sizes()
            variants = (("default", None, False), ("listpack128", "128", False))
            for tag, listpack, cluster in (*variants, ("cluster", None, True)):
                r = PrivateRedis(root / f"visits-{tag}", cluster=cluster)
                try:
                    if listpack:
                        r.client.config_set("zset-max-listpack-value", listpack)
                    asyncio.run(visit_index(r, args.visits, args.per_day, tag))
                finally:
                    r.stop()
            say("seen buckets (dedup marks of the window)", f"{SEEN_BUCKETS} sorted sets")
        if "ch" not in skip:
            clickhouse_visits(ch, args.rows, args.per_day)
        if "api" not in skip:
            api_scan_cost(args.scans, args.batch, args.per_day)
        if "kafka" not in skip:
            services.start_all(base)
            asyncio.run(kafka_bytes(base, args.scans, args.batch, args.per_day))
    finally:
        ch.close()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
