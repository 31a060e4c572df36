"""Hostile source and batch names: nothing escapes the data root, nothing collides.

A name is one path segment of safe ASCII characters (``check_segment``); every
way into the platform (``ingest``, partition keys, ``remove-batch``) goes
through it, and every per-batch artifact path is distinct for distinct names.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from llama_assets.base.layout import DataLayout, batch_key, check_segment, split_batch_key
from llama_assets.batch_removal import batch_paths
from llama_assets.ingest.landing import add_to_landing

HOSTILE = [
    "..",
    ".",
    "../escape",
    "a/../../b",
    "/etc",
    "a/b",
    "a\\b",
    "x" * 129,
    "b1\n",
    "b1\r",
    "\nb1",
    "b\x00c",
    "b\x1b[31mred",
    "café",
    "b1\u2028",
    "ｂ1",  # fullwidth letter
    "-rf",
    ".hidden",
    "",
    " b1",
    "b1 ",
    "b1..x",
    "' OR 1=1 --",
]


@pytest.mark.parametrize("name", HOSTILE)
def test_a_hostile_name_is_refused_with_a_sentence(name):
    with pytest.raises(ValueError, match="invalid batch name"):
        check_segment(name, "batch")


def test_names_that_are_fine_pass():
    for name in ("b1", "2026-01-01T00.00", "web_crawl", "B.1-x_y", "x" * 128):
        assert check_segment(name, "batch") == name


@pytest.mark.parametrize("name", ["b1\n", "../b1", "/tmp/x", "b\x00"])
def test_ingest_refuses_a_hostile_name_and_writes_nothing(tmp_path, name):
    src = tmp_path / "in"
    src.mkdir()
    (src / "a.txt").write_text("hello")
    landing = tmp_path / "data" / "landing"
    before = set(tmp_path.rglob("*"))
    for source, batch in ((name, "b1"), ("web", name)):
        with pytest.raises(ValueError, match="invalid"):
            add_to_landing(src, landing, source, batch)
    assert set(tmp_path.rglob("*")) == before


@pytest.mark.parametrize("key", ["web/b1\n", "web\n/b1", "web/../b1", "../web/b1", "web/b/c"])
def test_a_hostile_partition_key_never_becomes_a_path(tmp_path, key):
    layout = DataLayout(tmp_path / "data")
    with pytest.raises(ValueError):
        split_batch_key(key)
    with pytest.raises(ValueError):
        layout.shards(key)


NEIGHBOURS = ["b1", "b1.embeddings", "b1.json", "b1.npz", "b1.embeddings.json", "b1.old", "b1.tmp"]


def test_artifacts_of_different_batches_never_collide(tmp_path):
    """No artifact of one batch is, or lies inside, an artifact of another (a batch
    named ``b1.embeddings`` once overwrote ``b1``'s embedding-drift file)."""
    layout = DataLayout(tmp_path / "data")
    paths = {
        name: [p.local for p in batch_paths(layout, batch_key("web", name))] for name in NEIGHBOURS
    }
    for a, b in itertools.permutations(NEIGHBOURS, 2):
        for mine, theirs in itertools.product(paths[a], paths[b]):
            assert mine != theirs and theirs not in mine.parents, (a, b, mine, theirs)
    for name in NEIGHBOURS:
        for path in paths[name]:
            assert Path(layout.root) in path.parents
