"""What the bridge raises (and catches) inside itself."""

from __future__ import annotations


class ChunkGap(Exception):
    """Chunks went missing between generator and bridge."""


class GenerationRestarted(Exception):
    """The request was generated again (a redelivery) after chunks of an earlier,
    different run had been handed to the caller: the two cannot be joined."""


class BrokerGone(Exception):
    """The broker stopped accepting connections while the request was out: its chunks
    cannot come until it is back, so the caller is told now instead of at its deadline."""


class Restarted(Exception):
    """For a restartable caller: forget the chunks so far, the newest run follows."""


class Full(Exception):
    """Every slot is taken and the queue is full."""

    def __init__(self, kind: str, limit: int, queue: int, retry_after: float):
        super().__init__(
            f"this bridge is running its limit of {limit} {kind} calls with {queue} more "
            f"waiting; retry in {retry_after:.2f} s (or at another instance)"
        )
        self.retry_after = retry_after


class CredentialsInvalid(ValueError):
    """A credentials file cannot be used (the message names the file and line)."""


class Refused(Exception):
    """A presented credential does not prove a tenant (the message says why)."""


class KeyReused(Exception):
    """An idempotency key came back with a different request."""


class NotResumable(Exception):
    """The stream's chunks came from a non-deterministic path: a rerun would differ."""
