"""`testdata replay`: regenerate logged requests through the pipeline, and verify them.

Each selected request is published again under a fresh id (`<id>~replay-<run>`) that
points back to the original (`replay_of`, reported in the metadata), with the original's
seed and anchor, so a deterministic path regenerates the same bytes, and as the original's
tenant: vouched for again under the new id with the signing key (kit/tenancy.py), so a
replay of a tenant's request is that tenant's (its cache scope, its result chunks' tenant);
without the key the services take it as `local`. `--verify` compares
the digest of the regenerated dataset with the original's (from the results log) and,
where they differ, says why: another generator_version, a path that is not deterministic
(a model wrote the records), a pattern store that changed, another path taken.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from services.client import GenerationFailed, KafkaTestDataClient
from services.core.formats import DatasetDigest
from services.core.models import GenerateRequest, traits_of
from services.core.pools import GENERATOR_VERSION
from services.core.reproducible import parse_anchor
from services.datasets.log import LoggedDataset, LoggedRequest, dataset_of
from services.kit.wire.messages import GenerationMetadata


@dataclass
class Verdict:
    original: str
    replay: str
    path: str
    status: str  # identical | differs | regenerated | unverifiable | failed
    reason: str = ""
    records: int = 0

    @property
    def ok(self) -> bool:
        return self.status in ("identical", "regenerated")


def explain(orig: GenerationMetadata, new: GenerationMetadata) -> str:
    """Why two runs of one request may give different bytes ("" when nothing explains it)."""
    if orig.generator_version and orig.generator_version != new.generator_version:
        return f"generator_version changed: {orig.generator_version} -> {new.generator_version}"
    if orig.generation_path != new.generation_path:
        return f"served by {new.generation_path} now, by {orig.generation_path} then"
    traits = traits_of(orig.generation_path)
    if traits is not None and traits.model_written:
        return f"path {orig.generation_path} is not deterministic (a model wrote the records)"
    if traits is not None and traits.uses_patterns and orig.pattern_ids != new.pattern_ids:
        return "the pattern store changed: other patterns were retrieved"
    return ""


def replay_request(
    logged: LoggedRequest, run: str, original: LoggedDataset | None
) -> GenerateRequest:
    """The request to publish: a fresh id, the original's seed and anchor."""
    req = logged.request
    md = original.final.metadata if original and original.final else None
    update: dict[str, object] = {
        "request_id": f"{req.request_id}~replay-{run}",
        "replay_of": req.request_id,
    }
    if md is not None and md.seed:
        update["seed"] = md.seed
    if md is not None and md.anchor:
        update["anchor"] = parse_anchor(md.anchor)
    return req.model_copy(update=update)


async def replay(
    client: KafkaTestDataClient,
    requests: list[LoggedRequest],
    originals: dict[str, LoggedDataset],
    *,
    verify: bool,
    concurrency: int = 8,
    progress: Callable[[int], None] | None = None,
) -> list[Verdict]:
    run = uuid.uuid4().hex[:8]
    gate = asyncio.Semaphore(concurrency)

    async def one(logged: LoggedRequest) -> Verdict:
        original = dataset_of(originals, logged)
        req = replay_request(logged, run, original)
        async with gate:
            digest = DatasetDigest(req.output_format)
            records, md = 0, None
            try:
                async for chunk in client.stream(req, tenant=logged.tenant):
                    digest.update(chunk.data)
                    records += chunk.record_count
                    md = chunk.metadata or md
            except GenerationFailed as exc:
                return Verdict(logged.request.request_id, req.request_id, "", "failed", str(exc))
            finally:
                if progress:
                    progress(1)
        new = md or GenerationMetadata()
        v = Verdict(
            logged.request.request_id,
            req.request_id,
            new.generation_path,
            "regenerated",
            "",
            records,
        )
        if not verify:
            return v
        orig = original.final if original else None
        if orig is None or orig.metadata is None or not orig.metadata.data_sha256:
            v.status, v.reason = "unverifiable", "the results log holds no digest of the original"
        elif not orig.success:
            v.status, v.reason = "unverifiable", f"the original failed: {orig.error}"
        elif orig.metadata.data_sha256 == digest.hexdigest():
            v.status = "identical"
        else:
            v.status = "differs"
            v.reason = explain(orig.metadata, new) or (
                f"UNEXPLAINED: path {new.generation_path} on {GENERATOR_VERSION} should "
                "regenerate the same bytes"
            )
        return v

    return list(await asyncio.gather(*(one(r) for r in requests)))


def summary(verdicts: list[Verdict]) -> str:
    """A table: counts by status and path, then every dataset that is not identical."""
    lines = [f"{'status':<13} {'path':<12} {'datasets':>9} {'records':>10}"]
    by: Counter[tuple[str, str]] = Counter()
    recs: Counter[tuple[str, str]] = Counter()
    for v in verdicts:
        by[(v.status, v.path or "-")] += 1
        recs[(v.status, v.path or "-")] += v.records
    for (status, path), n in sorted(by.items()):
        lines.append(f"{status:<13} {path:<12} {n:>9,} {recs[(status, path)]:>10,}")
    for v in verdicts:
        if v.status not in ("identical", "regenerated"):
            lines.append(f"  {v.original} -> {v.replay}: {v.status}: {v.reason}")
    return "\n".join(lines)
