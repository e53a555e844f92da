"""What the wire contract raises."""

from __future__ import annotations

from services.core.models import FieldError
from services.core.report import ErrorKind


class DecodeError(ValueError):
    """A message that cannot become a typed value; `kind` names the dead-letter category."""

    def __init__(
        self,
        kind: ErrorKind | str,
        reason: str,
        errors: list[FieldError] | None = None,
        request_id: str | None = None,
    ):
        super().__init__(reason)
        self.kind = ErrorKind(kind)
        self.reason = reason
        self.errors = errors or []
        self.request_id = request_id
