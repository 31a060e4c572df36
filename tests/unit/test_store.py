"""The storage layer on both stores: a local directory and a real S3 server (SeaweedFS)."""

from __future__ import annotations

import json
import os
import time

import pytest

from llama_assets.base.store import (
    TREE_MANIFEST,
    CorruptTreeError,
    Location,
    PreconditionFailed,
    collect_garbage,
    fetch_tree,
    local_copy,
    open_root,
    publish_manifest,
    tree_writer,
)


@pytest.fixture(params=["local", "s3"])
def root(request, tmp_path) -> Location:
    if request.param == "local":
        return open_root(tmp_path / "root")
    return open_root(request.getfixturevalue("s3_uri"))


def test_objects_round_trip_and_list_like_folders(root):
    (root / "a" / "x.json").write_json({"n": 1})
    (root / "a" / "b" / "y.txt").write_text("hello")
    (root / "c.bin").write_bytes(b"\x00\x01")
    assert (root / "a" / "x.json").read_json() == {"n": 1}
    assert (root / "a" / "b" / "y.txt").read_text() == "hello"
    assert (root / "a").is_dir() and not (root / "a").is_file()
    assert (root / "c.bin").is_file() and (root / "c.bin").exists()
    assert not (root / "missing").exists()
    with pytest.raises(FileNotFoundError):
        (root / "missing.json").read_bytes()
    assert [loc.name for loc in root.iterdir()] == ["a", "c.bin"]
    assert [loc.name for loc in (root / "a").subdirs()] == ["b"]
    assert [o.key for o in (root / "a").files()] == ["b/y.txt", "x.json"]
    assert (root / "a" / "b" / "y.txt").stat().size == 5
    with (root / "a" / "x.json").open("r", encoding="utf-8") as fh:
        assert json.load(fh) == {"n": 1}
    (root / "a").rmtree()
    assert not (root / "a").exists() and (root / "c.bin").exists()
    (root / "c.bin").unlink()
    assert not (root / "c.bin").exists()


def test_a_write_that_fails_leaves_the_previous_object(root):
    target = root / "report.json"
    target.write_text("old")
    with pytest.raises(RuntimeError), target.open("w") as fh:
        fh.write("half of the new")
        raise RuntimeError("killed")
    assert target.read_text() == "old"
    with target.open("w") as fh:
        fh.write("new")
    assert target.read_text() == "new"


def test_conditional_puts_compare_and_swap(root):
    target = root / "aliases.json"
    first = target.store.put(target.key, b"1", if_none_match=True)
    with pytest.raises(PreconditionFailed):
        target.store.put(target.key, b"2", if_none_match=True)
    second = target.store.put(target.key, b"2", if_match=first)
    with pytest.raises(PreconditionFailed):
        target.store.put(target.key, b"3", if_match=first)
    assert target.read_bytes() == b"2"
    data, etag = target.store.get_with_etag(target.key)
    assert (data, etag) == (b"2", second)
    publish_manifest(target, {"v": 3})
    assert target.read_json() == {"v": 3}


def test_a_tree_is_published_whole_and_read_back_verified(root, tmp_path):
    dest = root / "models" / "tiny" / "abc"
    with tree_writer(dest) as tmp:
        (tmp / "adapter").mkdir()
        (tmp / "adapter" / "weights.bin").write_bytes(b"w" * 100)
        (tmp / "state.json").write_text("{}")
    local = fetch_tree(dest)
    assert (local / "adapter" / "weights.bin").read_bytes() == b"w" * 100
    # A second write that dies part way changes nothing.
    with pytest.raises(RuntimeError), tree_writer(dest) as tmp:
        (tmp / "state.json").write_text('{"new": 1}')
        raise RuntimeError("killed")
    assert (fetch_tree(dest) / "state.json").read_text() == "{}"
    with tree_writer(dest) as tmp:
        (tmp / "state.json").write_text('{"new": 2}')
    assert (fetch_tree(dest) / "state.json").read_text() == '{"new": 2}'
    assert not (fetch_tree(dest) / "adapter").exists()


def test_s3_trees_without_a_manifest_or_with_a_bad_file_are_refused(s3_uri):
    root = open_root(s3_uri)
    dest = root / "runs" / "step-000002"
    (dest / "v1" / "weights.bin").write_bytes(b"partial upload")
    with pytest.raises(CorruptTreeError, match="no tree.json"):
        fetch_tree(dest)
    (dest / TREE_MANIFEST).write_json(
        {"version": "v1", "files": {"weights.bin": {"size": 14, "sha256": "0" * 64}}}
    )
    with pytest.raises(CorruptTreeError, match="weights.bin does not match"):
        fetch_tree(dest)


def test_unreferenced_objects_are_collected_after_the_grace_period(root):
    folder = root / "shards" / "src" / "b1"
    for name in ("v1/part-00000.parquet", "v2/part-00000.parquet", "manifest.json"):
        (folder / name).write_bytes(b"x")
    referenced = {"v2/part-00000.parquet", "manifest.json"}
    assert collect_garbage(folder, referenced, grace_seconds=3600) == []
    time.sleep(1.1)  # S3 timestamps have one-second resolution
    assert collect_garbage(folder, referenced, grace_seconds=0) == ["v1/part-00000.parquet"]
    assert sorted(o.key for o in folder.files()) == sorted(referenced)


def test_local_copy_of_a_folder(root):
    (root / "landing" / "s" / "b" / "x" / "a.txt").write_text("a")
    (root / "landing" / "s" / "b" / "b.txt").write_text("b")
    with local_copy(root / "landing" / "s" / "b") as folder:
        assert sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()) == [
            "b.txt",
            "x/a.txt",
        ]


def test_local_locations_are_paths_and_s3_ones_refuse(tmp_path, s3_uri):
    local = open_root(tmp_path) / "a.txt"
    local.write_text("x")
    assert open(local).read() == "x"  # noqa: SIM115
    with pytest.raises(TypeError, match="not on the local disk"):
        os.fspath(open_root(s3_uri) / "a.txt")


def test_checksums_are_verified_by_the_server(s3_env, s3_uri):
    import base64
    import hashlib

    from botocore.exceptions import ClientError

    store = open_root(s3_uri).store
    wrong = base64.b64encode(hashlib.sha256(b"other").digest()).decode()
    with pytest.raises(ClientError):
        store.client.put_object(
            Bucket=store.bucket, Key=store._key("x"), Body=b"data", ChecksumSHA256=wrong
        )
    assert store.head("x") is None


def test_glob_matches_part_by_part_and_sorts(root):
    for key in ("reports/tiny/v2/report.json", "reports/tiny/v1/report.json",
                "reports/tiny/v1/history/t0/report.json", "reports/tiny/v1/report.md"):  # fmt: skip
        (root / key).write_text("{}")
    found = sorted((root / "reports").glob("*/*/report.json"))
    assert [f.key.removeprefix(root.key).lstrip("/") for f in found] == [
        "reports/tiny/v1/report.json",
        "reports/tiny/v2/report.json",
    ]
