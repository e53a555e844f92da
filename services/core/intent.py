"""What a request's words mean: context, hints and scenario descriptions read by
deterministic recognizers, so a request without an LLM is still shaped by its words.

A recognizer finds spans of a text it understands and says what each became (a theme, a
constraint, an edge-case request). `interpret` runs every recognizer over every text of a
request and lists what was understood and what was not, so nothing is ignored silently.
Pure: no I/O, no clock, no randomness (same request, same intent).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from services.core.models import FieldConstraint, GenerateRequest

CONTEXT = "context"
HINTS = "hints"


def scenario_scope(name: str) -> str:
    return f"scenario:{name}"


@dataclass(frozen=True)
class Match:
    """A span of one text that a recognizer understood, and its effect."""

    start: int
    end: int
    meaning: str  # for people, e.g. "cart total > 500", "occasion marathon_training"
    themes: tuple[str, ...] = ()  # occasions or categories the words select, best first
    constraints: tuple[tuple[str, FieldConstraint], ...] = ()  # (field path, constraint)
    overrides: tuple[tuple[str, Any], ...] = ()  # (field path, fixed value)
    edge_cases: tuple[str, ...] = ()  # edge-case classes asked for; ("*",) = every applicable


# A recognizer reads one text (already lower-cased? no: as written) and returns its matches.
Recognizer = Callable[[str], list[Match]]


@dataclass(frozen=True)
class Understood:
    phrase: str
    meaning: str
    scope: str  # CONTEXT, HINTS or scenario_scope(name)


@dataclass(frozen=True)
class ScopeIntent:
    """The effects found in one scope (the context and hints apply to every record; a
    scenario's description to that scenario's records only)."""

    themes: tuple[str, ...] = ()
    constraints: tuple[tuple[str, FieldConstraint], ...] = ()
    overrides: tuple[tuple[str, Any], ...] = ()
    edge_cases: tuple[str, ...] = ()


@dataclass(frozen=True)
class Intent:
    understood: tuple[Understood, ...] = ()
    not_understood: tuple[str, ...] = ()  # "<scope>: <phrase>"
    contradictions: tuple[str, ...] = ()
    request: ScopeIntent = field(default_factory=ScopeIntent)  # from context and hints
    scenarios: dict[str, ScopeIntent] = field(default_factory=dict)  # by scenario name

    @property
    def themes(self) -> tuple[str, ...]:
        seen: dict[str, None] = dict.fromkeys(self.request.themes)
        for s in self.scenarios.values():
            seen.update(dict.fromkeys(s.themes))
        return tuple(seen)


def texts_of(req: GenerateRequest) -> list[tuple[str, str]]:
    """(scope, text) for every text of a request that may carry meaning."""
    out = [(CONTEXT, req.context)] if req.context.strip() else []
    out += [(HINTS, h) for h in req.hints if h.strip()]
    out += [
        (scenario_scope(s.name), text)
        for s in req.scenarios
        for text in (s.description, s.name)
        if text.strip()
    ]
    return out


def _scope_intent(matches: Sequence[Match]) -> ScopeIntent:
    return ScopeIntent(
        themes=tuple(dict.fromkeys(t for m in matches for t in m.themes)),
        constraints=tuple(c for m in matches for c in m.constraints),
        overrides=tuple(o for m in matches for o in m.overrides),
        edge_cases=tuple(dict.fromkeys(e for m in matches for e in m.edge_cases)),
    )


def interpret(req: GenerateRequest, recognizers: Sequence[Recognizer]) -> Intent:
    """Every recognizer over every text; a text nothing matched is listed as not
    understood."""
    understood: list[Understood] = []
    not_understood: list[str] = []
    by_scope: dict[str, list[Match]] = {}
    for scope, text in texts_of(req):
        found = [m for r in recognizers for m in r(text)]
        by_scope.setdefault(scope, []).extend(found)
        understood += [Understood(text[m.start : m.end], m.meaning, scope) for m in found]
        if not found and not scope.startswith("scenario:"):
            not_understood.append(f"{scope}: {text}")
    request = _scope_intent([*by_scope.get(CONTEXT, []), *by_scope.get(HINTS, [])])
    scenarios = {
        s.name: _scope_intent(by_scope.get(scenario_scope(s.name), [])) for s in req.scenarios
    }
    return Intent(
        understood=tuple(understood),
        not_understood=tuple(not_understood),
        request=request,
        scenarios=scenarios,
    )


# The recognizers every plan uses, in order (each module of meaning adds its own).
RECOGNIZERS: list[Recognizer] = []
