"""The pattern-store contract, run against every backend in conftest.BACKENDS.

Rankings are asserted by order, never by exact scores: backends tokenise and score BM25
differently, and only the fusion and the vectors are shared.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from services.patterns import embedding
from services.patterns.seeds import load_seeds, seed_store
from services.patterns.store import Collection, Pattern, PatternStore
from tests.patterns.conftest import BACKENDS, REOPEN

P, D, S = Collection.PATTERNS, Collection.DEFECTS, Collection.PRODUCTION


def pat(
    description: str,
    *,
    entity: str = "cart",
    domain: str = "ecommerce",
    collection: Collection = P,
    scenario: str = "",
    records: list[dict[str, Any]] | None = None,
    **kw: Any,
) -> Pattern:
    """A pattern whose records differ with its description (content ids differ too)."""
    return Pattern(
        collection=collection,
        domain=domain,
        entity=entity,
        scenario=scenario,
        description=description,
        records=records or [{"_index": 0, "_scenario": scenario or "default", "n": description}],
        **kw,
    )


CARTS = [
    pat(
        "Marathon training cart: running shoes, moisture-wicking socks, energy gels "
        "and a GPS watch for a runner",
        scenario="marathon_training",
    ),
    pat(
        "Baby shower gift cart: newborn bodysuits, swaddle blankets and a plush bunny",
        scenario="baby_shower_gift",
    ),
    pat(
        "Kitchen upgrade cart: cast iron skillet, chef's knife and a countertop blender",
        scenario="kitchen_upgrade",
    ),
    pat(
        "Home office cart: ergonomic chair, monitor arm and a desk lamp",
        scenario="home_office",
    ),
]


def ids(hits: list[Any]) -> list[str]:
    return [h.pattern.id for h in hits]


# ---- lifecycle and writes ---------------------------------------------------------------
async def test_start_is_idempotent_and_a_new_store_is_empty(store: PatternStore) -> None:
    await store.start()
    await store.start()
    for c in Collection:
        assert await store.count(c) == 0
    assert (await store.stats()).counts == {}
    assert not (await store.health()).startswith("unavailable")


async def test_upsert_returns_how_many_were_new_and_is_idempotent_by_content(
    store: PatternStore,
) -> None:
    assert await store.upsert(CARTS[:3]) == 3
    assert await store.upsert(CARTS[:3]) == 0
    assert await store.count(P) == 3
    # the same content with a new id field, description or quality is the same pattern
    same = CARTS[0].model_copy(update={"id": "", "description": "renamed", "quality": 0.5})
    assert same.with_id().id == CARTS[0].with_id().id
    assert await store.upsert([same, CARTS[3]]) == 1
    assert await store.count(P) == 4
    [got] = await store.get(P, [CARTS[0].with_id().id])
    assert got.description == "renamed" and got.quality == 0.5  # the newest content wins
    # duplicates inside one call count once
    extra = pat("Camping cart: tent, sleeping bag and a headlamp")
    assert await store.upsert([extra, extra]) == 1


async def test_re_upsert_keeps_usage_and_creation_time(store: PatternStore) -> None:
    created = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
    p = CARTS[0].model_copy(update={"created_at": created})
    await store.upsert([p])
    await store.mark_used(P, [p.with_id().id])
    await store.upsert([p.model_copy(update={"created_at": created + timedelta(days=9)})])
    [got] = await store.get(P, [p.with_id().id])
    assert got.usage_count == 1
    assert got.created_at == created


async def test_get_round_trips_every_property(store: PatternStore) -> None:
    created = datetime(2025, 6, 1, 12, 30, tzinfo=UTC)
    records = [
        {
            "_index": 0,
            "_scenario": "unicode",
            "_edge_case_type": "unicode_emoji",
            "title": "Adorable 🐰 très mignon 可爱",
            "nested": {"list": [1, 2.5, None, True], "empty": {}},
        }
    ]
    p = pat(
        "Unicode defect: emoji and CJK text in review titles",
        entity="review",
        collection=D,
        scenario="unicode",
        records=records,
        quality=0.8,
        usage_count=0,
        source="learned:rag",
        defect_type="unicode_emoji",
        severity="medium",
        created_at=created,
    )
    await store.upsert([p])
    [got] = await store.get(D, [p.with_id().id])
    assert got == p.with_id()
    assert await store.get(P, [p.with_id().id]) == []  # ids are looked up per collection
    assert await store.get(D, ["no-such-id"]) == []


async def test_list_and_count_filter_by_collection_domain_and_entity(
    store: PatternStore,
) -> None:
    patterns = [
        *CARTS,
        pat("Delivered order with free shipping", entity="order"),
        pat("Card payment captured at checkout", entity="payment"),
        pat("Zero amount payment", entity="payment", collection=D, defect_type="zero_amount"),
        pat("Weekend production carts", collection=S),
        pat("Loan application approved", domain="fintech", entity="loan"),
    ]
    await store.upsert(patterns)
    assert await store.count(P) == 7
    assert await store.count(P, entity="cart") == 4
    assert await store.count(P, domain="ecommerce") == 6
    assert await store.count(P, domain="fintech", entity="loan") == 1
    assert await store.count(P, domain="fintech", entity="cart") == 0
    assert await store.count(D) == 1 and await store.count(S) == 1
    carts = await store.list_patterns(P, domain="ecommerce", entity="cart")
    assert {p.id for p in carts} == {p.with_id().id for p in CARTS}
    assert [p.entity for p in await store.list_patterns(D)] == ["payment"]
    page1 = await store.list_patterns(P, entity="cart", limit=2)
    page2 = await store.list_patterns(P, entity="cart", limit=2, offset=2)
    assert len(page1) == len(page2) == 2
    assert {p.id for p in page1 + page2} == {p.with_id().id for p in CARTS}


async def test_delete_removes_by_id_within_the_collection(store: PatternStore) -> None:
    await store.upsert(CARTS)
    first, second = CARTS[0].with_id().id, CARTS[1].with_id().id
    assert await store.delete(D, [first]) == 0  # another collection: nothing
    assert await store.delete(P, [first, second, "no-such-id"]) == 2
    assert await store.count(P) == 2
    assert await store.get(P, [first, second]) == []
    hits = await store.search(P, "marathon running shoes", top_k=10)
    assert first not in ids(hits)


# ---- search -----------------------------------------------------------------------------
async def test_search_filters_are_exact(store: PatternStore) -> None:
    shoes = "Running shoes and energy gels for a marathon"
    patterns = [
        pat(shoes, domain="ecommerce", entity="cart"),
        pat(shoes + ".", domain="ecommerce-eu", entity="cart"),
        pat(shoes + "!", domain="ecommerce", entity="cart_item"),
        pat(shoes + "?", domain="ecommerce", entity="order"),
        pat(shoes + " ", domain="ecommerce", entity="cart", collection=D),
    ]
    await store.upsert(patterns)
    for alpha in (0.0, 0.75, 1.0):
        hits = await store.search(
            P, "marathon running shoes", domain="ecommerce", entity="cart", alpha=alpha, top_k=10
        )
        assert ids(hits) == [patterns[0].with_id().id], alpha
        hits = await store.search(P, "marathon running shoes", domain="ecommerce", alpha=alpha)
        assert {h.pattern.entity for h in hits} == {"cart", "cart_item", "order"}, alpha
        assert {h.pattern.domain for h in hits} == {"ecommerce"}
        hits = await store.search(P, "marathon running shoes", alpha=alpha, top_k=10)
        assert len(hits) == 4 and {h.pattern.collection for h in hits} == {P}


async def test_search_ranks_by_meaning_when_no_word_matches(store: PatternStore) -> None:
    await store.upsert(CARTS)
    query = "gear for long-distance road racing"
    hits = await store.search(P, query, domain="ecommerce", entity="cart", alpha=0.75)
    assert hits and hits[0].pattern.scenario == "marathon_training"
    assert all(0.0 <= h.score <= 1.0 for h in hits)
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    # ...and on vectors alone; keywords alone find nothing to say about it
    assert (await store.search(P, query, alpha=1.0))[0].pattern.scenario == "marathon_training"
    assert await store.search(P, query, alpha=0.0) == []


async def test_keyword_leg_alone_ranks_by_words(store: PatternStore) -> None:
    await store.upsert(CARTS)
    hits = await store.search(P, "cast iron skillet", alpha=0.0)
    assert hits[0].pattern.scenario == "kitchen_upgrade"
    assert hits[0].score == pytest.approx(1.0)
    assert {h.pattern.scenario for h in hits} == {"kitchen_upgrade"}  # no word, no hit
    # query syntax in user text is just words
    for text in ('"skillet', "skillet AND NOT NEAR(", "cast-iron: skillet*", "-skillet"):
        hits = await store.search(P, text, alpha=0.0)
        assert hits and hits[0].pattern.scenario == "kitchen_upgrade", text
    assert await store.search(P, "the and of", alpha=0.0) == []  # stopwords only


async def test_a_payment_defect_query_returns_payment_defects_only(store: PatternStore) -> None:
    defects = [
        pat(
            "Zero amount payment captured for 0.00, below the minimum charge",
            entity="payment",
            collection=D,
            defect_type="zero_amount",
            severity="critical",
        ),
        pat(
            "Payment missing its required currency field",
            entity="payment",
            collection=D,
            defect_type="missing_required_field",
            severity="high",
        ),
        pat(
            "Cart line item with a negative quantity credits the customer",
            entity="cart",
            collection=D,
            defect_type="negative_quantity",
            severity="high",
        ),
        pat(
            "Order placed at midnight UTC lands on the wrong day",
            entity="order",
            collection=D,
            defect_type="timezone_midnight_utc",
            severity="high",
        ),
    ]
    await store.upsert([*defects, pat("Card payment captured at checkout", entity="payment")])
    hits = await store.search(D, "payment charged nothing at all", entity="payment", top_k=10)
    assert {h.pattern.entity for h in hits} == {"payment"}
    assert {h.pattern.collection for h in hits} == {D}
    assert len(hits) == 2
    assert hits[0].pattern.defect_type == "zero_amount"
    assert hits[0].pattern.severity == "critical"


async def test_top_k_bounds_the_hits(store: PatternStore) -> None:
    await store.upsert(CARTS)
    assert len(await store.search(P, "cart", top_k=2)) == 2
    assert len(await store.search(P, "cart", top_k=1, alpha=0.0)) == 1


# ---- usage, pruning, stats --------------------------------------------------------------
async def test_mark_used_raises_usage_count(store: PatternStore) -> None:
    await store.upsert(CARTS)
    a, b = CARTS[0].with_id().id, CARTS[1].with_id().id
    await store.mark_used(P, [a, b])
    await store.mark_used(P, [a, "no-such-id"])
    await store.mark_used(D, [a])  # another collection: untouched
    got = {p.id: p.usage_count for p in await store.get(P, [a, b, CARTS[2].with_id().id])}
    assert got == {a: 2, b: 1, CARTS[2].with_id().id: 0}


async def test_prune_drops_lowest_quality_then_least_used_then_oldest(
    store: PatternStore,
) -> None:
    t0 = datetime(2025, 1, 1, tzinfo=UTC)

    def cart(name: str, quality: float, days: int) -> Pattern:
        return pat(f"cart {name}", quality=quality, created_at=t0 + timedelta(days=days))

    best = cart("best", 0.9, 0)
    used_old = cart("used old", 0.5, 0)
    unused_new = cart("unused new", 0.5, 5)
    unused_old = cart("unused old", 0.5, 1)
    worst = cart("worst", 0.2, 9)
    other = pat("order elsewhere", entity="order", quality=0.1)
    await store.upsert([best, used_old, unused_new, unused_old, worst, other])
    await store.mark_used(P, [used_old.with_id().id])
    assert await store.prune(P, "ecommerce", "cart", keep=5) == 0
    assert await store.prune(P, "ecommerce", "cart", keep=4) == 1
    left = {p.description for p in await store.list_patterns(P, entity="cart")}
    assert left == {"cart best", "cart used old", "cart unused new", "cart unused old"}
    assert await store.prune(P, "ecommerce", "cart", keep=2) == 2
    left = {p.description for p in await store.list_patterns(P, entity="cart")}
    assert left == {"cart best", "cart used old"}
    assert await store.count(P, entity="order") == 1  # another scope is untouched
    assert await store.prune(P, "ecommerce", "cart", keep=0) == 2
    assert await store.count(P, entity="cart") == 0


async def test_stats_count_per_collection_domain_and_entity(store: PatternStore) -> None:
    await store.upsert([*CARTS[:2], pat("Zero amount payment", entity="payment", collection=D)])
    stats = await store.stats()
    assert stats.backend == store.backend
    assert stats.counts == {"patterns/ecommerce/cart": 2, "defects/ecommerce/payment": 1}
    assert stats.semantic is True
    assert (await store.health()).startswith("healthy")


async def test_the_shipped_seeds_load_and_answer(store: PatternStore) -> None:
    seeds = load_seeds()
    new, total = await seed_store(store, seeds)
    assert new == total == len(seeds)
    assert await seed_store(store, seeds) == (0, len(seeds))
    assert await store.count(P) == 20 and await store.count(D) == 10
    hits = await store.search(D, "a payment of 0.00", entity="payment")
    assert hits[0].pattern.defect_type == "zero_amount"
    hits = await store.search(P, "customer furious the parcel came late", entity="review")
    assert hits[0].pattern.scenario == "angry"


# ---- persistence and other instances ----------------------------------------------------
async def test_patterns_persist_across_reopen(store: PatternStore, backend: str) -> None:
    if backend not in REOPEN:
        pytest.skip(f"{backend} keeps nothing across instances")
    await store.upsert(CARTS)
    await store.mark_used(P, [CARTS[0].with_id().id])
    await store.aclose()
    async with REOPEN[backend](store) as again:
        assert await again.count(P) == 4
        hits = await again.search(P, "gear for long-distance road racing")
        assert hits[0].pattern.scenario == "marathon_training"
        assert hits[0].pattern.usage_count == 1


async def test_another_instance_sees_writes_and_deletes_without_restart(
    store: PatternStore, backend: str
) -> None:
    if backend not in REOPEN:
        pytest.skip(f"{backend} has no second instance on the same data")
    async with REOPEN[backend](store) as reader:
        await store.upsert(CARTS[1:])
        # the reader has searched (and so loaded what it holds) before the next write
        assert len(await reader.search(P, "running marathon", top_k=10)) == 3
        await store.upsert(CARTS[:1])
        hits = await reader.search(P, "gear for long-distance road racing", alpha=1.0)
        assert hits[0].pattern.scenario == "marathon_training"
        await store.delete(P, [CARTS[0].with_id().id])
        hits = await reader.search(P, "gear for long-distance road racing", alpha=1.0)
        assert "marathon_training" not in {h.pattern.scenario for h in hits}
        assert len(hits) == 3
        await store.upsert([CARTS[0].model_copy(update={"description": "Trail hiking boots"})])
        hits = await reader.search(P, "boots for a mountain hike", alpha=1.0, top_k=1)
        assert hits[0].pattern.id == CARTS[0].with_id().id


# ---- without the embedding model --------------------------------------------------------
async def test_keyword_only_mode_still_searches_and_says_degraded(
    backend: str, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(embedding, "model_dir", lambda: None)
    async with BACKENDS[backend](request) as store:
        await store.upsert(CARTS)
        health = await store.health()
        assert health.startswith("degraded: keywords only"), health
        assert "no embedding model installed" in health
        assert (await store.stats()).semantic is False
        for alpha in (0.0, 0.75, 1.0):  # any alpha: the keyword leg carries it
            hits = await store.search(P, "cast iron skillet", alpha=alpha)
            assert hits and hits[0].pattern.scenario == "kitchen_upgrade", alpha
        assert await store.search(P, "gear for long-distance road racing") == []


# ---- tenants ----------------------------------------------------------------------------
async def test_a_tenant_retrieves_its_own_learned_patterns_and_shared_ones_only(
    store: PatternStore,
) -> None:
    """Seen: any caller could seed the patterns other callers' RAG requests received."""
    shared = pat("Marathon runner cart: shoes and gels, shared by everyone")
    mine = pat("Marathon runner cart: shoes and gels, learned by team-a", tenant="team-a")
    theirs = pat("Marathon runner cart: shoes and gels, learned by team-b", tenant="team-b")
    await store.upsert([shared, mine, theirs])
    for alpha in (0.0, 0.5, 1.0):  # keywords, both, meaning: every leg is scoped
        got = await store.search(P, "marathon runner shoes", top_k=10, alpha=alpha, tenant="team-a")
        assert {h.pattern.description for h in got} == {shared.description, mine.description}
        assert {h.pattern.tenant for h in got} == {"", "team-a"}
        other = await store.search(P, "marathon runner shoes", top_k=10, alpha=alpha, tenant="c")
        assert [h.pattern.description for h in other] == [shared.description]
    everyone = await store.search(P, "marathon runner shoes", top_k=10)
    assert len(everyone) == 3  # operators see all


async def test_two_tenants_learning_the_same_records_keep_two_patterns(
    store: PatternStore,
) -> None:
    records = [{"_index": 0, "_scenario": "default", "n": 1}]
    a = pat("same records", records=records, tenant="team-a").with_id()
    b = pat("same records", records=records, tenant="team-b").with_id()
    assert a.id != b.id
    assert await store.upsert([a, b]) == 2


async def test_prune_keeps_each_tenant_within_bounds_alone(store: PatternStore) -> None:
    """One tenant's learning never evicts another's patterns, nor the shared ones."""
    await store.upsert(
        [pat(f"shared {i}", quality=0.1) for i in range(2)]
        + [pat(f"team-b {i}", tenant="team-b", quality=0.1) for i in range(2)]
        + [pat(f"team-a {i}", tenant="team-a", quality=0.9) for i in range(5)]
    )
    assert await store.prune(P, "ecommerce", "cart", keep=3, tenant="team-a") == 2
    left = await store.list_patterns(P, limit=100)
    assert sorted(p.tenant for p in left) == ["", "", *["team-a"] * 3, "team-b", "team-b"]
