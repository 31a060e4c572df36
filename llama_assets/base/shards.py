"""Checksummed Parquet shard sets, written atomically.

Clean shards are the hand-off from curation to everything downstream
(embedding, training), so a reader must never see a half-written set and must
be able to tell a damaged file from a good one. `write_shards` writes every
part plus a `manifest.json` (rows, bytes and sha256 of each part) into a
sibling temporary directory and swaps it into place with renames; readers go
through `scan_shards`, which checks the manifest first. Writing the same frame
twice yields byte-identical files, so a re-materialisation is a no-op to
anything that compares checksums.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import polars as pl

from llama_assets.base.atomic import sha256_file, staged_dir

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

    def __init__(self, out_dir: Path, problems: list[str]) -> None:
        self.out_dir, self.problems = out_dir, problems
        super().__init__(f"shards in {out_dir} failed verification: " + "; ".join(problems))

    def __reduce__(self):
        # Raised in worker processes too: pickle the constructor's arguments.
        return (type(self), (self.out_dir, self.problems))


def write_shards(
    df: pl.DataFrame, out_dir: Path, max_rows: int = DEFAULT_MAX_ROWS
) -> dict[str, Any]:
    """Write `df` as zstd Parquet parts of at most `max_rows` rows plus a manifest.

    The manifest is {"rows", "bytes", "shards": [{"file", "rows", "bytes",
    "sha256"}], "columns", "schema"} where bytes are those of the parts. An empty
    frame writes one empty part, so the column schema survives for readers.
    The previous contents of `out_dir` are replaced as a whole; returns the
    manifest.
    """
    if max_rows < 1:
        raise ValueError("max_rows must be at least 1")
    with staged_dir(Path(out_dir)) as staging:
        shards = []
        offsets = range(0, df.height, max_rows) if df.height else [0]
        for index, offset in enumerate(offsets):
            name = PART_TEMPLATE.format(index=index)
            path = staging / name
            part = df.slice(offset, max_rows)
            part.write_parquet(path, compression=COMPRESSION, statistics=True)
            shards.append(
                {
                    "file": name,
                    "rows": part.height,
                    "bytes": path.stat().st_size,
                    "sha256": sha256_file(path),
                }
            )
        manifest = {
            "rows": df.height,
            "bytes": sum(s["bytes"] for s in shards),
            "shards": shards,
            "columns": df.columns,
            "schema": {name: str(dtype) for name, dtype in df.schema.items()},
        }
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return manifest


class ShardWriter:
    """Writes a shard set part by part, for stages that stream (bounded memory).

    Use as a context manager: `write(frame)` appends rows, a part is flushed
    every `max_rows` rows, and on a clean exit the manifest is written and the
    whole set replaces `out_dir` atomically (on an exception nothing changes).
    Every part has the schema of `schema` (or of the first frame written), so
    readers can scan the parts as one table. The result is byte-identical to
    `write_shards` of the concatenated frames.

    Parts are encoded and compressed on one background thread (polars releases
    the GIL while it writes), so the caller prepares the next part meanwhile;
    at most `PENDING_PARTS` wait, to keep memory bounded.
    """

    def __init__(
        self, out_dir: Path, max_rows: int = DEFAULT_MAX_ROWS, schema: pl.Schema | None = None
    ) -> None:
        if max_rows < 1:
            raise ValueError("max_rows must be at least 1")
        self.out_dir = Path(out_dir)
        self.max_rows = max_rows
        self.schema = schema
        self.shards: list[dict[str, Any]] = []
        self.manifest: dict[str, Any] | None = None
        self._pending: list[pl.DataFrame] = []
        self._pending_rows = 0

    def __enter__(self) -> ShardWriter:
        self._stage = staged_dir(self.out_dir)
        self._staging = self._stage.__enter__()
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
        self._writes.append(self._writer.submit(_write_part, self._staging, index, part))
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
                self._write_manifest()
        except BaseException as error:
            # A failed write: nothing replaces out_dir, the staging copy goes.
            self._writer.shutdown(wait=True, cancel_futures=True)
            self._stage.__exit__(type(error), error, error.__traceback__)
            raise
        self._writer.shutdown(wait=True, cancel_futures=True)
        return self._stage.__exit__(exc_type, exc, tb)

    def _write_manifest(self) -> None:
        schema = self.schema if self.schema is not None else pl.Schema()
        if not self.shards:
            self.shards.append(_write_part(self._staging, 0, pl.DataFrame(schema=schema)))
        self.manifest = {
            "rows": sum(s["rows"] for s in self.shards),
            "bytes": sum(s["bytes"] for s in self.shards),
            "shards": self.shards,
            "columns": list(schema),
            "schema": {name: str(dtype) for name, dtype in schema.items()},
        }
        (self._staging / MANIFEST).write_text(
            json.dumps(self.manifest, indent=2) + "\n", encoding="utf-8"
        )


def _write_part(staging: Path, index: int, part: pl.DataFrame) -> dict[str, Any]:
    name = PART_TEMPLATE.format(index=index)
    path = staging / name
    part.write_parquet(path, compression=COMPRESSION, statistics=True)
    return {
        "file": name,
        "rows": part.height,
        "bytes": path.stat().st_size,
        "sha256": sha256_file(path),
    }


def iter_shards(
    out_dir: Path, columns: list[str] | None = None, verify: bool = True
) -> Iterator[pl.DataFrame]:
    """Each part of a shard set in order, one in memory at a time.

    With `verify` each part's size and sha256 are checked against the manifest
    just before it is read (CorruptShardError on a mismatch), so memory stays
    bounded by one part while nothing damaged is read silently.
    """
    for shard in shard_list(out_dir):
        yield read_shard(out_dir, shard, columns, verify)


def shard_list(out_dir: Path) -> list[dict[str, Any]]:
    """The manifest's entries of a shard set's parts (CorruptShardError if it is unreadable)."""
    try:
        return read_manifest(out_dir)["shards"]
    except (OSError, ValueError, KeyError) as exc:
        raise CorruptShardError(Path(out_dir), [f"{MANIFEST} unreadable: {exc}"]) from exc


def read_shard(
    out_dir: Path, shard: dict[str, Any], columns: list[str] | None = None, verify: bool = True
) -> pl.DataFrame:
    """One part of a shard set (an entry of `shard_list`), checked against the manifest."""
    path = Path(out_dir) / shard["file"]
    problem = _shard_problem(path, shard) if verify else None
    if problem:
        raise CorruptShardError(Path(out_dir), [problem])
    frame = pl.read_parquet(path)
    return frame.select(columns) if columns else frame


def _shard_problem(path: Path, shard: dict[str, Any]) -> str | None:
    """What is wrong with one part against its manifest entry, or None."""
    name = shard["file"]
    if not path.is_file():
        return f"{name}: missing"
    size = path.stat().st_size
    if size != shard["bytes"]:
        return f"{name}: size {size} != {shard['bytes']} in manifest"
    if sha256_file(path) != shard["sha256"]:
        return f"{name}: sha256 mismatch"
    return None


def apply_to_shard(task: tuple, fn: Callable[..., R], args: tuple) -> R:
    """`fn(part, *args)` of the part `task` = (out_dir, shard, columns) names; runs
    in worker processes, so this module must stay light (no Dagster import)."""
    out_dir, shard, columns = task
    return fn(read_shard(out_dir, shard, columns), *args)


def read_manifest(out_dir: Path) -> dict[str, Any]:
    """The manifest of a shard set (FileNotFoundError when there is none)."""
    with open(Path(out_dir) / MANIFEST, encoding="utf-8") as fh:
        return json.load(fh)


def verify_shards(out_dir: Path) -> list[str]:
    """Problems of a shard set against its manifest; empty when it is intact.

    Reports a missing or unreadable manifest, missing parts, size and sha256
    mismatches, and part files that the manifest does not list.
    """
    out_dir = Path(out_dir)
    try:
        manifest = read_manifest(out_dir)
    except FileNotFoundError:
        return [f"{MANIFEST} missing"]
    except (OSError, ValueError) as exc:
        return [f"{MANIFEST} unreadable: {exc}"]
    problems: list[str] = []
    listed = set()
    for shard in manifest.get("shards", []):
        listed.add(shard["file"])
        problem = _shard_problem(out_dir / shard["file"], shard)
        if problem:
            problems.append(problem)
    for path in sorted(out_dir.glob("part-*.parquet")):
        if path.name not in listed:
            problems.append(f"{path.name}: not in manifest")
    if sum(s["rows"] for s in manifest.get("shards", [])) != manifest.get("rows"):
        problems.append("manifest rows do not add up")
    return problems


def scan_shards(out_dir: Path, verify: bool = True) -> pl.LazyFrame:
    """A lazy frame over every part of a shard set, in part order.

    With `verify` (the default) every part is checksummed first and
    CorruptShardError is raised on any problem, so corrupt data never flows
    downstream silently.
    """
    out_dir = Path(out_dir)
    if verify:
        problems = verify_shards(out_dir)
        if problems:
            raise CorruptShardError(out_dir, problems)
    manifest = read_manifest(out_dir)
    files = [str(out_dir / shard["file"]) for shard in manifest["shards"]]
    return pl.scan_parquet(files)
