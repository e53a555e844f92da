"""One owner per data directory (kit.broker.dirlock): refused at once naming the holder, and
released by the kernel when the holder dies, however it dies."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from services.kit.broker.dirlock import DirLock
from services.kit.broker.errors import DirInUse

ROOT = Path(__file__).resolve().parents[3]


def test_second_owner_is_refused_naming_the_first(tmp_path: Path) -> None:
    refused = rf"in use by another instance \(pid {os.getpid()}\)"
    with DirLock(tmp_path / "d"), pytest.raises(DirInUse, match=refused):
        DirLock(tmp_path / "d").acquire()
    with DirLock(tmp_path / "d") as again:  # released: free again
        assert again.holder() == os.getpid()


def test_a_killed_owner_leaves_no_stale_lock(tmp_path: Path) -> None:
    script = (
        "import sys, time; from services.kit.broker.dirlock import DirLock\n"
        "lock = DirLock(sys.argv[1]).acquire(); print('held', flush=True); time.sleep(600)\n"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", script, str(tmp_path)], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with pytest.raises(DirInUse, match=rf"pid {holder.pid}"):
            DirLock(tmp_path).acquire()
        holder.send_signal(signal.SIGKILL)
        holder.wait()
        DirLock(tmp_path).acquire().release()  # no stale lock
    finally:
        holder.kill()
        holder.wait()
