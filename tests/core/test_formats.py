import csv
import io
import json
import sqlite3

import pytest

from services.core.formats import ChunkEncoder, encode_all, join_chunks, sql_literal
from services.core.generate import generate_records
from services.core.models import EntitySchema, FieldSpec, GenerateRequest, OutputFormat
from services.core.plan import build_plan

NASTY = [
    "O'Brien",
    'say "hi"',
    "back\\slash\\",
    "naïve café ☕ 日本",
    "line\nbreak",
    "'; DROP TABLE x; --",
    "tab\tsep",
    "comma, inside",
    "null\x00byte",
    "",
]

SCHEMA = EntitySchema(
    name="weird table",
    fields=[
        FieldSpec(name="text", type="STRING"),
        FieldSpec(name="n", type="INTEGER"),
        FieldSpec(name="x", type="FLOAT"),
        FieldSpec(name="flag", type="BOOLEAN"),
        FieldSpec(name="maybe", type="STRING", required=False),
        FieldSpec(name="obj", type="OBJECT", nested_fields=[FieldSpec(name="k")]),
    ],
)


def nasty_records():
    return [
        {
            "_index": i,
            "_scenario": "s'1",
            "text": t,
            "n": i - 3,
            "x": i / 3,
            "flag": i % 2 == 0,
            "maybe": None if i % 3 else t,
            "obj": {"k": t},
        }
        for i, t in enumerate(NASTY)
    ]


def test_sql_escaping_round_trips_through_sqlite():
    recs = nasty_records()
    enc = ChunkEncoder(SCHEMA, OutputFormat.SQL)
    sql = enc.encode(recs[:4]) + enc.encode(recs[4:])
    db = sqlite3.connect(":memory:")
    db.executescript(sql)
    got = db.execute('SELECT * FROM "weird table" ORDER BY "_index"').fetchall()
    assert len(got) == len(recs)
    for row, r in zip(got, recs, strict=True):
        clean = r["text"].replace("\x00", "")
        assert row[0] == r["_index"] and row[1] == "s'1"
        assert row[2] == clean
        assert row[3] == r["n"] and abs(row[4] - r["x"]) < 1e-12
        assert row[5] == (1 if r["flag"] else 0)
        assert row[6] == (None if r["maybe"] is None else clean)
        assert json.loads(row[7]) == {"k": r["text"]}


def test_sql_literals():
    assert sql_literal(None) == "NULL"
    assert sql_literal(True) == "TRUE"
    assert sql_literal("it's") == "'it''s'"
    assert sql_literal(float("nan")) == "NULL"


def test_csv_parses_and_round_trips():
    recs = nasty_records()
    enc = ChunkEncoder(SCHEMA, OutputFormat.CSV)
    text = enc.encode(recs[:3]) + enc.encode(recs[3:])
    rows = list(csv.DictReader(io.StringIO(text, newline="")))
    assert len(rows) == len(recs)
    for row, r in zip(rows, recs, strict=True):
        assert row["text"] == r["text"]
        assert int(row["n"]) == r["n"]
        assert row["flag"] == ("true" if r["flag"] else "false")
        assert row["maybe"] == ("" if r["maybe"] is None else r["maybe"])
        assert json.loads(row["obj"]) == {"k": r["text"]}


def test_each_json_chunk_is_an_array_and_they_join_into_one():
    recs = nasty_records()
    enc = ChunkEncoder(SCHEMA, OutputFormat.JSON)
    parts = [enc.encode(recs[:1]), enc.encode([]), enc.encode(recs[1:]), enc.encode([])]
    assert [json.loads(p) for p in parts] == [recs[:1], [], recs[1:], []]
    assert parts[1] == "[]"
    assert join_chunks(OutputFormat.JSON, parts) == encode_all(SCHEMA, OutputFormat.JSON, recs)
    assert json.loads(join_chunks(OutputFormat.JSON, parts)) == recs


@pytest.mark.parametrize(
    "parts",
    [[], ["[]"], ["[]", "[]"], [""], ["[]", '[{"a":1}]', "[]"], ['[{"a":1}]', "", '[{"b":[]}]']],
)
def test_join_chunks_handles_empty_json_arrays(parts):
    """An empty array (or a failed chunk's empty data) adds no record and no comma."""
    joined = join_chunks(OutputFormat.JSON, parts)
    assert json.loads(joined) == [r for p in parts if p for r in json.loads(p)]


def test_join_chunks_concatenates_csv_and_sql():
    assert join_chunks(OutputFormat.CSV, ["a\r\n1\r\n", "2\r\n"]) == "a\r\n1\r\n2\r\n"
    assert join_chunks(OutputFormat.SQL, ["CREATE ...;\n", "INSERT ...;\n"]) == (
        "CREATE ...;\nINSERT ...;\n"
    )


def test_generated_carts_as_sql_load_into_sqlite(registry):
    plan = build_plan(
        GenerateRequest(entity="cart", count=1200, seed=3, output_format="SQL"), registry
    )
    recs = generate_records(plan, 0, plan.count)
    db = sqlite3.connect(":memory:")
    db.executescript(encode_all(plan.schema, OutputFormat.SQL, recs))
    rows = db.execute('SELECT "cart_id", "total", "items" FROM "cart" ORDER BY "_index"').fetchall()
    assert [(r["cart_id"], r["total"]) for r in recs] == [(a, b) for a, b, _ in rows]
    assert json.loads(rows[5][2]) == recs[5]["items"]


def test_generated_orders_as_csv_have_all_columns(registry):
    plan = build_plan(GenerateRequest(entity="order", count=50, seed=3), registry)
    recs = generate_records(plan, 0, plan.count)
    rows = list(
        csv.DictReader(io.StringIO(encode_all(plan.schema, OutputFormat.CSV, recs), newline=""))
    )
    assert list(rows[0]) == [
        "_index",
        "_scenario",
        "_shopping_occasion",
        *plan.schema.field_names(),
    ]
    assert json.loads(rows[7]["shipping_address"]) == recs[7]["shipping_address"]
