"""The embedded broker keeps its logs on disk: the requests and results logs survive a
restart of `make run` (no journal of our own), so a replay after the restart regenerates
(and verifies) what came before, and nothing served before is generated again."""

from __future__ import annotations

import socket
from pathlib import Path

import grpc
import pytest

from services.cli import build_parser
from services.datasets.cli import _replay
from services.kit.settings import Settings
from services.proto.testdata.v1 import test_data_pb2 as pb
from services.proto.testdata.v1 import test_data_pb2_grpc as pb_grpc
from services.supervisor import Supervisor
from tests.support import HANG_GUARD_S

pytestmark = [pytest.mark.process, pytest.mark.slow]  # a Supervisor of its own

QUIET = {"LOG_LEVEL": "WARNING", "ANTHROPIC_API_KEY": "", "USE_LOCAL_LLM": "false"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _supervisor(kafka: Path, store: Path) -> Supervisor:
    settings = Settings(
        _env_file=None,
        grpc_port=free_port(),
        http_port=free_port(),
        kafka_bootstrap_servers="",
        anthropic_api_key=None,
        use_local_llm=False,
        kafka_data_dir=str(kafka),
    )
    return Supervisor(settings, {**QUIET, "PATTERN_STORE_PATH": str(store)})  # `with` starts it


async def test_replay_after_a_restart_reads_the_kept_log(tmp_path, capsys):
    kafka, store = tmp_path / "kafka", tmp_path / "patterns.sqlite"
    with _supervisor(kafka, store) as first:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{first.settings.grpc_port}") as ch:
            stub = pb_grpc.TestDataServiceStub(ch)
            resp = await stub.GenerateData(
                pb.GenerateRequest(request_id="before-restart", entity="order", count=30, seed=8),
                timeout=HANG_GUARD_S,
            )
    assert resp.success and resp.metadata.data_sha256
    assert (kafka / "kraft" / "meta.properties").is_file()
    with _supervisor(kafka, store) as second:
        settings = Settings(_env_file=None, kafka_bootstrap_servers=second.bootstrap)
        argv = ["replay", "--verify", "--quiet", "--request-id", "before-restart"]
        code = await _replay(build_parser().parse_args(argv), settings)
    out = capsys.readouterr().out
    assert code == 0, out
    assert "identical" in out
