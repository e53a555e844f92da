"""Small calls against a direct server, same sitting, same client (`make bench smallcalls`).

The common call is small: 10 carts by GenerateData. This section runs the direct server
(bench/direct.py: one gRPC process, Faker in the handler, the spec's own architecture) and
then the services as `make run` starts them, each driven by the same load client in a
process of its own, and reports for each:

- 1 caller and 50 callers: calls/s, p50 and p99;
- service CPU per call, per process (utime + stime from /proc), over all processes;
- the idle stack's CPU (no traffic), in cores.

`make bench sustained` runs 50 callers for SUSTAINED_MINUTES (default 10) and prints each
minute's calls/s and the broker's CPU per call: flat over time, or not.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from bench.delivery import cpu_seconds
from bench.pipeline import _port, supervised_settings
from services.deployables import SERVICES
from services.supervisor import Supervisor

#: Seconds each measurement runs, after a warm-up of its own.
SECONDS = float(os.environ.get("SMALLCALLS_SECONDS", "20"))
IDLE_SECONDS = 10.0
CALLERS = (1, 50)


def _cpu(pids: Mapping[str, int]) -> dict[str, float]:
    return {name: cpu_seconds(pid) for name, pid in pids.items()}


def load(port: int, callers: int, seconds: float) -> dict[str, Any]:
    """Run the load client (bench/loadclient.py) in its own process: its CPU is not the
    service's."""
    out = subprocess.run(
        [sys.executable, "-m", "bench.loadclient", str(port), str(callers), str(seconds)],
        capture_output=True,
        text=True,
        check=True,
    )
    return dict(json.loads(out.stdout))


def measure(port: int, pids: Mapping[str, int], callers: int) -> dict[str, Any]:
    before = _cpu(pids)
    got = load(port, callers, SECONDS)
    after = _cpu(pids)
    calls = max(1, got["calls"])
    got["cpu_ms_per_call"] = {n: (after[n] - before[n]) * 1000 / calls for n in pids}
    return got


def idle(pids: Mapping[str, int]) -> dict[str, float]:
    """Cores each process uses with no traffic at all."""
    before = _cpu(pids)
    time.sleep(IDLE_SECONDS)
    after = _cpu(pids)
    return {n: (after[n] - before[n]) / IDLE_SECONDS for n in pids}


@contextmanager
def direct_server() -> Iterator[tuple[int, int]]:
    port = _port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.direct", str(port)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        yield port, proc.pid
    finally:
        proc.terminate()
        proc.wait()


@contextmanager
def stack() -> Iterator[tuple[int, dict[str, int]]]:
    settings, env = supervised_settings()
    env.update(_overrides())
    with Supervisor(settings, extra_env=env) as sup:
        pids = {name: sup.pid(name) for name in SERVICES}
        assert sup.broker is not None and sup.broker.pid is not None
        procs = {"broker": sup.broker.pid, "supervisor": os.getpid()}
        procs.update({n: p for n, p in pids.items() if p is not None})
        yield settings.grpc_port, procs


def _overrides() -> dict[str, str]:
    """SMALLCALLS_ENV="KAFKA_LINGER_MS=0 ..." sets the services' environment for a trial."""
    return dict(kv.split("=", 1) for kv in os.environ.get("SMALLCALLS_ENV", "").split())


def _row(label: str, got: Mapping[str, Any]) -> str:
    total = sum(got["cpu_ms_per_call"].values())
    return (
        f"  {label:<28} {got['calls_per_s']:>8,.0f} {got['p50_ms']:>8.1f} {got['p99_ms']:>8.1f}"
        f" {total:>9.2f}"
    )


def run() -> dict[str, float]:
    out: dict[str, float] = {}
    print(f"small calls: 10-cart GenerateData, {SECONDS:g} s per row, {os.cpu_count()} cores")
    print(f"  {'':<28} {'calls/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'CPU/call':>9}")
    results: dict[str, dict[str, Any]] = {}
    with direct_server() as (port, pid):
        for n in CALLERS:
            results[f"direct {n}"] = got = measure(port, {"direct": pid}, n)
            print(_row(f"direct server, {n} caller(s)", got))
    with stack() as (port, pids):
        stack_idle = idle(pids)
        for n in CALLERS:
            results[f"stack {n}"] = got = measure(port, pids, n)
            print(_row(f"this project, {n} caller(s)", got))
    busy = results[f"stack {CALLERS[-1]}"]
    print(f"  service CPU per call at {CALLERS[-1]} callers, ms:")
    for name, ms in sorted(busy["cpu_ms_per_call"].items(), key=lambda kv: -kv[1]):
        print(f"    {name:<12} {ms:6.2f}")
    print(
        f"  idle stack: {sum(stack_idle.values()):.3f} cores (no traffic, {IDLE_SECONDS:g} s): "
        + ", ".join(f"{n} {c:.3f}" for n, c in sorted(stack_idle.items(), key=lambda kv: -kv[1]))
    )
    for n in CALLERS:
        ours, theirs = results[f"stack {n}"], results[f"direct {n}"]
        ratio = ours["calls_per_s"] / theirs["calls_per_s"]
        print(f"  {n} caller(s): {ratio:.2f}x the direct server's calls/s")
        out[f"calls_per_s[{n}]"] = ours["calls_per_s"]
        out[f"direct_calls_per_s[{n}]"] = theirs["calls_per_s"]
        out[f"p50_ms[{n}]"], out[f"p99_ms[{n}]"] = ours["p50_ms"], ours["p99_ms"]
        out[f"cpu_ms_per_call[{n}]"] = sum(ours["cpu_ms_per_call"].values())
    out["idle_cores"] = sum(stack_idle.values())
    return out


def sustained() -> dict[str, float]:
    """50 callers for SUSTAINED_MINUTES, calls/s and the broker's CPU per call a minute."""
    minutes = int(os.environ.get("SUSTAINED_MINUTES", "10"))
    print(f"sustained: 50 callers, {minutes} minute(s), 10-cart GenerateData")
    out: dict[str, float] = {}
    with stack() as (port, pids):
        for m in range(minutes):
            before = _cpu(pids)
            got = load(port, 50, 60.0)
            after = _cpu(pids)
            calls = max(1, got["calls"])
            broker = (after["broker"] - before["broker"]) * 1000 / calls
            total = sum(after[n] - before[n] for n in pids) * 1000 / calls
            print(
                f"  minute {m + 1:>2}: {got['calls_per_s']:>6,.0f} calls/s  p99 "
                f"{got['p99_ms']:6.1f} ms  broker {broker:5.2f} ms/call  all {total:5.2f} ms/call"
            )
            out[f"calls_per_s[minute {m + 1}]"] = got["calls_per_s"]
    first, last = out["calls_per_s[minute 1]"], out[f"calls_per_s[minute {minutes}]"]
    print(f"  last minute / first: {last / first:.2f}   target >= 0.90")
    return out


if __name__ == "__main__":
    run()
