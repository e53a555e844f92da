"""The supervisor as `make run` uses it: real processes, its own embedded broker.

One supervisor serves the module. Its llm process gets a setting that does not parse, so
that one service (and only it) exits at every start: the crash-looping case, while the
others show that a killed process comes back and the rest never stop.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from typing import TypeVar

import grpc
import pytest

from services.deployables import SERVICES
from services.kit.ops.procstate import CRASH_LOOPING, EXIT_STARTUP, EXIT_TEMPFAIL, EXIT_UNAVAILABLE
from services.kit.ops.restart import RestartPolicy
from services.kit.settings import Settings
from services.proto.testdata.v1 import test_data_pb2 as pb
from services.proto.testdata.v1 import test_data_pb2_grpc as pb_grpc
from services.supervisor import StartupFailed, Supervisor
from tests.support import HANG_GUARD_S

from .test_run import ROOT, free_port

pytestmark = [pytest.mark.process, pytest.mark.slow]  # a Supervisor of its own

T = TypeVar("T")
QUIET = {
    "KAFKA_BOOTSTRAP_SERVERS": "",
    "ANTHROPIC_API_KEY": "",
    "USE_LOCAL_LLM": "false",
    "LOG_LEVEL": "WARNING",
}


def eventually(check: Callable[[], T | None], timeout: float = HANG_GUARD_S) -> T:
    """`check()` once it is not None; `timeout` only guards against a hang."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (value := check()) is not None:
            return value
        time.sleep(0.05)
    raise AssertionError(f"not within {timeout} s")


@pytest.fixture(scope="module")
def sup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Supervisor]:
    settings = Settings(
        _env_file=None,
        grpc_port=free_port(),
        http_port=free_port(),
        kafka_bootstrap_servers="",
        anthropic_api_key=None,
        use_local_llm=False,
        kafka_data_dir=str(tmp_path_factory.mktemp("kafka")),
    )
    store = tmp_path_factory.mktemp("patterns") / "patterns.sqlite"
    supervisor = Supervisor(
        settings,
        {**QUIET, "PATTERN_STORE_PATH": str(store)},
        service_env={"llm": {"LLM_BATCH_SIZE": "not-a-number"}},
        # fast enough that five exits happen within seconds
        policy=lambda: RestartPolicy(initial_delay_s=0.05, max_delay_s=1.0),
    ).start(wait_for=[n for n in SERVICES if n != "llm"])  # llm never comes up, by design
    stop = threading.Event()
    watcher = threading.Thread(target=supervisor.watch, args=(stop.is_set, 0.05), daemon=True)
    watcher.start()
    try:
        yield supervisor
    finally:
        stop.set()
        watcher.join(5)
        supervisor.stop()


@pytest.fixture(scope="module")
def stub(sup: Supervisor) -> Iterator[pb_grpc.TestDataServiceStub]:
    with grpc.insecure_channel(f"127.0.0.1:{sup.settings.grpc_port}") as ch:
        yield pb_grpc.TestDataServiceStub(ch)


def health(sup: Supervisor) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{sup.settings.http_port}/health") as r:
        return json.loads(r.read())


def generate(
    stub: pb_grpc.TestDataServiceStub, timeout: float = HANG_GUARD_S
) -> pb.GenerateResponse:
    resp = stub.GenerateData(pb.GenerateRequest(entity="cart", count=5, seed=1), timeout=timeout)
    assert resp.success and resp.record_count == 5, resp.error
    return resp


def test_a_killed_service_is_restarted_and_nothing_else_stops(sup, stub):
    others = {name: sup.pid(name) for name in ("router", "bridge")}
    old = sup.pid("traditional")
    assert old is not None
    os.kill(old, signal.SIGKILL)
    new = eventually(lambda: sup.pid("traditional") if sup.pid("traditional") != old else None)
    assert {name: sup.pid(name) for name in others} == others
    assert sup.broker is not None and sup.broker.bootstrap_servers == sup.bootstrap
    # the new process joins the consumer group once the dead member's session expires
    generate(stub)
    check = stub.HealthCheck(pb.HealthCheckRequest(), timeout=HANG_GUARD_S)
    assert check.components["process_traditional"] == f"healthy: pid {new}, 1 restart"
    assert check.components["process_router"] == f"healthy: pid {others['router']}, 0 restarts"
    assert check.components["process_learner"].startswith("healthy: pid ")  # its own process


def test_a_crash_looping_service_is_reported_while_the_rest_serve(sup, stub):
    eventually(lambda: sup.states()["llm"].state == CRASH_LOOPING or None)
    comps = health(sup)["components"]
    assert comps["process_llm"].startswith("unhealthy: crash-looping ("), comps
    assert f"last exit code {EXIT_STARTUP})" in comps["process_llm"]  # its settings: EX_CONFIG
    generate(stub)
    check = stub.HealthCheck(pb.HealthCheckRequest(), timeout=HANG_GUARD_S)
    assert check.status == "degraded"
    assert check.components["process_llm"].startswith("unhealthy: crash-looping")


def test_a_second_run_on_taken_ports_fails_naming_the_port(sup, tmp_path):
    bridge = sup.pid("bridge")
    env = {
        **os.environ,
        **QUIET,
        "GRPC_PORT": str(sup.settings.grpc_port),
        "HTTP_PORT": str(sup.settings.http_port),
        "PATTERN_STORE_PATH": str(tmp_path / "patterns.sqlite"),
        "KAFKA_DATA_DIR": str(tmp_path / "kafka"),
        "DATA_DIR": str(tmp_path / "data"),
    }
    second = subprocess.run(
        [sys.executable, "-m", "services.cli", "run"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=HANG_GUARD_S,  # a hang guard: it answers before anything starts
    )
    # found before anything started: no broker directory, no service, exit EX_CONFIG
    assert second.returncode == EXIT_STARTUP, second.stderr
    assert "running" not in second.stdout
    assert not (tmp_path / "kafka").exists()
    lines = second.stderr.strip().splitlines()
    port = sup.settings.grpc_port
    assert lines[-1].startswith(f"testdata run: error: gRPC port {port} on 127.0.0.1 is already")
    assert "GRPC_PORT" in lines[-1] and "--grpc-port" in lines[-1]
    assert not [line for line in lines if " ERROR " in line or "Traceback" in line], lines
    assert sup.pid("bridge") == bridge
    assert health(sup)["instance"] == sup.instance


@pytest.mark.parametrize("victim", ["traditional", "router"])
def test_a_service_killed_during_a_stream_loses_and_repeats_nothing(sup, stub, victim):
    """SIGKILL mid-stream: the supervisor restarts the process, the request is redelivered
    from the last committed offset and regenerated identically, and the caller receives
    every record exactly once (the bridge drops the chunks it already delivered)."""
    count = 200_000
    old = sup.pid(victim)
    assert old is not None
    if victim == "router":  # the request waits in the requests topic for the new router
        os.kill(old, signal.SIGKILL)
    call = stub.GenerateDataStream(
        pb.GenerateRequest(entity="cart", count=count, seed=3), timeout=HANG_GUARD_S
    )
    seen: list[int] = []
    for chunk in call:
        seen.extend(r["_index"] for r in json.loads(chunk.data))
        if victim == "traditional" and sup.pid(victim) == old and len(seen) >= 20_000:
            os.kill(old, signal.SIGKILL)
    assert seen == list(range(count))
    assert sup.pid(victim) != old


def test_after_the_bridge_is_killed_new_calls_succeed_quickly(sup):
    old = sup.pid("bridge")
    assert old is not None
    os.kill(old, signal.SIGKILL)
    t0 = time.monotonic()

    def call() -> float | None:
        try:
            with grpc.insecure_channel(f"127.0.0.1:{sup.settings.grpc_port}") as ch:
                generate(pb_grpc.TestDataServiceStub(ch), timeout=2)
        except grpc.RpcError:
            return None
        return time.monotonic() - t0

    eventually(call)  # how soon is measured by the delivery benchmark (target 10 s)
    new = sup.pid("bridge")
    assert health(sup)["components"]["process_bridge"] == f"healthy: pid {new}, 1 restart"


# ---- start-up that cannot finish: the cause, never a limit ---------------------------------
def _own_settings(tmp_path, **values) -> Settings:
    return Settings(
        _env_file=None,
        grpc_port=0,
        http_port=0,
        anthropic_api_key=None,
        use_local_llm=False,
        data_dir=str(tmp_path),
        pattern_store_path=str(tmp_path / "patterns.sqlite"),
        **values,
    )


def test_a_broker_that_never_answers_fails_the_start_naming_a_service_and_the_broker(tmp_path):
    bootstrap = f"127.0.0.1:{free_port()}"  # nothing listens there
    sup = Supervisor(_own_settings(tmp_path, kafka_bootstrap_servers=bootstrap), QUIET)
    with pytest.raises(StartupFailed) as failed:
        sup.start()
    assert failed.value.code == EXIT_UNAVAILABLE
    assert f"cannot start: cannot use the Kafka broker at {bootstrap}" in str(failed.value)
    assert str(failed.value).startswith("service ")
    assert all(s.proc is None or s.proc.poll() is not None for s in sup.services.values())


def test_ready_timeout_is_a_setting_and_names_what_was_still_starting(tmp_path, embedded_broker):
    settings = _own_settings(
        tmp_path,
        kafka_bootstrap_servers=embedded_broker.bootstrap_servers,
        topic_prefix="readyto.",
        ready_timeout_seconds=0.001,  # no process can start in a millisecond
    )
    sup = Supervisor(settings, QUIET)
    with pytest.raises(StartupFailed) as failed:
        sup.start()
    assert failed.value.code == EXIT_TEMPFAIL
    message = str(failed.value)
    assert message.startswith("not ready after READY_TIMEOUT_SECONDS=0.001: ")
    assert all(name in message for name in SERVICES), message


def test_a_killed_broker_is_restarted_and_calls_in_flight_fail_fast(sup, stub):
    """Seen: after SIGKILL of the embedded broker nothing restarted it, and calls in
    flight hung until their deadline. Now the stream in flight ends with UNAVAILABLE and
    a retry hint, the supervisor starts the broker again on its port and data directory,
    and the services, reconnecting, serve again."""
    generate(stub)
    assert sup.broker is not None
    old, restarts = sup.broker.pid, sup.broker_restarts
    assert old is not None
    call = stub.GenerateDataStream(
        pb.GenerateRequest(entity="cart", count=300_000, seed=3), timeout=HANG_GUARD_S
    )  # the deadline only guards against the hang this test is about
    chunks = iter(call)
    next(chunks)  # in flight
    os.kill(old, signal.SIGKILL)
    with pytest.raises(grpc.RpcError) as ended:
        for _ in chunks:
            pass
    assert ended.value.code() == grpc.StatusCode.UNAVAILABLE, ended.value.details()
    assert "broker is unreachable" in ended.value.details()

    eventually(lambda: sup.broker_restarts > restarts or None)
    assert sup.broker.running and sup.broker.pid != old

    def served() -> pb.GenerateResponse | None:
        try:
            return generate(stub, timeout=60)
        except grpc.RpcError:
            return None  # UNAVAILABLE while the services reconnect

    eventually(served)


def test_a_frozen_service_fails_readiness_until_it_runs_again(sup, stub):
    """Seen: a frozen router (SIGSTOP) showed healthy and ready. Its heartbeat goes
    stale; /health/ready answers 503 naming it; once it runs again, all is well."""
    router = sup.pid("router")
    assert router is not None
    url = f"http://127.0.0.1:{sup.settings.http_port}/health/ready"

    def ready() -> tuple[int, dict]:
        try:
            with urllib.request.urlopen(url) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())

    os.kill(router, signal.SIGSTOP)
    try:
        _, body = eventually(lambda: ready() if ready()[0] == 503 else None)
        assert body["components"]["process_router"].startswith("unhealthy: frozen"), body
    finally:
        os.kill(router, signal.SIGCONT)
    eventually(lambda: ready()[0] == 200 or None)
    generate(stub)
