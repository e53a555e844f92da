"""The command line as a user meets it: one clear line for every mistake, never a traceback,
help on every flag, --anchor, and a bridge process that honours its ports."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import urllib.request
from collections.abc import Iterator

import pytest

from services.cli import build_parser
from services.cli import main as cli_main
from services.kit.ops.procstate import EXIT_STARTUP
from services.kit.settings import get_settings
from tests.support import HANG_GUARD_S, output_of, wait_serving

from .test_run import ROOT, free_port


def closed_port() -> int:
    """A loopback port nothing listens on: connecting is refused at once."""
    return free_port()


def one_line_error(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    return lines[0]


@pytest.fixture
def env(monkeypatch):
    """Set environment variables for a command; the settings cache follows them."""
    get_settings.cache_clear()

    def setenv(**values: str) -> None:
        for key, value in values.items():
            monkeypatch.setenv(key, value)
        get_settings.cache_clear()

    yield setenv
    monkeypatch.undo()
    get_settings.cache_clear()


def test_every_option_of_every_command_has_help():
    def walk(parser: argparse.ArgumentParser, where: str):
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    yield from walk(sub, f"{where} {name}")
            elif not isinstance(action, argparse._HelpAction):
                yield where, action

    missing = [
        f"{where} {'/'.join(a.option_strings) or a.dest}"
        for where, a in walk(build_parser(), "testdata")
        if not (a.help or "").strip()
    ]
    assert missing == []


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["generate", "--anchor", "next tuesday"], "not an ISO-8601 instant"),
        (["generate", "--count", "many"], "invalid int value"),
        (["publish", "--format", "xml"], "invalid choice"),
        (["service", "nope"], "invalid choice"),
        ([], "required"),
    ],
)
def test_usage_errors_are_one_line(capsys, argv, says):
    with pytest.raises(SystemExit) as exc:
        cli_main(argv)
    assert exc.value.code == 2
    line = one_line_error(capsys)
    assert says in line and "--help" in line


def test_request_file_mistakes_are_one_line(capsys, tmp_path):
    bad_json, array, unknown = tmp_path / "a.json", tmp_path / "b.json", tmp_path / "c.json"
    bad_json.write_text("{not json")
    array.write_text("[1, 2]")
    unknown.write_text(json.dumps({"entity": "cart", "colour": "red"}))
    for path, says in [
        (tmp_path / "missing.json", "cannot read --request"),
        (bad_json, "not valid JSON"),
        (array, "must hold a JSON object"),
        (unknown, 'no field named "colour"'),
    ]:
        assert cli_main(["generate", "--request", str(path), "--target", "127.0.0.1:1"]) == 1
        assert says in one_line_error(capsys)


def test_an_unwritable_out_is_one_line_and_leaves_nothing(capsys, tmp_path):
    target = ["--target", f"127.0.0.1:{closed_port()}", "--timeout", "5"]
    assert cli_main(["generate", "--out", str(tmp_path / "no" / "dir.json"), *target]) == 1
    assert "cannot write --out" in one_line_error(capsys)
    assert cli_main(["generate", "--out", str(tmp_path), *target]) == 1
    assert "is a directory" in one_line_error(capsys)
    assert list(tmp_path.iterdir()) == []


async def test_an_unreachable_bridge_is_one_line_and_no_file(capsys, tmp_path):
    out = tmp_path / "carts.json"
    argv = ["generate", "--out", str(out), "--target", f"127.0.0.1:{closed_port()}"]
    assert await asyncio.to_thread(cli_main, [*argv, "--timeout", "5"]) == 1
    assert "UNAVAILABLE" in one_line_error(capsys)
    assert list(tmp_path.iterdir()) == []  # atomic --out: not even an empty file


@pytest.mark.parametrize("argv", [["publish", "--entity", "cart"], ["topics", "create"]])
async def test_an_unreachable_broker_is_one_line(capsys, env, argv):
    env(KAFKA_BOOTSTRAP_SERVERS=f"127.0.0.1:{closed_port()}")
    assert await asyncio.to_thread(cli_main, argv) == 1
    assert "cannot reach the Kafka broker" in one_line_error(capsys)


@pytest.mark.parametrize(
    "argv",
    [["publish", "--entity", "cart"], ["topics", "create"], ["replay"], ["export", "--out", "x"]],
)
def test_no_broker_and_no_running_instance_is_one_line(capsys, env, argv, tmp_path):
    env(KAFKA_BOOTSTRAP_SERVERS="", DATA_DIR=str(tmp_path))  # no run file there
    assert cli_main(argv) == 1
    line = one_line_error(capsys)
    assert "no testdata run is up" in line and str(tmp_path / "run.json") in line, line
    assert "make run" in line and "KAFKA_BOOTSTRAP_SERVERS" in line


def test_a_malformed_environment_variable_is_one_line_naming_it(capsys, env):
    env(GRPC_PORT="abc")
    assert cli_main(["--help"]) == EXIT_STARTUP  # EX_CONFIG
    line = one_line_error(capsys)
    assert line.startswith("testdata: error: GRPC_PORT='abc'") and "integer" in line, line


def test_a_request_files_entity_domain_and_format_are_used_unless_a_flag_says(tmp_path):
    from services.cli import _request_dict

    request = tmp_path / "r.json"
    request.write_text(
        json.dumps({"entity": "payment", "domain": "fintech", "output_format": "CSV"})
    )
    parser = build_parser()
    file_only = _request_dict(parser.parse_args(["generate", "--request", str(request)]))
    assert file_only == {"entity": "payment", "domain": "fintech", "output_format": "CSV"}
    flags = ["--entity", "order", "--domain", "retail", "--format", "sql"]
    overridden = _request_dict(parser.parse_args(["generate", "--request", str(request), *flags]))
    assert overridden == {"entity": "order", "domain": "retail", "output_format": "SQL"}
    assert _request_dict(parser.parse_args(["publish"]))["entity"] == "cart"  # nothing named


def test_help_imports_no_service_sdk_or_client():
    """`testdata --help` builds the whole parser without the services, the LLM SDKs, the
    Kafka and gRPC clients (what made it take seconds)."""
    code = (
        "import sys; from services.cli import build_parser; build_parser().format_help(); "
        "print(','.join(sorted(m for m in ('anthropic', 'openai', 'aiokafka', 'grpc', "
        "'services.app', 'services.supervisor', 'sentence_transformers', 'onnxruntime') "
        "if m in sys.modules)))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert done.stdout.strip() == "", done.stdout


async def test_topics_create_on_the_embedded_broker_reports_each_topic(capsys, env, settings):
    env(KAFKA_BOOTSTRAP_SERVERS=settings.kafka_bootstrap_servers)
    assert await asyncio.to_thread(cli_main, ["topics", "create"]) == 0
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    assert all(line.endswith((": exists", ": created")) for line in captured.out.splitlines())


async def test_anchor_flag_and_seed_default_give_the_same_file(stack, tmp_path):
    target = ["--target", f"127.0.0.1:{stack.grpc_port}", "--seed", "9", "--count", "30"]
    files = []
    for extra in ([], ["--anchor", "2025-01-01T00:00:00Z"], ["--anchor", "2025-01-01T01:00+01:00"]):
        out = tmp_path / f"{len(files)}.csv"
        argv = ["generate", "--format", "csv", "--out", str(out), *target, *extra]
        assert await asyncio.to_thread(cli_main, argv) == 0
        files.append(out.read_text())
    assert files[0] == files[1] == files[2] and files[0].count("\n") == 31


# ---- `testdata service bridge`: its ports --------------------------------------------------
@contextlib.contextmanager
def serving_bridge(env: dict[str, str], http_port: int) -> Iterator[subprocess.Popen[bytes]]:
    """`testdata service bridge`, once it answers on `http_port`; stopped afterwards."""
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "services.cli", "service", "bridge"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
        try:
            what = f"`testdata service bridge` (HTTP port {http_port})"
            wait_serving(lambda: health(http_port) is not None, proc, what, lambda: output_of(log))
            yield proc
        finally:
            proc.terminate()
            proc.wait(HANG_GUARD_S)


def health(port: int) -> dict | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=HANG_GUARD_S) as r:
            return json.loads(r.read())
    except OSError:
        return None


@pytest.mark.process  # `testdata service bridge` processes
@pytest.mark.slow
def test_service_bridge_serves_http_port_and_a_second_one_fails_clearly(settings):
    grpc_port, http_port = free_port(), free_port()
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers,
        "GRPC_PORT": str(grpc_port),
        "HTTP_PORT": str(http_port),
        "INSTANCE_ID": "cli-first",
        "ANTHROPIC_API_KEY": "",
        "USE_LOCAL_LLM": "false",
        "LOG_LEVEL": "INFO",
    }
    with serving_bridge(env, http_port) as first:
        body = health(http_port)
        assert body is not None
        assert body["instance"] == "cli-first" and body["pid"] == first.pid
        # the same gRPC port, then a fresh gRPC port with the same HTTP port
        with socket.socket() as spare:
            spare.bind(("127.0.0.1", 0))
            other_grpc = spare.getsockname()[1]
        for grpc_try, taken in [
            (grpc_port, f"gRPC port {grpc_port}"),
            (other_grpc, f"HTTP port {http_port}"),
        ]:
            second = subprocess.Popen(
                [sys.executable, "-m", "services.cli", "service", "bridge"],
                cwd=ROOT,
                env={**env, "GRPC_PORT": str(grpc_try), "INSTANCE_ID": "cli-second"},
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
            )
            try:
                _, stderr = second.communicate(timeout=HANG_GUARD_S)
            except subprocess.TimeoutExpired:
                second.kill()
                pytest.fail(f"a second bridge hung: {second.communicate()[1]}")
            assert second.returncode == EXIT_STARTUP, stderr
            assert "Traceback" not in stderr
            (line,) = [ln for ln in stderr.splitlines() if "cannot start" in ln]
            assert taken in line and "already in use" in line
        assert health(http_port)["instance"] == "cli-first"  # still the first one's


# ---- `testdata publish`: an agent reading its chunks from the results topic ---------------
@pytest.fixture
async def agent_topics(embedded_broker, env):
    """A topic family of its own (no router reads it): the test answers requests itself."""
    import uuid

    from services.cli import _topics_create
    from tests.support import make_settings

    prefix = f"pub{uuid.uuid4().hex[:6]}."
    settings = make_settings(embedded_broker.bootstrap_servers, topic_prefix=prefix)
    created = await _topics_create(settings, replication=1)
    assert all(line.endswith(": created") for line in created), created
    env(KAFKA_BOOTSTRAP_SERVERS=embedded_broker.bootstrap_servers, TOPIC_PREFIX=prefix)
    return settings


async def publish_answered(settings, argv: list[str], answers) -> int:
    """Runs `testdata publish` and answers its request as a generator would, but with
    `answers` (run id, chunk index, is_final, records) written in that order."""
    from services.kit.runtime.kafka import assign_all, make_consumer, make_producer
    from services.kit.wire.codec import get_codec
    from services.kit.wire.messages import GenerationMetadata, ResultChunk
    from services.kit.wire.topics import Topics

    topics, codec = Topics(settings.topic_prefix), get_codec()
    requests = make_consumer(settings.kafka_bootstrap_servers, None)
    await requests.start()
    producer = make_producer(settings.kafka_bootstrap_servers)
    await producer.start()
    try:
        await assign_all(requests, topics.requests, at_end=True)
        command = asyncio.ensure_future(asyncio.to_thread(cli_main, ["publish", *argv]))
        got: list = []
        while not got:
            assert not command.done(), "publish ended before its request was answered"
            for recs in (await requests.getmany(timeout_ms=200)).values():
                got.extend(recs)
        request_id = got[0].key.decode()
        echoed = [(k, v) for k, v in got[0].headers or () if k == "correlation-id"]
        for run, index, final, records in answers:
            chunk = ResultChunk(
                request_id=request_id,
                chunk_index=index,
                is_final=final,
                data=json.dumps(records),
                record_count=len(records),
                metadata=GenerationMetadata(generation_path="llm") if final else None,
            )
            await producer.send_and_wait(
                topics.results,
                codec.encode_chunk(chunk),
                key=request_id.encode(),
                headers=[
                    ("content-type", b"application/avro"),
                    *echoed,
                    *([("run-id", run.encode())] if run else []),
                ],
            )
        return await asyncio.wait_for(command, HANG_GUARD_S)
    finally:
        await producer.stop()
        await requests.stop()


async def test_publish_fails_loudly_when_a_chunk_is_missing(agent_topics, capsys, tmp_path):
    out = tmp_path / "carts.json"
    argv = ["--entity", "cart", "--count", "3", "--out", str(out), "--timeout", str(HANG_GUARD_S)]
    answers = [("", 0, False, [{"i": 0}]), ("", 2, True, [{"i": 2}])]
    assert await publish_answered(agent_topics, argv, answers) == 1
    line = one_line_error(capsys)
    assert "chunk 1" in line and "missing" in line
    assert list(tmp_path.iterdir()) == []


async def test_publish_writes_one_run_whole_and_each_chunk_once(agent_topics, capsys, tmp_path):
    """A redelivered llm request: run A's chunks, then run B's interleaved with A's late
    ones and duplicates. The --out file (not in place yet) starts over with run B."""
    out = tmp_path / "carts.json"
    argv = ["--entity", "cart", "--count", "3", "--out", str(out), "--timeout", str(HANG_GUARD_S)]
    answers = [
        ("A", 0, False, [{"run": "A", "i": 0}]),
        ("A", 1, False, [{"run": "A", "i": 1}]),
        ("B", 0, False, [{"run": "B", "i": 0}]),
        ("A", 2, True, [{"run": "A", "i": 2}]),
        ("B", 0, False, [{"run": "B", "i": 0}]),
        ("B", 1, False, [{"run": "B", "i": 1}]),
        ("B", 2, True, [{"run": "B", "i": 2}]),
    ]
    assert await publish_answered(agent_topics, argv, answers) == 0, capsys.readouterr().err
    assert [(r["run"], r["i"]) for r in json.loads(out.read_text())] == [
        ("B", 0),
        ("B", 1),
        ("B", 2),
    ]


async def test_publish_to_stdout_fails_rather_than_splice_a_newer_run(agent_topics, capsys):
    argv = ["--entity", "cart", "--count", "2", "--timeout", str(HANG_GUARD_S)]
    answers = [
        ("A", 0, False, [{"run": "A"}]),
        ("B", 0, False, [{"run": "B"}]),
        ("B", 1, True, [{"run": "B"}]),
    ]
    assert await publish_answered(agent_topics, argv, answers) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and "generation restarted" in err
