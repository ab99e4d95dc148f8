"""``dancu gate --checkpoint ID (--camera N | --video FILE | --images DIR)``: the camera
gate program (see :mod:`gate.program` for what it does and prints).

The device's credentials come from ``--device-file`` (the JSON ``dancu devices add``
prints), or ``--device-id``/``--device-key`` (better from the environment,
``DANCU_GATE_DEVICE_ID``/``DANCU_GATE_DEVICE_KEY``: a key on a command line is visible
to every user of the machine).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import sys
from collections.abc import Iterator
from contextlib import suppress
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import httpx
import typer

if TYPE_CHECKING:  # the gate's modules (OpenCV, zxing-cpp) load only when the gate runs
    from gate.program import GateConfig, OfflinePolicy
    from gate.queue import ScanQueue
    from gate.sources import Frame

OFFLINE_POLICIES = ("deny", "allow", "last-known")  # gate.program's, checked there too

CHECKPOINT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/-]{0,127}$")  # as the API's


def _fail(message: str, code: int = 2) -> typer.Exit:
    print(f"error: {message}", file=sys.stderr)
    return typer.Exit(code)


def _device(
    device_file: Path | None, device_id: str | None, device_key: str | None
) -> tuple[str, str]:
    if device_file is not None:
        try:
            data = json.loads(device_file.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise _fail(f"--device-file {device_file}: cannot read it as JSON: {exc}") from exc
        if not isinstance(data, dict) or not data.get("device_id") or not data.get("key"):
            raise _fail(
                f"--device-file {device_file}: needs 'device_id' and 'key' "
                "(as `dancu devices add` prints)"
            )
        return str(data["device_id"]), str(data["key"])
    if not device_id or not device_key:
        raise _fail(
            "no device credentials: give --device-file, or --device-id and "
            "--device-key (or DANCU_GATE_DEVICE_ID and DANCU_GATE_DEVICE_KEY)"
        )
    return device_id, device_key


def gate_main(
    ctx: typer.Context,
    checkpoint: Annotated[
        str | None, typer.Option("--checkpoint", help="The checkpoint this gate guards.")
    ] = None,
    camera: Annotated[int | None, typer.Option(help="Capture from this camera index.")] = None,
    video: Annotated[Path | None, typer.Option(help="Replay this video file.")] = None,
    images: Annotated[
        Path | None, typer.Option(help="Read this directory's images in name order.")
    ] = None,
    api: Annotated[
        str | None,
        typer.Option(envvar="DANCU_GATE_API", help="The platform's URL (default: local)."),
    ] = None,
    device_id: Annotated[str | None, typer.Option(envvar="DANCU_GATE_DEVICE_ID")] = None,
    device_key: Annotated[
        str | None,
        typer.Option(envvar="DANCU_GATE_DEVICE_KEY", help="Prefer the environment variable."),
    ] = None,
    device_file: Annotated[
        Path | None, typer.Option(help="JSON with device_id and key (`dancu devices add`).")
    ] = None,
    debounce: Annotated[
        float, typer.Option(min=0, help="Seconds a card must be out of view to count again.")
    ] = 3.0,
    queue: Annotated[
        Path | None,
        typer.Option(help="The scan queue's SQLite file (default: <data dir>/gate/<cp>.sqlite)."),
    ] = None,
    offline_policy: Annotated[
        str, typer.Option(help="When the platform cannot answer: deny | allow | last-known.")
    ] = "deny",
    last_known_hours: Annotated[
        float, typer.Option(min=0, help="How old a last-known decision may be.")
    ] = 12.0,
    fps: Annotated[
        float, typer.Option(min=0.001, help="--images: the frame rate they were taken at.")
    ] = 10.0,
    pace: Annotated[
        bool, typer.Option(help="--video/--images: deliver frames in real time.")
    ] = False,
    drain_timeout: Annotated[
        float, typer.Option(min=0, help="At the end, wait this long for queued scans to go.")
    ] = 10.0,
    check_timeout: Annotated[
        float, typer.Option(min=0.1, help="Seconds to wait for a gate check's answer.")
    ] = 2.0,
    status_port: Annotated[
        int | None, typer.Option(help="Serve a status page on 127.0.0.1 at this port.")
    ] = None,
) -> None:
    """The camera gate: decide on every card shown, record every entry, never lose one.

    Prints one JSON line per decision; a summary on stderr at the end."""
    if ctx.invoked_subcommand is not None:
        if checkpoint or camera is not None or video or images:
            raise _fail(f"the gate's options are not for `dancu gate {ctx.invoked_subcommand}`")
        return
    if not checkpoint:
        print(ctx.get_help())
        raise _fail("--checkpoint is required")
    if not CHECKPOINT_ID.match(checkpoint):
        raise _fail(f"--checkpoint {checkpoint!r}: letters, digits and ._:/- only (≤ 128)")
    given = [
        o
        for o, v in (("--camera", camera), ("--video", video), ("--images", images))
        if v is not None
    ]
    if len(given) != 1:
        raise _fail(
            "give exactly one of --camera, --video, --images"
            + (f" (got {', '.join(given)})" if given else "")
        )
    if offline_policy not in OFFLINE_POLICIES:
        raise _fail(f"--offline-policy {offline_policy!r}: one of {', '.join(OFFLINE_POLICIES)}")
    dev_id, key = _device(device_file, device_id, device_key)

    from gate.http_auth import DeviceAuth
    from gate.program import GateConfig
    from gate.queue import QueueError, ScanQueue
    from gate.sources import SourceError, camera_frames, image_frames, video_frames

    # A device runs apart from the platform: its own environment, not the platform's
    # settings (the same variable names, where they mean the same thing).
    base_url = api or os.environ.get(
        "DANCU_API_URL", f"http://127.0.0.1:{os.environ.get('DANCU_API_PORT', '8765')}"
    )
    data_dir = Path(os.environ.get("DANCU_DATA_DIR", ".dancu"))
    queue_path = queue or data_dir / "gate" / (checkpoint.replace("/", "_") + ".sqlite")
    try:
        if camera is not None:
            frames = camera_frames(camera)
        elif video is not None:
            frames = video_frames(video, pace)
        else:
            frames = image_frames(images or Path("."), fps, pace)
        store = ScanQueue(queue_path)
    except (SourceError, QueueError) as exc:
        raise _fail(str(exc)) from exc
    config = GateConfig(
        checkpoint_id=checkpoint,
        device_id=dev_id,
        debounce=debounce,
        offline_policy=_policy(offline_policy),
        last_known_hours=last_known_hours,
        drain_timeout=drain_timeout,
    )
    try:
        summary = asyncio.run(
            _run(
                config, base_url, DeviceAuth(dev_id, key), store, frames, check_timeout, status_port
            )
        )
    except SourceError as exc:
        raise _fail(str(exc), 1) from exc
    finally:
        store.close()
    print(json.dumps({"event": "summary", **summary}, ensure_ascii=False), file=sys.stderr)


def _policy(name: str) -> OfflinePolicy:
    from gate.program import OFFLINE_POLICIES

    for p in OFFLINE_POLICIES:
        if p == name:
            return p
    raise ValueError(name)


async def _run(
    config: GateConfig,
    base_url: str,
    auth: httpx.Auth,
    store: ScanQueue,
    frames: Iterator[Frame],
    check_timeout: float,
    status_port: int | None,
) -> dict[str, object]:
    from gate.program import GateProgram
    from gate.remote import GateRemote
    from gate.status import serve_status

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    async with httpx.AsyncClient(base_url=base_url, auth=auth) as http:
        program = GateProgram(config, GateRemote(http, config.checkpoint_id, check_timeout), store)
        server = None
        if status_port is not None:
            server = await serve_status(program.status, status_port)
            print(
                json.dumps({"event": "status-page", "url": f"http://127.0.0.1:{status_port}/"}),
                file=sys.stderr,
                flush=True,
            )
        try:
            summary = await program.run(frames, stop)
        finally:
            if server is not None:
                server.close()
                await server.wait_closed()
    return {
        "frames": summary.frames,
        "decisions": summary.decisions,
        "by_decision": summary.by_decision,
        "offline_decisions": summary.offline_decisions,
        "ignored": summary.ignored,
        "unreadable": summary.unreadable,
        "scans_queued": summary.scans_queued,
        "pending_at_exit": summary.pending_at_exit,
    }
