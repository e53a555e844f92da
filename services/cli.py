"""`testdata`: run the services, a broker, or talk to them as a caller or an agent would."""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import logging
import signal
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from services.kit.settings import Settings, get_settings

log = logging.getLogger("testdata.cli")


def _setup_logging(level: str, name: str = "testdata") -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        stream=sys.stderr,
        format=f"%(asctime)s %(levelname)s [{name}] %(name)s: %(message)s",
    )
    logging.getLogger("aiokafka").setLevel(logging.WARNING)


# ---- service processes ---------------------------------------------------------------
async def _serve(
    names: list[str], settings: Settings, grpc_port: int | None, http_port: int | None
) -> None:
    from services.app import App

    if not settings.kafka_bootstrap_servers:
        raise SystemExit(
            "KAFKA_BOOTSTRAP_SERVERS is not set: start a broker (testdata broker) "
            "or run everything with `testdata run`"
        )
    app = App(settings, settings.kafka_bootstrap_servers)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await app.start(names, grpc_port=grpc_port, http_port=http_port)
    # Start-up objects (pools, schemas, clients) never become garbage: keep them out of
    # the collector's scans, and collect young objects less often (shorter pauses).
    gc.freeze()
    gc.set_threshold(20_000, 20, 20)
    log.info("started %s", ", ".join(names))
    waiter = asyncio.create_task(app.wait())
    stopper = asyncio.create_task(stop.wait())
    await asyncio.wait([waiter, stopper], return_when=asyncio.FIRST_COMPLETED)
    await app.stop()
    if waiter.done() and waiter.exception():
        raise SystemExit(f"service failed: {waiter.exception()}")


def _event_loop_runner() -> Any:
    """uvloop where installed (faster socket I/O on every Kafka and gRPC hop)."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run
    return uvloop.run


def cmd_service(args: argparse.Namespace) -> int:
    settings = get_settings()
    _setup_logging(settings.log_level, args.name)
    _event_loop_runner()(_serve([args.name], settings, args.grpc_port, args.http_port))
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    """Everything on one machine: embedded broker (unless KAFKA_BOOTSTRAP_SERVERS), the
    router, the generators and the bridge, each in its own process."""
    from services.supervisor import Supervisor

    settings = get_settings()
    _setup_logging(settings.log_level, "run")
    stopping = False

    def _stop(*_: Any) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    sup = Supervisor(settings)
    try:
        sup.start()
    except RuntimeError as exc:
        log.error("%s", exc)
        return 1
    embedded = "   (embedded broker, in memory)" if sup.broker else ""
    print(
        f"""
test-data agent is running
  Kafka bootstrap   {sup.bootstrap}{embedded}
  gRPC              127.0.0.1:{settings.grpc_port}   testdata.v1.TestDataService (reflection on)
  HTTP              http://127.0.0.1:{settings.http_port}/health  /health/ready  /metrics
  requests topic    {settings.topic_prefix}testdata.requests
Try:  .venv/bin/testdata generate --entity cart --count 5
Ctrl-C stops everything.
""",
        flush=True,
    )
    code = 0
    try:
        while not stopping:
            if (name := sup.exited()) is not None:
                log.error("service %s exited; stopping the others", name)
                code = 1
                break
            time.sleep(0.5)
    finally:
        sup.stop()
    return code


def cmd_broker(args: argparse.Namespace) -> int:
    from services.kit.broker import EmbeddedBroker
    from services.kit.topics import Topics

    settings = get_settings()
    fixed = Topics(settings.topic_prefix).fixed()
    topics = {t.name: t.partitions for t in fixed}
    with EmbeddedBroker(topics, topic_configs={t.name: t.configs() for t in fixed}) as broker:
        print(f"KAFKA_BOOTSTRAP_SERVERS={broker.bootstrap_servers}", flush=True)
        done = False

        def _stop(*_: Any) -> None:
            nonlocal done
            done = True

        signal.signal(signal.SIGINT, _stop)
        signal.signal(signal.SIGTERM, _stop)
        while not done:
            time.sleep(0.2)
    return 0


async def _topics_create(settings: Settings, replication: int | None = None) -> list[str]:
    """Create the catalogue's topics with their partitions and configs; report each."""
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    from services.kit.topics import Topics

    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap_servers)
    await admin.start()
    try:
        specs = Topics(settings.topic_prefix).fixed()
        resp = await admin.create_topics(
            [
                NewTopic(
                    t.name, t.partitions, replication or t.replication, topic_configs=t.configs()
                )
                for t in specs
            ]
        )
        out = []
        for topic, code, *msg in resp.topic_errors:
            out.append(
                f"{topic}: "
                + (
                    "created"
                    if code == 0
                    else "exists"
                    if code == 36
                    else f"error {code} {msg[0] if msg else ''}"
                )
            )
        return out
    finally:
        await admin.close()


def cmd_topics(args: argparse.Namespace) -> int:
    settings = get_settings()
    if not settings.kafka_bootstrap_servers:
        raise SystemExit("KAFKA_BOOTSTRAP_SERVERS is required")
    for line in asyncio.run(_topics_create(settings, args.replication)):
        print(line)
    return 0


# ---- callers ---------------------------------------------------------------------------
def _request_dict(args: argparse.Namespace) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(Path(args.request).read_text()) if args.request else {}
    for key in ("entity", "domain", "count", "seed", "context"):
        if getattr(args, key, None) is not None:
            body[key] = getattr(args, key)
    if args.format:
        body["output_format"] = args.format.upper()
    if args.hint:
        body["hints"] = args.hint
    return body


class _Progress:
    def __init__(self, total: int, enabled: bool):
        self.total, self.enabled, self.t0, self.n = total, enabled, time.monotonic(), 0

    def add(self, n: int) -> None:
        self.n += n
        if self.enabled:
            rate = self.n / max(1e-6, time.monotonic() - self.t0)
            frac = self.n / self.total if self.total else 1
            bar = "#" * int(30 * frac)
            print(
                f"\r[{bar:<30}] {self.n:,}/{self.total:,} records  {rate:,.0f}/s",
                end="",
                file=sys.stderr,
                flush=True,
            )

    def done(self) -> None:
        if self.enabled:
            print(file=sys.stderr)


def cmd_generate(args: argparse.Namespace) -> int:
    """A gRPC caller: unary GenerateData, or --stream for GenerateDataStream."""
    import grpc
    from google.protobuf import json_format

    from services.proto.testdata.v1 import test_data_pb2 as pb
    from services.proto.testdata.v1 import test_data_pb2_grpc as pb_grpc

    msg = json_format.ParseDict(_request_dict(args), pb.GenerateRequest())
    out = open(args.out, "w") if args.out else sys.stdout  # noqa: SIM115
    with grpc.insecure_channel(
        args.target, options=[("grpc.max_receive_message_length", 256 * 1024 * 1024)]
    ) as ch:
        stub = pb_grpc.TestDataServiceStub(ch)
        try:
            if args.stream:
                progress = _Progress(msg.count, sys.stderr.isatty() or bool(args.out))
                md = None
                for chunk in stub.GenerateDataStream(msg, timeout=args.timeout):
                    out.write(chunk.data)
                    progress.add(chunk.record_count)
                    md = chunk.metadata if chunk.is_final else md
                progress.done()
                meta = json_format.MessageToDict(md) if md is not None else {}
            else:
                resp = stub.GenerateData(msg, timeout=args.timeout)
                if not resp.success:
                    print(f"error: {resp.error}", file=sys.stderr)
                    return 1
                out.write(resp.data)
                meta = json_format.MessageToDict(resp.metadata)
        except grpc.RpcError as exc:
            print(f"error: {exc.code().name}: {exc.details()}", file=sys.stderr)
            return 1
    if out is not sys.stdout:
        out.close()
    else:
        print()
    print(json.dumps(meta, indent=2), file=sys.stderr)
    return 0


async def _publish(args: argparse.Namespace, settings: Settings) -> int:
    """An agent: put a request on the requests topic, read its chunks from results."""
    from services.core.models import GenerateRequest
    from services.kit.codec import AVRO, JSON, get_codec
    from services.kit.kafka import (
        assign_all,
        make_consumer,
        make_producer,
        resolve_idempotence,
    )
    from services.kit.topics import Topics

    topics = Topics(settings.topic_prefix)
    body = _request_dict(args)
    body.setdefault("request_id", f"agent-{uuid.uuid4().hex[:12]}")
    bootstrap = settings.kafka_bootstrap_servers
    if not bootstrap:
        raise SystemExit("KAFKA_BOOTSTRAP_SERVERS is required (printed by `testdata run`)")
    consumer = make_consumer(bootstrap, None)
    await consumer.start()
    await assign_all(consumer, topics.results, at_end=True)
    idempotence = await resolve_idempotence(bootstrap, settings.kafka_idempotence)
    producer = make_producer(bootstrap, idempotence=idempotence)
    await producer.start()
    codec = get_codec()
    if args.json:
        value, ctype = json.dumps(body).encode(), JSON
    else:
        value, ctype = codec.encode_request(GenerateRequest.model_validate(body)), AVRO
    await producer.send_and_wait(
        topics.requests,
        value,
        key=body["request_id"].encode(),
        headers=[("content-type", ctype.encode())],
    )
    await producer.stop()
    out = open(args.out, "w") if args.out else sys.stdout  # noqa: SIM115
    code, seen = 0, -1
    deadline = time.monotonic() + args.timeout
    try:
        while time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=200)
            for records in batch.values():
                for r in records:
                    chunk = codec.decode_chunk(r.value or b"")
                    if chunk.request_id != body["request_id"] or chunk.chunk_index <= seen:
                        continue
                    seen = chunk.chunk_index
                    if not chunk.success:
                        print(f"error: {chunk.error}", file=sys.stderr)
                        return 1
                    out.write(chunk.data)
                    if chunk.is_final:
                        print(
                            json.dumps(
                                chunk.metadata.model_dump() if chunk.metadata else {}, indent=2
                            ),
                            file=sys.stderr,
                        )
                        return 0
        print("error: timed out waiting for results", file=sys.stderr)
        code = 1
    finally:
        await consumer.stop()
        if out is not sys.stdout:
            out.close()
    return code


def cmd_publish(args: argparse.Namespace) -> int:
    return asyncio.run(_publish(args, get_settings()))


def _caller_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--request", help="JSON file with a GenerateRequest (fields as in the proto)")
    p.add_argument("--entity")
    p.add_argument("--domain")
    p.add_argument("--count", type=int)
    p.add_argument("--seed", type=int)
    p.add_argument("--context")
    p.add_argument("--hint", action="append")
    p.add_argument("--format", choices=["json", "csv", "sql", "JSON", "CSV", "SQL"])
    p.add_argument("--out", help="write the data here instead of stdout")
    p.add_argument("--timeout", type=float, default=300.0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="testdata", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("run", help="embedded broker + every service (make run)").set_defaults(
        fn=cmd_run
    )
    sub.add_parser("broker", help="the embedded broker alone").set_defaults(fn=cmd_broker)
    p = sub.add_parser("service", help="one service alone")
    p.add_argument("name", choices=["router", "traditional", "llm", "bridge"])
    p.add_argument("--grpc-port", type=int)
    p.add_argument("--http-port", type=int)
    p.set_defaults(fn=cmd_service)
    p = sub.add_parser("generate", help="call the gRPC bridge")
    _caller_args(p)
    p.add_argument("--stream", action="store_true", help="GenerateDataStream with progress")
    p.add_argument("--target", default=f"127.0.0.1:{Settings().grpc_port}")
    p.set_defaults(fn=cmd_generate, entity="cart")
    p = sub.add_parser("publish", help="publish a request to Kafka as an agent does")
    _caller_args(p)
    p.add_argument("--json", action="store_true", help="publish JSON instead of Avro")
    p.set_defaults(fn=cmd_publish)
    p = sub.add_parser("topics", help="topic administration")
    tsub = p.add_subparsers(dest="topics_command", required=True)
    p = tsub.add_parser("create", help="create the catalogue's topics on a cluster")
    p.add_argument("--replication", type=int, help="override the catalogue's replication")
    p.set_defaults(fn=cmd_topics)
    args = parser.parse_args(argv)
    return int(args.fn(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
