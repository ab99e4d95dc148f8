"""Reading a QR symbol on its module grid: one zxing-cpp located but could not decode,
or one found here by its finder patterns (:func:`locate`) where zxing-cpp found none.

zxing-cpp reports such a symbol with its corners and, when its format and version were
read (a checksum error: the data's Reed-Solomon correction failed), its version, error
correction level and mask. Near the sampling limit (2-3 px per module, focus blur σ 1-1.5,
JPEG at quality 50) its detector samples each module at one pixel of a binarised image;
this module does better with what zxing-cpp found:

1. the grid: the homography from module coordinates to the frame is refined so that the
   modules every symbol of this version, level and mask has (finders, timing, alignment,
   format and version information: about a fifth of a card's symbol) match the
   Wiener-deblurred frame best (coordinate search on the corners, 1 px down to 1/8 px);
2. the modules: each one is the mean of 3 x 3 samples over its centre in the deblurred
   frame, judged against dark and light levels fitted (as planes) on the known modules;
3. the codewords: Reed-Solomon correction per block (reedsolo) with erasures, the
   least certain codewords erased first, up to ERASURE_MARGIN symbols short of the
   block's capacity so that a wrong correction stays improbable (below about 2^-32 a
   block); the corrected symbol is drawn clean and read by zxing-cpp, which decodes the
   text as it does any QR code. Before that, each module is decided again with its
   neighbours' blur taken out (:func:`_cancel`), which halves the module errors.

Measured on the bench's failures (frames the cascade could not read, code 100-160 px):
with the true geometry the module error rate is 0.3% for a 130 px code at 100 grey
levels of contrast but 3% at 120 px and 60 levels, where correction without erasures
gives up; the refinement gets within 1/8 px of where the truth's modules read best.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import Any

import cv2
import numpy as np
import reedsolo
import segno
import segno.consts
import zxingcpp

EC_LEVELS = {"L": segno.consts.ERROR_LEVEL_L, "M": segno.consts.ERROR_LEVEL_M}
EC_LEVELS |= {"Q": segno.consts.ERROR_LEVEL_Q, "H": segno.consts.ERROR_LEVEL_H}
ERASURE_MARGIN = 4  # RS symbols a block keeps in reserve: 2 x errors + erasures <= nsym - 4
ERASURE_STEP = 2  # erasures added per attempt on a block (0, 2, 4, ... up to the margin)
# Reed-Solomon decodes one symbol may cost (pure Python, about 1.3 ms each): a card's
# symbol (4-5 blocks) needs at most 30; a symbol crafted so that every block needs the
# most erasures would otherwise cost 200 a deblur.
RS_DECODES = 60
# Wiener deblurs tried, (focus blur σ px, noise-to-signal): the strongest read the most
# modules right on the bench's failures (σ 1.4 best, 1.2 and 1.6 next).
DEBLURS = ((1.4, 0.01), (1.2, 0.01), (1.6, 0.01))
REFINE_DEBLUR = (1.2, 0.05)
REFINE_STEPS = (1.0, 0.5, 0.25, 0.125)  # px
MIRROR_MARGIN = 0.3  # format-module correlation the mirrored reading must win by
CANCEL_RADIUS = 2  # modules of neighbourhood in the decision feedback
CANCEL_ROUNDS = 6
MIN_PX_PER_MODULE = 1.5  # below this a symbol's modules are not resolved at all
# Larger symbols are left to zxing-cpp: cards are versions 7-9 and posters smaller, and a
# damaged large one (up to 81 blocks) would cost seconds of Reed-Solomon attempts.
GRID_MAX_VERSION = 15


@dataclass(frozen=True, slots=True)
class Symbol:
    """A located symbol: its corners (frame px, clockwise from the top-left finder as the
    symbol reads) and what zxing-cpp read of its format and version."""

    quad: np.ndarray
    version: int
    ec: str
    mask: int

    @classmethod
    def from_barcode(cls, barcode: zxingcpp.Barcode, quad: np.ndarray) -> Symbol | None:
        """The symbol of a barcode that failed its checksum, or None when its version,
        level or mask is missing or out of range (a format error: nothing to go on)."""
        extra = barcode.extra if isinstance(barcode.extra, dict) else {}
        try:
            version, ec, mask = int(extra["Version"]), str(extra["ECLevel"]), int(extra["DataMask"])
        except (KeyError, TypeError, ValueError):
            return None
        if not (1 <= version <= 40 and ec in EC_LEVELS and 0 <= mask <= 7):
            return None
        return cls(quad.astype(np.float32), version, ec, mask)

    @property
    def size(self) -> int:
        return 17 + 4 * self.version


def _frozen(array: np.ndarray) -> np.ndarray:
    """A cached array made read-only: callers share it."""
    array.flags.writeable = False
    return array


@cache
def wiener_kernel(sigma: float, nsr: float, size: int, dims: int) -> np.ndarray:
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
    return _frozen((kernel / kernel.sum()).astype(np.float32))


# --- the symbol's structure -------------------------------------------------------------


@cache
def function_mask(version: int) -> np.ndarray:
    """Modules that hold no data (ISO/IEC 18004 section 6.3): finder patterns with their
    separators and format information, timing, alignment patterns, version information."""
    n = 17 + 4 * version
    f = np.zeros((n, n), bool)
    f[:9, :9] = f[:9, n - 8 :] = f[n - 8 :, :9] = True
    f[6, :] = f[:, 6] = True
    if version > 1:
        pos = segno.consts.ALIGNMENT_POS[version - 2]
        last = pos[-1]
        for r in pos:
            for c in pos:
                if (r, c) not in ((6, 6), (6, last), (last, 6)):
                    f[r - 2 : r + 3, c - 2 : c + 3] = True
    if version >= 7:
        f[:6, n - 11 : n - 8] = f[n - 11 : n - 8, :6] = True
    return _frozen(f)


@cache
def known_modules(version: int, ec: str, mask: int) -> tuple[np.ndarray, np.ndarray]:
    """(where, value): the non-data modules and their values (1 = dark) for a symbol of
    this version, level and mask, taken from a symbol segno draws with them."""
    code = segno.make_qr("1", version=version, error=ec.lower(), mask=mask, boost_error=False)
    return function_mask(version), _frozen(np.asarray(code.matrix, np.uint8))


def _mask_pattern(mask: int, n: int) -> np.ndarray:
    i, j = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    patterns = (
        lambda: (i + j) % 2 == 0,
        lambda: i % 2 == 0,
        lambda: j % 3 == 0,
        lambda: (i + j) % 3 == 0,
        lambda: (i // 2 + j // 3) % 2 == 0,
        lambda: (i * j) % 2 + (i * j) % 3 == 0,
        lambda: ((i * j) % 2 + (i * j) % 3) % 2 == 0,
        lambda: ((i + j) % 2 + (i * j) % 3) % 2 == 0,
    )
    return patterns[mask]().astype(np.uint8)


@dataclass(frozen=True, slots=True)
class _Layout:
    rows: np.ndarray  # data modules in bit-stream order
    cols: np.ndarray
    blocks: tuple[tuple[int, int], ...]  # (data codewords, EC codewords) per block
    order: tuple[tuple[int, int], ...]  # stream codeword -> (block, index in block)
    mask: np.ndarray


@cache
def _layout(version: int, ec: str, mask: int) -> _Layout:
    """Where each codeword's bits are (the two-column zigzag from the bottom right) and
    how the blocks are interleaved (section 7.6)."""
    n = 17 + 4 * version
    function = function_mask(version)
    blocks: list[tuple[int, int]] = []
    table: Any = segno.consts.ECC  # {version: {level: (EC(num_blocks, num_total, num_data), ...)}}
    for group in table[version][EC_LEVELS[ec]]:
        data = group.num_data
        blocks += [(data, group.num_total - data)] * group.num_blocks
    bits = 8 * sum(d + e for d, e in blocks)
    rows: list[int] = []
    cols: list[int] = []
    right = n - 1
    while right >= 1:
        if right == 6:
            right = 5
        upward = ((right + 1) & 2) == 0
        for vert in range(n):
            y = n - 1 - vert if upward else vert
            for x in (right, right - 1):
                if not function[y, x] and len(rows) < bits:
                    rows.append(y)
                    cols.append(x)
        right -= 2
    order = [
        (b, i) for i in range(max(d for d, _ in blocks)) for b, (d, _) in enumerate(blocks) if i < d
    ]
    order += [
        (b, d + i)
        for i in range(max(e for _, e in blocks))
        for b, (d, e) in enumerate(blocks)
        if i < e
    ]
    return _Layout(
        np.array(rows), np.array(cols), tuple(blocks), tuple(order), _mask_pattern(mask, n)
    )


_RS_LOCK = threading.Lock()


@cache
def _codec(nsym: int) -> reedsolo.RSCodec:
    # QR's Reed-Solomon code: GF(256) over x^8+x^4+x^3+x^2+1, generator roots a^0..a^(n-1).
    return reedsolo.RSCodec(nsym=nsym, nsize=255, fcr=0, prim=0x11D, generator=2)


def correct(bits: np.ndarray, certainty: np.ndarray, symbol: Symbol) -> np.ndarray | None:
    """The module matrix with every block's codewords corrected (errors and erasures, the
    least certain codewords erased), or None when a block cannot be corrected with
    ERASURE_MARGIN symbols to spare."""
    lay = _layout(symbol.version, symbol.ec, symbol.mask)
    stream = bits[lay.rows, lay.cols] ^ lay.mask[lay.rows, lay.cols]
    words = np.packbits(stream.reshape(-1, 8), axis=1).ravel()
    sure = certainty[lay.rows, lay.cols].reshape(-1, 8).min(axis=1)
    received = [bytearray(d + e) for d, e in lay.blocks]
    confidence = [np.zeros(d + e) for d, e in lay.blocks]
    for k, (b, i) in enumerate(lay.order):
        received[b][i] = words[k]
        confidence[b][i] = sure[k]
    fixed: list[bytearray] = []
    budget = RS_DECODES
    for b, (_, nsym) in enumerate(lay.blocks):
        ranked = [int(i) for i in np.argsort(confidence[b], kind="stable")]
        for erased in range(0, nsym - ERASURE_MARGIN + 1, ERASURE_STEP):
            if budget <= 0:
                return None
            budget -= 1
            erase = sorted(ranked[:erased])
            try:
                with _RS_LOCK:  # reedsolo keeps its field tables in module globals
                    _, full, errata = _codec(nsym).decode(
                        bytearray(received[b]), erase_pos=erase or None
                    )
            except reedsolo.ReedSolomonError:
                continue
            errors = len(set(errata) - set(erase))
            if 2 * errors + erased <= nsym - ERASURE_MARGIN:
                fixed.append(full)
                break
        else:
            return None
    out = bits.copy()
    words2 = np.array([fixed[b][i] for b, i in lay.order], np.uint8)
    out[lay.rows, lay.cols] = np.unpackbits(words2) ^ lay.mask[lay.rows, lay.cols]
    return out


# --- sampling the frame -------------------------------------------------------------------


def _homography(quad: np.ndarray, n: int) -> np.ndarray:
    square = np.array([[0, 0], [n, 0], [n, n], [0, n]], np.float32)
    return cv2.getPerspectiveTransform(square, quad.astype(np.float32))


def _sample(image: np.ndarray, h: np.ndarray, points: np.ndarray) -> np.ndarray:
    """``image`` (float32) at module coordinates ``points`` (k x 2), bilinear."""
    p = cv2.perspectiveTransform(points.reshape(-1, 1, 2).astype(np.float32), h).reshape(-1, 2)
    k, width = len(p), 256  # remap wants maps under 32k on a side
    rows = -(-k // width)
    grid = np.zeros((rows * width, 2), np.float32)
    grid[:k] = p
    mx, my = grid[:, 0].reshape(rows, width), grid[:, 1].reshape(rows, width)
    return cv2.remap(image, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE).ravel()[:k]


@cache
def _points(n: int, sub: int) -> np.ndarray:
    """Module coordinates of ``sub`` x ``sub`` samples over each module's central half."""
    offsets = np.array([0.5]) if sub == 1 else 0.25 + np.arange(sub) * 0.5 / (sub - 1)
    r, c = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    oy, ox = np.meshgrid(offsets, offsets, indexing="ij")
    xs = c[:, :, None, None] + ox[None, None]
    ys = r[:, :, None, None] + oy[None, None]
    return _frozen(np.stack([xs, ys], -1).reshape(n, n, sub * sub, 2).astype(np.float32))


def _refine(
    image: np.ndarray, quad: np.ndarray, symbol: Symbol, where: np.ndarray | None = None
) -> np.ndarray:
    """The corners moved (coordinate search) to where the known modules (or those
    ``where`` of them) match best."""
    n = symbol.size
    known, value = known_modules(symbol.version, symbol.ec, symbol.mask)
    if where is not None:
        known = known & where
    fit = _fitter(image, n, known, value[known])
    q = quad.astype(np.float64)
    best = fit(q)
    for step in REFINE_STEPS:
        improved = True
        while improved:
            improved = False
            for corner in range(4):
                for axis in range(2):
                    for move in (step, -step):
                        trial = q.copy()
                        trial[corner, axis] += move
                        got = fit(trial)
                        if got > best + 1e-9:
                            best, q, improved = got, trial, True
    return q.astype(np.float32)


def _levels(values: np.ndarray, symbol: Symbol) -> tuple[np.ndarray, np.ndarray]:
    """Dark and light levels over the symbol: planes fitted on the known modules."""
    n = symbol.size
    known, value = known_modules(symbol.version, symbol.ec, symbol.mask)
    r, c = np.meshgrid(np.arange(n) / n, np.arange(n) / n, indexing="ij")
    basis = np.stack([np.ones(n * n), r.ravel(), c.ravel()], 1)
    planes = []
    for want in (1, 0):
        chosen = (known & (value == want)).ravel()
        coef, *_ = np.linalg.lstsq(basis[chosen], values.ravel()[chosen], rcond=None)
        planes.append((basis @ coef).reshape(n, n))
    return planes[0], planes[1]


# QRCode (not QRCodeModel2): zxing-cpp 3.1's pure-image path finds nothing otherwise.
_PURE_FORMATS = zxingcpp.BarcodeFormats(zxingcpp.BarcodeFormat.QRCode)


def _clean(bits: np.ndarray, ppm: int = 4, quiet: int = 4) -> np.ndarray:
    image = np.pad(np.where(bits > 0, 0, 255).astype(np.uint8), quiet, constant_values=255)
    return cv2.resize(image, None, fx=ppm, fy=ppm, interpolation=cv2.INTER_NEAREST)


def _read_clean(bits: np.ndarray) -> list[str]:
    found = zxingcpp.read_barcodes(
        _clean(bits), formats=_PURE_FORMATS, is_pure=True, try_invert=False
    )
    return [
        b.text for b in found if b.valid and b.format == zxingcpp.BarcodeFormat.QRCode and b.text
    ]


def _oriented(image: np.ndarray, quad: np.ndarray, symbol: Symbol) -> np.ndarray:
    """The corners as the symbol reads, the top-right and bottom-left swapped for a
    mirrored symbol (zxing-cpp reports one's corners as if it were transposed). Finders,
    timing, alignment and version blocks look the same either way: the format modules,
    known for this level and mask, tell."""
    n = symbol.size
    fmt, words = _format_modules(symbol.version)
    want = words[(symbol.ec, symbol.mask)]
    turned = quad[[0, 3, 2, 1]]
    if _fit(image, turned, n, fmt, want) > _fit(image, quad, n, fmt, want) + MIRROR_MARGIN:
        return turned
    return quad


def _neighbours(bits: np.ndarray, radius: int) -> np.ndarray:
    """n x n x (2r+1)^2: each module's neighbourhood (outside the symbol: light)."""
    n = bits.shape[0]
    padded = np.pad(bits, radius)
    side = 2 * radius + 1
    return np.stack(
        [padded[dr : dr + n, dc : dc + n] for dr in range(side) for dc in range(side)], -1
    )


def _cancel(
    observed: np.ndarray, bits: np.ndarray, symbol: Symbol
) -> tuple[np.ndarray, np.ndarray]:
    """Decisions with the neighbours' blur taken out (decision feedback), and how sure each
    is (0-1).

    The mildly deblurred frame at each module is modelled as a plane (the lighting) plus
    a (2 CANCEL_RADIUS + 1)^2 kernel over the module and its neighbours (what is left of
    the focus blur), fitted by least squares on the current decisions; each module is
    then decided alone, given its neighbours' decisions, and the fit repeated. Where the
    linear deblur must amplify noise to undo the blur, this uses that modules are either
    dark or light: on the bench's failures it halved the module error rate (3.8% to 1.4%
    with the true payloads known).
    """
    n = symbol.size
    known, value = known_modules(symbol.version, symbol.ec, symbol.mask)
    r, c = np.meshgrid(np.arange(n) / n, np.arange(n) / n, indexing="ij")
    plane = np.stack([np.ones((n, n)), r, c], -1)
    centre = 3 + (2 * CANCEL_RADIUS + 1) ** 2 // 2
    current = bits.astype(np.float64)
    residual, own = np.zeros((n, n)), 1.0
    for _ in range(CANCEL_ROUNDS):
        design = np.concatenate([plane, _neighbours(current, CANCEL_RADIUS)], -1)
        design = design.reshape(n * n, -1)
        # Normal equations (28 unknowns): a tenth of lstsq's time on 2,401 modules.
        gram = design.T @ design + 1e-6 * np.eye(design.shape[1])
        coef = np.linalg.solve(gram, design.T @ observed.ravel())
        own = float(coef[centre])
        if own >= 0:
            break  # dark modules do not read darker: no code (or no fit) here
        rest = (design @ coef).reshape(n, n) - own * current
        residual = observed - rest
        decided = (np.abs(residual - own) < np.abs(residual)).astype(np.float64)
        decided[known] = value[known]
        if (decided == current).all():
            break
        current = decided
    if own >= 0:
        return bits, np.zeros((n, n))
    certainty = np.abs(np.abs(residual) - np.abs(residual - own)) / abs(own)
    return current.astype(np.uint8), certainty


def read_symbol(grey: np.ndarray, symbol: Symbol, deadline: float | None = None) -> list[str]:
    """The text of a located symbol read on its refined module grid, or [] (see above).
    A degenerate place (corners in a line, outside the frame) reads nothing; past
    ``deadline`` (time.monotonic()) no further deblur is tried."""
    try:
        return _read_symbol(grey, symbol, deadline)
    except (np.linalg.LinAlgError, cv2.error, ValueError):
        return []


def _read_symbol(grey: np.ndarray, symbol: Symbol, deadline: float | None) -> list[str]:
    n = symbol.size
    quad = symbol.quad
    if not np.isfinite(quad).all():
        return []
    side = float(np.linalg.norm(quad[1] - quad[0]) + np.linalg.norm(quad[3] - quad[0])) / 2
    if side / n < MIN_PX_PER_MODULE or symbol.version > GRID_MAX_VERSION:
        return []
    margin = 12
    height, width = grey.shape
    x0, y0 = (max(int(v) - margin, 0) for v in np.floor(quad.min(axis=0)))
    x1, y1 = (int(v) + margin for v in np.ceil(quad.max(axis=0)))
    x1, y1 = min(x1, width), min(y1, height)
    if x1 - x0 < 8 or y1 - y0 < 8:
        return []
    crop = grey[y0:y1, x0:x1].astype(np.float32)
    local = quad - np.array([x0, y0], np.float32)
    known, value = known_modules(symbol.version, symbol.ec, symbol.mask)
    mild = cv2.filter2D(crop, -1, wiener_kernel(*REFINE_DEBLUR, 15, 2))
    grid = _refine(mild, _oriented(mild, local, symbol), symbol)
    h = _homography(grid, n)
    if not np.isfinite(h).all():
        return []
    points = _points(n, 3).reshape(-1, 2)
    observed = _sample(mild, h, points).reshape(n, n, 9).mean(axis=2).astype(np.float64)
    for sigma, nsr in DEBLURS:
        sharp = cv2.filter2D(crop, -1, wiener_kernel(sigma, nsr, 15, 2))
        values = _sample(sharp, h, points).reshape(n, n, 9).mean(axis=2)
        dark, light = _levels(values, symbol)
        contrast = np.maximum(light - dark, 1e-3)
        if float(np.median(contrast)) <= 1.0:
            continue  # no code there: dark and light modules read alike
        middle = (dark + light) / 2
        bits = (values < middle).astype(np.uint8)
        bits[known] = value[known]
        # Only a matrix that passed correct() (its margin kept) goes to zxing-cpp, which
        # would correct up to the full capacity and so accept noise far more often. The
        # decisions are those with the neighbours' blur taken out.
        fixed = correct(*_cancel(observed, bits, symbol), symbol)
        texts = _read_clean(fixed) if fixed is not None else []
        if texts or (deadline is not None and time.monotonic() > deadline):
            return texts
    return []


# --- locating a symbol zxing-cpp did not find ----------------------------------------------
#
# At 2-2.5 px per module and focus blur σ 1.2-1.4, the one-module rings of a finder
# pattern are gone from the binarised frame, so zxing-cpp's detector (which looks for
# runs in the ratio 1:1:3:1:1) finds no finder at all; blurred, a finder still looks like
# a blurred finder. Normalised cross-correlation with templates of one (at FINDER_PPMS px
# per module, turned by FINDER_ANGLES) finds the three on the bench's missed codes at
# 0.7-0.9, with clutter and data below 0.6. Three that make a right-angled isosceles
# triangle give the grid (affine), the version is the one whose timing and alignment
# patterns fit best, the level and mask those whose format bits are nearest, and the
# symbol is then read as one zxing-cpp located.
FINDER_PPMS = (2.0, 2.4, 2.8, 3.3)
FINDER_ANGLES = (-20.0, 0.0, 20.0)
FINDER_BLUR = 1.2
FINDER_LEVEL = 0.6  # correlation a finder reaches at least
FINDER_PEAKS = 6
PPM_RANGE = (1.6, 3.8)  # px per module of the symbols looked for
FORMAT_MISMATCH = 9  # of the 30 format modules (two copies; BCH distance 7 a copy)
LOCATE_MAX_VERSION = GRID_MAX_VERSION
VERSION_TRIES = 2  # versions whose grids are refined and compared
FORMAT_TRIES = 2  # format words tried (a wrong one only fails the read)


@cache
def _finder_template(ppm: float, angle: float) -> np.ndarray:
    """A blurred finder pattern with its light separator (9 x 9 modules) turned by
    ``angle`` and cut to the square inside it (no corner of the template falls on the
    data modules around a finder; unmasked matching is several times faster)."""
    up = 8
    modules = np.zeros((9, 9), np.float32)
    modules[1:8, 1:8] = 1
    modules[2:7, 2:7] = 0
    modules[3:6, 3:6] = 1
    fine = cv2.resize(modules, None, fx=up, fy=up, interpolation=cv2.INTER_NEAREST)
    a = np.deg2rad(angle)
    side = int(9 * ppm / (abs(np.cos(a)) + abs(np.sin(a)))) | 1
    centre = 9 * up / 2
    warp = cv2.getRotationMatrix2D((centre, centre), angle, ppm / up).astype(np.float64)
    warp[:, 2] += side / 2 - centre
    ink = cv2.warpAffine(fine, warp, (side, side), flags=cv2.INTER_LINEAR, borderValue=0)
    return 255 - 255 * cv2.GaussianBlur(ink, (0, 0), FINDER_BLUR)


def _finder_peaks(image: np.ndarray) -> list[tuple[np.ndarray, float]]:
    """Centres (px) of finder-like spots and their correlation, best first."""
    best: np.ndarray | None = None
    for ppm in FINDER_PPMS:
        for angle in FINDER_ANGLES:
            template = _finder_template(ppm, angle)
            if template.shape[0] >= min(image.shape):
                continue
            fit = cv2.matchTemplate(image, template, cv2.TM_CCOEFF_NORMED)
            fit = np.nan_to_num(fit, nan=-1.0, posinf=-1.0, neginf=-1.0)
            off = template.shape[0] // 2
            full = np.full(image.shape, -1.0, np.float32)
            full[off : off + fit.shape[0], off : off + fit.shape[1]] = fit
            best = full if best is None else np.maximum(best, full)
    if best is None:
        return []
    peaks = (best == cv2.dilate(best, np.ones((9, 9), np.uint8))) & (best >= FINDER_LEVEL)
    ys, xs = np.nonzero(peaks)
    order = np.argsort(-best[ys, xs])[:FINDER_PEAKS]
    return [(np.array([xs[i], ys[i]], np.float64), float(best[ys[i], xs[i]])) for i in order]


def _triangles(
    peaks: list[tuple[np.ndarray, float]],
) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(top-left, top-right, bottom-left) finder centres making a right-angled isosceles
    triangle, clockwise as a symbol reads (y down), the best correlated first."""
    found = []
    for (a, fa), (b, fb), (c, fc) in itertools.permutations(peaks, 3):
        ab, ac = b - a, c - a
        lb, lc = float(np.linalg.norm(ab)), float(np.linalg.norm(ac))
        if min(lb, lc) < 12 or abs(lb - lc) > 0.15 * max(lb, lc):
            continue
        if abs(float(ab @ ac)) > 0.26 * lb * lc or ab[0] * ac[1] - ab[1] * ac[0] <= 0:
            continue
        found.append((fa + fb + fc, a, b, c))
    found.sort(key=lambda t: -t[0])
    return [(a, b, c) for _, a, b, c in found]


def _affine_quad(tl: np.ndarray, tr: np.ndarray, bl: np.ndarray, n: int) -> np.ndarray:
    """The symbol's corners from its finders' centres (at modules 3.5 from its edges)."""
    src = np.array([[3.5, 3.5], [n - 3.5, 3.5], [3.5, n - 3.5]], np.float32)
    warp = cv2.getAffineTransform(src, np.array([tl, tr, bl], np.float32))
    corners = np.array([[0, 0], [n, 0], [n, n], [0, n]], np.float32)
    return (corners @ warp[:, :2].T + warp[:, 2]).astype(np.float32)


@cache
def _format_modules(version: int) -> tuple[np.ndarray, dict[tuple[str, int], np.ndarray]]:
    """Where the format information is, and its modules for every level and mask. The
    format sits at the same places relative to the three corners in every version: taken
    from version 1's 32 symbols (cheap to draw) and moved out to this version's size."""
    combos = [(ec, mask) for ec in EC_LEVELS for mask in range(8)]
    small = {combo: known_modules(1, *combo)[1] for combo in combos}
    stack = np.stack(list(small.values()))
    rows, cols = np.nonzero(function_mask(1) & (stack != stack[0]).any(axis=0))
    grow = 4 * (version - 1)
    rows_v = np.where(rows >= 13, rows + grow, rows)
    cols_v = np.where(cols >= 13, cols + grow, cols)
    where = np.zeros((17 + 4 * version,) * 2, bool)
    where[rows_v, cols_v] = True
    # Boolean indexing reads row by row: order version 1's bits the same way.
    order = np.lexsort((cols_v, rows_v))
    return where, {combo: m[rows, cols][order] for combo, m in small.items()}


@cache
def _structure(version: int) -> tuple[np.ndarray, np.ndarray]:
    """The known modules that do not depend on level and mask, and their values."""
    where = function_mask(version) & ~_format_modules(version)[0]
    return where, known_modules(version, "M", 0)[1][where]


def _fitter(
    image: np.ndarray, n: int, where: np.ndarray, want: np.ndarray
) -> Callable[[np.ndarray], float]:
    """How well the modules ``where`` match ``want`` (1 = dark) for corners ``quad``:
    the correlation of their centres' grey with it, dark being low grey."""
    points = _points(n, 1)[:, :, 0, :][where]
    w = want.astype(np.float32) - want.mean()
    w /= np.linalg.norm(w) + 1e-12

    def fit(quad: np.ndarray) -> float:
        v = _sample(image, _homography(quad, n), points)
        v = v - v.mean()
        return -float(v @ w) / (float(np.linalg.norm(v)) + 1e-6)

    return fit


def _fit(image: np.ndarray, quad: np.ndarray, n: int, where: np.ndarray, want: np.ndarray) -> float:
    return _fitter(image, n, where, want)(quad)


def locate(grey: np.ndarray) -> list[Symbol]:
    """Symbols found by their blurred finder patterns in ``grey`` (a crop around where a
    code may be), with version, level and mask read from the frame; best first."""
    try:
        return _locate(grey)
    except (np.linalg.LinAlgError, cv2.error, ValueError):
        return []


def _locate(grey: np.ndarray) -> list[Symbol]:
    image = cv2.filter2D(grey.astype(np.float32), -1, wiener_kernel(*REFINE_DEBLUR, 15, 2))
    out: list[Symbol] = []
    for tl, tr, bl in _triangles(_finder_peaks(image))[:3]:
        if any(inside(tl, s.quad) for s in out):
            continue
        spacing = float(np.linalg.norm(tr - tl) + np.linalg.norm(bl - tl)) / 2
        versions = [
            v
            for v in range(1, LOCATE_MAX_VERSION + 1)
            if PPM_RANGE[0] <= spacing / (10 + 4 * v) <= PPM_RANGE[1]  # n - 7 = 10 + 4v
        ]
        if not versions:
            continue
        scored = []
        for v in versions:
            n = 17 + 4 * v
            where, values = _structure(v)
            scored.append((_fit(image, _affine_quad(tl, tr, bl, n), n, where, values), v))
        # The two versions that fit best as found, compared once their grids are refined
        # (a neighbouring version's timing can fit an unrefined grid better).
        refined = []
        for _, v in sorted(scored, reverse=True)[:VERSION_TRIES]:
            n = 17 + 4 * v
            where, values = _structure(v)
            start = Symbol(_affine_quad(tl, tr, bl, n), v, "M", 0)
            quad = _refine(image, start.quad, start, where=where)
            refined.append((_fit(image, quad, n, where, values), v, quad))
        _, version, quad = max(refined, key=lambda t: t[0])
        n = 17 + 4 * version
        fmt, words = _format_modules(version)
        # The three finders read one way or, mirrored, transposed: the format modules
        # (nearest words by correlation, kept when few modules disagree) tell which.
        options = []
        for grid in (quad, quad[[0, 3, 2, 1]]):
            read = _sample(image, _homography(grid, n), _points(n, 1)[:, :, 0, :][fmt])
            read = read - read.mean()
            for combo, word in words.items():
                options.append((float(read @ (word - 0.5)), combo, grid, (read < 0) != word))
        options.sort(key=lambda t: t[0])
        for _, (ec, mask), grid, wrong in options[:FORMAT_TRIES]:
            if int(wrong.sum()) <= FORMAT_MISMATCH:
                out.append(Symbol(grid, version, ec, mask))
    return out


def inside(point: np.ndarray, quad: np.ndarray) -> bool:
    """Whether a point lies in (or on) a quadrilateral."""
    return (
        cv2.pointPolygonTest(quad.reshape(-1, 1, 2), (float(point[0]), float(point[1])), False) >= 0
    )


__all__ = [
    "Symbol",
    "correct",
    "function_mask",
    "inside",
    "known_modules",
    "locate",
    "read_symbol",
    "wiener_kernel",
]
