"""Parquet: the text, title and instruction columns, streamed in row batches."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from llama_assets.base.atomic import temp_prefix
from llama_assets.base.rejects import Reject
from llama_assets.ingest.readers.base import (
    MESSAGE_KEYS,
    TEXT_KEYS,
    TITLE_KEYS,
    Document,
    FileReader,
)

BATCH_ROWS = 1024
"""Most rows decoded to Python at a time."""

BATCH_BYTES = 64 * 1024 * 1024
"""Rows decoded at a time are fewer when a row group's rows are large: about
this many bytes of the columns read (from the row group's statistics)."""

MAX_ROW_GROUP_BYTES = 1024**3
"""A row group whose columns read would decode to more than this is rejected as
"too_large" without being read (pyarrow decodes a page whole)."""


class ParquetReader(FileReader):
    """Only the columns a document needs are read. Parquet declares its strings
    UTF-8, so no other encoding is guessed: a row holding invalid UTF-8 is
    rejected ("invalid_utf8") with the bytes of its first bad value."""

    formats = ("parquet",)
    sniff = False  # a binary format

    def read_records(self) -> Iterator[Document | Reject]:
        with self.parquet_path() as path:
            parquet = pq.ParquetFile(path)
            names = parquet.schema_arrow.names
            columns = [n for n in (*TEXT_KEYS, *TITLE_KEYS, *MESSAGE_KEYS) if n in names]
            if not any(k in names for k in (*TEXT_KEYS, *MESSAGE_KEYS)):
                yield self.reject(None, "missing_text", f"columns: {names}")
                return
            index = 0
            for group in range(parquet.num_row_groups):
                rows = parquet.metadata.row_group(group).num_rows
                size = _row_group_bytes(parquet, group, columns)
                if size > MAX_ROW_GROUP_BYTES:
                    yield self.reject(
                        index, "too_large", f"row group {group}: {rows} rows, {size:,} bytes"
                    )
                    index += rows
                    continue
                per_row = max(1, size // max(1, rows))
                batch_rows = max(1, min(BATCH_ROWS, BATCH_BYTES // per_row))
                chunks = parquet.iter_batches(
                    batch_size=batch_rows, row_groups=[group], columns=columns
                )
                for chunk in chunks:
                    for obj in _parquet_rows(chunk):
                        if isinstance(obj, bytes):
                            yield self.reject(index, self.undecodable, obj)
                        else:
                            yield self.from_mapping(index, obj)
                        index += 1
            if index == 0:
                yield self.reject(None, "empty_file", f"columns: {names}")

    @contextmanager
    def parquet_path(self) -> Iterator[Path]:
        """A seekable local path of the Parquet file: a compressed one is spooled
        (bounded like any decompression) into a hidden temporary folder under
        `spool_dir`, inside the data root, never the system temp folder."""
        if self.compression is None:
            yield self.file
            return
        self.spool_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(
            dir=self.spool_dir, prefix=temp_prefix("llama-spool"), suffix=".tmp"
        ) as tmp:
            target = Path(tmp) / "data.parquet"
            with self.open() as src, open(target, "wb") as dst:
                shutil.copyfileobj(src, dst, length=1024 * 1024)
            yield target


def _row_group_bytes(parquet: pq.ParquetFile, group: int, columns: list[str]) -> int:
    """Uncompressed bytes of `columns` in one row group (nested columns count every leaf)."""
    meta = parquet.metadata.row_group(group)
    total = 0
    for i in range(meta.num_columns):
        column = meta.column(i)
        if column.path_in_schema.split(".")[0] in columns:
            total += column.total_uncompressed_size
    return total


def _parquet_rows(chunk: pa.RecordBatch) -> Iterator[dict | bytes]:
    """The rows of a Parquet batch as dicts; a row whose strings are not valid
    UTF-8 comes back as the raw bytes of its first such value, for a reject's
    excerpt."""
    try:
        yield from chunk.to_pylist()
        return
    except UnicodeDecodeError:
        pass  # some row is not UTF-8: find it, row by row
    for i in range(chunk.num_rows):
        row = chunk.slice(i, 1)
        try:
            yield row.to_pylist()[0]
        except UnicodeDecodeError:
            yield _undecodable_bytes(row)


def _undecodable_bytes(row: pa.RecordBatch) -> bytes:
    for column in row.columns:
        if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
            value = column.cast(pa.large_binary())[0].as_py()
            if value is not None:
                try:
                    value.decode("utf-8")
                except UnicodeDecodeError:
                    return value
    return b""  # the bad bytes are inside a nested column (e.g. messages)
