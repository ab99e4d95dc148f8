"""Debounce, ID masking and stable scan IDs of the gate program (pure)."""

from datetime import UTC, datetime, timedelta

import pytest

from gate.debounce import Debouncer
from gate.program import mask_id, scan_id_for


def test_a_card_held_for_many_frames_counts_once() -> None:
    d = Debouncer(3.0)
    # 10 s of frames at 25 fps: longer than the window, but never out of view.
    new = [d.sight("A", i / 25) for i in range(250)]
    assert new.count(True) == 1 and new[0] is True


def test_a_card_out_of_view_longer_than_the_window_counts_again() -> None:
    d = Debouncer(3.0)
    assert d.sight("A", 0.0)
    assert not d.sight("A", 2.9)
    assert not d.sight("A", 5.8)  # 2.9 s after the last frame showing it
    assert d.sight("A", 9.0)  # 3.2 s out of view: someone walked through again


def test_cards_are_debounced_each_on_their_own() -> None:
    d = Debouncer(3.0)
    assert d.sight("A", 0.0) and d.sight("B", 0.1)
    assert not d.sight("A", 0.2) and not d.sight("B", 0.3)


def test_many_keys_are_forgotten_once_out_of_the_window() -> None:
    d = Debouncer(1.0)
    for i in range(1000):
        assert d.sight(f"k{i}", float(i))
    assert len(d._seen) <= 260
    assert d.sight("k0", 1001.0)


def test_a_negative_window_is_refused() -> None:
    with pytest.raises(ValueError, match="debounce"):
        Debouncer(-1)


def test_mask_shows_the_last_four_digits_only() -> None:
    assert mask_id("001090123456") == "********3456"


def test_scan_ids_are_stable_and_distinct_per_sighting() -> None:
    t = datetime(2021, 9, 1, 8, 0, tzinfo=UTC)
    a = scan_id_for("dev-1", "001090123456", t)
    assert a == scan_id_for("dev-1", "001090123456", t)
    assert a != scan_id_for("dev-1", "001090123456", t + timedelta(seconds=5))
    assert a != scan_id_for("dev-2", "001090123456", t)
    assert a != scan_id_for("dev-1", "001190654321", t)
    assert "3456" not in a and len(a) <= 128
