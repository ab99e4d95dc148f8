"""Synthetic gate-camera frames holding known QR payloads (tests, bench/qr.py, demos).

A frame is rendered the way a camera sees a card: the code is warped (rotation,
perspective) at three times the frame's resolution and area-sampled down, so a 2 px
module is really two pixels' worth of light; then lighting, blur, sensor noise and JPEG
compression are applied in that order, as in a camera pipeline. Every knob is explicit
(:class:`Look`, :class:`Camera`), so a test can ask for exactly one distortion, and the
bench draws them from a seeded generator (:func:`gate_look`, :func:`gate_camera`), so its
frames are the same on every run. The CCCD payloads are made up (:func:`cccd_payload`):
valid IDs, names from the reference table, Hà Nội addresses, the classic layout; their QR
is version 7-9 at error correction M (45-53 modules).
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, timedelta

import cv2
import numpy as np
import segno

from registry.ids import make_id
from registry.reference import hanoi_districts, hanoi_wards, provinces, vn_names

WIDTH, HEIGHT = 640, 480
SUPERSAMPLE = 3  # the code is warped at 3x and area-sampled down to the frame
QUIET = 4  # quiet-zone modules around a code (ISO/IEC 18004)
CARD = 3  # more light card around the quiet zone, in modules


@dataclass(frozen=True, slots=True)
class Look:
    """How one code appears in a frame (all in frame pixels and grey levels)."""

    size: float = 240.0  # side of the symbol, quiet zone excluded
    angle: float = 0.0  # rotation in degrees
    tilt: float = 0.0  # perspective: corners moved by up to this fraction of the size
    dark: int = 40  # ink under the frame's lighting
    light: int = 210  # paper under the frame's lighting


@dataclass(frozen=True, slots=True)
class Camera:
    """What the camera does to the whole frame."""

    blur: float = 0.0  # Gaussian sigma in pixels (focus)
    noise: float = 0.0  # sensor noise sigma in grey levels
    jpeg: int = 0  # JPEG quality, 0 for none
    shading: float = 0.0  # lighting falls off by up to this fraction across the frame


CLEAN = Camera()
GATE_CAMERA = Camera(blur=1.2, noise=5.0, jpeg=50, shading=0.2)


def cccd_payload(rng: np.random.Generator) -> str:
    """A valid-looking classic-layout CCCD QR text of a made-up resident.

    ``ID|old ID or empty|name|ddmmyyyy birth|Nam or Nữ|address|ddmmyyyy issue`` with a
    structurally valid ID (:func:`registry.ids.make_id`), names weighted as in the
    reference table and a Hà Nội address, so its length (and so the QR version) is a
    real card's.
    """
    names = vn_names()
    gender = "Nữ" if rng.random() < 0.5 else "Nam"

    def pick(table: tuple[tuple[str, ...], tuple[float, ...]]) -> str:
        p = np.asarray(table[1], dtype=float)
        return table[0][int(rng.choice(len(p), p=p / p.sum()))]

    name = f"{pick(names.family)} {pick(names.middle[gender])} {pick(names.given[gender])}"
    born = date(1940, 1, 1) + timedelta(days=int(rng.integers(0, 68 * 365)))
    issued = date(2021, 1, 1) + timedelta(days=int(rng.integers(0, 4 * 365)))
    codes = sorted(provinces())
    province = "001" if rng.random() < 0.6 else codes[int(rng.integers(len(codes)))]
    number = make_id(province, born.year, gender, int(rng.integers(1_000_000)))
    old = f"{int(rng.integers(10**9)):09d}" if rng.random() < 0.5 else ""
    wards = hanoi_wards()
    district = sorted(wards)[int(rng.integers(len(wards)))]
    ward = wards[district][int(rng.integers(len(wards[district])))]
    kind = {d.name: d.kind for d in hanoi_districts().values()}.get(district, "quận")
    street = ward.name.split(" ", 1)[1]  # "Phường Kim Mã" -> a street named "Kim Mã"
    house = f"Số {int(rng.integers(1, 300))} Ngõ {int(rng.integers(1, 200))} {street}"
    # As on the card: "Số 12 Ngõ 34 Kim Mã, Phường Kim Mã, Quận Ba Đình, Hà Nội".
    address = f"{house}, {ward.name}, {kind.capitalize()} {district}, Hà Nội"
    return "|".join(
        [number, old, name, born.strftime("%d%m%Y"), gender, address, issued.strftime("%d%m%Y")]
    )


def qr_modules(text: str, error: str = "m") -> np.ndarray:
    """The QR symbol of ``text`` as a 0/1 module matrix (1 = dark), no quiet zone.

    The mask pattern is picked from the text rather than scored (any of the eight is a
    valid code; scoring them all is most of segno's time)."""
    mask = zlib.crc32(text.encode()) % 8
    code = segno.make_qr(text, error=error, boost_error=False, mask=mask)
    return np.asarray(code.matrix, dtype=np.uint8)


def _corners(look: Look, centre: tuple[float, float], rng: np.random.Generator) -> np.ndarray:
    """Where the symbol's four corners land in the frame (clockwise from top-left)."""
    half = look.size / 2
    square = np.array([[-half, -half], [half, -half], [half, half], [-half, half]])
    square += rng.uniform(-1, 1, size=(4, 2)) * look.tilt * look.size
    a = np.deg2rad(look.angle)
    rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    return (square @ rot.T + np.asarray(centre)).astype(np.float32)


def _extent(corners: np.ndarray, modules: int, margin: int = QUIET + CARD) -> np.ndarray:
    """The corners of the symbol grown by ``margin`` modules (default: the whole card)."""
    centre = corners.mean(axis=0)
    grow = (modules + 2 * margin) / modules
    return ((corners - centre) * grow + centre).astype(np.float32)


def _paint(scene: np.ndarray, modules: np.ndarray, corners: np.ndarray, look: Look) -> np.ndarray:
    """Paint one card onto the scene (float32 grey, frame resolution), area-sampled."""
    n = modules.shape[0]
    pad = QUIET + CARD
    per = 6  # source pixels per module
    ink = np.kron(np.pad(modules, pad), np.full((per, per), 255, np.uint8))
    side = ink.shape[0]
    src = np.array([[0, 0], [side, 0], [side, side], [0, side]], dtype=np.float32)
    dst = _extent(corners, n) * SUPERSAMPLE
    x0, y0 = np.floor(dst.min(axis=0)).astype(int) - SUPERSAMPLE
    x1, y1 = np.ceil(dst.max(axis=0)).astype(int) + SUPERSAMPLE
    # Align the box to whole frame pixels so the area-sampling lands on the frame grid.
    x0, y0 = (x0 // SUPERSAMPLE) * SUPERSAMPLE, (y0 // SUPERSAMPLE) * SUPERSAMPLE
    x1 = -(-x1 // SUPERSAMPLE) * SUPERSAMPLE
    y1 = -(-y1 // SUPERSAMPLE) * SUPERSAMPLE
    origin = np.array([x0, y0], dtype=np.float32)
    h = cv2.getPerspectiveTransform(src, (dst - origin).astype(np.float32))
    box = (int(x1 - x0), int(y1 - y0))
    # 8-bit, one channel: OpenCV's fast path (a 2-channel or float warp is 4x slower).
    ink_w = cv2.warpPerspective(ink, h, box, flags=cv2.INTER_LINEAR)
    card_w = np.zeros_like(ink_w)
    quad = np.round((dst - origin) * 4).astype(np.int32)  # 2 fractional bits
    cv2.fillConvexPoly(card_w, quad, (255,), cv2.LINE_AA, 2)
    small = (box[0] // SUPERSAMPLE, box[1] // SUPERSAMPLE)
    cover = cv2.resize(cv2.merge([ink_w, card_w]), small, interpolation=cv2.INTER_AREA)
    ink_s, card_s = cv2.split(cover.astype(np.float32) / 255)
    fx, fy = x0 // SUPERSAMPLE, y0 // SUPERSAMPLE
    # Clip the box to the frame.
    H, W = scene.shape
    sx0, sy0 = max(fx, 0), max(fy, 0)
    sx1, sy1 = min(fx + small[0], W), min(fy + small[1], H)
    if sx1 <= sx0 or sy1 <= sy0:
        return scene
    cs = card_s[sy0 - fy : sy1 - fy, sx0 - fx : sx1 - fx]
    ks = ink_s[sy0 - fy : sy1 - fy, sx0 - fx : sx1 - fx]
    region = scene[sy0:sy1, sx0:sx1]
    scene[sy0:sy1, sx0:sx1] = region * (1 - cs) + look.light * (cs - ks) + look.dark * ks
    return scene


# Pixel coordinates centred on the frame, in units of the frame's width and height.
_Y, _X = (np.mgrid[0:HEIGHT, 0:WIDTH] / np.array([HEIGHT, WIDTH])[:, None, None] - 0.5).astype(
    np.float32
)


def _background(rng: np.random.Generator) -> np.ndarray:
    """A cluttered gate scene: a smooth gradient, some rectangles and lines (float32)."""
    base = float(rng.uniform(60, 160))
    gx, gy = (float(g) for g in rng.uniform(-50, 50, size=2))
    scene = base + gx * _X + gy * _Y
    for _ in range(int(rng.integers(3, 9))):
        x, y = int(rng.integers(0, WIDTH)), int(rng.integers(0, HEIGHT))
        w, h = int(rng.integers(20, 200)), int(rng.integers(20, 200))
        cv2.rectangle(scene, (x, y), (x + w, y + h), float(rng.uniform(20, 230)), -1)
    for _ in range(int(rng.integers(0, 6))):
        p = (int(rng.integers(0, WIDTH)), int(rng.integers(0, HEIGHT)))
        q = (int(rng.integers(0, WIDTH)), int(rng.integers(0, HEIGHT)))
        cv2.line(scene, p, q, float(rng.uniform(0, 255)), int(rng.integers(1, 4)))
    return scene


def render(
    payloads: Sequence[str],
    looks: Sequence[Look],
    camera: Camera = CLEAN,
    *,
    seed: int = 0,
    error: str = "m",
) -> np.ndarray:
    """A 640x480 BGR frame showing each payload as a QR code with its look.

    Codes are placed at random where they fit without overlapping (seeded), or raise
    ValueError when they cannot fit.
    """
    rng = np.random.default_rng(seed)
    scene = _background(rng)
    placed: list[np.ndarray] = []
    # The largest first: it has the fewest places to go.
    order = sorted(range(len(looks)), key=lambda i: -looks[i].size)
    for i in order:
        look, modules = looks[i], qr_modules(payloads[i], error)
        shape = _corners(look, (0.0, 0.0), rng)
        card = _extent(shape, modules.shape[0])
        # The quiet zone must be in the frame; the card around it may be cut by the edge.
        quiet = _extent(shape, modules.shape[0], QUIET)
        lo, hi = -quiet.min(axis=0) + 1, np.array([WIDTH, HEIGHT]) - quiet.max(axis=0) - 1
        for _ in range(200):
            if (hi < lo).any():
                break
            offset = rng.uniform(lo, hi).astype(np.float32)
            if not any(_overlap(card + offset, other) for other in placed):
                placed.append(card + offset)
                scene = _paint(scene, modules, shape + offset, look)
                break
        else:
            raise ValueError(f"a {look.size:.0f} px code does not fit beside the others")
        if (hi < lo).any():
            raise ValueError(f"a {look.size:.0f} px code does not fit in a frame")
    return _through_camera(scene, camera, rng)


def _overlap(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether two cards (convex quadrilaterals) overlap."""
    area, _ = cv2.intersectConvexConvex(a, b)
    return bool(area > 0)


def _through_camera(scene: np.ndarray, camera: Camera, rng: np.random.Generator) -> np.ndarray:
    """Lighting, focus blur, sensor noise, then JPEG: grey scene in, BGR frame out."""
    # Python floats throughout: a numpy float64 scalar would turn the arrays float64.
    if camera.shading:
        a = float(rng.uniform(0, 2 * np.pi))
        ramp = np.clip(math.cos(a) * _X + math.sin(a) * _Y + 0.5, 0, 1)
        scene = scene * (1 - camera.shading * ramp)
    if camera.blur:
        scene = cv2.GaussianBlur(scene, (0, 0), camera.blur)
    if camera.noise:
        # Luminance noise (what the grey decoder sees; chroma noise mostly averages out).
        noise = np.empty_like(scene)
        cv2.setRNGSeed(int(rng.integers(2**31)))  # OpenCV's generator: 3x numpy's speed
        cv2.randn(noise, (0.0,), (camera.noise,))  # type: ignore[call-overload]  # stubs want arrays
        scene = scene + noise
    tint = [float(t) for t in rng.uniform(0.92, 1.08, size=3)]
    # convertScaleAbs rounds and saturates at 255; negatives are clipped to 0 first.
    out = cv2.convertScaleAbs(cv2.merge([np.maximum(scene * t, 0) for t in tint]))
    if camera.jpeg:
        ok, buf = cv2.imencode(".jpg", out, [cv2.IMWRITE_JPEG_QUALITY, camera.jpeg])
        if not ok:
            raise RuntimeError("OpenCV could not JPEG-encode a frame")
        decoded = cv2.imdecode(buf, cv2.IMREAD_COLOR)
        if decoded is None:
            raise RuntimeError("OpenCV could not decode its own JPEG")
        out = decoded
    return out


def gate_look(rng: np.random.Generator, size: tuple[float, float] = (100, 340)) -> Look:
    """One code as gate cameras see cards: any size in range, rotated up to ±25°, some
    perspective, and a third of them in poor light (low contrast).

    A large code fits the 480 px frame only when little rotated (a 340 px code turned 25°
    spans 452 px before its quiet zone), so a large code's angle is drawn from the range
    that fits, as a card held close to a camera is.
    """
    side = float(rng.uniform(*size))
    tilt = float(rng.uniform(0, 0.08))
    span = side * (1 + 2 * QUIET / 41) * (1 + 2 * tilt)  # 41 modules: the smallest card QR
    limit = 25.0
    while limit > 0 and span * (np.cos(np.deg2rad(limit)) + np.sin(np.deg2rad(limit))) > 470:
        limit -= 1.0
    low = rng.random() < 0.3
    light = float(rng.uniform(110, 200) if low else rng.uniform(170, 235))
    contrast = float(rng.uniform(45, 75) if low else rng.uniform(110, 170))
    return Look(
        size=side,
        angle=float(rng.uniform(-limit, limit)),
        tilt=tilt,
        dark=round(max(light - contrast, 5)),
        light=round(light),
    )


def gate_camera(rng: np.random.Generator, blur: float | None = None) -> Camera:
    """A gate camera's frame: focus blur σ 0.6-1.4 (or ``blur``), sensor noise, JPEG
    around 50."""
    return Camera(
        blur=float(rng.uniform(0.6, 1.4)) if blur is None else blur,
        noise=float(rng.uniform(2, 7)),
        jpeg=int(rng.integers(45, 56)),
        shading=float(rng.uniform(0, 0.3)),
    )
