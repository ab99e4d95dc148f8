"""A checkpoint's printable poster (A4, portrait): its signed QR code, name, address, a
short instruction in Vietnamese and its ID, as SVG (vector, for print shops) or PNG (for
a screen or an office printer). The QR text is made by :mod:`registry.posters`.

The PNG needs a font with Vietnamese letters: DejaVu Sans from the system, else the one
matplotlib bundles; failing both, Pillow's default font, whose letters may lack the
diacritics (the QR code, the part that matters, is unaffected).
"""

from __future__ import annotations

import io
import textwrap
from dataclasses import dataclass
from functools import cache
from importlib import util
from pathlib import Path
from xml.sax.saxutils import escape

import segno
from PIL import Image, ImageDraw, ImageFont

INSTRUCTION = "Quét mã để khai báo vào/ra"
HEADING = "ĐIỂM KIỂM SOÁT DỊCH"
CITY = "Hà Nội"
BORDER = 4  # quiet zone, in modules (the QR standard's minimum)
FONT_DIRS = (
    Path("/usr/share/fonts/truetype/dejavu"),
    Path("/usr/share/fonts/dejavu"),
    Path("/usr/local/share/fonts"),
)


@dataclass(frozen=True, slots=True)
class Line:
    text: str
    size: float  # in mm of A4 height (the SVG's units; the PNG scales them)
    bold: bool = False


def poster_lines(fields: dict[str, str], checkpoint_id: str) -> tuple[list[Line], list[Line]]:
    """The text above and below the QR code."""
    name = fields.get("name") or checkpoint_id
    address = ", ".join(p for p in (fields.get("ward"), fields.get("district"), CITY) if p)
    above = [Line(HEADING, 7, bold=True)]
    above += [Line(t, 11, bold=True) for t in textwrap.wrap(name, 28)[:3]]
    above += [Line(t, 6) for t in textwrap.wrap(address, 48)[:2]]
    below = [Line(INSTRUCTION, 9, bold=True), Line(f"Mã điểm: {checkpoint_id}", 5.5)]
    return above, below


def qr_code(payload: str) -> segno.QRCode:
    return segno.make(payload, error="m", micro=False)


# -- SVG ----------------------------------------------------------------------------------
A4_W, A4_H = 210.0, 297.0  # mm
QR_MM = 150.0


def _svg_text(line: Line, y: float) -> str:
    weight = ' font-weight="bold"' if line.bold else ""
    return (
        f'<text x="{A4_W / 2:g}" y="{y:.1f}" font-size="{line.size:g}"{weight} '
        f'text-anchor="middle">{escape(line.text)}</text>'
    )


def render_svg(payload: str, fields: dict[str, str], checkpoint_id: str) -> bytes:
    """The poster as an SVG document in millimetres (A4), segno's QR code embedded."""
    buf = io.BytesIO()
    qr_code(payload).save(
        buf, kind="svg", xmldecl=False, svgns=False, nl=False, omitsize=True, border=BORDER
    )
    qr = buf.getvalue().decode("utf-8")
    x = (A4_W - QR_MM) / 2
    above, below = poster_lines(fields, checkpoint_id)
    parts, y = [], 22.0
    for line in above:
        y += line.size * 1.25
        parts.append(_svg_text(line, y))
    qr_top = max(y + 6, 80.0)
    qr = qr.replace(
        "<svg ", f'<svg x="{x:g}" y="{qr_top:.1f}" width="{QR_MM:g}" height="{QR_MM:g}" ', 1
    )
    y = qr_top + QR_MM + 4
    for line in below:
        y += line.size * 1.5
        parts.append(_svg_text(line, y))
    body = "\n".join(parts)
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{A4_W:g}mm" height="{A4_H:g}mm" '
        f'viewBox="0 0 {A4_W:g} {A4_H:g}" font-family="DejaVu Sans, Arial, sans-serif">\n'
        f'<rect width="{A4_W:g}" height="{A4_H:g}" fill="#fff"/>\n'
        f'<rect x="6" y="6" width="{A4_W - 12:g}" height="{A4_H - 12:g}" fill="none" '
        'stroke="#c62828" stroke-width="1.5"/>\n'
        f"{body}\n{qr}\n</svg>\n"
    ).encode()


# -- PNG ----------------------------------------------------------------------------------
DPI = 150
PX_PER_MM = DPI / 25.4


def _font_paths(bold: bool) -> list[Path]:
    name = "DejaVuSans-Bold.ttf" if bold else "DejaVuSans.ttf"
    paths = [d / name for d in FONT_DIRS]
    spec = util.find_spec("matplotlib")
    if spec is not None and spec.origin:
        paths.append(Path(spec.origin).parent / "mpl-data" / "fonts" / "ttf" / name)
    return paths


@cache
def font(size_px: int, bold: bool) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """DejaVu Sans at ``size_px`` (it has every Vietnamese letter), else Pillow's default."""
    for path in _font_paths(bold):
        if path.is_file():
            return ImageFont.truetype(str(path), size_px)
    return ImageFont.load_default(size_px)


def _wrap(draw: ImageDraw.ImageDraw, text: str, face: object, width: float) -> list[str]:
    lines: list[str] = []
    for word in text.split():
        if lines and draw.textlength(f"{lines[-1]} {word}", font=face) <= width:  # type: ignore[arg-type]  # a Pillow font
            lines[-1] = f"{lines[-1]} {word}"
        else:
            lines.append(word)
    return lines or [""]


def render_png(payload: str, fields: dict[str, str], checkpoint_id: str) -> bytes:
    """The poster as a PNG at 150 dpi (1240 × 1754 pixels): the QR modules drawn from
    segno's matrix at a whole number of pixels each, so they stay sharp."""
    w, h = round(A4_W * PX_PER_MM), round(A4_H * PX_PER_MM)
    image = Image.new("L", (w, h), 255)
    draw = ImageDraw.Draw(image)
    margin = round(6 * PX_PER_MM)
    draw.rectangle((margin, margin, w - margin, h - margin), outline=0, width=3)
    code = qr_code(payload)
    modules = len(code.matrix) + 2 * BORDER
    scale = max(1, round(QR_MM * PX_PER_MM) // modules)
    side = modules * scale
    rows = [bytes([255] * modules)] * BORDER
    rows += [
        bytes([255] * BORDER + [0 if m else 255 for m in row] + [255] * BORDER)
        for row in code.matrix
    ]
    rows += [bytes([255] * modules)] * BORDER
    qr = Image.frombytes("L", (modules, modules), b"".join(rows)).resize(
        (side, side), Image.Resampling.NEAREST
    )
    above, below = poster_lines(fields, checkpoint_id)
    y = 22 * PX_PER_MM

    def put(line: Line, spacing: float) -> None:
        nonlocal y
        face = font(round(line.size * PX_PER_MM), line.bold)
        for text in _wrap(draw, line.text, face, w - 4 * margin):
            y += line.size * spacing * PX_PER_MM
            tw = draw.textlength(text, font=face)  # type: ignore[arg-type]  # a Pillow font
            draw.text(((w - tw) / 2, y), text, fill=0, font=face, anchor="ls")  # type: ignore[arg-type]

    for line in above:
        put(line, 1.25)
    top = round(max(y + 6 * PX_PER_MM, 80 * PX_PER_MM))
    image.paste(qr, ((w - side) // 2, top))
    y = top + side + 4 * PX_PER_MM
    for line in below:
        put(line, 1.5)
    out = io.BytesIO()
    image.save(out, format="PNG", optimize=True)
    return out.getvalue()
