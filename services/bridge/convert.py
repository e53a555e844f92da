"""Proto messages <-> the typed models the pipeline carries.

Converting a request is the first check of caller input: whatever the proto's types let
through but the models cannot hold (an unknown enum number, a NaN bound, an anchor that is
no timestamp) becomes a RequestInvalid naming the field, never an exception of its own.
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from services.core.errors import RequestInvalid
from services.core.models import (
    Constraints,
    FieldConstraint,
    FieldError,
    GenerateRequest,
    OutputFormat,
    RequestField,
    Scenario,
    Schema,
)
from services.core.reproducible import parse_anchor
from services.kit.wire.messages import GenerationMetadata, ResultChunk
from services.proto.testdata.v1 import test_data_pb2 as pb

_OPTIONAL = ("min", "max", "regex", "min_length", "max_length", "format")


def _field(f: Any, path: str, errs: list[FieldError]) -> RequestField:
    try:
        ftype = pb.FieldType.Name(f.type)
    except ValueError:
        errs.append(
            FieldError(path=f"{path}.type", message=f"unknown FieldType {f.type}", value=f.type)
        )
        ftype = "STRING"
    return RequestField(
        name=f.name,
        type=ftype,
        required=f.required,
        description=f.description,
        nested_fields=[
            _field(n, f"{path}.nested_fields[{i}]", errs) for i, n in enumerate(f.nested_fields)
        ],
    )


def _constraint(c: Any, path: str, errs: list[FieldError]) -> FieldConstraint:
    values = {k: getattr(c, k) for k in _OPTIONAL if c.HasField(k)}
    for bound in ("min", "max"):
        if bound in values and not math.isfinite(values[bound]):
            errs.append(
                FieldError(
                    path=f"constraints.field_constraints[{path}].{bound}",
                    message="must be a finite number",
                    value=str(values.pop(bound)),
                )
            )
    return FieldConstraint(enum_values=list(c.enum_values), **values)


def request_from_proto(m: pb.GenerateRequest) -> GenerateRequest:
    """The pipeline's request; RequestInvalid for what the proto types cannot rule out."""
    errs: list[FieldError] = []
    fields = [_field(f, f"schema.fields[{i}]", errs) for i, f in enumerate(m.schema.fields)]
    constraints = {
        path: _constraint(c, path, errs) for path, c in m.constraints.field_constraints.items()
    }
    try:
        fmt = pb.OutputFormat.Name(m.output_format)
    except ValueError:
        errs.append(
            FieldError(
                path="output_format",
                message=f"unknown OutputFormat {m.output_format}",
                value=m.output_format,
            )
        )
        fmt = "JSON"
    anchor = None
    if m.anchor:
        try:
            anchor = parse_anchor(m.anchor)
        except ValueError:
            errs.append(
                FieldError(path="anchor", message="not an RFC 3339 instant", value=m.anchor)
            )
    if errs:
        raise RequestInvalid(errs)
    try:
        return _request(m, fields, constraints, fmt, anchor)
    except ValidationError as exc:  # a value the models refuse: name its field
        raise RequestInvalid(
            [
                FieldError(path=".".join(str(p) for p in e["loc"]), message=e["msg"])
                for e in exc.errors()
            ]
        ) from exc


def _request(
    m: pb.GenerateRequest,
    fields: list[RequestField],
    constraints: dict[str, FieldConstraint],
    fmt: str,
    anchor: datetime | None,
) -> GenerateRequest:
    return GenerateRequest(
        request_id=m.request_id,
        domain=m.domain,
        entity=m.entity,
        schema=Schema(fields=fields, predefined_schema=m.schema.predefined_schema),
        constraints=Constraints(field_constraints=constraints),
        scenarios=[
            Scenario(
                name=s.name, count=s.count, overrides=dict(s.overrides), description=s.description
            )
            for s in m.scenarios
        ],
        context=m.context,
        hints=list(m.hints),
        output_format=OutputFormat(fmt),
        count=m.count,
        use_cache=m.use_cache,
        learn_from_history=m.learn_from_history,
        defect_triggering=m.defect_triggering,
        production_like=m.production_like,
        seed=m.seed if m.HasField("seed") else None,
        anchor=anchor,
    )


def metadata_to_proto(md: GenerationMetadata | None) -> pb.GenerationMetadata | None:
    if md is None:
        return None
    return pb.GenerationMetadata(
        generation_path=md.generation_path,
        llm_tokens_used=md.llm_tokens_used,
        generation_time_ms=md.generation_time_ms,
        coherence_score=md.coherence_score or 0.0,
        scenario_counts=md.scenario_counts,
        routing_reason=md.routing_reason,
        routing_confidence=md.routing_confidence,
        requested_path=md.requested_path,
        fallbacks=[str(f) for f in md.fallbacks],
        generator_version=md.generator_version,
        seed=md.seed,
        anchor=md.anchor,
        record_count=md.record_count,
        backend=md.backend,
        retries=md.retries,
        rag_examples_used=md.rag_examples_used,
        pattern_ids=md.pattern_ids,
        understood=[
            pb.Interpretation(phrase=u.phrase, meaning=u.meaning, scope=u.scope)
            for u in md.understood
        ],
        not_understood=md.not_understood,
        contradictions=md.contradictions,
        themes=md.themes,
        coherence_status=md.coherence_status,
        edge_case_counts=md.edge_case_counts,
        cache_hit=md.cache_hit,
        replay_of=md.replay_of,
        fingerprint=md.fingerprint,
        data_sha256=md.data_sha256,
    )


def chunk_to_proto(c: ResultChunk) -> pb.DataChunk:
    return pb.DataChunk(
        request_id=c.request_id,
        data=c.data,
        chunk_index=c.chunk_index,
        is_final=c.is_final,
        success=c.success,
        error=c.error,
        metadata=metadata_to_proto(c.metadata),
        record_count=c.record_count,
    )
