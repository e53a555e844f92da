"""What a request gets wrong, collected so that a caller hears every problem at once.

One rule for every check of a request (the bounds in bounds.py, the plan in plan.py):
problems keep the order they were found in, at most `limits.max_errors` are reported
(then how many more there were), and they are raised together as one RequestInvalid.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, NoReturn

from services.core.errors import RequestInvalid
from services.core.limits import Limits
from services.core.models import FieldError

MAX_REPORTED = 5  # of one kind of problem (duplicates, bad enum values) before a summary


@dataclass
class Problems:
    """The problems found so far; true once there is one. `fatal`: one of them (a count
    or nesting that makes any further checking costly) means checking stops here;
    otherwise the planner goes on, so that the caller hears of every problem at once."""

    errors: list[FieldError] = field(default_factory=list)
    fatal: bool = False

    def __bool__(self) -> bool:
        return bool(self.errors)

    def add(self, path: str, message: str, value: Any = None, fatal: bool = False) -> None:
        self.errors.append(FieldError(path=path, message=message, value=value))
        self.fatal = self.fatal or fatal

    def extend(self, errors: Iterable[FieldError]) -> None:
        """Problems a check returned as a list (registry, output estimate, values)."""
        self.errors.extend(errors)

    def capped(self, limits: Limits) -> list[FieldError]:
        """At most `max_errors` problems, then how many more there were: an answer
        stays small however broken the request."""
        if len(self.errors) <= limits.max_errors:
            return self.errors
        more = len(self.errors) - limits.max_errors
        return [
            *self.errors[: limits.max_errors],
            FieldError(path="(request)", value=more, message=f"and {more} more problems"),
        ]

    def raise_all(self, limits: Limits) -> NoReturn:
        """Stop here: the problems found so far are all the caller will hear of."""
        raise RequestInvalid(self.capped(limits))

    def raise_if_any(self, limits: Limits) -> None:
        if self:
            self.raise_all(limits)
