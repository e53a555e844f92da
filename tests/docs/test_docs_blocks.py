"""Every command in README.md and docs/*.md runs, against a `testdata run` of this test's
own, and every output shown under a command is what it printed.

How, so that a block runs as a reader would run it from a checkout after `make run`:

- The instance is `python -m services.cli run` (what `make run` runs) in a scratch copy of
  the repository root: a directory of symlinks to the root's entries, with its own empty
  `.data/` (the default DATA_DIR; the run file is `.data/run.json` there) and `.venv`
  pointing at the interpreter's virtualenv. Blocks run there too (cwd), so relative paths
  (`.venv/bin/testdata`, `examples/...`) work as written and the files they write land in
  the scratch directory, not in the checkout. No `.env` is linked and every setting's
  variable is removed from the environment: a developer's own settings change nothing.
- Ports: the default ones (gRPC 9001, HTTP 8081, Kafka 9092) may be taken where the suite
  runs, so the instance gets free ones (GRPC_PORT, HTTP_PORT, KAFKA_PORT, for it alone).
  Commands find it through the run file, as they do after `make run`. The few blocks that
  spell an address out (kcat, curl) have the default addresses rewritten to the instance's
  real ones before they run, and outputs have the real ones rewritten back before they are
  compared: that rewriting is the only difference from running the docs by hand.
- Blocks run in page order, README first (its first five minutes assume a fresh instance),
  one test per page; a page's blocks may use files an earlier block of it wrote.
- A block passes when it exits 0 (or the `exit N` its directive states) and, when an
  output block follows it, printed exactly that (see tests/docs/mdblocks.py for the
  directives). Timeouts here are hang guards only: load makes a block slow, not failed.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from services.kit.settings import Settings
from tests.docs.mdblocks import Block, pages, parse
from tests.support import HANG_GUARD_S

pytestmark = [pytest.mark.process, pytest.mark.slow]  # a `testdata run` of its own

ROOT = Path(__file__).resolve().parents[2]
#: Hang guards, never verdicts on speed: a start-up or a block slower than this is stuck.
START_GUARD_S = HANG_GUARD_S
BLOCK_GUARD_S = HANG_GUARD_S
#: Where to get a program a block needs.
INSTALL = {
    "kcat": "scripts/install_kcat.sh (Debian's kcat package)",
    "curl": "apt-get install curl",
}
#: In a shown output line: any text (what differs from run to run, such as a pid).
ELLIPSIS = "\u2026"
#: The addresses the docs show: `make run`'s defaults.
DEFAULTS = {"kafka": "127.0.0.1:9092", "grpc": "127.0.0.1:9001", "http": "127.0.0.1:8081"}
#: Entries of the root not copied into the scratch root.
PRIVATE = {".data", ".env", ".git", ".venv", ".pytest_cache", ".mypy_cache", ".ruff_cache"}


def free_ports(n: int) -> list[int]:
    """n distinct free ports (their sockets held together while picked)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


@dataclass
class Instance:
    root: Path  # the scratch root: cwd of the instance and of every block
    proc: subprocess.Popen[bytes]
    stdout: Path
    stderr: Path
    env: dict[str, str]  # what blocks run with
    real: dict[str, str]  # "kafka", "grpc", "http" -> host:port of this instance

    def to_real(self, text: str) -> str:
        """A block as it runs here: the docs' default addresses made this instance's."""
        for what, default in DEFAULTS.items():
            port = default.rsplit(":", 1)[1]
            text = re.sub(rf"\b(?:127\.0\.0\.1|localhost):{port}\b", self.real[what], text)
        return text

    def to_shown(self, text: str) -> str:
        """An output as the docs show it: this instance's addresses and paths made the
        defaults."""
        for what, default in DEFAULTS.items():
            text = re.sub(
                rf"\b(?:127\.0\.0\.1|localhost):{self.real[what].rsplit(':', 1)[1]}\b",
                default,
                text,
            )
        for root in {str(self.root), str(self.root.resolve())}:
            text = text.replace(root + os.sep, "")
        return text


def _scratch_root(tmp: Path) -> Path:
    root = tmp / "checkout"
    root.mkdir()
    for entry in ROOT.iterdir():
        if entry.name not in PRIVATE:
            (root / entry.name).symlink_to(entry)
    venv = ROOT / ".venv" if (ROOT / ".venv").is_dir() else Path(sys.prefix)
    (root / ".venv").symlink_to(venv)
    return root


def _environment(root: Path) -> dict[str, str]:
    settings = {name.upper() for name in Settings.model_fields}
    env = {k: v for k, v in os.environ.items() if k.upper() not in settings}
    env["PATH"] = f"{root / '.venv' / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONPATH"] = str(ROOT)  # this checkout's code, whatever the venv was installed from
    env.pop("PYTHONSTARTUP", None)
    return env


def _address(value: str) -> str:
    return value.split("://", 1)[-1].rstrip("/").split("/", 1)[0]


@pytest.fixture(scope="module")
def instance(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Instance]:
    tmp = tmp_path_factory.mktemp("docs")
    root = _scratch_root(tmp)
    env = _environment(root)
    grpc, http, kafka = free_ports(3)
    run_env = {**env, "GRPC_PORT": str(grpc), "HTTP_PORT": str(http), "KAFKA_PORT": str(kafka)}
    out, err = tmp / "run.stdout", tmp / "run.stderr"
    with out.open("wb") as o, err.open("wb") as e:
        proc = subprocess.Popen(
            [sys.executable, "-m", "services.cli", "run"],
            cwd=root,
            env=run_env,
            stdout=o,
            stderr=e,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    try:
        run_file = root / ".data" / "run.json"
        deadline = time.monotonic() + START_GUARD_S
        while not (run_file.exists() and out.stat().st_size):
            if proc.poll() is not None:
                pytest.fail(
                    f"testdata run exited with {proc.returncode} before it was ready:\n"
                    + err.read_text(errors="replace")[-4000:]
                )
            if time.monotonic() > deadline:  # a hang guard, not a speed verdict
                pytest.fail(f"testdata run not ready after {START_GUARD_S:.0f} s (stuck?)")
            time.sleep(0.2)
        run: dict[str, Any] = json.loads(run_file.read_text())
        real = {
            "kafka": run["bootstrap"],
            "grpc": _address(run["grpc_target"]),
            "http": _address(run["http_url"]),
        }
        yield Instance(root, proc, out, err, env, real)
    finally:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=HANG_GUARD_S)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@dataclass
class Ran:
    block: Block
    code: int
    stdout: str
    stderr: str


def run_block(inst: Instance, block: Block, tmp: Path) -> Ran:
    script = tmp / f"block-{block.line}.{'py' if block.lang == 'python' else 'sh'}"
    script.write_text(inst.to_real(block.text), encoding="utf-8")
    if block.lang == "python":
        argv = [sys.executable, str(script)]
    else:
        argv = ["bash", "-euo", "pipefail", str(script)]
    out, err = tmp / f"block-{block.line}.stdout", tmp / f"block-{block.line}.stderr"
    with out.open("wb") as o, err.open("wb") as e:
        proc = subprocess.Popen(
            argv,
            cwd=inst.root,
            env=inst.env,
            stdin=subprocess.DEVNULL,
            stdout=o,
            stderr=e,
            start_new_session=True,  # whatever the block leaves running is ended below
        )
        try:
            code = proc.wait(timeout=BLOCK_GUARD_S)
        except subprocess.TimeoutExpired:
            code = -1
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    ran = Ran(
        block,
        code,
        out.read_text(encoding="utf-8", errors="replace"),
        err.read_text(encoding="utf-8", errors="replace"),
    )
    if code == -1:
        pytest.fail(
            f"{block.where}: still running after {BLOCK_GUARD_S:.0f} s (stuck?)\n{_tail(ran)}"
        )
    return ran


def _tail(ran: Ran) -> str:
    return (
        f"--- block ---\n{ran.block.text}"
        f"--- stdout ---\n{ran.stdout[-3000:]}\n--- stderr ---\n{ran.stderr[-3000:]}"
    )


def first_json(text: str) -> Any:
    """The first JSON value in a stream (after any lines that are not JSON)."""
    decoder = json.JSONDecoder()
    for m in re.finditer(r"^\s*[\[{]", text, re.M):
        with contextlib.suppress(ValueError):
            return decoder.raw_decode(text[m.end() - 1 :])[0]
    raise AssertionError(f"no JSON value in:\n{text[-2000:]}")


def _drop(value: Any, keys: tuple[str, ...]) -> Any:
    if isinstance(value, dict):
        return {k: v for k, v in value.items() if k not in keys}
    if isinstance(value, list):
        return [_drop(v, keys) for v in value]
    return value


def _lines(text: str) -> list[str]:
    lines = [" ".join(line.split()) for line in text.splitlines()]
    while lines and not lines[0]:
        lines.pop(0)
    while lines and not lines[-1]:
        lines.pop()
    return lines


def check_output(inst: Instance, shown: Block, ran: Ran | None) -> None:
    assert shown.output is not None
    stream = shown.output.stream
    if stream == "run":
        actual = inst.stdout.read_text(encoding="utf-8", errors="replace")
    else:
        assert ran is not None, f"{shown.where}: no block ran before this output"
        actual = ran.stdout if stream == "stdout" else ran.stderr
    actual = inst.to_shown(actual)
    if shown.lang == "json":
        want = _drop(json.loads(shown.text), shown.output.ignore)
        got = _drop(first_json(actual), shown.output.ignore)
        assert got == want, (
            f"{shown.where}: the docs show\n{json.dumps(want, indent=2)}\n"
            f"but it printed\n{json.dumps(got, indent=2)}"
        )
    else:
        assert _same_lines(_lines(shown.text), _lines(actual)), (
            f"{shown.where}: the docs show\n{shown.text}\nbut it printed\n{actual}"
        )


def _same_lines(shown: list[str], actual: list[str]) -> bool:
    """Line by line; an ellipsis (…) in a shown line stands for any text (a pid, a time)."""
    if len(shown) != len(actual):
        return False
    for want, got in zip(shown, actual, strict=True):
        pattern = ".*?".join(re.escape(part) for part in want.split(ELLIPSIS))
        if not re.fullmatch(pattern, got):
            return False
    return True


def _has_commands(page: Path) -> bool:
    try:
        blocks = parse(page.read_text(encoding="utf-8"), page.relative_to(ROOT))
    except ValueError:
        return True  # its test then fails with the syntax error
    return any((b.runnable and not b.skip) or b.output for b in blocks)


#: Pages with something to run or compare (configuration.md, generated, has none).
PAGES = [p for p in pages(ROOT) if _has_commands(p)]


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(ROOT)) for p in PAGES])
def test_page_runs_as_written(page: Path, instance: Instance, tmp_path: Path) -> None:
    blocks = parse(page.read_text(encoding="utf-8"), page.relative_to(ROOT))
    last: Ran | None = None
    ran_any = False
    for block in blocks:
        if block.output:
            check_output(instance, block, last)
            continue
        if not block.runnable or block.skip:
            continue
        for tool in block.needs:
            if shutil.which(tool, path=instance.env["PATH"]) is None:
                pytest.fail(
                    f"{block.where} needs {tool}: install it with {INSTALL.get(tool, tool)}"
                )
        last = run_block(instance, block, tmp_path)
        ran_any = True
        assert last.code == block.exit, (
            f"{block.where}: exit {last.code}, expected {block.exit}\n{_tail(last)}"
        )
    assert ran_any or any(b.output for b in blocks)
