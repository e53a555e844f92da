"""Strings that match a regex, built by walking the parsed pattern (no retry loops).

Supports what test-data constraints use: literals, classes, `\\d \\w \\s`, `.`, groups,
alternation and bounded/unbounded repeats. Lookarounds and back-references are refused
up front, because no walk can honour them by construction.
"""

from __future__ import annotations

import random
import re
import string
from functools import lru_cache
from re import _constants as c  # type: ignore[attr-defined]
from re import _parser as sre  # type: ignore[attr-defined]
from typing import Any

UNBOUNDED_CAP = 8  # `*`/`+` repeat at most this many extra times
_PRINTABLE = [ch for ch in string.printable if ch not in "\t\n\r\x0b\x0c"]
_CATEGORIES: dict[Any, list[str]] = {
    c.CATEGORY_DIGIT: list(string.digits),
    c.CATEGORY_NOT_DIGIT: list(string.ascii_letters + " -_"),
    c.CATEGORY_WORD: list(string.ascii_letters + string.digits + "_"),
    c.CATEGORY_NOT_WORD: list(" -.,;:!?"),
    c.CATEGORY_SPACE: [" "],
    c.CATEGORY_NOT_SPACE: list(string.ascii_letters + string.digits),
}


class UnsupportedRegex(ValueError):
    pass


@lru_cache(maxsize=256)
def compile_pattern(pattern: str) -> Any:
    """Parse once; raises re.error for invalid and UnsupportedRegex for ungeneratable."""
    parsed = sre.parse(pattern)
    _check(parsed)
    return parsed


def _check(parsed: Any) -> None:
    for op, av in parsed:
        if op in (c.ASSERT, c.ASSERT_NOT, c.GROUPREF, c.GROUPREF_EXISTS):
            raise UnsupportedRegex("lookarounds and back-references cannot be generated")
        if op == c.SUBPATTERN:
            _check(av[-1])
        elif op in (c.MAX_REPEAT, c.MIN_REPEAT, getattr(c, "POSSESSIVE_REPEAT", None)):
            _check(av[2])
        elif op == c.BRANCH:
            for branch in av[1]:
                _check(branch)
        elif op == getattr(c, "ATOMIC_GROUP", None):
            _check(av)


def length_bounds(pattern: str) -> tuple[int, int]:
    """Shortest and longest string the generator can produce for the pattern."""
    return _bounds(compile_pattern(pattern))


def _bounds(parsed: Any) -> tuple[int, int]:
    lo = hi = 0
    for op, av in parsed:
        if op in (c.LITERAL, c.NOT_LITERAL, c.ANY, c.IN):
            lo, hi = lo + 1, hi + 1
        elif op == c.SUBPATTERN:
            a, b = _bounds(av[-1])
            lo, hi = lo + a, hi + b
        elif op in (c.MAX_REPEAT, c.MIN_REPEAT, getattr(c, "POSSESSIVE_REPEAT", None)):
            mn, mx, sub = av
            a, b = _bounds(sub)
            lo += mn * a
            hi += _repeat_max(mn, mx) * b
        elif op == c.BRANCH:
            bs = [_bounds(br) for br in av[1]]
            lo += min(x for x, _ in bs)
            hi += max(y for _, y in bs)
    return lo, hi


def _repeat_max(mn: int, mx: int) -> int:
    return mn + UNBOUNDED_CAP if mx == c.MAXREPEAT else mx


def generate(pattern: str, rng: random.Random) -> str:
    out: list[str] = []
    _emit(compile_pattern(pattern), rng, out)
    return "".join(out)


def _class_chars(items: Any) -> list[str]:
    chars: set[str] = set()
    negate = False
    for op, av in items:
        if op == c.NEGATE:
            negate = True
        elif op == c.LITERAL:
            chars.add(chr(av))
        elif op == c.RANGE:
            chars.update(chr(x) for x in range(av[0], min(av[1], av[0] + 512) + 1))
        elif op == c.CATEGORY:
            chars.update(_CATEGORIES.get(av, []))
    if negate:
        return [ch for ch in _PRINTABLE if ch not in chars]
    return sorted(chars)


def _emit(parsed: Any, rng: random.Random, out: list[str]) -> None:
    for op, av in parsed:
        if op == c.LITERAL:
            out.append(chr(av))
        elif op == c.NOT_LITERAL:
            out.append(rng.choice([ch for ch in _PRINTABLE if ord(ch) != av]))
        elif op == c.ANY:
            out.append(rng.choice(_PRINTABLE))
        elif op == c.IN:
            out.append(rng.choice(_class_chars(av) or ["x"]))
        elif op == c.SUBPATTERN:
            _emit(av[-1], rng, out)
        elif op in (c.MAX_REPEAT, c.MIN_REPEAT, getattr(c, "POSSESSIVE_REPEAT", None)):
            mn, mx, sub = av
            for _ in range(rng.randint(mn, _repeat_max(mn, mx))):
                _emit(sub, rng, out)
        elif op == c.BRANCH:
            _emit(rng.choice(av[1]), rng, out)
        elif op == getattr(c, "ATOMIC_GROUP", None):
            _emit(av, rng, out)
        # AT (anchors) emit nothing


def check_regex(pattern: str) -> str | None:
    """None when the pattern is valid and generatable, else a human-readable reason."""
    try:
        compile_pattern(pattern)
        re.compile(pattern)
    except re.error as exc:
        return f"invalid regex: {exc}"
    except UnsupportedRegex as exc:
        return f"unsupported regex: {exc}"
    return None
