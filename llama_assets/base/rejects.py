"""Rejected input records and how they are written to quarantine.

Bad input never crashes a run and is never silently dropped: every stage that
refuses a record turns it into a `Reject` that says where it came from, which
stage refused it and why. Rejects are written as JSON lines, atomically, so a
quarantine file is either the previous complete version or the new one.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

from llama_assets.base.atomic import atomic_open

EXCERPT_CHARS = 200
"""Longest excerpt of the offending raw input kept with a reject."""


@dataclass(frozen=True)
class Reject:
    """One refused record (or a whole file, when `record` is None)."""

    source: str
    batch: str
    path: str
    record: int | None
    stage: str
    reason: str
    excerpt: str


def make_excerpt(raw: str | bytes | None, limit: int = EXCERPT_CHARS) -> str:
    """A printable, at most `limit`-character excerpt of raw input.

    Bytes are decoded as UTF-8 with backslash escapes for invalid bytes, and
    non-printable characters are written as their Python escape, so the excerpt
    is safe to show in a log or the UI whatever the input held.
    """
    if raw is None:
        return ""
    if isinstance(raw, bytes):
        raw = raw[: limit * 4].decode("utf-8", errors="backslashreplace")
    out: list[str] = []
    size = 0
    for ch in raw:
        piece = ch if ch.isprintable() or ch == " " else repr(ch)[1:-1]
        if size + len(piece) > limit:
            break
        out.append(piece)
        size += len(piece)
    return "".join(out)


def write_rejects(rejects: Iterable[Reject], path: Path) -> int:
    """Write rejects as JSON lines to `path`, atomically; return how many.

    The file is written to a temporary file in the same directory, flushed to
    disk and then renamed over `path`, so readers never see a partial file.
    Zero rejects still write an (empty) file: "nothing was rejected" is then a
    fact on disk rather than a missing file.
    """
    count = 0
    # backslashreplace: a lone surrogate (from an undecodable file name) is
    # written escaped rather than failing the whole quarantine file.
    with atomic_open(path, "w", encoding="utf-8", errors="backslashreplace", newline="\n") as fh:
        for reject in rejects:
            fh.write(json.dumps(asdict(reject), ensure_ascii=False))
            fh.write("\n")
            count += 1
    return count
