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

from services.kit.patterns import Collection, Pattern
from services.kit.patterns.embedded import EmbeddedStore

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


async def learned(path: Path) -> Pattern:
    """The first learned pattern to appear in the store file (the learner process writes
    it; the seeds are there from the first start)."""
    store = EmbeddedStore(path)
    deadline = time.monotonic() + 60
    try:
        while True:
            if path.exists():
                await store.start()
                found = await store.list_patterns(Collection.PATTERNS, entity="cart")
                learned = [p for p in found if p.source.startswith("learned:")]
                if learned:
                    return learned[0]
            if time.monotonic() > deadline:
                raise AssertionError("nothing learned within 60 s")
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
        deadline = time.monotonic() + 90
        while "Ctrl-C" not in banner and time.monotonic() < deadline:
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
            timeout=60,
        )
        assert gen.returncode == 0, gen.stderr
        assert out.read_text().startswith('CREATE TABLE "cart"')
        assert json.loads(gen.stderr)["generationPath"] == "traditional"
        with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/metrics") as r:
            text = r.read().decode()
        # aggregated across processes: the generator's counters show on the bridge's port
        assert 'testdata_records_generated_total{domain="",entity="cart"} 5.0' in text
        # the learner process stored the dataset in the pattern store file
        pattern = asyncio.run(learned(tmp_path / "patterns.sqlite"))
        assert pattern.source == "learned:traditional" and CONTEXT in pattern.description
        assert len(pattern.records) == 5
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(30) == 0


def test_a_second_run_on_the_same_data_directory_stops_at_once_naming_the_first(tmp_path):
    """Before anything is read or written (no broker, no seeding): one line, the holder's
    pid, exit 1; the first instance's files are untouched."""
    from services.kit.dirlock import DirLock

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
            timeout=120,
        )
        after = sorted(p.name for p in data.iterdir())
    assert second.returncode == 1
    assert f"in use by another instance (pid {os.getpid()})" in second.stderr, second.stderr
    assert "Traceback" not in second.stderr
    assert after == before  # no broker directory, no pattern store: nothing touched


def test_make_run_starts_on_damaged_data_and_says_what_it_repaired(tmp_path):
    """A broker directory with a damaged checkpoint and a pattern store that is not a
    database: `testdata run` repairs both before anything opens them, names them in the
    banner and in /health (data_dir), serves, and stops cleanly. No traceback."""
    from services.kit.broker import EmbeddedBroker

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
        _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    assert list((data / "quarantine").rglob("p.sqlite"))  # kept, not deleted
