import pytest

from services.core.models import GenerateRequest, GenerationPath
from services.core.report import Fallback
from services.core.routing import choose, route

T, L, R, H = (
    GenerationPath.TRADITIONAL,
    GenerationPath.LLM,
    GenerationPath.RAG,
    GenerationPath.HYBRID,
)
ALL_UP = {T: None, L: None, R: None, H: None}


@pytest.mark.parametrize(
    ("req", "path", "confidence"),
    [
        ({"entity": "user", "count": 1000}, T, 0.95),
        ({"entity": "cart", "count": 100}, T, 0.95),
        ({"entity": "cart", "hints": ["coherent"]}, L, 0.8),
        ({"entity": "cart", "context": "shopping carts for marathon runners"}, L, 0.8),
        ({"entity": "review", "count": 5}, L, 0.8),
        ({"entity": "order", "scenarios": [{"name": "x", "description": "gift orders"}]}, L, 0.8),
        ({"entity": "cart", "learn_from_history": True}, R, 0.85),
        ({"entity": "payment", "defect_triggering": True}, R, 0.85),
        ({"entity": "user", "production_like": True}, R, 0.85),
        ({"entity": "user", "hints": ["similar to last sprint"]}, R, 0.85),
        ({"entity": "cart", "learn_from_history": True, "hints": ["coherent"]}, H, 0.9),
        ({"entity": "cart", "hints": ["coherent", "fast"]}, T, 0.95),
        ({"entity": "cart", "hints": ["realistic"], "count": 5000}, T, 0.7),
    ],
)
def test_rules(req, path, confidence):
    got, reason, conf = choose(GenerateRequest.model_validate(req))
    assert (got, conf) == (path, confidence)
    assert reason


def test_reason_explains_the_choice():
    _, reason, _ = choose(
        GenerateRequest(entity="cart", hints=["coherent"], context="carts for marathon runners")
    )
    assert "context provided" in reason and "coherent" in reason


def test_unavailable_path_falls_back_to_traditional_and_says_why():
    d = route(
        GenerateRequest(entity="cart", hints=["coherent"]),
        {**ALL_UP, L: "no LLM backend configured"},
    )
    assert d.path == T and d.requested_path == L
    assert d.fallbacks == [
        Fallback(source="llm", target="traditional", reason="no LLM backend configured")
    ]
    assert "served by traditional because llm -> traditional" in d.reason


def test_hybrid_falls_back_to_llm_then_traditional():
    req = GenerateRequest(entity="cart", learn_from_history=True, hints=["coherent"])
    d = route(req, {**ALL_UP, H: "no pattern store"})
    assert (d.path, d.requested_path) == (L, H)
    d = route(req, {**ALL_UP, H: "no pattern store", L: "no LLM"})
    assert d.path == T and len(d.fallbacks) == 2


def test_available_path_is_used_as_chosen():
    d = route(GenerateRequest(entity="cart", learn_from_history=True), ALL_UP)
    assert d.path == R and d.fallbacks == []


def test_store_paths_need_patterns_for_the_request():
    """RAG and hybrid serve only while the store holds the request's patterns; the gap
    is asked for only when a store path is considered."""
    asked: list[str] = []

    def gap() -> str:
        asked.append("x")
        return "no patterns for ecommerce/payment in the pattern store"

    d = route(GenerateRequest(entity="payment", learn_from_history=True), ALL_UP, gap)
    assert (d.path, d.requested_path) == (T, R)
    assert d.fallbacks == [Fallback(source="rag", target="traditional", reason=gap())]
    hybrid = GenerateRequest(entity="payment", learn_from_history=True, hints=["coherent"])
    d = route(hybrid, ALL_UP, gap)
    assert d.path == L and [f.reason for f in d.fallbacks] == [gap()]
    asked.clear()
    assert route(GenerateRequest(entity="payment", hints=["coherent"]), ALL_UP, gap).path == L
    assert route(GenerateRequest(entity="user"), ALL_UP, gap).path == T
    assert asked == []  # not asked for requests no store path would serve


def test_a_path_level_reason_comes_before_the_pattern_gap():
    req = GenerateRequest(entity="cart", learn_from_history=True)
    d = route(req, {**ALL_UP, R: "pattern store unavailable: disk I/O error"}, lambda: "empty")
    assert [f.reason for f in d.fallbacks] == ["pattern store unavailable: disk I/O error"]
    assert route(req, ALL_UP, lambda: None).path == R
