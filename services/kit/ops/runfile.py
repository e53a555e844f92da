"""Where the running `testdata run` is: one small JSON file in its data directory.

`testdata run` writes `DATA_DIR/run.json` (Kafka bootstrap, gRPC target, HTTP URL, pid)
once its services are ready, and removes it when it stops. Every CLI command, the Python
client and the examples find the instance there when no flag or environment variable
names one, so nothing has to be copied from the banner after a restart. A file left by a
run that was killed names a pid that is gone: it is ignored.

The order, decided here and nowhere else: a flag, then the environment (or `.env`), then
the run file, then the default (gRPC) or nothing (Kafka: a command says how to start one).

Beside it, `DATA_DIR/run.key` (mode 0600) holds the CHUNK_SIGNING_KEY the run's processes
share (the one it was given, or the one it made): what `replay` and `export` verify
requests' tenants with, and replay vouches with, when they talk to that run's broker. It is
not in run.json, which is printed and shown; it goes with the run file.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ValidationError

from services.kit.settings import Settings

RUN_FILE = "run.json"
RUN_KEY = "run.key"


class RunFile(BaseModel):
    """What a running `testdata run` tells its callers."""

    bootstrap: str  # Kafka bootstrap servers, host:port
    grpc_target: str  # host:port of the gRPC bridge
    http_url: str  # base URL of /health, /health/ready, /metrics
    pid: int  # the `testdata run` process
    instance: str  # the bridge instance's name (as /health reports it)
    started_at: float  # wall-clock seconds


def run_file_path(data_dir: str | os.PathLike[str]) -> Path:
    return Path(data_dir) / RUN_FILE


def write_run_file(data_dir: str | os.PathLike[str], run: RunFile) -> Path:
    """Replace the run file in one rename: a reader sees the old one or the new one."""
    path = run_file_path(data_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{RUN_FILE}.")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(run.model_dump_json(indent=2) + "\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_run_key(data_dir: str | os.PathLike[str], key: str) -> Path:
    """The run's signing key, readable by its owner only, replaced in one rename (written
    before the run file: a reader that finds the run finds its key)."""
    path = Path(data_dir) / RUN_KEY
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{RUN_KEY}.")  # mode 0600
    try:
        with os.fdopen(fd, "w") as f:
            f.write(key + "\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def remove_run_file(data_dir: str | os.PathLike[str], pid: int) -> None:
    """Remove the run file and its key if they are still `pid`'s (a later run's stay)."""
    found = _load(run_file_path(data_dir))
    if found is not None and found.pid == pid:
        (Path(data_dir) / RUN_KEY).unlink(missing_ok=True)
        run_file_path(data_dir).unlink(missing_ok=True)


def read_run_file(data_dir: str | os.PathLike[str]) -> RunFile | None:
    """The running instance's file; None when there is none, it is unreadable, or the
    run that wrote it is gone."""
    found = _load(run_file_path(data_dir))
    return found if found is not None and _alive(found.pid) else None


def _load(path: Path) -> RunFile | None:
    try:
        return RunFile.model_validate(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError, ValidationError):
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, someone else's
        return True
    return True


@dataclass(frozen=True)
class Located:
    """An address and where it came from (what a command says it uses)."""

    value: str
    source: str  # "flag", "env", "run file" or "default"
    note: str = ""  # one line for stderr when the user did not name it

    @property
    def implicit(self) -> bool:
        return self.source in ("run file", "default")


def _from_run(settings: Settings) -> RunFile | None:
    return read_run_file(settings.data_dir)


def _run_note(run: RunFile, settings: Settings, what: str) -> str:
    age = max(0, int(time.time() - run.started_at))
    where = run_file_path(settings.data_dir)
    return f"using the testdata run of {where} (pid {run.pid}, up {age} s): {what}"


def locate_bootstrap(settings: Settings, flag: str | None = None) -> Located | None:
    """Kafka bootstrap servers: flag, KAFKA_BOOTSTRAP_SERVERS, the run file; else None."""
    if flag:
        return Located(flag, "flag")
    if settings.kafka_bootstrap_servers:
        return Located(settings.kafka_bootstrap_servers, "env")
    run = _from_run(settings)
    if run is not None:
        return Located(
            run.bootstrap, "run file", _run_note(run, settings, f"Kafka {run.bootstrap}")
        )
    return None


def locate_signing_key(settings: Settings, bootstrap: str) -> bytes | None:
    """The CHUNK_SIGNING_KEY of the services on `bootstrap`: the environment's (or
    `.env`'s), else the running `testdata run`'s when `bootstrap` is its broker; else None
    (a key of another cluster's run would verify nothing there)."""
    if (key := settings.signing_key()) is not None:
        return key
    run = _from_run(settings)
    if run is None or run.bootstrap != bootstrap:
        return None
    try:
        text = (Path(settings.data_dir) / RUN_KEY).read_text(encoding="utf-8")
    except OSError:
        return None
    return text.removesuffix("\n").encode() or None


def locate_grpc(settings: Settings, flag: str | None = None) -> Located:
    """The bridge's host:port: flag, GRPC_PORT set in the environment, the run file, else
    the default port on this machine."""
    return _locate(settings, flag, "grpc_port", "{}", lambda run: run.grpc_target)


def locate_http(settings: Settings) -> Located:
    """The HTTP base URL (health, metrics): HTTP_PORT set, the run file, else the default."""
    return _locate(settings, None, "http_port", "http://{}", lambda run: run.http_url)


def _locate(
    settings: Settings,
    flag: str | None,
    port_field: str,
    form: str,
    of_run: Callable[[RunFile], str],
) -> Located:
    if flag:
        return Located(flag, "flag")
    own = form.format(f"127.0.0.1:{getattr(settings, port_field)}")
    if port_field in settings.model_fields_set:
        return Located(own, "env")
    run = _from_run(settings)
    if run is not None:
        return Located(of_run(run), "run file", _run_note(run, settings, of_run(run)))
    return Located(own, "default")
