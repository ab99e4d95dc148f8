"""The API SIGKILLed under gate-device load: several gate programs (`dancu gate`, each its
own checkpoint, device key and on-disk queue) read cards while the platform's API process
is killed and started again. The gates decide offline meanwhile, queue their entries and
replay them; afterwards every scan every device read is in ClickHouse exactly once and in
both Redis visit indexes exactly once, and no status moved."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import orjson
import pytest

from gate.frames import Look, render
from tests.chaos import scenario as sc
from tests.chaos.report import Outcome, record
from tests.chaos.support import indexed, once, roles, sigkill_api, statuses, stored, wait_for
from tests.integration.conftest import Platform

pytestmark = [pytest.mark.integration, pytest.mark.chaos]

DEVICES, CARDS = 4, 30  # gates, and cards each gate reads (one a second)
OFFLINE = 6  # decisions each gate makes offline before the API is started again


def card(i: int, pid: str, year: int, gender: str) -> str:
    """The QR text of resident ``i``'s card (as scenario.residents_csv registers them)."""
    address = f"Số {i} Ngõ 1 Kim Mã, {sc.WARD}, Quận {sc.DISTRICT}, Hà Nội"
    return f"{pid}||{sc.name_of(i)}|0101{year}|{gender}|{address}|01012022"


class Gate:
    """One `dancu gate` process reading a directory of card images, its decisions
    collected from stdout as they come."""

    def __init__(self, platform: Platform, k: int, root: Path) -> None:
        self.checkpoint = f"chaos-gate-{k}"
        self.root = root
        self.decisions: list[dict[str, object]] = []
        auth = platform.device(self.checkpoint)
        (root / "device.json").write_text(
            json.dumps({"device_id": auth.device_id, "key": auth.key})
        )
        self.stderr = root / "gate.stderr"
        command = [
            sys.executable, "-m", "dancu", "gate", "--checkpoint", self.checkpoint,
            "--images", str(root / "cards"), "--api", platform.url,
            "--device-file", str(root / "device.json"), "--queue", str(root / "queue.sqlite"),
            "--offline-policy", "allow", "--check-timeout", "2", "--fps", "1", "--pace",
            "--drain-timeout", "240",
        ]  # fmt: skip
        self.proc = subprocess.Popen(
            command,
            env=platform.env,
            stdout=subprocess.PIPE,
            stderr=self.stderr.open("w"),
            text=True,
        )
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout or []:
            self.decisions.append(json.loads(line))

    def count(self, source: str) -> int:
        return sum(d["source"] == source for d in list(self.decisions))

    def summary(self) -> dict[str, object]:
        last = json.loads(self.stderr.read_text().strip().splitlines()[-1])
        assert last["event"] == "summary", self.stderr.read_text()[-2000:]
        return dict(last)

    def finish(self, timeout: float) -> None:
        try:
            self.proc.wait(timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
            self.reader.join(10)


def test_the_api_killed_under_gate_load_devices_queue_and_replay_nothing_lost(
    platform: Platform, tmp_path: Path
) -> None:
    extra = sc.bystanders(DEVICES * CARDS)
    (tmp_path / "residents.csv").write_text(sc.residents_csv(extra), encoding="utf-8")
    loaded = platform.run_cli("import", "residents", str(tmp_path / "residents.csv"))
    assert loaded.returncode == 0, loaded.stderr[-3000:]
    platform.start()
    places = [
        {"checkpoint_id": f"chaos-gate-{k}", "type": "gate", "district": sc.DISTRICT}
        for k in range(DEVICES)
    ]
    assert platform.api("steward").post("/v1/checkpoints", json=places).status_code == 201
    for k in range(DEVICES):
        cards = tmp_path / f"gate{k}" / "cards"
        cards.mkdir(parents=True)
        for j in range(CARDS):
            i = k * CARDS + j
            frame = render([card(i, *extra[i])], [Look(size=220)], seed=i)
            cv2.imwrite(str(cards / f"{j:04d}.png"), frame)
    people = [pid for pid, _, _ in extra]
    before = statuses(platform, people, sc.DISTRICT)

    gates = [Gate(platform, k, tmp_path / f"gate{k}") for k in range(DEVICES)]
    try:
        wait_for(
            lambda: [g.count("online") for g in gates],
            lambda n: min(n) >= 2,
            120,
            "two online decisions at every gate",
        )
        api = roles(platform).api
        sigkill_api(platform)
        killed = time.monotonic()
        wait_for(
            lambda: [g.count("offline") for g in gates],
            lambda n: min(n) >= OFFLINE,
            120,
            f"{OFFLINE} offline decisions at every gate",
        )
        restarted = time.monotonic()
        platform.start(timeout=240)  # the new API answers gates before it is healthy
        healthy = time.monotonic()
        assert roles(platform).api != api
        for g in gates:
            g.finish(300)
    finally:
        for g in gates:
            if g.proc.poll() is None:
                g.proc.kill()
    decisions = [d for g in gates for d in g.decisions]
    scan_ids = [str(d["scan_id"]) for d in decisions]
    total = DEVICES * CARDS
    stats = platform.wait_processed(total, timeout=180)
    recovery = time.monotonic() - restarted
    after = statuses(platform, people, sc.DISTRICT)
    index = indexed(platform.settings)
    platform.stop()
    ch = stored(platform)
    p_once, c_once, ch_once = (
        once(scan_ids, index.by_person),
        once(scan_ids, index.by_checkpoint),
        once(scan_ids, ch.visits),
    )
    replayed = sum(n - 1 for s, n in ch.visit_rows.items() if n > 1)
    offline = sum(g.count("offline") for g in gates)
    record(
        Outcome(
            "API SIGKILLed under gate-device load",
            len(scan_ids),
            max(p_once[0], c_once[0], ch_once[0]),
            max(p_once[1], c_once[1], ch_once[1]),
            recovery,
            f"{DEVICES} `dancu gate` devices; the API down {restarted - killed:.0f} s, "
            f"{offline} entries decided offline and queued; the platform healthy "
            f"{healthy - restarted:.0f} s after its restart; {replayed} ClickHouse rows "
            "written twice by a replay, collapsed by scan ID",
        )
    )
    for g in gates:
        assert g.proc.returncode == 0, g.stderr.read_text()[-3000:]
        assert g.summary()["pending_at_exit"] == 0
        assert len(g.decisions) == CARDS and g.count("offline") >= OFFLINE
        assert all(d["decision"] == "allow" for d in g.decisions), g.decisions
    assert len(set(scan_ids)) == total
    assert stats["scans_processed"] == total and stats["visits_total"] == total, stats
    assert (p_once, c_once, ch_once) == ((0, 0, 0),) * 3
    assert ch.visits == {s: 1 for s in scan_ids}
    assert sum(ch.exposures.values()) == 0  # nobody was reported
    assert after == before, orjson.dumps(
        {p: (before[p], after[p]) for p in people if before[p] != after[p]}
    )[:2000]
