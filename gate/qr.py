"""QR codes in camera frames: decode them, then recognise a CCCD card or a dancu code.

Pure of I/O but for :func:`decode_image_file`: numpy frames in, :class:`Decoded` out.

Decoding is zxing-cpp (far more robust and about ten times faster than OpenCV's own
detectors on gate frames, see ``bench/qr.py``) in a cascade of passes that stops at the
first pass leaving nothing undecoded:

1. the grey frame as it is: most frames end here, at plain zxing-cpp's cost;
2-5. deblurred, then 2x up-sampled (cubic), for four guesses of the focus blur and noise:
   a Wiener filter for a Gaussian blur (as a small FIR kernel, about 1 ms) gives a code
   of 2-3 px per module its module edges back, and zxing's detector then samples a grid
   twice as fine; a plain 2x or unsharp masking decodes fewer such frames;
6. the frame inverted, for a light-on-dark code (a phone screen in dark mode).

A pass "leaves something undecoded" when nothing is decoded yet, or when zxing-cpp found a
QR symbol (its finder patterns) that failed its checksum away from every code decoded so
far: a second card in the frame. Contrast stretching (CLAHE, histogram equalisation) and
OpenCV's adaptive binarisation were measured too and decode fewer frames than zxing-cpp's
own local binariser, so they are not passes. Only QR Model 2 (cards, posters) is read: the
QR family's Micro QR reads short false texts out of noise. A frame with no code runs
every pass (about 15-20 ms on one core).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Literal

import cv2
import numpy as np
import zxingcpp

from registry.cccd import parse_cccd
from registry.errors import InvalidQrPayload

DANCU_PREFIX = "DANCU1|"  # dancu's own codes (checkpoint posters); the rest is theirs
CCCD_FIELDS = 7
SHOWN = 80  # characters of an unrecognised code's text shown in a summary

Kind = Literal["cccd", "dancu", "unrecognised"]


@dataclass(frozen=True)
class Decoded:
    """One QR code read in a frame: its text and what it is.

    ``detail`` for "cccd": ``id`` (the personal ID number) and ``layout`` ("classic", or
    "reordered" for a newer card's field order), never a name or address; for "dancu":
    ``raw`` (the whole text, for the poster code to verify); for "unrecognised":
    ``reason``, one line naming why. ``text`` is left out of the repr: a card's text holds
    its owner's name and address, which must not reach a log by accident.
    """

    text: str = field(repr=False)
    kind: Kind
    detail: dict[str, object] = field(default_factory=dict)

    def summary(self) -> dict[str, object]:
        """What may be shown or logged: the kind, a card's ID, a dancu code's text, or why
        a code is unrecognised (with its text, cut short, unless it looks like a card)."""
        out: dict[str, object] = {"kind": self.kind}
        if self.kind == "cccd":
            out["id"] = self.detail["id"]
        elif self.kind == "dancu":
            out["text"] = self.text
        else:
            if not _card_like(self.text):
                out["text"] = self.text if len(self.text) <= SHOWN else self.text[:SHOWN] + "…"
            out["reason"] = self.detail["reason"]
        return out


class QrError(Exception):
    """Root of the gate's QR errors."""


class UnreadableImage(QrError):
    """A file that is missing, or that OpenCV cannot decode as an image."""


class BadFrame(QrError, ValueError):
    """An array that is not an 8-bit grey, BGR or BGRA image."""


def _card_like(text: str) -> bool:
    """Whether a text has a card's shape (6-9 '|'-separated fields): it may hold a name."""
    return 6 <= text.count("|") + 1 <= 9


def _private(error: str) -> str:
    """A parser error with any quoted name taken out (the reason is shown and logged)."""
    return "name contains digits" if error.startswith("name contains digits") else error


def classify(text: str) -> Decoded:
    """What a decoded text is: a dancu code (by prefix), a valid CCCD card, or neither.

    A payload with a card's shape that breaks a rule (an ID inconsistent with the birth
    date, an impossible date…) is "unrecognised" with the parser's errors: a gate never
    admits a card that the registry's parser refuses.
    """
    if text.startswith(DANCU_PREFIX):
        return Decoded(text, "dancu", {"raw": text})
    fields = text.count("|") + 1
    if not _card_like(text):
        shape = "no '|' separators" if fields == 1 else f"{fields} fields"
        reason = f"not a CCCD payload: {shape}, {CCCD_FIELDS} expected"
        return Decoded(text, "unrecognised", {"reason": reason})
    try:
        card = parse_cccd(text)
    except InvalidQrPayload as exc:
        errors = "; ".join(_private(e) for e in exc.errors)
        return Decoded(text, "unrecognised", {"reason": f"invalid CCCD payload: {errors}"})
    layout = "classic" if text.strip().split("|")[0].strip() == card.id else "reordered"
    return Decoded(text, "cccd", {"id": card.id, "layout": layout})


# --- decoding -------------------------------------------------------------------------

_FORMATS = zxingcpp.BarcodeFormats(zxingcpp.BarcodeFormat.QRCodeModel2)


@dataclass(frozen=True, slots=True)
class _Read:
    texts: list[str]
    decoded: list[np.ndarray]  # corners of decoded symbols, frame coordinates
    failed: list[np.ndarray]  # corners of symbols found whose checksum failed


def _corners(position: zxingcpp.Position, scale: float) -> np.ndarray:
    p = position
    pts = [p.top_left, p.top_right, p.bottom_right, p.bottom_left]
    return np.array([[q.x, q.y] for q in pts], dtype=np.float32) / scale


def _read(image: np.ndarray, scale: float = 1.0) -> _Read:
    """One zxing-cpp call for dark-on-light codes (light-on-dark ones get a pass of their
    own, last); symbols that failed are kept (positions only) to steer retries."""
    out = _Read([], [], [])
    found = zxingcpp.read_barcodes(image, formats=_FORMATS, try_invert=False, return_errors=True)
    for b in found:
        if b.error is None:
            out.texts.append(b.text)
            out.decoded.append(_corners(b.position, scale))
        else:
            out.failed.append(_corners(b.position, scale))
    return out


def _inside(point: np.ndarray, quad: np.ndarray) -> bool:
    return (
        cv2.pointPolygonTest(quad.reshape(-1, 1, 2), (float(point[0]), float(point[1])), False) >= 0
    )


def _undecoded(failed: list[np.ndarray], decoded: list[np.ndarray]) -> bool:
    """Whether a symbol that failed lies apart from every decoded one."""
    return any(not any(_inside(f.mean(axis=0), d) for d in decoded) for f in failed)


@cache
def _wiener_kernel(sigma: float, nsr: float, size: int, dims: int) -> np.ndarray:
    """A FIR approximation of the Wiener deconvolution filter for a Gaussian focus blur of
    ``sigma`` px at noise-to-signal ratio ``nsr``: ``size`` taps, 1-D (applied along
    rows then columns) or ``size`` x ``size`` 2-D, normalised to unit gain."""
    n = 64
    f = np.fft.fftfreq(n)
    if dims == 1:
        otf = np.exp(-2 * np.pi**2 * sigma**2 * f**2)
        kernel = np.fft.fftshift(np.real(np.fft.ifft(otf / (otf**2 + nsr))))
    else:
        fx, fy = np.meshgrid(f, f)
        otf = np.exp(-2 * np.pi**2 * sigma**2 * (fx**2 + fy**2))
        kernel = np.fft.fftshift(np.real(np.fft.ifft2(otf / (otf**2 + nsr))))
    c, h = n // 2, size // 2
    kernel = (
        kernel[c - h : c + h + 1] if dims == 1 else kernel[c - h : c + h + 1, c - h : c + h + 1]
    )
    return (kernel / kernel.sum()).astype(np.float32)


def _deblur(sigma: float, nsr: float, dims: int = 1) -> Callable[[np.ndarray], np.ndarray]:
    """A retry pass: Wiener-deblur the frame for this blur and noise, then 2x up (cubic)."""

    def prepare(grey: np.ndarray) -> np.ndarray:
        kernel = _wiener_kernel(sigma, nsr, 15, dims)
        if dims == 1:
            sharp = cv2.sepFilter2D(grey, -1, kernel, kernel)
        else:
            sharp = cv2.filter2D(grey, -1, kernel)
        return cv2.resize(sharp, None, fx=2, fy=2, interpolation=cv2.INTER_CUBIC)

    return prepare


# (name, preprocessing, scale of its output relative to the frame), in the order tried:
# the blur and noise of a frame are unknown, so each pass assumes another (chosen by
# greedy selection on tuning frames, see bench/qr.py's --seed).
RETRIES: tuple[tuple[str, Callable[[np.ndarray], np.ndarray], float], ...] = (
    ("deblur σ1.2 2x", _deblur(1.2, 0.1), 2.0),
    ("deblur σ1.5 2x", _deblur(1.5, 0.08), 2.0),
    ("deblur σ1.4 strong 2x", _deblur(1.4, 0.02, dims=2), 2.0),
    ("deblur σ1.4 mild 2x", _deblur(1.4, 0.18), 2.0),
    ("light on dark", cv2.bitwise_not, 1.0),  # a code shown on a phone in dark mode
)
PASSES = (("as is", lambda grey: grey, 1.0), *RETRIES)


def to_grey(frame: np.ndarray) -> np.ndarray:
    """A camera frame (BGR, BGRA or grey, 8-bit) as one grey channel."""
    if not isinstance(frame, np.ndarray) or frame.dtype != np.uint8:
        what = frame.dtype if isinstance(frame, np.ndarray) else type(frame).__name__
        raise BadFrame(f"expected an 8-bit image array, got {what}")
    if frame.ndim == 2:
        return np.ascontiguousarray(frame)
    if frame.ndim == 3 and frame.shape[2] == 3:
        return cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
    if frame.ndim == 3 and frame.shape[2] == 4:
        return cv2.cvtColor(frame, cv2.COLOR_BGRA2GRAY)
    if frame.ndim == 3 and frame.shape[2] == 1:
        return np.ascontiguousarray(frame[:, :, 0])
    raise BadFrame(f"expected a grey, BGR or BGRA frame, got shape {frame.shape}")


def decode_texts(frame: np.ndarray) -> list[str]:
    """Every QR text in the frame, in the order found, each once (no classification)."""
    grey = to_grey(frame)
    texts: list[str] = []
    decoded: list[np.ndarray] = []
    for _name, prepare, scale in PASSES:
        got = _read(prepare(grey), scale)
        texts += got.texts
        decoded += got.decoded
        if texts and not _undecoded(got.failed, decoded):
            break
    return list(dict.fromkeys(texts))


def decode_frame(frame: np.ndarray) -> list[Decoded]:
    """Every QR code in a camera frame (up to several), each text once, classified."""
    return [classify(t) for t in decode_texts(frame)]


def decode_image_file(path: str | Path) -> list[Decoded]:
    """Decode an image file (PNG, JPEG, …); raises UnreadableImage naming the problem."""
    p = Path(path)
    if not p.is_file():
        raise UnreadableImage(f"{p}: no such file")
    image = cv2.imread(str(p), cv2.IMREAD_COLOR)
    if image is None:
        raise UnreadableImage(f"{p}: not an image OpenCV can read (PNG, JPEG, BMP, TIFF, WebP…)")
    return decode_frame(image)


__all__ = [
    "DANCU_PREFIX",
    "BadFrame",
    "Decoded",
    "QrError",
    "UnreadableImage",
    "classify",
    "decode_frame",
    "decode_image_file",
    "decode_texts",
]
