"""Read JSON records out of a model's answer, tolerating the usual wrapping.

Handled: markdown fences, prose before/after the JSON, trailing commas, one object instead
of an array, an object wrapping the array (`{"records": [...]}`), several objects one after
another (JSON Lines, or an array missing its brackets). Not guessed at: truncated JSON (an
opening bracket that never closes) is reported, never half-read. Pure; no I/O.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from itertools import pairwise
from typing import Any

from services.llm.errors import LLMOutputError

# Keys a model commonly wraps its array in. A single-key object is unwrapped whatever
# the key; these are also unwrapped next to other (metadata) keys.
WRAPPER_KEYS = ("records", "data", "results", "rows", "output", "entries", "objects")

_FENCE_RE = re.compile(r"```[ \t]*[A-Za-z0-9_+.-]*[ \t]*\r?\n(.*?)(?:```|\Z)", re.S)
_OPENERS = re.compile(r"[\[{]")
_TRAILING_COMMA = re.compile(r",[ \t\r\n]*[\]}]")
_SEPARATORS = " \t\r\n,"
_SNIPPET = 160

_NOT_JSON = object()


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _loads(text: str) -> Any:
    """json.loads, retried once without trailing commas; `_NOT_JSON` when neither works."""
    for attempt in (text, None):
        if attempt is None:
            attempt = strip_trailing_commas(text)
            if attempt == text:
                break
        try:
            return json.loads(attempt, parse_constant=_reject_constant)
        except ValueError:
            continue
    return _NOT_JSON


def _outside_strings(text: str, start: int = 0) -> Iterator[int]:
    """Indices, from `start`, of the characters outside JSON string literals (a literal's
    quotes count as inside): bracket and comma scans must not see `"a,]"` or an escaped
    quote as structure."""
    in_string = escaped = False
    for i in range(start, len(text)):
        ch = text[i]
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        else:
            yield i


def strip_trailing_commas(text: str) -> str:
    """Drop commas directly before `]` or `}` (outside strings)."""
    drop = [i for i in _outside_strings(text) if _TRAILING_COMMA.match(text, i)]
    return "".join(text[a + 1 : b] for a, b in pairwise([-1, *drop, len(text)]))


def _balanced_end(text: str, start: int) -> int | None:
    """Index just past the bracket closing the one at `start`; None if it never closes."""
    depth = 0
    for i in _outside_strings(text, start):
        ch = text[i]
        if ch in "[{":
            depth += 1
        elif ch in "]}":
            depth -= 1
            if depth == 0:
                return i + 1
    return None


def _is_records(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, dict) for v in value)


def as_records(value: Any) -> list[dict[str, Any]] | None:
    """A parsed JSON value as a list of records, or None when it is not one."""
    if isinstance(value, list):
        return list(value) if _is_records(value) else None
    if not isinstance(value, dict) or not value:
        return None
    if "_index" not in value:
        if len(value) == 1:
            (only,) = value.values()
            if isinstance(only, list):
                return list(only) if _is_records(only) else None
        for key in WRAPPER_KEYS:
            inner = value.get(key)
            if isinstance(inner, list) and _is_records(inner):
                return list(inner)
    return [value]


def _follow_objects(text: str, pos: int, first: dict[str, Any]) -> list[dict[str, Any]]:
    """`first` plus the objects directly following it (JSON Lines / missing brackets)."""
    records = [first]
    n = len(text)
    while True:
        j = pos
        while j < n and text[j] in _SEPARATORS:
            j += 1
        if j >= n or text[j] != "{":
            return records
        end = _balanced_end(text, j)
        if end is None:
            return records
        value = _loads(text[j:end])
        if not isinstance(value, dict) or not value:
            return records
        records.append(value)
        pos = end


def _scan(text: str, problems: list[str]) -> list[dict[str, Any]] | None:
    whole = _loads(text)
    if whole is not _NOT_JSON:
        records = as_records(whole)
        if records is not None:
            return records
        problems.append(f"JSON of type {type(whole).__name__} is not a list of objects")
        return None
    found_empty = False
    pos = 0
    while (m := _OPENERS.search(text, pos)) is not None:
        start = m.start()
        end = _balanced_end(text, start)
        if end is None:
            problems.append(f"JSON starting at offset {start} never closes (output truncated?)")
            break
        value = _loads(text[start:end])
        if value is not _NOT_JSON:
            records = as_records(value)
            if records:
                if isinstance(value, dict) and records == [value]:
                    return _follow_objects(text, end, value)
                return records
            if records == []:
                found_empty = True
        # Skip the whole bracketed span: reading inside a broken array would return
        # some of its records as if they were all of them.
        pos = end
    if found_empty:
        return []
    return None


def parse_records(text: str) -> list[dict[str, Any]]:
    """The records in a model's answer; `LLMOutputError` when none can be read.

    An empty array is a valid (empty) answer.
    """
    if not isinstance(text, str):
        raise LLMOutputError(f"model output is {type(text).__name__}, not text")
    body = text.strip().lstrip("\ufeff").strip()
    if not body:
        raise LLMOutputError("model output is empty")
    problems: list[str] = []
    sources = [m.group(1) for m in _FENCE_RE.finditer(body)]
    sources.append(body)
    for source in sources:
        records = _scan(source.strip(), problems)
        if records is not None:
            return records
    snippet = body[:_SNIPPET] + ("..." if len(body) > _SNIPPET else "")
    detail = "; ".join(dict.fromkeys(problems)) or "no JSON array or object found"
    raise LLMOutputError(
        f"no JSON records in model output ({len(body)} chars): {detail}; starts with: {snippet!r}",
        snippet=snippet,
    )
