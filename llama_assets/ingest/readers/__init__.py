"""Streaming readers that turn one landing batch directory into documents.

A landing batch is whatever people drop into `landing/<source>/<batch>/`: any
mix of JSON lines, JSON, Parquet, CSV, plain text, Markdown, reStructuredText
and HTML, optionally gzip- or zstd-compressed, in nested folders. `iter_batch`
walks it in a fixed order and hands each file to the reader registered for its
format (`READERS`, one `FileReader` subclass per format, as datatrove has one
reader class per format), which yields one `Document` or one `Reject` at a
time, so memory stays bounded by the largest single record (or whole-file
document), never by the batch. Every problem - an unparseable line, a binary
file, a missing text field - becomes a `Reject` with a reason instead of an
exception, because bad input must never crash a run nor vanish silently.

Text may be UTF-8, UTF-16 with a BOM, or legacy cp1252/latin-1 (the rule is in
`ingest/encoding.py`). Bytes that are none of these are never guessed at nor
replaced: their record (a line of JSON lines, a CSV or Parquet row, a whole file
otherwise) is rejected as "invalid_utf8" ("invalid_utf16" in a file with a
UTF-16 BOM), and so is a JSON string holding a lone surrogate, which no UTF-8
output can store. HTML becomes text in `ingest/html_text.py`.

Adding a format: subclass `FileReader` in its own module, implement
`read_records`, list it in `_READER_CLASSES`.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

from llama_assets.base.rejects import Reject, make_excerpt
from llama_assets.ingest.readers.base import (
    MAX_DOCUMENT_CHARS,
    STAGE,
    Document,
    FileReader,
    make_doc_id,
)
from llama_assets.ingest.readers.csv_file import CsvReader
from llama_assets.ingest.readers.html_file import HtmlReader
from llama_assets.ingest.readers.json_file import JsonReader
from llama_assets.ingest.readers.jsonl import JsonlReader
from llama_assets.ingest.readers.parquet_file import ParquetReader
from llama_assets.ingest.readers.text_file import TextReader

__all__ = [
    "COMPRESSIONS",
    "MAX_DOCUMENT_CHARS",
    "READERS",
    "SUPPORTED_FORMATS",
    "SUPPORTED_SUFFIXES",
    "Document",
    "FileReader",
    "iter_batch",
    "make_doc_id",
    "reader_for",
]

_READER_CLASSES: tuple[type[FileReader], ...] = (
    JsonlReader,
    JsonReader,
    ParquetReader,
    CsvReader,
    TextReader,
    HtmlReader,
)

READERS: dict[str, type[FileReader]] = {
    fmt: reader for reader in _READER_CLASSES for fmt in reader.formats
}
"""The registry: format (a file suffix without its dot) -> the reader class."""

COMPRESSIONS = {".gz": "gzip", ".zst": "zstd", ".zstd": "zstd"}
"""Compression suffixes any format may carry, and the codec each means."""

SUPPORTED_FORMATS = tuple(READERS)
"""Values of `Document.format`: the suffix without its dot and without `.gz`."""

SUPPORTED_SUFFIXES = tuple(f".{f}" for f in READERS) + tuple(
    f".{f}{c}" for f in READERS for c in COMPRESSIONS
)
"""File suffixes read from a landing batch (each also gzip- or zstd-compressed)."""


def iter_batch(
    batch_dir: Path, source: str, batch: str, spool_dir: Path | None = None
) -> Iterator[Document | Reject]:
    """Yield every document (or reject) of a landing batch, in a fixed order.

    Files are visited sorted by their path relative to `batch_dir`; files and
    folders whose name starts with "." or "_" (`.DS_Store`, `_SUCCESS`, ...) are
    skipped as markers. Files with unsupported suffixes are rejected as
    "unsupported_format", names that are not valid UTF-8 as "invalid_file_name".
    Symlinks are never followed ("symlink_not_followed": a link could lead to any
    file on the machine), and FIFOs, sockets and devices are never opened
    ("not_a_regular_file": reading a FIFO blocks forever).
    A compressed file that must be seekable (Parquet) is spooled under
    `spool_dir` (default: beside the batch folder, hidden), inside the data root.
    """
    spool_dir = Path(spool_dir) if spool_dir is not None else Path(batch_dir).parent
    batch_dir = Path(batch_dir)
    for rel, problem in _list_files(batch_dir):
        if problem is not None:
            shown = rel.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
            yield Reject(source, batch, shown, None, STAGE, problem, make_excerpt(shown))
            continue
        try:
            rel.encode("utf-8")
        except UnicodeEncodeError:
            # A name that is not valid UTF-8 cannot be stored as a path column.
            shown = rel.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
            yield Reject(source, batch, shown, None, STAGE, "invalid_file_name", shown)
            continue
        reader = reader_for(batch_dir / rel, source, batch, rel, spool_dir)
        if reader is None:
            yield Reject(source, batch, rel, None, STAGE, "unsupported_format", make_excerpt(rel))
            continue
        yield from reader.read()


def reader_for(
    file: Path, source: str, batch: str, rel: str, spool_dir: Path | None = None
) -> FileReader | None:
    """The registered reader of `file` (by its suffix, after any compression
    suffix), or None when its format is not supported."""
    fmt, compression = _split_suffix(file.name)
    if fmt is None:
        return None
    return READERS[fmt](file, source, batch, rel, fmt, compression, spool_dir)


def _split_suffix(name: str) -> tuple[str | None, str | None]:
    """(format, compression) of a file name: compression "gzip", "zstd" or None;
    format None when unsupported."""
    lower = name.lower()
    compression = None
    for suffix, codec in COMPRESSIONS.items():
        if lower.endswith(suffix):
            lower, compression = lower[: -len(suffix)], codec
            break
    for fmt in READERS:
        if lower.endswith(f".{fmt}"):
            return fmt, compression
    return None, compression


def _list_files(batch_dir: Path) -> list[tuple[str, str | None]]:
    """Relative posix paths of the batch's entries to read, sorted, markers
    skipped; each with the reason it is not read (None for a regular file)."""
    found: list[tuple[str, str | None]] = []
    # os.walk never descends into a linked folder; it still lists it in `dirs`.
    for root, dirs, files in os.walk(batch_dir):
        dirs[:] = [d for d in dirs if not d.startswith((".", "_"))]
        linked = [d for d in dirs if (Path(root) / d).is_symlink()]
        dirs[:] = [d for d in dirs if d not in linked]
        for name in [*files, *linked]:
            if name.startswith((".", "_")):
                continue
            path = Path(root) / name
            found.append((path.relative_to(batch_dir).as_posix(), _not_readable(path)))
    return sorted(found)


def _not_readable(path: Path) -> str | None:
    mode = os.lstat(path).st_mode
    if stat.S_ISLNK(mode):
        return "symlink_not_followed"
    if not stat.S_ISREG(mode):
        return "not_a_regular_file"
    return None
