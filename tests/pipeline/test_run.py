"""`testdata run` as a user starts it: separate processes, embedded broker, real ports."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_make_run_serves_grpc_and_http_then_stops_cleanly(tmp_path):
    grpc_port, http_port = free_port(), free_port()
    env = {
        **os.environ,
        "GRPC_PORT": str(grpc_port),
        "HTTP_PORT": str(http_port),
        "KAFKA_BOOTSTRAP_SERVERS": "",
        "ANTHROPIC_API_KEY": "",
        "USE_LOCAL_LLM": "false",
        "PATTERN_STORE_PATH": str(tmp_path / "patterns.sqlite"),
    }
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
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(30) == 0
