"""The files `testdata export` writes: JSON Lines, JSON, CSV, SQL and Parquet, one batch of
records at a time (nothing here holds a dataset).

A file holds one dataset or several (`--combined`). Where datasets differ in shape (a defect
dataset has two more columns and allows missing fields; custom schemas differ at will), the
file takes the union: CSV and Parquet have every column of every dataset, each value under
its own name; SQL has one table per entity with the union of its datasets' columns, NOT NULL
only where every dataset has the column and requires it (a dataset whose column types clash
with a table's gets a table of its own shape: `cart_2`).

A combined file is written one dataset at a time: each goes to a fragment (the same format,
without the file's opening and closing), which is appended once the dataset is known to be
complete, so a dataset found incomplete half-way leaves nothing behind.
"""

from __future__ import annotations

import shutil
from abc import ABC, abstractmethod
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, BinaryIO

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from services.core.formats import Column, create_table, csv_rows, insert_rows
from services.core.models import FieldSpec, FieldType
from services.core.validate import INVALID_KEY
from services.datasets.errors import Unfit

FORMATS = ("jsonl", "json", "csv", "sql", "parquet")
#: Formats that hold one table per file: a combined file needs one entity.
ONE_TABLE = ("csv", "parquet")
#: Parquet rows per row group (also the most a Parquet writer holds before writing).
ROW_GROUP = 8192


@dataclass
class Table:
    name: str
    columns: list[Column]


class Layout:
    """Where each dataset's records go in a file: its table, and its own columns."""

    def __init__(self) -> None:
        self.tables: dict[str, Table] = {}
        self._of: dict[str, tuple[Table, list[Column]]] = {}

    def add(self, key: str, name: str, cols: list[Column]) -> None:
        shape = 1
        while True:
            table = self.tables.get(name if shape == 1 else f"{name}_{shape}")
            if table is None:
                table = Table(name if shape == 1 else f"{name}_{shape}", list(cols))
                self.tables[table.name] = table
                break
            if _fits(table, cols):
                _merge(table, cols)
                break
            shape += 1
        self._of[key] = (table, cols)

    def table(self, key: str) -> Table:
        return self._of[key][0]

    def columns(self, key: str) -> list[Column]:
        return self._of[key][1]

    def union(self) -> list[Column]:
        """Every column of every table, each name once, in the order first seen."""
        seen: dict[str, Column] = {}
        for t in self.tables.values():
            for c in t.columns:
                seen.setdefault(c.name, c)
        return list(seen.values())


def _fits(table: Table, cols: list[Column]) -> bool:
    have = {c.name: c.sql_type for c in table.columns}
    return all(have.get(c.name, c.sql_type) == c.sql_type for c in cols)


def _merge(table: Table, cols: list[Column]) -> None:
    """The table grows the columns it lacks; a column some dataset lacks or leaves
    optional loses NOT NULL (rows of that dataset hold NULL there)."""
    names = {c.name: c for c in cols}
    table.columns = [
        c
        if not c.not_null or (c.name in names and names[c.name].not_null)
        else replace(c, not_null=False)
        for c in table.columns
    ]
    have = {c.name for c in table.columns}
    table.columns += [replace(c, not_null=False) for c in cols if c.name not in have]


class Sink(ABC):
    """One file being written. With `head`, the whole file (its opening and closing: the
    CSV header row, the CREATE TABLEs, JSON's brackets); without, a fragment: the rows of
    one dataset, to be appended to a file with `append`."""

    def __init__(self, f: BinaryIO, layout: Layout, head: bool = True):
        self.f, self.layout, self.head = f, layout, head
        self.rows = 0

    def open(self) -> None:  # noqa: B027
        """Write the file's opening."""

    @abstractmethod
    def write(self, key: str, records: list[dict[str, Any]]) -> None:
        """The next records of dataset `key`."""

    def append(self, fragment: Path, rows: int) -> None:
        """A fragment (written by a head-less sink of the same layout) of `rows` rows."""
        with fragment.open("rb") as src:
            shutil.copyfileobj(src, self.f, 1 << 20)
        self.rows += rows

    def close(self) -> None:  # noqa: B027
        """Write the file's closing (the file object stays the caller's)."""


class JsonLinesSink(Sink):
    def write(self, key: str, records: list[dict[str, Any]]) -> None:
        if records:
            self.f.write(b"\n".join(orjson.dumps(r) for r in records) + b"\n")
            self.rows += len(records)


class JsonSink(Sink):
    """One array; a fragment is its records, comma-separated, without brackets."""

    def open(self) -> None:
        if self.head:
            self.f.write(b"[")

    def write(self, key: str, records: list[dict[str, Any]]) -> None:
        if records:
            body = b",".join(orjson.dumps(r) for r in records)
            self.f.write(body if not self.rows else b"," + body)
            self.rows += len(records)

    def append(self, fragment: Path, rows: int) -> None:
        if rows:
            if self.rows:
                self.f.write(b",")
            super().append(fragment, rows)

    def close(self) -> None:
        if self.head:
            self.f.write(b"]")


class CsvSink(Sink):
    """RFC 4180 rows under the union of the datasets' columns (absent: an empty cell)."""

    def __init__(self, f: BinaryIO, layout: Layout, head: bool = True):
        super().__init__(f, layout, head)
        self.cols = [c.name for c in layout.union()]

    def open(self) -> None:
        if self.head and self.cols:  # no dataset, no columns: an empty file
            self.f.write(csv_rows(self.cols, [], header=True).encode())

    def write(self, key: str, records: list[dict[str, Any]]) -> None:
        if records:
            self.f.write(csv_rows(self.cols, records).encode())
            self.rows += len(records)


class SqlSink(Sink):
    """CREATE TABLE for every table of the layout, then each dataset's INSERTs (naming
    the dataset's own columns: the others are NULL)."""

    def open(self) -> None:
        if self.head:
            for t in self.layout.tables.values():
                self.f.write(create_table(t.name, t.columns).encode())

    def write(self, key: str, records: list[dict[str, Any]]) -> None:
        if records:
            cols = [c.name for c in self.layout.columns(key)]
            self.f.write(insert_rows(self.layout.table(key).name, cols, records).encode())
            self.rows += len(records)


class ParquetSink(Sink):
    """Typed columns: nested objects are structs, arrays lists; dates and timestamps stay
    the RFC 3339 text that was delivered. Rows are written in row groups of ROW_GROUP. A
    fragment is an Arrow IPC stream (no compression to undo when it is appended)."""

    def __init__(self, f: BinaryIO, layout: Layout, head: bool = True):
        super().__init__(f, layout, head)
        # every shape's columns: arrow_schema merges a name's types across them
        self.schema = arrow_schema([c for t in layout.tables.values() for c in t.columns])
        self.writer: pq.ParquetWriter | None = None
        self.stream: pa.ipc.RecordBatchStreamWriter | None = None
        if head:
            self.writer = pq.ParquetWriter(f, self.schema, compression="zstd")
        else:
            self.stream = pa.ipc.new_stream(f, self.schema)
        self._held: list[pa.RecordBatch] = []
        self._held_rows = 0

    def write(self, key: str, records: list[dict[str, Any]]) -> None:
        if records:
            self._hold(to_batch(records, self.schema))

    def append(self, fragment: Path, rows: int) -> None:
        with pa.ipc.open_stream(pa.OSFile(str(fragment))) as batches:
            for batch in batches:
                self._hold(batch)

    def _hold(self, batch: pa.RecordBatch) -> None:
        self.rows += batch.num_rows
        if self.stream is not None:
            self.stream.write_batch(batch)
            return
        self._held.append(batch)
        self._held_rows += batch.num_rows
        if self._held_rows >= ROW_GROUP:
            self._flush()

    def _flush(self) -> None:
        if self._held and self.writer is not None:
            self.writer.write_table(pa.Table.from_batches(self._held, self.schema))
            self._held, self._held_rows = [], 0

    def close(self) -> None:
        if self.stream is not None:
            self.stream.close()
        if self.writer is not None:
            self._flush()
            self.writer.close()


SINKS: dict[str, type[Sink]] = {
    "jsonl": JsonLinesSink,
    "json": JsonSink,
    "csv": CsvSink,
    "sql": SqlSink,
    "parquet": ParquetSink,
}


# ---- Parquet types ----------------------------------------------------------------------
def arrow_type(c: Column) -> pa.DataType:
    if c.field is not None:
        return _field_type(c.field)
    if c.name == "_index":
        return pa.int64()
    return pa.list_(pa.string()) if c.name == INVALID_KEY else pa.string()


def _field_type(f: FieldSpec) -> pa.DataType:
    if f.type == FieldType.INTEGER:
        return pa.int64()
    if f.type == FieldType.FLOAT:
        return pa.float64()
    if f.type == FieldType.BOOLEAN:
        return pa.bool_()
    if f.type == FieldType.OBJECT:
        return _struct(f.nested_fields) if f.nested_fields else pa.string()  # JSON text
    if f.type == FieldType.ARRAY:
        return pa.list_(_struct(f.nested_fields) if f.nested_fields else pa.string())
    return pa.string()


def _struct(fields: list[FieldSpec]) -> pa.DataType:
    seen: dict[str, pa.DataType] = {}
    for f in fields:
        seen.setdefault(f.name, _field_type(f))
    return pa.struct([pa.field(n, t) for n, t in seen.items()])


def merge_types(a: pa.DataType, b: pa.DataType) -> pa.DataType:
    """One type that holds values of both: structs and lists merge member by member,
    integers widen to floats, anything else that differs becomes JSON text."""
    if a.equals(b):
        return a
    if {str(a), str(b)} == {"int64", "double"}:
        return pa.float64()
    if pa.types.is_struct(a) and pa.types.is_struct(b):
        members: dict[str, pa.DataType] = {}
        for t in (a, b):
            for i in range(t.num_fields):
                f = t.field(i)
                members[f.name] = (
                    merge_types(members[f.name], f.type) if f.name in members else f.type
                )
        return pa.struct([pa.field(n, t) for n, t in members.items()])
    if pa.types.is_list(a) and pa.types.is_list(b):
        return pa.list_(merge_types(a.value_type, b.value_type))
    return pa.string()


def arrow_schema(cols: list[Column]) -> pa.Schema:
    types: dict[str, pa.DataType] = {}
    for c in cols:
        t = arrow_type(c)
        types[c.name] = merge_types(types[c.name], t) if c.name in types else t
    return pa.schema([pa.field(n, t) for n, t in types.items()])


def to_batch(records: list[dict[str, Any]], schema: pa.Schema) -> pa.RecordBatch:
    """Records as one record batch of `schema`. Values of a text column that are not text
    (objects without declared fields, clashing types) become JSON text; a value that fits
    nowhere raises Unfit naming it."""
    try:
        return pa.RecordBatch.from_pylist(records, schema=schema)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
        pass
    rows = []
    for i, r in enumerate(records):
        row = {}
        for f in schema:
            try:
                row[f.name] = _fit(r.get(f.name), f.type)
            except Unfit as exc:
                raise Unfit(f"record {r.get('_index', i)}, {f.name}: {exc}") from None
        rows.append(row)
    return pa.RecordBatch.from_pylist(rows, schema=schema)


def _fit(v: Any, t: pa.DataType) -> Any:
    if v is None:
        return None
    if pa.types.is_string(t):
        return v if isinstance(v, str) else orjson.dumps(v).decode()
    if pa.types.is_int64(t):
        if isinstance(v, int) and not isinstance(v, bool) and -(1 << 63) <= v < 1 << 63:
            return v
        if isinstance(v, float) and v.is_integer() and abs(v) < 2**63:
            return int(v)
    elif pa.types.is_float64(t):
        if isinstance(v, int | float) and not isinstance(v, bool):
            return float(v)
    elif pa.types.is_boolean(t):
        if isinstance(v, bool):
            return v
    elif pa.types.is_struct(t):
        if isinstance(v, dict):
            return {
                t.field(i).name: _fit(v.get(t.field(i).name), t.field(i).type)
                for i in range(t.num_fields)
            }
    elif pa.types.is_list(t) and isinstance(v, list):
        return [_fit(x, t.value_type) for x in v]
    raise Unfit(f"{str(v)[:60]!r} does not fit Parquet type {t}")
