"""JSON, CSV and SQL output, written chunk by chunk.

The shape of a stream's chunks (`DataChunk.data`):
- JSON: each chunk is a complete array of its own records (`[]` when it has none), so a
  caller can parse every chunk on its own. `join_chunks` merges them into one array.
- CSV and SQL: chunks concatenate into one valid file.
- CSV (RFC 4180, CRLF): header row in the first chunk. Nested objects and arrays are
  JSON-encoded into one cell; null is an empty cell; booleans are true/false.
- SQL: CREATE TABLE in the first chunk, then multi-row INSERTs (at most 500 rows each).
  Required fields are NOT NULL, except in a defect dataset's table (its records may leave
  them out on purpose, and must still load). Strings are single-quoted with quotes doubled
  (backslashes are literal, as in standard SQL); nested values are JSON text; NUL
  characters, which SQL text cannot hold, are removed.
"""

from __future__ import annotations

import csv
import hashlib
import io
import math
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import orjson

from services.core.models import EntitySchema, FieldSpec, FieldType, OutputFormat
from services.core.validate import INVALID_KEY

SQL_ROWS_PER_INSERT = 500
SQL_TYPES = {
    FieldType.INTEGER: "INTEGER",
    FieldType.FLOAT: "DOUBLE PRECISION",
    FieldType.BOOLEAN: "BOOLEAN",
    FieldType.DATE: "DATE",
    FieldType.DATETIME: "TIMESTAMP",
}


def columns(schema: EntitySchema) -> list[str]:
    return ["_index", "_scenario", *schema.meta_fields, *schema.field_names()]


@dataclass(frozen=True)
class Column:
    """One column of a table-shaped output (CSV, SQL, Parquet)."""

    name: str
    sql_type: str
    not_null: bool = False
    field: FieldSpec | None = None  # None: `_index`, `_scenario` or a meta key


def holds_defects(schema: EntitySchema) -> bool:
    """Whether records of this output schema may break it on purpose: a defect request's
    schema shows the defect keys as columns (validate.with_defect_columns)."""
    return INVALID_KEY in schema.meta_fields


def table_columns(schema: EntitySchema, lenient: bool | None = None) -> list[Column]:
    """The columns a dataset of `schema` is written with. Required fields are NOT NULL,
    except where records may be intentionally invalid (`lenient`, by default when the
    schema holds defects): a missing required field must still load."""
    if lenient is None:
        lenient = holds_defects(schema)
    cols = [Column("_index", "INTEGER", True), Column("_scenario", "TEXT", True)]
    cols += [Column(m, "TEXT") for m in schema.meta_fields]
    cols += [
        Column(f.name, SQL_TYPES.get(f.type, "TEXT"), f.required and not lenient, f)
        for f in schema.fields
    ]
    return cols


def create_table(table: str, cols: list[Column], *, if_not_exists: bool = False) -> str:
    """CREATE TABLE for `cols` (valid in SQLite and PostgreSQL alike)."""
    defs = [
        f"  {quote_ident(c.name)} {c.sql_type}{' NOT NULL' if c.not_null else ''}" for c in cols
    ]
    head = "CREATE TABLE IF NOT EXISTS " if if_not_exists else "CREATE TABLE "
    return head + quote_ident(table) + " (\n" + ",\n".join(defs) + "\n);\n"


def insert_rows(table: str, cols: list[str], records: list[dict[str, Any]]) -> str:
    """Multi-row INSERTs (at most SQL_ROWS_PER_INSERT rows each); absent keys are NULL."""
    names = ", ".join(quote_ident(c) for c in cols)
    parts = []
    for lo in range(0, len(records), SQL_ROWS_PER_INSERT):
        rows = ",\n".join(
            "(" + ", ".join(sql_literal(r.get(c)) for c in cols) + ")"
            for r in records[lo : lo + SQL_ROWS_PER_INSERT]
        )
        parts.append(f"INSERT INTO {quote_ident(table)} ({names}) VALUES\n{rows};\n")
    return "".join(parts)


def csv_rows(cols: list[str], records: list[dict[str, Any]], header: bool = False) -> str:
    """CSV rows (RFC 4180, CRLF) of `records` under `cols`; absent keys are empty cells."""
    buf = io.StringIO()
    w = csv.writer(buf)
    if header:
        w.writerow(cols)
    for r in records:
        w.writerow([_csv_cell(r.get(c)) for c in cols])
    return buf.getvalue()


class ChunkEncoder:
    """Encodes successive chunks of one dataset; remembers only whether it has begun
    (the CSV header and the SQL CREATE TABLE go in the first chunk only)."""

    def __init__(
        self,
        schema: EntitySchema,
        fmt: OutputFormat,
        table: str | None = None,
        lenient: bool | None = None,
    ):
        self.schema = schema
        self.fmt = fmt
        self.columns = table_columns(schema, lenient)
        self.cols = [c.name for c in self.columns]
        self.table = table or schema.name
        self.started = False

    def encode(self, records: list[dict[str, Any]]) -> str:
        first = not self.started
        self.started = True
        if self.fmt == OutputFormat.JSON:
            return orjson.dumps(records).decode()
        if self.fmt == OutputFormat.CSV:
            return csv_rows(self.cols, records, header=first)
        head = self.create_table() if first else ""
        return head + insert_rows(self.table, self.cols, records)

    def create_table(self) -> str:
        return create_table(self.table, self.columns)


def encode_all(schema: EntitySchema, fmt: OutputFormat, records: list[dict[str, Any]]) -> str:
    return ChunkEncoder(schema, fmt).encode(records)


class Joiner:
    """Turns a stream's chunk data into the pieces of one document, one chunk at a time,
    for callers that receive chunks as they come (sync or async)."""

    def __init__(self, fmt: OutputFormat):
        self.json = fmt == OutputFormat.JSON
        self.first = True

    def opening(self) -> str:
        return "[" if self.json else ""

    def part(self, data: str) -> str:
        """CSV and SQL chunks already concatenate. Each JSON chunk is a whole array: its
        brackets are dropped and the contents joined with commas (no parse and re-dump).
        Empty arrays, and the empty data of a failed chunk, add nothing."""
        if not self.json:
            return data
        inner = data.strip()[1:-1]
        if not inner.strip():
            return ""
        sep, self.first = ("" if self.first else ","), False
        return sep + inner

    def closing(self) -> str:
        return "]" if self.json else ""


class DatasetDigest:
    """SHA-256 of the one document a request's chunks make, fed chunk by chunk: the same
    dataset has the same digest however it was cut into chunks."""

    def __init__(self, fmt: OutputFormat):
        self._joiner = Joiner(fmt)
        self._h = hashlib.sha256(self._joiner.opening().encode())

    def update(self, data: str) -> None:
        self._h.update(self._joiner.part(data).encode())

    def hexdigest(self) -> str:
        h = self._h.copy()
        h.update(self._joiner.closing().encode())
        return h.hexdigest()


def iter_joined(fmt: OutputFormat, parts: Iterable[str]) -> Iterator[str]:
    """The pieces of the one document a stream's chunks make, in order, one chunk at a time
    (a caller can write a file of any size without holding it)."""
    joiner = Joiner(fmt)
    yield joiner.opening()
    for part in parts:
        yield joiner.part(part)
    yield joiner.closing()


def join_chunks(fmt: OutputFormat, parts: list[str]) -> str:
    """One valid document from a request's chunk data: what unary `GenerateData` returns."""
    return "".join(iter_joined(fmt, parts))


def _csv_cell(v: Any) -> Any:
    if v is None:
        return ""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, dict | list):
        return orjson.dumps(v).decode()
    return v


_IDENT_OK = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def sql_literal(v: Any) -> str:
    if v is None:
        return "NULL"
    if isinstance(v, bool):
        return "TRUE" if v else "FALSE"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return repr(v) if math.isfinite(v) else "NULL"
    if isinstance(v, dict | list):
        v = orjson.dumps(v).decode()
    return "'" + str(v).replace("\x00", "").replace("'", "''") + "'"
