"""Parquet: the text, title and instruction columns, streamed in row batches."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from llama_assets.base.rejects import Reject
from llama_assets.ingest.readers.base import (
    MESSAGE_KEYS,
    TEXT_KEYS,
    TITLE_KEYS,
    Document,
    FileReader,
)

BATCH_ROWS = 1024
"""Rows decoded to Python at a time."""


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
            for chunk in parquet.iter_batches(batch_size=BATCH_ROWS, columns=columns):
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
        """A seekable local path of the Parquet file (a compressed one is spooled
        to a temporary file)."""
        if self.compression is None:
            yield self.file
            return
        with tempfile.TemporaryDirectory(prefix="llama-parquet-") as tmp:
            target = Path(tmp) / "data.parquet"
            with self.open() as src, open(target, "wb") as dst:
                shutil.copyfileobj(src, dst, length=1024 * 1024)
            yield target


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
