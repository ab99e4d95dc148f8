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

Four steps follow the cascade (the gate mix of bench/qr.py, seed 10, 1,500 frames:
93.5% exact before them, 95.6% after the first, 95.9% with the last, 96.7% with the
second, 97.7% with its decision feedback and 98.9% with the third; seeds 1 and 7, which
the figures in README come from, moved alike to 99.05%; all three were looked at):

- regions: code-sized patches of QR-like texture that no decoded code covers (a cheap
  gradient map, about 0.15 ms a frame) get the cascade of their own, on a crop. The
  cascade stops as soon as one code is decoded and no failed symbol is left, so a
  second, small card that zxing-cpp did not even locate in the frame was lost; a third
  of the frames missed before were such pairs;
- on the grid (``gate.qr_grid.read_symbol``): a symbol zxing-cpp located and whose
  format it read (a checksum error) is read again on its module grid, refined against
  the modules every such symbol has, decided with the neighbours' blur taken out and
  corrected by Reed-Solomon with erasures;
- located (``gate.qr_grid.locate``): in textured regions where nothing was decoded or
  located, finder patterns are searched by correlation with blurred templates (at 2-2.5
  px a module with focus blur, zxing-cpp's detector sees none); three that make a
  symbol's corner give its grid, version, level and mask, and it is read on its grid;
- rectified: symbols still unread are warped upright at 8 px per module from the
  strongly deblurred frame and read with a global threshold.

Frames the first pass decodes pay the texture map (and, for a textured patch that is no
code, a cascade on its crop): the median is about 1.3x plain zxing-cpp's. A frame with a
code that cannot be read costs most: about 50 ms at the 99th percentile on one core;
EXTRA_BUDGET bounds frames built to mislead (0.1-0.35 s at 640x480).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

import cv2
import numpy as np
import zxingcpp

from gate.qr_grid import Symbol, inside, locate, read_symbol, wiener_kernel
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
    symbols: list[Symbol] = field(default_factory=list)  # those whose format was read


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
            quad = _corners(b.position, scale)
            out.failed.append(quad)
            symbol = Symbol.from_barcode(b, quad)
            if symbol is not None:
                out.symbols.append(symbol)
    return out


def _undecoded(failed: list[np.ndarray], decoded: list[np.ndarray]) -> bool:
    """Whether a symbol that failed lies apart from every decoded one."""
    return any(not any(inside(f.mean(axis=0), d) for d in decoded) for f in failed)


def _deblur(sigma: float, nsr: float, dims: int = 1) -> Callable[[np.ndarray], np.ndarray]:
    """A retry pass: Wiener-deblur the frame for this blur and noise, then 2x up (cubic)."""

    def prepare(grey: np.ndarray) -> np.ndarray:
        kernel = wiener_kernel(sigma, nsr, 15, dims)
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
    if frame.ndim in (2, 3) and 0 in frame.shape[:2]:
        return np.zeros(frame.shape[:2], np.uint8)  # an empty frame: nothing in it
    if frame.ndim == 2:
        return np.ascontiguousarray(frame)
    if frame.ndim == 3 and frame.shape[2] == 3:
        return cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
    if frame.ndim == 3 and frame.shape[2] == 4:
        return cv2.cvtColor(frame, cv2.COLOR_BGRA2GRAY)
    if frame.ndim == 3 and frame.shape[2] == 1:
        return np.ascontiguousarray(frame[:, :, 0])
    raise BadFrame(f"expected a grey, BGR or BGRA frame, got shape {frame.shape}")


# Where a code zxing-cpp did not find at all may be: QR-like texture. Measured on a map
# at a quarter of the frame's resolution (TEXTURE_SCALE): the mean |d/dx| and |d/dy| of
# the half-resolution frame over TEXTURE_BOX map px (28 frame px); their smaller is above
# TEXTURE_LEVEL grey levels in a code, dim and blurred ones included, and below it along
# a rectangle's edge, which varies in one direction only. A region is looked at when it
# is at least REGION_SIDE frame px on each side: a code's bounding box is 90 px or more,
# and the codes the regions found on the tuning frames were all 110 px or more, while
# half of the textured patches that are no code (clutter, a diagonal line) are smaller;
# 40 px instead costs 0.1 ms more at the median and finds no more codes.
TEXTURE_SCALE = 4
TEXTURE_BOX = 7
TEXTURE_LEVEL = 6
REGION_SIDE = 80
WIDE_AREA = 80 * 80  # frame px of texture a sparse region needs for a finder search
REGION_MARGIN = 12  # frame px added around a region: the quiet zone and the blur
DECODED_HALO = 16  # frame px around a decoded code where its own texture spills over


def _texture(grey: np.ndarray, decoded: list[np.ndarray]) -> np.ndarray:
    """A quarter-resolution mask (uint8, 0 or 1) of QR-like texture away from decoded
    codes (about 0.15 ms a frame, outlines included)."""
    half = cv2.resize(grey, None, fx=0.5, fy=0.5, interpolation=cv2.INTER_AREA)
    # Both cut to even sides: INTER_AREA halves those on its fast path.
    h, w = (half.shape[0] - 2) & ~1, (half.shape[1] - 2) & ~1
    dx = cv2.absdiff(half[:h, 1 : w + 1], half[:h, :w])
    dy = cv2.absdiff(half[1 : h + 1, :w], half[:h, :w])
    box = (TEXTURE_BOX, TEXTURE_BOX)

    def local_mean(d: np.ndarray) -> np.ndarray:
        return cv2.blur(cv2.resize(d, None, fx=0.5, fy=0.5, interpolation=cv2.INTER_AREA), box)

    texture = cv2.min(local_mean(dx), local_mean(dy))
    for quad in decoded:
        corners = np.round(quad / TEXTURE_SCALE).astype(np.int32)
        cv2.fillConvexPoly(texture, corners, (0,))
        cv2.polylines(texture, [corners], True, (0,), 2 * DECODED_HALO // TEXTURE_SCALE)
    _, mask = cv2.threshold(texture, TEXTURE_LEVEL, 1, cv2.THRESH_BINARY)
    return mask


Box = tuple[int, int, int, int]


def _regions(grey: np.ndarray, decoded: list[np.ndarray]) -> list[Box]:
    """Boxes (x0, y0, x1, y1, frame px) of code-sized textured regions that no decoded
    code covers: where a code zxing-cpp did not even find may be (a second card)."""
    return _textured(grey, decoded)[0]


def _textured(grey: np.ndarray, decoded: list[np.ndarray]) -> tuple[list[Box], list[Box]]:
    """Code-sized textured regions (see _regions), and the boxes of larger, sparser ones
    where a code's texture has run into clutter's or a decoded code's (for the finder
    search only: a cascade on them costs too much)."""
    mask = _texture(grey, decoded)
    if not mask.any():
        return [], []
    # Outlines, not labelled components: a twentieth of the time.
    outlines, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    height, width = grey.shape
    k, m = TEXTURE_SCALE, REGION_MARGIN
    boxes: list[Box] = []
    wide: list[Box] = []
    for outline in outlines:
        x, y, w, h = cv2.boundingRect(outline)
        if k * min(w, h) < REGION_SIDE:
            continue
        area = cv2.contourArea(outline)
        box = (
            max(k * x - m, 0),
            max(k * y - m, 0),
            min(k * (x + w) + m, width),
            min(k * (y + h) + m, height),
        )
        if area >= 0.3 * w * h:
            boxes.append(box)
        elif k * k * area >= WIDE_AREA:
            wide.append(box)
    return boxes, wide


def _cascade(grey: np.ndarray) -> _Read:
    """PASSES on ``grey`` until one leaves nothing undecoded: the texts, the quads of the
    decoded symbols and those of every symbol that failed on the way."""
    out = _Read([], [], [])
    for _name, prepare, scale in PASSES:
        got = _read(prepare(grey), scale)
        out.texts.extend(got.texts)
        out.decoded.extend(got.decoded)
        out.failed.extend(got.failed)
        out.symbols.extend(got.symbols)
        if out.texts and not _undecoded(got.failed, out.decoded):
            break
    return out


# A symbol zxing-cpp found but could not decode, in every pass: warped upright onto a
# grid of a whole number of px per module (a card's QR has 45-53 modules: 49 assumed,
# the decoder finds the real grid), where its modules are square and large, after the
# strong deblur; GlobalHistogram (one threshold for the whole symbol) then reads some
# that the local binariser cannot. Of 96 variants measured on the tuning frames (deblur
# σ 1.2-1.5, 3-8 px/module, stretched or not, both binarisers), these two read the most;
# in the pipeline they fix 3 more of the 1,500 frames (95.6% to 95.9%). The result hangs
# on half-pixel differences in where the symbol's corners are found, hence several quads.
RECTIFIED_MODULES = 49
RECTIFIED_QUIET = 4  # modules of quiet zone kept around the symbol
MIN_SIDE = 21  # px: the smallest QR symbol is 21 modules
# Seconds after the first pass within which further work may start (a step started in
# time finishes): real frames need under 0.1 s at the 99th percentile on one core.
EXTRA_BUDGET = 0.25
LOCATED_MAX = 2  # symbols located by their finders read per region
RECTIFIED_MAX = 4  # failed quads tried per frame (a few ms each, failing frames only)
RECTIFIED: tuple[tuple[int, bool], ...] = ((8, False), (6, True))  # (px/module, stretch)


def _stretch(image: np.ndarray) -> np.ndarray:
    """Grey levels stretched so that the 1st and 99th percentiles span 0-255 (dim codes)."""
    lo, hi = np.percentile(image, (1, 99))
    gain = 255 / max(float(hi - lo), 1.0)
    return cv2.convertScaleAbs(image, alpha=gain, beta=-float(lo) * gain)


def _rectified(sharp: np.ndarray, quad: np.ndarray, ppm: int) -> np.ndarray:
    """The symbol at ``quad`` warped upright, ``ppm`` px per (assumed) module."""
    side, quiet = RECTIFIED_MODULES * ppm, RECTIFIED_QUIET * ppm
    far = quiet + side
    square = np.array([[quiet, quiet], [far, quiet], [far, far], [quiet, far]], np.float32)
    warp = cv2.getPerspectiveTransform(quad.astype(np.float32), square)
    size = (far + quiet, far + quiet)
    return cv2.warpPerspective(
        sharp, warp, size, flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REPLICATE
    )


def _distinct(quads: list[np.ndarray], decoded: list[np.ndarray]) -> list[np.ndarray]:
    """Failed symbols' quads away from every decoded code, each once. The passes locate
    one symbol a little differently, and one location may read where another does not:
    quads are distinct unless every corner is within a quarter pixel."""
    out: list[np.ndarray] = []
    for quad in quads:
        if any(inside(quad.mean(axis=0), d) for d in decoded):
            continue
        if all(np.abs(quad - q).max() > 0.25 for q in out):
            out.append(quad)
    return out[:RECTIFIED_MAX]


def _read_rectified(grey: np.ndarray, failed: list[np.ndarray]) -> list[str]:
    """Texts of failed symbols read once warped upright (see RECTIFIED)."""
    if not failed:
        return []
    kernel = wiener_kernel(1.4, 0.02, 15, 2)
    sharp = cv2.filter2D(grey, -1, kernel)
    texts: list[str] = []
    read: list[np.ndarray] = []  # centres of the symbols read: their other quads are skipped
    for quad in failed:
        centre = quad.mean(axis=0)
        if any(np.linalg.norm(centre - c) < 10 for c in read):
            continue
        for ppm, stretch in RECTIFIED:
            image = _rectified(sharp, quad, ppm)
            found = zxingcpp.read_barcodes(
                _stretch(image) if stretch else image,
                formats=_FORMATS,
                try_invert=False,
                binarizer=zxingcpp.Binarizer.GlobalHistogram,
            )
            if found:
                texts += [b.text for b in found]
                read.append(centre)
                break
    return texts


def decode_texts(frame: np.ndarray) -> list[str]:
    """Every QR text in the frame, in the order found, each once (no classification).

    The cascade runs on the frame; then every code-sized textured region that no decoded
    code covers gets the cascade of its own, on a crop (a code zxing-cpp did not find at
    all in the frame, typically a second, small card beside a decoded one); then symbols
    are read on their grid (see the module's docstring). Past EXTRA_BUDGET seconds after
    the first pass no further region, symbol or finder search is started: a frame built
    to mislead (finder-like shapes everywhere, damaged large symbols) cannot stall a gate.
    """
    grey = to_grey(frame)
    if min(grey.shape) < MIN_SIDE:
        return []
    got = _cascade(grey)
    deadline = time.monotonic() + EXTRA_BUDGET

    def late() -> bool:
        return time.monotonic() > deadline

    texts, decoded, failed, symbols = got.texts, got.decoded, got.failed, got.symbols
    regions, wide = _textured(grey, decoded)
    for x0, y0, x1, y1 in regions:
        if late():
            break
        crop = _cascade(np.ascontiguousarray(grey[y0:y1, x0:x1]))
        texts += crop.texts
        offset = np.array([x0, y0], np.float32)
        decoded += [quad + offset for quad in crop.decoded]
        failed += [quad + offset for quad in crop.failed]
        symbols += [replace(s, quad=s.quad + offset) for s in crop.symbols]
    read: list[np.ndarray] = []  # centres of symbols read on their grid
    for symbol in _distinct_symbols(symbols, decoded):
        if late():
            break
        found = read_symbol(grey, symbol, deadline)
        if found:
            texts += found
            read.append(symbol.quad.mean(axis=0))
    left = [q for q in failed if all(np.linalg.norm(q.mean(axis=0) - c) >= 10 for c in read)]
    if not late():
        texts += _read_rectified(grey, _distinct(left, decoded))
    # Regions where nothing was decoded, located or read: finders zxing-cpp did not see.
    # Decoded codes are blanked out of the patch (their finders would be found again);
    # a patch holding a symbol zxing-cpp located, or one read on its grid, is skipped.
    centres = [q.mean(axis=0) for q in failed] + read
    for x0, y0, x1, y1 in regions + wide:
        if late():
            break
        if any(x0 <= c[0] < x1 and y0 <= c[1] < y1 for c in centres):
            continue
        patch = _blanked(grey[y0:y1, x0:x1], [q - np.array([x0, y0], np.float32) for q in decoded])
        for symbol in locate(patch)[:LOCATED_MAX]:
            if late():
                break
            texts += read_symbol(patch, symbol, deadline)
    return list(dict.fromkeys(texts))


def _blanked(patch: np.ndarray, quads: list[np.ndarray]) -> np.ndarray:
    """A copy of ``patch`` with each code at ``quads`` (and its quiet zone) painted over
    in the patch's median grey."""
    out = np.array(patch, copy=True)
    if quads:
        grey = int(np.median(out))
        for quad in quads:
            centre = quad.mean(axis=0)
            grown = np.round((quad - centre) * 1.25 + centre).astype(np.int32)
            cv2.fillConvexPoly(out, grown, (grey,))
    return out


def _distinct_symbols(symbols: list[Symbol], decoded: list[np.ndarray]) -> list[Symbol]:
    """Located symbols away from every decoded code, one per place (the first pass that
    located it; passes agree on the corners to a pixel or two, which the grid's refinement
    absorbs), at most RECTIFIED_MAX."""
    out: list[Symbol] = []
    for symbol in symbols:
        centre = symbol.quad.mean(axis=0)
        if any(inside(centre, d) for d in decoded):
            continue
        if all(np.linalg.norm(centre - s.quad.mean(axis=0)) >= 10 for s in out):
            out.append(symbol)
    return out[:RECTIFIED_MAX]


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
