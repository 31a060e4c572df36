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
from pathlib import Path
from typing import Any

import polars as pl

from llama_assets.atomic import sha256_file, staged_dir

MANIFEST = "manifest.json"
PART_TEMPLATE = "part-{index:05d}.parquet"
DEFAULT_MAX_ROWS = 50_000
"""Rows per part: ~100-200 MB of text at typical document sizes, small enough
to stream part by part, large enough that per-file overhead is negligible."""

COMPRESSION = "zstd"


class CorruptShardError(RuntimeError):
    """A shard set does not match its manifest."""

    def __init__(self, out_dir: Path, problems: list[str]) -> None:
        self.problems = problems
        super().__init__(f"shards in {out_dir} failed verification: " + "; ".join(problems))


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
        name = shard["file"]
        listed.add(name)
        path = out_dir / name
        if not path.is_file():
            problems.append(f"{name}: missing")
            continue
        size = path.stat().st_size
        if size != shard["bytes"]:
            problems.append(f"{name}: size {size} != {shard['bytes']} in manifest")
            continue
        if sha256_file(path) != shard["sha256"]:
            problems.append(f"{name}: sha256 mismatch")
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
