import hashlib
import json
import os
import subprocess
import sys
from itertools import islice
from pathlib import Path

import pytest

from services.core.errors import GenerationStopped
from services.core.formats import ChunkEncoder, encode_all, join_chunks
from services.core.generate import BLOCK, generate_records, iter_batches, iter_records
from services.core.models import GenerateRequest, OutputFormat
from services.core.plan import build_plan
from services.core.pools import GENERATOR_VERSION

ROOT = Path(__file__).resolve().parents[2]
REQ = {
    "entity": "order",
    "count": 300,
    "seed": 42,
    "anchor": "2026-03-01T12:00:00Z",
    "scenarios": [
        {"name": "happy", "count": 200},
        {"name": "returned", "count": 100, "overrides": {"status": "returned"}},
    ],
}


def dataset(registry, fmt, chunk=None, **over):
    """The one-shot document, or (with `chunk`) the chunks joined as the bridge joins them."""
    if chunk is None:
        plan = build_plan(
            GenerateRequest.model_validate({**REQ, **over, "output_format": fmt}), registry
        )
        return encode_all(
            plan.schema, plan.request.output_format, generate_records(plan, 0, plan.count)
        )
    return join_chunks(OutputFormat(fmt), chunks(registry, fmt, chunk, **over))


def chunks(registry, fmt, chunk, **over):
    """Each chunk's data, as the generator emits them."""
    plan = build_plan(
        GenerateRequest.model_validate({**REQ, **over, "output_format": fmt}), registry
    )
    enc = ChunkEncoder(plan.schema, plan.request.output_format)
    return [enc.encode(b) for b in iter_batches(plan, chunk)]


@pytest.mark.parametrize("fmt", ["JSON", "CSV", "SQL"])
def test_same_request_and_seed_is_byte_identical(registry, fmt):
    assert dataset(registry, fmt) == dataset(registry, fmt)


@pytest.mark.parametrize("fmt", ["JSON", "CSV"])
def test_chunked_equals_one_shot(registry, fmt):
    one = dataset(registry, fmt)
    assert dataset(registry, fmt, chunk=7) == one
    assert dataset(registry, fmt, chunk=128) == one


def byte_sized(registry, budget, monkeypatch):
    """Records per chunk as the generator picks them for a byte budget (MAX_CHUNK_BYTES)."""
    from services.kit.path import generation as service

    monkeypatch.setattr(service, "MAX_CHUNK_BYTES", budget)
    plan = build_plan(GenerateRequest.model_validate(REQ), registry)
    return service.records_per_chunk(generate_records(plan, 0, service.SIZING_SAMPLE), 1000)


@pytest.mark.parametrize("size", [1, 7, 128, 299, 300, 1000, "4KiB", "50KiB"])
def test_every_json_chunk_parses_on_its_own(registry, monkeypatch, size):
    if isinstance(size, str):
        size = byte_sized(registry, int(size[:-3]) * 1024, monkeypatch)
        assert 1 < size < 300  # the budget, not the record limit, splits the output
    parts = chunks(registry, "JSON", size)
    assert len(parts) == -(-300 // size)
    parsed = [json.loads(p) for p in parts]
    assert all(isinstance(p, list) and 0 < len(p) <= size for p in parsed)
    assert [r["_index"] for p in parsed for r in p] == list(range(300))
    assert join_chunks(OutputFormat.JSON, parts) == dataset(registry, "JSON")


@pytest.mark.parametrize("fmt", ["JSON", "CSV", "SQL"])
def test_only_the_first_chunk_carries_the_header(registry, fmt):
    parts = chunks(registry, fmt, 50)
    head = {"JSON": "[{", "CSV": "_index,", "SQL": "CREATE TABLE"}[fmt]
    assert [p.startswith(head) for p in parts] == [True] + [fmt == "JSON"] * (len(parts) - 1)


def test_chunked_sql_holds_the_same_rows(registry):
    import sqlite3

    def rows(sql):
        db = sqlite3.connect(":memory:")
        db.executescript(sql)
        return db.execute('SELECT * FROM "order" ORDER BY "_index"').fetchall()

    assert rows(dataset(registry, "SQL", chunk=13)) == rows(dataset(registry, "SQL"))


def test_records_do_not_depend_on_the_range_asked_for(registry):
    plan = build_plan(GenerateRequest.model_validate(REQ), registry)
    whole = generate_records(plan, 0, 300)
    assert generate_records(plan, 150, 160) == whole[150:160]
    assert generate_records(plan, 199, 201) == whole[199:201]
    assert generate_records(plan, 10, 10) == [] == generate_records(plan, 300, 300)


def test_slices_of_one_lazy_sequence_equal_one_shot_generation(registry):
    """The traditional path cuts one `iter_records` sequence into slices of any size."""
    plan = build_plan(GenerateRequest.model_validate(REQ), registry)
    source = iter_records(plan, 0, 300)
    sliced = [next(source) for _ in range(7)] + list(islice(source, 293))
    assert sliced == generate_records(plan, 0, 300)
    assert list(iter_records(plan, 5, 5)) == []


def test_should_stop_ends_a_range_within_a_block_of_saying_so(registry):
    plan = build_plan(GenerateRequest.model_validate(REQ), registry)
    asked: list[int] = []

    def stop_after_three() -> bool:
        asked.append(1)
        return len(asked) > 3

    source = iter_records(plan, 0, 300, should_stop=stop_after_three)
    made = []
    with pytest.raises(GenerationStopped):
        for record in source:
            made.append(record)
    assert len(made) == 3 * BLOCK  # asked once per block, before the block
    assert made == generate_records(plan, 0, 3 * BLOCK)  # what came is unchanged
    assert generate_records(plan, 0, 300, should_stop=lambda: False) == generate_records(
        plan, 0, 300
    )


def test_seed_and_request_change_the_data(registry):
    base = dataset(registry, "JSON")
    assert dataset(registry, "JSON", seed=43) != base
    assert dataset(registry, "JSON", anchor="2026-03-02T12:00:00Z") != base
    # the request id and the output format do not change the records
    assert dataset(registry, "JSON", request_id="other") == base


def test_identical_across_processes_and_hash_seeds(registry):
    code = (
        "import hashlib, sys\n"
        "from tests.core.test_determinism import dataset\n"
        "from services.core.registry import SchemaRegistry\n"
        "r = SchemaRegistry.load()\n"
        "print(hashlib.sha256(''.join(dataset(r, f) for f in ('JSON','CSV','SQL')).encode())"
        ".hexdigest())\n"
    )
    digests = set()
    for hash_seed in ("0", "12345"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        out = subprocess.run(
            [sys.executable, "-c", code],
            cwd=ROOT,
            env=env,
            check=True,
            capture_output=True,
            text=True,
        )
        digests.add(out.stdout.strip())
    here = hashlib.sha256(
        "".join(dataset(registry, f) for f in ("JSON", "CSV", "SQL")).encode()
    ).hexdigest()
    assert digests == {here}


def test_generator_version_names_faker():
    import faker

    assert GENERATOR_VERSION.endswith(f"faker-{faker.VERSION}")


def test_faker_is_pinned_exactly():
    text = (ROOT / "pyproject.toml").read_text()
    import faker

    assert f'"faker=={faker.VERSION}"' in text
