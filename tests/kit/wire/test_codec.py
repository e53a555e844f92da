import io
import json
from pathlib import Path

import avro.io
import avro.schema
import fastavro
import pytest

from services.core.models import GenerateRequest
from services.core.report import ErrorKind, Fallback
from services.core.routing import RoutingDecision
from services.kit.wire.codec import AVRO, JSON, MAGIC, SCHEMA_FILES, Codec, _fingerprint, crc64_avro
from services.kit.wire.errors import DecodeError
from services.kit.wire.messages import (
    Control,
    DeadLetter,
    DeliveryMarker,
    ErrorDetail,
    GenerationMetadata,
    Outcome,
    OutcomeScenario,
    ResultChunk,
    RoutedRequest,
)
from tests.support import HANG_GUARD_S

AVRO_DIR = Path(__file__).resolve().parents[3] / "schemas" / "avro"

FULL = GenerateRequest.model_validate(
    {
        "request_id": "r-1",
        "domain": "ecommerce",
        "entity": "cart",
        "count": 5,
        "seed": 9,
        "anchor": "2026-01-02T03:04:05Z",
        "hints": ["coherent"],
        "context": "marathon runners",
        "output_format": "SQL",
        "learn_from_history": True,
        "schema": {
            "fields": [
                {
                    "name": "a",
                    "type": "OBJECT",
                    "nested_fields": [
                        {
                            "name": "b",
                            "type": "ARRAY",
                            "nested_fields": [{"name": "c", "type": "INTEGER"}],
                        }
                    ],
                }
            ]
        },
        "constraints": {"field_constraints": {"a.b.c": {"min": 1, "max": 3, "regex": None}}},
        "scenarios": [{"name": "happy", "count": 5, "overrides": {"x": "1"}, "description": "d"}],
    }
)


@pytest.fixture(scope="module")
def codec():
    return Codec()


def test_request_round_trip_is_lossless(codec):
    value = codec.encode_request(FULL)
    assert value[:2] == MAGIC
    assert codec.decode_request(value, AVRO) == FULL
    assert codec.decode_request(value, None) == FULL  # framing detected without header


def test_json_request_validated_by_the_same_model(codec):
    body = FULL.model_dump_json(by_alias=True).encode()
    assert codec.decode_request(body, JSON) == FULL
    with pytest.raises(DecodeError) as exc:
        codec.decode_request(b'{"request_id": "x", "count": "many", "hints": 3}', JSON)
    assert exc.value.kind == "invalid_request"
    assert exc.value.request_id == "x"
    assert {e.path for e in exc.value.errors} == {"count", "hints"}


@pytest.mark.parametrize(
    "garbage", [b"\x00\x01garbage", b"", b"\xc3\x01" + b"\x00" * 8 + b"x", b"{not json"]
)
def test_garbage_is_a_decode_error(codec, garbage):
    with pytest.raises(DecodeError) as exc:
        codec.decode_request(garbage, None)
    assert exc.value.kind in ("decode", "unknown_schema")


def test_a_chunk_is_not_a_request(codec):
    chunk = codec.encode_chunk(ResultChunk(request_id="r", chunk_index=0, is_final=True))
    with pytest.raises(DecodeError, match=r"expected testdata\.v1\.GenerateRequest"):
        codec.decode_request(chunk, AVRO)


def test_all_messages_round_trip(codec):
    routed = RoutedRequest(
        request=FULL,
        routing=RoutingDecision(
            path="traditional",
            reason="r",
            confidence=0.9,
            requested_path="llm",
            fallbacks=[Fallback(source="llm", target="traditional", reason="x")],
        ),
        received_at_ms=123,
    )
    assert codec.decode_routed(codec.encode_routed(routed)) == routed
    chunk = ResultChunk(
        request_id="r",
        chunk_index=3,
        is_final=True,
        success=False,
        error="e",
        error_kind=ErrorKind.GENERATION,
        error_details=[ErrorDetail(path="count", message="m")],
        data="[]",
        output_format="CSV",
        metadata=GenerationMetadata(
            generation_path="llm",
            coherence_score=0.93,
            scenario_counts={"a": 2},
            seed=-5,
            fallbacks=[Fallback(source="claude", target="openai_compat", reason="401")],
            rag_examples_used=12,
            pattern_ids=["p1", "p2"],
        ),
    )
    assert codec.decode_chunk(codec.encode_chunk(chunk)) == chunk
    dead = DeadLetter(
        reason="bad",
        error_type="decode",
        consumer="router",
        original_topic="t",
        original_partition=1,
        original_offset=2,
        original_timestamp_ms=3,
        original_key=None,
        original_value=b"\x00\xff",
        original_headers=[{"key": "k", "value": b"v"}],
        failed_at_ms=4,
    )
    assert codec.decode_dead_letter(codec.encode_dead_letter(dead)) == dead
    marker = DeliveryMarker(
        group="g",
        topic="t",
        partition=3,
        offset=2**40,
        attempt=2,
        request_id="r",
        correlation_id="c",
        instance="testdata@host:1",
        at_ms=5,
    )
    assert codec.decode_delivery(codec.encode_delivery(marker)) == marker


def test_outcome_round_trips(codec):
    outcome = Outcome(
        request_id="r",
        fingerprint="ab" * 32,
        path="traditional",
        domain="ecommerce",
        entity="cart",
        scenarios=[OutcomeScenario(name="late", description="delivered late", count=3)],
        context="marathon runners",
        hints=["coherent", "no_learn"],
        seed=-3,
        record_count=3,
        coherence_score=None,
        sample_json='[{"a": 1}]',
        completed_at_ms=5,
    )
    assert codec.decode_outcome(codec.encode_outcome(outcome)) == outcome
    assert outcome.sample() == [{"a": 1}]
    with pytest.raises(DecodeError, match=r"expected testdata\.v1\.Outcome"):
        codec.decode_outcome(codec.encode_control(Control(request_id="r", at_ms=1)))


def test_fingerprint_matches_the_avro_spec():
    # The spec's CRC-64-AVRO of the canonical schema "int" (Java reference implementation).
    assert crc64_avro(b'"int"')[::-1].hex() == "7275d51a3f395c8f"


def test_reference_avro_library_reads_our_framing(codec):
    value = codec.encode_request(FULL)
    schema = avro.schema.parse((AVRO_DIR / "generate_request.avsc").read_text())
    datum = avro.io.DatumReader(schema).read(avro.io.BinaryDecoder(io.BytesIO(value[10:])))
    assert datum["entity"] == "cart" and datum["seed"] == 9


def test_pydantic_mirrors_agree_with_avro_schemas():
    pairs = {
        "routed_request": RoutedRequest,
        "result_chunk": ResultChunk,
        "dead_letter": DeadLetter,
        "generate_request": GenerateRequest,
        "delivery": DeliveryMarker,
        "outcome": Outcome,
    }
    for name, model in pairs.items():
        avsc = json.loads((AVRO_DIR / f"{name}.avsc").read_text())
        fields = [f.alias or n for n, f in model.model_fields.items()]
        assert [f["name"] for f in avsc["fields"]] == fields, name


@pytest.mark.parametrize("old", sorted((AVRO_DIR / "history").glob("*.avsc")), ids=lambda p: p.name)
def test_schema_changes_stay_backward_compatible(old):
    """Data written with every shipped version must be readable with the current schema."""
    codec = Codec()
    key = old.name.split(".")[0]
    named: dict = {}
    for dep in SCHEMA_FILES:
        p = old.parent / f"{dep}.{old.name.split('.')[1]}.avsc"
        if p.exists():
            parsed = fastavro.parse_schema(json.loads(p.read_text()), named_schemas=named)
        if dep == key:
            writer = parsed
            break
    samples = {
        "generate_request": FULL.model_dump(mode="json", by_alias=True),
        "routed_request": {
            "request": FULL.model_dump(mode="json", by_alias=True),
            "routing": {
                "path": "rag",
                "reason": "r",
                "confidence": 1.0,
                "requested_path": "rag",
                "fallbacks": [],
            },
            "received_at_ms": 1,
        },
        "result_chunk": {
            "request_id": "r",
            "chunk_index": 0,
            "is_final": True,
            "data": "x",
            "metadata": None,
        },
        "dead_letter": {
            "reason": "r",
            "error_type": "decode",
            "consumer": "c",
            "original_topic": "t",
            "original_partition": 0,
            "original_offset": 0,
            "original_timestamp_ms": 0,
            "original_value": b"x",
            "failed_at_ms": 0,
        },
        "control": {"request_id": "r", "action": "cancel", "at_ms": 1},
        "delivery": {
            "group": "g",
            "topic": "t",
            "partition": 0,
            "offset": 7,
            "attempt": 1,
            "at_ms": 1,
        },
        "outcome": {
            "request_id": "r",
            "fingerprint": "f",
            "path": "llm",
            "domain": "ecommerce",
            "entity": "cart",
            "record_count": 1,
            "sample_json": "[]",
            "completed_at_ms": 1,
        },
    }
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, writer, samples[key])
    framed = MAGIC + _fingerprint(writer) + buf.getvalue()
    assert codec.decode(key, framed)  # resolves old writer -> current reader


def test_a_v2_final_chunk_reads_with_no_retrieval(codec):
    """Chunks written before retrieval metadata existed read as "no examples used"."""
    named: dict = {}
    for dep in ("generate_request", "routed_request", "result_chunk"):
        writer = fastavro.parse_schema(
            json.loads((AVRO_DIR / "history" / f"{dep}.v2.avsc").read_text()), named_schemas=named
        )
    old = GenerationMetadata(generation_path="traditional", seed=3).model_dump(
        mode="json", by_alias=True, exclude={"rag_examples_used", "pattern_ids"}
    )
    record = {"request_id": "r", "chunk_index": 0, "is_final": True, "metadata": old}
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, writer, record)
    framed = MAGIC + _fingerprint(writer) + buf.getvalue()
    md = codec.decode_chunk(framed).metadata
    assert md is not None and md.seed == 3
    assert (md.rag_examples_used, md.pattern_ids) == (0, [])


def test_every_current_schema_is_in_the_history():
    """A schema change must ship as a new history version, so readers keep resolving it."""
    codec = Codec()
    for key, fp in codec.fingerprints.items():
        assert fp in codec.history, f"{key}.avsc changed: add schemas/avro/history/{key}.vN.avsc"


def _zigzag(n: int) -> bytes:
    n = (n << 1) ^ (n >> 63)
    out = bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        out.append(b | 0x80 if n else b)
        if not n:
            return bytes(out)


def test_a_deeply_nested_avro_request_is_a_decode_error_not_a_crash(codec):
    """fastavro's compiled reader overflows the C stack on ~5,000 nested Fields (a 50 KB
    message): requests are read with the recursion-checked reader. Run in a child
    process, so a regression shows as a failed test rather than a dead test run."""
    import subprocess
    import sys

    base = codec.encode_request(GenerateRequest(entity="t", count=1))
    prefix = base[:10] + b"\x00\x00\x02t"  # request_id "", domain "", entity "t"
    assert base[len(prefix)] == 0  # the empty schema.fields array, replaced by a chain
    # Field: name "x", type OBJECT (11), required false, description "", nested_fields
    leaf = b"\x02x" + _zigzag(0) + b"\x00\x00" + _zigzag(0)
    opening = b"\x02x" + _zigzag(11) + b"\x00\x00" + _zigzag(1)  # an array of one Field
    depth = 20_000
    chain = opening * depth + leaf + _zigzag(0) * depth
    value = prefix + _zigzag(1) + chain + _zigzag(0) + base[len(prefix) + 1 :]
    code = (
        "import sys\n"
        "from services.kit.wire.codec import Codec, DecodeError\n"
        "try:\n"
        "    Codec().decode_request(sys.stdin.buffer.read(), None)\n"
        "except DecodeError as exc:\n"
        "    print(exc.kind.value, exc.reason)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        input=value,
        capture_output=True,
        timeout=HANG_GUARD_S,
        check=False,
    )
    assert out.returncode == 0, out.stderr.decode()[-500:]
    assert out.stdout.decode().startswith("decode Avro body nested too deeply")


def _deep_json(depth: int) -> bytes:
    field = '{"name": "x", "type": "STRING"}'
    for _ in range(depth):
        field = '{"name": "x", "type": "OBJECT", "nested_fields": [' + field + "]}"
    return ('{"entity": "t", "schema": {"fields": [' + field + "]}}").encode()


def test_a_deeply_nested_json_request_is_a_field_error(codec):
    """pydantic would recurse once per level: the depth is refused before it does (past
    ~500 levels orjson itself refuses the document)."""
    with pytest.raises(DecodeError) as exc:
        codec.decode_request(_deep_json(300), JSON)
    assert exc.value.kind == ErrorKind.INVALID_REQUEST
    (err,) = exc.value.errors
    assert err.path == "schema.fields" and "nested more than 64 levels" in err.message
    with pytest.raises(DecodeError, match="invalid JSON"):
        codec.decode_request(_deep_json(1000), JSON)


def test_legacy_framing_of_v4_routed_requests_still_decodes(codec):
    """Until v4 fingerprints left named types unexpanded; such messages read as v4."""
    from fastavro.schema import to_parsing_canonical_form

    named: dict = {}
    for dep in ("generate_request", "routed_request"):
        writer = fastavro.parse_schema(
            json.loads((AVRO_DIR / "history" / f"{dep}.v4.avsc").read_text()), named_schemas=named
        )
    record = {
        "request": GenerateRequest(request_id="r", entity="cart", count=3).model_dump(
            mode="json", by_alias=True, exclude={"replay_of"}
        ),
        "routing": {
            "path": "traditional",
            "reason": "r",
            "confidence": 1.0,
            "requested_path": "traditional",
            "fallbacks": [],
        },
        "received_at_ms": 1,
    }
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, writer, record)
    legacy = crc64_avro(to_parsing_canonical_form(writer).encode())
    assert legacy != _fingerprint(writer)
    routed = codec.decode_routed(MAGIC + legacy + buf.getvalue())
    assert routed.request.count == 3 and routed.request.replay_of == ""
