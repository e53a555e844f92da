"""A topic is usable without an ERROR line the moment `ensure_topics_exist` returns: seen
at `make run` start-up, the bridge's new reply topic gave "ERROR aiokafka.consumer.fetcher:
Failed fetch offsets from 1: NotLeaderForPartitionError" (the metadata named a leader that
did not lead the partition yet)."""

from __future__ import annotations

import logging
import uuid

from services.kit.runtime.kafka import assign_all, ensure_topics_exist, make_consumer


async def test_new_topics_answer_offsets_at_once_without_an_error_line(embedded_broker, caplog):
    caplog.set_level(logging.INFO, logger="aiokafka")
    bootstrap = embedded_broker.bootstrap_servers
    names = {f"ready-{uuid.uuid4().hex[:8]}": 4 for _ in range(10)}
    for name, partitions in names.items():  # as the bridge starts its reply reader
        await ensure_topics_exist(bootstrap, {name: partitions})
        consumer = make_consumer(bootstrap, None)
        await consumer.start()
        try:
            tps = await assign_all(consumer, name, at_end=True)  # ListOffsets on each
            assert [await consumer.position(tp) for tp in tps] == [0] * partitions
        finally:
            await consumer.stop()
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []
