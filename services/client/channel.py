"""The gRPC channel the CLI and the agent client open to a bridge, with the credentials
GRPC_CLIENT_* name: TLS (and a client certificate for mutual TLS) on the channel, the
bearer token on every call. One place, so both callers present the same credentials."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import grpc

from services.client.errors import ClientCredentialsInvalid
from services.kit.settings import ClientSettings

#: Large GenerateData answers (the bridge sends up to 64 MiB).
OPTIONS = [("grpc.max_receive_message_length", 256 * 1024 * 1024)]


def _pem(path: str | None, setting: str) -> bytes | None:
    if not path:
        return None
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ClientCredentialsInvalid(f"{setting} {path}: {exc.strerror or exc}") from exc


def channel_credentials(s: ClientSettings) -> grpc.ChannelCredentials | None:
    """TLS credentials when any GRPC_CLIENT_TLS / _CA_FILE / _CERT_FILE is set, else None."""
    if not (s.grpc_client_tls or s.grpc_client_ca_file or s.grpc_client_cert_file):
        return None
    if bool(s.grpc_client_cert_file) != bool(s.grpc_client_key_file):
        raise ClientCredentialsInvalid(
            "a client certificate needs both GRPC_CLIENT_CERT_FILE and GRPC_CLIENT_KEY_FILE"
        )
    return grpc.ssl_channel_credentials(
        root_certificates=_pem(s.grpc_client_ca_file, "GRPC_CLIENT_CA_FILE"),
        private_key=_pem(s.grpc_client_key_file, "GRPC_CLIENT_KEY_FILE"),
        certificate_chain=_pem(s.grpc_client_cert_file, "GRPC_CLIENT_CERT_FILE"),
    )


def call_metadata(s: ClientSettings) -> tuple[tuple[str, str], ...]:
    """`authorization: Bearer <GRPC_CLIENT_TOKEN>` when a token is set."""
    token = s.grpc_client_token.get_secret_value() if s.grpc_client_token else ""
    return (("authorization", f"Bearer {token}"),) if token else ()


def open_channel(target: str, s: ClientSettings, aio: bool = False) -> Any:
    """A channel to `target` (host:port), secure when TLS is configured."""
    module: Any = grpc.aio if aio else grpc
    creds = channel_credentials(s)
    if creds is None:
        return module.insecure_channel(target, options=OPTIONS)
    return module.secure_channel(target, creds, options=OPTIONS)
