"""One owner per data directory: an flock on `<dir>/owner.lock`, the holder's pid beside it.

Why: two instances writing one directory (broker logs, pattern store) corrupt or unlink each
other's files. The lock is taken before anything in the directory is read or written and is
released by the kernel when its process dies, so a SIGKILLed owner never leaves it stale.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path
from types import TracebackType
from typing import IO, Self

from services.kit.broker.errors import DirInUse


class DirLock:
    """`acquire()` takes the directory (created if missing) or raises DirInUse at once."""

    def __init__(self, directory: str | os.PathLike[str], what: str = "data directory"):
        self.directory = Path(directory)
        self.what = what
        self._fh: IO[str] | None = None

    @property
    def _owner(self) -> Path:
        return self.directory / "owner"

    def acquire(self) -> Self:
        self.directory.mkdir(parents=True, exist_ok=True)
        fh = open(self.directory / "owner.lock", "a+")  # noqa: SIM115 - held until release()
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.close()
            raise DirInUse(self.directory, self.what, self.holder()) from None
        self._fh = fh
        self._owner.write_text(f"{os.getpid()}\n")
        return self

    def holder(self) -> int | None:
        """The pid that holds (or last held) the directory, if it said."""
        with contextlib.suppress(OSError, ValueError):
            return int(self._owner.read_text().split()[0])
        return None

    def release(self) -> None:
        if self._fh is not None:
            with contextlib.suppress(OSError):
                self._owner.unlink()
            self._fh.close()  # releases the flock
            self._fh = None

    def __enter__(self) -> Self:
        return self.acquire()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()
