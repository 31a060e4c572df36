"""remove-batch removes a batch everywhere, says what it cannot undo, and never
touches another batch (not even one whose name starts the same)."""

from __future__ import annotations

import hashlib
import json

import dagster as dg
import lancedb

from llama_assets.base.atomic import atomic_write_json
from llama_assets.batch_removal import apply_removal, batch_paths, plan_removal
from llama_assets.curate.dedup_index import DedupIndex
from llama_assets.deployment.registry import promote
from llama_assets.jobs import BATCH_ASSETS
from llama_assets.partitions import BATCHES
from llama_assets.tables import read_table
from llama_assets.training.assets import training_dataset
from tests.landing import jsonl, land, topic


def files_of(layout, key) -> dict[str, str]:
    """sha256 of every file of a batch (landing folder and derived files)."""
    found = {}
    for root in (p.local for p in batch_paths(layout, key)):
        for path in [root] if root.is_file() else sorted(root.rglob("*")):
            if path.is_file():
                found[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


def chunk_rows(db, batch: str) -> list[tuple]:
    table = db.open_table("chunks")
    rows = table.search().where(f"batch = '{batch}'").limit(10_000).to_arrow().to_pylist()
    return sorted((r["chunk_id"], r["text"]) for r in rows)


def test_remove_batch_everywhere_and_nothing_of_its_neighbour(layout, instance, resources):
    gone, stays = "web/b1", "web/b10"
    land(layout, gone, {"a.jsonl": jsonl(*({"text": topic(i)} for i in range(3)))})
    land(layout, stays, {"b.jsonl": jsonl({"text": topic(1)}, {"text": topic(3)})})
    instance.add_dynamic_partitions(BATCHES, [gone, stays])
    for key in (gone, stays):
        assert dg.materialize(
            BATCH_ASSETS, instance=instance, resources=resources, partition_key=key
        ).success
    assert dg.materialize([training_dataset], instance=instance, resources=resources).success
    dataset = json.loads((layout.training_dataset / "dataset.json").read_text())
    # A champion trained on this snapshot (its trainer state names the data version).
    atomic_write_json(
        layout.models("tiny", "v1") / "trainer_state.json",
        {"data_version": dataset["data_version"]},
    )
    promote(layout.aliases("tiny"), "v1", "gate passed")

    db = lancedb.connect(str(layout.lancedb))
    neighbour_files = files_of(layout, stays)
    neighbour_chunks = chunk_rows(db, "b10")
    assert neighbour_files and neighbour_chunks

    removal = plan_removal(instance, layout, db, gone)
    assert removal.registered and removal.index_rows > 0
    assert removal.dedup_entries == 3 and removal.in_snapshot
    assert removal.champions == ["tiny/v1"]
    assert removal.later_duplicates == {stays: 1}
    plan = "\n".join(removal.describe())
    assert "champion tiny/v1: trained on a snapshot holding the batch" in plan
    assert "llama-platform backfill --partitions web/b10" in plan
    assert "training snapshot: holds the batch; rebuilt now from the 1 other batch(es)" in plan

    apply_removal(instance, db, removal, layout, resources)
    assert list(instance.get_dynamic_partitions(BATCHES)) == [stays]
    assert chunk_rows(db, "b1") == []
    assert not any(p.exists() for p in batch_paths(layout, gone))
    assert DedupIndex(layout.dedup_index).batch_counts() == {stays: 1}
    dataset = json.loads((layout.training_dataset / "dataset.json").read_text())
    assert list(dataset["shard_sets"]) == [stays]
    train = read_table(layout.training_dataset / "train")
    validation = read_table(layout.training_dataset / "validation")
    assert set(train["batch"].to_list() + validation["batch"].to_list()) == {"b10"}
    # The neighbour, byte for byte.
    assert files_of(layout, stays) == neighbour_files
    assert chunk_rows(db, "b10") == neighbour_chunks

    # Removing it again, or a batch that never was, changes nothing at all.
    version = db.open_table("chunks").version
    for key in (gone, "web/never"):
        assert plan_removal(instance, layout, db, key).empty
    assert db.open_table("chunks").version == version
