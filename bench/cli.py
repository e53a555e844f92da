"""The first five minutes, measured: how soon the command line and `testdata run` answer.

- `testdata --help` and `testdata generate --help`: wall and CPU time per call (target:
  under 0.5 s wall on an idle machine; the parser imports no service and no SDK);
- `testdata run` on a taken gRPC port: how soon it exits with the one line (target < 5 s);
- `testdata run` from the command to its "running" banner (a new data directory, then
  the same one again), and from Ctrl-C to its exit.

Everything runs the installed `testdata` script as a user would, in its own process.
"""

from __future__ import annotations

import os
import resource
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TESTDATA = str(Path(sys.executable).with_name("testdata"))


def _child_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _help(argv: list[str], n: int = 7) -> tuple[float, float]:
    """Median wall seconds and mean CPU seconds of `testdata <argv>` over `n` calls."""
    walls, cpu0 = [], _child_cpu()
    for _ in range(n):
        t = time.perf_counter()
        subprocess.run([TESTDATA, *argv], check=True, capture_output=True)
        walls.append(time.perf_counter() - t)
    return statistics.median(walls), (_child_cpu() - cpu0) / n


def _env(data: Path, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "DATA_DIR": str(data),
        "KAFKA_DATA_DIR": str(data / "kafka"),
        "PATTERN_STORE_PATH": str(data / "patterns.sqlite"),
        "KAFKA_BOOTSTRAP_SERVERS": "",
        "ANTHROPIC_API_KEY": "",
        "GRPC_PORT": "0",
        "HTTP_PORT": "0",
        "KAFKA_PORT": "0",
        **extra,
    }


def _taken_port(tmp: Path) -> float:
    with socket.create_server(("127.0.0.1", 0)) as holder:
        port = holder.getsockname()[1]
        t = time.perf_counter()
        done = subprocess.run(
            [TESTDATA, "run"],
            env=_env(tmp / "taken", GRPC_PORT=str(port)),
            capture_output=True,
            text=True,
        )
        took = time.perf_counter() - t
    assert done.returncode != 0 and "already in use" in done.stderr, done.stderr
    return took


def _start_stop(data: Path) -> tuple[float, float]:
    """Seconds to the banner, then from Ctrl-C to the exit."""
    out = data.parent / f"{data.name}.out"
    t = time.perf_counter()
    with out.open("w") as sink:
        proc = subprocess.Popen(
            [TESTDATA, "run"],
            env=_env(data),
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    while "Ctrl-C stops everything." not in out.read_text():
        if proc.poll() is not None:
            raise RuntimeError(f"testdata run exited: {out.read_text()[-2000:]}")
        time.sleep(0.05)
    up = time.perf_counter() - t
    t = time.perf_counter()
    os.killpg(proc.pid, signal.SIGINT)
    proc.wait()
    return up, time.perf_counter() - t


def run() -> None:
    print("cli (the first five minutes):")
    for argv in (["--help"], ["generate", "--help"]):
        wall, cpu = _help(argv)
        print(f"  testdata {' '.join(argv)}: {wall * 1000:.0f} ms wall, {cpu * 1000:.0f} ms CPU")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        print(f"  testdata run on a taken gRPC port: exits in {_taken_port(root):.2f} s")
        for label in ("new data directory", "same data directory"):
            up, down = _start_stop(root / "data")
            print(f"  testdata run, {label}: running in {up:.1f} s, Ctrl-C to exit {down:.1f} s")


if __name__ == "__main__":
    run()
