"""Import benchmark: ~1,000,000 vaccination rows (CSV) validated, matched against a seeded
registry and sent through Kafka; against a raw baseline in the same run (read the same CSV
with csv.DictReader and fetch every row's registry entry with one pipelined HMGET each —
the least I/O any import must do).

    python bench/imports.py [--rows 1000000]
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import random
import tempfile
import time
import uuid
from pathlib import Path

import uvloop

from dancu.stores import open_stores
from infra import services
from infra.residents import ResidentStore
from infra.settings import Settings
from infra.tables import read_table
from registry.cards import load_rulebook
from registry.importer import Importer
from registry.seeding import seed_city
from registry.synthetic import SeedPlan, SyntheticCity
from tests.integration.helpers import isolated_settings


def write_rows(plan: SeedPlan, path: Path, rows: int) -> int:
    """Every seeded dose becomes a row; 1% typos in names, 0.5% unknown IDs, 0.5% bad IDs."""
    rng = random.Random(5)
    n = 0
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["person_id", "name", "dob", "dose", "vaccine", "date", "site"])
        for chunk in SyntheticCity(plan).chunks():
            for pid, name, dob, doses in zip(
                chunk.ids, chunk.names, chunk.dob, chunk.doses, strict=True
            ):
                for number, (day, vaccine) in enumerate(doses, 1):
                    u = rng.random()
                    if u < 0.01:
                        name = name.lower()
                    elif u < 0.015:
                        pid = pid[:6] + f"{rng.randrange(10**6):06d}"
                    elif u < 0.02:
                        pid = "099" + pid[3:]
                    w.writerow(
                        [pid, name, dob.isoformat(), number, vaccine, day.isoformat(), "TYT"]
                    )
                    n += 1
                    if n >= rows:
                        return n
    return n


def raw_baseline(path: Path, store: ResidentStore) -> float:
    t0 = time.perf_counter()
    with open(path, encoding="utf-8", newline="") as f:
        ids = [row["person_id"] for row in csv.DictReader(f)]
    for i in range(0, len(ids), 10_000):
        store.identities_sync(ids[i : i + 10_000])
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000)
    args = parser.parse_args()
    base = Settings()
    services.start_all(base)
    data = Path(tempfile.mkdtemp(prefix="dancu-bench-imports-"))
    settings = isolated_settings(base, data, f"benchimp{uuid.uuid4().hex[:6]}")
    plan = SeedPlan(residents=max(1000, int(args.rows / 1.3)), seed=11)

    async def run() -> None:
        async with open_stores(settings, clickhouse=True, kafka=True) as st:
            assert st.analytics is not None and st.health_records is not None
            t = time.perf_counter()
            await seed_city(
                plan,
                registry=st.residents,
                places=st.places,
                analytics=st.analytics,
                rules=load_rulebook(),
                pseudonymize=st.pseudonymize,
            )
            print(f"seeded {plan.residents:,} residents in {time.perf_counter() - t:.1f} s")
            path = data / "vaccinations.csv"
            rows = write_rows(plan, path, args.rows)
            raw = await asyncio.to_thread(raw_baseline, path, st.residents)
            header, it = read_table(path)
            t0 = time.perf_counter()
            report = await Importer(st.residents, st.ledger, st.health_records).run(
                "vaccinations", header, it, source=str(path)
            )
            elapsed = time.perf_counter() - t0
        print(f"outcomes: {report.outcomes}")
        print(f"raw baseline (csv read + registry HMGET): {rows / raw:,.0f} rows/s")
        print(
            f"import (validate, match, dedup, Kafka, outcomes): {rows / elapsed:,.0f} rows/s "
            f"({rows:,} rows in {elapsed:.1f} s)"
        )
        print(f"ratio import / raw: {(rows / elapsed) / (rows / raw):.3f}")

    uvloop.run(run())


if __name__ == "__main__":
    main()
