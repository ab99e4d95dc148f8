"""The signed payload of a checkpoint poster's QR code.

A resident's phone scans the poster and sends its text with their ID (``POST
/v1/checkins``): the poster is the only proof that they stood at the checkpoint, so its
text is signed with a server secret and a forged or altered one is refused. The text is
``DANCU1|CP|<checkpoint_id>|<issued YYYYMMDD>|<sig>``, where ``sig`` is HMAC-SHA256 over
everything before it, cut to 128 bits and written in base32 (26 characters, no padding):
short enough for a small QR code that a phone reads from across a shop.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from dataclasses import dataclass
from datetime import date, datetime

from registry.errors import RegistryError, quote

PREFIX = "DANCU"
VERSION = "1"
KIND = "CP"
SIG_BYTES = 16  # 128 bits of HMAC-SHA256
SIG_CHARS = 26  # base32 of 16 bytes, padding dropped
# A checkpoint ID as registered (api/routes/checkpoints.py): never a '|'.
_CHECKPOINT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/-]{0,127}")
_SIG = re.compile(r"[A-Z2-7]{26}")
MAX_TEXT = 256  # a poster's text is ~60 characters; anything far longer is not one


class PosterError(RegistryError):
    """A poster text that is refused; ``problem`` says why in one word, for callers that
    count or colour the refusals (``not-dancu``, ``version``, ``malformed``, ``signature``)."""

    def __init__(self, problem: str, message: str) -> None:
        self.problem = problem
        super().__init__(message)


@dataclass(frozen=True, slots=True)
class Poster:
    checkpoint_id: str
    issued: date


def _sign(key: bytes, signed: str) -> str:
    mac = hmac.new(key, signed.encode("utf-8"), hashlib.sha256).digest()[:SIG_BYTES]
    return base64.b32encode(mac).decode("ascii").rstrip("=")


def make_poster_payload(key: bytes, checkpoint_id: str, issued: date) -> str:
    """The QR text of a poster for ``checkpoint_id``, issued on ``issued``."""
    if not key:
        raise ValueError("the poster key is empty")
    if not _CHECKPOINT_ID.fullmatch(checkpoint_id):
        raise ValueError(f"not a checkpoint ID: {quote(checkpoint_id)}")
    signed = f"{PREFIX}{VERSION}|{KIND}|{checkpoint_id}|{issued:%Y%m%d}"
    return f"{signed}|{_sign(key, signed)}"


def read_poster_payload(key: bytes, text: str) -> Poster:
    """The poster a QR text names, once its signature is checked; :class:`PosterError`
    naming the problem otherwise."""
    if not isinstance(text, str):
        raise PosterError("malformed", f"a poster text is a string, got {type(text).__name__}")
    text = text.strip()
    if not text.startswith(PREFIX):
        raise PosterError("not-dancu", f"not a dancu poster (it does not start {PREFIX}1|)")
    if len(text) > MAX_TEXT:
        raise PosterError("malformed", f"a poster text is under {MAX_TEXT} characters")
    fields = text.split("|")
    version = fields[0][len(PREFIX) :]
    if version != VERSION:
        raise PosterError(
            "version", f"unknown dancu code version {quote(version)} (this server reads 1)"
        )
    if len(fields) != 5 or fields[1] != KIND:
        what = quote(fields[1]) if len(fields) > 1 else "none"
        raise PosterError(
            "malformed",
            f"a poster is DANCU1|CP|<checkpoint>|<YYYYMMDD>|<signature> "
            f"(got {len(fields)} fields, kind {what})",
        )
    _, _, checkpoint_id, issued_s, sig = fields
    if not _CHECKPOINT_ID.fullmatch(checkpoint_id):
        raise PosterError("malformed", f"not a checkpoint ID: {quote(checkpoint_id)}")
    try:
        issued = datetime.strptime(issued_s, "%Y%m%d").date()  # noqa: DTZ007 - a calendar date
    except ValueError:
        raise PosterError("malformed", f"issued: not a YYYYMMDD date: {quote(issued_s)}") from None
    if not _SIG.fullmatch(sig):
        raise PosterError("malformed", f"signature: expected {SIG_CHARS} base32 characters")
    expected = _sign(key, text[: -len(sig) - 1])
    if not hmac.compare_digest(expected, sig):
        raise PosterError(
            "signature",
            "the poster's signature does not match: forged, altered, or signed with another "
            "server's key",
        )
    return Poster(checkpoint_id, issued)


def verify_poster_payload(key: bytes, text: str) -> str:
    """The checkpoint ID of a genuine poster text (see :func:`read_poster_payload`)."""
    return read_poster_payload(key, text).checkpoint_id
