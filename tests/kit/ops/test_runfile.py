"""Where the running instance is: the run file, and the one order every caller finds it in."""

from __future__ import annotations

import os
import subprocess
import sys

from services.kit.ops.runfile import (
    RunFile,
    locate_bootstrap,
    locate_grpc,
    locate_http,
    locate_signing_key,
    read_run_file,
    remove_run_file,
    run_file_path,
    write_run_file,
    write_run_key,
)
from services.kit.settings import Settings


def run(pid: int) -> RunFile:
    return RunFile(
        bootstrap="127.0.0.1:9092",
        grpc_target="127.0.0.1:9101",
        http_url="http://127.0.0.1:8181",
        pid=pid,
        instance="run-x",
        started_at=0.0,
    )


def settings(tmp_path, **values) -> Settings:
    return Settings(_env_file=None, data_dir=str(tmp_path), kafka_bootstrap_servers="", **values)


def dead_pid() -> int:
    done = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        check=True,
        capture_output=True,
        text=True,
    )
    return int(done.stdout)


def test_written_read_and_removed_by_its_owner_only(tmp_path):
    write_run_file(tmp_path, run(os.getpid()))
    assert read_run_file(tmp_path) == run(os.getpid())
    remove_run_file(tmp_path, os.getpid() + 1)  # not its owner: a later run's file stays
    assert run_file_path(tmp_path).exists()
    remove_run_file(tmp_path, os.getpid())
    assert read_run_file(tmp_path) is None


def test_a_file_left_by_a_killed_run_or_damaged_is_ignored(tmp_path):
    write_run_file(tmp_path, run(dead_pid()))
    assert read_run_file(tmp_path) is None
    run_file_path(tmp_path).write_text('{"bootstrap": ')
    assert read_run_file(tmp_path) is None


def test_order_flag_then_environment_then_run_file_then_default(tmp_path):
    plain = settings(tmp_path)
    assert locate_bootstrap(plain) is None  # Kafka has no default: a command says so
    assert locate_grpc(plain).value == "127.0.0.1:9001"
    assert locate_grpc(plain).source == "default"
    write_run_file(tmp_path, run(os.getpid()))
    found = locate_bootstrap(plain)
    assert found is not None and found.value == "127.0.0.1:9092" and found.source == "run file"
    assert f"pid {os.getpid()}" in found.note and str(run_file_path(tmp_path)) in found.note
    assert locate_grpc(plain).value == "127.0.0.1:9101"
    assert locate_http(plain).value == "http://127.0.0.1:8181"
    env = settings(tmp_path, grpc_port=9200)  # as GRPC_PORT=9200 in the environment
    assert (locate_grpc(env).value, locate_grpc(env).source) == ("127.0.0.1:9200", "env")
    assert locate_grpc(env, "h:1").value == "h:1"
    cluster = Settings(_env_file=None, data_dir=str(tmp_path), kafka_bootstrap_servers="k:9")
    assert locate_bootstrap(cluster).value == "k:9"  # type: ignore[union-attr]
    assert locate_bootstrap(cluster, "f:1").value == "f:1"  # type: ignore[union-attr]


def test_the_signing_key_is_the_environments_else_the_runs_for_its_own_broker(tmp_path):
    """replay and export verify tenants with the key the services use: CHUNK_SIGNING_KEY,
    else the key file of the running `testdata run` (0600, beside run.json), only for
    that run's broker, and never a killed run's."""
    plain = settings(tmp_path)
    assert locate_signing_key(plain, "127.0.0.1:9092") is None
    key_file = write_run_key(tmp_path, "the-runs-key")
    assert key_file.stat().st_mode & 0o777 == 0o600
    assert locate_signing_key(plain, "127.0.0.1:9092") is None  # no run up
    write_run_file(tmp_path, run(os.getpid()))
    assert locate_signing_key(plain, "127.0.0.1:9092") == b"the-runs-key"
    assert locate_signing_key(plain, "elsewhere:9092") is None  # another cluster
    env = settings(tmp_path, chunk_signing_key="from-env")
    assert locate_signing_key(env, "127.0.0.1:9092") == b"from-env"
    assert locate_signing_key(env, "elsewhere:9092") == b"from-env"
    remove_run_file(tmp_path, os.getpid())
    assert not key_file.exists()
    write_run_key(tmp_path, "a-killed-runs-key")
    write_run_file(tmp_path, run(dead_pid()))
    assert locate_signing_key(plain, "127.0.0.1:9092") is None
