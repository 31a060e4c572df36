"""Streaming readers that turn one landing batch directory into documents.

A landing batch is whatever people drop into `landing/<source>/<batch>/`: any
mix of JSON lines, JSON, Parquet, CSV, plain text, Markdown, reStructuredText
and HTML, optionally gzip- or zstd-compressed, in nested folders. `iter_batch` walks it
in a fixed order and yields one `Document` or one `Reject` at a time, so memory
stays bounded by the largest single record (or whole-file document), never by
the batch. Every problem - an unparseable line, a binary file, a missing text
field - becomes a `Reject` with a reason instead of an exception, because bad
input must never crash a run nor vanish silently.

Text may be UTF-8, UTF-16 with a BOM, or legacy cp1252/latin-1 (see
`decode_line`). Bytes that are none of these are never guessed at nor replaced:
their record (a line of JSON lines, a CSV or Parquet row, a whole file otherwise) is
rejected as "invalid_utf8" ("invalid_utf16" in a file with a UTF-16 BOM), and
so is a JSON string holding a lone surrogate, which no UTF-8 output can store.
"""

from __future__ import annotations

import codecs
import csv
import gzip
import hashlib
import io
import json
import os
import re
import shutil
import sys
import tempfile
import zlib
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from typing import IO, Any

import pyarrow as pa
import pyarrow.parquet as pq

from llama_assets.base.rejects import EXCERPT_CHARS, Reject, make_excerpt

BASE_SUFFIXES = (".jsonl", ".json", ".parquet", ".csv", ".txt", ".md", ".rst", ".html", ".htm")
COMPRESSED_SUFFIXES = (".gz", ".zst", ".zstd")
SUPPORTED_SUFFIXES = BASE_SUFFIXES + tuple(
    f"{s}{c}" for s in BASE_SUFFIXES for c in COMPRESSED_SUFFIXES
)
"""File suffixes read from a landing batch (each also gzip-compressed)."""

SUPPORTED_FORMATS = tuple(s[1:] for s in BASE_SUFFIXES)
"""Values of `Document.format`: the suffix without its dot and without `.gz`."""

MAX_DOCUMENT_CHARS = 1_000_000
"""Longest accepted document text, in characters (after cleaning).

Longer texts are rejected as "too_large": at ~4 characters a token this is
~250k tokens, far beyond any context we train on, and such records are almost
always dumps (logs, data tables, concatenated sites) rather than documents.
"""

MAX_FILE_BYTES = 64 * 1024 * 1024
"""Largest file (decompressed) read whole: JSON, text, Markdown, rst and HTML.

These formats are read into memory in one piece; anything bigger is rejected
as "too_large" without being read. Line- and row-based formats stream and have
no such limit.
"""

SNIFF_BYTES = 8192
"""How much of a file's start is inspected for binary content."""

BINARY_CONTROL_FRACTION = 0.30
"""A file whose first `SNIFF_BYTES` hold more than this share of non-text
control characters (or any NUL byte) is treated as binary."""

TEXT_KEYS = ("text", "content", "body")
"""Field names that hold a record's text, first present (non-null) wins."""

TITLE_KEYS = ("title", "heading")
"""Field names that hold a record's title, first present string wins."""

MAX_TITLE_CHARS = 200

STAGE = "read"

_UTF8_BOM = b"\xef\xbb\xbf"
_UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")
# C0 controls except \t \n \r: removed from every text.
_CONTROL_CHARS = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f]")
# C0 controls except \t \n \r \f: legacy-encoded text holding one is not text.
_IMPLAUSIBLE_CONTROLS = re.compile(r"[\x00-\x08\x0b\x0e-\x1f]")
# Undecodable bytes as `decode_line` marks them: U+DC00 + byte.
_UNDECODABLE = re.compile(r"[\udc00-\udcff]")
_TEXT_CONTROL_BYTES = frozenset(b"\t\n\r\f\b\x1b")
_NON_TEXT_BYTES = frozenset(range(0x20)) - _TEXT_CONTROL_BYTES | {0x7F}


@dataclass(frozen=True)
class Document:
    """One document read from a landing batch, before any curation."""

    doc_id: str
    source: str
    batch: str
    path: str
    record: int
    title: str | None
    text: str
    format: str
    messages: str | None = None
    """An instruction (SFT) record's normalised message list as JSON, else None."""


MESSAGE_ROLES = ("system", "user", "assistant")
"""Roles an instruction record's messages may have."""

MESSAGE_KEYS = ("messages", "prompt", "response", "instruction", "input", "output")
"""Fields that make a record an instruction (SFT) record."""


def normalise_messages(obj: Mapping) -> list[dict[str, str]] | str | None:
    """The message list of an instruction record, a reject reason, or None.

    `messages` (a list of {"role", "content"}) is kept as is (roles checked);
    `prompt` + `response` and `instruction` (+ `input`) + `output` become one
    user and one assistant message. None when the record has none of these
    fields (a plain document); a string (the reject reason) when it has them
    in a wrong shape.
    """
    if obj.get("messages") is not None:
        raw = obj["messages"]
        if not isinstance(raw, list) or not raw:
            return "invalid_messages"
        out = []
        for message in raw:
            if not isinstance(message, Mapping):
                return "invalid_messages"
            role, content = message.get("role"), message.get("content")
            if role not in MESSAGE_ROLES or not isinstance(content, str):
                return "invalid_messages"
            out.append({"role": role, "content": content})
        return out
    if obj.get("prompt") is not None or obj.get("response") is not None:
        prompt, response = obj.get("prompt"), obj.get("response")
    elif obj.get("instruction") is not None or obj.get("output") is not None:
        prompt, response = obj.get("instruction"), obj.get("output")
        extra = obj.get("input")
        if isinstance(prompt, str) and isinstance(extra, str) and extra.strip():
            prompt = f"{prompt}\n\n{extra}"
    else:
        return None
    if not isinstance(prompt, str) or not isinstance(response, str):
        return "invalid_messages"
    return [{"role": "user", "content": prompt}, {"role": "assistant", "content": response}]


def make_doc_id(source: str, batch: str, path: str, record: int) -> str:
    """Deterministic id of a record: scoped by source, batch, file and position.

    The same input always gets the same id, so re-reading a batch is idempotent
    and ids never collide across batches (unlike positional ids such as `str(i)`).
    """
    return hashlib.sha256(f"{source}/{batch}/{path}#{record}".encode()).hexdigest()[:16]


def clean_text(text: str) -> str:
    """Drop C0 control characters (NUL included) and normalise line endings to \\n."""
    text = _CONTROL_CHARS.sub("", text)
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    return text


def _mark_undecodable(exc: UnicodeError) -> tuple[str, int]:
    """Codec error handler: each undecodable byte becomes U+DC00 + byte.

    Python's "surrogateescape" does this for bytes >= 0x80 only; UTF-16 errors
    also cover bytes below. Strict decoding never yields a lone surrogate, so
    one in decoded text always marks bytes that were not text.
    """
    if not isinstance(exc, UnicodeDecodeError):
        raise exc
    return "".join(chr(0xDC00 + b) for b in exc.object[exc.start : exc.end]), exc.end


_MARK = "llama-mark-undecodable"
codecs.register_error(_MARK, _mark_undecodable)


def decode_line(line: bytes) -> str:
    """Decode one line: UTF-8, else plausible cp1252, else marked as undecodable.

    Not UTF-8, a line is taken as cp1252 (Windows "ANSI"; for text it agrees
    with latin-1, whose 0x80-0x9F are C1 controls) when every byte is defined
    there and no C0 control but tab, newline, CR or form feed appears. Anything
    else is not text in any encoding we can tell apart: its undecodable bytes
    become U+DCxx marks (see `_mark_undecodable`), for the reader to reject.
    """
    try:
        return line.decode("utf-8")
    except UnicodeDecodeError:
        pass
    try:
        legacy = line.decode("cp1252")
    except UnicodeDecodeError:
        legacy = None
    if legacy is not None and not _IMPLAUSIBLE_CONTROLS.search(legacy):
        return legacy
    return line.decode("utf-8", errors=_MARK)


def decode_bytes(data: bytes) -> str:
    """Decode a whole file; undecodable bytes come back marked, never replaced.

    UTF-8 (with or without BOM) first, UTF-16 only when a BOM says so; a file
    that is not UTF-8 throughout is decoded line by line (`decode_line`), so
    one legacy line does not turn a UTF-8 file's other lines into mojibake.
    """
    if data[:2] in _UTF16_BOMS:
        return data.decode("utf-16", errors=_MARK)
    if data.startswith(_UTF8_BOM):
        data = data[len(_UTF8_BOM) :]
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return "".join(decode_line(line) for line in data.splitlines(keepends=True))


def _parquet_rows(chunk: pa.RecordBatch) -> Iterator[dict | bytes]:
    """The rows of a Parquet batch as dicts; a row whose strings are not valid
    UTF-8 (Parquet declares them UTF-8, so no other encoding is guessed) comes
    back as the raw bytes of its first such value, for a reject's excerpt."""
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


def has_surrogates(text: str) -> bool:
    """Whether `text` holds a lone surrogate: an undecodable-byte mark, or a JSON
    escape such as "\\ud800". Such text cannot be written as UTF-8 (Parquet, an
    index); encoding is how we ask, as it is several times faster than a regex."""
    if text.isascii():
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def undecodable_excerpt(text: str) -> str:
    """The part of `text` around its first undecodable byte, marks as \\xNN escapes.

    Starts a little before that byte, so a reject's excerpt shows the bad bytes
    even deep in a long line or file.
    """
    match = _UNDECODABLE.search(text)
    start = max(0, match.start() - EXCERPT_CHARS // 4) if match else 0
    part = text[start : start + EXCERPT_CHARS * 2]
    return _UNDECODABLE.sub(lambda m: f"\\x{ord(m.group()) - 0xDC00:02x}", part)


def looks_binary(head: bytes) -> bool:
    """Whether the first bytes of a file look like binary data rather than text."""
    if head[:2] in _UTF16_BOMS:
        # UTF-16 text is full of NUL bytes; judge the decoded characters instead.
        chars = head.decode("utf-16", errors="replace")
        if "\x00" in chars:
            return True
        controls = sum(1 for c in chars if ord(c) in _NON_TEXT_BYTES)
        return bool(chars) and controls / len(chars) > BINARY_CONTROL_FRACTION
    if b"\x00" in head:
        return True
    if not head:
        return False
    controls = sum(1 for b in head if b in _NON_TEXT_BYTES)
    return controls / len(head) > BINARY_CONTROL_FRACTION


def iter_batch(batch_dir: Path, source: str, batch: str) -> Iterator[Document | Reject]:
    """Yield every document (or reject) of a landing batch, in a fixed order.

    Files are visited sorted by their path relative to `batch_dir`; files and
    folders whose name starts with "." or "_" (`.DS_Store`, `_SUCCESS`, ...) are
    skipped as markers. Files with unsupported suffixes are rejected as
    "unsupported_format", names that are not valid UTF-8 as "invalid_file_name".
    """
    batch_dir = Path(batch_dir)
    for rel in _list_files(batch_dir):
        try:
            rel.encode("utf-8")
        except UnicodeEncodeError:
            # A name that is not valid UTF-8 cannot be stored as a path column.
            shown = rel.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
            yield Reject(source, batch, shown, None, STAGE, "invalid_file_name", shown)
            continue
        reader = _Reader(batch_dir / rel, source, batch, rel)
        yield from reader.read()


def _list_files(batch_dir: Path) -> list[str]:
    """Relative posix paths of the batch's files, sorted, markers skipped."""
    found: list[str] = []
    for root, dirs, files in os.walk(batch_dir):
        dirs[:] = [d for d in dirs if not d.startswith((".", "_"))]
        for name in files:
            if name.startswith((".", "_")):
                continue
            found.append((Path(root) / name).relative_to(batch_dir).as_posix())
    return sorted(found)


def _split_suffix(name: str) -> tuple[str | None, str | None]:
    """(format, compression) of a file name: compression "gzip", "zstd" or None;
    format None when unsupported."""
    lower = name.lower()
    compression = None
    for suffix, codec in ((".gz", "gzip"), (".zst", "zstd"), (".zstd", "zstd")):
        if lower.endswith(suffix):
            lower, compression = lower[: -len(suffix)], codec
            break
    for suffix in BASE_SUFFIXES:
        if lower.endswith(suffix):
            return suffix[1:], compression
    return None, compression


class _Reader:
    """Reads one file of a batch; holds the context every Document/Reject needs."""

    def __init__(self, file: Path, source: str, batch: str, rel: str) -> None:
        self.file = file
        self.source = source
        self.batch = batch
        self.rel = rel
        self.format, self.compression = _split_suffix(file.name)
        self.gzipped = self.compression is not None
        # Reason for bytes that are not text; `read` makes it invalid_utf16 after a BOM.
        self.undecodable = "invalid_utf8"

    # -- building results -------------------------------------------------

    def reject(self, record: int | None, reason: str, raw: str | bytes | None) -> Reject:
        return Reject(
            source=self.source,
            batch=self.batch,
            path=self.rel,
            record=record,
            stage=STAGE,
            reason=reason,
            excerpt=make_excerpt(raw),
        )

    def reject_undecodable(self, record: int | None, text: str) -> Reject:
        """A Reject for decoded text holding undecodable-byte marks."""
        return self.reject(record, self.undecodable, undecodable_excerpt(text))

    def document(
        self,
        record: int,
        text: str,
        title: str | None,
        raw: str | bytes | None = None,
        messages: str | None = None,
    ) -> Document | Reject:
        """A Document, or a Reject when the cleaned text is empty or too large, or
        it or the title is not valid Unicode (a lone surrogate, from a JSON escape)."""
        text = clean_text(text)
        if not text.strip():
            return self.reject(record, "empty_text", text if raw is None else raw)
        if len(text) > MAX_DOCUMENT_CHARS:
            return self.reject(record, "too_large", text if raw is None else raw)
        for value in (text, title):
            if value is not None and has_surrogates(value):
                return self.reject(record, "invalid_utf8", value if raw is None else raw)
        if title is not None:
            title = " ".join(clean_text(title).split())[:MAX_TITLE_CHARS] or None
        return Document(
            doc_id=make_doc_id(self.source, self.batch, self.rel, record),
            source=self.source,
            batch=self.batch,
            path=self.rel,
            record=record,
            title=title,
            text=text,
            format=self.format or "",
            messages=messages,
        )

    def from_mapping(
        self, record: int, obj: Any, raw: str | bytes | None = None
    ) -> Document | Reject:
        """A Document from one structured record (JSON object, CSV/Parquet row).

        `raw` is the record's source text for a reject's excerpt; without it the
        excerpt is the record serialised, which is only done for rejects.
        """
        reason = None
        text = None
        if isinstance(obj, Mapping) and any(obj.get(k) is not None for k in MESSAGE_KEYS):
            messages = normalise_messages(obj)
            if isinstance(messages, list):
                cleaned = [{**m, "content": clean_text(m["content"])} for m in messages]
                title = next((obj[k] for k in TITLE_KEYS if isinstance(obj.get(k), str)), None)
                joined = "\n\n".join(m["content"] for m in cleaned)
                encoded = json.dumps(cleaned, ensure_ascii=False)
                return self.document(record, joined, title, raw, messages=encoded)
            if messages is not None:
                if raw is None:
                    raw = json.dumps(obj, ensure_ascii=False, default=repr)[: EXCERPT_CHARS * 2]
                return self.reject(record, messages, raw)
        if not isinstance(obj, Mapping):
            reason = "not_an_object"
        else:
            text = next((obj[k] for k in TEXT_KEYS if obj.get(k) is not None), None)
            if text is None:
                reason = "missing_text"
            elif not isinstance(text, str):
                reason = "wrong_type"
        if reason is not None or not isinstance(text, str):
            if raw is None:
                raw = json.dumps(obj, ensure_ascii=False, default=repr)[: EXCERPT_CHARS * 2]
            return self.reject(record, reason or "wrong_type", raw)
        title = next((obj[k] for k in TITLE_KEYS if isinstance(obj.get(k), str)), None)
        return self.document(record, text, title, raw)

    # -- reading ----------------------------------------------------------

    def read(self) -> Iterator[Document | Reject]:
        if self.format is None:
            yield self.reject(None, "unsupported_format", self.rel)
            return
        record: int | None = None
        try:
            if self.format != "parquet":
                with self.open() as fh:
                    head = fh.read(SNIFF_BYTES)
                if looks_binary(head):
                    yield self.reject(None, "binary_content", head)
                    return
                if head[:2] in _UTF16_BOMS:
                    self.undecodable = "invalid_utf16"
            if self.format == "jsonl":
                for item in self.read_jsonl():
                    record = item.record
                    yield item
            elif self.format == "csv":
                for item in self.read_csv():
                    record = item.record
                    yield item
            elif self.format == "parquet":
                for item in self.read_parquet():
                    record = item.record
                    yield item
            else:
                yield from self.read_whole()
        except (OSError, EOFError, ValueError, zlib.error, csv.Error, pa.ArrowException) as exc:
            # Records already yielded stand; the rest of the file is one reject.
            after = None if record is None else record + 1
            yield self.reject(after, "unreadable_file", f"{type(exc).__name__}: {exc}")

    @contextmanager
    def open(self) -> Iterator[IO[bytes]]:
        if self.compression == "gzip":
            with gzip.open(self.file, "rb") as fh:
                yield fh
        elif self.compression == "zstd":
            # pyarrow's streaming zstd decoder (no extra dependency).
            with io.BufferedReader(pa.input_stream(str(self.file), compression="zstd")) as fh:
                yield fh
        else:
            with open(self.file, "rb") as fh:
                yield fh

    def read_jsonl(self) -> Iterator[Document | Reject]:
        count = 0
        for index, line in self.iter_lines():
            line = line.rstrip("\r\n")
            if not line.strip():
                continue
            count += 1
            if has_surrogates(line):
                yield self.reject_undecodable(index, line)
                continue
            try:
                obj = json.loads(line)
            except (ValueError, RecursionError):
                yield self.reject(index, "invalid_json", line)
                continue
            yield self.from_mapping(index, obj, line)
        if count == 0:
            yield self.reject(None, "empty_file", "")

    def iter_lines(self) -> Iterator[tuple[int, str]]:
        """Decoded lines of a text file, streamed; encoding decided per line.

        Deciding per line keeps one stray cp1252 byte from re-decoding (or
        rejecting) a whole UTF-8 file. UTF-16 files (BOM) decode as a stream.
        Undecodable bytes are marked (`decode_line`) for the caller to reject.
        """
        with self.open() as fh:
            head = fh.peek(2)[:2] if hasattr(fh, "peek") else b""
            if head in _UTF16_BOMS:
                text = io.TextIOWrapper(fh, encoding="utf-16", errors=_MARK, newline="")
                yield from enumerate(text)
                return
            for index, raw in enumerate(fh):
                if index == 0 and raw.startswith(_UTF8_BOM):
                    raw = raw[len(_UTF8_BOM) :]
                yield index, decode_line(raw)

    def read_csv(self) -> Iterator[Document | Reject]:
        # Documents can be long; the csv module's default field limit is 128 KiB.
        limit = min(sys.maxsize, MAX_DOCUMENT_CHARS * 4)
        if csv.field_size_limit() < limit:
            csv.field_size_limit(limit)
        rows = csv.reader(line for _, line in self.iter_lines())
        header = next(rows, None)
        if header is None:
            yield self.reject(None, "empty_file", "")
            return
        names = [h.strip().lower() for h in header]
        if not any(k in names for k in (*TEXT_KEYS, *MESSAGE_KEYS)):
            yield self.reject(None, "missing_text", ",".join(header))
            return
        count = 0
        for index, row in enumerate(rows):
            if not row:
                continue
            count += 1
            if any(has_surrogates(value) for value in row):
                yield self.reject_undecodable(index, ",".join(row))
                continue
            obj = dict(zip(names, row, strict=False))
            yield self.from_mapping(index, obj, ",".join(row))
        if count == 0:
            yield self.reject(None, "empty_file", ",".join(header))

    def read_parquet(self) -> Iterator[Document | Reject]:
        with self.parquet_path() as path:
            parquet = pq.ParquetFile(path)
            names = parquet.schema_arrow.names
            columns = [n for n in (*TEXT_KEYS, *TITLE_KEYS, *MESSAGE_KEYS) if n in names]
            if not any(k in names for k in (*TEXT_KEYS, *MESSAGE_KEYS)):
                yield self.reject(None, "missing_text", f"columns: {names}")
                return
            index = 0
            for chunk in parquet.iter_batches(batch_size=1024, columns=columns):
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
        """A seekable local path of the Parquet file (gzip spooled to a temp file)."""
        if not self.gzipped:
            yield self.file
            return
        with tempfile.TemporaryDirectory(prefix="llama-parquet-") as tmp:
            target = Path(tmp) / "data.parquet"
            with self.open() as src, open(target, "wb") as dst:
                shutil.copyfileobj(src, dst, length=1024 * 1024)
            yield target

    def read_whole(self) -> Iterator[Document | Reject]:
        """Formats where one file is one document, or one JSON value."""
        with self.open() as fh:
            data = fh.read(MAX_FILE_BYTES + 1)
        if len(data) > MAX_FILE_BYTES:
            yield self.reject(None, "too_large", data[:SNIFF_BYTES])
            return
        text = decode_bytes(data)
        if has_surrogates(text):
            yield self.reject_undecodable(None, text)
            return
        if self.format == "json":
            yield from self.read_json(text)
        elif self.format in ("html", "htm"):
            title, body = html_to_text(text)
            yield self.document(0, body, title)
        else:
            text = clean_text(text)
            yield self.document(0, text, plain_title(text, self.format or "txt"))

    def read_json(self, text: str) -> Iterable[Document | Reject]:
        try:
            value = json.loads(text)
        except (ValueError, RecursionError):
            return [self.reject(None, "invalid_json", text)]
        if isinstance(value, list):
            if not value:
                return [self.reject(None, "empty_file", text)]
            return (self.from_mapping(i, obj) for i, obj in enumerate(value))
        return [self.from_mapping(0, value, text)]


# -- titles of plain-text formats ------------------------------------------

_MD_ATX = re.compile(r"^ {0,3}#{1,6}[ \t]+(.+?)[ \t#]*$")
_MD_SETEXT = re.compile(r"^ {0,3}(=+|-+)[ \t]*$")
_RST_ADORNMENT = re.compile(r"^([!-/:-@\[-`{-~])\1{2,}[ \t]*$")


def plain_title(text: str, fmt: str) -> str | None:
    """Title of a text document: first Markdown heading, rst title, or first line."""
    lines = text.split("\n")
    if fmt == "md":
        for i, line in enumerate(lines):
            match = _MD_ATX.match(line)
            if match:
                return match.group(1).strip()
            if line.strip() and i + 1 < len(lines) and _MD_SETEXT.match(lines[i + 1]):
                return line.strip()
    elif fmt == "rst":
        for i, line in enumerate(lines[:-1]):
            stripped = line.strip()
            under = lines[i + 1].rstrip()
            if (
                stripped
                and not _RST_ADORNMENT.match(stripped)
                and _RST_ADORNMENT.match(under)
                and len(under) >= len(stripped)
            ):
                return stripped
    first = next((line.strip() for line in lines if line.strip()), None)
    return first


# -- HTML ------------------------------------------------------------------

_SKIP_TAGS = frozenset(
    {"script", "style", "nav", "header", "footer", "aside", "noscript", "template"}
)
_BLOCK_TAGS = frozenset(
    {
        "address", "article", "blockquote", "dd", "div", "dl", "dt", "fieldset",
        "figcaption", "figure", "form", "h1", "h2", "h3", "h4", "h5", "h6", "hr",
        "li", "main", "ol", "p", "pre", "section", "table", "tr", "ul", "caption",
    }
)  # fmt: skip
_WHITESPACE = re.compile(r"\s+")


class _TextExtractor(HTMLParser):
    """Collects visible text; block elements become paragraph breaks."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.skip_depth = 0
        self.pre_depth = 0
        self.in_title = False
        self.title_parts: list[str] = []
        self.h1_depth = 0
        self.h1_parts: list[str] = []
        self.h1_done = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _SKIP_TAGS:
            self.skip_depth += 1
        elif tag == "title":
            self.in_title = True
        elif tag == "br":
            self.parts.append("\n")
        elif tag in _BLOCK_TAGS:
            self.parts.append("\n\n")
            if tag == "pre":
                self.pre_depth += 1
            elif tag == "h1" and not self.h1_done:
                self.h1_depth += 1

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "br":
            self.parts.append("\n")
        elif tag in _BLOCK_TAGS:
            self.parts.append("\n\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in _SKIP_TAGS:
            self.skip_depth = max(0, self.skip_depth - 1)
        elif tag == "title":
            self.in_title = False
        elif tag in _BLOCK_TAGS:
            self.parts.append("\n\n")
            if tag == "pre":
                self.pre_depth = max(0, self.pre_depth - 1)
            elif tag == "h1" and self.h1_depth:
                self.h1_depth -= 1
                self.h1_done = self.h1_done or bool("".join(self.h1_parts).strip())

    def handle_data(self, data: str) -> None:
        if self.in_title:
            self.title_parts.append(data)
            return
        if self.skip_depth:
            return
        if self.h1_depth:
            self.h1_parts.append(data)
        if self.pre_depth:
            self.parts.append(data)
            return
        # Outside <pre>, runs of whitespace are one space, as a browser shows them.
        data = _WHITESPACE.sub(" ", data)
        if not self.parts or self.parts[-1].endswith("\n"):
            data = data.lstrip(" ")
        if data:
            self.parts.append(data)


def html_to_text(html: str) -> tuple[str | None, str]:
    """(title, visible text) of an HTML page.

    Scripts, styles and page furniture (nav, header, footer, aside) are dropped,
    since they are boilerplate rather than content; block elements become
    paragraph breaks. The title is <title>, else the first <h1>.
    """
    parser = _TextExtractor()
    parser.feed(html)
    parser.close()
    raw = "".join(parser.parts)
    lines = [line.rstrip() for line in raw.split("\n")]
    text = re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip("\n")
    title = " ".join("".join(parser.title_parts).split())
    if not title:
        title = " ".join("".join(parser.h1_parts).split())
    return (title or None), text
