"""10,000 random and mutated QR texts through the gate's parsers, seeded: the gate's
``classify`` never raises, ``parse_cccd`` raises only ``InvalidQrPayload`` and
``read_poster_payload`` only ``PosterError``, and nothing random or mutated is accepted
falsely. Set ``DANCU_FUZZ_SEED`` to replay another run (the seed is in every failure).

What a false accept is:

- a card: an accepted text is *fully explained* by the card read from it (each of the
  card's values is one of the text's fields, every non-empty field is one of the card's
  values, the text names one ID number), the card keeps every rule (independently
  re-checked here), and a mutation of a genuine card that touched its ID, birth date or
  gender field is accepted only when the mutated text is itself a consistent card;
- a poster: an accepted text is, once trimmed, exactly the text the key signs for the
  checkpoint and day read from it (so a mutation is accepted only if it changed nothing
  but surrounding whitespace).
"""

from __future__ import annotations

import os
import random
import unicodedata
from collections import Counter
from collections.abc import Callable
from datetime import date, datetime

import numpy as np

from gate.frames import cccd_payload
from gate.qr import classify
from registry.cccd import MAX_PAYLOAD, CccdCard, parse_cccd
from registry.errors import InvalidQrPayload
from registry.ids import GENDERS, check_id
from registry.posters import PosterError, make_poster_payload, read_poster_payload

SEED = int(os.environ.get("DANCU_FUZZ_SEED", "20211127"))
N = 10_000
KEY = b"fuzz-poster-key-" + b"k" * 16
OTHER_KEY = b"another-servers-key-000000000000"

# Look-alikes of the characters a card or a poster is made of: digits of other scripts,
# Latin letters of other alphabets, and invisible or unusual separators and spaces.
CONFUSABLES: dict[str, tuple[str, ...]] = {
    **{
        str(d): (chr(0x660 + d), chr(0xFF10 + d), chr(0x6F0 + d), chr(0x1D7CE + d))
        for d in range(10)
    },
    "0": ("O", "o", "\u0665", "\uff10"),
    "1": ("l", "I", "\u0661", "\uff11"),
    "|": ("\uff5c", "\u01c0", "\u2223", "\u00a6", "l", "I"),
    "a": ("\u0430",),
    "A": ("\u0410",),
    "N": ("\u039d",),
    "m": ("\u217f",),
    "C": ("\u0421",),
    "P": ("\u0420",),
    "D": ("\u0414",),
    "ữ": ("u\u031b\u0303", "ư\u0303", "u"),
    " ": ("\u00a0", "\u2007", "\u200b", "\u3000"),
}
INVISIBLE = ("\u200b", "\u200d", "\ufeff", "\u2060", "\u00ad", "\u202e", "\x00")


def _random_text(rng: random.Random) -> str:
    """Noise: any code points (surrogates included), printable ASCII, or near-card text."""
    n = rng.choice((0, 1, 5, 40, 200, 600, MAX_PAYLOAD + rng.randint(-3, 3), 5000))
    pick = rng.random()
    if pick < 0.3:
        return "".join(chr(rng.randrange(0x110000)) for _ in range(n))
    if pick < 0.6:
        return "".join(chr(rng.randrange(32, 127)) for _ in range(n))
    alphabet = "0123456789|,. NamNữuyễnVăAHàộiSố\t\n\r"
    return "".join(rng.choice(alphabet) for _ in range(n))


def _token(rng: random.Random) -> str:
    """A field of a card-shaped random text: digit runs of a card's lengths, dates,
    genders, words, addresses."""
    kind = rng.randrange(9)
    if kind == 0:
        return "".join(rng.choice("0123456789") for _ in range(rng.choice((8, 9, 11, 12, 13))))
    if kind == 1:
        return f"{rng.randint(0, 35):02d}{rng.randint(0, 14):02d}{rng.randint(1890, 2100)}"
    if kind == 2:
        return rng.choice((*GENDERS, "nam", "Nu", "NAM", "Male", ""))
    if kind == 3:
        return rng.choice(("Nguyễn Văn An", "Trần Thị Bình", "Lê", "An2", "Ω", ""))
    if kind == 4:
        return "Số 1 Kim Mã, Phường Kim Mã, Quận Ba Đình, Hà Nội"
    if kind == 5:
        province = rng.choice(("001", "079", "099", "000"))
        return f"{province}{rng.randint(0, 9)}{rng.randint(0, 99):02d}{rng.randint(0, 999999):06d}"
    if kind == 6:
        return ""
    if kind == 7:
        return " " * rng.randint(1, 3)
    return _random_text(rng)[:30]


def _card_shaped(rng: random.Random) -> str:
    return "|".join(_token(rng) for _ in range(rng.choice((5, 6, 7, 7, 7, 8, 9, 10))))


def _mutate(text: str, rng: random.Random) -> tuple[str, str]:
    """One random mutation of a genuine text, and its name."""
    if len(text) < 2:
        return text + rng.choice("|0 x"), "appended"
    kind = rng.randrange(11)
    chars = list(text)
    i = rng.randrange(len(chars))
    if kind == 0:  # a character flipped to another printable one
        chars[i] = chr(rng.randrange(32, 127))
        return "".join(chars), "flip"
    if kind == 1:  # a digit flipped to another digit
        digits = [j for j, c in enumerate(chars) if c.isascii() and c.isdigit()] or [i]
        j = rng.choice(digits)
        chars[j] = rng.choice([d for d in "0123456789" if d != chars[j]])
        return "".join(chars), "digit"
    if kind == 2:  # cut short
        return text[: rng.randrange(len(text))], "truncated"
    if kind == 3:  # a character deleted
        del chars[i]
        return "".join(chars), "deleted"
    if kind == 4:  # a character inserted
        chars.insert(i, rng.choice("|0123456789 ,.-\n" + "".join(INVISIBLE)))
        return "".join(chars), "inserted"
    if kind == 5:  # a look-alike character
        spots = [j for j, c in enumerate(chars) if c in CONFUSABLES]
        if not spots:
            return text + "\u200b", "invisible"
        j = rng.choice(spots)
        chars[j] = rng.choice(CONFUSABLES[chars[j]])
        return "".join(chars), "confusable"
    if kind == 6:  # an invisible character inside
        chars.insert(i, rng.choice(INVISIBLE))
        return "".join(chars), "invisible"
    fields = text.split("|")
    if kind == 7:  # an extra field somewhere: junk, a second ID, a date, a gender
        extra = rng.choice(
            ("x", "Hà Nội", "079090000001", "012345678", "01012020", "Nam", "Nữ", "ABC, DEF")
        )
        fields.insert(rng.randrange(len(fields) + 1), extra)
        return "|".join(fields), "extra field"
    if kind == 8:  # a field dropped
        del fields[rng.randrange(len(fields))]
        return "|".join(fields), "field dropped"
    if kind == 9 and len(fields) > 1:  # two fields swapped
        a, b = rng.sample(range(len(fields)), 2)
        fields[a], fields[b] = fields[b], fields[a]
        return "|".join(fields), "swapped"
    # normalised otherwise (decomposed accents), or the case changed
    form = rng.choice(("NFD", "NFKD", "upper", "lower"))
    changed = text.upper() if form == "upper" else text.lower() if form == "lower" else None
    return changed if changed is not None else unicodedata.normalize(form, text), form  # type: ignore[arg-type]


# --- the independent checks ------------------------------------------------------------


def _ddmmyyyy(d: date) -> str:
    return d.strftime("%d%m%Y")


def card_problems(text: str, card: CccdCard, today: date) -> list[str]:
    """Why an accepted card is a false accept (empty when it is fully explained)."""
    problems: list[str] = []
    fields = [f.strip() for f in text.strip().split("|")]
    values = {
        "id": card.id,
        "old": card.old_id or "",
        "dob": _ddmmyyyy(card.dob),
        "gender": card.gender,
        "address": card.address,
        "issued": _ddmmyyyy(card.issued),
    }
    unused = list(fields)
    for what, value in values.items():
        if value and value not in unused:
            problems.append(f"{what} {value!r} is not a field of the text")
        elif value:
            unused.remove(value)
    named = [f for f in unused if " ".join(f.split()) == card.name]
    if not named:
        problems.append("the name is not a field of the text")
    else:
        unused.remove(named[0])
    if any(unused):
        problems.append(f"fields left unexplained: {[f[:20] for f in unused if f]}")
    ids = [f for f in fields if len(f) == 12 and f.isascii() and f.isdigit()]
    if len(set(ids)) != 1:
        problems.append(f"{len(set(ids))} ID numbers in one text")
    if not (len(card.id) == 12 and card.id.isascii() and card.id.isdigit()):
        problems.append("ID is not 12 ASCII digits")
    if not check_id(card.id, dob=card.dob, gender=card.gender, today=today).valid:
        problems.append("ID inconsistent with the birth date or gender")
    if card.gender not in GENDERS:
        problems.append(f"gender {card.gender!r}")
    if not card.dob <= card.issued <= today:
        problems.append("dates out of order")
    if not card.name or any(c.isdigit() for c in card.name) or not card.address:
        problems.append("empty name or address, or digits in the name")
    if card.old_id is not None and not (
        len(card.old_id) == 9 and card.old_id.isascii() and card.old_id.isdigit()
    ):
        problems.append("old ID is not 9 ASCII digits")
    return problems


def poster_problem(text: str, checkpoint_id: str, issued: date) -> str | None:
    genuine = make_poster_payload(KEY, checkpoint_id, issued)
    return None if text.strip() == genuine else "accepted text is not the genuine one"


# --- the run ---------------------------------------------------------------------------


def _texts(rng: random.Random) -> list[tuple[str, str, str | None]]:
    """N texts: (text, how it was made, the genuine card or poster it mutates)."""
    nrng = np.random.default_rng(rng.randrange(2**32))
    cards = [cccd_payload(nrng) for _ in range(200)]
    posters = [
        make_poster_payload(
            KEY,
            rng.choice(("acc-cp1", "HN:BD/cho-1", "cp-0042", "x", "a" * 128)),
            date(2021 + rng.randrange(6), 1 + rng.randrange(12), 1 + rng.randrange(28)),
        )
        for _ in range(50)
    ]
    out: list[tuple[str, str, str | None]] = []
    makers: list[tuple[float, Callable[[], tuple[str, str, str | None]]]] = [
        (0.15, lambda: (_random_text(rng), "random", None)),
        (0.15, lambda: (_card_shaped(rng), "card-shaped", None)),
        (0.05, lambda: ("DANCU1|" + _random_text(rng)[:200], "dancu-prefixed", None)),
        (
            0.05,
            lambda: ("DANCU1|CP|" + "|".join(_token(rng) for _ in range(3)), "poster-shaped", None),
        ),
    ]
    for _ in range(N):
        roll = rng.random()
        for share, make in makers:
            if roll < share:
                out.append(make())
                break
            roll -= share
        else:
            source = rng.choice(cards if rng.random() < 0.7 else posters)
            text, how = source, ""
            for _ in range(rng.choice((1, 1, 1, 2, 3))):
                text, step = _mutate(text, rng)
                how += f"{step} "
            out.append((text, f"mutated ({how.strip()})", source))
    return out


def test_ten_thousand_random_and_mutated_texts_no_crash_no_false_accept() -> None:
    rng = random.Random(SEED)
    texts = _texts(rng)
    assert len(texts) == N
    today = date.today()  # noqa: DTZ011 - classify checks against today's date too
    failures: list[str] = []
    tally: Counter[str] = Counter()

    def fail(what: str, text: str, how: str) -> None:
        failures.append(f"seed {SEED}, {how}: {what}: {text[:160]!r}")

    for text, how, source in texts:
        # the gate's classifier: never raises, and agrees with the parser
        try:
            code = classify(text)
        except Exception as exc:
            fail(f"classify raised {type(exc).__name__}: {exc}", text, how)
            continue
        # the registry's parser, on the text and on its bytes (invalid UTF-8 included)
        card: CccdCard | None = None
        try:
            card = parse_cccd(text, today=today)
        except InvalidQrPayload as exc:
            if not exc.errors or not all(exc.errors):
                fail("refused without a reason", text, how)
        except Exception as exc:
            fail(f"parse_cccd raised {type(exc).__name__}: {exc}", text, how)
        raw = text.encode("utf-8", "surrogatepass")
        try:
            parse_cccd(raw, today=today)
        except InvalidQrPayload:
            pass
        except Exception as exc:
            fail(f"parse_cccd(bytes) raised {type(exc).__name__}: {exc}", text, how)
        if code.kind == "cccd" and (card is None or code.detail["id"] != card.id):
            fail("classify accepted a card the parser refuses", text, how)
        if card is not None:
            tally["card accepted"] += 1
            if code.kind != "cccd" and not text.startswith("DANCU1|"):
                fail(f"the parser accepts what classify calls {code.kind}", text, how)
            problems = card_problems(text, card, today)
            if problems:
                fail(f"false accept as card {card.id}: {'; '.join(problems)}", text, how)
            if source is not None and source.startswith("DANCU1|"):
                fail("a mutated poster accepted as a card", text, how)
        # the poster reader: only PosterError, and only genuine texts pass
        for key in (KEY, OTHER_KEY):
            try:
                poster = read_poster_payload(key, text)
            except PosterError as exc:
                if not exc.problem or not str(exc):
                    fail("poster refused without a reason", text, how)
                continue
            except Exception as exc:
                fail(f"read_poster_payload raised {type(exc).__name__}: {exc}", text, how)
                continue
            tally["poster accepted"] += 1
            if key is OTHER_KEY:
                fail("accepted under another server's key", text, how)
            elif problem := poster_problem(text, poster.checkpoint_id, poster.issued):
                fail(problem, text, how)
        # a random text is never a card or a poster
        if source is None and (card is not None or code.kind == "cccd"):
            fail("a random text accepted", text, how)
    assert not failures, f"{len(failures)} failure(s):\n" + "\n".join(
        failures[: int(os.environ.get("SHOW", "30"))]
    )
    # the mutations were not all trivially refused: some left a genuine text valid
    # (whitespace around a poster, a swapped digit that is another consistent card)
    assert tally["card accepted"] > 0 and tally["poster accepted"] > 0, tally


def test_genuine_texts_are_accepted() -> None:
    """The oracle's own check: unmutated genuine texts pass it (so a false accept above is
    the parser's, not the test's)."""
    rng = np.random.default_rng(SEED)
    today = date.today()  # noqa: DTZ011
    for _ in range(500):
        text = cccd_payload(rng)
        card = parse_cccd(text, today=today)
        assert card_problems(text, card, today) == [], text
        assert classify(text).kind == "cccd"
    for day in (date(2021, 1, 1), datetime(2026, 11, 27).date()):  # noqa: DTZ001
        text = make_poster_payload(KEY, "acc-cp1", day)
        poster = read_poster_payload(KEY, f" {text}\n")
        assert poster_problem(text, poster.checkpoint_id, poster.issued) is None
