"""Free disk space as a health component.

Seen: a full disk killed a writer while health stayed green, and requests were lost. The
broker's logs, the pattern store and the run state live under the data directories; when
the free space of any falls below MIN_FREE_DISK_MB, health says so (`unhealthy: disk
full`, which fails /health/ready) before the broker or a service fails on a write.
"""

from __future__ import annotations

import shutil
from collections.abc import Awaitable, Callable, Iterable, Mapping
from pathlib import Path

from services.kit.ops.procstate import DISK_FULL


def free_mb(path: Path) -> float | None:
    """Free space (MB) of the file system holding `path` (its nearest existing parent);
    None for one that holds no data (/proc, /sys: size 0) or cannot be read."""
    while not path.exists() and path != path.parent:
        path = path.parent
    try:
        usage = shutil.disk_usage(path)
    except OSError:
        return None
    return usage.free / (1 << 20) if usage.total else None


def disk_probe(
    paths: Iterable[str], min_free_mb: float
) -> Callable[[], Awaitable[Mapping[str, str]]]:
    """A health probe over the distinct file systems of `paths`."""
    where = [Path(p).resolve() for p in dict.fromkeys(paths) if p]

    async def disk() -> Mapping[str, str]:
        free = [(p, mb) for p in where if (mb := free_mb(p)) is not None]
        low = [(p, mb) for p, mb in free if mb < min_free_mb]
        if low:
            said = "; ".join(f"{mb:,.0f} MB free at {p}" for p, mb in low)
            return {"disk": f"{DISK_FULL}: {said} (below MIN_FREE_DISK_MB, {min_free_mb:g})"}
        if not free:
            return {"disk": "healthy: no data directory on a disk"}
        return {"disk": f"healthy: {min(mb for _, mb in free):,.0f} MB free"}

    return disk
