"""Shard sets: exact manifest, byte-identical rewrites, corruption detected."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import polars as pl
import pytest

from llama_assets.base.shards import (
    CorruptShardError,
    read_manifest,
    scan_shards,
    verify_shards,
    write_shards,
)


def _frame(rows: int = 10) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "doc_id": [f"d{i:03d}" for i in range(rows)],
            "text": [f"text number {i} " * (i + 1) for i in range(rows)],
            "score": [i / 10 for i in range(rows)],
        }
    )


def _files(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


def test_write_manifest_and_read_back(tmp_path: Path) -> None:
    out = tmp_path / "shards" / "web" / "b1"
    df = _frame()
    manifest = write_shards(df, out, max_rows=4)
    files = _files(out)
    assert sorted(files) == [
        "manifest.json",
        "part-00000.parquet",
        "part-00001.parquet",
        "part-00002.parquet",
    ]
    assert manifest == read_manifest(out)
    assert manifest["rows"] == 10
    assert manifest["columns"] == ["doc_id", "text", "score"]
    assert [s["rows"] for s in manifest["shards"]] == [4, 4, 2]
    for shard in manifest["shards"]:
        data = files[shard["file"]]
        assert shard["bytes"] == len(data)
        assert shard["sha256"] == hashlib.sha256(data).hexdigest()
    assert manifest["bytes"] == sum(len(files[s["file"]]) for s in manifest["shards"])
    assert verify_shards(out) == []
    assert scan_shards(out).collect().equals(df)
    # Nothing left behind next to the shard set.
    assert [p.name for p in out.parent.iterdir()] == ["b1"]


def test_rewrite_is_byte_identical_and_replaces_old_set(tmp_path: Path) -> None:
    out = tmp_path / "b1"
    df = _frame()
    write_shards(df, out, max_rows=3)
    first = _files(out)
    write_shards(df, out, max_rows=3)
    assert _files(out) == first
    write_shards(df.head(2), out, max_rows=3)  # smaller set: stale parts must go
    assert sorted(_files(out)) == ["manifest.json", "part-00000.parquet"]
    assert scan_shards(out).collect().equals(df.head(2))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b1"]


def test_empty_frame_keeps_columns(tmp_path: Path) -> None:
    out = tmp_path / "empty"
    manifest = write_shards(_frame().clear(), out)
    assert manifest["rows"] == 0
    assert [s["rows"] for s in manifest["shards"]] == [0]
    scanned = scan_shards(out).collect()
    assert scanned.height == 0
    assert scanned.schema == _frame().schema


def test_corruption_is_detected(tmp_path: Path) -> None:
    out = tmp_path / "b1"
    write_shards(_frame(), out, max_rows=4)
    part = out / "part-00001.parquet"
    data = bytearray(part.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, different content
    part.write_bytes(bytes(data))
    assert verify_shards(out) == ["part-00001.parquet: sha256 mismatch"]
    with pytest.raises(CorruptShardError, match="part-00001.parquet: sha256 mismatch") as info:
        scan_shards(out)
    assert info.value.problems == ["part-00001.parquet: sha256 mismatch"]
    assert scan_shards(out, verify=False).select("doc_id").collect().height == 10


def test_missing_truncated_and_stray_files(tmp_path: Path) -> None:
    out = tmp_path / "b1"
    write_shards(_frame(), out, max_rows=4)
    (out / "part-00000.parquet").unlink()
    part2 = out / "part-00002.parquet"
    size = part2.stat().st_size
    part2.write_bytes(part2.read_bytes()[:-10])
    (out / "part-00009.parquet").write_bytes(b"stray")
    assert verify_shards(out) == [
        "part-00000.parquet: missing",
        f"part-00002.parquet: size {size - 10} != {size} in manifest",
        "part-00009.parquet: not in manifest",
    ]
    (out / "manifest.json").unlink()
    assert verify_shards(out) == ["manifest.json missing"]
    with pytest.raises(CorruptShardError):
        scan_shards(out)


def test_manifest_row_total_is_checked(tmp_path: Path) -> None:
    out = tmp_path / "b1"
    write_shards(_frame(), out, max_rows=4)
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["rows"] = 11
    (out / "manifest.json").write_text(json.dumps(manifest))
    assert verify_shards(out) == ["manifest rows do not add up"]


def test_failed_write_keeps_previous_set(tmp_path: Path) -> None:
    out = tmp_path / "b1"
    write_shards(_frame(), out, max_rows=4)
    before = _files(out)
    bad = pl.DataFrame({"obj": pl.Series([object()], dtype=pl.Object)})
    with pytest.raises(Exception):  # noqa: B017 - any writer error
        write_shards(bad, out)
    assert _files(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b1"]


def test_a_part_failing_on_the_writer_thread_keeps_previous_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from llama_assets.base import shards

    out = tmp_path / "b1"
    write_shards(_frame(), out, max_rows=4)
    before = _files(out)
    real = shards._write_part

    def fail_on_third(staging: Path, index: int, part: pl.DataFrame) -> dict:
        if index == 2:
            raise OSError("disk full")
        return real(staging, index, part)

    monkeypatch.setattr(shards, "_write_part", fail_on_third)
    with pytest.raises(OSError, match="disk full"), shards.ShardWriter(out, max_rows=2) as writer:
        for i in range(5):
            writer.write(_frame(10).slice(2 * i, 2))
    assert _files(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b1"]
