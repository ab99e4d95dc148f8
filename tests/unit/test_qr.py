"""gate.qr on frames generated from known payloads, and `dancu gate decode` on files."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import zxingcpp
from typer.testing import CliRunner

from dancu.main import app
from gate import frames
from gate.frames import Camera, Look
from gate.qr import (
    BadFrame,
    Decoded,
    UnreadableImage,
    classify,
    decode_frame,
    decode_image_file,
    decode_texts,
    to_grey,
)

CARD = (
    "001090123456|012345678|Nguyễn Văn An|15031990|Nam|"
    "Số 12 Ngõ 34 Kim Mã, Phường Kim Mã, Quận Ba Đình, Hà Nội|10052021"
)
OTHER = frames.cccd_payload(np.random.default_rng(7))
POSTER = "DANCU1|cp-0042|2026-11-27|c2lnbmF0dXJl"
BIG = Look(size=220, angle=8, tilt=0.03)


def frame(
    *payloads: str, look: Look = BIG, camera: Camera = frames.CLEAN, seed: int = 1
) -> np.ndarray:
    return frames.render(payloads, [look] * len(payloads), camera, seed=seed)


def test_a_clean_card_is_read_as_its_id_only() -> None:
    [code] = decode_frame(frame(CARD))
    assert code.kind == "cccd"
    assert code.text == CARD
    assert code.detail == {"id": "001090123456", "layout": "classic"}
    assert code.summary() == {"kind": "cccd", "id": "001090123456"}
    assert "Nguyễn" not in repr(code)


@pytest.mark.parametrize(
    ("look", "camera"),
    [
        pytest.param(Look(size=220, angle=25), frames.CLEAN, id="rotated 25°"),
        pytest.param(Look(size=220, angle=-25), frames.CLEAN, id="rotated -25°"),
        pytest.param(Look(size=220, angle=5, tilt=0.08), frames.CLEAN, id="perspective"),
        pytest.param(Look(size=220, dark=120, light=175), frames.CLEAN, id="low contrast"),
        pytest.param(BIG, Camera(blur=1.2), id="blur σ1.2"),
        pytest.param(BIG, Camera(noise=7), id="noise"),
        pytest.param(BIG, Camera(jpeg=50), id="jpeg 50"),
        pytest.param(BIG, Camera(shading=0.3), id="shading"),
        pytest.param(
            Look(size=160, angle=-20, tilt=0.06, dark=80, light=170),
            frames.GATE_CAMERA,
            id="all at once",
        ),
    ],
)
def test_distorted_frames_decode(look: Look, camera: Camera) -> None:
    assert decode_texts(frame(OTHER, look=look, camera=camera)) == [OTHER]


def test_a_small_blurred_code_needs_the_retries_and_gets_them() -> None:
    image = frame(
        OTHER,
        look=Look(size=125, angle=10, tilt=0.03, dark=60, light=200),
        camera=Camera(blur=1.3, noise=4, jpeg=50, shading=0.1),
    )
    plain = zxingcpp.read_barcodes(to_grey(image), formats=zxingcpp.BarcodeFormat.QRCode)
    assert plain == []  # plain zxing-cpp cannot: this frame exercises the cascade
    assert decode_texts(image) == [OTHER]


def test_two_codes_in_one_frame_are_both_read() -> None:
    image = frame(CARD, OTHER, look=Look(size=150, angle=-6))
    codes = decode_frame(image)
    assert sorted(c.text for c in codes) == sorted([CARD, OTHER])
    assert {c.kind for c in codes} == {"cccd"}


def test_the_same_code_twice_is_reported_once() -> None:
    assert decode_texts(frame(CARD, CARD, look=Look(size=150))) == [CARD]


def test_a_frame_without_a_code_gives_nothing() -> None:
    assert decode_frame(frame()) == []


def test_a_light_on_dark_code_is_read() -> None:
    assert decode_texts(255 - frame(OTHER)) == [OTHER]


def test_a_dancu_code_is_classified_by_its_prefix() -> None:
    [code] = decode_frame(frame(POSTER))
    assert code.kind == "dancu"
    assert code.detail == {"raw": POSTER}
    assert code.summary() == {"kind": "dancu", "text": POSTER}


def test_a_non_cccd_qr_is_unrecognised_with_a_reason() -> None:
    [code] = decode_frame(frame("https://example.org/menu?table=4"))
    assert code.kind == "unrecognised"
    assert code.detail["reason"] == "not a CCCD payload: no '|' separators, 7 expected"
    assert code.summary()["text"] == "https://example.org/menu?table=4"
    assert classify("a|b|c").detail["reason"] == "not a CCCD payload: 3 fields, 7 expected"


@pytest.mark.parametrize(
    ("payload", "fragment"),
    [
        (CARD.replace("001090123456", "099090123456"), "unknown province code 099"),
        (CARD.replace("|Nam|", "|Nữ|"), "says Nam but gender is Nữ"),
        (CARD.replace("15031990", "15031991"), "birth year 1991 but ID says 1990"),
        (CARD.replace("001090123456", "00109012345"), "must be exactly 12 digits"),
    ],
)
def test_a_card_with_a_bad_id_is_never_accepted(payload: str, fragment: str) -> None:
    [code] = decode_frame(frame(payload))
    assert code.kind == "unrecognised"
    assert fragment in str(code.detail["reason"])
    assert "id" not in code.detail
    summary = json.dumps(code.summary(), ensure_ascii=False)
    assert "Nguyễn" not in summary and "Kim Mã" not in summary  # a card-like text stays hidden


def test_a_name_with_digits_is_not_quoted_in_the_reason() -> None:
    code = classify(CARD.replace("Nguyễn Văn An", "Nguyễn Văn 4n"))
    assert code.kind == "unrecognised"
    assert "name contains digits" in str(code.detail["reason"])
    assert "Nguyễn" not in str(code.detail["reason"])


def test_a_newer_layout_card_is_recognised() -> None:
    f = CARD.split("|")
    reordered = "|".join([f[2], f[0], f[4], f[3], f[6], f[5], f[1]])
    code = classify(reordered)
    assert (code.kind, code.detail) == ("cccd", {"id": "001090123456", "layout": "reordered"})


def test_grey_and_bgra_frames_are_accepted_and_other_arrays_refused() -> None:
    image = frame(CARD)
    assert decode_texts(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)) == [CARD]
    assert decode_texts(cv2.cvtColor(image, cv2.COLOR_BGR2BGRA)) == [CARD]
    with pytest.raises(BadFrame, match="8-bit"):
        decode_frame(image.astype(np.float32))
    with pytest.raises(BadFrame, match="shape"):
        decode_frame(np.zeros((4, 4, 2), np.uint8))


def test_image_files_decode_and_unreadable_ones_say_why(tmp_path: Path) -> None:
    png = tmp_path / "card.png"
    cv2.imwrite(str(png), frame(CARD))
    assert [d.text for d in decode_image_file(png)] == [CARD]
    with pytest.raises(UnreadableImage, match="no such file"):
        decode_image_file(tmp_path / "missing.png")
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    with pytest.raises(UnreadableImage, match="not an image"):
        decode_image_file(text)


def _cli(*paths: Path) -> tuple[int, list[dict[str, object]]]:
    result = CliRunner().invoke(app, ["gate", "decode", *map(str, paths)])
    return result.exit_code, [json.loads(line) for line in result.stdout.splitlines()]


def test_cli_prints_a_json_line_per_image_and_exits_by_the_worst(tmp_path: Path) -> None:
    card, poster, empty, other = (tmp_path / f"{n}.jpg" for n in ("card", "poster", "empty", "x"))
    cv2.imwrite(str(card), frame(CARD, camera=Camera(jpeg=60)))
    cv2.imwrite(str(poster), frame(POSTER))
    cv2.imwrite(str(empty), frame())
    cv2.imwrite(str(other), frame("hello"))
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n truncated")

    code, lines = _cli(card, poster)
    assert code == 0
    assert lines == [
        {"image": str(card), "codes": [{"kind": "cccd", "id": "001090123456"}]},
        {"image": str(poster), "codes": [{"kind": "dancu", "text": POSTER}]},
    ]
    assert "Nguyễn" not in json.dumps(lines, ensure_ascii=False)

    code, lines = _cli(card, empty, other)
    assert code == 1
    assert lines[1] == {"image": str(empty), "codes": [], "error": "no QR code found"}
    assert lines[2]["codes"] == [
        {
            "kind": "unrecognised",
            "text": "hello",
            "reason": "not a CCCD payload: no '|' separators, 7 expected",
        }
    ]

    code, lines = _cli(card, broken, empty)
    assert code == 2
    assert lines[1]["codes"] == [] and "not an image" in str(lines[1]["error"])
    assert len(lines) == 3  # the images after an unreadable one are still decoded


def test_decoded_is_frozen() -> None:
    code = Decoded("x", "unrecognised", {"reason": "r"})
    with pytest.raises(AttributeError):
        code.kind = "cccd"  # type: ignore[misc]  # the point of the test
