"""The embedded broker's journal: the requests and results logs survive a restart of
`make run`, so a replay after the restart regenerates (and verifies) what came before."""

from __future__ import annotations

import socket
from pathlib import Path

import grpc

from services.cli import build_parser
from services.datasets.cli import _replay
from services.kit.journal import Entry, _bounded, decode_all, encode
from services.kit.settings import Settings
from services.proto.testdata.v1 import test_data_pb2 as pb
from services.proto.testdata.v1 import test_data_pb2_grpc as pb_grpc
from services.supervisor import Supervisor

QUIET = {"LOG_LEVEL": "WARNING", "ANTHROPIC_API_KEY": "", "USE_LOCAL_LLM": "false"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_entries_round_trip_and_a_torn_tail_is_ignored():
    entries = [
        Entry(1, b"k", b"\x00\x01value", (("content-type", b"application/avro"),)),
        Entry(2, None, b"", ()),
        Entry(3, b"", b"v" * 70_000, (("a", b""), ("b", b"x"))),
    ]
    data = b"".join(encode(e) for e in entries)
    assert list(decode_all(data)) == entries
    assert list(decode_all(data + encode(entries[0])[:-3])) == entries  # a crash mid-write
    assert _bounded(entries, 200) == entries[1:2] or _bounded(entries, 200) == []
    assert _bounded(entries, 10**9) == entries


def _supervisor(journal: Path, store: Path) -> Supervisor:
    settings = Settings(
        _env_file=None,
        grpc_port=free_port(),
        http_port=free_port(),
        kafka_bootstrap_servers="",
        anthropic_api_key=None,
        use_local_llm=False,
        journal_dir=str(journal),
    )
    return Supervisor(settings, {**QUIET, "PATTERN_STORE_PATH": str(store)})  # `with` starts it


async def test_replay_after_a_restart_reads_the_journaled_log(tmp_path, capsys):
    journal, store = tmp_path / "journal", tmp_path / "patterns.sqlite"
    with _supervisor(journal, store) as first:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{first.settings.grpc_port}") as ch:
            stub = pb_grpc.TestDataServiceStub(ch)
            resp = await stub.GenerateData(
                pb.GenerateRequest(request_id="before-restart", entity="order", count=30, seed=8),
                timeout=60,
            )
    assert resp.success and resp.metadata.data_sha256
    assert any(journal.iterdir())
    with _supervisor(journal, store) as second:
        assert second.journal is not None and second.journal.restored >= 2
        settings = Settings(_env_file=None, kafka_bootstrap_servers=second.bootstrap)
        argv = ["replay", "--verify", "--quiet", "--request-id", "before-restart"]
        code = await _replay(build_parser().parse_args(argv), settings)
    out = capsys.readouterr().out
    assert code == 0, out
    assert "identical" in out
