"""`testdata run` as a user starts it: separate processes, embedded broker, real ports."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from services.kit.ops.procstate import EXIT_INTERRUPTED, EXIT_STARTUP
from services.patterns import Collection, Pattern
from services.patterns.embedded import EmbeddedStore

pytestmark = [pytest.mark.process, pytest.mark.slow]  # `testdata run` processes of its own

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


CONTEXT = "Carts of marathon runners stocking up before race day"


def run_env(grpc_port: int, http_port: int, store: Path, kafka: Path, data: Path) -> dict:
    """The environment of a `testdata run` of a test's own: its ports, its directories,
    no LLM (so every request is served traditionally)."""
    return {
        **os.environ,
        "GRPC_PORT": str(grpc_port),
        "HTTP_PORT": str(http_port),
        "KAFKA_BOOTSTRAP_SERVERS": "",
        "ANTHROPIC_API_KEY": "",
        "USE_LOCAL_LLM": "false",
        "PATTERN_STORE_PATH": str(store),
        "KAFKA_DATA_DIR": str(kafka),
        "DATA_DIR": str(data),
    }


class Run:
    """`testdata run` as a terminal starts it: its own process group (a Ctrl-C reaches
    it and nothing else), stdout and stderr together in one file, as a user sees them."""

    def __init__(self, env: dict, out: Path, cwd: Path = ROOT, argv: tuple[str, ...] = ()):
        self.out = out
        self.proc = subprocess.Popen(
            [str(Path(sys.executable).with_name("testdata")), "run", *argv],
            cwd=cwd,
            env=env,
            stdout=out.open("w"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def text(self) -> str:
        return self.out.read_text()

    def wait_for(self, needle: str) -> str:
        """The output once it holds `needle`; fails with it if the run exits first. No
        time limit: a loaded machine is slow, not broken (pytest's own timeout aside)."""
        while needle not in (text := self.text()):
            assert self.proc.poll() is None, (
                f"exited {self.proc.returncode} before {needle!r}:\n{text}"
            )
            time.sleep(0.1)
        return text

    def ctrl_c(self) -> None:
        os.killpg(self.proc.pid, signal.SIGINT)

    def finish(self) -> tuple[int, list[str]]:
        """Exit code and output lines, once it has exited (a hang guard of 600 s)."""
        code = self.proc.wait(600)
        return code, self.text().splitlines()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.ctrl_c()
            try:
                self.proc.wait(600)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)


def errors(lines: list[str]) -> list[str]:
    return [line for line in lines if " ERROR " in line or "Traceback" in line]


def leftovers(marker: str) -> list[str]:
    """Processes whose command line names `marker` (a test's own directory)."""
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if marker in cmd:
                found.append(cmd)
    return found


def metrics_text(http_port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/metrics") as r:
        return r.read().decode()


async def learned(path: Path) -> Pattern:
    """The first learned pattern to appear in the store file (the learner process writes
    it; the seeds are there from the first start)."""
    store = EmbeddedStore(path)
    deadline = time.monotonic() + 600
    try:
        while True:
            if path.exists():
                await store.start()
                found = await store.list_patterns(Collection.PATTERNS, entity="cart")
                learned = [p for p in found if p.source.startswith("learned:")]
                if learned:
                    return learned[0]
            if time.monotonic() > deadline:
                raise AssertionError("nothing learned within 600 s")
            await asyncio.sleep(0.2)
    finally:
        await store.aclose()


def test_make_run_serves_grpc_and_http_then_stops_cleanly(tmp_path):
    grpc_port, http_port = free_port(), free_port()
    env = run_env(
        grpc_port, http_port, tmp_path / "patterns.sqlite", tmp_path / "kafka", tmp_path / "data"
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "services.cli", "run"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        banner = ""
        while "Ctrl-C" not in banner:  # the process ends the loop if start-up fails
            line = proc.stdout.readline()
            if not line:
                break
            banner += line
        assert "Kafka bootstrap" in banner and f"127.0.0.1:{grpc_port}" in banner, banner
        # a new pattern store is seeded on first start, and the banner says so
        assert "(first start)" in banner and str(tmp_path / "patterns.sqlite") in banner, banner
        out = tmp_path / "carts.sql"
        gen = subprocess.run(
            [
                sys.executable,
                "-m",
                "services.cli",
                "generate",
                "--entity",
                "cart",
                "--count",
                "5",
                "--format",
                "sql",
                "--seed",
                "1",
                "--context",  # no LLM configured: served traditionally, shaped by it
                CONTEXT,
                "--out",
                str(out),
                "--target",
                f"127.0.0.1:{grpc_port}",
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert gen.returncode == 0, gen.stderr
        assert out.read_text().startswith('CREATE TABLE "cart"')
        assert json.loads(gen.stderr)["generation_path"] == "traditional"  # proto field names
        # aggregated across processes: the generator's counters show on the bridge's port
        # (counted as the generator finishes, which may be just after the caller heard back)
        counted = 'testdata_records_generated_total{domain="",entity="cart"} 5.0'
        deadline = time.monotonic() + 600
        while counted not in (text := metrics_text(http_port)):
            assert time.monotonic() < deadline, text
            time.sleep(0.2)
        # the learner process stored the dataset in the pattern store file
        pattern = asyncio.run(learned(tmp_path / "patterns.sqlite"))
        assert pattern.source == "learned:traditional" and CONTEXT in pattern.description
        assert len(pattern.records) == 5
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(600) == 0


def test_a_second_run_on_the_same_data_directory_stops_at_once_naming_the_first(tmp_path):
    """Before anything is read or written (no broker, no seeding): one line, the holder's
    pid, exit 1; the first instance's files are untouched."""
    from services.kit.broker.dirlock import DirLock

    data = tmp_path / "data"
    with DirLock(data):
        before = sorted(p.name for p in data.iterdir())
        second = subprocess.run(
            [sys.executable, "-m", "services.cli", "run"],
            cwd=ROOT,
            env={
                **os.environ,
                "DATA_DIR": str(data),
                "KAFKA_DATA_DIR": str(data / "kafka"),
                "PATTERN_STORE_PATH": str(data / "patterns.sqlite"),
                "GRPC_PORT": str(free_port()),
                "HTTP_PORT": str(free_port()),
            },
            capture_output=True,
            text=True,
            timeout=600,
        )
        after = sorted(p.name for p in data.iterdir())
    assert second.returncode == EXIT_STARTUP
    assert f"in use by another instance (pid {os.getpid()})" in second.stderr, second.stderr
    assert "Traceback" not in second.stderr
    assert after == before  # no broker directory, no pattern store: nothing touched


def test_make_run_starts_on_damaged_data_and_says_what_it_repaired(tmp_path):
    """A broker directory with a damaged checkpoint and a pattern store that is not a
    database: `testdata run` repairs both before anything opens them, names them in the
    banner and in /health (data_dir), serves, and stops cleanly. No traceback."""
    from services.kit.broker.embedded import EmbeddedBroker

    data, kafka, store = tmp_path / "data", tmp_path / "data" / "kafka", tmp_path / "p.sqlite"
    with EmbeddedBroker({"kept": 1}, data_dir=kafka):
        pass
    (kafka / "kraft" / "replication-offset-checkpoint").write_text("0\n7\nnot offsets\n")
    store.write_bytes(b"this is not a SQLite database\n" * 100)
    grpc_port, http_port = free_port(), free_port()
    env = run_env(grpc_port, http_port, store, kafka, data)
    proc = subprocess.Popen(
        [sys.executable, "-m", "services.cli", "run"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        banner = ""
        while "Ctrl-C" not in banner:  # the process ends the loop if start-up fails
            line = proc.stdout.readline()
            if not line:
                break
            banner += line
        assert "1 damaged file(s) repaired" in banner, banner
        assert f"pattern store {store} was damaged: 0 pattern(s) recovered" in banner, banner
        with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/health") as r:
            health = json.loads(r.read())
        assert "1 damaged file(s) repaired" in health["components"]["data_dir"]
        assert "pattern store" in health["components"]["data_dir"]
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    assert list((data / "quarantine").rglob("p.sqlite"))  # kept, not deleted


# ---- start and stop as a terminal sees them ---------------------------------------------
def test_ctrl_c_during_start_up_stops_everything_without_an_error(tmp_path):
    """Interrupted while the services start (the broker is up, they are joining): every
    process ends, no ERROR line, no traceback; the last line says what happened."""
    env = run_env(0, 0, tmp_path / "p.sqlite", tmp_path / "kafka", tmp_path / "data")
    run = Run({**env, "LOG_LEVEL": "INFO"}, tmp_path / "out.txt")
    try:
        run.wait_for("embedded Kafka broker (pid")  # next: six service processes start
        run.ctrl_c()
        code, lines = run.finish()
    finally:
        run.stop()
    assert code == EXIT_INTERRUPTED, lines
    assert lines[-1] == "testdata run: interrupted during start-up; stopped", lines
    assert errors(lines) == [], lines
    assert "test-data agent is running" not in lines
    assert leftovers(str(tmp_path)) == []
    assert not (tmp_path / "data" / "run.json").exists()


def test_callers_find_a_running_make_run_with_no_environment_then_ctrl_c_stops_it(tmp_path):
    """`testdata run` started in a directory with its defaults (data in ./.data, broker on
    9092 or, taken, another port): `generate`, `publish`, `replay`, `export` and the
    bundled example find it from the run file, with no variable naming it, and say which
    instance they use. Ctrl-C then stops it: no ERROR line, the run file gone."""
    env = {
        k: v
        for k, v in run_env(0, 0, Path("x"), Path("x"), Path("x")).items()
        if k not in ("PATTERN_STORE_PATH", "KAFKA_DATA_DIR", "DATA_DIR", "GRPC_PORT", "HTTP_PORT")
    }
    env["CHUNK_SIGNING_KEY"] = ""  # the run makes its own; callers find it in run.key
    # this run's own ports (9001/8081 may be another's); callers never see these variables
    run = Run({**env, "GRPC_PORT": "0", "HTTP_PORT": "0"}, tmp_path / "out.txt", cwd=tmp_path)
    try:
        banner = run.wait_for("Ctrl-C stops everything.")
        info = json.loads((tmp_path / ".data" / "run.json").read_text())
        assert info["pid"] == run.proc.pid
        assert f"Kafka bootstrap   {info['bootstrap']}" in banner
        assert f"gRPC              {info['grpc_target']}" in banner
        assert f"HTTP              {info['http_url']}/health" in banner
        assert info["grpc_target"].startswith("127.0.0.1:")  # bound to this machine only
        testdata = str(Path(sys.executable).with_name("testdata"))

        def call(*argv: str) -> subprocess.CompletedProcess[str]:
            done = subprocess.run(
                argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
            )
            assert done.returncode == 0, done.stderr
            return done

        gen = call(testdata, "generate", "--entity", "payment", "--count", "3", "--seed", "5")
        assert len(json.loads(gen.stdout)) == 3
        assert f"using the testdata run of .data/run.json (pid {run.proc.pid}" in gen.stderr
        assert info["grpc_target"] in gen.stderr
        pub = call(testdata, "publish", "--entity", "cart", "--count", "2", "--seed", "1")
        assert len(json.loads(pub.stdout)) == 2 and info["bootstrap"] in pub.stderr
        example = call(sys.executable, str(ROOT / "examples" / "aiokafka_agent.py"))
        assert len(json.loads(example.stdout)) == 5
        replay = call(testdata, "replay", "--limit", "2", "--verify", "--quiet")
        assert "identical" in replay.stdout or "regenerated" in replay.stdout, replay.stdout
        call(testdata, "export", "--out", str(tmp_path / "exported"), "--quiet")
        assert len(list((tmp_path / "exported").iterdir())) >= 2
        # the run's signing key, for the owner only: --tenant verifies with it unasked
        assert (tmp_path / ".data" / "run.key").stat().st_mode & 0o777 == 0o600
        mine = call(
            testdata, "export", "--tenant", "local", "--out", str(tmp_path / "t"), "--quiet"
        )
        assert "no signing key" not in mine.stderr and len(list((tmp_path / "t").iterdir())) >= 2
        run.ctrl_c()
        code, lines = run.finish()
    finally:
        run.stop()
    assert code == 0, lines
    assert lines[-1] == "testdata run: stopped", lines
    assert errors(lines) == [], lines
    assert not (tmp_path / ".data" / "run.json").exists()
    assert not (tmp_path / ".data" / "run.key").exists()
    assert leftovers(str(tmp_path)) == []


def test_a_second_ctrl_c_forces_the_stop(tmp_path):
    env = run_env(0, 0, tmp_path / "p.sqlite", tmp_path / "kafka", tmp_path / "data")
    run = Run(env, tmp_path / "out.txt")
    try:
        run.wait_for("Ctrl-C stops everything.")
        run.ctrl_c()
        run.wait_for("stopping (Ctrl-C again to force)")
        run.ctrl_c()
        code, lines = run.finish()
    finally:
        run.stop()
    assert code == EXIT_INTERRUPTED, lines
    assert lines[-1] == "testdata run: stopped (forced)", lines
    assert leftovers(str(tmp_path)) == []
    assert not (tmp_path / "data" / "run.json").exists()
