"""Router service: requests topic -> one path topic, with the routing decision attached.

It is also the ingress for agents that publish straight to Kafka, so it fixes what makes
a request reproducible (services.core.reproducible): a missing request_id and seed are
derived from the record itself (its key or bytes), and a missing anchor is DEFAULT_ANCHOR
when the caller gave a seed, else the record's timestamp, which a replay sees again.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from functools import partial

from services.core.admission import Planner
from services.core.errors import RequestInvalid
from services.core.models import GenerateRequest, GenerationPath, OutputFormat
from services.core.registry import SchemaRegistry
from services.core.report import ErrorKind
from services.core.reproducible import derive_request_id, pin_logged
from services.core.routing import route
from services.kit.ops import metrics
from services.kit.runtime.control import deadline_passed
from services.kit.runtime.replies import answer_failure, reply_headers, send_failure
from services.kit.runtime.stream import Message, Runtime, Subscriber
from services.kit.wire.errors import DecodeError
from services.kit.wire.headers import CONTENT_TYPE, ROUTED
from services.kit.wire.messages import RoutedRequest
from services.patterns.scope import Scope, scope_of

log = logging.getLogger("testdata.router")
NAME = "router"

Availability = Callable[[], Mapping[GenerationPath, str | None]]
PatternGap = Callable[[Scope], str | None]  # why the store cannot serve a scope, or None


def stamp(req: GenerateRequest, msg: Message) -> GenerateRequest:
    """Fill what the caller left out so the logged request fully determines the data."""
    rid = req.request_id or msg.key_text or derive_request_id(msg.value, msg.timestamp_ms)
    return pin_logged(req, rid, msg.timestamp_ms)


class RouterService:
    def __init__(
        self,
        runtime: Runtime,
        registry: SchemaRegistry,
        availability: Availability,
        pattern_gap: PatternGap | None = None,
    ):
        self.rt = runtime
        self.registry = registry
        self.availability = availability
        self.pattern_gap = pattern_gap
        s = runtime.settings
        self.planner = Planner(registry, s.limits)
        self._entities = set(registry.names())
        self._domains = {e.domain for e in registry.list()}

    def subscriber(self) -> Subscriber:
        return Subscriber(
            self.rt,
            NAME,
            [self.rt.topics.requests],
            f"{self.rt.topics.requests}.{NAME}",
            self.handle,
            answer=partial(answer_failure, self.rt),
        )

    async def handle(self, msg: Message) -> None:
        try:
            req = self.rt.codec.decode_request(msg.value, msg.header(CONTENT_TYPE))
        except DecodeError as exc:
            rid = exc.request_id or msg.key_text
            await self.reject(msg, exc.kind, exc.reason, exc.errors, rid)
            return
        req = stamp(req, msg)
        if (deadline := deadline_passed(msg)) is not None:
            metrics.ABANDONED.labels(NAME, ErrorKind.EXPIRED.value).inc()
            await send_failure(
                self.rt,
                msg,
                req.request_id,
                f"deadline passed ({deadline} ms since epoch) before routing",
                ErrorKind.EXPIRED,
                fmt=req.output_format,
            )
            return
        try:
            plan = self.planner.plan(req)
        except RequestInvalid as exc:
            await self.reject(
                msg,
                ErrorKind.INVALID_REQUEST,
                f"invalid request: {exc}",
                exc.errors,
                req.request_id,
                req,
            )
            return
        gap = self.pattern_gap
        decision = route(
            req,
            self.availability(),
            (lambda: gap(scope_of(req, plan.schema))) if gap is not None else None,
        )
        for fb in decision.fallbacks:
            metrics.FALLBACKS.labels(fb.source, fb.target, "unavailable").inc()
        routed = RoutedRequest(request=req, routing=decision, received_at_ms=msg.timestamp_ms)
        await self.rt.publish(
            self.rt.topics.path(decision.path),
            self.rt.codec.encode_routed(routed),
            req.request_id,
            reply_headers(msg, ROUTED),
        )
        log.debug(  # per request: the metrics and the answer's metadata say it at load
            "routed %s -> %s (%.2f): %s",
            req.request_id,
            decision.path.value,
            decision.confidence,
            decision.reason,
        )

    async def reject(
        self,
        msg: Message,
        kind: ErrorKind,
        reason: str,
        errors: list | None,
        request_id: str | None,
        req: GenerateRequest | None = None,
    ) -> None:
        await self.rt.dead_letter(msg, NAME, kind, reason, errors, request_id)
        # labels from known names only: a rejected request's are whatever its sender wrote
        domain = metrics.known(req.domain, self._domains) if req else ""
        entity = metrics.known(req.entity, self._entities) if req else ""
        if kind == ErrorKind.INVALID_REQUEST:
            metrics.VALIDATION_ERRORS.labels(domain, entity).inc()
        if request_id:
            await send_failure(
                self.rt,
                msg,
                request_id,
                reason,
                kind,
                errors,
                fmt=req.output_format if req else OutputFormat.JSON,
            )
        metrics.REQUESTS.labels("none", domain, entity, "rejected").inc()
