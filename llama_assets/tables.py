"""Per-batch tables on disk: checksummed shard sets, and their metadata for the UI.

Every intermediate table is written with the same shard writer as the clean
shards, so each one has a manifest with row counts and sha256s and a reader
never consumes a torn or corrupted file silently.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import polars as pl

from llama_assets.curate.shards import iter_shards, scan_shards, write_shards


def write_table(df: pl.DataFrame, out_dir: Path) -> dict:
    return write_shards(df, out_dir)


def read_table(out_dir: Path, columns: list[str] | None = None) -> pl.DataFrame:
    if not (out_dir / "manifest.json").exists():
        raise dg.Failure(
            f"{out_dir} has no manifest.json: materialise the upstream partition first"
        )
    frame = scan_shards(out_dir, verify=True)
    return (frame.select(columns) if columns else frame).collect()


def iter_table(out_dir: Path, columns: list[str] | None = None) -> Iterator[pl.DataFrame]:
    """A table part by part (bounded memory), each part checksummed before it is read."""
    if not (out_dir / "manifest.json").exists():
        raise dg.Failure(
            f"{out_dir} has no manifest.json: materialise the upstream partition first"
        )
    yield from iter_shards(out_dir, columns)


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
