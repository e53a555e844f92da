"""The supervisor's state file and what the bridge makes of it."""

from __future__ import annotations

from services.bridge.server import overall
from services.kit.ops import procstate
from services.kit.ops.procstate import (
    CRASH_LOOPING,
    RESTARTING,
    RUNNING,
    ProcState,
    read_states,
    state_probe,
    supervisor_probes,
    write_states,
)


def test_state_file_round_trip_leaves_no_temp_files(tmp_path):
    path = tmp_path / "state.json"
    states = {
        "router": ProcState(RUNNING, 10, 0, None, 1.0),
        "llm": ProcState(CRASH_LOOPING, None, 6, -9, 2.0, exits=6),
    }
    write_states(path, states)
    write_states(path, states)  # replacing an existing file
    assert read_states(path) == states
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]


def test_health_values():
    assert ProcState(RUNNING, 123, 2, -9, 0.0).health() == "healthy: pid 123, 2 restarts"
    assert ProcState(RUNNING, 123, 1, -9, 0.0).health() == "healthy: pid 123, 1 restart"
    assert (
        ProcState(RESTARTING, None, 1, -9, 0.0).health()
        == "unhealthy: restarting (last exit code -9, 1 restart)"
    )
    assert (
        ProcState(CRASH_LOOPING, 7, 5, 1, 0.0, exits=5).health()
        == "unhealthy: crash-looping (5 exits without staying up 60 s, last exit code 1)"
    )


async def test_probe_reports_each_process_and_a_missing_file(tmp_path):
    path = tmp_path / "state.json"
    probe = state_probe(path)
    assert (await probe()) == {"supervisor": "unhealthy: state unreadable (FileNotFoundError)"}
    write_states(
        path,
        {
            "router": ProcState(RUNNING, 10, 0, None, 1.0),
            "traditional": ProcState(CRASH_LOOPING, 11, 5, -9, 1.0, exits=5),
        },
    )
    comps = dict(await probe())
    assert comps["process_router"] == "healthy: pid 10, 0 restarts"
    assert comps["process_traditional"].startswith("unhealthy: crash-looping")
    # a crash-looping worker degrades the service; it does not make it unhealthy
    assert overall({"kafka": "healthy", **comps}) == "degraded"
    assert overall({"kafka": "unhealthy: down", **comps}) == "unhealthy"


def test_probes_only_under_a_supervisor(monkeypatch, tmp_path):
    monkeypatch.delenv(procstate.STATE_ENV, raising=False)
    assert supervisor_probes() == []
    monkeypatch.setenv(procstate.STATE_ENV, str(tmp_path / "state.json"))
    assert len(supervisor_probes()) == 1


def test_startup_error_is_left_next_to_the_state_file(monkeypatch, tmp_path):
    state = tmp_path / "state.json"
    monkeypatch.setenv(procstate.STATE_ENV, str(state))
    procstate.report_startup_error("bridge", "gRPC port 9001 on 0.0.0.0 is unavailable")
    assert procstate.startup_error_path(state, "bridge").read_text().startswith("gRPC port 9001")


async def test_a_frozen_or_stuck_process_fails_readiness_with_the_cause(monkeypatch, tmp_path):
    """Seen: a frozen router (SIGSTOP) and one stuck on a partition both showed healthy
    and ready: a PID says nothing of either. Each process writes a heartbeat from its
    event loop, naming its stuck consumers; a stale one means frozen."""
    import os
    import time

    path = tmp_path / "state.json"
    monkeypatch.setenv(procstate.STATE_ENV, str(path))
    started = time.time() - 100
    write_states(
        path,
        {
            "router": ProcState(RUNNING, 10, 0, None, started),
            "traditional": ProcState(RUNNING, 11, 0, None, started),
            "llm": ProcState(RUNNING, 12, 0, None, started),
        },
    )
    procstate.write_heartbeat("router", [])
    procstate.write_heartbeat("traditional", ["generator-traditional t[0] lag 9, no progress"])
    probe = state_probe(path, stale_s=15)
    comps = dict(await probe())
    assert comps["process_router"] == "healthy: pid 10, 0 restarts"
    assert comps["process_traditional"] == (
        "unhealthy: stuck: generator-traditional t[0] lag 9, no progress"
    )
    assert comps["process_llm"] == "healthy: pid 12, 0 restarts"  # no heartbeat yet: starting
    assert overall({"kafka": "healthy", **comps}) == "unhealthy"

    beat = procstate.heartbeat_path(path, "router")
    os.utime(beat, (time.time() - 20, time.time() - 20))  # its loop stopped 20 s ago
    comps = dict(await probe())
    assert comps["process_router"].startswith("unhealthy: frozen: no heartbeat from its event")
    assert "(pid 10)" in comps["process_router"]
    procstate.write_heartbeat("traditional", [])
    comps = dict(await probe())
    assert overall({"kafka": "healthy", **comps}) == "unhealthy"  # the frozen router
