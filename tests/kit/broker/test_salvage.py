"""Damaged files in the broker's data directory: what is intact is kept, the rest is
quarantined and counted, and the broker starts (kit.broker.salvage, run by EmbeddedBroker.start).

One broker writes five records (five batches) to a topic per damage case; it is stopped,
each topic's segment is damaged its own way, and a second start must serve every intact
record. Kafka alone would truncate a partition at its first bad batch (after an unclean
shutdown) or refuse to start (a bad checkpoint or meta.properties).
"""

from __future__ import annotations

import asyncio
import os
import struct
from pathlib import Path

import pytest

from services.kit.broker.embedded import EmbeddedBroker
from services.kit.broker.salvage import split_segment
from services.kit.runtime.kafka import assign_all, make_consumer, make_producer
from tests.support import HANG_GUARD_S

CASES = ("bad-length", "zero-block", "torn-tail", "bad-index", "empty-log", "not-a-log")


async def _write(bootstrap: str, topics: list[str]) -> None:
    producer = make_producer(bootstrap, linger_ms=0)
    await producer.start()
    try:
        for topic in topics:
            for i in range(5):  # one batch each
                await producer.send_and_wait(topic, b"record-%d" % i, partition=0)
    finally:
        await producer.stop()


async def _read_all(bootstrap: str, topic: str) -> list[bytes]:
    consumer = make_consumer(bootstrap, None)
    await consumer.start()
    try:
        tps = await assign_all(consumer, topic, at_end=False)
        end = (await consumer.end_offsets(tps))[tps[0]]
        out: list[bytes] = []
        async with asyncio.timeout(HANG_GUARD_S):
            while await consumer.position(tps[0]) < end:
                for records in (await consumer.getmany(timeout_ms=200)).values():
                    out += [r.value for r in records]
        return out
    finally:
        await consumer.stop()


def _batches(segment: Path) -> list[tuple[int, int]]:
    good, bad = split_segment(segment.read_bytes())
    assert not bad
    return good


def _damage(kraft: Path, case: str) -> None:
    segment = kraft / f"{case}-0" / "00000000000000000000.log"
    data = bytearray(segment.read_bytes())
    spans = _batches(segment)
    assert len(spans) == 5
    if case == "bad-length":  # the second batch's length field says 2 GB
        start = spans[1][0]
        data[start + 8 : start + 12] = struct.pack(">i", 0x7FFFFFF0)
    elif case == "zero-block":  # the third batch zero-filled
        a, b = spans[2]
        data[a:b] = bytes(b - a)
    elif case == "torn-tail":  # the last batch half written
        del data[spans[4][0] + (spans[4][1] - spans[4][0]) // 2 :]
    elif case == "bad-index":
        segment.with_suffix(".index").write_bytes(os.urandom(4096))
        segment.with_suffix(".timeindex").write_bytes(b"not an index")
        return
    elif case == "empty-log":
        data = bytearray()
    elif case == "not-a-log":
        data = bytearray(b"this is not a Kafka log segment\n" * 100)
    segment.write_bytes(bytes(data))


EXPECTED = {
    "bad-length": [b"record-0", b"record-2", b"record-3", b"record-4"],
    "zero-block": [b"record-0", b"record-1", b"record-3", b"record-4"],
    "torn-tail": [b"record-0", b"record-1", b"record-2", b"record-3"],
    "bad-index": [b"record-%d" % i for i in range(5)],
    "empty-log": [],
    "not-a-log": [],
}


@pytest.fixture(scope="module")
def damaged(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, EmbeddedBroker]:
    data = tmp_path_factory.mktemp("kafka")
    topics = dict.fromkeys(CASES, 1)
    with EmbeddedBroker(topics, data_dir=data) as first:
        asyncio.run(_write(first.bootstrap_servers, list(CASES)))
    for case in CASES:
        _damage(data / "kraft", case)
    (data / "kraft" / "recovery-point-offset-checkpoint").write_text("garbage\n")
    return data, EmbeddedBroker(data_dir=data)


@pytest.mark.process  # a broker of its own
@pytest.mark.slow
def test_every_damage_keeps_what_is_intact_and_quarantines_the_rest(damaged) -> None:
    data, broker = damaged
    with broker:
        got = {case: asyncio.run(_read_all(broker.bootstrap_servers, case)) for case in CASES}
        report = broker.salvaged
    assert got == EXPECTED
    names = {
        Path(d.path).parent.name if d.path.endswith(".log") else Path(d.path).name
        for d in report.damaged
    }
    # bad-index is Kafka's to rebuild; an empty segment is a valid (empty) segment
    assert names == {
        "bad-length-0",
        "zero-block-0",
        "torn-tail-0",
        "not-a-log-0",
        "recovery-point-offset-checkpoint",
    }
    assert report.quarantine is not None and report.quarantine.is_relative_to(data)
    kept = {p.relative_to(report.quarantine).as_posix() for p in report.quarantine.rglob("*")}
    assert "bad-length-0/00000000000000000000.log" in kept
    assert "recovery-point-offset-checkpoint" in kept
    assert report.quarantined_bytes > 0
    assert "5 damaged file(s) repaired" in report.summary()


@pytest.mark.process  # a broker of its own
@pytest.mark.slow
def test_unreadable_meta_properties_sets_the_directory_aside_and_starts(tmp_path: Path) -> None:
    data = tmp_path / "kafka"
    with EmbeddedBroker({"kept": 1}, data_dir=data) as first:
        asyncio.run(_write(first.bootstrap_servers, ["kept"]))
    (data / "kraft" / "meta.properties").write_bytes(b"\x00\x01garbage")
    with EmbeddedBroker({"kept": 1}, data_dir=data) as second:
        assert asyncio.run(_read_all(second.bootstrap_servers, "kept")) == []
        report = second.salvaged
    assert report.damaged and "meta.properties is unreadable" in report.damaged[0].what
    assert report.quarantine is not None
    assert (report.quarantine / "kraft" / "kept-0" / "00000000000000000000.log").is_file()


def test_split_segment_resynchronises_after_garbage() -> None:
    assert split_segment(b"") == ([], [])
    assert split_segment(b"\x00" * 100) == ([], [(0, 100)])
