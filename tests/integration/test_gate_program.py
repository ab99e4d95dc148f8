"""The gate program against a real platform: the platform stops mid-run while the gate
keeps scanning (decisions go offline, scans queue on disk), comes back, and every scan
is in ClickHouse exactly once; a gate program stopped with scans still queued sends them
when it starts again."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import pytest

from gate.frames import Look, render
from registry.ids import make_id
from tests.integration.conftest import Platform

pytestmark = pytest.mark.integration

CP = "gate-test-1"
DISTRICT, WARD = "Ba Đình", "Phường Kim Mã"
N, M = 40, 5  # cards in the main run; more cards in the run that ends with scans queued


def people(n: int) -> list[tuple[str, int, str]]:
    """(ID, birth year, gender) of n residents."""
    out = []
    for i in range(n):
        year, gender = 1950 + i % 50, ("Nam", "Nữ")[i % 2]
        out.append((make_id("001", year, gender, 40_000 + i), year, gender))
    return out


GIVEN = ("An", "Bình", "Chi", "Dũng", "Giang", "Hà", "Khánh", "Lan", "Minh", "Ngọc")


def name(i: int) -> str:
    """A name without digits (a card's name may hold none)."""
    return f"Nguyễn {GIVEN[i // 10 % 10]} {GIVEN[i % 10]}"


def residents_csv(everyone: list[tuple[str, int, str]]) -> str:
    rows = ["id,name,dob,gender,address,district,ward,household_id"]
    rows += [
        f"{pid},{name(i)},{year}-01-01,{gender},Số {i} Kim Mã,{DISTRICT},{WARD},HG{i}"
        for i, (pid, year, gender) in enumerate(everyone)
    ]
    return "\n".join(rows) + "\n"


def card(i: int, pid: str, year: int, gender: str) -> str:
    address = f"Số {i} Ngõ 1 Kim Mã, {WARD}, Quận {DISTRICT}, Hà Nội"
    return f"{pid}||{name(i)}|0101{year}|{gender}|{address}|01012022"


def write_cards(directory: Path, cards: list[str]) -> None:
    directory.mkdir(parents=True)
    for i, text in enumerate(cards):
        cv2.imwrite(str(directory / f"{i:04d}.png"), render([text], [Look(size=220)], seed=i))


def gate_command(
    platform: Platform, device: Path, queue: Path, images: Path, *extra: str
) -> list[str]:
    return [
        sys.executable, "-m", "dancu", "gate",
        "--checkpoint", CP, "--images", str(images), "--api", platform.url,
        "--device-file", str(device), "--queue", str(queue),
        "--offline-policy", "allow", "--check-timeout", "10", *extra,
    ]  # fmt: skip


def summary_of(stderr: str) -> dict[str, object]:
    last = json.loads(stderr.strip().splitlines()[-1])
    assert last["event"] == "summary", stderr[-2000:]
    return dict(last)


def wait_until(condition: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if callable(condition) and condition():
            return
        time.sleep(0.1)
    raise AssertionError(f"not within {timeout}s: {what}")


def test_the_platform_stops_mid_run_and_every_scan_lands_once(
    platform: Platform, tmp_path: Path
) -> None:
    everyone = people(N + M)
    cards = [card(i, *p) for i, p in enumerate(everyone)]
    (tmp_path / "residents.csv").write_text(residents_csv(everyone), encoding="utf-8")
    loaded = platform.run_cli("import", "residents", str(tmp_path / "residents.csv"))
    assert loaded.returncode == 0, loaded.stderr
    platform.start()
    place = {"checkpoint_id": CP, "name": "Cổng Kim Mã", "type": "gate", "district": DISTRICT}
    r = platform.client("steward").post("/v1/checkpoints", json=[place])
    assert r.status_code == 201, r.text
    auth = platform.device(CP)
    device = tmp_path / "device.json"
    device.write_text(json.dumps({"device_id": auth.device_id, "key": auth.key}))
    queue = tmp_path / "gate.sqlite"
    write_cards(tmp_path / "main", cards[:N])
    write_cards(tmp_path / "more", cards[N:])
    (tmp_path / "none").mkdir()

    # 1. Forty cards at 2 frames/s; the platform stops after the sixth decision and
    #    comes back once the gate has decided offline for a while.
    cmd = gate_command(platform, device, queue, tmp_path / "main", "--fps", "2", "--pace")
    errors = tmp_path / "gate.stderr"
    gate = subprocess.Popen(
        [*cmd, "--drain-timeout", "240"],
        env=platform.env,
        stdout=subprocess.PIPE,
        stderr=errors.open("w"),
        text=True,
    )
    got: list[dict[str, object]] = []
    raw: list[str] = []

    def read() -> None:
        for line in gate.stdout or []:
            raw.append(line)
            got.append(json.loads(line))

    reader = threading.Thread(target=read)
    reader.start()
    try:
        wait_until(lambda: len(got) >= 6, 90, "six decisions online")
        platform.stop()
        wait_until(lambda: sum(g["source"] == "offline" for g in got) >= 3, 60, "offline decisions")
        platform.start()
        gate.wait(timeout=300)
    finally:
        if gate.poll() is None:
            gate.kill()
        reader.join(10)
    stderr = errors.read_text()
    assert gate.returncode == 0, stderr[-3000:]
    assert len(raw) == len(got), raw[len(got) :][:2]
    assert summary_of(stderr)["pending_at_exit"] == 0
    assert len(got) == N and all(g["decision"] == "allow" for g in got), got
    sources = [g["source"] for g in got]
    assert sources[:6] == ["online"] * 6 and "offline" in sources
    offline = next(g for g in got if g["source"] == "offline")
    assert "offline policy: allow" in offline["reasons"]  # type: ignore[operator]
    assert all(str(g["person_id"]).startswith("********") for g in got)

    # 2. The platform stops; the gate decides five more cards offline and exits with
    #    them queued; the platform comes back; the gate starts again and sends them.
    platform.stop()
    more = subprocess.run(
        [*gate_command(platform, device, queue, tmp_path / "more"), "--drain-timeout", "0"],
        env=platform.env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert more.returncode == 0, more.stderr[-3000:]
    queued = [json.loads(x) for x in more.stdout.splitlines()]
    assert [g["source"] for g in queued] == ["offline"] * M
    assert summary_of(more.stderr)["pending_at_exit"] == M
    platform.start()
    again = subprocess.run(
        [*gate_command(platform, device, queue, tmp_path / "none"), "--drain-timeout", "120"],
        env=platform.env, capture_output=True, text=True, timeout=180, check=False,
    )  # fmt: skip
    assert again.returncode == 0, again.stderr[-3000:]
    assert summary_of(again.stderr)["pending_at_exit"] == 0

    # 3. Every entry is one visit: in the live counts, and by scan ID in ClickHouse.
    scan_ids = [str(g["scan_id"]) for g in [*got, *queued]]
    assert len(set(scan_ids)) == N + M
    stats = platform.wait_processed(N + M)
    assert stats["scans_processed"] == N + M and stats["visits_total"] == N + M, stats
    platform.stop()
    counts = visit_counts(platform)
    assert counts == {sid: 1 for sid in scan_ids}


def visit_counts(platform: Platform) -> dict[str, int]:
    """scan_id → visits of this gate's checkpoint in ClickHouse (deduplicated as the
    platform reads them), read by a process of its own: the embedded ClickHouse is one
    process's at a time, so the platform is stopped first."""
    code = (
        "import json, sys; from infra.clickhouse import ClickHouse; "
        "ch = ClickHouse(sys.argv[1], sys.argv[2]); "
        "rows = ch.call(lambda c: c.query("
        "f'SELECT scan_id, count() FROM {ch.db}.visits FINAL WHERE checkpoint_id = %(cp)s "
        "GROUP BY scan_id', parameters={'cp': sys.argv[3]}).result_rows); "
        "print(json.dumps({s: n for s, n in rows}))"
    )
    s = platform.settings
    out = subprocess.run(
        [sys.executable, "-c", code, s.clickhouse_url, s.clickhouse.database, CP],
        env=platform.env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    found: dict[str, int] = json.loads(out.stdout.strip().splitlines()[-1])
    return found
