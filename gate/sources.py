"""Where the gate's frames come from: a camera, a video file, or a directory of images.

Each :class:`Frame` carries two times: ``t``, the frame clock used for debouncing (a
camera's monotonic clock, a video's own timeline, an image's place in the directory
at ``fps``), and ``wall``, the moment it was read, which stamps the scan.
Iteration blocks (OpenCV reads); the program runs it in a worker thread.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import cv2
import numpy as np

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".pgm", ".ppm"}
CAMERA_RETRIES = 50  # consecutive failed reads (about 5 s) before a camera counts as lost


class SourceError(Exception):
    """A camera, video or image directory that cannot be read."""


@dataclass(frozen=True, slots=True)
class Frame:
    image: np.ndarray | None  # None: this image file could not be read (see ``error``)
    t: float
    wall: datetime
    name: str
    error: str = ""


def camera_frames(index: int) -> Iterator[Frame]:
    """A camera's frames until it fails (opened now: a missing camera raises here)."""
    cap = cv2.VideoCapture(index)
    if not cap.isOpened():
        raise SourceError(f"camera {index} could not be opened (is it connected and free?)")
    return _camera(cap, index)


def _camera(cap: cv2.VideoCapture, index: int) -> Iterator[Frame]:
    try:
        failures, n = 0, 0
        while True:
            ok, image = cap.read()
            if not ok:
                failures += 1
                if failures >= CAMERA_RETRIES:
                    raise SourceError(f"camera {index} stopped delivering frames")
                time.sleep(0.1)
                continue
            failures = 0
            n += 1
            yield Frame(image, time.monotonic(), datetime.now(UTC), f"camera{index}#{n}")
    finally:
        cap.release()


def video_frames(path: Path, pace: bool = False) -> Iterator[Frame]:
    """A video file's frames; ``pace`` delivers them at the video's own rate (as a
    camera would), otherwise as fast as they decode."""
    if not path.is_file():
        raise SourceError(f"{path}: no such video file")
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise SourceError(f"{path}: OpenCV cannot open this video (codec or container)")
    return _video(cap, path, pace)


def _video(cap: cv2.VideoCapture, path: Path, pace: bool) -> Iterator[Frame]:
    fps = cap.get(cv2.CAP_PROP_FPS) or 25.0
    start = time.monotonic()
    try:
        n = 0
        while True:
            ok, image = cap.read()
            if not ok:
                return
            # The frame's own time; the position after reading is the next frame's start.
            t = n / fps
            if pace and (wait := start + t - time.monotonic()) > 0:
                time.sleep(wait)
            n += 1
            yield Frame(image, t, datetime.now(UTC), f"{path.name}#{n}")
    finally:
        cap.release()


def image_files(directory: Path) -> list[Path]:
    if not directory.is_dir():
        raise SourceError(f"{directory}: no such directory")
    return sorted(p for p in directory.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


def image_frames(directory: Path, fps: float = 10.0, pace: bool = False) -> Iterator[Frame]:
    """The directory's images in name order, as frames ``1/fps`` seconds apart;
    ``pace`` delivers them at that rate in real time."""
    if fps <= 0:
        raise SourceError(f"fps: must be more than 0, got {fps}")
    return _images(image_files(directory), fps, pace)


def _images(files: list[Path], fps: float, pace: bool) -> Iterator[Frame]:
    start = time.monotonic()
    for i, path in enumerate(files):
        t = i / fps
        if pace and (wait := start + t - time.monotonic()) > 0:
            time.sleep(wait)
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        error = "" if image is not None else f"{path.name}: not an image OpenCV can read"
        yield Frame(image, t, datetime.now(UTC), path.name, error)
