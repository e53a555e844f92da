"""Helpers tests import (conftest files hold fixtures only)."""

from __future__ import annotations

import asyncio
import atexit
import shutil
import subprocess
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import IO, Any

from services.kit.settings import Settings

#: The one limit on waiting for a process to start serving: against a hang, far beyond what
#: any load takes. What ends such a wait is a real cause: it serves, or it exited.
HANG_GUARD_S = 600.0


def output_of(log: IO[bytes], tail: int = 4000) -> str:
    """The end of what a process wrote to `log` (a file opened "w+b" for its output)."""
    log.flush()
    log.seek(0)
    return log.read().decode(errors="replace")[-tail:]


def wait_serving(
    serving: Callable[[], bool],
    proc: subprocess.Popen[Any],
    what: str,
    output: Callable[[], str] = lambda: "",
) -> None:
    """Until `serving()` holds. Fails at once when `proc` exits first (its status and
    `output()`), and after HANG_GUARD_S only if it is still running and never served."""
    deadline = time.monotonic() + HANG_GUARD_S
    while not serving():
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited ({proc.returncode}) before serving:\n{output()}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} hung: not serving after {HANG_GUARD_S:g} s\n{output()}")
        time.sleep(0.05)


async def wait_until(condition: Callable[[], bool], what: str = "the condition") -> None:
    """Until `condition()` holds, checking every 20 ms; HANG_GUARD_S bounds it (a hang)."""
    deadline = time.monotonic() + HANG_GUARD_S
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not hold within {HANG_GUARD_S:g} s")
        await asyncio.sleep(0.02)


async def eventually(condition: Callable[[], Awaitable[bool]], what: str = "the condition") -> None:
    """`wait_until` for a condition that needs I/O to check (a broker's metadata, say)."""
    deadline = time.monotonic() + HANG_GUARD_S
    while not await condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not hold within {HANG_GUARD_S:g} s")
        await asyncio.sleep(0.05)


def temp_store_path() -> str:
    """A pattern store file of its own, removed when the test run ends."""
    d = tempfile.mkdtemp(prefix="testdata-patterns-")
    atexit.register(shutil.rmtree, d, True)
    return str(Path(d) / "patterns.sqlite")


#: The CHUNK_SIGNING_KEY of test settings: service processes a test starts beside an
#: in-process bridge must be given it too (services/kit/wire/signing.py).
SIGNING_KEY = "test-chunk-signing-key"


def make_settings(bootstrap: str = "", **over: Any) -> Settings:
    """Settings isolated from the machine's env and .env (no stray API keys), with a
    pattern store of their own."""
    base: dict[str, Any] = dict(
        kafka_bootstrap_servers=bootstrap,
        grpc_port=0,
        http_port=0,
        anthropic_api_key=None,
        use_local_llm=False,
        llm_enabled_local=False,
        instance_id="test-a",
        chunk_signing_key=SIGNING_KEY,
    )
    base.update(over)
    if "pattern_store_path" not in base:
        base["pattern_store_path"] = temp_store_path()
    return Settings(_env_file=None, **base)


def llm_settings(server: Any = None, **overrides: Any) -> Settings:
    """Settings with both LLM backends aimed at a fake server, short timeouts."""
    values: dict[str, Any] = {
        "anthropic_api_key": "test",
        "anthropic_base_url": server.url if server else None,
        "vllm_base_url": server.openai_base_url if server else "http://127.0.0.1:9/v1",
        "vllm_api_key": "local-key",
        "vllm_model": "fake/llama-3-8b",
        "claude_model": "claude-test-model",
        "claude_max_tokens": 1234,
        "claude_temperature": 0.3,
        "llm_timeout_seconds": 5.0,
        "llm_max_retries": 3,
        "llm_enabled_local": True,
        "use_local_llm": False,
        "llm_concurrency": 8,
    }
    values.update(overrides)
    return make_settings(**values)


# ---- callers with tenants, and requests as a bridge vouches for them ---------------------
#: Bearer tokens of three tenants (tokens_file writes them).
TOKENS = {"team-a": "a-" + "1" * 30, "team-b": "b-" + "2" * 30, "team-s": "s-" + "3" * 30}


def tokens_file(where: Path) -> str:
    """An AUTH_TOKENS_FILE naming the TOKENS' tenants, in directory `where`."""
    path = where / "tokens"
    path.write_text("".join(f"{token},{tenant}\n" for tenant, token in TOKENS.items()))
    return str(path)


def auth(tenant: str) -> tuple[tuple[str, str], ...]:
    """gRPC metadata calling as `tenant` (one of TOKENS), or with `tenant` as the token."""
    return (("authorization", f"Bearer {TOKENS.get(tenant, tenant)}"),)


def as_bridge(
    request_id: str, reply_to: str, correlation: str, avro: bool = True
) -> list[tuple[str, bytes]]:
    """A request's headers as a bridge publishes them: vouched for (kit/tenancy.py), so a
    test playing the bridge is answered on a bridge's reply topic."""
    from services.kit.wire.tenancy import LOCAL, vouch

    plain = [("reply-to", reply_to.encode()), ("correlation-id", correlation.encode())]
    if avro:
        plain.insert(0, ("content-type", b"application/avro"))
    return vouch(SIGNING_KEY.encode(), request_id, LOCAL, plain)
