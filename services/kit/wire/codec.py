"""Message framing: Avro single-object encoding (the Avro spec's), or JSON for requests.

Avro values on every topic are framed as the Avro specification's single-object encoding:

    C3 01 | 8-byte little-endian CRC-64-AVRO fingerprint of the writer schema | Avro binary

so any Avro library can write them, and readers resolve old writer schemas (kept in
schemas/avro/history/) to the current one. The `content-type` header says
`application/avro` or `application/json`; the requests topic accepts both, and without
the header the first bytes decide. fastavro was picked over `avro` by measurement
(see `make bench`).
"""

from __future__ import annotations

import io
import json
import re
from functools import lru_cache
from pathlib import Path
from typing import Any

import fastavro
import orjson
from fastavro._read_py import schemaless_reader as checked_reader
from fastavro.schema import expand_schema, to_parsing_canonical_form
from pydantic import BaseModel, ValidationError

from services.core.models import FieldError, GenerateRequest
from services.core.pools import SCHEMAS_DIR
from services.kit.wire.errors import DecodeError
from services.kit.wire.headers import AVRO, JSON
from services.kit.wire.messages import (
    Control,
    DeadLetter,
    DeliveryMarker,
    Outcome,
    ResultChunk,
    RoutedRequest,
)

MAGIC = b"\xc3\x01"
# Parse order: later files refer to types the earlier ones define.
SCHEMA_FILES = (
    "generate_request",
    "routed_request",
    "result_chunk",
    "dead_letter",
    "control",
    "delivery",
    "outcome",
)
NAMES = {
    "generate_request": "testdata.v1.GenerateRequest",
    "routed_request": "testdata.v1.RoutedRequest",
    "result_chunk": "testdata.v1.ResultChunk",
    "dead_letter": "testdata.v1.DeadLetter",
    "control": "testdata.v1.Control",
    "delivery": "testdata.v1.DeliveryMarker",
    "outcome": "testdata.v1.Outcome",
}


def _crc64_table() -> list[int]:
    table = []
    for i in range(256):
        fp = i
        for _ in range(8):
            fp = (fp >> 1) ^ (0xC15D213AA4D7A795 & -(fp & 1))
        table.append(fp)
    return table


_TABLE = _crc64_table()


def crc64_avro(data: bytes) -> bytes:
    """The Avro spec's schema fingerprint, as the 8 little-endian bytes framing uses."""
    fp = 0xC15D213AA4D7A795
    for b in data:
        fp = (fp >> 8) ^ _TABLE[(fp ^ b) & 0xFF]
    return fp.to_bytes(8, "little")


#: The last schema version framed with unexpanded fingerprints (see Codec).
LEGACY_LAST_VERSION = 4


def _fingerprint(schema: Any) -> bytes:
    """CRC-64-AVRO of the parsing canonical form with every named type expanded."""
    return crc64_avro(to_parsing_canonical_form(expand_schema(schema)).encode())


def _load_set(paths: dict[str, Path]) -> dict[str, Any]:
    named: dict[str, Any] = {}
    out = {}
    for key in SCHEMA_FILES:
        if key in paths:
            out[key] = fastavro.parse_schema(
                json.loads(paths[key].read_text()), named_schemas=named
            )
    return out


class Codec:
    """Encodes and decodes every topic's values; knows all schema versions ever shipped.

    A fingerprint covers the schema with the named types it uses expanded, so a change to
    GenerateRequest changes RoutedRequest's fingerprint too. (Before v5 the fingerprint
    left named references unexpanded; those legacy fingerprints still decode, as the last
    version that wrote them: v4.)
    """

    def __init__(self, directory: Path | None = None):
        directory = directory or SCHEMAS_DIR / "avro"
        self.current = _load_set({k: directory / f"{k}.avsc" for k in SCHEMA_FILES})
        self.fingerprints = {k: _fingerprint(s) for k, s in self.current.items()}
        self.writers: dict[bytes, tuple[str, Any]] = {}
        self.history: set[bytes] = set()  # fingerprints of every shipped version
        versions: dict[str, dict[str, Path]] = {}
        for p in sorted((directory / "history").glob("*.avsc")):
            m = re.fullmatch(r"(\w+)\.v(\d+)\.avsc", p.name)
            if m:
                versions.setdefault(m.group(2), {})[m.group(1)] = p
        for version in sorted(versions, key=int):
            for key, schema in _load_set(versions[version]).items():
                if int(version) <= LEGACY_LAST_VERSION:
                    legacy = crc64_avro(to_parsing_canonical_form(schema).encode())
                    self.writers[legacy] = (key, schema)
                    self.history.add(legacy)
                fp = _fingerprint(schema)
                self.writers[fp] = (key, schema)
                self.history.add(fp)
        for key, schema in self.current.items():
            self.writers[self.fingerprints[key]] = (key, schema)

    def encode(self, key: str, record: dict[str, Any]) -> bytes:
        buf = io.BytesIO()
        buf.write(MAGIC + self.fingerprints[key])
        fastavro.schemaless_writer(buf, self.current[key], record)
        return buf.getvalue()

    def decode(self, key: str, value: bytes, checked: bool = False) -> dict[str, Any]:
        """Decode a framed value whose writer schema is any known version of `key`.

        `checked`: with fastavro's pure-Python reader, which Python's recursion limit
        guards. Its compiled reader recurses on the C stack: a request whose schema
        nests Fields ~5,000 deep (50 KB) crashes the process (SIGSEGV). Requests come
        from outside, so they are read this way (~2x slower, about a millisecond)."""
        if len(value) < 10 or value[:2] != MAGIC:
            raise DecodeError("decode", "not an Avro single-object encoded value (no C3 01 marker)")
        writer = self.writers.get(value[2:10])
        if writer is None:
            raise DecodeError(
                "unknown_schema", f"unknown writer schema fingerprint {value[2:10].hex()}"
            )
        if writer[0] != key:
            raise DecodeError(
                "unknown_schema", f"value is a {NAMES[writer[0]]}, expected {NAMES[key]}"
            )
        read = checked_reader if checked else fastavro.schemaless_reader
        try:
            return read(io.BytesIO(value[10:]), writer[1], self.current[key])  # type: ignore[return-value]
        except RecursionError as exc:
            raise DecodeError("decode", "Avro body nested too deeply") from exc
        except Exception as exc:
            raise DecodeError("decode", f"corrupt Avro body: {exc}") from exc

    # ---- typed helpers -----------------------------------------------------------
    def encode_model(self, key: str, model: BaseModel) -> bytes:
        return self.encode(key, model.model_dump(mode="json", by_alias=True))

    def encode_request(self, req: GenerateRequest) -> bytes:
        return self.encode_model("generate_request", req)

    def decode_request(self, value: bytes, content_type: str | None) -> GenerateRequest:
        """A request from Avro or JSON bytes; every invalid field is reported."""
        if content_type:  # "application/json; charset=utf-8" is JSON too
            content_type = content_type.split(";", 1)[0].strip().lower()
        if content_type == JSON or (content_type is None and value[:1] in (b"{", b" ")):
            try:
                data = orjson.loads(value)
            except orjson.JSONDecodeError as exc:
                raise DecodeError("decode", f"invalid JSON: {exc}") from exc
            if not isinstance(data, dict):
                raise DecodeError("decode", "a JSON request must be an object")
        elif content_type in (AVRO, None):
            data = self.decode("generate_request", value, checked=True)
        else:
            raise DecodeError("decode", f"unsupported content-type {content_type!r}")
        rid = data.get("request_id") if isinstance(data.get("request_id"), str) else None
        try:
            return GenerateRequest.model_validate(data)
        except ValidationError as exc:
            errors = [
                FieldError(path=".".join(str(p) for p in e["loc"]) or "(root)", message=e["msg"])
                for e in exc.errors()
            ]
            raise DecodeError(
                "invalid_request",
                "invalid request: " + "; ".join(f"{e.path}: {e.message}" for e in errors),
                errors,
                rid,
            ) from exc

    def encode_routed(self, msg: RoutedRequest) -> bytes:
        return self.encode_model("routed_request", msg)

    def decode_routed(self, value: bytes) -> RoutedRequest:
        return RoutedRequest.model_validate(self.decode("routed_request", value))

    def encode_chunk(self, msg: ResultChunk) -> bytes:
        return self.encode_model("result_chunk", msg)

    def decode_chunk(self, value: bytes) -> ResultChunk:
        return ResultChunk.model_validate(self.decode("result_chunk", value))

    def encode_dead_letter(self, msg: DeadLetter) -> bytes:
        return self.encode("dead_letter", msg.model_dump(mode="python"))

    def decode_dead_letter(self, value: bytes) -> DeadLetter:
        return DeadLetter.model_validate(self.decode("dead_letter", value))

    def encode_control(self, msg: Control) -> bytes:
        return self.encode_model("control", msg)

    def decode_control(self, value: bytes) -> Control:
        return Control.model_validate(self.decode("control", value))

    def encode_delivery(self, msg: DeliveryMarker) -> bytes:
        return self.encode_model("delivery", msg)

    def decode_delivery(self, value: bytes) -> DeliveryMarker:
        return DeliveryMarker.model_validate(self.decode("delivery", value))

    def encode_outcome(self, msg: Outcome) -> bytes:
        return self.encode_model("outcome", msg)

    def decode_outcome(self, value: bytes) -> Outcome:
        try:
            return Outcome.model_validate(self.decode("outcome", value))
        except ValidationError as exc:
            raise DecodeError("decode", f"invalid outcome: {exc}") from exc


@lru_cache(maxsize=1)
def get_codec() -> Codec:
    return Codec()
