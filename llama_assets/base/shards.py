"""Checksummed Parquet shard sets, published like a table format.

Clean shards are the hand-off from curation to everything downstream
(embedding, training), so a reader must never see a half-written set and must
be able to tell a damaged file from a good one. A shard set is a folder (a
Location: local or S3) holding ``manifest.json`` and the parts it lists:

    manifest.json                       rows, bytes; per part: file, rows, bytes, sha256
    v<time>-<id>/part-00000.parquet     the parts of one write, under a unique prefix

Writers put every part under a fresh version prefix (on S3 each PUT carries its
SHA-256, which the server verifies), then the manifest last, with a conditional
write: ``If-None-Match: *`` for the first version, ``If-Match`` on the etag read
when the write began for a replacement, so two writers of one table cannot both
win silently (`ConcurrentWriteError`). Readers trust only the manifest and
check each part's size and sha256 before using it. A crash at any moment leaves
the previous version readable; parts no manifest references are collected
after the grace period (base/store.py `collect_garbage`). Writing the same
frame twice yields byte-identical parts, so a re-materialisation is a no-op to
anything that compares checksums.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import tempfile
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import polars as pl

from llama_assets.base.atomic import sha256_file, temp_prefix
from llama_assets.base.store import (
    Location,
    PreconditionFailed,
    as_location,
    collect_garbage,
    new_version_id,
    publish_manifest,
)

MANIFEST = "manifest.json"
PART_TEMPLATE = "part-{index:05d}.parquet"
DEFAULT_MAX_ROWS = 10_000
"""Rows per part: ~10-50 MB of text at typical document sizes. Stages stream
a table part by part (and spread parts over processes), so this bounds their
memory whatever the batch size; per-file overhead is still negligible."""

COMPRESSION = "zstd"

PENDING_PARTS = 2
"""Parts a ShardWriter may hold while its background thread writes them."""

R = TypeVar("R")


class CorruptShardError(RuntimeError):
    """A shard set does not match its manifest."""

    def __init__(self, out_dir: Location | Path | str, problems: list[str]) -> None:
        self.out_dir, self.problems = str(out_dir), problems
        super().__init__(f"shards in {out_dir} failed verification: " + "; ".join(problems))

    def __reduce__(self):
        # Raised in worker processes too: pickle the constructor's arguments.
        return (type(self), (self.out_dir, self.problems))


class ConcurrentWriteError(RuntimeError):
    """Another writer published the table while this one was writing it."""


def write_shards(
    df: pl.DataFrame, out_dir: Location | Path, max_rows: int = DEFAULT_MAX_ROWS
) -> dict[str, Any]:
    """Write `df` as zstd Parquet parts of at most `max_rows` rows plus a manifest.

    The manifest is {"rows", "bytes", "shards": [{"file", "rows", "bytes",
    "sha256"}], "columns", "schema"} where bytes are those of the parts. An empty
    frame writes one empty part, so the column schema survives for readers.
    The previous version of `out_dir` is replaced as a whole; returns the
    manifest.
    """
    with ShardWriter(out_dir, max_rows, schema=df.schema) as writer:
        for offset in range(0, df.height, max_rows):
            writer.write(df.slice(offset, max_rows))
    return writer.manifest


class ShardWriter:
    """Writes a shard set part by part, for stages that stream (bounded memory).

    Use as a context manager: `write(frame)` appends rows, a part is flushed
    every `max_rows` rows, and on a clean exit the manifest is published and
    the new version replaces the old one whole (on an exception nothing
    changes). Every part has the schema of `schema` (or of the first frame
    written), so readers can scan the parts as one table.

    Parts are encoded, compressed and stored on one background thread (polars
    releases the GIL while it writes), so the caller prepares the next part
    meanwhile; at most `PENDING_PARTS` wait, to keep memory bounded.
    """

    def __init__(
        self,
        out_dir: Location | Path,
        max_rows: int = DEFAULT_MAX_ROWS,
        schema: pl.Schema | None = None,
    ) -> None:
        if max_rows < 1:
            raise ValueError("max_rows must be at least 1")
        self.out_dir = as_location(out_dir)
        self.max_rows = max_rows
        self.schema = schema
        self.shards: list[dict[str, Any]] = []
        self.manifest: dict[str, Any] | None = None
        self._pending: list[pl.DataFrame] = []
        self._pending_rows = 0

    def __enter__(self) -> ShardWriter:
        # The version this write replaces: publishing checks it is still current.
        current = (self.out_dir / MANIFEST).stat()
        self._expected = current.etag if current else None
        self._version = new_version_id()
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="shard-writer")
        self._writes: deque[Future] = deque()
        return self

    def write(self, df: pl.DataFrame) -> None:
        if self.schema is None:
            self.schema = df.schema
        if df.height == 0:
            return
        self._pending.append(df.select(list(self.schema)).cast(dict(self.schema)))
        self._pending_rows += df.height
        while self._pending_rows >= self.max_rows:
            self._flush(self.max_rows)

    def _flush(self, rows: int) -> None:
        frame = pl.concat(self._pending) if len(self._pending) > 1 else self._pending[0]
        part, rest = frame.slice(0, rows), frame.slice(rows)
        self._pending = [rest] if rest.height else []
        self._pending_rows = rest.height
        self._write_part(part)

    def _write_part(self, part: pl.DataFrame) -> None:
        index = len(self.shards) + len(self._writes)
        folder = self.out_dir / self._version
        self._writes.append(self._writer.submit(_write_part, folder, index, part))
        while len(self._writes) > PENDING_PARTS:
            self.shards.append(self._writes.popleft().result())

    def _drain(self) -> None:
        while self._writes:
            self.shards.append(self._writes.popleft().result())

    def __exit__(self, exc_type, exc, tb) -> bool | None:
        try:
            if exc_type is None:
                if self._pending_rows:
                    self._flush(self._pending_rows)
                self._drain()
                self._publish()
        except BaseException:
            self._abandon()
            raise
        finally:
            self._writer.shutdown(wait=True, cancel_futures=True)
        if exc_type is not None:
            self._abandon()
        return None

    def _abandon(self) -> None:
        """A failed write: nothing was published; its own parts go now (what a
        killed process leaves is collected after the grace period)."""
        self._writer.shutdown(wait=True, cancel_futures=True)
        # Best effort: garbage collection catches whatever is left.
        with contextlib.suppress(Exception):
            (self.out_dir / self._version).rmtree()

    def _publish(self) -> None:
        schema = self.schema if self.schema is not None else pl.Schema()
        if not self.shards:
            folder = self.out_dir / self._version
            self.shards.append(_write_part(folder, 0, pl.DataFrame(schema=schema)))
        self.manifest = {
            "rows": sum(s["rows"] for s in self.shards),
            "bytes": sum(s["bytes"] for s in self.shards),
            "shards": self.shards,
            "columns": list(schema),
            "schema": {name: str(dtype) for name, dtype in schema.items()},
        }
        try:
            publish_manifest(self.out_dir / MANIFEST, self.manifest, self._expected)
        except PreconditionFailed as exc:
            raise ConcurrentWriteError(
                f"{self.out_dir} was published by another writer while this one was "
                "writing it; this write is discarded (its parts are collected later). "
                "Re-materialise the partition to write it again."
            ) from exc
        collect_garbage(self.out_dir, {MANIFEST, *(s["file"] for s in self.shards)})


def _write_part(folder: Location, index: int, part: pl.DataFrame) -> dict[str, Any]:
    name = PART_TEMPLATE.format(index=index)
    target = folder / name
    scratch = folder.store.scratch_dir(target.key)
    fd, tmp = tempfile.mkstemp(dir=scratch, prefix=temp_prefix(name), suffix=".tmp")
    os.close(fd)
    try:
        part.write_parquet(tmp, compression=COMPRESSION, statistics=True)
        size, digest = os.path.getsize(tmp), sha256_file(Path(tmp))
        folder.store.upload(target.key, Path(tmp), digest)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return {
        "file": f"{folder.name}/{name}",
        "rows": part.height,
        "bytes": size,
        "sha256": digest,
    }


def iter_shards(
    out_dir: Location | Path, columns: list[str] | None = None, verify: bool = True
) -> Iterator[pl.DataFrame]:
    """Each part of a shard set in order, one in memory at a time.

    With `verify` each part's size and sha256 are checked against the manifest
    just before it is read (CorruptShardError on a mismatch), so memory stays
    bounded by one part while nothing damaged is read silently.
    """
    for shard in shard_list(out_dir):
        yield read_shard(out_dir, shard, columns, verify)


def shard_list(out_dir: Location | Path) -> list[dict[str, Any]]:
    """The manifest's entries of a shard set's parts (CorruptShardError if it is unreadable)."""
    try:
        return read_manifest(out_dir)["shards"]
    except (OSError, ValueError, KeyError) as exc:
        raise CorruptShardError(out_dir, [f"{MANIFEST} unreadable: {exc}"]) from exc


def read_shard(
    out_dir: Location | Path,
    shard: dict[str, Any],
    columns: list[str] | None = None,
    verify: bool = True,
) -> pl.DataFrame:
    """One part of a shard set (an entry of `shard_list`), checked against the manifest."""
    part = as_location(out_dir) / shard["file"]
    local = part.local
    if local is not None:
        problem = _local_problem(local, shard) if verify else None
        if problem:
            raise CorruptShardError(out_dir, [problem])
        frame = pl.read_parquet(local)
    else:
        try:
            data = part.read_bytes()
        except FileNotFoundError:
            raise CorruptShardError(out_dir, [f"{shard['file']}: missing"]) from None
        problem = _bytes_problem(data, shard) if verify else None
        if problem:
            raise CorruptShardError(out_dir, [problem])
        frame = pl.read_parquet(io.BytesIO(data))
    return frame.select(columns) if columns else frame


def _local_problem(path: Path, shard: dict[str, Any]) -> str | None:
    name = shard["file"]
    if not path.is_file():
        return f"{name}: missing"
    size = path.stat().st_size
    if size != shard["bytes"]:
        return f"{name}: size {size} != {shard['bytes']} in manifest"
    if sha256_file(path) != shard["sha256"]:
        return f"{name}: sha256 mismatch"
    return None


def _bytes_problem(data: bytes, shard: dict[str, Any]) -> str | None:
    name = shard["file"]
    if len(data) != shard["bytes"]:
        return f"{name}: size {len(data)} != {shard['bytes']} in manifest"
    if hashlib.sha256(data).hexdigest() != shard["sha256"]:
        return f"{name}: sha256 mismatch"
    return None


def _part_problem(out_dir: Location, shard: dict[str, Any]) -> str | None:
    part = out_dir / shard["file"]
    if part.local is not None:
        return _local_problem(part.local, shard)
    try:
        return _bytes_problem(part.read_bytes(), shard)
    except FileNotFoundError:
        return f"{shard['file']}: missing"


def apply_to_shard(task: tuple, fn: Callable[..., R], args: tuple) -> R:
    """`fn(part, *args)` of the part `task` = (out_dir, shard, columns) names; runs
    in worker processes, so this module must stay light (no Dagster import)."""
    out_dir, shard, columns = task
    return fn(read_shard(out_dir, shard, columns), *args)


def read_manifest(out_dir: Location | Path) -> dict[str, Any]:
    """The manifest of a shard set (FileNotFoundError when there is none)."""
    return json.loads((as_location(out_dir) / MANIFEST).read_bytes())


def has_manifest(out_dir: Location | Path) -> bool:
    return (as_location(out_dir) / MANIFEST).is_file()


def verify_shards(out_dir: Location | Path) -> list[str]:
    """Problems of a shard set against its manifest; empty when it is intact.

    Reports a missing or unreadable manifest, missing parts, size and sha256
    mismatches. Files the manifest does not list are not problems: they are
    parts of an older or an unfinished write, collected after the grace period.
    """
    out_dir = as_location(out_dir)
    try:
        manifest = read_manifest(out_dir)
    except FileNotFoundError:
        return [f"{MANIFEST} missing"]
    except (OSError, ValueError) as exc:
        return [f"{MANIFEST} unreadable: {exc}"]
    problems = [
        problem
        for shard in manifest.get("shards", [])
        if (problem := _part_problem(out_dir, shard))
    ]
    if sum(s["rows"] for s in manifest.get("shards", [])) != manifest.get("rows"):
        problems.append("manifest rows do not add up")
    return problems


def scan_shards(out_dir: Location | Path, verify: bool = True) -> pl.LazyFrame:
    """A lazy frame over every part of a shard set, in part order.

    With `verify` (the default) every part is checksummed first and
    CorruptShardError is raised on any problem, so corrupt data never flows
    downstream silently. On S3 each part is fetched once, verified and read
    from memory.
    """
    out_dir = as_location(out_dir)
    if out_dir.local is None:
        frames = [read_shard(out_dir, shard, verify=verify) for shard in shard_list(out_dir)]
        return pl.concat(frames, how="vertical").lazy()
    if verify:
        problems = verify_shards(out_dir)
        if problems:
            raise CorruptShardError(out_dir, problems)
    manifest = read_manifest(out_dir)
    files = [str(out_dir.local / shard["file"]) for shard in manifest["shards"]]
    return pl.scan_parquet(files)
