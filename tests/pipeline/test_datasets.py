"""Datasets from the logs: replay with verify, export to files, incomplete datasets."""

from __future__ import annotations

import csv
import json
import sqlite3
import time

import pytest

from services.cli import build_parser
from services.client import KafkaTestDataClient
from services.core.models import GenerateRequest
from services.datasets.cli import _export, _replay
from services.kit.wire.codec import get_codec
from services.kit.wire.messages import ResultChunk
from services.proto.testdata.v1 import test_data_pb2 as pb
from tests.support import HANG_GUARD_S

from .conftest import rid


def args(*argv: str):
    return build_parser().parse_args(list(argv))


async def record(stub, settings) -> tuple[list[str], dict[str, str]]:
    """A few datasets delivered over gRPC and over Kafka; their ids and digests."""
    ids, digests = [], {}
    for entity, fmt, seed in (("cart", pb.JSON, 1), ("order", pb.CSV, None), ("user", pb.SQL, 3)):
        req = pb.GenerateRequest(
            request_id=rid("rec"),
            entity=entity,
            count=40,
            output_format=fmt,
            context="marathon runners",
            hints=["no_learn"],
        )
        if seed is not None:
            req.seed = seed
        resp = await stub.GenerateData(req, timeout=HANG_GUARD_S)
        ids.append(resp.request_id)
        digests[resp.request_id] = resp.metadata.data_sha256
    async with KafkaTestDataClient(
        settings.kafka_bootstrap_servers, topic_prefix=settings.topic_prefix, timeout_s=HANG_GUARD_S
    ) as kc:
        ds = await kc.generate(
            GenerateRequest(request_id=rid("agent"), entity="review", count=25, hints=["no_learn"])
        )
    ids.append(ds.request_id)
    digests[ds.request_id] = ds.metadata.data_sha256
    return ids, digests


async def test_replay_regenerates_identical_datasets_and_says_so(stub, settings, capsys):
    ids, digests = await record(stub, settings)
    assert all(len(d) == 64 for d in digests.values())
    picks = [a for i in ids for a in ("--request-id", i)]
    code = await _replay(args("replay", "--verify", "--quiet", *picks), settings)
    out = capsys.readouterr().out
    assert code == 0, out
    assert "identical" in out and "traditional" in out
    assert "differs" not in out and "unverifiable" not in out


async def test_replays_point_back_to_their_originals(stub, settings, capsys):
    ids, _ = await record(stub, settings)
    since = str(int(time.time() * 1000) - 60_000)
    code = await _replay(
        args("replay", "--quiet", "--since", since, "--request-id", ids[0]), settings
    )
    assert code == 0
    # the replay is itself logged, marked as one, and its final metadata says whose it is
    from services.datasets.log import Window, read_requests, read_results

    reqs, _ = await read_requests(
        settings.kafka_bootstrap_servers, "testdata.requests", Window(since_ms=int(since))
    )
    replays = [r.request for r in reqs if r.request.replay_of == ids[0]]
    assert replays and replays[-1].request_id.startswith(f"{ids[0]}~replay-")
    res = await read_results(
        settings.kafka_bootstrap_servers, "testdata.results", Window(), {replays[-1].request_id}
    )
    assert res[replays[-1].request_id].final.metadata.replay_of == ids[0]


async def test_export_writes_complete_files_that_parse(stub, settings, tmp_path, capsys):
    ids, _ = await record(stub, settings)
    picks = [a for i in ids for a in ("--request-id", i)]
    assert (
        await _export(
            args("export", "--quiet", "--format", "jsonl", "--out", str(tmp_path / "jl"), *picks),
            settings,
        )
        == 0
    )
    files = sorted((tmp_path / "jl").iterdir())
    assert len(files) == 4
    counts = sorted(len([json.loads(line) for line in f.read_text().splitlines()]) for f in files)
    assert counts == [25, 40, 40, 40]
    # CSV of one entity, and SQL that SQLite accepts
    cart = ids[0]
    assert (
        await _export(
            args(
                "export",
                "--quiet",
                "--format",
                "csv",
                "--out",
                str(tmp_path / "c"),
                "--request-id",
                cart,
            ),
            settings,
        )
        == 0
    )
    (csv_file,) = (tmp_path / "c").iterdir()
    rows = list(csv.DictReader(csv_file.open(newline="")))
    assert len(rows) == 40 and rows[0]["cart_id"].startswith("CRT-")
    assert (
        await _export(
            args(
                "export",
                "--quiet",
                "--format",
                "sql",
                "--combined",
                "--out",
                str(tmp_path / "all.sql"),
                *picks,
            ),
            settings,
        )
        == 0
    )
    db = sqlite3.connect(":memory:")
    db.executescript((tmp_path / "all.sql").read_text())
    tables = {t for (t,) in db.execute("select name from sqlite_master where type='table'")}
    assert tables
    total = sum(db.execute(f'select count(*) from "{t}"').fetchone()[0] for t in tables)
    assert total == 145
    assert (
        await _export(
            args(
                "export",
                "--quiet",
                "--format",
                "json",
                "--combined",
                "--out",
                str(tmp_path / "all.json"),
                *picks,
            ),
            settings,
        )
        == 0
    )
    assert len(json.loads((tmp_path / "all.json").read_text())) == 145
    # several datasets of one entity in one SQL file: one table, every row
    again, _ = await record(stub, settings)
    carts = ["--request-id", cart, "--request-id", again[0]]
    out = str(tmp_path / "carts.sql")
    argv = ("export", "--quiet", "--format", "sql", "--combined", "--out", out, *carts)
    assert await _export(args(*argv), settings) == 0
    db = sqlite3.connect(":memory:")
    db.executescript((tmp_path / "carts.sql").read_text())
    assert db.execute('select count(*) from "cart"').fetchone()[0] == 80


async def test_a_dataset_with_a_missing_chunk_is_reported_incomplete(tmp_path):
    """An LLM dataset kept on the results log with chunk 1 of 3 missing, and one whose
    final chunk never came: both reported, neither written."""
    from services.core.registry import SchemaRegistry
    from services.datasets.export import export
    from services.datasets.log import LoggedDataset, LoggedRequest
    from services.kit.wire.messages import GenerationMetadata

    def logged(request_id: str) -> LoggedRequest:
        return LoggedRequest(
            GenerateRequest(request_id=request_id, entity="cart", count=3, seed=5), 0, 0, 0
        )

    gap = LoggedDataset("gap")
    for i, final in ((0, False), (2, True)):
        md = GenerationMetadata(generation_path="llm", record_count=3) if final else None
        gap.add(
            ResultChunk(
                request_id="gap",
                chunk_index=i,
                is_final=final,
                data=f'[{{"_index": {i}}}]',
                record_count=1,
                metadata=md,
            )
        )
    unfinished = LoggedDataset("unfinished")
    unfinished.add(ResultChunk(request_id="unfinished", chunk_index=0, is_final=False, data="[]"))
    done = await export(
        [logged("gap"), logged("unfinished"), logged("absent")],
        {"gap": gap, "unfinished": unfinished},
        SchemaRegistry.load(),
        "jsonl",
        tmp_path,
        False,
    )
    assert [(d.request_id, d.status) for d in done] == [
        ("gap", "incomplete"),
        ("unfinished", "incomplete"),
        ("absent", "incomplete"),
    ]
    assert done[0].how == "chunks missing from the results log: [1]"
    assert done[1].how == done[2].how == "no final chunk on the results log"
    assert list(tmp_path.iterdir()) == []


def _table(out: str) -> list[tuple[str, str, int, int]]:
    """(status, path, datasets, records) rows of replay's summary table."""
    rows = []
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 4 and parts[2].replace(",", "").isdigit():
            rows.append(
                (parts[0], parts[1], int(parts[2].replace(",", "")), int(parts[3].replace(",", "")))
            )
    return rows


async def test_replay_and_export_select_by_entity_path_time_and_offsets(
    stub, settings, tmp_path, capsys
):
    from services.datasets.log import Window, read_requests

    since = str(int(time.time() * 1000) - 1)
    cart = await stub.GenerateData(
        pb.GenerateRequest(
            request_id=rid("sel"), entity="cart", count=12, seed=2, hints=["no_learn"]
        ),
        timeout=HANG_GUARD_S,
    )
    user = await stub.GenerateData(
        pb.GenerateRequest(
            request_id=rid("sel"), entity="user", count=7, seed=2, hints=["no_learn"]
        ),
        timeout=HANG_GUARD_S,
    )
    capsys.readouterr()

    assert (
        await _replay(
            args("replay", "--quiet", "--verify", "--since", since, "--entity", "user"), settings
        )
        == 0
    )
    assert _table(capsys.readouterr().out) == [("identical", "traditional", 1, 7)]
    assert (
        await _replay(
            args("replay", "--quiet", "--since", since, "--domain", "no-such-domain"), settings
        )
        == 0
    )
    assert "nothing to replay" in capsys.readouterr().err
    assert (
        await _replay(args("replay", "--quiet", "--since", since, "--path", "rag"), settings) == 0
    )
    assert "nothing to replay" in capsys.readouterr().err
    assert (
        await _replay(
            args("replay", "--quiet", "--since", since, "--path", "traditional"), settings
        )
        == 0
    )
    assert _table(capsys.readouterr().out) == [("regenerated", "traditional", 2, 19)]

    logged, _ = await read_requests(
        settings.kafka_bootstrap_servers, "testdata.requests", Window(since_ms=int(since))
    )
    (at,) = [r for r in logged if r.request.request_id == cart.request_id]
    window = (
        "--partition",
        str(at.partition),
        "--from-offset",
        str(at.offset),
        "--to-offset",
        str(at.offset + 1),
    )
    assert await _replay(args("replay", "--quiet", "--verify", *window), settings) == 0
    assert _table(capsys.readouterr().out) == [("identical", "traditional", 1, 12)]

    out = tmp_path / "carts"
    assert (
        await _export(
            args("export", "--quiet", "--since", since, "--entity", "cart", "--out", str(out)),
            settings,
        )
        == 0
    )
    assert [f.name for f in out.iterdir()] == [f"{cart.request_id}.jsonl"]
    until = str(at.timestamp_ms - 1)
    assert (
        await _export(
            args(
                "export",
                "--quiet",
                "--since",
                since,
                "--until",
                until,
                "--out",
                str(tmp_path / "none"),
            ),
            settings,
        )
        == 0
    )
    assert list((tmp_path / "none").iterdir()) == []
    assert user.success


async def test_export_never_splices_two_runs_of_a_redelivered_request(
    embedded_broker, tmp_path, capsys
):
    """A redelivered llm request ran twice: run A got as far as chunk 1, run B (its data
    differs) completed. Both are on the results log; the export is run B whole."""
    import uuid

    from services.cli import _topics_create
    from services.kit.runtime.kafka import make_producer
    from services.kit.wire.messages import GenerationMetadata
    from services.kit.wire.topics import Topics
    from tests.support import make_settings

    settings = make_settings(
        embedded_broker.bootstrap_servers, topic_prefix=f"splice{uuid.uuid4().hex[:6]}."
    )
    created = await _topics_create(settings, replication=1)
    assert all(line.endswith(": created") for line in created), created
    topics = Topics(settings.topic_prefix)
    request_id = rid("splice")
    codec = get_codec()
    producer = make_producer(settings.kafka_bootstrap_servers)
    await producer.start()
    try:
        await producer.send_and_wait(
            topics.requests,
            codec.encode_request(GenerateRequest(request_id=request_id, entity="cart", count=3)),
            key=request_id.encode(),
            headers=[("content-type", b"application/avro")],
        )
        runs = [("A", 0, False), ("A", 1, False), ("B", 0, False), ("B", 1, False), ("B", 2, True)]
        for run, index, final in runs:
            chunk = ResultChunk(
                request_id=request_id,
                chunk_index=index,
                is_final=final,
                data=json.dumps([{"run": run, "i": index}]),
                record_count=1,
                metadata=GenerationMetadata(generation_path="llm", record_count=3)
                if final
                else None,
            )
            await producer.send_and_wait(
                topics.results,
                codec.encode_chunk(chunk),
                key=request_id.encode(),
                headers=[
                    ("content-type", b"application/avro"),
                    ("correlation-id", b"attempt-1"),
                    ("run-id", run.encode()),
                ],
            )
    finally:
        await producer.stop()
    out = tmp_path / "x"
    argv = ("export", "--quiet", "--out", str(out), "--request-id", request_id)
    assert await _export(args(*argv), settings) == 0, capsys.readouterr().out
    (written,) = out.iterdir()
    records = [json.loads(line) for line in written.read_text().splitlines()]
    assert [(r["run"], r["i"]) for r in records] == [("B", 0), ("B", 1), ("B", 2)]


def _llm_chunk(request_id: str, run: str, index: int, final: bool, ok: bool = True):
    from services.kit.wire.messages import GenerationMetadata

    return ResultChunk(
        request_id=request_id,
        chunk_index=index,
        is_final=final,
        success=ok,
        data=json.dumps([{"run": run, "i": index}]) if ok else "",
        record_count=1 if ok else 0,
        metadata=GenerationMetadata(generation_path="llm", record_count=index + 1)
        if final
        else None,
    )


@pytest.mark.parametrize(
    ("arrivals", "expected"),
    [
        # (correlation, run, index, final): what the results log holds, in log order
        ([("c", "A", 0, 0), ("c", "A", 1, 1), ("c", "B", 0, 0)], ["A0", "A1"]),
        ([("c", "A", 0, 0), ("c", "B", 0, 0), ("c", "A", 1, 1), ("c", "B", 1, 1)], ["B0", "B1"]),
        ([("c", "A", 0, 0), ("c", "A", 0, 0), ("c", "A", 1, 1), ("c", "A", 1, 1)], ["A0", "A1"]),
        ([("c1", "", 0, 0), ("c2", "", 0, 0), ("c2", "", 1, 1)], ["0", "1"]),
        ([("c", "A", 0, 0), ("c", "A", 1, 0), ("c", "B", 0, 0), ("c", "B", 2, 1)], "[1]"),
        (
            [("c", "A", 0, 0), ("c", "A", 1, 1), ("c", "B", 0, 0), ("c", "B", 1, 1, "fail")],
            ["A0", "A1"],
        ),
    ],
    ids=[
        "complete-then-cut-short",
        "two-complete-interleaved",
        "duplicates",
        "two-attempts-deterministic",
        "none-complete",
        "newest-failed",
    ],
)
async def test_a_dataset_on_the_log_is_one_run_whole(tmp_path, arrivals, expected):
    """Runs and attempts of one request are never spliced: the newest run complete and
    successful on the log, or, with none, the newest run reported incomplete."""
    from services.core.registry import SchemaRegistry
    from services.datasets.export import export
    from services.datasets.log import LoggedDataset, LoggedRequest

    ds = LoggedDataset("r")
    for corr, run, index, final, *fail in arrivals:
        ds.add(_llm_chunk("r", run, index, bool(final), ok=not fail), corr, run)
    request = LoggedRequest(GenerateRequest(request_id="r", entity="cart", count=2), 0, 0, 0)
    (done,) = await export([request], {"r": ds}, SchemaRegistry.load(), "jsonl", tmp_path, False)
    if isinstance(expected, str):
        assert (done.status, done.how) == (
            "incomplete",
            f"chunks missing from the results log: {expected}",
        )
        return
    assert done.status == "written" and done.how == "kept chunks"
    rows = [json.loads(line) for line in (tmp_path / "r.jsonl").read_text().splitlines()]
    assert [f"{r['run']}{r['i']}" for r in rows] == expected


async def test_request_ids_that_match_nothing_exit_1_naming_them(stub, settings, tmp_path, capsys):
    cart = await stub.GenerateData(
        pb.GenerateRequest(request_id=rid("ids"), entity="cart", count=3, hints=["no_learn"]),
        timeout=HANG_GUARD_S,
    )
    capsys.readouterr()
    picks = ("--request-id", "nope", "--request-id", cart.request_id)
    code = await _export(args("export", "--quiet", "--out", str(tmp_path), *picks), settings)
    out, err = capsys.readouterr()
    assert code == 1
    assert "no logged request matches --request-id nope" in err
    assert "1 datasets, 3 records" in out and "1 --request-id matched nothing" in out
    assert [f.name for f in tmp_path.iterdir()] == [f"{cart.request_id}.jsonl"]
    code = await _export(
        args("export", "--quiet", "--out", str(tmp_path / "x"), "--request-id", "nope"), settings
    )
    assert code == 1 and "--request-id nope" in capsys.readouterr().err
    code = await _replay(args("replay", "--quiet", "--request-id", "nope"), settings)
    assert code == 1 and "--request-id nope" in capsys.readouterr().err


async def test_requests_that_left_the_domain_empty_match_the_domain_served_as(
    stub, settings, tmp_path, capsys
):
    since = str(int(time.time() * 1000) - 1)
    cart = await stub.GenerateData(
        pb.GenerateRequest(request_id=rid("dom"), entity="cart", count=4, hints=["no_learn"]),
        timeout=HANG_GUARD_S,
    )
    assert cart.success
    capsys.readouterr()
    argv = ("replay", "--quiet", "--verify", "--since", since, "--domain", "ecommerce")
    assert await _replay(args(*argv), settings) == 0
    assert _table(capsys.readouterr().out) == [("identical", "traditional", 1, 4)]
    out = tmp_path / "ecommerce"
    argv = ("export", "--quiet", "--since", since, "--domain", "ecommerce", "--out", str(out))
    assert await _export(args(*argv), settings) == 0
    assert [f.name for f in out.iterdir()] == [f"{cart.request_id}.jsonl"]
    argv = ("export", "--quiet", "--since", since, "--domain", "fintech", "--out", str(out))
    assert await _export(args(*argv), settings) == 0
    assert "0 datasets" in capsys.readouterr().out


async def test_an_agents_dataset_is_read_back_from_the_log_chunk_by_chunk(
    stack, settings, agent_producer, tail, codec, tmp_path, capsys
):
    """Datasets an agent read from the results topic itself: chunks (and the JSON copies
    of a non-deterministic path's CSV or SQL; the defect request goes to the RAG path while
    the store holds defect patterns) are read back by position while they are written, or
    the dataset is rebuilt. Each in its own format has its delivered bytes; all three go
    in one Parquet file."""
    import pyarrow.parquet as pq

    from services.core.formats import join_chunks
    from services.core.models import OutputFormat
    from services.kit.wire.headers import AVRO, CONTENT_TYPE, LOG_COPY

    topics = stack.rt.topics
    ids, delivered = [], {}
    async with tail(topics.results) as results:
        for fmt in ("JSON", "CSV", "SQL"):
            request_id = rid(f"kept-{fmt.lower()}")
            ids.append(request_id)
            req = GenerateRequest(
                request_id=request_id,
                entity="order",
                count=1500,
                output_format=fmt,
                defect_triggering=fmt == "SQL",
                hints=["no_learn"],
            )
            await agent_producer.send_and_wait(
                topics.requests,
                codec.encode_request(req),
                key=request_id.encode(),
                headers=[(CONTENT_TYPE, AVRO.encode())],
            )
        recs = await results.until(
            lambda rs: (
                {c.request_id for c in map(codec.decode_chunk, (r.value for r in rs)) if c.is_final}
                >= set(ids)
            ),
        )
    replies = [
        codec.decode_chunk(r.value)
        for r in recs
        if not any(k == LOG_COPY for k, _ in r.headers)  # as a caller reads them
    ]
    for request_id, fmt in zip(ids, ("JSON", "CSV", "SQL"), strict=True):
        chunks = sorted(
            (c for c in replies if c.request_id == request_id), key=lambda c: c.chunk_index
        )
        assert len(chunks) > 2
        delivered[request_id] = join_chunks(OutputFormat(fmt), [c.data for c in chunks])
    capsys.readouterr()
    picks = [a for i in ids for a in ("--request-id", i)]
    for fmt in ("json", "csv", "sql"):
        out = tmp_path / fmt
        assert (
            await _export(
                args("export", "--quiet", "--format", fmt, "--out", str(out), *picks), settings
            )
            == 0
        )
    assert (tmp_path / "json" / f"{ids[0]}.json").read_bytes().decode() == delivered[ids[0]]
    assert (tmp_path / "csv" / f"{ids[1]}.csv").read_bytes().decode() == delivered[ids[1]]
    assert (tmp_path / "sql" / f"{ids[2]}.sql").read_bytes().decode() == delivered[ids[2]]
    out = tmp_path / "all.parquet"
    argv = ("export", "--quiet", "--format", "parquet", "--combined", "--out", str(out), *picks)
    assert await _export(args(*argv), settings) == 0
    table = pq.read_table(out)
    assert table.num_rows == 4500
    rows = {r["order_id"]: r for r in table.to_pylist()}  # in the requests log's order
    for r in json.loads(delivered[ids[0]]):
        assert rows[r["order_id"]]["total"] == r["total"]
    kinds = table.column("_edge_case_type").to_pylist()
    assert sum(k is not None for k in kinds) == 1500  # the defect SQL dataset's


async def test_tenant_selects_only_that_tenants_vouched_requests_and_replays_stay_theirs(
    stack, settings, agent_producer, codec, tail, tmp_path, capsys
):
    """Two tenants' requests as a bridge vouches for them, and two claiming team-a's
    tenant without its voucher (a bare header; team-a's signature moved to another id):
    `--tenant team-a` takes exactly team-a's two, and their replays are team-a's again."""
    import uuid

    from services.datasets.log import Window, read_requests
    from services.kit.wire.headers import TENANT
    from services.kit.wire.tenancy import LOCAL, vouch
    from services.kit.wire.topics import Topics
    from tests.support import SIGNING_KEY

    key = SIGNING_KEY.encode()
    tag = uuid.uuid4().hex[:6]
    team_a, team_b = f"team-a-{tag}", f"team-b-{tag}"
    topics = Topics(settings.topic_prefix)
    plain = [("content-type", b"application/avro")]
    a1, a2, b1, bare, moved = (rid(p) for p in ("ta1", "ta2", "tb1", "bare", "moved"))
    published = [
        (a1, "cart", vouch(key, a1, team_a, plain)),
        (a2, "user", vouch(key, a2, team_a, plain)),
        (b1, "cart", vouch(key, b1, team_b, plain)),
        (bare, "cart", [*plain, (TENANT, team_a.encode())]),
        (moved, "user", vouch(key, a1, team_a, plain)),  # a1's voucher on another id
    ]
    since = str(int(time.time() * 1000) - 1)

    def finals(records) -> set[str]:
        return {r.key.decode() for r in records if r.key and codec.decode_chunk(r.value).is_final}

    async with tail(topics.results) as results:
        for request_id, entity, headers in published:
            req = GenerateRequest(
                request_id=request_id, entity=entity, count=5, seed=3, hints=["no_learn"]
            )
            await agent_producer.send_and_wait(
                topics.requests, codec.encode_request(req), key=request_id.encode(), headers=headers
            )
        done = await results.until(lambda rs: finals(rs) >= {i for i, _, _ in published})
    tenant_of = {r.key.decode(): dict(r.headers)[TENANT].decode() for r in done if r.key}
    assert [tenant_of[i] for i in (a1, a2, b1, bare, moved)] == [
        team_a,
        team_a,
        team_b,
        LOCAL,
        LOCAL,
    ]
    capsys.readouterr()

    async def exported(*tenants: str) -> set[str]:
        out = tmp_path / "-".join(tenants)
        picks = [a for t in tenants for a in ("--tenant", t)]
        argv = ("export", "--quiet", "--since", since, "--out", str(out), *picks)
        assert await _export(args(*argv), settings) == 0, capsys.readouterr()
        return {f.name.removesuffix(".jsonl") for f in out.iterdir()}

    assert await exported(team_a) == {a1, a2}
    assert await exported(team_b) == {b1}
    assert await exported(team_a, team_b) == {a1, a2, b1}
    assert {bare, moved} <= await exported(LOCAL)

    async with tail(topics.results) as results:
        argv = ("replay", "--quiet", "--verify", "--since", since, "--tenant", team_a)
        assert await _replay(args(*argv), settings) == 0
        assert _table(capsys.readouterr().out) == [("identical", "traditional", 2, 10)]

        def replayed(rs) -> set[str]:
            return {i.partition("~replay-")[0] for i in finals(rs) if "~replay-" in i}

        got = await results.until(lambda rs: replayed(rs) == {a1, a2})
    # the replays were published as team-a's (vouched under their new ids) ...
    logged, _ = await read_requests(
        settings.kafka_bootstrap_servers, topics.requests, Window(since_ms=int(since)), key=key
    )
    replays = [r for r in logged if r.request.replay_of in (a1, a2)]
    assert sorted(r.request.replay_of for r in replays) == sorted([a1, a2])
    assert {r.tenant for r in replays} == {team_a}
    # ... and the generators took them as team-a's: their result chunks say so
    mine = [r for r in got if r.key and b"~replay-" in r.key]
    assert mine and {dict(r.headers)[TENANT].decode() for r in mine} == {team_a}


async def test_two_tenants_with_one_request_id_export_their_own_datasets(
    stack, settings, agent_producer, codec, tail, tmp_path, capsys
):
    """Two tenants may use one request id (the bridge allows it); export takes each
    tenant's run of it, never the other's (it matched results by request id alone)."""
    import uuid

    from services.kit.wire.tenancy import vouch
    from services.kit.wire.topics import Topics
    from tests.support import SIGNING_KEY

    key, tag = SIGNING_KEY.encode(), uuid.uuid4().hex[:6]
    team_a, team_b = f"team-a-{tag}", f"team-b-{tag}"
    topics = Topics(settings.topic_prefix)
    shared = rid("shared")
    since = str(int(time.time() * 1000) - 1)
    async with tail(topics.results) as results:
        for tenant, entity in ((team_a, "cart"), (team_b, "user")):
            req = GenerateRequest(
                request_id=shared, entity=entity, count=4, seed=3, hints=["no_learn"]
            )
            headers = vouch(key, shared, tenant, [("content-type", b"application/avro")])
            await agent_producer.send_and_wait(
                topics.requests, codec.encode_request(req), key=shared.encode(), headers=headers
            )
        await results.until(
            lambda rs: (
                sum(
                    1
                    for r in rs
                    if r.key == shared.encode() and codec.decode_chunk(r.value).is_final
                )
                >= 2
            )
        )
    capsys.readouterr()
    for tenant, field in ((team_a, "cart_id"), (team_b, "email")):
        out = tmp_path / tenant
        argv = ("export", "--quiet", "--since", since, "--out", str(out), "--tenant", tenant)
        assert await _export(args(*argv), settings) == 0, capsys.readouterr()
        lines = (out / f"{shared}.jsonl").read_text().splitlines()
        assert len(lines) == 4 and all(field in json.loads(line) for line in lines), tenant


async def test_an_agents_request_without_id_or_key_is_replayed_as_the_router_pinned_it(
    stack, settings, agent_producer, tail, codec, capsys
):
    """The router names such a request from its record's bytes and time; the log reader
    applies the same rule (one function), so replay finds the dataset and regenerates it
    identically (it used to count the request as unreadable and skip it)."""
    from services.core.reproducible import derive_request_id
    from services.kit.wire.headers import CONTENT_TYPE, JSON

    topics = stack.rt.topics
    since = str(int(time.time() * 1000) - 1)
    body = {"entity": "user", "count": 6, "context": f"anonymous {rid('x')}", "hints": ["no_learn"]}
    value = json.dumps(body).encode()
    async with tail(topics.results) as results:
        sent = await agent_producer.send_and_wait(
            topics.requests, value, headers=[(CONTENT_TYPE, JSON.encode())]
        )
        served = derive_request_id(value, sent.timestamp)
        await results.until(
            lambda rs: any(
                c.request_id == served and c.is_final and c.success
                for c in map(codec.decode_chunk, (r.value for r in rs))
            )
        )
    capsys.readouterr()
    argv = ("replay", "--quiet", "--verify", "--since", since, "--request-id", served)
    assert await _replay(args(*argv), settings) == 0
    assert _table(capsys.readouterr().out) == [("identical", "traditional", 1, 6)]
