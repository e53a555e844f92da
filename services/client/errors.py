"""What the agent client raises."""

from __future__ import annotations

from services.kit.wire.messages import ErrorDetail


class ClientCredentialsInvalid(ValueError):
    """A GRPC_CLIENT_* file cannot be read, or a certificate comes without its key."""


class GenerationFailed(Exception):
    """The service answered the request with a failure (or none came in time)."""

    def __init__(self, request_id: str, kind: str, message: str, details: list[ErrorDetail]):
        super().__init__(f"{request_id}: {kind}: {message}")
        self.request_id = request_id
        self.kind = kind
        self.message = message
        self.details = details
