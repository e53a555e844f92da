"""JWT verification and client-certificate names: pure, keys generated per test."""

from __future__ import annotations

import json
import time

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from services.bridge.credentials import JwtKeys, certificate_tenant
from services.bridge.errors import CredentialsInvalid, Refused
from services.bridge.identity import Authenticator

RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
EC_KEY = ec.generate_private_key(ec.SECP256R1())


def jwks(*keys: tuple[str, object, str]) -> str:
    out = []
    for kid, key, alg in keys:
        jwk = json.loads(jwt.algorithms.get_default_algorithms()[alg].to_jwk(key.public_key()))
        out.append({**jwk, "kid": kid, "alg": alg, "use": "sig"})
    return json.dumps({"keys": out})


def token(key=RSA_KEY, alg="RS256", kid="k1", **claims) -> str:
    body = {"tenant": "team-a", "exp": int(time.time()) + 300, **claims}
    return jwt.encode(body, key, algorithm=alg, headers={"kid": kid} if kid else None)


@pytest.fixture
def keys() -> JwtKeys:
    return JwtKeys.from_jwks(
        jwks(("k1", RSA_KEY, "RS256"), ("k2", EC_KEY, "ES256")), issuer="https://idp", audience="td"
    )


def test_a_valid_jwt_names_its_tenant(keys):
    assert keys.tenant(token(iss="https://idp", aud="td")) == "team-a"
    assert keys.tenant(token(EC_KEY, "ES256", "k2", iss="https://idp", aud="td")) == "team-a"


@pytest.mark.parametrize(
    ("make", "why"),
    [
        (lambda: token(iss="https://idp", aud="td", exp=int(time.time()) - 3600), "expired"),
        (lambda: token(iss="https://idp", aud="other"), "another audience"),
        (lambda: token(iss="https://evil", aud="td"), "another issuer"),
        (lambda: token(iss="https://idp", aud="td", kid="k9"), "kid"),
        (lambda: token(iss="https://idp", aud="td", tenant="a b"), "not a tenant name"),
        (lambda: token(iss="https://idp", aud="td", tenant=None), "not a tenant name"),
        (lambda: "not.a.jwt", "neither a known token nor a JWT"),
        # signed by another key under a known kid
        (
            lambda: token(rsa.generate_private_key(65537, 2048), iss="https://idp", aud="td"),
            "does not verify",
        ),
        # the EC key's kid with an RSA signature: the algorithm belongs to the key
        (lambda: token(kid="k2", iss="https://idp", aud="td"), "algorithm"),
        (lambda: jwt.encode({"tenant": "t", "exp": 2**40}, None, "none", {"kid": "k1"}), "alg"),
    ],
)
def test_a_jwt_that_proves_nothing_is_refused_with_the_reason(keys, make, why):
    with pytest.raises(Refused, match=why):
        keys.tenant(make())


def test_a_public_key_is_never_an_hmac_secret():
    """Algorithm confusion: HS256 signed with the public key's PEM as the secret."""
    pem = RSA_KEY.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    keys = JwtKeys.from_pem(pem.decode())
    assert keys.tenant(token(kid=None)) == "team-a"
    forged = jwt.api_jws.PyJWS().encode(
        json.dumps({"tenant": "team-b", "exp": 2**40}).encode(), b"k" * 32, algorithm="HS256"
    )
    with pytest.raises(Refused, match="algorithm"):
        keys.tenant(forged)


def test_a_jwt_needs_an_expiry():
    keys = JwtKeys.from_jwks(jwks(("k1", RSA_KEY, "RS256")))
    with pytest.raises(Refused, match="`exp`"):
        keys.tenant(jwt.encode({"tenant": "t"}, RSA_KEY, "RS256", {"kid": "k1"}))


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("{", "not a usable JWKS"),
        (json.dumps({"keys": [{"kty": "oct", "k": "c2VjcmV0", "alg": "HS256"}]}), "asymmetric"),
    ],
)
def test_a_bad_jwks_file_is_named(text, why):
    with pytest.raises(CredentialsInvalid, match=why):
        JwtKeys.from_jwks(text, "AUTH_JWT_JWKS_FILE x")


def test_a_client_certificate_names_its_tenant_by_common_name():
    assert certificate_tenant({"x509_common_name": [b"team-a"]}) == "team-a"
    assert certificate_tenant({"x509_common_name": [b"a\nb"]}) is None
    assert certificate_tenant({}) is None


def test_a_static_token_wins_and_a_jwt_is_tried_next():
    from services.bridge.credentials import Tokens

    auth = Authenticator(
        Tokens.parse("s" * 20 + ",team-s\n"), JwtKeys.from_jwks(jwks(("k1", RSA_KEY, "RS256")))
    )
    assert auth.tenant([("authorization", "Bearer " + "s" * 20)], {}) == "team-s"
    assert auth.tenant([("authorization", f"Bearer {token()}")], {}) == "team-a"
    with pytest.raises(Refused, match="Bearer"):
        auth.tenant([], {"x509_common_name": [b"team-c"]})  # no mTLS configured
    mtls = Authenticator(certificates=True)
    assert mtls.tenant([], {"x509_common_name": [b"team-c"]}) == "team-c"
    with pytest.raises(Refused, match="known bearer token"):
        mtls.tenant([("authorization", "Bearer x")], {"x509_common_name": [b"team-c"]})
