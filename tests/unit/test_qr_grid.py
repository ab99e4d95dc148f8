"""gate.qr_grid: the QR structure it relies on, Reed-Solomon with erasures, and symbols
that only a read on their module grid decodes."""

from __future__ import annotations

import zlib

import numpy as np
import pytest
import segno

from gate import frames, qr, qr_grid
from gate.frames import Camera, Look
from gate.qr_grid import Symbol

CARD = (
    "001090123456|012345678|Nguyễn Văn An|15031990|Nam|"
    "Số 12 Ngõ 34 Kim Mã, Phường Kim Mã, Quận Ba Đình, Hà Nội|10052021"
)


def raw_data_modules(version: int) -> int:
    """ISO/IEC 18004's count of data and EC modules (remainder bits included)."""
    n = (16 * version + 128) * version + 64
    if version >= 2:
        k = version // 7 + 2
        n -= (25 * k - 10) * k - 55
        if version >= 7:
            n -= 36
    return n


@pytest.mark.parametrize("version", range(1, 41))
def test_function_mask_leaves_exactly_the_data_modules(version: int) -> None:
    assert int((~qr_grid.function_mask(version)).sum()) == raw_data_modules(version)


def card_symbol() -> tuple[np.ndarray, Symbol]:
    mask = zlib.crc32(CARD.encode()) % 8
    code = segno.make_qr(CARD, error="m", boost_error=False, mask=mask)
    matrix = np.asarray(code.matrix, np.uint8)
    return matrix, Symbol(np.zeros((4, 2), np.float32), int(code.version), "M", mask)


def test_known_modules_are_those_of_a_real_card_symbol() -> None:
    matrix, s = card_symbol()
    where, value = qr_grid.known_modules(s.version, s.ec, s.mask)
    assert matrix.shape == (s.size, s.size)
    assert (value[where] == matrix[where]).all()


def flip_codewords(matrix: np.ndarray, s: Symbol, per_block: int, seed: int) -> np.ndarray:
    """A copy with ``per_block`` whole codewords of every block inverted; certainty 0.05
    on their modules and 0.5 elsewhere."""
    lay = qr_grid._layout(s.version, s.ec, s.mask)
    rng = np.random.default_rng(seed)
    bad = np.zeros(matrix.shape, bool)
    for block in range(len(lay.blocks)):
        stream = [k for k, (b, _) in enumerate(lay.order) if b == block]
        for k in rng.choice(stream, per_block, replace=False):
            bad[lay.rows[8 * k : 8 * k + 8], lay.cols[8 * k : 8 * k + 8]] = True
    certainty = np.where(bad, 0.05, 0.5)
    return np.where(bad, 1 - matrix, matrix).astype(np.uint8), certainty


def test_errors_within_capacity_are_corrected() -> None:
    matrix, s = card_symbol()
    broken, _ = flip_codewords(matrix, s, per_block=9, seed=1)  # 22 EC codewords a block
    fixed = qr_grid.correct(broken, np.full(matrix.shape, 0.5), s)
    assert fixed is not None and (fixed == matrix).all()
    assert qr_grid._read_clean(fixed) == [CARD]


def test_erasures_correct_what_errors_alone_cannot() -> None:
    matrix, s = card_symbol()
    broken, certainty = flip_codewords(matrix, s, per_block=14, seed=2)
    assert qr_grid.correct(broken, np.full(matrix.shape, 0.5), s) is None
    fixed = qr_grid.correct(broken, certainty, s)
    assert fixed is not None and (fixed == matrix).all()


def test_noise_is_never_corrected_into_a_symbol() -> None:
    _, s = card_symbol()
    rng = np.random.default_rng(3)
    for _ in range(30):
        noise = rng.integers(0, 2, (s.size, s.size), dtype=np.uint8)
        assert qr_grid.correct(noise, rng.random((s.size, s.size)), s) is None


def small_dim_card(seed: int) -> np.ndarray:
    look = Look(size=118, angle=12, tilt=0.03, dark=120, light=180)  # 2.4 px a module
    return frames.render([CARD], [look], Camera(blur=1.2, noise=4.0, jpeg=50), seed=seed)


@pytest.mark.parametrize("seed", [5, 7, 10])
def test_a_symbol_the_cascade_only_locates_is_read_on_its_grid(
    seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    image = small_dim_card(seed)
    assert qr.decode_texts(image) == [CARD]
    monkeypatch.setattr(qr, "read_symbol", lambda grey, symbol, deadline=None: [])
    assert qr.decode_texts(image) != [CARD]


def test_a_symbol_with_an_impossible_format_is_skipped() -> None:
    class Failed:
        def __init__(self, extra: dict[str, str]) -> None:
            self.extra = extra

    corners = np.zeros((4, 2), np.float32)
    good = {"Version": "8", "ECLevel": "M", "DataMask": "3"}
    read = Symbol.from_barcode(Failed(good), corners)  # type: ignore[arg-type]
    assert read is not None and (read.version, read.ec, read.mask) == (8, "M", 3)
    for bad in ({**good, "Version": "41"}, {**good, "DataMask": "x"}, {"ECLevel": "M"}):
        assert Symbol.from_barcode(Failed(bad), corners) is None  # type: ignore[arg-type]


def test_a_tiny_or_flat_symbol_reads_nothing() -> None:
    _, s = card_symbol()
    grey = np.full((480, 640), 128, np.uint8)
    square = np.array([[100, 100], [160, 100], [160, 160], [100, 160]], np.float32)
    assert qr_grid.read_symbol(grey, Symbol(square, s.version, s.ec, s.mask)) == []
    tiny = square / 4
    assert qr_grid.read_symbol(grey, Symbol(tiny, s.version, s.ec, s.mask)) == []


def blurred_small_card(seed: int) -> np.ndarray:
    look = Look(size=108, angle=-10, tilt=0.03, dark=60, light=200)  # 2.2 px a module
    return frames.render([CARD], [look], Camera(blur=1.35, noise=5.0, jpeg=50), seed=seed)


@pytest.mark.parametrize("seed", [7, 13])
def test_a_symbol_zxing_does_not_find_is_located_by_its_finders(
    seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    image = blurred_small_card(seed)
    assert qr.decode_texts(image) == [CARD]
    monkeypatch.setattr(qr, "locate", lambda grey: [])
    assert qr.decode_texts(image) != [CARD]


def test_locate_reads_version_level_and_mask_from_the_frame() -> None:
    _, s = card_symbol()
    grey = qr.to_grey(blurred_small_card(7))
    located = qr_grid.locate(grey)
    assert [(x.version, x.ec, x.mask) for x in located][:1] == [(s.version, s.ec, s.mask)]


def test_a_symbol_with_random_data_locates_but_reads_nothing() -> None:
    """Finders, timing, format and version as a card's, data modules random: the finders
    are found, and Reed-Solomon refuses what is no code."""
    matrix, s = card_symbol()
    known, _ = qr_grid.known_modules(s.version, s.ec, s.mask)
    rng = np.random.default_rng(5)
    located = 0
    for _ in range(12):
        fake = np.where(known, matrix, rng.integers(0, 2, matrix.shape)).astype(np.uint8)
        scene = frames._background(rng)
        look = Look(size=130, angle=float(rng.uniform(-20, 20)), dark=50, light=200)
        corners = frames._corners(look, (320.0, 240.0), rng)
        scene = frames._paint(scene, fake, corners, look)
        image = frames._through_camera(scene, Camera(blur=1.2, noise=4.0, jpeg=50), rng)
        grey = qr.to_grey(image)
        crop = np.ascontiguousarray(grey[150:330, 230:410])
        for symbol in qr_grid.locate(crop):
            located += 1
            assert qr_grid.read_symbol(crop, symbol) == []
        assert qr.decode_texts(image) == []
    assert located >= 6


def test_clutter_without_a_code_locates_nothing_readable() -> None:
    rng = np.random.default_rng(5)
    looked = 0
    for _ in range(20):
        # Rectangles, lines, shading, noise and a patch of random modules (a code's
        # texture without its finders): nothing to read where the decoder looks.
        scene = frames._background(rng)
        look = Look(size=float(rng.uniform(100, 200)), angle=float(rng.uniform(-25, 25)))
        corners = frames._corners(look, (320.0, 240.0), rng)
        patch = rng.integers(0, 2, (45, 45)).astype(np.uint8)
        scene = frames._paint(scene, patch, corners, look)
        grey = qr.to_grey(frames._through_camera(scene, frames.gate_camera(rng), rng))
        regions, wide = qr._textured(grey, [])
        for x0, y0, x1, y1 in regions + wide:
            crop = np.ascontiguousarray(grey[y0:y1, x0:x1])
            looked += 1
            for symbol in qr_grid.locate(crop):
                assert qr_grid.read_symbol(crop, symbol) == []
        assert qr.decode_texts(grey) == []
    assert looked >= 10


def test_any_place_reads_without_raising() -> None:
    """Corners anywhere (in a line, on one point, far outside, not finite): [] or a text,
    never an exception that would stop a gate."""
    _, s = card_symbol()
    grey = qr.to_grey(small_dim_card(5))
    rng = np.random.default_rng(9)
    places = [
        np.full((4, 2), 50, np.float32),
        np.array([[0, 0], [100, 0], [200, 0], [300, 0]], np.float32),
        np.array([[-500, -500], [-300, -500], [-300, -300], [-500, -300]], np.float32),
        np.array([[0, 0], [np.inf, 0], [100, 100], [0, 100]], np.float32),
        np.array([[0, 0], [np.nan, 0], [100, 100], [0, 100]], np.float32),
    ]
    places += [rng.uniform(-100, 700, (4, 2)).astype(np.float32) for _ in range(40)]
    for quad in places:
        assert isinstance(qr_grid.read_symbol(grey, Symbol(quad, s.version, "M", 3)), list)
    for size in [(0, 0), (1, 1), (5, 300), (300, 5)]:
        assert qr_grid.locate(np.zeros(size, np.uint8)) == []


@pytest.mark.parametrize("seed", [5, 7])
def test_a_mirrored_symbol_zxing_locates_is_read(seed: int) -> None:
    """zxing-cpp reports a mirrored symbol's corners as if it were transposed: the format
    modules decide the orientation."""
    mirrored = np.ascontiguousarray(small_dim_card(seed)[:, ::-1])
    assert qr.decode_texts(mirrored) == [CARD]


@pytest.mark.parametrize("seed", [7, 13])
def test_a_mirrored_symbol_is_located_by_its_finders(seed: int) -> None:
    assert qr.decode_texts(np.ascontiguousarray(blurred_small_card(seed)[:, ::-1])) == [CARD]


@pytest.mark.parametrize(
    "shape", [(0, 0), (1, 1), (1, 400), (400, 1), (6, 6), (20, 300), (3, 4000)]
)
def test_an_image_too_small_for_a_symbol_reads_nothing(shape: tuple[int, int]) -> None:
    assert qr.decode_texts(np.zeros(shape, np.uint8)) == []
    assert qr.decode_texts(np.full((*shape, 3), 200, np.uint8)) == []


def test_past_the_budget_no_further_search_starts(monkeypatch: pytest.MonkeyPatch) -> None:
    """With no time left after the first pass, a symbol only the grid reads stays unread,
    while a plain card is still read by the first pass."""
    monkeypatch.setattr(qr, "EXTRA_BUDGET", -1.0)
    assert qr.decode_texts(small_dim_card(5)) == []
    clear = frames.render([CARD], [Look(size=220, angle=8)], frames.CLEAN, seed=1)
    assert qr.decode_texts(clear) == [CARD]
