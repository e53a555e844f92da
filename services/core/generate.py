"""Record generation: a pure function of (plan, index).

The RNG is seeded from the plan's base seed once per block of BLOCK records (seeding
costs more than generating a record); a range that starts inside a block replays the
block from its start. So records never depend on how a request is chunked, and chunked
generation of N records equals one-shot generation of N, in any process.

`iter_records` yields them one at a time, so a caller can cut a range into slices of any
size (e.g. by time) without replaying blocks; `should_stop` lets it end a long range early
(a budget it owns: core reads no clock).
"""

from __future__ import annotations

import copy
import random
from collections.abc import Callable, Iterator
from typing import Any

from services.core import edgecases
from services.core.entities import lookup
from services.core.errors import GenerationStopped
from services.core.plan import Plan, Slot
from services.core.pools import get_pools
from services.core.values import Ctx, gen_field, gen_object

_GOLDEN = 0x9E3779B97F4A7C15
_MASK = (1 << 64) - 1
BLOCK = 16
_EDGE_SALT = 0xED6E  # an edge record's own RNG, apart from the block's


def block_seed(plan: Plan, block: int) -> int:
    return (plan.base_seed ^ ((block + 1) * _GOLDEN)) & _MASK


def set_path(obj: Any, path: str, value: Any) -> None:
    """Set a dotted path; through arrays it applies to every element. Values of the wrong
    shape on the way (model output may have them) are left for the validator to report.
    Object and array values are copied: records must never share mutable parts."""
    head, _, rest = path.partition(".")
    if isinstance(obj, list):
        for item in obj:
            set_path(item, path, value)
    elif not isinstance(obj, dict):
        return
    elif not rest:
        obj[head] = copy.deepcopy(value) if isinstance(value, dict | list) else value
    elif obj.get(head) is not None:
        set_path(obj[head], rest, value)


def _regen_path(ctx: Ctx, plan: Plan, obj: Any, path: str, full: str) -> None:
    head, _, rest = path.partition(".")
    if isinstance(obj, list):
        for item in obj:
            _regen_path(ctx, plan, item, path, full)
    elif not rest:
        f = lookup(plan.schema.fields, full)
        if f is not None and obj.get(head) is not None:
            obj[head] = gen_field(ctx, f)
    elif obj.get(head) is not None:
        _regen_path(ctx, plan, obj[head], rest, full)


META_KEYS = ("_index", "_scenario")


def finalize(
    plan: Plan, index: int, body: dict[str, Any], slot: Slot | None = None
) -> dict[str, Any]:
    """The one last step of every record, whichever path produced `body`: our `_index`
    and `_scenario` (never the producer's), the scenario's overrides, and the money
    re-derived where overrides touched a basket. `body` holds no meta keys."""
    slot = slot or plan.slot_for(index)
    rec: dict[str, Any] = {"_index": index, "_scenario": slot.name}
    rec.update(body)
    if slot.overrides:
        for path, value in slot.overrides.items():
            set_path(rec, path, value)
        if plan.composer is not None:
            plan.composer.reconcile(rec, slot.overrides)
    return rec


def iter_records(
    plan: Plan, start: int, stop: int, should_stop: Callable[[], bool] | None = None
) -> Iterator[dict[str, Any]]:
    """Records [start, stop) of the plan, lazily; identical however the range is split.

    `should_stop` is asked before every block of BLOCK records (so at most BLOCK records
    after it would have said yes); GenerationStopped is raised when it answers True.
    """
    if start >= stop:
        return
    pools = get_pools()
    rng = random.Random()
    ctx = Ctx(rng, plan.anchor, pools)
    first = start - start % BLOCK
    slot = plan.slot_for(first)
    composer, fields = _use_slot(plan, ctx, slot)
    for i in range(first, stop):
        if i % BLOCK == 0:
            if should_stop is not None and should_stop():
                raise GenerationStopped(f"stopped before record {max(i, start)}")
            rng.seed(block_seed(plan, i // BLOCK))
        if i >= slot.stop:
            slot = plan.slot_for(i)
            composer, fields = _use_slot(plan, ctx, slot)
        body = composer(ctx) if composer is not None else gen_object(ctx, fields)
        for path in plan.enforce:
            _regen_path(ctx, plan, body, path, path)
        if i < start:
            continue  # replayed only to reach `start` with the block's RNG state
        rec = finalize(plan, i, body, slot)
        if plan.edges and (ep := plan.edges.get(slot.name)) is not None:
            seed = block_seed(plan, i) ^ _EDGE_SALT
            rec = edgecases.apply(ep, i - slot.start, rec, fields, seed, plan.anchor)
        yield rec


def _use_slot(plan: Plan, ctx: Ctx, slot: Slot) -> tuple[Any, list[Any]]:
    """The composer and fields for a scenario's records, and what they draw from."""
    occasions = plan.occasions.get(slot.name)
    if occasions:
        ctx.occasions = occasions
        ctx.products = tuple(p for o in occasions for p in o.products)
    else:
        ctx.occasions = ctx.pools.occasions
        ctx.products = ctx.pools.all_products
    return (
        plan.composers.get(slot.name, plan.composer),
        plan.fields_by_slot.get(slot.name, plan.schema.fields),
    )


def generate_records(
    plan: Plan, start: int, stop: int, should_stop: Callable[[], bool] | None = None
) -> list[dict[str, Any]]:
    """Records [start, stop) of the plan; identical however the range is split."""
    return list(iter_records(plan, start, stop, should_stop))


def iter_batches(plan: Plan, size: int, start: int = 0) -> Iterator[list[dict[str, Any]]]:
    """Consecutive batches of at most `size` records, in index order."""
    for lo in range(start, plan.count, size):
        yield generate_records(plan, lo, min(lo + size, plan.count))
