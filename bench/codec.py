"""Avro library choice, by measurement: fastavro vs the reference `avro` package."""

from __future__ import annotations

import io
import json
import time

import avro.io
import avro.schema

from services.core.formats import encode_all
from services.core.generate import generate_records
from services.core.models import GenerateRequest
from services.core.plan import build_plan
from services.core.registry import SchemaRegistry
from services.kit.wire.codec import SCHEMAS_DIR, get_codec
from services.kit.wire.messages import ResultChunk


def _rate(fn, n: int) -> float:
    t = time.perf_counter()
    for _ in range(n):
        fn()
    return n / (time.perf_counter() - t)


def run() -> dict[str, float]:
    codec = get_codec()
    reg = SchemaRegistry.load()
    req = GenerateRequest.model_validate(
        {
            "request_id": "r",
            "entity": "cart",
            "count": 50,
            "seed": 1,
            "hints": ["coherent"],
            "scenarios": [
                {"name": "a", "count": 40},
                {"name": "b", "count": 10, "overrides": {"currency": "CAD"}},
            ],
        }
    )
    plan = build_plan(req, reg)
    data = encode_all(plan.schema, plan.request.output_format, generate_records(plan, 0, 50) * 20)
    chunk = ResultChunk(
        request_id="r", chunk_index=0, is_final=False, data=data, record_count=1000
    ).model_dump(mode="json")
    req_dict = req.model_dump(mode="json", by_alias=True)
    ref_req = avro.schema.parse((SCHEMAS_DIR / "avro" / "generate_request.avsc").read_text())
    named = avro.schema.Names()
    chunk_schema = json.loads((SCHEMAS_DIR / "avro" / "result_chunk.avsc").read_text())
    # the reference library needs the referenced OutputFormat enum inline
    req_fields = json.loads((SCHEMAS_DIR / "avro" / "generate_request.avsc").read_text())["fields"]
    fmt_type = next(f["type"] for f in req_fields if f["name"] == "output_format")
    next(f for f in chunk_schema["fields"] if f["name"] == "output_format")["type"] = fmt_type
    ref_chunk = avro.schema.make_avsc_object(chunk_schema, named)

    def ref_encode(schema, datum):
        buf = io.BytesIO()
        avro.io.DatumWriter(schema).write(datum, avro.io.BinaryEncoder(buf))
        return buf.getvalue()

    def ref_decode(schema, raw):
        return avro.io.DatumReader(schema).read(avro.io.BinaryDecoder(io.BytesIO(raw)))

    raw_req = ref_encode(ref_req, req_dict)
    raw_chunk = ref_encode(ref_chunk, chunk)
    fast_req = codec.encode("generate_request", req_dict)
    fast_chunk = codec.encode("result_chunk", chunk)
    out = {
        "fastavro_req_enc": _rate(lambda: codec.encode("generate_request", req_dict), 5000),
        "fastavro_req_dec": _rate(lambda: codec.decode("generate_request", fast_req), 5000),
        "avro_req_enc": _rate(lambda: ref_encode(ref_req, req_dict), 1000),
        "avro_req_dec": _rate(lambda: ref_decode(ref_req, raw_req), 1000),
        "fastavro_chunk_enc": _rate(lambda: codec.encode("result_chunk", chunk), 500),
        "fastavro_chunk_dec": _rate(lambda: codec.decode("result_chunk", fast_chunk), 500),
        "avro_chunk_enc": _rate(lambda: ref_encode(ref_chunk, chunk), 100),
        "avro_chunk_dec": _rate(lambda: ref_decode(ref_chunk, raw_chunk), 100),
    }
    print(
        f"avro libraries (ops/s; request with 2 scenarios, chunk of 1,000 carts "
        f"= {len(data) / 1e6:.2f} MB):"
    )
    for what in ("req_enc", "req_dec", "chunk_enc", "chunk_dec"):
        f, a = out[f"fastavro_{what}"], out[f"avro_{what}"]
        print(f"  {what:<10} fastavro {f:>10,.0f}   avro {a:>9,.0f}   ({f / a:,.0f}x)")
    return out


if __name__ == "__main__":
    run()
