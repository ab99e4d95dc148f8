"""Redis SIGKILLed under a running platform and started again empty: the registry export
re-imported and `dancu rebuild` restore every resident's status and both visit indexes
exactly (a digest before and after), and a scan sent again still counts once.

The Redis is the test's own (a free port, data under tmp_path), never the shared one."""

from __future__ import annotations

import time
from pathlib import Path

import orjson
import pytest

from infra.settings import Settings
from tests.chaos import scenario as sc
from tests.chaos.report import Outcome, record
from tests.chaos.support import (
    PrivateRedis,
    digest,
    indexed,
    on_redis,
    once,
    statuses,
    stored,
    wait_for,
)
from tests.integration.conftest import Platform

pytestmark = [pytest.mark.integration, pytest.mark.chaos]

EXTRA = 60  # residents besides the report's six
BULK = 20_000  # scans besides the report's visits
REPORT = "chaos-redis-lost"


def load_registry(platform: Platform, tmp_path: Path) -> None:
    path = tmp_path / "residents.csv"
    path.write_text(sc.residents_csv(sc.bystanders(EXTRA)), encoding="utf-8")
    done = platform.run_cli("import", "residents", str(path))
    assert done.returncode == 0, done.stderr[-3000:]
    assert orjson.loads(done.stdout)["outcomes"]["loaded"] == EXTRA + len(sc.IDS)


def test_redis_killed_and_restarted_empty_rebuild_restores_statuses_and_indexes(
    base_settings: Settings, private_redis: PrivateRedis, tmp_path: Path
) -> None:
    extra = sc.bystanders(EXTRA)
    everyone = [*sc.IDS.values(), *(pid for pid, _, _ in extra)]
    expected = sc.expected_colours(extra)
    scans = [*sc.visits(), *sc.bulk_scans(BULK, "redis-lost", seed=3)]
    scan_ids = [str(s["scan_id"]) for s in scans]
    platform = Platform(
        on_redis(base_settings, private_redis.url), tmp_path / "dancu", REDIS_URL=private_redis.url
    )
    try:
        load_registry(platform, tmp_path)
        platform.start()
        steward = platform.api("steward")
        places = [
            *sc.checkpoints(),
            *({"checkpoint_id": cp, "type": "shop", "district": sc.DISTRICT}
              for cp in sc.BULK_CHECKPOINTS),
        ]  # fmt: skip
        assert steward.post("/v1/checkpoints", json=places).status_code == 201
        for kind, body in (
            ("vaccinations", sc.vaccinations_csv(extra)),
            ("test-results", sc.results_csv(extra)),
        ):
            r = steward.post(f"/v1/imports/{kind}", content=body.encode())
            assert r.status_code == 201, r.text
        device = platform.as_device(*sc.CHECKPOINTS, *sc.BULK_CHECKPOINTS)
        for i in range(0, len(scans), 500):
            r = device.post("/v1/scans", json=scans[i : i + 500])
            assert r.status_code == 202 and r.json()["accepted"] == len(scans[i : i + 500])
        platform.wait_processed(len(scans), timeout=180)
        official = platform.api("official", sc.DISTRICT)
        assert official.post("/v1/reports/f0", json=sc.report(REPORT)).status_code == 202
        done = wait_for(
            lambda: official.get(f"/v1/reports/f0/{REPORT}").json(),
            lambda s: s["status"] == "done",
            120,
            "the report traced",
        )
        assert done["counts"] == {"F1": len(sc.F1), "F2": len(sc.F2)}
        # Every import and flag applied, and nothing moving any more.
        wait_for(
            lambda: statuses(platform, everyone, sc.DISTRICT),
            lambda got: {p: s[0] for p, s in got.items()} == expected,
            120,
            "every status applied",
        )
        time.sleep(2)
        before_status = statuses(platform, everyone, sc.DISTRICT)
        assert {p: s[0] for p, s in before_status.items()} == expected
        before_index = indexed(platform.settings)
        assert once(scan_ids, before_index.by_person) == (0, 0, 0)
        assert once(scan_ids, before_index.by_checkpoint) == (0, 0, 0)
        before = digest([before_status, before_index.entries])
        platform.wait_sink_drained()  # the rebuild reads what the sink wrote

        # Redis dies under the running platform and comes back with nothing.
        private_redis.kill()
        private_redis.wipe()
        private_redis.start()
        assert indexed(platform.settings).entries == []
        platform.stop()  # re-importing the registry needs the store (embedded ClickHouse)
        platform.sign_out()  # the credentials went with the rest
        load_registry(platform, tmp_path)  # the registry export, again
        started = time.monotonic()
        rebuilt = platform.run_cli("rebuild")
        recovery = time.monotonic() - started
        assert rebuilt.returncode == 0, rebuilt.stderr[-3000:]
        report = orjson.loads(rebuilt.stdout)
        assert report["visits_restored"] == len(scans)
        assert report["residents_restored"] == sc.with_records(extra)  # doses, tests
        assert report["exposures_restored"] == len(sc.F1) + len(sc.F2)
        platform.start()

        after_status = statuses(platform, everyone, sc.DISTRICT)
        after_index = indexed(platform.settings)
        changed = sorted(p for p in everyone if after_status[p] != before_status[p])
        want, got = set(before_index.entries), set(after_index.entries)
        p_missing, p_dup, p_extra = once(scan_ids, after_index.by_person)
        c_missing, c_dup, c_extra = once(scan_ids, after_index.by_checkpoint)
        record(
            Outcome(
                "Redis killed, restarted empty, rebuilt",
                len(scans) + len(everyone),
                len(changed) + len(want - got),
                p_dup + c_dup,
                recovery,
                f"{len(scans):,} scans and {len(everyone)} residents' statuses; recovery is "
                f"`dancu rebuild` after re-importing the registry export; "
                f"{len(changed)} statuses and {len(want - got)} index entries not restored, "
                f"{len(got - want)} extra",
            )
        )
        assert changed == [], {p: (before_status[p], after_status[p]) for p in changed[:5]}
        assert (p_missing, p_dup, p_extra, c_missing, c_dup, c_extra) == (0,) * 6
        assert sorted(got - want) == [] and sorted(want - got) == []
        assert digest([after_status, after_index.entries]) == before

        # The dedup marks came back too: the report's visits sent again count nothing.
        again = platform.as_device(*sc.CHECKPOINTS)
        assert again.post("/v1/scans", json=sc.visits()).status_code == 202
        stats = platform.wait_processed(len(scans), timeout=120)
        assert stats["scans_processed"] == len(scans), stats
        platform.stop()
        ch = stored(platform, scan_ids)
        assert ch.visits == {s: 1 for s in scan_ids}
        tiers = sorted(t for (r, _, t), n in ch.exposures.items() if r == REPORT for _ in range(n))
        assert tiers == ["F1"] * len(sc.F1) + ["F2"] * len(sc.F2)
    finally:
        platform.stop()
        platform.sign_out()
