"""Admitting a request: pin what its caller left open, then plan it (checked and bounded).

Every ingress admits the same way. The gRPC bridge admits a call before publishing it (a
bad request is refused with every problem, never logged); the router admits what arrives
on the requests topic (agents publish there directly: it trusts no one's check); a path
plans the routed request it generates. Planning a request's words and scenarios is the
costly part, and it depends only on the request's shape, not on its id, seed or anchor:
a `Planner` keeps recent plans by shape, so a process plans each shape once, and a
request of a known shape is only bound to its own id, seed and anchor. A hit is checked
as a miss would be (its own id, seed and anchor against the bounds) and makes the same
plan a fresh `build_plan` makes (tests/core/test_admission.py holds it to that).
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass, replace
from datetime import datetime

import orjson

from services.core.bounds import check_request
from services.core.limits import Limits
from services.core.models import GenerateRequest
from services.core.plan import Plan, base_seed, build_plan, seed_and_anchor
from services.core.registry import SchemaRegistry
from services.core.reproducible import pin

#: Plans one process keeps (a plan of a predefined entity is a few kB).
PLANS_KEPT = 256
#: What a plan does not depend on: bound per request after a hit.
PER_REQUEST = frozenset({"request_id", "seed", "anchor"})


@dataclass(frozen=True)
class Admitted:
    """A request as its caller sent it (the result cache's and idempotency's key), as
    pinned (what is logged and generated), and its plan."""

    asked: GenerateRequest
    request: GenerateRequest
    plan: Plan


def shape_of(req: GenerateRequest) -> bytes:
    """A digest of everything a plan depends on: the request but its id, seed and anchor."""
    body = req.model_dump(mode="json", by_alias=True, exclude=set(PER_REQUEST))
    return hashlib.sha256(orjson.dumps(body, option=orjson.OPT_SORT_KEYS)).digest()


class Planner:
    """`build_plan` with the plans of recent request shapes kept (least recently used
    out). Counts its hits and misses, which `make bench` reports."""

    def __init__(self, registry: SchemaRegistry, limits: Limits, kept: int = PLANS_KEPT):
        self.registry, self.limits, self.kept = registry, limits, kept
        self._plans: OrderedDict[bytes, Plan] = OrderedDict()
        self.hits = self.misses = 0

    def plan(self, req: GenerateRequest) -> Plan:
        """The plan of `req`, or RequestInvalid with every problem (as `build_plan`)."""
        shape = shape_of(req)
        known = self._plans.get(shape)
        if known is None or check_request(req, self.limits).errors:
            self.misses += 1  # new, or its own id, seed or anchor is refused: plan it whole
            plan = build_plan(req, self.registry, self.limits)
            self._keep(shape, plan)
            return plan
        self.hits += 1
        self._plans.move_to_end(shape)
        return bound(known, req)

    def _keep(self, shape: bytes, plan: Plan) -> None:
        self._plans[shape] = plan
        self._plans.move_to_end(shape)
        while len(self._plans) > self.kept:
            self._plans.popitem(last=False)


def bound(plan: Plan, req: GenerateRequest) -> Plan:
    """`plan` (made for a request of the same shape) for `req`: its id, seed and anchor."""
    seed, anchor = seed_and_anchor(req)
    return replace(plan, request=req, seed=seed, anchor=anchor, base_seed=base_seed(req, seed))


def admit(
    asked: GenerateRequest, planner: Planner, *, request_id: str, seed: int, now: datetime
) -> Admitted:
    """`asked` pinned (what its caller left open filled in) and planned; RequestInvalid
    lists every problem."""
    req = pin(asked, request_id=request_id, seed=seed, now=now)
    return Admitted(asked, req, planner.plan(req))
