"""A local Weaviate that speaks the subset of its REST and gRPC APIs the pattern store uses.

Tests point the real weaviate-client at it; messages are the client's own compiled stubs
(`weaviate.proto.v1`), so a wire change in the client shows up here as a failure:

    with FakeWeaviate(vector_dim=384) as server:
        settings = make_settings(weaviate_url=server.url, weaviate_grpc_port=server.grpc_port)
        ...
        server.calls          # every request: ("REST", "POST /v1/schema", body) / ("gRPC", ...)
        server.objects("TestDataPattern")   # uuid -> (properties, vector)
        with server.down(): ...             # ports closed (refused), data kept
        with server.stalled(): ...          # ports open, nothing answered (a black hole)

REST: `/v1/meta`, `/v1/.well-known/{ready,live,openid-configuration}`, `/v1/schema[/{C}]`,
`/v1/schema/{C}/properties` (POST)
(GET, POST, DELETE) and `PATCH /v1/objects/{C}/{id}`. gRPC: `weaviate.v1.Weaviate/`
`BatchObjects`, `BatchDelete`, `Search` (fetch, sort, filters, BM25, near-vector, hybrid with
relative-score or ranked fusion) and `Aggregate` (count, group by), plus
`grpc.health.v1.Health/Check`.

It is stricter than a real server where that catches client-side mistakes: properties must be
declared in the schema (no auto-schema), values must match their data type, every vector of a
collection has one dimension (`vector_dim` fixes it), filters need filterable properties and
keyword search searchable ones. Text equality follows the property's tokenization (`field`:
the whole value; otherwise every token of the filter value must be among the value's tokens).
BM25 is Okapi (k1 1.2, b 0.75) over lower-cased alphanumeric tokens without stopwords: use
its scores for ordering, not for exact values.
"""

from __future__ import annotations

import contextlib
import json
import math
import re
import struct
import sys
import threading
import uuid as uuidlib
from collections.abc import Callable, Iterator
from concurrent import futures
from dataclasses import dataclass, field
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import grpc
from google.protobuf import struct_pb2
from weaviate.proto.v1 import (
    aggregate_pb2,
    base_pb2,
    base_search_pb2,
    batch_delete_pb2,
    batch_pb2,
    properties_pb2,
    search_get_pb2,
    weaviate_pb2_grpc,
)

VERSION = "1.32.0"
DATA_TYPES = {"text", "int", "number", "boolean", "date", "uuid", "text[]"}
TOKENIZATIONS = {"word", "lowercase", "whitespace", "field", "trigram", "gse"}
_NAME = re.compile(r"^[_A-Za-z][_0-9A-Za-z]*$")
_TOKEN = re.compile(r"[a-z0-9]+")
_STOPWORDS = frozenset(  # Weaviate's "en" preset
    _TOKEN.findall(
        "a an and are as at be but by for if in into is it no not of on or such that the "
        "their then there these they this to was will with"
    )
)
SUBSEARCH_LIMIT = 100  # each leg of a hybrid search ranks at most this many (as Weaviate)


@dataclass
class Call:
    """One request the fake received."""

    kind: str  # "REST" or "gRPC"
    what: str  # "GET /v1/meta", "Search", ...
    body: Any = None  # decoded JSON, or the request message


@dataclass
class _Class:
    name: str
    definition: dict[str, Any]
    props: dict[str, dict[str, Any]]
    objects: dict[str, tuple[dict[str, Any], list[float] | None]] = field(default_factory=dict)
    dim: int | None = None


#: What Weaviate shows of an HNSW index it was given no settings for.
HNSW_DEFAULTS = {
    "skip": False,
    "cleanupIntervalSeconds": 300,
    "maxConnections": 32,
    "efConstruction": 128,
    "ef": -1,
    "dynamicEfMin": 100,
    "dynamicEfMax": 500,
    "dynamicEfFactor": 8,
    "vectorCacheMaxObjects": 1_000_000_000_000,
    "flatSearchCutoff": 40000,
    "distance": "cosine",
}


def _shown_vector(v: dict[str, Any]) -> dict[str, Any]:
    """A named vector as Weaviate's schema answers show it: index type and settings."""
    return {
        **v,
        "vectorIndexType": v.get("vectorIndexType", "hnsw"),
        "vectorIndexConfig": {**HNSW_DEFAULTS, **(v.get("vectorIndexConfig") or {})},
    }


def _shown(p: dict[str, Any], spec: dict[str, Any]) -> dict[str, Any]:
    """A property as Weaviate's schema answers show it: index flags always present."""
    text = spec["type"] in ("text", "text[]")
    return {
        **p,
        "indexFilterable": spec["filterable"],
        "indexSearchable": spec["searchable"] and text,
        **({"tokenization": spec["tokenization"]} if text else {}),
    }


def _property(p: dict[str, Any], have: dict[str, Any]) -> dict[str, Any] | str:
    """A property definition as the fake keeps it, or why Weaviate would refuse it."""
    pname, types = p.get("name", ""), p.get("dataType") or []
    if not _NAME.match(pname) or pname in have:
        return f"invalid or duplicate property name {pname!r}"
    if len(types) != 1 or types[0] not in DATA_TYPES:
        return f"property {pname!r}: unsupported dataType {types}"
    tokenization = p.get("tokenization")
    if tokenization is not None and (
        tokenization not in TOKENIZATIONS or types[0] not in ("text", "text[]")
    ):
        return f"property {pname!r}: tokenization {tokenization!r}"
    return {
        "type": types[0],
        "tokenization": tokenization or "word",
        "filterable": p.get("indexFilterable", True) is not False,
        "searchable": p.get("indexSearchable", True) is not False,
    }


class FakeWeaviate:
    """Both servers on 127.0.0.1, random free ports kept across `down()` / `restart()`."""

    def __init__(
        self, *, version: str = VERSION, api_key: str | None = None, vector_dim: int | None = None
    ):
        self.version = version
        self.api_key = api_key
        self.vector_dim = vector_dim
        self.calls: list[Call] = []
        self.http_port = 0
        self.grpc_port = 0
        self._classes: dict[str, _Class] = {}
        self._lock = threading.RLock()
        self._release = threading.Event()
        self._release.set()
        self._httpd: ThreadingHTTPServer | None = None
        self._grpc: grpc.Server | None = None
        self._racing = False
        self._hidden: set[str] = set()

    # ------------------------------------------------------------------ lifecycle
    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def running(self) -> bool:
        return self._httpd is not None

    def start(self) -> FakeWeaviate:
        handler = type("Handler", (_Rest,), {"fake": self})
        self._httpd = _HttpServer(("127.0.0.1", self.http_port), handler)
        self.http_port = self._httpd.server_address[1]
        threading.Thread(  # stop() waits for its next poll: 10 ms (0.5 s by default)
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True
        ).start()
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
        weaviate_pb2_grpc.add_WeaviateServicer_to_server(_Grpc(self), server)
        health = grpc.unary_unary_rpc_method_handler(self._health)  # raw bytes in and out
        server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler("grpc.health.v1.Health", {"Check": health}),)
        )
        self.grpc_port = server.add_insecure_port(f"127.0.0.1:{self.grpc_port}")
        server.start()
        self._grpc = server
        return self

    def stop(self) -> None:
        """Close both ports (clients then get 'connection refused'); data is kept."""
        self._release.set()  # stalled handlers answer now, into closed connections
        if self._grpc is not None:
            self._grpc.stop(0).wait()
            self._grpc = None
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()  # else the port keeps accepting: a black hole
            self._httpd = None

    def restart(self) -> None:
        self.stop()
        self.start()

    @contextlib.contextmanager
    def down(self) -> Iterator[None]:
        self.stop()
        try:
            yield
        finally:
            self.start()

    @contextlib.contextmanager
    def stalled(self) -> Iterator[None]:
        """Accept requests but answer none until the block ends."""
        self._release.clear()
        try:
            yield
        finally:
            self._release.set()

    @contextlib.contextmanager
    def racing_creator(self) -> Iterator[None]:
        """Another process (same code) creates each class between our existence check and
        our create: the first `GET /v1/schema/{C}` answers 404, and the POST that follows
        finds the class already made from that same body, so it meets 422."""
        with self._lock:
            self._racing, self._hidden = True, set()
        try:
            yield
        finally:
            with self._lock:
                self._racing = False

    def _hide_once(self, name: str) -> bool:
        with self._lock:
            if not self._racing or name.lower() in self._hidden:
                return False
            self._hidden.add(name.lower())
            return True

    def _race(self, body: dict[str, Any]) -> None:
        with self._lock:
            if self._racing:
                self.create_class(dict(body))  # the other process, a moment earlier

    def __enter__(self) -> FakeWeaviate:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ inspection
    def class_names(self) -> list[str]:
        with self._lock:
            return list(self._classes)

    def definition(self, name: str) -> dict[str, Any]:
        with self._lock:
            return self._classes[self._canon(name)].definition

    def objects(self, name: str) -> dict[str, tuple[dict[str, Any], list[float] | None]]:
        with self._lock:
            return dict(self._classes[self._canon(name)].objects)

    def calls_of(self, what: str) -> list[Call]:
        return [c for c in self.calls if c.what.startswith(what)]

    # ------------------------------------------------------------------ internals
    def _record(self, kind: str, what: str, body: Any = None) -> None:
        self.calls.append(Call(kind, what, body))
        self._release.wait()

    def _canon(self, name: str) -> str:
        for known in self._classes:
            if known.lower() == name.lower():
                return known
        raise KeyError(name)

    def _get(self, name: str) -> _Class | None:
        with self._lock:
            try:
                return self._classes[self._canon(name)]
            except KeyError:
                return None

    def _health(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        self._record("gRPC", "Health/Check")
        return b"\x08\x01"  # HealthCheckResponse{status: SERVING}

    def create_class(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        name = str(body.get("class") or "")
        if not _NAME.match(name):
            return 422, _error(f"invalid class name {name!r}")
        name = name[0].upper() + name[1:]  # Weaviate capitalises class names
        props: dict[str, dict[str, Any]] = {}
        for p in body.get("properties", []):
            spec = _property(p, props)
            if isinstance(spec, str):
                return 422, _error(spec)
            props[p["name"]] = spec
        with self._lock:
            if any(k.lower() == name.lower() for k in self._classes):
                return 422, _error(f"class name {name!r} already exists")
            definition = {
                **body,
                "properties": [_shown(p, props[p["name"]]) for p in body.get("properties", [])],
                "vectorConfig": {
                    vname: _shown_vector(v) for vname, v in (body.get("vectorConfig") or {}).items()
                },
                "class": name,
                "vectorIndexConfig": {"distance": "cosine"},
                "invertedIndexConfig": {"bm25": {"b": 0.75, "k1": 1.2}},
            }
            self._classes[name] = _Class(name, definition, props)
        return 200, definition

    def add_property(self, name: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        """`POST /v1/schema/{C}/properties`: objects stored before have none (null)."""
        with self._lock:
            cls = self._get(name)
            if cls is None:
                return 404, _error(f"class {name!r} not found")
            spec = _property(body, cls.props)
            if isinstance(spec, str):
                return 422, _error(spec)
            cls.props[body["name"]] = spec
            cls.definition.setdefault("properties", []).append(_shown(body, spec))
        return 200, body

    def delete_class(self, name: str) -> None:
        with self._lock, contextlib.suppress(KeyError):
            del self._classes[self._canon(name)]

    def patch_object(self, name: str, oid: str, body: dict[str, Any]) -> tuple[int, Any]:
        with self._lock:
            cls = self._get(name)
            if cls is None or oid not in cls.objects:
                return 404, None
            props, vec = cls.objects[oid]
            try:
                update = {k: _coerce(cls, k, v) for k, v in (body.get("properties") or {}).items()}
            except ValueError as exc:
                return 422, _error(str(exc))
            cls.objects[oid] = ({**props, **update}, vec)
        return 204, None


def _error(message: str) -> dict[str, Any]:
    return {"error": [{"message": message}]}


def _coerce(cls: _Class, prop: str, value: Any) -> Any:
    """A value as the schema stores it; ValueError when it does not fit (as Weaviate would)."""
    spec = cls.props.get(prop)
    if spec is None:
        raise ValueError(f"no such prop with name {prop!r} found in class {cls.name!r}")
    kind = spec["type"]
    if value is None:
        return None
    if kind == "text" and isinstance(value, str):
        return value
    if kind == "int" and isinstance(value, int | float) and float(value).is_integer():
        return int(value)
    if kind == "number" and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if kind == "boolean" and isinstance(value, bool):
        return value
    if kind == "date" and isinstance(value, str):
        _date(value)
        return value
    if kind == "uuid" and isinstance(value, str):
        return str(uuidlib.UUID(value))
    if kind == "text[]" and isinstance(value, list) and all(isinstance(v, str) for v in value):
        return value
    raise ValueError(f"property {prop!r} of class {cls.name!r}: {value!r} is not {kind}")


def _date(text: str) -> datetime:
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{text!r} is not an RFC 3339 date") from None


def _tokens(text: str) -> list[str]:
    return _TOKEN.findall(text.lower())


# ---------------------------------------------------------------------- REST
class _HttpServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that hung up (a timed-out call, a stalled answer after stop) is normal
        here; anything else is printed as usual."""
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class _Rest(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # TCP_NODELAY: the body, written after the headers, leaves at once (with Nagle it waits
    # for the client's delayed ACK of the headers: ~40 ms on every keep-alive answer)
    disable_nagle_algorithm = True
    fake: FakeWeaviate

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _send(self, code: int, body: Any = None) -> None:
        data = b"" if body is None else json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _body(self) -> Any:
        n = int(self.headers.get("Content-Length") or 0)
        return json.loads(self.rfile.read(n) or b"{}")

    def _authorised(self) -> bool:
        key = self.fake.api_key
        if key is None or self.headers.get("Authorization") == f"Bearer {key}":
            return True
        self._send(401, _error("anonymous access not enabled"))
        return False

    def do_GET(self) -> None:
        path = self.path.split("?")[0]
        self.fake._record("REST", f"GET {path}")
        if path == "/v1/.well-known/openid-configuration":
            return self._send(404)
        if path in ("/v1/.well-known/ready", "/v1/.well-known/live"):
            return self._send(200)
        if not self._authorised():
            return None
        if path == "/v1/meta":
            meta = {"hostname": "http://[::]:8080", "modules": {}, "version": self.fake.version}
            return self._send(200, {**meta, "grpcMaxMessageSize": 104858000})
        if path == "/v1/schema":
            with self.fake._lock:
                classes = [c.definition for c in self.fake._classes.values()]
            return self._send(200, {"classes": classes})
        m = re.fullmatch(r"/v1/schema/([^/]+)", path)
        if m and self.fake._hide_once(m.group(1)):
            return self._send(404)
        if m:
            cls = self.fake._get(m.group(1))
            return self._send(200, cls.definition) if cls else self._send(404)
        return self._send(404, _error(f"fake: no route GET {path}"))

    def do_POST(self) -> None:
        path, body = self.path.split("?")[0], self._body()
        self.fake._record("REST", f"POST {path}", body)
        if not self._authorised():
            return None
        if path == "/v1/schema":
            self.fake._race(body)
            return self._send(*self.fake.create_class(body))
        m = re.fullmatch(r"/v1/schema/([^/]+)/properties", path)
        if m:
            return self._send(*self.fake.add_property(m.group(1), body))
        return self._send(404, _error(f"fake: no route POST {path}"))

    def do_PATCH(self) -> None:
        path, body = self.path.split("?")[0], self._body()
        self.fake._record("REST", f"PATCH {path}", body)
        if not self._authorised():
            return None
        m = re.fullmatch(r"/v1/objects/([^/]+)/([^/]+)", path)
        if m:
            return self._send(*self.fake.patch_object(m.group(1), m.group(2), body))
        return self._send(404, _error(f"fake: no route PATCH {path}"))

    def do_DELETE(self) -> None:
        path = self.path.split("?")[0]
        self.fake._record("REST", f"DELETE {path}")
        if not self._authorised():
            return None
        m = re.fullmatch(r"/v1/schema/([^/]+)", path)
        if m:
            self.fake.delete_class(m.group(1))
            return self._send(200)
        return self._send(404, _error(f"fake: no route DELETE {path}"))


# ---------------------------------------------------------------------- gRPC
class _Invalid(Exception):
    """A request Weaviate would refuse: answered INVALID_ARGUMENT."""


Objects = dict[str, tuple[dict[str, Any], list[float] | None]]


class _Grpc(weaviate_pb2_grpc.WeaviateServicer):
    def __init__(self, fake: FakeWeaviate):
        self.fake = fake

    def _auth(self, what: str, request: Any, context: grpc.ServicerContext) -> None:
        self.fake._record("gRPC", what, request)
        if self.fake.api_key is not None:
            meta = dict(context.invocation_metadata())
            if meta.get("authorization") != f"Bearer {self.fake.api_key}":
                context.abort(grpc.StatusCode.UNAUTHENTICATED, "anonymous access not enabled")

    def _enter(self, what: str, request: Any, context: grpc.ServicerContext) -> _Class:
        self._auth(what, request, context)
        cls = self.fake._get(request.collection)
        if cls is None:
            context.abort(
                grpc.StatusCode.NOT_FOUND, f"could not find class {request.collection} in schema"
            )
        assert cls is not None
        return cls

    @staticmethod
    def _guard(context: grpc.ServicerContext, fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except (_Invalid, ValueError) as exc:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))

    # -------------------------------------------------------------- writes
    def BatchObjects(
        self, request: batch_pb2.BatchObjectsRequest, context: grpc.ServicerContext
    ) -> batch_pb2.BatchObjectsReply:
        self._auth("BatchObjects", request, context)
        errors = []
        with self.fake._lock:
            for i, obj in enumerate(request.objects):
                cls = self.fake._get(obj.collection)
                try:
                    if cls is None:
                        raise ValueError(f"class {obj.collection} not found")
                    props = {
                        k: _coerce(cls, k, _from_struct(v))
                        for k, v in obj.properties.non_ref_properties.fields.items()
                    }
                    vec = _vector(obj.vector, obj.vector_bytes, obj.vectors)
                    if vec is not None:
                        want = self.fake.vector_dim or cls.dim
                        if want is not None and len(vec) != want:
                            raise ValueError(
                                f"new node has a vector with length {len(vec)}. "
                                f"Existing nodes have vectors with length {want}"
                            )
                        cls.dim = len(vec)
                    cls.objects[obj.uuid or str(uuidlib.uuid4())] = (props, vec)
                except ValueError as exc:
                    errors.append(batch_pb2.BatchObjectsReply.BatchError(index=i, error=str(exc)))
        return batch_pb2.BatchObjectsReply(took=0.001, errors=errors)

    def BatchDelete(
        self, request: batch_delete_pb2.BatchDeleteRequest, context: grpc.ServicerContext
    ) -> batch_delete_pb2.BatchDeleteReply:
        cls = self._enter("BatchDelete", request, context)
        with self.fake._lock:
            hits = self._guard(context, lambda: _filter(cls, cls.objects, request.filters))
            if not request.dry_run:
                for oid in hits:
                    del cls.objects[oid]
        objects = [
            batch_delete_pb2.BatchDeleteObject(uuid=uuidlib.UUID(oid).bytes, successful=True)
            for oid in hits
            if request.verbose
        ]
        return batch_delete_pb2.BatchDeleteReply(
            took=0.001,
            failed=0,
            matches=len(hits),
            successful=0 if request.dry_run else len(hits),
            objects=objects,
        )

    # -------------------------------------------------------------- reads
    def Search(
        self, request: search_get_pb2.SearchRequest, context: grpc.ServicerContext
    ) -> search_get_pb2.SearchReply:
        cls = self._enter("Search", request, context)
        with self.fake._lock:
            objs = dict(cls.objects)
        ranked = self._guard(context, lambda: _search(cls, objs, request))
        wanted = None
        if request.HasField("properties") and not request.properties.return_all_nonref_properties:
            wanted = set(request.properties.non_ref_properties)
        results = []
        for oid, score in ranked:
            props, vec = objs[oid]
            md = search_get_pb2.MetadataResult(id=oid, score=score, score_present=True)
            md.id_as_bytes = uuidlib.UUID(oid).bytes
            if request.metadata.vector and vec is not None:
                md.vector_bytes = struct.pack(f"<{len(vec)}f", *vec)
            fields = {
                k: _to_value(cls, k, v) for k, v in props.items() if wanted is None or k in wanted
            }
            results.append(
                search_get_pb2.SearchResult(
                    metadata=md,
                    properties=search_get_pb2.PropertiesResult(
                        target_collection=cls.name,
                        non_ref_props=properties_pb2.Properties(fields=fields),
                    ),
                )
            )
        return search_get_pb2.SearchReply(took=0.001, results=results)

    def Aggregate(
        self, request: aggregate_pb2.AggregateRequest, context: grpc.ServicerContext
    ) -> aggregate_pb2.AggregateReply:
        cls = self._enter("Aggregate", request, context)
        with self.fake._lock:
            objs = dict(cls.objects)
        if request.HasField("filters"):
            objs = {
                k: objs[k]
                for k in self._guard(context, lambda: _filter(cls, objs, request.filters))
            }
        if not request.HasField("group_by"):
            single = aggregate_pb2.AggregateReply.Single(objects_count=len(objs))
            return aggregate_pb2.AggregateReply(took=0.001, single_result=single)
        prop = request.group_by.property
        if prop not in cls.props or cls.props[prop]["type"] != "text":
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"fake: group by {prop!r}")
        counts: dict[str, int] = {}
        for props, _ in objs.values():
            if props.get(prop) is not None:
                counts[props[prop]] = counts.get(props[prop], 0) + 1
        order = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
        if request.HasField("limit"):
            order = order[: request.limit]
        Group = aggregate_pb2.AggregateReply.Group
        groups = [
            Group(objects_count=n, grouped_by=Group.GroupedBy(path=[prop], text=value))
            for value, n in order
        ]
        grouped = aggregate_pb2.AggregateReply.Grouped(groups=groups)
        return aggregate_pb2.AggregateReply(took=0.001, grouped_results=grouped)


def _from_struct(v: struct_pb2.Value) -> Any:
    kind = v.WhichOneof("kind")
    if kind == "null_value":
        return None
    if kind == "list_value":
        return [_from_struct(x) for x in v.list_value.values]
    if kind == "struct_value":
        raise ValueError("fake: object properties are not supported")
    return getattr(v, kind)


def _vector(vector: Any, vector_bytes: bytes, vectors: Any) -> list[float] | None:
    if vector_bytes:
        return list(struct.unpack(f"<{len(vector_bytes) // 4}f", vector_bytes))
    if len(vector):
        return list(vector)
    for v in vectors:  # newer clients: repeated Vectors{name, index, vector_bytes, type}
        if v.vector_bytes:
            return list(struct.unpack(f"<{len(v.vector_bytes) // 4}f", v.vector_bytes))
    return None


def _to_value(cls: _Class, prop: str, v: Any) -> properties_pb2.Value:
    kind = cls.props[prop]["type"]
    if v is None:
        return properties_pb2.Value(null_value=struct_pb2.NULL_VALUE)
    if kind == "int":
        return properties_pb2.Value(int_value=int(v))
    if kind == "number":
        return properties_pb2.Value(number_value=float(v))
    if kind == "boolean":
        return properties_pb2.Value(bool_value=bool(v))
    if kind == "date":
        return properties_pb2.Value(date_value=str(v))
    if kind == "uuid":
        return properties_pb2.Value(uuid_value=str(v))
    if kind == "text[]":
        texts = properties_pb2.TextValues(values=v)
        return properties_pb2.Value(list_value=properties_pb2.ListValue(text_values=texts))
    return properties_pb2.Value(text_value=str(v))


# ---------------------------------------------------------------------- filters
def _filter(cls: _Class, objs: Objects, f: base_pb2.Filters) -> list[str]:
    return [oid for oid, (props, _) in objs.items() if _match(cls, f, oid, props)]


def _match(cls: _Class, f: base_pb2.Filters, oid: str, props: dict[str, Any]) -> bool:
    op = base_pb2.Filters
    if f.operator == op.OPERATOR_AND:
        return all(_match(cls, x, oid, props) for x in f.filters)
    if f.operator == op.OPERATOR_OR:
        return any(_match(cls, x, oid, props) for x in f.filters)
    path = f.target.property if f.HasField("target") else (f.on[0] if f.on else "")
    kind = f.WhichOneof("test_value")
    test = getattr(f, kind) if kind else None
    if kind and kind.endswith("_array"):
        test = list(test.values)
    if path == "_id":
        have: Any = oid
        test = [str(uuidlib.UUID(t)) for t in test] if isinstance(test, list) else test
        spec: dict[str, Any] = {"type": "uuid", "tokenization": "field"}
    else:
        if path not in cls.props:
            raise _Invalid(f"no such prop with name {path!r} found in class {cls.name!r}")
        spec = cls.props[path]
        if not spec["filterable"]:
            raise _Invalid(f"property {path!r} is not filterable (indexFilterable false)")
        have = props.get(path)
    if f.operator == op.OPERATOR_IS_NULL:
        return (have is None) == bool(test)
    if have is None:
        return False
    if spec["type"] == "date":
        have = _date(have)
        test = [_date(t) for t in test] if isinstance(test, list) else _date(test)
    if f.operator == op.OPERATOR_EQUAL:
        return _equal(spec, have, test)
    if f.operator == op.OPERATOR_NOT_EQUAL:
        return not _equal(spec, have, test)
    if f.operator == op.OPERATOR_CONTAINS_ANY:
        return any(_equal(spec, have, t) for t in test)
    if f.operator == op.OPERATOR_CONTAINS_ALL:
        return all(_equal(spec, have, t) for t in test)
    if f.operator == op.OPERATOR_LIKE:
        rx = "^" + re.escape(str(test)).replace(r"\*", ".*").replace(r"\?", ".") + "$"
        return re.match(rx, str(have), re.I) is not None
    compare: dict[int, Callable[[Any, Any], bool]] = {
        op.OPERATOR_GREATER_THAN: lambda a, b: a > b,
        op.OPERATOR_GREATER_THAN_EQUAL: lambda a, b: a >= b,
        op.OPERATOR_LESS_THAN: lambda a, b: a < b,
        op.OPERATOR_LESS_THAN_EQUAL: lambda a, b: a <= b,
    }
    if f.operator in compare:
        return compare[f.operator](have, test)
    raise _Invalid(f"fake: filter operator {f.operator}")


def _equal(spec: dict[str, Any], have: Any, test: Any) -> bool:
    if spec["type"] != "text" or spec["tokenization"] == "field":
        return bool(have == test)
    if spec["tokenization"] == "whitespace":
        return set(str(test).split()) <= set(str(have).split())
    return set(_tokens(str(test))) <= set(_tokens(str(have)))


# ---------------------------------------------------------------------- search
def _search(
    cls: _Class, objs: Objects, request: search_get_pb2.SearchRequest
) -> list[tuple[str, float]]:
    if request.HasField("filters"):
        objs = {k: objs[k] for k in _filter(cls, objs, request.filters)}
    if request.HasField("hybrid_search"):
        scores = _hybrid(cls, objs, request.hybrid_search)
    elif request.HasField("near_vector"):
        nv = request.near_vector
        qv = _vector(nv.vector, nv.vector_bytes, nv.vectors)
        scores = _cosine(objs, qv) if qv is not None else {}
    elif request.HasField("bm25_search"):
        bm = request.bm25_search
        scores = _bm25(cls, objs, bm.query, list(bm.properties))
    else:
        scores = {oid: 0.0 for oid in objs}
    if request.sort_by:
        ranked = _sorted(cls, objs, scores, list(request.sort_by))
    elif any(request.HasField(f) for f in ("hybrid_search", "bm25_search", "near_vector")):
        ranked = sorted(scores.items(), key=lambda kv: -kv[1])
    else:
        ranked = list(scores.items())  # fetch: insertion order
    limit = request.limit or 10
    return ranked[request.offset : request.offset + limit]


def _sorted(
    cls: _Class, objs: Objects, scores: dict[str, float], sort_by: list[search_get_pb2.SortBy]
) -> list[tuple[str, float]]:
    ranked = list(scores.items())
    for s in reversed(sort_by):  # stable sorts, least significant key first
        prop = s.path[0]
        if prop not in cls.props:
            raise _Invalid(f"no such prop with name {prop!r} found in class {cls.name!r}")
        kind = cls.props[prop]["type"]

        def key(item: tuple[str, float], prop: str = prop, kind: str = kind) -> tuple[int, Any]:
            v = objs[item[0]][0].get(prop)
            if v is None:
                return (0, 0)
            return (1, _date(v) if kind == "date" else v)

        ranked.sort(key=key, reverse=not s.ascending)
    return ranked


def _hybrid(cls: _Class, objs: Objects, h: base_search_pb2.Hybrid) -> dict[str, float]:
    alpha = h.alpha
    qv = _vector(h.vector, h.vector_bytes, h.vectors)
    if qv is None and h.HasField("near_vector"):
        qv = _vector(h.near_vector.vector, h.near_vector.vector_bytes, h.near_vector.vectors)
    keyword = _top(_bm25(cls, objs, h.query, list(h.properties))) if alpha < 1 else {}
    vector = _top(_cosine(objs, qv)) if alpha > 0 and qv is not None else {}
    legs = [(1 - alpha, keyword), (alpha, vector)]
    if h.fusion_type == base_search_pb2.Hybrid.FUSION_TYPE_RANKED:
        return _ranked_fusion(legs)
    return _relative_fusion(legs)


def _top(scores: dict[str, float]) -> dict[str, float]:
    return dict(sorted(scores.items(), key=lambda kv: -kv[1])[:SUBSEARCH_LIMIT])


def _cosine(objs: Objects, q: list[float]) -> dict[str, float]:
    out: dict[str, float] = {}
    nq = math.sqrt(sum(x * x for x in q)) or 1.0
    for oid, (_, vec) in objs.items():
        if vec is None:
            continue
        if len(vec) != len(q):
            raise _Invalid(f"vector lengths don't match: {len(q)} vs {len(vec)}")
        nv = math.sqrt(sum(x * x for x in vec)) or 1.0
        out[oid] = sum(a * b for a, b in zip(q, vec, strict=True)) / (nq * nv)
    return out


def _bm25(cls: _Class, objs: Objects, query: str, props: list[str]) -> dict[str, float]:
    searchable = [
        p for p, spec in cls.props.items() if spec["type"] == "text" and spec["searchable"]
    ]
    for p in props:
        if p not in searchable:
            raise _Invalid(f"property {p!r} is not searchable (indexSearchable false)")
    props = props or searchable
    terms = {t for t in _tokens(query) if t not in _STOPWORDS}
    if not terms or not objs:
        return {}
    docs = {
        oid: _tokens(" ".join(str(p.get(name) or "") for name in props))
        for oid, (p, _) in objs.items()
    }
    n = len(docs)
    avg = (sum(len(d) for d in docs.values()) / n) or 1.0
    df = {t: sum(1 for d in docs.values() if t in d) for t in terms}
    out: dict[str, float] = {}
    for oid, doc in docs.items():
        score = 0.0
        for t in terms:
            tf = doc.count(t)
            if tf:
                idf = math.log(1 + (n - df[t] + 0.5) / (df[t] + 0.5))
                score += idf * tf * 2.2 / (tf + 1.2 * (0.25 + 0.75 * len(doc) / avg))
        if score > 0:
            out[oid] = score
    return out


def _relative_fusion(legs: list[tuple[float, dict[str, float]]]) -> dict[str, float]:
    """Weaviate's relativeScoreFusion: min-max per leg (1 when all equal), weighted sum."""
    out: dict[str, float] = {}
    for weight, scores in legs:
        if not scores or weight == 0:
            continue
        lo, hi = min(scores.values()), max(scores.values())
        for oid, s in scores.items():
            norm = 1.0 if hi == lo else (s - lo) / (hi - lo)
            out[oid] = out.get(oid, 0.0) + weight * norm
    return out


def _ranked_fusion(legs: list[tuple[float, dict[str, float]]]) -> dict[str, float]:
    out: dict[str, float] = {}
    for weight, scores in legs:
        if weight == 0:
            continue
        for rank, oid in enumerate(sorted(scores, key=lambda k: -scores[k])):
            out[oid] = out.get(oid, 0.0) + weight / (rank + 60)
    return out
