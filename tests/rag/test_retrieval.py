"""What a RAG request searches the pattern store for."""

from __future__ import annotations

import pytest

from services.core.models import GenerateRequest
from services.core.plan import build_plan
from services.core.registry import SchemaRegistry
from services.patterns import Collection
from services.patterns.scope import collection_for, scope_of
from services.rag.retrieval import query_text, search_terms
from tests.support import make_settings


@pytest.fixture(scope="module")
def registry():
    return SchemaRegistry.load()


def plan(registry, **kw):
    return build_plan(GenerateRequest.model_validate(kw), registry)


def test_the_query_is_the_requests_own_words(registry):
    p = plan(
        registry,
        entity="order",
        context="Orders placed at midnight UTC",
        scenarios=[{"name": "far_future", "description": "dates decades ahead"}],
        hints=["similar to last sprint"],
    )
    assert query_text(p) == "placed at midnight UTC far future dates decades ahead to last sprint"
    assert search_terms(p, make_settings(rag_alpha=0.6)) == (query_text(p), 0.6)


def test_without_words_the_scope_is_ranked_by_meaning(registry):
    p = plan(registry, entity="cart", hints=["similar", "Historical patterns"])
    assert query_text(p) == ""
    assert search_terms(p, make_settings()) == ("ecommerce cart", 1.0)


def test_collection_and_scope_follow_the_request(registry):
    assert collection_for(GenerateRequest(entity="cart")) == Collection.PATTERNS
    assert collection_for(GenerateRequest(production_like=True)) == Collection.PRODUCTION
    both = GenerateRequest(defect_triggering=True, production_like=True)
    assert collection_for(both) == Collection.DEFECTS
    p = plan(registry, entity="payment", domain="Retail", defect_triggering=True)
    assert scope_of(p.request, p.schema).key() == "defects/retail/payment"
    assert scope_of(p.request, p.schema).missing() == (
        "no defect patterns for retail/payment in the pattern store"
    )
