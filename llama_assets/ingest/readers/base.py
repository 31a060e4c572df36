"""What every reader shares: the Document, the record rules, and `FileReader`.

A format's reader subclasses `FileReader` and implements `read_records`, which
yields one `Document` or one `Reject` per record (datatrove's `read_file`
shape). The base class opens the file (gzip, zstd or plain), sniffs it for
binary content, turns an unexpected read error into one "unreadable_file"
reject after the records already yielded, and turns a record (a mapping, or a
whole file's text) into a `Document` or a `Reject` with its exact reason.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json
import re
import sys
import zlib
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, ClassVar

import pyarrow as pa

from llama_assets.base.rejects import EXCERPT_CHARS, Reject, make_excerpt
from llama_assets.ingest.encoding import (
    SNIFF_BYTES,
    UTF16_BOMS,
    OversizedLine,
    decode_bytes,
    decode_lines,
    has_surrogates,
    looks_binary,
    undecodable_excerpt,
)

JSON_MAX_DEPTH = 1000
"""Nesting levels a JSON record may have; deeper ones are rejected (invalid_json)."""


def json_headroom(depth: int = JSON_MAX_DEPTH) -> None:
    """Make room on the stack for JSON nested `depth` levels below the caller.

    CPython's JSON codec counts nesting against the interpreter's recursion limit,
    which the caller's own frames use up too: a record that `ingest` keeps could be
    rejected inside a deeper Dagster step. The limit is raised (never lowered) to
    the caller's depth plus `depth`, so what is kept does not depend on the caller.
    """
    frames, frame = 0, sys._getframe()
    while frame is not None:
        frames, frame = frames + 1, frame.f_back
    needed = frames + depth + 100  # the codec's own calls and from_mapping's walk
    if sys.getrecursionlimit() < needed:
        sys.setrecursionlimit(needed)


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
no such limit; their records have `MAX_RECORD_BYTES`.
"""

MAX_RECORD_BYTES = 16 * 1024 * 1024
"""Longest record of a line- or row-based format (a JSON line, a CSV record), in
bytes. A longer one is read past in 1 MiB pieces, never held whole, and rejected
as "too_large" (a JSON line of 1M characters escaped as \\uXXXX is 6 MB, so no
acceptable document is refused by this)."""

MAX_DECOMPRESSED_BYTES = 16 * 1024**3
"""Most bytes one compressed file may expand to; the rest of the file is
rejected as "decompression_bomb"."""

MAX_COMPRESSION_RATIO = 200
"""Decompressed : compressed bytes beyond which a file is a decompression bomb
(text compresses 3-10x with gzip, repetitive logs ~50x; a bomb 1000x and
more). Checked once `RATIO_CHECK_AFTER_BYTES` have come out, so a small file of
repeated lines is never refused."""

RATIO_CHECK_AFTER_BYTES = 64 * 1024 * 1024

TEXT_KEYS = ("text", "content", "body")
"""Field names that hold a record's text, first present (non-null) wins."""

TITLE_KEYS = ("title", "heading")
"""Field names that hold a record's title, first present string wins."""

MAX_TITLE_CHARS = 200

MESSAGE_ROLES = ("system", "user", "assistant")
"""Roles an instruction record's messages may have."""

MESSAGE_KEYS = ("messages", "prompt", "response", "instruction", "input", "output")
"""Fields that make a record an instruction (SFT) record."""

STAGE = "read"

# C0 controls except \t \n \r: removed from every text.
_CONTROL_CHARS = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f]")


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


READ_ERRORS = (OSError, EOFError, ValueError, zlib.error, csv.Error, pa.ArrowException)
"""Errors that make the rest of a file one "unreadable_file" reject."""


class DecompressionBomb(Exception):
    """A compressed file expanded past `MAX_DECOMPRESSED_BYTES` or `MAX_COMPRESSION_RATIO`."""


_PIECE = 8192


class _BoundedDecompression(io.RawIOBase):
    """A decompressing stream that counts what comes out, against the compressed
    bytes read so far, and stops a bomb (`DecompressionBomb`) before it fills
    memory or disk."""

    def __init__(self, decompressed: IO[bytes], compressed: IO[bytes], name: str) -> None:
        self._inner, self._compressed, self._name = decompressed, compressed, name
        self.total = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        # Small pieces: a decoder that hits a truncated stream raises and loses
        # the piece it was filling, so the records before it are still yielded.
        n = self._inner.readinto(memoryview(buffer)[:_PIECE])
        self.total += n
        if self.total > MAX_DECOMPRESSED_BYTES:
            raise DecompressionBomb(
                f"{self._name} expands past {MAX_DECOMPRESSED_BYTES:,} bytes "
                "(MAX_DECOMPRESSED_BYTES)"
            )
        if self.total > RATIO_CHECK_AFTER_BYTES:
            packed = max(1, self._compressed.tell())
            if self.total / packed > MAX_COMPRESSION_RATIO:
                raise DecompressionBomb(
                    f"{self._name}: {packed:,} compressed bytes expand to more than "
                    f"{self.total:,} (over {MAX_COMPRESSION_RATIO}:1, MAX_COMPRESSION_RATIO)"
                )
        return n


class FileReader:
    """Reads one file of a landing batch; holds the context every result needs.

    Subclasses set `formats` (the suffixes they read, without the dot) and
    implement `read_records`.
    """

    formats: ClassVar[tuple[str, ...]] = ()
    sniff: ClassVar[bool] = True
    """Whether the file's start is checked for binary content before reading."""

    def __init__(
        self,
        file: Path,
        source: str,
        batch: str,
        rel: str,
        fmt: str,
        compression: str | None,
        spool_dir: Path | None = None,
    ) -> None:
        self.file = file
        # Where a reader that needs a seekable copy of a compressed file writes
        # it: under the data root, never the system temp folder.
        self.spool_dir = spool_dir if spool_dir is not None else Path(file).parent
        self.source = source
        self.batch = batch
        self.rel = rel
        self.format = fmt
        self.compression = compression
        # Reason for bytes that are not text; `read` makes it invalid_utf16 after a BOM.
        self.undecodable = "invalid_utf8"

    # -- reading ----------------------------------------------------------

    def read(self) -> Iterator[Document | Reject]:
        """Every record of the file; a read error ends it with one reject."""
        record: int | None = None
        try:
            if self.sniff:
                with self.open() as fh:
                    head = fh.read(SNIFF_BYTES)
                if looks_binary(head):
                    yield self.reject(None, "binary_content", head)
                    return
                if head[:2] in UTF16_BOMS:
                    self.undecodable = "invalid_utf16"
            for item in self.read_records():
                record = item.record
                yield item
        except DecompressionBomb as exc:
            after = None if record is None else record + 1
            yield self.reject(after, "decompression_bomb", str(exc))
        except READ_ERRORS as exc:
            # Records already yielded stand; the rest of the file is one reject.
            after = None if record is None else record + 1
            yield self.reject(after, "unreadable_file", f"{type(exc).__name__}: {exc}")

    def read_records(self) -> Iterator[Document | Reject]:
        raise NotImplementedError

    @contextmanager
    def open(self) -> Iterator[IO[bytes]]:
        """The file's bytes, decompressed; a compressed file is bounded
        (`MAX_DECOMPRESSED_BYTES`, `MAX_COMPRESSION_RATIO`)."""
        if self.compression is None:
            with open(self.file, "rb") as fh:
                yield fh
            return
        with open(self.file, "rb") as raw:
            if self.compression == "gzip":
                inner: IO[bytes] = gzip.GzipFile(fileobj=raw, mode="rb")
            else:
                # pyarrow's streaming zstd decoder (no extra dependency).
                inner = pa.CompressedInputStream(pa.PythonFile(raw, mode="r"), "zstd")
            bounded = _BoundedDecompression(inner, raw, self.rel)
            with inner, io.BufferedReader(bounded, buffer_size=1 << 20) as fh:
                yield fh

    def iter_lines(self) -> Iterator[tuple[int, str | OversizedLine]]:
        """Decoded lines of the file, streamed; encoding decided per line
        (`encoding.decode_lines`). Undecodable bytes are marked, and lines over
        `MAX_RECORD_BYTES` come back as `OversizedLine`, for the caller to reject."""
        with self.open() as fh:
            yield from decode_lines(fh, MAX_RECORD_BYTES)

    def read_text(self) -> str | Reject:
        """The whole file decoded, or the reject of a file too large to read
        whole or holding undecodable bytes."""
        with self.open() as fh:
            data = fh.read(MAX_FILE_BYTES + 1)
        if len(data) > MAX_FILE_BYTES:
            return self.reject(None, "too_large", data[:SNIFF_BYTES])
        text = decode_bytes(data)
        if has_surrogates(text):
            return self.reject_undecodable(None, text)
        return text

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

    def reject_oversized(self, record: int | None, line: OversizedLine) -> Reject:
        """The reject of a record over `MAX_RECORD_BYTES` (its start is the excerpt)."""
        return self.reject(record, "too_large", line.head)

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
            format=self.format,
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
