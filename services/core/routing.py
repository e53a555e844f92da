"""The Intelligence Router's rules: which generation path suits a request, and why.

Pure: availability of each path's backend is passed in, so the same rules serve the
router service, tests and benchmarks. A path that cannot serve right now is replaced by
the traditional path, and the decision says so (never silently).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from pydantic import BaseModel, ConfigDict, Field

from services.core.models import GenerateRequest, GenerationPath
from services.core.report import Fallback

TEXT_ENTITIES = frozenset({"review", "comment", "feedback"})
COHERENT_ENTITIES = frozenset({"cart", "order"})
RAG_HINTS = ("similar", "pattern", "historical")
LLM_HINTS = frozenset({"realistic", "coherent", "intelligent"})
HIGH_VOLUME = 500


class RoutingDecision(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    path: GenerationPath
    reason: str
    confidence: float
    requested_path: GenerationPath  # what the rules chose before availability
    fallbacks: list[Fallback] = Field(default_factory=list, alias="fallback_steps")


def _rag_reasons(req: GenerateRequest) -> list[str]:
    out = [
        flag
        for flag in ("learn_from_history", "defect_triggering", "production_like")
        if getattr(req, flag)
    ]
    out += [f"hint {h!r}" for h in sorted(req.hint_set()) if any(k in h for k in RAG_HINTS)]
    return out


def _llm_reasons(req: GenerateRequest) -> list[str]:
    hints = req.hint_set()
    entity = (req.entity or req.schema_.predefined_schema).lower()
    out = []
    if len(req.context.strip()) > 10:
        out.append("context provided")
    if hints & LLM_HINTS:
        out.append("hints " + ", ".join(sorted(hints & LLM_HINTS)))
    if entity in TEXT_ENTITIES:
        out.append(f"{entity} needs natural text")
    if entity in COHERENT_ENTITIES and "coherent" in hints:
        out.append(f"{entity} needs item coherence")
    if any(s.description.strip() for s in req.scenarios):
        out.append("scenario descriptions")
    return out


def choose(req: GenerateRequest) -> tuple[GenerationPath, str, float]:
    """The rules alone, in priority order: hybrid, rag, llm, traditional."""
    hints = req.hint_set()
    rag, llm = _rag_reasons(req), _llm_reasons(req)
    if "fast" in hints:
        return GenerationPath.TRADITIONAL, "hint 'fast' asks for the fastest path", 0.95
    if rag and llm:
        return (
            GenerationPath.HYBRID,
            f"history ({', '.join(rag)}) and intelligence ({', '.join(llm)}) both needed",
            0.9,
        )
    if rag:
        return GenerationPath.RAG, f"pattern-based: {', '.join(rag)}", 0.85
    if llm and req.count <= HIGH_VOLUME:
        return GenerationPath.LLM, f"intelligent generation: {', '.join(llm)}", 0.8
    if llm:
        return (
            GenerationPath.TRADITIONAL,
            f"high volume ({req.count} > {HIGH_VOLUME}) outweighs {', '.join(llm)}",
            0.7,
        )
    why = "no context, no intelligence hints"
    if req.count > HIGH_VOLUME:
        why += f", high volume ({req.count})"
    return GenerationPath.TRADITIONAL, why, 0.95


#: Where a path's requests go when it cannot serve, in order.
_NEXT: dict[GenerationPath, tuple[GenerationPath, ...]] = {
    GenerationPath.HYBRID: (GenerationPath.LLM, GenerationPath.TRADITIONAL),
    GenerationPath.RAG: (GenerationPath.TRADITIONAL,),
    GenerationPath.LLM: (GenerationPath.TRADITIONAL,),
}


#: Paths that serve from the pattern store: they also need its patterns for the request.
STORE_PATHS = frozenset({GenerationPath.RAG, GenerationPath.HYBRID})


def route(
    req: GenerateRequest,
    available: Mapping[GenerationPath, str | None],
    patterns: Callable[[], str | None] | None = None,
) -> RoutingDecision:
    """Rules, then availability: `available[path]` is None when the path can serve,
    else the reason it cannot (e.g. "no LLM backend configured"). `patterns()` says why
    the pattern store cannot serve this request (None when it holds patterns for it); it
    is asked only when a store path is considered."""
    path, reason, confidence = choose(req)
    fallbacks: list[Fallback] = []
    chosen = path
    for nxt in _NEXT.get(path, ()):
        why = available.get(chosen)
        if why is None and chosen in STORE_PATHS and patterns is not None:
            why = patterns()
        if why is None:
            break
        fallbacks.append(Fallback(source=chosen.value, target=nxt.value, reason=why))
        chosen = nxt
    if fallbacks:
        reason = f"{reason}; served by {chosen.value} because " + "; ".join(map(str, fallbacks))
    return RoutingDecision(
        path=chosen,
        reason=reason,
        confidence=confidence,
        requested_path=path,
        fallback_steps=fallbacks,
    )
