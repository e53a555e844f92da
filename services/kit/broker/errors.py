"""What the embedded broker raises."""

from __future__ import annotations

from pathlib import Path


class KafkaNotInstalled(RuntimeError):
    """No Kafka jars or no Java: `make install` has not run (or failed)."""


class DirInUse(RuntimeError):
    """Another process (or another owner in this one) holds the directory."""

    def __init__(self, directory: Path, what: str, pid: int | None):
        self.directory, self.pid = directory, pid
        holder = f" (pid {pid})" if pid else ""
        super().__init__(f"the {what} {directory} is in use by another instance{holder}")


class BrokerStartFailed(RuntimeError):
    """The broker could not start; the message says why in one line."""


class StartCancelled(BrokerStartFailed):
    """start()'s `cancelled` said stop (a Ctrl-C): not a failure of the broker."""
