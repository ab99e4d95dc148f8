"""Device request signatures and token hashing (pure)."""

from __future__ import annotations

from infra.auth import MAX_SKEW_S, new_device_key, new_token, sign, token_hash, verify

NOW = 1_700_000_000


def test_a_signed_request_verifies_and_any_change_breaks_it() -> None:
    key = new_device_key()
    body = b'[{"scan_id": "s1"}]'
    sig = sign(key, "POST", "/v1/scans", NOW, body)
    assert verify(key, "POST", "/v1/scans", str(NOW), body, sig, NOW + 10).ok
    for changed in (
        ("PUT", "/v1/scans", str(NOW), body),
        ("POST", "/v1/scans?x=1", str(NOW), body),
        ("POST", "/v1/scans", str(NOW + 1), body),
        ("POST", "/v1/scans", str(NOW), body + b" "),
    ):
        verdict = verify(key, *changed, sig, NOW)  # type: ignore[arg-type]
        assert not verdict.ok and "does not match" in verdict.reason
    assert not verify(new_device_key(), "POST", "/v1/scans", str(NOW), body, sig, NOW).ok


def test_stale_missing_and_malformed_timestamps_are_refused() -> None:
    key = new_device_key()
    sig = sign(key, "GET", "/x", NOW, b"")
    late = verify(key, "GET", "/x", str(NOW), b"", sig, NOW + MAX_SKEW_S + 1)
    assert not late.ok and "clock" in late.reason
    assert "X-Timestamp" in verify(key, "GET", "/x", "soon", b"", sig, NOW).reason
    assert "need" in verify(key, "GET", "/x", None, b"", sig, NOW).reason


def test_tokens_are_random_and_stored_only_as_hashes() -> None:
    a, b = new_token(), new_token()
    assert a != b and a.startswith("dcu_") and len(a) > 40
    assert token_hash(a) != a and len(token_hash(a)) == 64 and token_hash(a) == token_hash(a)


def test_a_nonce_is_signed_and_makes_identical_requests_distinct() -> None:
    key, body = new_device_key(), b'{"checkpoint_id": "cp1"}'
    a = sign(key, "POST", "/v1/gate/check", NOW, body, "n1")
    b = sign(key, "POST", "/v1/gate/check", NOW, body, "n2")
    assert a != b
    assert verify(key, "POST", "/v1/gate/check", str(NOW), body, a, NOW, "n1").ok
    assert not verify(key, "POST", "/v1/gate/check", str(NOW), body, a, NOW, "n2").ok
    assert not verify(key, "POST", "/v1/gate/check", str(NOW), body, a, NOW).ok
    assert "X-Nonce" in verify(key, "POST", "/x", str(NOW), body, a, NOW, "x" * 65).reason


def test_a_signature_that_is_not_ascii_is_refused_not_an_error() -> None:
    key, body = new_device_key(), b"{}"
    verdict = verify(key, "POST", "/v1/scans", str(NOW), body, "é" * 64, NOW)
    assert not verdict.ok and "X-Signature" in verdict.reason
