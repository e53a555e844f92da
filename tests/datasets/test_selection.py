"""Which logged requests replay and export take: one Selection, the tenant as vouched."""

from __future__ import annotations

import pytest

from services.cli import UserError, build_parser
from services.core.models import GenerateRequest
from services.datasets.cli import _selection_of
from services.datasets.log import LoggedRequest, Selection
from services.kit.wire.headers import TENANT
from services.kit.wire.tenancy import LOCAL, origin, vouch

KEY = b"the-services-key"
PLAIN = [("content-type", b"application/avro")]


def logged(request_id: str, headers, key: bytes | None = KEY, entity: str = "cart"):
    """A logged request with its tenant as `read_requests` decides it under `key`."""
    req = GenerateRequest(request_id=request_id, entity=entity)
    return LoggedRequest(req, 0, 0, 0, origin(key, request_id, headers).tenant)


def test_a_tenant_selects_its_vouched_requests_only():
    mine = logged("a1", vouch(KEY, "a1", "team-a", PLAIN))
    theirs = logged("b1", vouch(KEY, "b1", "team-b", PLAIN))
    bare = logged("f1", [*PLAIN, (TENANT, b"team-a")])  # a claim, no voucher
    moved = logged("f2", vouch(KEY, "a1", "team-a", PLAIN))  # a1's voucher on another id
    other_key = logged("f3", vouch(b"another-key", "f3", "team-a", PLAIN))
    everyone = [mine, theirs, bare, moved, other_key]
    assert [r.request.request_id for r in everyone if Selection.of(tenants=["team-a"]).keep(r)] == [
        "a1"
    ]
    both = Selection.of(tenants=["team-a", "team-b"])
    assert [r.request.request_id for r in everyone if both.keep(r)] == ["a1", "b1"]
    local = Selection.of(tenants=[LOCAL])
    assert [r.request.request_id for r in everyone if local.keep(r)] == ["f1", "f2", "f3"]
    assert all(Selection().keep(r) for r in everyone)


def test_without_a_key_the_header_is_taken_as_written():
    """Nothing is verified without a key (the services verify nothing either)."""
    bare = logged("f1", [*PLAIN, (TENANT, b"team-a")], key=None)
    assert Selection.of(tenants=["team-a"]).keep(bare)


def test_tenant_combines_with_the_other_filters():
    cart = logged("a1", vouch(KEY, "a1", "team-a", PLAIN))
    user = logged("a2", vouch(KEY, "a2", "team-a", PLAIN), entity="user")
    sel = _selection_of(
        build_parser().parse_args(
            ["export", "--out", "x", "--tenant", "team-a", "--entity", "user"]
        )
    )
    assert sel.tenants == {"team-a"} and not sel.keep(cart) and sel.keep(user)
    sel = _selection_of(build_parser().parse_args(["replay", "--tenant", "a", "--tenant", "b"]))
    assert sel.tenants == {"a", "b"}
    with pytest.raises(UserError, match="not a tenant name"):
        _selection_of(build_parser().parse_args(["replay", "--tenant", "team a"]))
