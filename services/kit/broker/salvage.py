"""Before the embedded broker starts: damaged files under its data directory are cut back
to what is intact, and the rest is moved to a quarantine, counted and named.

Why: Kafka checks its logs only after an unclean shutdown, and then truncates a partition
at its first bad record batch, deleting every later batch and segment of it: intact records
after one damaged spot would be lost without a word, and a damaged checkpoint or
meta.properties stops the broker from starting at all. Here every segment is read batch
by batch (length, magic and CRC-32C of each record batch); a damaged span is copied to the
quarantine and the segment rewritten with its intact batches only (an offset gap, which
Kafka allows as after compaction), and its indexes are removed so Kafka rebuilds them.
A damaged checkpoint file is quarantined (Kafka then recovers from the logs themselves);
an unreadable meta.properties quarantines the whole directory, which is then formatted
anew: the broker starts, empty, and the report says where the old data went.

Pure reading and file moves; no broker, no network.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import time
from dataclasses import dataclass, field
from pathlib import Path

from aiokafka.record.util import calc_crc32c

#: base offset, batch length, partition leader epoch, magic, crc (the v2 batch header)
_HEAD = struct.Struct(">qiibI")
_HEADER_BYTES = 61  # the whole v2 batch header, records excluded
_CRC_FROM = 21  # the CRC covers the bytes from the attributes field to the batch's end
_INDEXES = (".index", ".timeindex", ".txnindex")
_CHECKPOINTS = (
    "recovery-point-offset-checkpoint",
    "replication-offset-checkpoint",
    "log-start-offset-checkpoint",
    "cleaner-offset-checkpoint",
)


@dataclass
class Damage:
    """One damaged file: what was kept and what went to the quarantine."""

    path: str
    what: str
    kept_batches: int = 0
    quarantined_bytes: int = 0


@dataclass
class Report:
    quarantine: Path | None = None
    damaged: list[Damage] = field(default_factory=list)

    @property
    def quarantined_bytes(self) -> int:
        return sum(d.quarantined_bytes for d in self.damaged)

    def summary(self) -> str:
        """One line for the banner and /health: empty when nothing was damaged."""
        if not self.damaged:
            return ""
        return (
            f"{len(self.damaged)} damaged file(s) repaired, {self.quarantined_bytes:,} bytes "
            f"quarantined in {self.quarantine}"
        )


def _batch_at(data: bytes, pos: int, min_base: int) -> int:
    """The size of a valid record batch at `pos`, or 0."""
    if pos + _HEADER_BYTES > len(data):
        return 0
    base, length, _epoch, magic, crc = _HEAD.unpack_from(data, pos)
    size = 12 + length
    if magic != 2 or length < _HEADER_BYTES - 12 or pos + size > len(data) or base < min_base:
        return 0
    if calc_crc32c(data[pos + _CRC_FROM : pos + size]) != crc:
        return 0
    return size


def split_segment(data: bytes) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """(intact spans, damaged spans) of a segment's bytes, as (start, end) pairs."""
    good: list[tuple[int, int]] = []
    bad: list[tuple[int, int]] = []
    pos, min_base = 0, 0
    while pos < len(data):
        size = _batch_at(data, pos, min_base)
        if size:
            good.append((pos, pos + size))
            min_base = struct.unpack_from(">q", data, pos)[0] + 1
            pos += size
            continue
        start = pos  # resynchronise at the next valid batch, if any
        pos += 1
        while pos < len(data) and not _batch_at(data, pos, min_base):
            pos += 1
        bad.append((start, pos))
    return good, bad


def _valid_checkpoint(path: Path) -> bool:
    """Kafka's offset checkpoint format (empty, or version 0, a count, then that many
    `topic partition offset` lines)."""
    try:
        lines = path.read_text().splitlines()
        if not lines:
            return True
        if lines[0].strip() != "0":
            return False
        count = int(lines[1])
        entries = [line.split() for line in lines[2:] if line.strip()]
        return len(entries) == count and all(
            len(e) == 3 and int(e[1]) >= 0 and int(e[2]) >= 0 for e in entries
        )
    except (OSError, ValueError, IndexError, UnicodeDecodeError):
        return False


def _valid_meta(path: Path) -> bool:
    try:
        props = dict(
            line.split("=", 1)
            for line in path.read_text().splitlines()
            if "=" in line and not line.startswith("#")
        )
    except (OSError, UnicodeDecodeError, ValueError):
        return False
    return bool(props.get("cluster.id")) and bool(props.get("node.id", "").strip().isdigit())


class Salvager:
    """Checks one broker directory (`kraft`) and keeps what is damaged in `quarantine`."""

    def __init__(self, kraft: Path, quarantine_root: Path):
        self.kraft = kraft
        self.root = quarantine_root
        self.report = Report()
        self._here: Path | None = None

    def _quarantine(self) -> Path:
        if self._here is None:
            self._here = self.root / time.strftime("%Y%m%dT%H%M%S")
            self._here.mkdir(parents=True, exist_ok=True)
            self.report.quarantine = self._here
        return self._here

    def _keep(self, path: Path, data: bytes | None = None) -> Path:
        """Copy (or move, when `data` is None) `path` into the quarantine."""
        dest = self._quarantine() / path.relative_to(self.kraft)
        dest.parent.mkdir(parents=True, exist_ok=True)
        if data is None:
            shutil.move(str(path), dest)
        else:
            dest.write_bytes(data)
        return dest

    def run(self) -> Report:
        if not self.kraft.is_dir():
            return self.report
        meta = self.kraft / "meta.properties"
        if meta.exists() and not _valid_meta(meta):
            self._everything("meta.properties is unreadable: the directory was set aside")
            return self.report
        for name in _CHECKPOINTS:
            path = self.kraft / name
            if path.exists() and not _valid_checkpoint(path):
                size = path.stat().st_size
                self._keep(path)
                self.report.damaged.append(Damage(str(path), "checkpoint unreadable", 0, size))
        for partition in sorted(p for p in self.kraft.iterdir() if p.is_dir()):
            self._partition(partition)
        if self.report.damaged:
            # make Kafka check and re-index everything at its next start
            (self.kraft / ".kafka_cleanshutdown").unlink(missing_ok=True)
        return self.report

    def _everything(self, what: str) -> None:
        size = sum(f.stat().st_size for f in self.kraft.rglob("*") if f.is_file())
        dest = self._quarantine() / self.kraft.name
        shutil.move(str(self.kraft), dest)
        self.report.damaged.append(Damage(str(self.kraft), what, 0, size))

    def _partition(self, directory: Path) -> None:
        for segment in sorted(directory.glob("*.log")):
            data = segment.read_bytes()
            good, bad = split_segment(data)
            if not bad:
                continue
            lost = b"".join(data[a:b] for a, b in bad)
            dest = self._keep(segment, lost)
            dest.with_suffix(".json").write_text(
                json.dumps({"segment": str(segment), "damaged_spans": bad, "kept": good})
            )
            tmp = segment.with_suffix(".salvage")
            with tmp.open("wb") as fh:
                for a, b in good:
                    fh.write(data[a:b])
                fh.flush()
                os.fsync(fh.fileno())
            tmp.replace(segment)
            for suffix in _INDEXES:
                segment.with_suffix(suffix).unlink(missing_ok=True)
            self.report.damaged.append(
                Damage(str(segment), "damaged record batches", len(good), len(lost))
            )


def salvage(kraft: Path, quarantine_root: Path) -> Report:
    """Repair the broker directory `kraft` in place (see the module docstring)."""
    return Salvager(kraft, quarantine_root).run()
