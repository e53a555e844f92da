"""What the kit's shared modules raise."""

from __future__ import annotations


class UserError(Exception):
    """Something the user can fix; `main` prints it as one line and exits non-zero."""

    def __init__(self, message: str, code: int = 1):
        super().__init__(message)
        self.code = code
