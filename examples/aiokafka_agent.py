"""An agent in plain aiokafka: publish a JSON request, read its chunks by request id.

No project code needed: the router accepts JSON requests (content-type:
application/json) and, without a reply-to header, writes the chunks to
`testdata.results`, keyed by request id.

    .venv/bin/python examples/aiokafka_agent.py

It finds the broker as every `testdata` command does: KAFKA_BOOTSTRAP_SERVERS, else the
run file of a running `make run` (.data/run.json in the directory it was started from, or
$DATA_DIR/run.json), else 127.0.0.1:9092. Prints the dataset as one JSON array.

Chunks are Avro framed as `C3 01`, the writer schema's 8-byte fingerprint, then Avro
binary: this example decodes them with fastavro and schemas/avro/result_chunk.avsc (chunks
are assembled in `chunk_index` order; a redelivered request may repeat some, which are
skipped).
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import uuid
from pathlib import Path

import fastavro
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaConnectionError

ROOT = Path(__file__).resolve().parents[1]
AVRO_DIR = ROOT / "schemas" / "avro"


def chunk_reader():
    """Decode a result chunk: 2 magic bytes + 8-byte schema fingerprint, then Avro binary."""
    named: dict = {}
    for name in ("generate_request", "routed_request"):  # the types a chunk refers to
        fastavro.parse_schema(json.loads((AVRO_DIR / f"{name}.avsc").read_text()), named)
    schema = fastavro.parse_schema(json.loads((AVRO_DIR / "result_chunk.avsc").read_text()), named)

    def decode(value: bytes) -> dict:
        return fastavro.schemaless_reader(io.BytesIO(value[10:]), schema)

    return decode


def find_bootstrap() -> str:
    """KAFKA_BOOTSTRAP_SERVERS, else the running `make run`'s run file, else 9092."""
    if os.environ.get("KAFKA_BOOTSTRAP_SERVERS"):
        return os.environ["KAFKA_BOOTSTRAP_SERVERS"]
    run_file = Path(os.environ.get("DATA_DIR", ".data")) / "run.json"  # as testdata reads it
    try:
        return json.loads(run_file.read_text())["bootstrap"]
    except (OSError, ValueError, KeyError):
        return "127.0.0.1:9092"


async def main() -> None:
    bootstrap = find_bootstrap()
    request_id = f"agent-{uuid.uuid4().hex[:12]}"
    request = {"request_id": request_id, "entity": "cart", "count": 5, "seed": 42}

    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    try:
        await consumer.start()
    except KafkaConnectionError:
        raise SystemExit(f"no Kafka broker at {bootstrap}: is `make run` running?") from None
    parts = consumer.partitions_for_topic("testdata.results") or set()
    while not parts:
        await consumer._client.force_metadata_update()
        parts = consumer.partitions_for_topic("testdata.results") or set()
    tps = [TopicPartition("testdata.results", p) for p in parts]
    consumer.assign(tps)
    await consumer.seek_to_end(*tps)  # only what comes after our request
    for tp in tps:
        await consumer.position(tp)

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=True)
    await producer.start()
    await producer.send_and_wait(
        "testdata.requests",
        json.dumps(request).encode(),
        key=request_id.encode(),
        headers=[("content-type", b"application/json")],
    )
    await producer.stop()

    decode, records, seen = chunk_reader(), [], set()
    try:
        while True:
            batch = await consumer.getmany(timeout_ms=1000)
            for msgs in batch.values():
                for m in msgs:
                    if m.key != request_id.encode():
                        continue
                    if any(k == "log-copy" for k, _ in m.headers or ()):
                        continue  # the log's JSON copy of a CSV/SQL chunk, not a reply
                    chunk = decode(m.value)
                    if chunk["chunk_index"] in seen:
                        continue  # a redelivery's duplicate
                    seen.add(chunk["chunk_index"])
                    if not chunk["success"]:
                        raise SystemExit(f"failed: {chunk['error']}")
                    records += json.loads(chunk["data"] or "[]")
                    if chunk["is_final"]:
                        print(json.dumps(records))
                        return
    finally:
        await consumer.stop()


if __name__ == "__main__":
    asyncio.run(main())
