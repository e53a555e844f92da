"""What proves a caller's tenant: static bearer tokens, JWTs, and client certificates.

Pure: each source is parsed from a file's text at start and asked per call; the gRPC
interceptor that asks them is identity.py.

- **Static tokens** (AUTH_TOKENS_FILE): one `token,tenant` per line, `#` comments;
  tokens are kept only as SHA-256 digests in memory.
- **JWT** (AUTH_JWT_JWKS_FILE, a JWKS document, or AUTH_JWT_PUBLIC_KEY_FILE, the
  issuer's PEM public key): the signature must verify under a configured key with an
  asymmetric algorithm (never `none` or HMAC: a public key is not a secret), `exp` must be
  in the future, and `iss` / `aud` must match AUTH_JWT_ISSUER / AUTH_JWT_AUDIENCE when
  those are set. The tenant is the AUTH_JWT_TENANT_CLAIM claim (default `tenant`).
- **Client certificates** (GRPC_TLS_CLIENT_CA_FILE, mutual TLS): a certificate the CA
  signed; its subject's common name is the tenant.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jwt

from services.bridge.errors import CredentialsInvalid, Refused
from services.kit.wire.tenancy import valid_tenant

#: Only these verify a JWT: signatures with a public key.
ASYMMETRIC = (
    *("RS256", "RS384", "RS512", "PS256", "PS384", "PS512"),
    *("ES256", "ES384", "ES512", "EdDSA"),
)
#: How much clock difference between the token's issuer and this host is forgiven.
LEEWAY_S = 30


def read_text(path: str, setting: str) -> str:
    try:
        return Path(path).read_text()
    except OSError as exc:
        raise CredentialsInvalid(f"{setting} {path}: {exc.strerror or exc}") from exc


class Tokens:
    """Token digests -> tenant."""

    def __init__(self, by_digest: dict[str, str]):
        self._by_digest = by_digest

    @staticmethod
    def _digest(token: str) -> str:
        return hashlib.sha256(token.encode()).hexdigest()

    @classmethod
    def parse(cls, text: str, where: str = "the tokens file") -> Tokens:
        by_digest: dict[str, str] = {}
        for n, raw in enumerate(text.splitlines(), 1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            token, sep, tenant = (part.strip() for part in line.partition(","))
            if not sep or not token or not tenant or "," in tenant:
                raise CredentialsInvalid(f"{where}, line {n}: expected `token,tenant`")
            if len(token) < 16:
                raise CredentialsInvalid(f"{where}, line {n}: a token needs 16 characters or more")
            if not valid_tenant(tenant):
                raise CredentialsInvalid(
                    f"{where}, line {n}: a tenant is letters, digits, - _ . (64 at most)"
                )
            by_digest[cls._digest(token)] = tenant
        if not by_digest:
            raise CredentialsInvalid(f"{where} holds no token")
        return cls(by_digest)

    @classmethod
    def load(cls, path: str) -> Tokens:
        return cls.parse(read_text(path, "AUTH_TOKENS_FILE"), f"AUTH_TOKENS_FILE {path}")

    def tenant(self, token: str) -> str | None:
        return self._by_digest.get(self._digest(token))


class JwtKeys:
    """Verifies JWTs against an issuer's public keys and names their tenant."""

    def __init__(
        self,
        keys: Mapping[str | None, tuple[Any, tuple[str, ...]]],
        issuer: str | None = None,
        audience: str | None = None,
        tenant_claim: str = "tenant",
    ):
        """`keys`: key id (None: the only key) -> (public key, the algorithms it verifies)."""
        self.keys, self.issuer, self.audience = keys, issuer, audience
        self.tenant_claim = tenant_claim

    @classmethod
    def from_jwks(cls, text: str, where: str = "the JWKS file", **kw: Any) -> JwtKeys:
        try:
            found = jwt.PyJWKSet.from_json(text).keys
        except (jwt.PyJWKSetError, jwt.PyJWKError, ValueError) as exc:
            raise CredentialsInvalid(f"{where}: not a usable JWKS ({exc})") from exc
        usable = {k.key_id: (k.key, (k.algorithm_name,)) for k in found}
        usable = {kid: v for kid, v in usable.items() if v[1][0] in ASYMMETRIC}
        if not usable:
            raise CredentialsInvalid(f"{where}: no public key with an asymmetric algorithm")
        return cls(usable, **kw)

    @classmethod
    def from_pem(cls, text: str, where: str = "the public key file", **kw: Any) -> JwtKeys:
        from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
        from cryptography.hazmat.primitives.serialization import load_pem_public_key

        try:
            key = load_pem_public_key(text.encode())
        except ValueError as exc:
            raise CredentialsInvalid(f"{where}: not a PEM public key") from exc
        algs: tuple[str, ...]
        if isinstance(key, rsa.RSAPublicKey):
            algs = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512")
        elif isinstance(key, ec.EllipticCurvePublicKey):
            algs = ("ES256", "ES384", "ES512")
        elif isinstance(key, ed25519.Ed25519PublicKey):
            algs = ("EdDSA",)
        else:
            raise CredentialsInvalid(f"{where}: an RSA, EC or Ed25519 public key is needed")
        return cls({None: (key, algs)}, **kw)

    def _key(self, kid: object) -> tuple[Any, tuple[str, ...]]:
        if isinstance(kid, str) and kid in self.keys:
            return self.keys[kid]
        if len(self.keys) == 1 and (kid is None or None in self.keys):
            return next(iter(self.keys.values()))
        raise Refused("the JWT names a key (kid) the service does not know")

    def tenant(self, token: str) -> str:
        """The token's tenant; Refused saying why it proves none."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.DecodeError as exc:
            raise Refused("the bearer token is neither a known token nor a JWT") from exc
        key, allowed = self._key(header.get("kid"))
        if header.get("alg") not in allowed:  # never `none`, never HMAC with a public key
            raise Refused(f"the JWT's algorithm {header.get('alg')!r} is not accepted")
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=list(allowed),
                issuer=self.issuer,
                audience=self.audience,
                leeway=LEEWAY_S,
                options={"require": ["exp"], "verify_aud": self.audience is not None},
            )
        except jwt.ExpiredSignatureError as exc:
            raise Refused("the JWT has expired") from exc
        except jwt.InvalidAudienceError as exc:
            raise Refused("the JWT is for another audience") from exc
        except jwt.InvalidIssuerError as exc:
            raise Refused("the JWT is from another issuer") from exc
        except jwt.MissingRequiredClaimError as exc:
            raise Refused(f"the JWT lacks the `{exc.claim}` claim") from exc
        except jwt.InvalidTokenError as exc:
            raise Refused("the JWT does not verify") from exc
        tenant = claims.get(self.tenant_claim)
        if not isinstance(tenant, str) or not valid_tenant(tenant):
            raise Refused(f"the JWT's `{self.tenant_claim}` claim is not a tenant name")
        return tenant


def certificate_tenant(auth_context: dict[str, list[bytes]]) -> str | None:
    """The common name of a verified client certificate (grpc's auth context), if any."""
    names = auth_context.get("x509_common_name") or []
    if len(names) != 1:
        return None
    name = names[0].decode("utf-8", "replace")
    return name if valid_tenant(name) else None
