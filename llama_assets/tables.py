"""Per-batch tables under the data root: checksummed shard sets, and their metadata for the UI.

Every intermediate table is written with the same shard writer as the clean
shards, so each one has a manifest with row counts and sha256s and a reader
never consumes a torn or corrupted file silently.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TypeVar

import dagster as dg
import polars as pl

from llama_assets.base.layout import DataLayout
from llama_assets.base.parallel import map_parts
from llama_assets.base.shards import (
    CorruptShardError,
    apply_to_shard,
    has_manifest,
    scan_shards,
    shard_list,
    write_shards,
)
from llama_assets.base.store import Location, as_location

R = TypeVar("R")

CORRUPT_TABLE = "corrupt_table"
"""Metadata key of the Failure raised on a corrupt table; the repair sensor reads it."""


@dataclass(frozen=True)
class Table:
    """A checksummed table and the asset partition that writes it.

    Readers name the owner through its definition (``staged(layout,
    chunks.key, key)``), so a corrupt table's failure says which asset to
    rebuild without any map from paths back to assets.
    """

    path: Location
    owner: dg.AssetKey | None = None
    partition: str | None = None


def staged(
    layout: DataLayout, owner: dg.AssetKey, partition: str, name: str | None = None
) -> Table:
    """The per-batch table `owner` writes: ``staging/<name>/<source>/<batch>/``; the
    name is the owner's unless it writes more than one table."""
    return Table(layout.staging(name or owner.to_user_string(), partition), owner, partition)


def _table(source: Table | Location | Path) -> Table:
    return source if isinstance(source, Table) else Table(as_location(source))


def corrupt_table_failure(error: CorruptShardError, table: Table) -> dg.Failure:
    """A non-retryable Failure naming the table, its owning asset and partition.

    Retrying the reader cannot help; rebuilding the owner can, and
    sensors/shard_repair.py requests exactly that from this metadata.
    """
    asset = table.owner.to_user_string() if table.owner else ""
    key = table.partition or ""
    return dg.Failure(
        description=f"corrupt table {table.path}: {'; '.join(error.problems)}. "
        + (
            f"It is rebuilt by re-materialising {asset}"
            + (f" for partition {key}" if key else "")
            + " (corrupt_table_repair_sensor requests it)."
            if table.owner
            else "No asset owns it; restore it by hand."
        ),
        metadata={
            CORRUPT_TABLE: dg.MetadataValue.path(str(table.path)),
            "owner_asset": asset,
            "partition": key,
            "problems": dg.MetadataValue.json(list(error.problems)),
        },
        allow_retries=False,
    )


def write_table(df: pl.DataFrame, out: Table | Location | Path) -> dict:
    return write_shards(df, _table(out).path)


def _check_present(table: Table) -> None:
    """A table never written is a missing upstream; a folder without its manifest
    is a damaged table (its owner rebuilds it), not one to retry reading."""
    if has_manifest(table.path):
        return
    if any(PurePosixPath(obj.key).name.startswith("part-") for obj in table.path.files()):
        raise corrupt_table_failure(CorruptShardError(table.path, ["manifest.json missing"]), table)
    raise dg.Failure(f"{table.path} has no manifest.json: materialise the upstream partition first")


def read_table(source: Table | Location | Path, columns: list[str] | None = None) -> pl.DataFrame:
    table = _table(source)
    _check_present(table)
    try:
        frame = scan_shards(table.path, verify=True)
    except CorruptShardError as error:
        raise corrupt_table_failure(error, table) from error
    return (frame.select(columns) if columns else frame).collect()


def iter_table(
    source: Table | Location | Path, columns: list[str] | None = None
) -> Iterator[pl.DataFrame]:
    """A table part by part (bounded memory), each part checksummed before it is read."""
    return map_table(source, _identity, columns=columns, workers=1)


def map_table(
    source: Table | Location | Path,
    fn: Callable[..., R],
    *args: object,
    columns: list[str] | None = None,
    workers: int | None = None,
) -> Iterator[R]:
    """`fn(part, *args)` for each checksummed part of a table, in part order,
    computed in worker processes (see llama_assets/base/parallel.py; `fn` must be a
    module-level function). A missing or corrupt table raises the same Failure
    as `read_table`."""
    table = _table(source)
    _check_present(table)
    try:
        shards = shard_list(table.path)
        tasks = [(table.path, shard, columns) for shard in shards]
        yield from map_parts(apply_to_shard, tasks, fn, args, workers=workers)
    except CorruptShardError as error:
        raise corrupt_table_failure(error, table) from error


def _identity(frame: pl.DataFrame) -> pl.DataFrame:
    return frame


def manifest_digest(manifest: dict) -> str:
    """One checksum for a whole shard set (the sha256 of its shards' sha256s)."""
    joined = "".join(s["sha256"] for s in manifest["shards"])
    return hashlib.sha256(joined.encode()).hexdigest()


def table_metadata(manifest: dict, out_dir: Location | Path) -> dict:
    return {
        "rows": dg.MetadataValue.int(manifest["rows"]),
        "bytes": dg.MetadataValue.int(manifest["bytes"]),
        "shards": dg.MetadataValue.int(len(manifest["shards"])),
        "sha256": dg.MetadataValue.text(manifest_digest(manifest)),
        "path": dg.MetadataValue.path(str(out_dir)),
    }
