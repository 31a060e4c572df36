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
    """The parts the manifest lists, by their name in the set (without the version prefix)."""
    manifest = read_manifest(directory)
    return {
        s["file"].split("/")[-1]: (directory / s["file"]).read_bytes() for s in manifest["shards"]
    }


def _all_files(directory: Path) -> list[str]:
    return sorted(p.relative_to(directory).as_posix() for p in directory.rglob("*") if p.is_file())


def test_write_manifest_and_read_back(tmp_path: Path) -> None:
    out = tmp_path / "shards" / "web" / "b1"
    df = _frame()
    manifest = write_shards(df, out, max_rows=4)
    files = _files(out)
    assert sorted(files) == ["part-00000.parquet", "part-00001.parquet", "part-00002.parquet"]
    # The parts of one write share a version prefix; the manifest sits beside it.
    version = manifest["shards"][0]["file"].split("/")[0]
    assert _all_files(out) == ["manifest.json", *(f"{version}/{name}" for name in sorted(files))]
    assert manifest == read_manifest(out)
    assert manifest["rows"] == 10
    assert manifest["columns"] == ["doc_id", "text", "score"]
    assert [s["rows"] for s in manifest["shards"]] == [4, 4, 2]
    for shard in manifest["shards"]:
        data = files[shard["file"].split("/")[-1]]
        assert shard["bytes"] == len(data)
        assert shard["sha256"] == hashlib.sha256(data).hexdigest()
    assert manifest["bytes"] == sum(len(data) for data in files.values())
    assert verify_shards(out) == []
    assert scan_shards(out).collect().equals(df)
    # Nothing left behind next to the shard set.
    assert [p.name for p in out.parent.iterdir()] == ["b1"]


def test_rewrite_is_byte_identical_and_replaces_old_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "b1"
    df = _frame()
    write_shards(df, out, max_rows=3)
    first = _files(out)
    write_shards(df, out, max_rows=3)
    assert _files(out) == first
    # Parts of the previous version stay for readers that read its manifest...
    assert len({f.split("/")[0] for f in _all_files(out)}) == 3
    monkeypatch.setenv("LLAMA_GC_GRACE_SECONDS", "0")
    write_shards(df.head(2), out, max_rows=3)  # ...until the grace period is over
    assert sorted(_files(out)) == ["part-00000.parquet"]
    assert len(_all_files(out)) == 2
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
    manifest = write_shards(_frame(), out, max_rows=4)
    name = manifest["shards"][1]["file"]
    part = out / name
    data = bytearray(part.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, different content
    part.write_bytes(bytes(data))
    assert verify_shards(out) == [f"{name}: sha256 mismatch"]
    with pytest.raises(CorruptShardError, match="part-00001.parquet: sha256 mismatch") as info:
        scan_shards(out)
    assert info.value.problems == [f"{name}: sha256 mismatch"]
    assert scan_shards(out, verify=False).select("doc_id").collect().height == 10


def test_missing_and_truncated_files(tmp_path: Path) -> None:
    out = tmp_path / "b1"
    names = [s["file"] for s in write_shards(_frame(), out, max_rows=4)["shards"]]
    (out / names[0]).unlink()
    part2 = out / names[2]
    size = part2.stat().st_size
    part2.write_bytes(part2.read_bytes()[:-10])
    # A file no manifest lists (an unfinished write's part) is no problem: readers
    # trust only the manifest.
    (out / "v0-stray" / "part-00009.parquet").parent.mkdir()
    (out / "v0-stray" / "part-00009.parquet").write_bytes(b"stray")
    assert verify_shards(out) == [
        f"{names[0]}: missing",
        f"{names[2]}: size {size - 10} != {size} in manifest",
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
    assert len(_all_files(out)) == 1 + len(before)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b1"]


def test_a_part_failing_on_the_writer_thread_keeps_previous_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from llama_assets.base import shards

    out = tmp_path / "b1"
    write_shards(_frame(), out, max_rows=4)
    before = _files(out)
    real = shards._write_part

    def fail_on_third(folder, index: int, part: pl.DataFrame) -> dict:
        if index == 2:
            raise OSError("disk full")
        return real(folder, index, part)

    monkeypatch.setattr(shards, "_write_part", fail_on_third)
    with pytest.raises(OSError, match="disk full"), shards.ShardWriter(out, max_rows=2) as writer:
        for i in range(5):
            writer.write(_frame(10).slice(2 * i, 2))
    assert _files(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b1"]
    assert len(_all_files(out)) == 1 + len(before)


def test_a_shard_set_on_s3_is_the_same_table(s3_uri, tmp_path: Path) -> None:
    from llama_assets.base.store import open_root

    root = open_root(s3_uri)
    df = _frame()
    local = write_shards(df, tmp_path / "b1", max_rows=4)
    remote = write_shards(df, root / "shards" / "b1", max_rows=4)
    assert [s["sha256"] for s in remote["shards"]] == [s["sha256"] for s in local["shards"]]
    assert scan_shards(root / "shards" / "b1").collect().equals(df)
    assert verify_shards(root / "shards" / "b1") == []
    # A damaged part is caught before it is read.
    name = remote["shards"][1]["file"]
    (root / "shards" / "b1" / name).write_bytes(b"garbage")
    with pytest.raises(CorruptShardError, match="part-00001.parquet: size"):
        scan_shards(root / "shards" / "b1")


def test_two_writers_of_one_table_cannot_both_win(tmp_path: Path) -> None:
    from llama_assets.base.shards import ConcurrentWriteError, ShardWriter

    out = tmp_path / "b1"
    write_shards(_frame(), out)
    slow = ShardWriter(out)
    with pytest.raises(ConcurrentWriteError, match="published by another writer"), slow:
        slow.write(_frame(3))
        write_shards(_frame(5), out)  # lands while the slow writer is still writing
    assert scan_shards(out).collect().height == 5
