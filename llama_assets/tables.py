"""Per-batch tables on disk: checksummed shard sets, and their metadata for the UI.

Every intermediate table is written with the same shard writer as the clean
shards, so each one has a manifest with row counts and sha256s and a reader
never consumes a torn or corrupted file silently.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import dagster as dg
import polars as pl

from llama_assets.base.parallel import map_parts
from llama_assets.base.shards import (
    CorruptShardError,
    apply_to_shard,
    scan_shards,
    shard_list,
    write_shards,
)

R = TypeVar("R")

CORRUPT_TABLE = "corrupt_table"
"""Metadata key of the Failure raised on a corrupt table; the repair sensor reads it."""


def table_owner(out_dir: Path) -> tuple[str, str] | None:
    """(asset, partition key) that writes a per-batch table, from its path.

    ``<root>/staging/<stage>/<source>/<batch>`` belongs to the asset named
    ``<stage>``; ``<root>/shards/<source>/<batch>`` to ``clean_shards``.
    """
    parts = Path(out_dir).parts
    if len(parts) >= 4 and parts[-4] == "staging":
        return parts[-3], f"{parts[-2]}/{parts[-1]}"
    if len(parts) >= 3 and parts[-3] == "shards":
        return "clean_shards", f"{parts[-2]}/{parts[-1]}"
    return None


def corrupt_table_failure(error: CorruptShardError, out_dir: Path) -> dg.Failure:
    """A non-retryable Failure naming the table, its owning asset and partition.

    Retrying the reader cannot help; rebuilding the owner can, and
    sensors/shard_repair.py requests exactly that from this metadata.
    """
    owner = table_owner(out_dir)
    asset, key = owner if owner else ("", "")
    return dg.Failure(
        description=f"corrupt table {out_dir}: {'; '.join(error.problems)}. "
        + (
            f"It is rebuilt by re-materialising {asset} for partition {key} "
            "(corrupt_table_repair_sensor requests it)."
            if owner
            else "No asset owns it; restore it by hand."
        ),
        metadata={
            CORRUPT_TABLE: dg.MetadataValue.path(str(out_dir)),
            "owner_asset": asset,
            "partition": key,
            "problems": dg.MetadataValue.json(list(error.problems)),
        },
        allow_retries=False,
    )


def write_table(df: pl.DataFrame, out_dir: Path) -> dict:
    return write_shards(df, out_dir)


def read_table(out_dir: Path, columns: list[str] | None = None) -> pl.DataFrame:
    if not (out_dir / "manifest.json").exists():
        raise dg.Failure(
            f"{out_dir} has no manifest.json: materialise the upstream partition first"
        )
    try:
        frame = scan_shards(out_dir, verify=True)
    except CorruptShardError as error:
        raise corrupt_table_failure(error, out_dir) from error
    return (frame.select(columns) if columns else frame).collect()


def iter_table(out_dir: Path, columns: list[str] | None = None) -> Iterator[pl.DataFrame]:
    """A table part by part (bounded memory), each part checksummed before it is read."""
    return map_table(out_dir, _identity, columns=columns, workers=1)


def map_table(
    out_dir: Path,
    fn: Callable[..., R],
    *args: object,
    columns: list[str] | None = None,
    workers: int | None = None,
) -> Iterator[R]:
    """`fn(part, *args)` for each checksummed part of a table, in part order,
    computed in worker processes (see llama_assets/base/parallel.py; `fn` must be a
    module-level function). A missing or corrupt table raises the same Failure
    as `read_table`."""
    if not (out_dir / "manifest.json").exists():
        raise dg.Failure(
            f"{out_dir} has no manifest.json: materialise the upstream partition first"
        )
    try:
        shards = shard_list(out_dir)
        tasks = [(out_dir, shard, columns) for shard in shards]
        yield from map_parts(apply_to_shard, tasks, fn, args, workers=workers)
    except CorruptShardError as error:
        raise corrupt_table_failure(error, out_dir) from error


def _identity(frame: pl.DataFrame) -> pl.DataFrame:
    return frame


def manifest_digest(manifest: dict) -> str:
    """One checksum for a whole shard set (the sha256 of its shards' sha256s)."""
    joined = "".join(s["sha256"] for s in manifest["shards"])
    return hashlib.sha256(joined.encode()).hexdigest()


def table_metadata(manifest: dict, out_dir: Path) -> dict:
    return {
        "rows": dg.MetadataValue.int(manifest["rows"]),
        "bytes": dg.MetadataValue.int(manifest["bytes"]),
        "shards": dg.MetadataValue.int(len(manifest["shards"])),
        "sha256": dg.MetadataValue.text(manifest_digest(manifest)),
        "path": dg.MetadataValue.path(str(out_dir)),
    }
