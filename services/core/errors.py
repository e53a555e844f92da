"""What the pure core raises."""

from __future__ import annotations

from services.core.models import FieldError


class NoExamples(ValueError):
    """Nothing to vary: no example record is an object."""


class SchemaFileError(ValueError):
    """A schema file that is not a valid entity schema: the service refuses to start."""


class ConstraintUnsatisfiable(ValueError):
    """Constraints that no record can meet; reported before generation starts."""


class UnsupportedRegex(ValueError):
    pass


class RequestInvalid(ValueError):
    """A request that cannot be served; carries every problem found, not just the first."""

    def __init__(self, errors: list[FieldError]):
        self.errors = errors
        super().__init__("; ".join(str(e) for e in errors))


class GenerationStopped(Exception):
    """`should_stop` answered True: the caller no longer wants the rest of the range."""
