"""The signed text of a checkpoint poster: it round-trips, and any change to it (or a key
of another server) is refused with the problem named."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest

from api.ratelimit import TokenBuckets
from infra.secrets import poster_key
from infra.settings import Settings
from registry.posters import (
    PosterError,
    make_poster_payload,
    read_poster_payload,
    verify_poster_payload,
)

KEY = b"k" * 32
DAY = date(2026, 11, 27)


def refused(text: str, key: bytes = KEY) -> PosterError:
    with pytest.raises(PosterError) as caught:
        verify_poster_payload(key, text)
    return caught.value


@pytest.mark.parametrize("checkpoint_id", ["acc-cp1", "HN:BD/cho-1", "x", "a" * 128])
def test_round_trip(checkpoint_id: str) -> None:
    text = make_poster_payload(KEY, checkpoint_id, DAY)
    assert text.startswith(f"DANCU1|CP|{checkpoint_id}|20261127|")
    assert verify_poster_payload(KEY, text) == checkpoint_id
    assert read_poster_payload(KEY, f"  {text}\n").issued == DAY  # a scanner's whitespace


def test_the_text_is_short_and_its_signature_has_128_bits() -> None:
    text = make_poster_payload(KEY, "acc-cp1", DAY)
    sig = text.rsplit("|", 1)[1]
    assert len(sig) == 26 and len(text) < 64  # a version-4 QR code at level M


def test_an_altered_checkpoint_id_keeps_no_signature() -> None:
    text = make_poster_payload(KEY, "acc-cp1", DAY)
    e = refused(text.replace("acc-cp1", "acc-cp2"))
    assert e.problem == "signature" and "forged, altered" in str(e)


def test_an_altered_date_or_signature_is_refused() -> None:
    text = make_poster_payload(KEY, "acc-cp1", DAY)
    assert refused(text.replace("20261127", "20261128")).problem == "signature"
    sig = text.rsplit("|", 1)[1]
    flipped = ("B" if sig[0] == "A" else "A") + sig[1:]
    assert refused(text[: -len(sig)] + flipped).problem == "signature"
    assert refused(text[:-1]).problem == "malformed"  # a signature cut short


def test_another_servers_key_is_refused() -> None:
    text = make_poster_payload(b"another server's key", "acc-cp1", DAY)
    assert refused(text).problem == "signature"


@pytest.mark.parametrize(
    ("text", "problem", "said"),
    [
        ("", "not-dancu", "not a dancu poster"),
        ("001090000301||Nguyễn Văn An|01011990|Nam|Hà Nội|01012021", "not-dancu", "dancu"),
        ("https://example.com/?cp=1", "not-dancu", "dancu"),
        ("DANCU2|CP|acc-cp1|20261127|AAAAAAAAAAAAAAAAAAAAAAAAAA", "version", "'2'"),
        ("DANCU|CP|acc-cp1", "version", "version"),
        ("DANCU1", "malformed", "DANCU1|CP|"),
        ("DANCU1|XX|acc-cp1|20261127|AAAAAAAAAAAAAAAAAAAAAAAAAA", "malformed", "'XX'"),
        ("DANCU1|CP|acc cp1|20261127|AAAAAAAAAAAAAAAAAAAAAAAAAA", "malformed", "checkpoint"),
        ("DANCU1|CP|acc-cp1|20261332|AAAAAAAAAAAAAAAAAAAAAAAAAA", "malformed", "YYYYMMDD"),
        ("DANCU1|CP|acc-cp1|20261127|not-base32!", "malformed", "base32"),
        ("DANCU1|CP|a|b|c|d", "malformed", "6 fields"),
        ("DANCU1|" + "x" * 300, "malformed", "characters"),
    ],
)
def test_garbage_names_its_problem(text: str, problem: str, said: str) -> None:
    e = refused(text)
    assert e.problem == problem and said in str(e), str(e)


def test_a_poster_is_only_made_for_a_checkpoint_id() -> None:
    with pytest.raises(ValueError, match="checkpoint ID"):
        make_poster_payload(KEY, "a|b", DAY)
    with pytest.raises(ValueError, match="empty"):
        make_poster_payload(b"", "acc-cp1", DAY)


def test_token_bucket_grants_a_burst_then_the_rate() -> None:
    now = [0.0]
    buckets = TokenBuckets(3, 2.0, max_clients=2, clock=lambda: now[0])
    assert [buckets.wait("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert buckets.wait("a") == pytest.approx(0.5)
    assert buckets.wait("b") == 0.0  # another address has its own bucket
    now[0] += 0.5
    assert buckets.wait("a") == 0.0
    buckets.wait("c")  # over max_clients: the least recently seen ("b") is forgotten
    assert set(buckets._buckets) == {"a", "c"}


def test_the_poster_key_is_set_derived_or_made_once(tmp_path: Path) -> None:
    made = poster_key(Settings(data_dir=tmp_path))
    assert len(made) == 64 and poster_key(Settings(data_dir=tmp_path)) == made
    assert (tmp_path / "poster.key").stat().st_mode & 0o777 == 0o600
    assert poster_key(Settings(data_dir=tmp_path, poster_key="s" * 16)) == b"s" * 16
    shared = Settings(data_dir=tmp_path / "a", pseudonym_secret="p" * 16)
    elsewhere = Settings(data_dir=tmp_path / "b", pseudonym_secret="p" * 16)
    assert poster_key(shared) == poster_key(elsewhere) not in (made, b"p" * 16)
    with pytest.raises(ValueError, match="DANCU_POSTER_KEY"):
        Settings(poster_key="short")
