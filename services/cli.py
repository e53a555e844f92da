"""`testdata`: run the services, a broker, or talk to them as a caller or an agent would.

A user's mistake (a missing or malformed --request file, a bad --anchor, an unreachable
broker or bridge, an --out that cannot be written) is answered with one line on stderr
and a non-zero exit, never a traceback: the line says what to fix.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import logging
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TextIO, TypeVar

from services.kit.console import bootstrap_arg, bootstrap_for, reach_broker
from services.kit.errors import UserError
from services.kit.ops.logs import one_line_handlers
from services.kit.settings import Settings, get_settings

if TYPE_CHECKING:
    from services.kit.ops.runfile import RunFile
    from services.patterns import PatternStore
    from services.supervisor import Supervisor

log = logging.getLogger("testdata.cli")
T = TypeVar("T")
EXIT_USAGE = 2
#: What `generate` and `publish` ask for when neither --request nor --entity names it.
DEFAULT_ENTITY = "cart"


class _Parser(argparse.ArgumentParser):
    """argparse whose usage errors are one line (with a pointer to --help), not a usage
    block followed by the error."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _setup_logging(level: str, name: str = "testdata") -> None:
    logging.basicConfig(level=getattr(logging, level.upper(), logging.INFO), stream=sys.stderr)
    logging.getLogger("aiokafka").setLevel(logging.WARNING)
    one_line_handlers(f"%(asctime)s %(levelname)s [{name}] %(name)s: %(message)s")


# ---- service processes ---------------------------------------------------------------
async def _serve(
    names: list[str], settings: Settings, grpc_port: int | None, http_port: int | None
) -> None:
    """Start `names` in this process and serve until SIGINT/SIGTERM; a signal during the
    start stops it too (the supervisor may stop a run that is still coming up)."""
    from services.app import App
    from services.kit.ops.procstate import Ready, report_ready

    if not settings.kafka_bootstrap_servers:
        raise UserError(
            "KAFKA_BOOTSTRAP_SERVERS is not set: start a broker (testdata broker) "
            "or run everything with `testdata run`"
        )
    app = App(settings, settings.kafka_bootstrap_servers)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    stopper = asyncio.create_task(stop.wait())
    starter = asyncio.create_task(app.start(names, grpc_port=grpc_port, http_port=http_port))
    try:
        await asyncio.wait([starter, stopper], return_when=asyncio.FIRST_COMPLETED)
        if not starter.done():  # stopped while starting: nothing to report
            starter.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await starter
            await app.stop()
            return
        starter.result()  # raises what failed the start
    except BaseException:
        await app.stop()  # release what did start (clients, reply topic) before exiting
        raise
    # Start-up objects (pools, schemas, clients) never become garbage: keep them out of
    # the collector's scans, and collect young objects less often (shorter pauses).
    gc.freeze()
    gc.set_threshold(20_000, 20, 20)
    log.info("started %s", ", ".join(names))
    report_ready(names[0], Ready(os.getpid(), app.grpc_port, app.http_port))
    beating = asyncio.create_task(_heartbeat(names[0], app))
    waiter = asyncio.create_task(app.wait())
    await asyncio.wait([waiter, stopper], return_when=asyncio.FIRST_COMPLETED)
    beating.cancel()
    await app.stop()
    if waiter.done() and waiter.exception():
        raise UserError(f"service failed: {_one_line(str(waiter.exception()))}")


async def _heartbeat(name: str, app: Any) -> None:
    """Written from the event loop, so a frozen loop (or process) stops it."""
    from services.kit.ops.procstate import HEARTBEAT_SECONDS, write_heartbeat

    while True:
        try:
            write_heartbeat(name, app.stuck())
        except OSError as exc:  # a full disk: the heartbeat goes stale, health says so
            log.warning("heartbeat not written: %s", exc)
        await asyncio.sleep(HEARTBEAT_SECONDS)


def _event_loop_runner() -> Any:
    """uvloop where installed (faster socket I/O on every Kafka and gRPC hop)."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run
    return uvloop.run


def cmd_service(args: argparse.Namespace) -> int:
    """One service in this process. Why it cannot start goes to stderr and, under
    `testdata run`, to the supervisor, which ends a start-up with it."""
    from aiokafka.errors import KafkaError

    from services.kit.ops.errors import StartupError
    from services.kit.ops.procstate import EXIT_STARTUP, EXIT_UNAVAILABLE, report_startup_error

    settings = get_settings()
    _setup_logging(settings.log_level, args.name)
    http_port = args.http_port
    if http_port is None and args.name == "bridge":
        http_port = settings.http_port  # the bridge serves /health and /metrics (HTTP_PORT)
    try:
        _event_loop_runner()(_serve([args.name], settings, args.grpc_port, http_port))
    except StartupError as exc:  # a restart would not help: say why and exit for good
        log.error("%s cannot start: %s", args.name, exc)
        report_startup_error(args.name, str(exc))
        return EXIT_STARTUP
    except (KafkaError, TimeoutError) as exc:  # the broker: a restart may help
        why = (
            f"cannot use the Kafka broker at {settings.kafka_bootstrap_servers} "
            f"({type(exc).__name__})"
        )
        report_startup_error(args.name, why)
        raise UserError(f"{args.name}: {why}", EXIT_UNAVAILABLE) from exc
    except UserError as exc:
        report_startup_error(args.name, str(exc))
        raise
    return 0


def _start_seeding() -> subprocess.Popen[str]:
    """`testdata patterns seed --if-empty` beside the services' start: a new store gets the
    seed patterns on first start. Its own process, so the supervisor never holds the
    embedding model."""
    return subprocess.Popen(
        [sys.executable, "-m", "services.cli", "patterns", "seed", "--if-empty"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # Ctrl-C is `testdata run`'s to act on
    )


def _seeding_result(seeder: subprocess.Popen[str], cancelled: Callable[[], bool]) -> str:
    """The seeder's one line for the banner (a failure is reported, never fatal). Waits as
    long as it runs (a first start embeds every seed) unless `cancelled`."""
    while True:
        try:
            out, err = seeder.communicate(timeout=0.2)
            break
        except subprocess.TimeoutExpired:
            if cancelled():
                seeder.kill()
                seeder.communicate()
                return "not seeded: stopped"
    lines = (out if seeder.returncode == 0 else err).strip().splitlines()
    line = lines[-1] if lines else f"seeding exited with code {seeder.returncode}"
    return line if seeder.returncode == 0 else f"not seeded: {line}"


class _StopSignals:
    """SIGINT/SIGTERM for `testdata run`: the first asks for an orderly stop (services,
    then the broker); a second forces it (`force`: SIGKILL every child now)."""

    def __init__(self) -> None:
        self.count = 0
        self.force: Callable[[], None] = lambda: None

    def install(self) -> None:
        signal.signal(signal.SIGINT, self._handle)
        signal.signal(signal.SIGTERM, self._handle)

    @property
    def stopping(self) -> bool:
        return self.count > 0

    def _handle(self, *_: Any) -> None:
        self.count += 1
        # os.write, not print: a handler may run in the middle of another print
        if self.count == 1:
            os.write(2, b"testdata run: stopping (Ctrl-C again to force)\n")
        elif self.count == 2:
            os.write(2, b"testdata run: forcing the stop (killing every process)\n")
            self.force()


def _run_settings(args: argparse.Namespace) -> Settings:
    """The settings with `testdata run`'s flags over them."""
    flags = {"grpc_port": args.grpc_port, "http_port": args.http_port}
    flags["kafka_port"] = args.kafka_port
    return get_settings().model_copy(update={k: v for k, v in flags.items() if v is not None})


def _client_host(bind_host: str) -> str:
    """Where a client on this machine reaches a server bound to `bind_host`."""
    return "127.0.0.1" if bind_host in ("0.0.0.0", "::", "") else bind_host


def cmd_run(args: argparse.Namespace) -> int:
    """Everything on one machine: embedded broker (unless KAFKA_BOOTSTRAP_SERVERS), the
    router, the generators and the bridge, each in its own process."""
    from services.kit.broker.dirlock import DirLock
    from services.kit.broker.errors import DirInUse
    from services.kit.ops.procstate import EXIT_INTERRUPTED, EXIT_STARTUP
    from services.kit.ops.runfile import RunFile, remove_run_file, write_run_file, write_run_key
    from services.supervisor import StartupFailed, StartupInterrupted, Supervisor

    settings = _run_settings(args)
    _setup_logging(settings.log_level, "run")
    signals = _StopSignals()
    signals.install()
    try:
        instance = DirLock(settings.data_dir).acquire()  # before anything is read or written
    except DirInUse as exc:
        raise UserError(f"{exc}; stop it first (or set DATA_DIR)", EXIT_STARTUP) from exc
    store_note = ""
    if not settings.weaviate_url:  # the embedded store's file: repaired before any opens it
        from services.patterns.embedded import salvage_store

        quarantine = Path(settings.data_dir) / "quarantine" / time.strftime("%Y%m%dT%H%M%S")
        store_note = salvage_store(Path(settings.pattern_store_path), quarantine)
        if store_note:
            log.warning("%s", store_note)
    seeder = _start_seeding()
    sup = Supervisor(settings)
    sup.data_notes = [store_note] if store_note else []

    def force() -> None:
        seeder.kill()
        sup.kill()

    signals.force = force
    try:
        try:
            sup.start(cancelled=lambda: signals.stopping)
        except StartupInterrupted:
            print("testdata run: interrupted during start-up; stopped", file=sys.stderr)
            return EXIT_INTERRUPTED
        except StartupFailed as exc:  # names the service and the cause: the last line
            raise UserError(str(exc), exc.code) from exc
        patterns = _seeding_result(seeder, lambda: signals.stopping)
        host = _client_host(settings.bind_host)
        run = RunFile(
            bootstrap=sup.bootstrap,
            grpc_target=f"{host}:{sup.grpc_port}",
            http_url=f"http://{host}:{sup.http_port}",
            pid=os.getpid(),
            instance=sup.instance,
            started_at=time.time(),
        )
        write_run_key(settings.data_dir, sup.signing_key)  # for replay and export
        run_file = write_run_file(settings.data_dir, run)
        try:
            print(_banner(settings, sup, run, run_file, patterns, store_note), flush=True)
            sup.watch(lambda: signals.stopping)  # restarts a service that dies
        finally:
            remove_run_file(settings.data_dir, run.pid)
    finally:
        seeder.kill()
        seeder.wait()
        sup.stop()
        instance.release()
    if signals.count > 1:
        print("testdata run: stopped (forced)", file=sys.stderr)
        return EXIT_INTERRUPTED
    print("testdata run: stopped", file=sys.stderr)
    return 0


def _banner(
    settings: Settings,
    sup: Supervisor,
    run: RunFile,
    run_file: Path,
    patterns: str,
    store_note: str,
) -> str:
    """What `testdata run` prints once every service is up: the real addresses."""
    from services.bridge.identity import describe as describe_auth

    kafka = run.bootstrap
    if sup.broker is not None:
        kept = sup.broker.data_dir if settings.kafka_data_dir else "a temporary directory"
        taken = (
            f", {settings.kafka_port} was taken"
            if settings.kafka_port and not kafka.endswith(f":{settings.kafka_port}")
            else ""
        )
        kafka += f"   (embedded Apache Kafka, logs in {kept}{taken})"
    for note in (sup.broker.salvaged.summary() if sup.broker else "", store_note):
        if note:
            kafka += f"\n  data directory    {note}"
    listen = settings.bind_host
    everywhere = listen in ("0.0.0.0", "::")
    scope = "   (all interfaces: BIND_HOST)" if everywhere else ""
    grpc_at = f"{listen}:{sup.grpc_port}" if everywhere else run.grpc_target
    http_listen = settings.http_bind_host
    http_at = (
        f"http://{http_listen}:{sup.http_port}"
        if http_listen in ("0.0.0.0", "::")
        else run.http_url
    )
    default_dir = Settings.model_fields["data_dir"].default
    data_dir = "" if settings.data_dir == default_dir else f"DATA_DIR={settings.data_dir} "
    return f"""
test-data agent is running
  Kafka bootstrap   {kafka}
  gRPC              {grpc_at}   testdata.v1.TestDataService (reflection on){scope}
  callers           {describe_auth(settings)}
  HTTP              {http_at}/health  /health/ready  /metrics
  requests topic    {settings.topic_prefix}testdata.requests
  pattern store     {patterns}
  run file          {run_file}   (where the CLI and the clients find this instance)
Try:  {data_dir}.venv/bin/testdata generate --entity cart --count 5
Ctrl-C stops everything.
"""


def cmd_broker(args: argparse.Namespace) -> int:
    from services.kit.broker.embedded import EmbeddedBroker
    from services.kit.wire.topics import Topics

    settings = get_settings()
    fixed = Topics(settings.topic_prefix).fixed()
    broker = EmbeddedBroker(
        {t.name: t.partitions for t in fixed},
        topic_configs={t.name: t.configs() for t in fixed},
        data_dir=settings.kafka_data_dir or None,
        port=settings.kafka_port,
        heap_mb=settings.kafka_heap_mb,
    )
    try:
        broker.start()
    except RuntimeError as exc:  # BrokerStartFailed, KafkaNotInstalled: one line each
        raise UserError(str(exc)) from exc
    with broker:
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
    from aiokafka.admin import NewTopic

    from services.kit.runtime.kafka import admin_client, use_security, wait_for_leaders
    from services.kit.wire.topics import Topics

    bootstrap = use_security(settings.kafka_bootstrap_servers, settings.kafka)
    admin = admin_client(bootstrap)
    try:
        await reach_broker(admin.start(), bootstrap)
        specs = Topics(settings.topic_prefix).fixed()
        resp = await reach_broker(
            admin.create_topics(
                [
                    NewTopic(
                        t.name,
                        t.partitions,
                        replication or t.replication,
                        topic_configs=t.configs(),
                    )
                    for t in specs
                ]
            ),
            bootstrap,
        )
        ok = {t for t, code, *_ in resp.topic_errors if code in (0, 36)}
        # usable only once every partition has a leader
        await reach_broker(
            wait_for_leaders(bootstrap, {t.name: t.partitions for t in specs if t.name in ok}),
            bootstrap,
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
                    else f"error {code} {msg[0] if msg else ''}".strip()
                )
            )
        return out
    finally:
        await admin.close()


def cmd_topics(args: argparse.Namespace) -> int:
    settings = get_settings()
    bootstrap = bootstrap_for(args, settings)
    settings = settings.model_copy(update={"kafka_bootstrap_servers": bootstrap})
    lines = asyncio.run(_topics_create(settings, args.replication))
    for line in lines:
        print(line)
    return 1 if any(": error" in line for line in lines) else 0


# ---- callers ---------------------------------------------------------------------------
def _request_dict(args: argparse.Namespace) -> dict[str, Any]:
    """The request: --request's JSON object, then the flags given over it."""
    body: dict[str, Any] = {}
    if args.request:
        try:
            body = json.loads(Path(args.request).read_text(encoding="utf-8"))
        except OSError as exc:
            raise UserError(f"cannot read --request {args.request}: {exc.strerror}") from exc
        except (ValueError, UnicodeDecodeError) as exc:
            raise UserError(f"--request {args.request} is not valid JSON: {exc}") from exc
        if not isinstance(body, dict):
            raise UserError(f"--request {args.request} must hold a JSON object (a request)")
    for key in ("entity", "domain", "count", "seed", "context", "anchor"):
        if getattr(args, key, None) is not None:
            body[key] = getattr(args, key)
    body.setdefault("entity", DEFAULT_ENTITY)  # neither the file nor a flag named one
    if args.format:
        body["output_format"] = args.format.upper()
    if args.hint:
        body["hints"] = args.hint
    return body


def _anchor_arg(text: str) -> str:
    """--anchor: any ISO-8601 instant, passed on in the RFC 3339 UTC form."""
    from services.core.reproducible import format_anchor, parse_anchor

    try:
        return format_anchor(parse_anchor(text))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an ISO-8601 instant (e.g. 2025-01-01T00:00:00Z)"
        ) from None


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


class _Output:
    """stdout, or the file `path` written atomically: into a temporary file beside it that
    `commit()` renames into place. A call that fails or is interrupted leaves no partial or
    empty file behind, and an earlier file of that name stays as it was."""

    def __init__(self, path: str | None):
        self.path = path
        self.tmp: Path | None = None
        self.file: TextIO = sys.stdout
        if path:
            target = Path(path)
            if target.is_dir():
                raise UserError(f"--out {path} is a directory; name a file")
            self.tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.tmp")
            try:
                self.file = self.tmp.open("x", encoding="utf-8", newline="")
            except OSError as exc:
                raise UserError(f"cannot write --out {path}: {exc.strerror}") from exc

    def restart(self) -> None:
        """Empty the file (not yet in place) to write it again from the start."""
        if self.tmp is None:
            raise RuntimeError("stdout cannot be taken back")
        self.file.seek(0)
        self.file.truncate()

    def commit(self) -> None:
        if self.tmp is not None and self.path:
            self.file.close()
            self.tmp.replace(self.path)
            self.tmp = None

    def __enter__(self) -> _Output:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.tmp is not None:
            self.file.close()
            self.tmp.unlink(missing_ok=True)


def cmd_generate(args: argparse.Namespace) -> int:
    """A gRPC caller: unary GenerateData, or --stream for GenerateDataStream."""
    import grpc
    from google.protobuf import json_format

    from services.client.channel import call_metadata, channel_credentials, open_channel
    from services.core.formats import iter_joined
    from services.core.models import OutputFormat
    from services.kit.ops.runfile import locate_grpc
    from services.proto.testdata.v1 import test_data_pb2 as pb
    from services.proto.testdata.v1 import test_data_pb2_grpc as pb_grpc

    try:
        msg = json_format.ParseDict(_request_dict(args), pb.GenerateRequest())
    except json_format.ParseError as exc:
        raise UserError(f"not a GenerateRequest: {_one_line(str(exc).splitlines()[0])}") from exc
    fmt = OutputFormat(pb.OutputFormat.Name(msg.output_format))
    settings = get_settings()
    target = locate_grpc(settings, args.target)
    if target.note:
        print(target.note, file=sys.stderr)
    auth = call_metadata(settings.client)
    with _Output(args.out) as out, open_channel(target.value, settings.client) as ch:
        stub = pb_grpc.TestDataServiceStub(ch)
        try:
            if args.stream:
                progress = _Progress(msg.count, sys.stderr.isatty() or bool(args.out))
                md = None

                def datas() -> Iterator[str]:
                    nonlocal md
                    for chunk in stub.GenerateDataStream(msg, timeout=args.timeout, metadata=auth):
                        progress.add(chunk.record_count)
                        md = chunk.metadata if chunk.is_final else md
                        yield chunk.data

                # JSON chunks are arrays each: written as one array, chunk by chunk
                out.file.writelines(iter_joined(fmt, datas()))
                progress.done()
                meta = (
                    json_format.MessageToDict(md, preserving_proto_field_name=True)
                    if md is not None
                    else {}
                )
            else:
                resp = stub.GenerateData(msg, timeout=args.timeout, metadata=auth)
                if not resp.success:  # a bridge before failures became statuses
                    raise UserError(resp.error or "generation failed")
                out.file.write(resp.data)
                meta = json_format.MessageToDict(resp.metadata, preserving_proto_field_name=True)
        except grpc.RpcError as exc:
            code = exc.code()
            hint = ""
            if code == grpc.StatusCode.UNAVAILABLE and channel_credentials(settings.client) is None:
                hint = " (if the bridge serves TLS: GRPC_CLIENT_CA_FILE, or GRPC_CLIENT_TLS=true)"
            raise UserError(
                f"{code.name if code else 'UNKNOWN'}: {_one_line(exc.details() or '')}{hint}"
            ) from exc
        out.commit()
    if not args.out:
        print()
    print(json.dumps(meta, indent=2), file=sys.stderr)
    return 0


async def _publish(args: argparse.Namespace, settings: Settings) -> int:
    """An agent: put a request on the requests topic, read its chunks from results."""
    from pydantic import ValidationError

    from services.core.models import GenerateRequest, OutputFormat
    from services.kit.runtime.kafka import assign_all, make_consumer, make_producer
    from services.kit.wire.codec import get_codec
    from services.kit.wire.headers import AVRO, CONTENT_TYPE, CORRELATION, JSON
    from services.kit.wire.topics import Topics

    topics = Topics(settings.topic_prefix)
    body = _request_dict(args)
    body.setdefault("request_id", f"agent-{uuid.uuid4().hex[:12]}")
    codec = get_codec()
    try:
        fmt = OutputFormat(str(body.get("output_format") or "JSON").upper())
        if args.json:  # as an agent would send it: the router judges the fields
            value, ctype = json.dumps(body).encode(), JSON
        else:
            value, ctype = codec.encode_request(GenerateRequest.model_validate(body)), AVRO
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise UserError(f"not a request: {where}: {first['msg']}") from exc
    except ValueError as exc:
        raise UserError(f"not a request: output_format: {exc}") from exc
    bootstrap = bootstrap_for(args, settings)
    correlation = uuid.uuid4().hex  # this attempt's chunks, not an earlier one's
    consumer = make_consumer(bootstrap, None)
    try:
        await reach_broker(consumer.start(), bootstrap)
        await reach_broker(assign_all(consumer, topics.results, at_end=True), bootstrap)
        producer = make_producer(bootstrap)
        try:
            await reach_broker(producer.start(), bootstrap)
            await reach_broker(
                producer.send_and_wait(
                    topics.requests,
                    value,
                    key=body["request_id"].encode(),
                    headers=[
                        (CONTENT_TYPE, ctype.encode()),
                        (CORRELATION, correlation.encode()),
                    ],
                ),
                bootstrap,
            )
        finally:
            await producer.stop()
        return await _read_results(args, consumer, codec, body["request_id"], correlation, fmt)
    finally:
        await consumer.stop()


async def _read_results(
    args: argparse.Namespace,
    consumer: Any,
    codec: Any,
    request_id: str,
    correlation: str,
    fmt: Any,
) -> int:
    """The request's chunks as the assembler delivers them (kit/assembler.py): one run,
    in order, each once. A lost chunk, or a redelivery's newer run once another's chunks
    were printed, fails the command: never a dataset with a hole or two runs spliced. An
    --out file is not in place yet, so there a newer run simply starts it over."""
    from services.core.formats import Joiner
    from services.kit.wire.assembler import Assembler
    from services.kit.wire.errors import DecodeError
    from services.kit.wire.headers import LOG_COPY, correlation_of, run_of

    asm = Assembler(request_id, correlation, restartable=bool(args.out))
    deadline = time.monotonic() + args.timeout
    with _Output(args.out) as out:
        joiner = Joiner(fmt)
        out.file.write(joiner.opening())
        while time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=200)
            for records in batch.values():
                for r in records:
                    if any(k == LOG_COPY for k, _ in r.headers or ()):
                        continue  # the results log's own JSON copy of a chunk
                    try:
                        chunk = codec.decode_chunk(r.value or b"")
                    except DecodeError:
                        continue  # not a chunk: not ours to judge
                    step = asm.offer(chunk, correlation_of(r.headers), run_of(r.headers))
                    if step.problem is not None:
                        raise UserError(f"{request_id}: {step.problem}")
                    if step.restarted:
                        out.restart()
                        joiner = Joiner(fmt)
                        out.file.write(joiner.opening())
                    for c in step.chunks:
                        if not c.success:
                            raise UserError(_one_line(c.error) or "generation failed")
                        out.file.write(joiner.part(c.data))
                    if asm.done:
                        final = step.chunks[-1]
                        out.file.write(joiner.closing())
                        out.commit()
                        md = final.metadata.model_dump(mode="json") if final.metadata else {}
                        print(json.dumps(md, indent=2), file=sys.stderr)
                        return 0
        so_far = f" ({asm.finish()})" if asm.next_index else ""
        raise UserError(f"no result for {request_id} within --timeout {args.timeout:g} s{so_far}")


def cmd_publish(args: argparse.Namespace) -> int:
    return asyncio.run(_publish(args, get_settings()))


# ---- pattern store -----------------------------------------------------------------------
def _store_location(settings: Settings) -> str:
    if settings.weaviate_url:
        return f"Weaviate at {settings.weaviate_url}"
    return f"the embedded store at {settings.pattern_store_path}"


async def _with_store(settings: Settings, action: Callable[[PatternStore], Awaitable[int]]) -> int:
    """Open the configured store, run `action(store)`, close it; a store that cannot be
    reached is one line on stderr and exit code 1."""
    from services.patterns import StoreUnavailable, open_store

    store = open_store(settings.store)
    try:
        await store.start()
        return await action(store)
    except StoreUnavailable as exc:
        print(
            f"error: pattern store unavailable ({_store_location(settings)}): {exc}",
            file=sys.stderr,
        )
        return 1
    finally:
        await store.aclose()


def _collections(name: str | None) -> list[Any]:
    from services.patterns import Collection

    return [Collection(name)] if name else list(Collection)


def _pattern_line(p: Any) -> str:
    what = f"{p.collection}/{p.domain}/{p.entity}"
    extra = f"  {p.defect_type}/{p.severity}" if p.defect_type else ""
    return (
        f"{p.id}  {what:<28} {p.scenario or '-':<24} q={p.quality:.2f} used={p.usage_count:<4}"
        f"{extra}  {p.description[:70]}"
    )


def cmd_patterns_seed(args: argparse.Namespace) -> int:
    from services.patterns import Collection
    from services.patterns.seeds import load_seeds, seed_store

    # A batch job embedding every seed, maybe on a busy machine: bounded per step, but
    # more loosely than a request's store call.
    settings = get_settings()
    timeout = max(settings.pattern_store_timeout_seconds, 60.0)
    settings = settings.model_copy(update={"pattern_store_timeout_seconds": timeout})
    patterns = load_seeds()

    async def action(store: Any) -> int:
        if args.if_empty:
            have = sum([await store.count(c) for c in Collection])
            if have:
                print(f"{have} patterns in {_store_location(settings)}; not seeded (not empty)")
                return 0
        new, total = await seed_store(store, patterns)
        first = " (first start)" if args.if_empty else ""
        where = _store_location(settings)
        print(f"seeded {new} new patterns of {len(patterns)}{first}; {total} in {where}")
        return 0

    return asyncio.run(_with_store(settings, action))


def cmd_patterns_list(args: argparse.Namespace) -> int:
    async def action(store: Any) -> int:
        out = []
        for collection in _collections(args.collection):
            out += await store.list_patterns(
                collection, domain=args.domain, entity=args.entity, limit=args.limit
            )
        out = out[: args.limit]
        if args.json:
            print(
                json.dumps([p.model_dump(mode="json") for p in out], indent=2, ensure_ascii=False)
            )
        else:
            for p in out:
                print(_pattern_line(p))
            print(f"{len(out)} pattern(s)", file=sys.stderr)
        return 0

    return asyncio.run(_with_store(get_settings(), action))


def cmd_patterns_search(args: argparse.Namespace) -> int:
    from services.patterns import Collection

    settings = get_settings()
    alpha = settings.rag_alpha if args.alpha is None else args.alpha
    if not 0.0 <= alpha <= 1.0:
        print("error: --alpha must be between 0 and 1", file=sys.stderr)
        return 2

    async def action(store: Any) -> int:
        hits = await store.search(
            Collection(args.collection),
            args.query,
            domain=args.domain,
            entity=args.entity,
            top_k=args.top_k,
            alpha=alpha,
        )
        if args.json:
            print(
                json.dumps([h.model_dump(mode="json") for h in hits], indent=2, ensure_ascii=False)
            )
            return 0
        for rank, h in enumerate(hits, 1):
            print(f"{rank:>2}. {h.score:.3f}  {_pattern_line(h.pattern)}")
        if not hits:
            print("no matching patterns", file=sys.stderr)
        return 0

    return asyncio.run(_with_store(settings, action))


def cmd_patterns_delete(args: argparse.Namespace) -> int:
    async def action(store: Any) -> int:
        deleted = 0
        for collection in _collections(args.collection):
            deleted += await store.delete(collection, args.ids)
        print(f"deleted {deleted} of {len(set(args.ids))} pattern(s)")
        return 0 if deleted == len(set(args.ids)) else 1

    return asyncio.run(_with_store(get_settings(), action))


def cmd_patterns_stats(args: argparse.Namespace) -> int:
    settings = get_settings()

    async def action(store: Any) -> int:
        stats = await store.stats()
        health = await store.health()
        if args.json:
            print(json.dumps({**stats.model_dump(mode="json"), "health": health}, indent=2))
            return 0
        print(f"store     {_store_location(settings)} ({stats.backend})")
        print(f"health    {health}")
        print(f"ranking   {'hybrid (keywords + vectors)' if stats.semantic else 'keywords only'}")
        for key, n in sorted(stats.counts.items()):
            print(f"  {key:<40} {n:>6}")
        print(f"  {'total':<40} {sum(stats.counts.values()):>6}")
        return 0

    return asyncio.run(_with_store(settings, action))


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}")
    return value


def _patterns_parser(sub: Any) -> None:
    from services.patterns import Collection

    names = [c.value for c in Collection]
    p = sub.add_parser("patterns", help="the pattern store behind the RAG and hybrid paths")
    psub = p.add_subparsers(dest="patterns_command", required=True)

    def scope(q: argparse.ArgumentParser, collection_help: str) -> None:
        q.add_argument("--collection", choices=names, help=collection_help)
        q.add_argument("--domain", help="only this domain (exact), e.g. ecommerce")
        q.add_argument("--entity", help="only this entity (exact), e.g. cart")

    q = psub.add_parser("seed", help="store the shipped seed patterns (idempotent)")
    q.add_argument(
        "--if-empty", action="store_true", help="only when the store holds no pattern at all"
    )
    q.set_defaults(fn=cmd_patterns_seed)
    q = psub.add_parser("list", help="list stored patterns, newest first")
    scope(q, "only this collection (default: all)")
    q.add_argument("--limit", type=_positive_int, default=50, help="at most this many (default 50)")
    q.add_argument("--json", action="store_true", help="full patterns as JSON")
    q.set_defaults(fn=cmd_patterns_list)
    q = psub.add_parser("search", help="hybrid search, best first, with scores")
    q.add_argument("query", help="what the examples should be about")
    q.add_argument(
        "--collection",
        choices=names,
        default=Collection.PATTERNS.value,
        help="collection to search (default patterns)",
    )
    q.add_argument("--domain", help="only this domain (exact), e.g. ecommerce")
    q.add_argument("--entity", help="only this entity (exact), e.g. cart")
    q.add_argument("--top-k", type=_positive_int, default=5, help="how many hits (default 5)")
    q.add_argument(
        "--alpha",
        type=float,
        help="1 = vectors only, 0 = keywords only (default: RAG_ALPHA, 0.75)",
    )
    q.add_argument("--json", action="store_true", help="hits as JSON")
    q.set_defaults(fn=cmd_patterns_search)
    q = psub.add_parser("delete", help="delete patterns by id")
    q.add_argument("ids", nargs="+", metavar="ID", help="pattern ids as `list` shows them")
    q.add_argument("--collection", choices=names, help="only in this collection (default: all)")
    q.set_defaults(fn=cmd_patterns_delete)
    q = psub.add_parser("stats", help="backend, health and pattern counts")
    q.add_argument("--json", action="store_true", help="as JSON")
    q.set_defaults(fn=cmd_patterns_stats)


def _caller_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--request",
        metavar="FILE",
        help="JSON file with a GenerateRequest (field names as in the proto); the flags "
        "below override its fields",
    )
    p.add_argument(
        "--entity",
        help=f"entity to generate (see GetSchemas; default: the --request file's, else "
        f"{DEFAULT_ENTITY})",
    )
    p.add_argument("--domain", help="business domain, e.g. ecommerce")
    p.add_argument("--count", type=int, help="records to generate (default: DEFAULT_COUNT)")
    p.add_argument(
        "--seed",
        type=int,
        help="random seed: the same request and seed give byte-identical data (the anchor "
        "then defaults to 2025-01-01T00:00:00Z)",
    )
    p.add_argument(
        "--anchor",
        type=_anchor_arg,
        metavar="ISO-8601",
        help="instant that dates and ID years are relative to, e.g. 2025-01-01T00:00:00Z "
        "(default: 2025-01-01T00:00:00Z with --seed, else now)",
    )
    p.add_argument("--context", help="natural-language context (routes to the LLM path)")
    p.add_argument(
        "--hint", action="append", help="routing hint, e.g. realistic or edge_case (repeatable)"
    )
    p.add_argument(
        "--format",
        choices=["json", "csv", "sql", "JSON", "CSV", "SQL"],
        help="output format (default: json)",
    )
    p.add_argument(
        "--out",
        metavar="FILE",
        help="write the data here instead of stdout; written atomically (a failed call "
        "leaves no file and an existing one untouched)",
    )
    p.add_argument(
        "--timeout", type=float, default=300.0, help="seconds to wait for the whole result"
    )


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"expected a port number 0-65535, got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The whole command line. Cheap to build (no service, SDK or Kafka client imported:
    `testdata --help` answers at once); the defaults it shows are the real ones."""
    from services.deployables import SERVICES
    from services.kit.ops.runfile import locate_grpc

    settings = get_settings()
    parser = _Parser(prog="testdata", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("run", help="embedded broker + every service (make run)")
    for name, env, default in (
        ("grpc", "GRPC_PORT", settings.grpc_port),
        ("http", "HTTP_PORT", settings.http_port),
        ("kafka", "KAFKA_PORT", settings.kafka_port),
    ):
        p.add_argument(
            f"--{name}-port",
            type=_port,
            metavar="PORT",
            help=f"{name if name != 'grpc' else 'gRPC'} port (default: {env}, now {default}; "
            "0 picks a free one)",
        )
    p.set_defaults(fn=cmd_run)
    sub.add_parser("broker", help="the embedded broker alone").set_defaults(fn=cmd_broker)
    p = sub.add_parser("service", help="one service alone")
    p.add_argument("name", choices=SERVICES, help="the deployable to run")
    p.add_argument(
        "--grpc-port", type=_port, help="bridge: gRPC port (default: GRPC_PORT; 0 picks one)"
    )
    p.add_argument(
        "--http-port",
        type=_port,
        help="port for /health and /metrics (default: HTTP_PORT for the bridge, none for "
        "the others)",
    )
    p.set_defaults(fn=cmd_service)
    p = sub.add_parser("generate", help="call the gRPC bridge")
    _caller_args(p)
    p.add_argument("--stream", action="store_true", help="GenerateDataStream with progress")
    target = locate_grpc(settings)
    p.add_argument(
        "--target",
        metavar="HOST:PORT",
        help=f"the bridge (default: GRPC_PORT if set, else the running `testdata run` of "
        f"{settings.data_dir}/run.json, else 127.0.0.1:{settings.grpc_port}; now "
        f"{target.value})",
    )
    p.set_defaults(fn=cmd_generate)
    p = sub.add_parser("publish", help="publish a request to Kafka as an agent does")
    _caller_args(p)
    p.add_argument("--json", action="store_true", help="publish JSON instead of Avro")
    bootstrap_arg(p)
    p.set_defaults(fn=cmd_publish)
    p = sub.add_parser("topics", help="topic administration")
    tsub = p.add_subparsers(dest="topics_command", required=True)
    p = tsub.add_parser("create", help="create the catalogue's topics on a cluster")
    p.add_argument("--replication", type=int, help="override the catalogue's replication")
    bootstrap_arg(p)
    p.set_defaults(fn=cmd_topics)
    _patterns_parser(sub)
    from services.datasets.cli import add_parsers

    add_parsers(sub)
    return parser


def _settings_problem(exc: Exception) -> str:
    """A settings error as one line naming the environment variable and its value."""
    errors = exc.errors() if hasattr(exc, "errors") else []
    parts = []
    for e in errors:
        name = "_".join(str(p) for p in e.get("loc", ())).upper() or "settings"
        value = f"={e['input']!r}" if isinstance(e.get("input"), str | int | float) else ""
        parts.append(f"{name}{value}: {e.get('msg', 'invalid')}")
    return "; ".join(parts) or _one_line(str(exc))


def main(argv: list[str] | None = None) -> int:
    from pydantic import ValidationError

    try:
        args = build_parser().parse_args(argv)
    except ValidationError as exc:  # a malformed environment variable (or .env line)
        from services.kit.ops.procstate import EXIT_STARTUP  # EX_CONFIG: fix it, then retry

        print(f"testdata: error: {_settings_problem(exc)}", file=sys.stderr)
        return EXIT_STARTUP
    try:
        return int(args.fn(args) or 0)
    except UserError as exc:
        print(f"testdata {args.command}: error: {exc}", file=sys.stderr)
        return exc.code
    except OSError as exc:  # the file system or the network, not our code
        print(f"testdata {args.command}: error: {_one_line(str(exc))}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
