"""What the supervisor knows about its service processes, shared through one JSON file.

`testdata run` restarts service processes that die; only the supervisor sees that, but
callers ask the bridge (/health, HealthCheck). So the supervisor writes a small state
file (atomically: temp file + rename, so a reader never sees half of it) in its run
directory and names it to every child in TESTDATA_SUPERVISOR_STATE; the bridge turns it
into `process_<name>` health components. A child that cannot start for a reason a
restart will not fix (a port in use) exits with EXIT_STARTUP and leaves its message
next to that file, so the supervisor fails `testdata run` with it instead of looping.
A process that has started (joined its groups, bound its ports) says so in a `<name>.ready`
file beside it: `testdata run` reports "running" only once every service has.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

STATE_ENV = "TESTDATA_SUPERVISOR_STATE"
#: sysexits' EX_CONFIG: the process cannot start as configured; do not retry it.
EXIT_STARTUP = 78
#: sysexits' EX_UNAVAILABLE: the Kafka broker did not answer.
EXIT_UNAVAILABLE = 69
#: sysexits' EX_TEMPFAIL: READY_TIMEOUT_SECONDS passed while a service was still starting.
EXIT_TEMPFAIL = 75
#: asked to stop (Ctrl-C, SIGTERM) before it was up: 128 + SIGINT, as a shell says it.
EXIT_INTERRUPTED = 130

RUNNING = "running"
RESTARTING = "restarting"
CRASH_LOOPING = "crash-looping"

Probe = Callable[[], Awaitable[Mapping[str, str]]]


@dataclass(frozen=True)
class ProcState:
    """One service process as its supervisor last saw it."""

    state: str  # RUNNING | RESTARTING | CRASH_LOOPING
    pid: int | None
    restarts: int
    last_exit: int | None
    since: float  # wall-clock time of the last state change
    exits: int = 0  # exits since it last stayed up `stable_s`
    stable_s: float = 60.0

    def health(self) -> str:
        """A health component value: "healthy..." or "unhealthy: ..."."""
        if self.state == CRASH_LOOPING:
            return (
                f"unhealthy: crash-looping ({self.exits} exits without staying up "
                f"{self.stable_s:g} s, last exit code {self.last_exit})"
            )
        if self.state == RESTARTING:
            return f"unhealthy: restarting (last exit code {self.last_exit}, {_n(self.restarts)})"
        return f"healthy: pid {self.pid}, {_n(self.restarts)}"


def _n(restarts: int) -> str:
    return f"{restarts} restart" + ("" if restarts == 1 else "s")


def write_states(path: Path, states: Mapping[str, ProcState], data: str | None = None) -> None:
    """Replace the state file in one rename, so readers see the old or the new one.
    `data`: what the start found of the data directory (None: no embedded broker)."""
    body = json.dumps({"services": {name: asdict(s) for name, s in states.items()}, "data": data})
    _write_atomically(path, body)


def _write_atomically(path: Path, body: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(body)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_states(path: Path) -> dict[str, ProcState]:
    services = json.loads(path.read_text())["services"]
    return {name: ProcState(**fields) for name, fields in services.items()}


def read_data_state(path: Path) -> str | None:
    """What the supervisor found of the data directory at start (see write_states)."""
    value = json.loads(path.read_text()).get("data")
    return value if isinstance(value, str) else None


#: How often a service process writes its heartbeat (from its event loop).
HEARTBEAT_SECONDS = 1.0
FROZEN = "unhealthy: frozen"
STUCK = "unhealthy: stuck"
DISK_FULL = "unhealthy: disk full"


def heartbeat_path(state_path: Path, name: str) -> Path:
    return state_path.with_name(f"{name}.heartbeat")


def write_heartbeat(name: str, stuck: list[str]) -> None:
    """Under `testdata run`: this process's event loop is running, and which of its
    consumers are stuck. A PID alone says nothing of a process that is frozen (SIGSTOP,
    a blocked loop): its heartbeat goes stale instead."""
    if path := os.environ.get(STATE_ENV):
        _write_atomically(heartbeat_path(Path(path), name), json.dumps({"stuck": stuck}))


def beat_health(path: Path, state: ProcState, stale_s: float, now: float) -> str | None:
    """What a running process's heartbeat says, if anything is wrong (None: nothing, or
    no heartbeat yet: still starting)."""
    try:
        at = path.stat().st_mtime
        stuck = json.loads(path.read_text()).get("stuck") or []
    except (OSError, ValueError, AttributeError):
        return None
    if at < state.since:
        return None  # an earlier process's: this one has not written yet
    if now - at > stale_s:
        return f"{FROZEN}: no heartbeat from its event loop for {now - at:.0f} s (pid {state.pid})"
    if stuck:
        return f"{STUCK}: {'; '.join(str(s) for s in stuck)}"
    return None


def state_probe(path: Path, stale_s: float = 15.0) -> Probe:
    """Health probe: one `process_<name>` component per supervised process."""

    async def supervisor() -> Mapping[str, str]:
        try:
            states = read_states(path)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            return {"supervisor": f"unhealthy: state unreadable ({type(exc).__name__})"}
        now = time.time()
        out = {}
        for name, s in states.items():
            beat = None
            if s.state == RUNNING:
                beat = beat_health(heartbeat_path(path, name), s, stale_s, now)
            out[f"process_{name}"] = beat or s.health()
        with contextlib.suppress(OSError, ValueError):
            if (data := read_data_state(path)) is not None:
                out["data_dir"] = f"healthy: {data or 'intact at start'}"
        return out

    return supervisor


def supervisor_probes(stale_s: float = 15.0) -> list[Probe]:
    """The state probe when this process runs under `testdata run`, else nothing."""
    path = os.environ.get(STATE_ENV)
    return [state_probe(Path(path), stale_s)] if path else []


def startup_error_path(state_path: Path, name: str) -> Path:
    return state_path.with_name(f"{name}.startup-error")


def report_startup_error(name: str, message: str) -> None:
    """Leave the reason a process exits for the supervisor (if any): `testdata run` fails
    with it when it happens during start-up."""
    if path := os.environ.get(STATE_ENV):
        with contextlib.suppress(OSError):  # the message is also on stderr
            startup_error_path(Path(path), name).write_text(message)


def ready_path(state_path: Path, name: str) -> Path:
    return state_path.with_name(f"{name}.ready")


@dataclass(frozen=True)
class Ready:
    """A service process has started: its consumers joined their groups, its servers
    listen (on these ports, which may have been picked at start)."""

    pid: int
    grpc_port: int | None = None
    http_port: int | None = None


def report_ready(name: str, ready: Ready) -> None:
    """Tell the supervisor (if any) that this process serves; written in one rename."""
    if path := os.environ.get(STATE_ENV):
        target = ready_path(Path(path), name)
        tmp = target.with_name(f".{target.name}.{ready.pid}")
        with contextlib.suppress(OSError):
            tmp.write_text(json.dumps(asdict(ready)))
            os.replace(tmp, target)


def read_ready(state_path: Path, name: str) -> Ready | None:
    try:
        return Ready(**json.loads(ready_path(state_path, name).read_text()))
    except (OSError, ValueError, TypeError):
        return None
