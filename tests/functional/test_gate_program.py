"""The gate program end to end on generated frames, against a fake platform (httpx
MockTransport): decisions as JSON lines, scans signed and sent once, offline decisions
and scans queued on disk then replayed in order, a restart losing nothing, a video file
through ``dancu gate --video``."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import cv2
import httpx
import numpy as np
import pytest

from gate.frames import Look, cccd_payload, render
from gate.http_auth import DeviceAuth
from gate.program import GateConfig, GateProgram
from gate.queue import ScanQueue
from gate.remote import GateRemote
from gate.sender import Sender
from gate.sources import Frame, image_frames, video_frames
from gate.status import serve_status
from infra.auth import verify
from infra.services import free_ports
from tracing.events import validate_scan

CP = "cp-gate-1"
DEVICE, KEY = "dev-test", "k" * 43


class FakePlatform:
    """The two routes the gate calls, with the real scan validation and signature check.
    ``down`` makes it unreachable (connection refused) or, with ``status``, answer 503."""

    def __init__(self, colours: dict[str, str]) -> None:
        self.colours = colours  # person_id → colour; others are not in the registry
        self.down = False
        self.down_status = 0  # 0: connection refused; else this HTTP status
        self.checks: list[str] = []
        self.received: list[str] = []  # scan IDs acknowledged, in order
        self.scans: dict[str, dict[str, object]] = {}
        self.unsigned = 0

    def handler(self, request: httpx.Request) -> httpx.Response:
        signed = verify(
            KEY,
            request.method,
            request.url.raw_path.decode(),
            request.headers.get("X-Timestamp"),
            request.content,
            request.headers.get("X-Signature"),
            time.time(),
            request.headers.get("X-Nonce"),
        )
        if request.headers.get("X-Device-Id") != DEVICE or not signed.ok:
            self.unsigned += 1
            return httpx.Response(401, json={"error": "unsigned"})
        if self.down:
            if not self.down_status:
                raise httpx.ConnectError("connection refused", request=request)
            return httpx.Response(self.down_status, json={"error": "unavailable"})
        body = json.loads(request.content)
        if request.url.path == "/v1/gate/check":
            assert body["checkpoint_id"] == CP
            person = body["qr"].split("|")[0]
            self.checks.append(person)
            colour = self.colours.get(person)
            if colour is None:
                return httpx.Response(
                    200,
                    json={"decision": "deny", "colour": "none", "reasons": ["ID not found"]},
                )
            allow = colour in ("green", "yellow")
            return httpx.Response(
                200,
                json={
                    "decision": "allow" if allow else "deny",
                    "colour": colour,
                    "reasons": [f"card {colour}"],
                },
            )
        if request.url.path == "/v1/scans":
            for item in body["scans"]:
                scan, errors = validate_scan(item, datetime.now(UTC))
                assert scan is not None, errors
                assert scan.checkpoint_id == CP and scan.source == "gate"
                self.received.append(scan.scan_id)
                self.scans[scan.scan_id] = item
            return httpx.Response(202, json={"accepted": len(body["scans"]), "rejected": []})
        return httpx.Response(404, json={"error": "no route"})


def person(payload: str) -> str:
    return payload.split("|")[0]


@pytest.fixture(scope="module")
def cards() -> list[str]:
    rng = np.random.default_rng(7)
    return [cccd_payload(rng) for _ in range(8)]


def card_frame(payload: str, seed: int) -> np.ndarray:
    return render([payload], [Look(size=220)], seed=seed)


def blank_frame(seed: int) -> np.ndarray:
    return render([], [], seed=seed)


def frames_of(images: list[np.ndarray], fps: float = 10.0, hook: object = None) -> Iterator[Frame]:
    for i, image in enumerate(images):
        if callable(hook):
            hook(i)
        yield Frame(image, i / fps, datetime.now(UTC), f"f{i}")


def make_program(
    fake: FakePlatform, queue: ScanQueue, policy: str = "deny", drain: float = 5.0
) -> tuple[GateProgram, io.StringIO, httpx.AsyncClient]:
    http = httpx.AsyncClient(
        base_url="http://platform",
        transport=httpx.MockTransport(fake.handler),
        auth=DeviceAuth(DEVICE, KEY),
    )
    remote = GateRemote(http, CP)
    out = io.StringIO()
    sender = Sender(queue, remote, first_delay=0.01, max_delay=0.05, log=io.StringIO())
    config = GateConfig(CP, DEVICE, debounce=3.0, offline_policy=policy, drain_timeout=drain)  # type: ignore[arg-type]
    return GateProgram(config, remote, queue, out=out, sender=sender), out, http


def lines(out: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(x) for x in out.getvalue().splitlines()]


async def test_a_directory_of_card_images_gives_one_decision_per_card(
    tmp_path: Path, cards: list[str]
) -> None:
    colours = {person(cards[0]): "green", person(cards[1]): "red", person(cards[2]): "yellow"}
    fake = FakePlatform(colours)
    shots = tmp_path / "shots"
    shots.mkdir()
    # Card 0 held for 5 frames, card 1, card 2 twice in a row, an unknown card (3), a
    # poster code, a shop's menu QR, an empty frame, a broken file.
    sequence = [cards[0]] * 5 + [cards[1], cards[2], cards[2], cards[3]]
    for i, payload in enumerate(sequence):
        cv2.imwrite(str(shots / f"{i:03d}.png"), card_frame(payload, i))
    cv2.imwrite(str(shots / "100.png"), card_frame("DANCU1|P|cp-gate-1|sig", 100))
    cv2.imwrite(str(shots / "101.jpg"), card_frame("https://quan-an.example/menu", 101))
    cv2.imwrite(str(shots / "102.png"), blank_frame(102))
    (shots / "103.png").write_bytes(b"not a png")
    with ScanQueue(tmp_path / "q.sqlite") as queue:
        program, out, http = make_program(fake, queue)
        async with http:
            summary = await program.run(image_frames(shots, fps=10))
        assert queue.depth() == 0
    got = lines(out)
    cardlines = [g for g in got if g["kind"] == "cccd"]
    assert [g["person_id"] for g in cardlines] == ["********" + person(c)[-4:] for c in cards[:4]]
    assert [(g["decision"], g["colour"]) for g in cardlines] == [
        ("allow", "green"),
        ("deny", "red"),
        ("allow", "yellow"),
        ("deny", "none"),
    ]
    assert all(g["source"] == "online" and g["checkpoint_id"] == CP for g in cardlines)
    assert fake.checks == [person(c) for c in cards[:4]]  # each card checked once
    # Scans for the two entries only, each once, as the decisions said.
    allowed = [g["scan_id"] for g in cardlines if g["decision"] == "allow"]
    assert all(allowed) and fake.received == allowed
    assert {fake.scans[s]["person_id"] for s in fake.received} == {
        person(cards[0]),
        person(cards[2]),
    }
    assert [g["scan_id"] for g in cardlines if g["decision"] == "deny"] == [None, None]
    others = [g for g in got if g["kind"] != "cccd"]
    assert [(g["kind"], g["decision"], g["source"]) for g in others] == [
        ("dancu", "ignored", "local"),
        ("unrecognised", "ignored", "local"),
    ]
    assert "not a CCCD payload" in str(others[1]["reasons"])
    assert not any(person(c) in out.getvalue() for c in cards)  # IDs masked on screen
    assert fake.unsigned == 0
    assert summary.unreadable == 1 and summary.frames == len(sequence) + 4


async def test_offline_decisions_queue_scans_then_replay_in_order(
    tmp_path: Path, cards: list[str]
) -> None:
    fake = FakePlatform({person(c): "green" for c in cards})
    images = []
    for i, c in enumerate(cards):
        images += [card_frame(c, i), blank_frame(100 + i)]

    def outage(i: int) -> None:
        # Down from the second card to the sixth (connection refused, then 503).
        fake.down = 2 <= i < 12
        fake.down_status = 503 if i >= 7 else 0

    with ScanQueue(tmp_path / "q.sqlite") as queue:
        program, out, http = make_program(fake, queue, policy="allow", drain=10)
        async with http:
            await program.run(frames_of(images, fps=0.2, hook=outage))
        assert queue.depth() == 0 and queue.counts()["sent"] == len(cards)
    got = lines(out)
    assert [g["source"] for g in got] == ["online"] + ["offline"] * 5 + ["online"] * 2
    assert all(g["decision"] == "allow" for g in got)
    offline = got[1]
    assert offline["colour"] == "none" and "offline policy: allow" in offline["reasons"]
    assert str(offline["reasons"][0]).startswith("offline: ")  # type: ignore[index]
    # Every entry reached the platform once, in the order the gate saw them.
    assert fake.received == [g["scan_id"] for g in got]
    assert len(set(fake.received)) == len(cards)


async def test_offline_deny_and_last_known_policies(tmp_path: Path, cards: list[str]) -> None:
    fake = FakePlatform({person(cards[0]): "green", person(cards[1]): "red"})
    seen = [card_frame(cards[0], 1), card_frame(cards[1], 2), card_frame(cards[2], 3)]
    with ScanQueue(tmp_path / "q.sqlite") as queue:
        program, out, http = make_program(fake, queue, policy="last-known")
        async with http:
            await program.run(frames_of(seen, fps=0.1))  # online: remembered
            fake.down = True
            program.debouncer = type(program.debouncer)(3.0)
            await program.run(frames_of([*seen[:2], card_frame(cards[3], 4)], fps=0.1))
        got = lines(out)[3:]
        assert [(g["decision"], g["source"]) for g in got] == [
            ("allow", "offline"),  # last known: allowed green
            ("deny", "offline"),  # last known: red
            ("deny", "offline"),  # never checked at this gate
        ]
        assert got[0]["colour"] == "green" and "no decision for this card" in str(got[2])
        assert queue.depth() == 1  # the offline entry waits on disk

        deny, out2, http2 = make_program(fake, queue, policy="deny", drain=0)
        async with http2:
            await deny.run(frames_of(seen[:1], fps=0.1))
        assert lines(out2)[0]["decision"] == "deny"
        assert "offline policy: deny" in lines(out2)[0]["reasons"]  # type: ignore[operator]


async def test_a_restart_sends_what_was_queued_and_nothing_twice(
    tmp_path: Path, cards: list[str]
) -> None:
    fake = FakePlatform({person(c): "green" for c in cards})
    fake.down = True
    path = tmp_path / "q.sqlite"
    with ScanQueue(path) as queue:
        program, out, http = make_program(fake, queue, policy="allow", drain=0)
        async with http:
            summary = await program.run(frames_of([card_frame(c, i) for i, c in enumerate(cards)]))
        assert summary.pending_at_exit == len(cards)
    queued = [g["scan_id"] for g in lines(out)]
    assert fake.received == []

    fake.down = False
    with ScanQueue(path) as queue:  # the gate program starts again: nothing in view
        program, _, http = make_program(fake, queue)
        async with http:
            await program.run(iter(()))
        assert queue.depth() == 0
    assert fake.received == queued

    with ScanQueue(path) as queue:  # and once more: all acknowledged, nothing re-sent
        program, _, http = make_program(fake, queue)
        async with http:
            await program.run(iter(()))
    assert fake.received == queued


async def test_the_status_page_shows_decisions_and_queue_depth(
    tmp_path: Path, cards: list[str]
) -> None:
    fake = FakePlatform({person(cards[0]): "green"})
    fake.down = True
    with ScanQueue(tmp_path / "q.sqlite") as queue:
        program, _, http = make_program(fake, queue, policy="allow", drain=0)
        async with http:
            await program.run(frames_of([card_frame(cards[0], 1)]))
        port = free_port()
        server = await serve_status(program.status, port)
        try:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as page:
                status = (await page.get("/status.json")).json()
                html = (await page.get("/")).text
                missing = await page.get("/nope")
        finally:
            server.close()
            await server.wait_closed()
    assert status["queue_depth"] == 1 and status["checks_online"] is False
    assert status["recent"][0]["person_id"] == "********" + person(cards[0])[-4:]
    assert "OFFLINE" in html and "queue depth: <b>1</b>" in html
    assert person(cards[0]) not in html
    assert missing.status_code == 404


def free_port() -> int:
    return free_ports(1)[0]


def write_video(path: Path, images: list[np.ndarray], fps: float = 25.0) -> None:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (640, 480))
    assert writer.isOpened(), "OpenCV cannot write MJPG .avi here"
    for image in images:
        writer.write(image)
    writer.release()


@pytest.fixture(scope="module")
def video(tmp_path_factory: pytest.TempPathFactory, cards: list[str]) -> Path:
    """Card A held for 40 frames (1.6 s), a gap, card B for 30, a gap of 2 s, card A
    again for 20 frames: three entries at a 1 s debounce."""
    a, b = card_frame(cards[0], 1), card_frame(cards[1], 2)
    blank = blank_frame(3)
    images = [a] * 40 + [blank] * 10 + [b] * 30 + [blank] * 50 + [a] * 20
    path = tmp_path_factory.mktemp("video") / "gate.avi"
    write_video(path, images)
    return path


async def test_a_video_counts_a_card_held_for_many_frames_once(
    tmp_path: Path, video: Path, cards: list[str]
) -> None:
    fake = FakePlatform({person(cards[0]): "green", person(cards[1]): "yellow"})
    with ScanQueue(tmp_path / "q.sqlite") as queue:
        program, out, http = make_program(fake, queue)
        program.debouncer = type(program.debouncer)(1.0)
        async with http:
            summary = await program.run(video_frames(video))
    assert summary.frames == 150
    assert fake.checks == [person(cards[0]), person(cards[1]), person(cards[0])]
    assert len(fake.received) == 3 and len(set(fake.received)) == 3
    assert [g["decision"] for g in lines(out)] == ["allow"] * 3


def test_dancu_gate_video_runs_offline_and_queues_each_entry_once(
    tmp_path: Path, video: Path, cards: list[str]
) -> None:
    """The command itself, the platform unreachable (nothing listens on its port)."""
    device = tmp_path / "device.json"
    device.write_text(json.dumps({"device_id": DEVICE, "key": KEY, "checkpoint_id": CP}))
    queue = tmp_path / "gate.sqlite"
    result = subprocess.run(
        [
            sys.executable, "-m", "dancu", "gate",
            "--checkpoint", CP, "--video", str(video),
            "--api", f"http://127.0.0.1:{free_port()}",
            "--device-file", str(device), "--queue", str(queue),
            "--debounce", "1", "--offline-policy", "allow", "--drain-timeout", "0",
        ],
        capture_output=True, text=True, timeout=120, check=False,
        env={**os.environ, "DANCU_DATA_DIR": str(tmp_path / "data")},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    got = [json.loads(x) for x in result.stdout.splitlines()]
    a, b = ("********" + person(c)[-4:] for c in cards[:2])
    assert [(g["person_id"], g["decision"], g["source"]) for g in got] == [
        (a, "allow", "offline"),
        (b, "allow", "offline"),
        (a, "allow", "offline"),
    ]
    summary = json.loads(result.stderr.strip().splitlines()[-1])
    assert summary["event"] == "summary" and summary["pending_at_exit"] == 3
    with ScanQueue(queue) as q:
        assert [p.scan_id for p in q.pending()] == [g["scan_id"] for g in got]


def test_dancu_gate_refuses_unclear_options(tmp_path: Path) -> None:
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "dancu", "gate", *args],
            capture_output=True, text=True, timeout=60, check=False,
            env={**os.environ, "DANCU_GATE_DEVICE_ID": DEVICE, "DANCU_GATE_DEVICE_KEY": KEY},
        )  # fmt: skip

    both = run("--checkpoint", CP, "--images", str(tmp_path), "--camera", "0")
    assert both.returncode == 2 and "exactly one of --camera, --video, --images" in both.stderr
    policy = run("--checkpoint", CP, "--images", str(tmp_path), "--offline-policy", "maybe")
    assert policy.returncode == 2 and "--offline-policy 'maybe'" in policy.stderr
    missing = run("--checkpoint", CP, "--video", str(tmp_path / "none.avi"))
    assert missing.returncode == 2 and "no such video file" in missing.stderr
    nodevice = subprocess.run(
        [sys.executable, "-m", "dancu", "gate", "--checkpoint", CP, "--images", str(tmp_path)],
        capture_output=True, text=True, timeout=60, check=False,
        env={k: v for k, v in os.environ.items() if not k.startswith("DANCU_GATE_")},
    )  # fmt: skip
    assert nodevice.returncode == 2 and "no device credentials" in nodevice.stderr


async def test_the_sender_drops_only_scans_refused_for_good(tmp_path: Path) -> None:
    """A scan the platform rejects (202 with it listed) leaves the queue with its reason;
    a device the platform refuses (403) keeps every scan for when it is fixed."""
    answers = [
        httpx.Response(403, json={"error": "device revoked"}),
        httpx.Response(
            202, json={"accepted": 2, "rejected": [{"index": 1, "errors": ["ts: too old"]}]}
        ),
    ]
    posted: list[list[str]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        posted.append([s["scan_id"] for s in json.loads(request.content)["scans"]])
        return answers.pop(0)

    log = io.StringIO()
    with ScanQueue(tmp_path / "q.sqlite") as queue:
        for i in range(3):
            queue.put({"scan_id": f"s{i}", "person_id": "001090123456", "checkpoint_id": CP})
        async with httpx.AsyncClient(
            base_url="http://p", transport=httpx.MockTransport(handler)
        ) as http:
            sender = Sender(queue, GateRemote(http, CP), log=log)
            assert not await sender.send_once()
            assert queue.depth() == 3 and not sender.online
            assert await sender.send_once()
        assert queue.counts() == {"pending": 0, "sent": 2, "rejected": 1}
    assert posted == [["s0", "s1", "s2"]] * 2
    events = [json.loads(x) for x in log.getvalue().splitlines()]
    assert [e["event"] for e in events] == ["scans-waiting", "scan-rejected", "scans-flowing"]
    assert events[1] == {"event": "scan-rejected", "scan_id": "s1", "reason": "ts: too old"}
