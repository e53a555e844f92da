"""Tokens file and bearer header: pure parsing and lookup."""

from __future__ import annotations

import pytest

from services.bridge.credentials import Tokens
from services.bridge.errors import CredentialsInvalid as TokensInvalid
from services.bridge.identity import bearer

A, B = "a" * 32, "b" * 32


def test_each_token_names_its_tenant_and_nothing_else_does():
    tokens = Tokens.parse(f"# team tokens\n\n{A},team-a\n {B} , team_b.qa \n")
    assert tokens.tenant(A) == "team-a" and tokens.tenant(B) == "team_b.qa"
    assert tokens.tenant("c" * 32) is None and tokens.tenant("") is None


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("", "holds no token"),
        (f"{A}\n", "line 1: expected `token,tenant`"),
        ("# x\nshort,team\n", "line 2: a token needs 16 characters"),
        (f"{A},team a\n", "a tenant is letters"),
        (f"{A},team,b\n", "expected `token,tenant`"),
    ],
)
def test_a_bad_tokens_file_says_which_line(text, problem):
    with pytest.raises(TokensInvalid, match=problem):
        Tokens.parse(text)


def test_the_bearer_token_comes_from_the_authorization_header_only():
    assert bearer([("authorization", f"Bearer {A}")]) == A
    assert bearer([("authorization", f"bearer  {A} ".encode())]) == A
    assert bearer([("authorization", f"Basic {A}")]) is None
    assert bearer([("x-token", A)]) is None and bearer(None) is None


def test_the_start_banner_says_how_callers_are_admitted():
    from services.bridge.identity import describe
    from tests.support import make_settings

    assert describe(make_settings()) == "no authentication (one tenant, local), no TLS"
    both = make_settings(auth_tokens_file="t", grpc_tls_cert_file="c", grpc_tls_client_ca_file="a")
    assert describe(both) == "bearer tokens, client certificates name each caller's tenant; TLS"
