"""A request's tenant past the bridge: vouched for by the bridge's HMAC, else local."""

from __future__ import annotations

import pytest

from services.kit.wire.headers import CORRELATION, REPLY_TO, REQUEST_SIGNATURE, TENANT
from services.kit.wire.tenancy import LOCAL, Origin, origin, vouch

KEY = b"services-key"
PLAIN = [(REPLY_TO, b"testdata.replies.b1"), (CORRELATION, b"c0ffee")]


def test_a_vouched_request_keeps_its_tenant():
    headers = vouch(KEY, "r-1", "team-a", PLAIN)
    assert origin(KEY, "r-1", headers) == Origin("team-a", vouched=True)


@pytest.mark.parametrize(
    "tamper",
    [
        lambda h: [(k, b"team-b" if k == TENANT else v) for k, v in h],
        lambda h: [(k, b"testdata.replies.b2" if k == REPLY_TO else v) for k, v in h],
        lambda h: [(k, b"another-attempt" if k == CORRELATION else v) for k, v in h],
        lambda h: [(k, v) for k, v in h if k != REQUEST_SIGNATURE],
    ],
    ids=["tenant", "reply-to", "correlation", "unsigned"],
)
def test_a_changed_or_unsigned_request_is_local_and_not_vouched(tamper):
    headers = tamper(vouch(KEY, "r-1", "team-a", PLAIN))
    assert origin(KEY, "r-1", headers) == Origin(LOCAL, vouched=False)


def test_a_signature_is_for_one_request_id_and_one_key():
    headers = vouch(KEY, "r-1", "team-a", PLAIN)
    assert not origin(KEY, "r-2", headers).vouched
    assert not origin(b"another-key", "r-1", headers).vouched


def test_without_a_key_the_header_is_taken_as_written_if_it_is_a_name():
    assert origin(None, "r-1", [(TENANT, b"team-a")]) == Origin("team-a", vouched=True)
    assert origin(None, "r-1", [(TENANT, b"a\nforged log line")]).tenant == LOCAL
    assert origin(None, "r-1", None).tenant == LOCAL


def test_vouching_again_replaces_an_earlier_tenant_and_signature():
    once = vouch(KEY, "r-1", "team-a", [*PLAIN, (TENANT, b"x"), (REQUEST_SIGNATURE, b"y")])
    assert [k for k, _ in once].count(TENANT) == 1
    assert origin(KEY, "r-1", once).tenant == "team-a"
