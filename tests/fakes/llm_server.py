"""A scripted fake LLM server speaking the Anthropic Messages and OpenAI Chat wire formats.

Tests point the real SDKs at it (`AsyncAnthropic(base_url=server.url)`,
`AsyncOpenAI(base_url=server.url + "/v1")`) and script what each API answers:

    with FakeLLMServer() as server:
        server.script("anthropic", Reply('[{"a": 1}]', input_tokens=12, output_tokens=5))
        server.script("anthropic", Fail(429, retry_after=1), Reply("[]"))
        server.script("openai", Hang(5), lambda body: "[]")
        ...
        server.requests_for("anthropic")  # what was received, headers and body

A scripted step is one of:
  * `Reply(text, input_tokens=None, output_tokens=None)`: a successful answer; token
    counts default to a rough estimate (characters / 4) and are recorded as reported.
  * `Fail(status, message=..., retry_after=..., retry_after_ms=...)`: an error in the
    API's own error JSON shape, with optional retry hints as headers.
  * `Hang(seconds)`: wait before answering (to trip a client timeout), then answer
    with `then` (a `Reply` of "[]" unless given).
  * a callable `(request_json) -> str | Reply | Fail | Hang`: build the answer from the
    request (e.g. from the prompt).

When an API's queue is empty, `server.default` answers (a step or callable; `Reply("[]")`
unless set). `fixed_delay_ms` delays every answer (benchmarks). Requests are served
concurrently (one thread each).
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal

Api = Literal["anthropic", "openai"]
APIS: tuple[Api, ...] = ("anthropic", "openai")


@dataclass
class Reply:
    text: str
    input_tokens: int | None = None
    output_tokens: int | None = None
    stop_reason: str | None = None  # anthropic stop_reason / openai finish_reason
    model: str | None = None  # echoed request model when None


@dataclass
class Fail:
    status: int
    message: str | None = None
    retry_after: float | str | None = None  # `retry-after` header (seconds or HTTP date)
    retry_after_ms: int | None = None  # `retry-after-ms` header
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Hang:
    seconds: float
    then: Step | None = None


Responder = Callable[[dict[str, Any]], "str | Reply | Fail | Hang"]
Step = Reply | Fail | Hang | Responder


@dataclass
class RecordedRequest:
    api: Api | None
    method: str
    path: str
    headers: dict[str, str]  # lower-cased names
    body: Any
    received_at: float  # time.monotonic()
    status: int | None = None  # what the server answered
    usage: dict[str, int] | None = None  # token counts reported in the answer

    @property
    def system_prompt(self) -> str | None:
        """The system prompt as text, whichever API the request was for."""
        if not isinstance(self.body, dict):
            return None
        if self.api == "anthropic":
            system = self.body.get("system")
            if isinstance(system, list):
                return "".join(b.get("text", "") for b in system if isinstance(b, dict))
            return system
        for message in self.body.get("messages", []):
            if message.get("role") in ("system", "developer"):
                return _content_text(message.get("content"))
        return None

    @property
    def user_prompt(self) -> str | None:
        if not isinstance(self.body, dict):
            return None
        texts = [
            _content_text(m.get("content"))
            for m in self.body.get("messages", [])
            if m.get("role") == "user"
        ]
        return "\n".join(texts) if texts else None


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(b.get("text", "") for b in content if isinstance(b, dict))
    return ""


_ANTHROPIC_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    408: "timeout_error",
    413: "request_too_large",
    422: "invalid_request_error",
    429: "rate_limit_error",
    500: "api_error",
    502: "api_error",
    503: "overloaded_error",
    504: "timeout_error",
    529: "overloaded_error",
}
_OPENAI_ERROR_TYPES = {
    400: ("invalid_request_error", None),
    401: ("invalid_request_error", "invalid_api_key"),
    403: ("invalid_request_error", "permission_denied"),
    404: ("invalid_request_error", "model_not_found"),
    422: ("invalid_request_error", None),
    429: ("rate_limit_exceeded", "rate_limit_exceeded"),
}


def estimate_tokens(text: str) -> int:
    return max(1, len(text) // 4)


class FakeLLMServer:
    """Scripted Anthropic + OpenAI compatible HTTP server on 127.0.0.1, in a thread."""

    def __init__(
        self,
        *,
        default: Step | None = None,
        fixed_delay_ms: float = 0.0,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.default: Step = default if default is not None else Reply("[]")
        self.fixed_delay_ms = fixed_delay_ms
        self._queues: dict[Api, deque[Step]] = {api: deque() for api in APIS}
        self._lock = threading.Lock()
        self._requests: list[RecordedRequest] = []
        self._ids = itertools.count(1)
        self._stopping = threading.Event()
        self._in_flight = 0
        self.max_in_flight = 0  # highest number of requests handled at once
        self.healthy = True  # False: the models listing (health probe) answers 503
        self._httpd = _Server((host, port), _make_handler(self))
        self._thread: threading.Thread | None = None

    # lifecycle ---------------------------------------------------------------------

    @property
    def port(self) -> int:
        return self._httpd.server_address[1]

    @property
    def url(self) -> str:
        """Root URL, no trailing slash: the Anthropic SDK's base_url (it adds /v1/...)."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def openai_base_url(self) -> str:
        """The OpenAI SDK's base_url (it adds /chat/completions)."""
        return self.url + "/v1"

    def start(self) -> FakeLLMServer:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._httpd.serve_forever,
                kwargs={"poll_interval": 0.01},  # stop() waits for the next poll
                name=f"fake-llm-{self.port}",
                daemon=True,
            )
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()  # wakes any Hang
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        self._httpd.server_close()

    def __enter__(self) -> FakeLLMServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # scripting ---------------------------------------------------------------------

    def script(self, api: Api, *steps: Step) -> None:
        """Append steps to an API's queue; each request consumes one."""
        if api not in self._queues:
            raise ValueError(f"unknown api {api!r}; expected one of {APIS}")
        with self._lock:
            self._queues[api].extend(steps)

    def pending(self, api: Api) -> int:
        with self._lock:
            return len(self._queues[api])

    def reset(self) -> None:
        with self._lock:
            for q in self._queues.values():
                q.clear()
            self._requests.clear()
            self.max_in_flight = 0

    # inspection --------------------------------------------------------------------

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._requests)

    def requests_for(self, api: Api) -> list[RecordedRequest]:
        return [r for r in self.requests if r.api == api]

    def calls(self, api: Api) -> int:
        return len(self.requests_for(api))

    # internals ---------------------------------------------------------------------

    def _next_step(self, api: Api) -> Step:
        with self._lock:
            q = self._queues[api]
            return q.popleft() if q else self.default

    def _record(self, req: RecordedRequest) -> None:
        with self._lock:
            self._requests.append(req)

    def _enter(self) -> None:
        with self._lock:
            self._in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self._in_flight)

    def _leave(self) -> None:
        with self._lock:
            self._in_flight -= 1

    def _sleep(self, seconds: float) -> bool:
        """Sleep unless the server stops first; True when the full time passed."""
        return not self._stopping.wait(seconds) if seconds > 0 else True

    def new_id(self, prefix: str) -> str:
        return f"{prefix}{next(self._ids):06d}"


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True


def _make_handler(server: FakeLLMServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "FakeLLM/1.0"
        # TCP_NODELAY: a body written after its headers leaves at once (with Nagle it waits
        # for the client's delayed ACK of the headers: ~40 ms on every keep-alive answer)
        disable_nagle_algorithm = True

        def log_message(self, format: str, *args: Any) -> None:  # quiet
            pass

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            rec = self._record(None)
            if path.rstrip("/") in ("/v1/models", "/models"):
                if server.healthy:
                    self._send_json(200, _models_payload(), rec)
                else:
                    self._send_json(503, {"error": {"message": "overloaded"}}, rec)
            else:
                self._send_json(404, {"error": {"message": f"no route {path}"}}, rec)

        def do_POST(self) -> None:
            path = self.path.split("?", 1)[0].rstrip("/")
            api: Api | None
            if path.endswith("/messages") and not path.endswith("/chat/messages"):
                api = "anthropic"
            elif path.endswith("/chat/completions"):
                api = "openai"
            else:
                api = None
            rec = self._record(api)
            if api is None:
                self._send_json(404, {"error": {"message": f"no route {path}"}}, rec)
                return
            if not isinstance(rec.body, dict):
                self._send_error(api, Fail(400, "request body is not a JSON object"), rec)
                return
            server._enter()
            try:
                if server.fixed_delay_ms and not server._sleep(server.fixed_delay_ms / 1000):
                    return
                self._answer(api, server._next_step(api), rec)
            finally:
                server._leave()

        # ---------------------------------------------------------------------------

        def _record(self, api: Api | None) -> RecordedRequest:
            length = int(self.headers.get("content-length") or 0)
            raw = self.rfile.read(length) if length else b""
            try:
                body: Any = json.loads(raw) if raw else None
            except ValueError:
                body = raw.decode("utf-8", "replace")
            rec = RecordedRequest(
                api=api,
                method=self.command,
                path=self.path,
                headers={k.lower(): v for k, v in self.headers.items()},
                body=body,
                received_at=time.monotonic(),
            )
            server._record(rec)
            return rec

        def _answer(self, api: Api, step: Step, rec: RecordedRequest) -> None:
            for _ in range(10):  # callables may return another step
                if isinstance(step, Hang):
                    if not server._sleep(step.seconds):
                        return  # server stopping; drop the connection
                    step = step.then if step.then is not None else Reply("[]")
                    continue
                if isinstance(step, Fail):
                    self._send_error(api, step, rec)
                    return
                if isinstance(step, Reply):
                    self._send_reply(api, step, rec)
                    return
                if isinstance(step, str):
                    step = Reply(step)
                    continue
                if callable(step):
                    step = step(rec.body)
                    continue
                raise TypeError(f"not a scripted step: {step!r}")
            raise RuntimeError("scripted callables nested too deeply")

        def _send_reply(self, api: Api, reply: Reply, rec: RecordedRequest) -> None:
            body = rec.body
            model = reply.model or body.get("model") or "fake-model"
            prompt_chars = len(json.dumps(body.get("messages", []))) + len(
                json.dumps(body.get("system", ""))
            )
            in_tok = (
                reply.input_tokens if reply.input_tokens is not None else max(1, prompt_chars // 4)
            )
            out_tok = (
                reply.output_tokens
                if reply.output_tokens is not None
                else estimate_tokens(reply.text)
            )
            rec.usage = {"input_tokens": in_tok, "output_tokens": out_tok}
            if api == "anthropic":
                payload: dict[str, Any] = {
                    "id": server.new_id("msg_fake"),
                    "type": "message",
                    "role": "assistant",
                    "model": model,
                    "content": [{"type": "text", "text": reply.text}],
                    "stop_reason": reply.stop_reason or "end_turn",
                    "stop_sequence": None,
                    "usage": {"input_tokens": in_tok, "output_tokens": out_tok},
                }
            else:
                payload = {
                    "id": server.new_id("chatcmpl-fake"),
                    "object": "chat.completion",
                    "created": int(time.time()),
                    "model": model,
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": reply.text},
                            "finish_reason": reply.stop_reason or "stop",
                            "logprobs": None,
                        }
                    ],
                    "usage": {
                        "prompt_tokens": in_tok,
                        "completion_tokens": out_tok,
                        "total_tokens": in_tok + out_tok,
                    },
                }
            self._send_json(200, payload, rec)

        def _send_error(self, api: Api, fail: Fail, rec: RecordedRequest) -> None:
            headers = dict(fail.headers)
            if fail.retry_after is not None:
                headers["retry-after"] = str(fail.retry_after)
            if fail.retry_after_ms is not None:
                headers["retry-after-ms"] = str(fail.retry_after_ms)
            message = fail.message or f"scripted error {fail.status}"
            if api == "anthropic":
                request_id = server.new_id("req_fake")
                headers.setdefault("request-id", request_id)
                payload: dict[str, Any] = {
                    "type": "error",
                    "error": {
                        "type": _ANTHROPIC_ERROR_TYPES.get(fail.status, "api_error"),
                        "message": message,
                    },
                    "request_id": request_id,
                }
            else:
                err_type, code = _OPENAI_ERROR_TYPES.get(fail.status, ("server_error", None))
                payload = {
                    "error": {"message": message, "type": err_type, "param": None, "code": code}
                }
            self._send_json(fail.status, payload, rec, headers)

        def _send_json(
            self,
            status: int,
            payload: Any,
            rec: RecordedRequest,
            headers: dict[str, str] | None = None,
        ) -> None:
            rec.status = status
            data = json.dumps(payload).encode()
            try:
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)
                self.wfile.flush()
            except OSError:  # BrokenPipe, ConnectionReset, timeouts
                self.close_connection = True  # client gave up (e.g. timed out)

    return Handler


def _models_payload() -> dict[str, Any]:
    """A models list both SDKs accept (anthropic page fields + openai list fields)."""
    return {
        "object": "list",
        "data": [
            {
                "id": "fake-model",
                "type": "model",
                "object": "model",
                "display_name": "Fake Model",
                "created_at": "2025-01-01T00:00:00Z",
                "created": 1735689600,
                "owned_by": "fake",
            }
        ],
        "has_more": False,
        "first_id": "fake-model",
        "last_id": "fake-model",
    }
