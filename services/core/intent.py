"""What a request's words mean: context, hints and scenario descriptions read by
deterministic recognizers, so a request without an LLM is still shaped by its words.

A recognizer finds spans of a text it understands and says what each became (a theme, a
constraint, an edge-case request). `interpret` runs every recognizer over every text of a
request and lists what was understood and what was not, so nothing is ignored silently.
Pure: no I/O, no clock, no randomness (same request, same intent).
"""

from __future__ import annotations

import re
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
    # Words about the request's own fields, checked against them (the fields win):
    output_format: str | None = None  # "as SQL"
    scenario_share: tuple[str, float] | None = None  # "70% happy path": (name, 70.0)


# A recognizer reads one text (already lower-cased? no: as written) and returns its matches.
Recognizer = Callable[[str], list[Match]]


@dataclass(frozen=True)
class Understood:
    phrase: str
    meaning: str
    scope: str  # CONTEXT, HINTS or scenario_scope(name)
    match: Match | None = field(default=None, compare=False, repr=False)


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
    # A scenario's description, or its name when it has none ("single_item").
    out += [
        (scenario_scope(s.name), s.description if s.description.strip() else s.name)
        for s in req.scenarios
    ]
    return [(scope, text) for scope, text in out if text.strip()]


def _scope_intent(matches: Sequence[Match]) -> ScopeIntent:
    return ScopeIntent(
        themes=tuple(dict.fromkeys(t for m in matches for t in m.themes)),
        constraints=tuple(c for m in matches for c in m.constraints),
        overrides=tuple(o for m in matches for o in m.overrides),
        edge_cases=tuple(dict.fromkeys(e for m in matches for e in m.edge_cases)),
    )


# Clauses are read one by one: a clause no recognizer understood is reported as such.
_CLAUSE = re.compile(r"[,;.!?()\n]+|\s(?:and|but|with|plus|while|where)\s", re.IGNORECASE)
_WORD = re.compile(r"[A-Za-z0-9$%]+")
# Words that carry no request on their own (a clause of only these is not "not understood").
FILLER = frozenset(
    """
    a an the of for to in on at by with and or but as is are be please make create
    generate give me us i we need want some realistic synthetic test data records record
    sample samples set list dataset them that which who whose they their its it this
    these those using use also all each every per like e g eg etc just only mostly
    mainly carts cart orders order payments payment users user customers customer
    products product reviews review items item transactions transaction accounts
    account people shoppers entries rows
    """.split()  # noqa: SIM905
)


# Hints that steer routing or learning rather than the records: understood as such.
CONTROL_HINTS = {
    "fast": "routing: the fastest path (traditional)",
    "realistic": "routing: asks for the LLM path",
    "coherent": "routing: asks for the LLM path",
    "intelligent": "routing: asks for the LLM path",
    "similar": "routing: asks for the pattern store (RAG)",
    "pattern": "routing: asks for the pattern store (RAG)",
    "patterns": "routing: asks for the pattern store (RAG)",
    "historical": "routing: asks for the pattern store (RAG)",
    "no_learn": "learning: this dataset is kept out of the pattern store",
}


def _control(text: str) -> Match | None:
    key = text.strip().lower().replace("-", "_")
    meaning = CONTROL_HINTS.get(key)
    return Match(0, len(text), meaning) if meaning else None


def _resolve_overlaps(found: list[tuple[int, Match]]) -> list[Match]:
    """Longest spans first (then the earlier recognizer): no two kept matches overlap."""
    kept: list[Match] = []
    for _, m in sorted(found, key=lambda x: (-(x[1].end - x[1].start), x[0], x[1].start)):
        if all(m.end <= k.start or m.start >= k.end for k in kept):
            kept.append(m)
    return sorted(kept, key=lambda m: m.start)


def leftovers(text: str, matches: Sequence[Match]) -> list[str]:
    """Clauses of `text` that no match touched and that say something."""
    out = []
    pos = 0
    for sep in [*_CLAUSE.finditer(text), None]:
        end = sep.start() if sep else len(text)
        lo, hi = pos, end
        pos = sep.end() if sep else len(text)
        clause = text[lo:hi].strip()
        if not clause or any(m.start < hi and m.end > lo for m in matches):
            continue
        words = [w.lower() for w in _WORD.findall(clause)]
        if any(w not in FILLER and not w.isdigit() for w in words):
            out.append(clause)
    return out


def interpret(req: GenerateRequest, recognizers: Sequence[Recognizer]) -> Intent:
    """Every recognizer over every text; overlapping matches resolved longest first; each
    clause nothing understood is listed as not understood."""
    understood: list[Understood] = []
    not_understood: list[str] = []
    by_scope: dict[str, list[Match]] = {}
    for scope, text in texts_of(req):
        control = _control(text) if scope == HINTS else None
        found = (
            [control]
            if control
            else _resolve_overlaps([(i, m) for i, r in enumerate(recognizers) for m in r(text)])
        )
        by_scope.setdefault(scope, []).extend(found)
        understood += [Understood(text[m.start : m.end], m.meaning, scope, m) for m in found]
        if scope.startswith("scenario:") and not found and _is_name(req, scope, text):
            continue  # a scenario's name is read only for what it may say
        not_understood += [f"{scope}: {c}" for c in leftovers(text, found)]
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


def _is_name(req: GenerateRequest, scope: str, text: str) -> bool:
    return any(scenario_scope(s.name) == scope and s.name == text for s in req.scenarios)
