"""Chunk signatures: what they bind, and that nothing else verifies."""

from __future__ import annotations

from services.kit.wire.signing import genuine, signed

KEY = b"k" * 32
BASE = [("content-type", b"application/avro"), ("correlation-id", b"c1"), ("run-id", b"r1")]


def test_a_signed_chunk_verifies_and_any_change_does_not():
    headers = signed(KEY, b"value", BASE)
    assert genuine(KEY, b"value", headers)
    assert not genuine(KEY, b"valuE", headers)  # another value
    assert not genuine(b"x" * 32, b"value", headers)  # another key
    moved = [(k, b"c2" if k == "correlation-id" else v) for k, v in headers]
    assert not genuine(KEY, b"value", moved)  # to another attempt
    rerun = [(k, b"r2" if k == "run-id" else v) for k, v in headers]
    assert not genuine(KEY, b"value", rerun)  # to another run
    assert not genuine(KEY, b"value", BASE)  # unsigned


def test_signing_again_replaces_a_signature_and_without_a_key_nothing_is_checked():
    forged = [*BASE, ("signature", b"0" * 64)]
    assert [k for k, _ in signed(KEY, b"v", forged)].count("signature") == 1
    assert signed(None, b"v", forged) == BASE
    assert genuine(None, b"anything", [])


def test_null_and_undecodable_headers_are_simply_not_genuine():
    """Seen: a null signature header raised in compare_digest and ended a control reader;
    a non-UTF-8 correlation failed a caller's stream."""
    key, value = b"k", b"chunk"
    assert not genuine(key, value, [("signature", None)])
    assert not genuine(key, value, [("correlation-id", b"\xff\xfe"), ("run-id", b"\x80")])
