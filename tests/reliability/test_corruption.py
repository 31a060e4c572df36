"""Corruption: each damaged artifact is detected, named with the asset that owns
it, and rebuilt from upstream or failed without retries, with a sentence that
says what to do.

A flipped byte in a clean shard, with the repair sensor's run, is
tests/sensors/test_shard_repair.py; a corrupt dedup index is
tests/reliability/test_dedup_index.py; corrupt training checkpoints are skipped
for the previous valid one (tests/unit/test_training_resume.py).
"""

from __future__ import annotations

import json

import dagster as dg
import polars as pl
import pytest

from llama_assets import cli
from llama_assets.base.shards import read_manifest
from llama_assets.curate.assets import clean_shards_table, validated_documents
from llama_assets.deployment.assets import eval_report
from llama_assets.partitions import BATCHES
from llama_assets.retrieval import index
from llama_assets.retrieval.assets import chunks, embeddings, rag_index
from llama_assets.retrieval.index_files import verify_checksums
from llama_assets.tables import CORRUPT_TABLE, map_table, read_table, staged, write_table
from tests.landing import topic
from tests.unit.test_index import rows


def damage(kind: str, table_dir) -> None:
    # The first part the manifest lists (parts sit under a version prefix).
    part = table_dir.local / read_manifest(table_dir)["shards"][0]["file"]
    manifest = table_dir.local / "manifest.json"
    if kind == "truncated manifest":
        manifest.write_bytes(manifest.read_bytes()[:40])
    elif kind == "deleted manifest":
        manifest.unlink()
    elif kind == "deleted shard":
        part.unlink()
    elif kind == "truncated shard":
        part.write_bytes(part.read_bytes()[:100])


@pytest.mark.parametrize(
    "kind", ["truncated manifest", "deleted manifest", "deleted shard", "truncated shard"]
)
def test_a_damaged_table_names_its_owner_and_is_not_retried(layout, kind):
    key = "web/b1"
    table = staged(layout, validated_documents.key, key)
    frame = pl.DataFrame({"doc_id": [f"d{i}" for i in range(30)], "text": ["x"] * 30})
    write_table(frame, table)
    damage(kind, table.path)
    for read in (lambda: read_table(table), lambda: list(map_table(table, len, workers=1))):
        with pytest.raises(dg.Failure) as info:
            read()
        failure = info.value
        assert failure.metadata["owner_asset"].value == "validated_documents", kind
        assert failure.metadata["partition"].value == key
        assert CORRUPT_TABLE in failure.metadata
        assert not failure.allow_retries
        assert f"re-materialising validated_documents for partition {key}" in failure.description


def clean_batch(layout, key: str, first: int) -> None:
    source, batch = key.split("/")
    write_table(
        pl.DataFrame(
            {
                "doc_id": [f"{batch}-{i}" for i in range(2)],
                "source": source,
                "batch": batch,
                "path": "a.txt",
                "title": ["t", "t"],
                "text": [topic(first), topic(first + 1)],
                "language": "en",
                "messages": pl.Series([None, None], dtype=pl.String),
            }
        ),
        clean_shards_table(layout, key),
    )


def table_rows(layout) -> list[tuple]:
    found = index.connect(layout.lancedb).open_table("chunks").to_arrow().to_pylist()
    return sorted((r["chunk_id"], r["batch"], tuple(r["vector"])) for r in found)


def test_a_damaged_lancedb_fragment_is_found_and_rebuilt_from_upstream(
    layout, instance, resources, monkeypatch, capsys
):
    keys = ["web/b1", "web/b2"]
    instance.add_dynamic_partitions(BATCHES, keys)
    for first, key in enumerate(keys):
        clean_batch(layout, key, 2 * first)
        result = dg.materialize(
            [chunks, embeddings, rag_index],
            instance=instance,
            resources=resources,
            partition_key=key,
        )
        assert result.success
    before = table_rows(layout)
    assert {r[1] for r in before} == {"b1", "b2"}
    fragment = sorted((layout.lancedb.local / "chunks.lance" / "data").glob("*.lance"))[0]
    fragment.unlink()
    assert verify_checksums(layout.lancedb) == [f"data/{fragment.name}: missing"]

    # Search says what is wrong and what to do, without a stack trace.
    monkeypatch.setenv("LLAMA_DATA_ROOT", str(layout.root))
    monkeypatch.setenv("DAGSTER_HOME", str(layout.root.parent / "dagster_home"))
    assert cli.main(["search", "statement", "--mode", "fts"]) == 1
    err = capsys.readouterr().err
    assert "cannot be read" in err and "restore-index" in err and "Traceback" not in err

    # The next rag_index run (any batch) rebuilds the table from the embeddings.
    result = dg.materialize(
        [rag_index], instance=instance, resources=resources, partition_key=keys[1]
    )
    meta = result.asset_materializations_for_node("rag_index")[0].metadata
    assert meta["rebuilt_from_upstream"].value == [keys[0]]
    assert table_rows(layout) == before
    assert verify_checksums(layout.lancedb) == []
    assert len(list(layout.lancedb.local.glob("chunks.lance.corrupt-*"))) == 1


def test_a_flipped_byte_in_a_lancedb_file_is_found(tmp_path):
    table = index.open_table(index.connect(tmp_path), dim=4)
    index.upsert_batch(table, rows([f"a-{i}" for i in range(20)], "b1"), "s", "b1")
    index.maintain_indexes(table)
    assert verify_checksums(tmp_path) == []
    fragment = sorted((tmp_path / "chunks.lance" / "data").glob("*.lance"))[0]
    data = bytearray(fragment.read_bytes())
    data[len(data) // 4] ^= 0x01  # may read back as a wrong value, without an error
    fragment.write_bytes(bytes(data))
    assert verify_checksums(tmp_path) == [f"data/{fragment.name}: sha256 mismatch"]


def test_a_damaged_fine_tune_fails_the_eval_once_naming_its_owner(layout, instance, resources):
    checkpoint = layout.models("tiny", "v1")
    (checkpoint / "adapter").mkdir(parents=True)
    (checkpoint / "adapter" / "adapter_model.safetensors").write_bytes(b"flipped")
    (checkpoint / "manifest.json").write_text(
        json.dumps({"files": {"adapter/adapter_model.safetensors": {"sha256": "0" * 64}}})
    )
    (layout.models("tiny") / "latest.json").write_text(json.dumps({"version": "v1"}))
    result = dg.materialize(
        [eval_report],
        instance=instance,
        resources=resources,
        partition_key="tiny",
        raise_on_error=False,
    )
    assert not result.success
    failures = [e for e in result.all_events if e.is_step_failure]
    assert len(failures) == 1  # not retried: reading it again cannot help
    data = failures[0].step_failure_data.user_failure_data
    assert data.metadata["owner_asset"].value == "finetuned_checkpoint"
    assert "re-materialising finetuned_checkpoint for partition tiny" in data.description
    assert "adapter/adapter_model.safetensors: sha256" in data.description


def test_a_corrupt_training_snapshot_is_rebuilt_by_its_owner(layout, instance, resources):
    from llama_assets.training.assets import finetuned_checkpoint, training_dataset
    from sensors.shard_repair import corrupt_snapshot_repair_sensor

    instance.add_dynamic_partitions(BATCHES, ["web/b1"])
    clean_batch(layout, "web/b1", 0)
    assert dg.materialize([training_dataset], instance=instance, resources=resources).success
    train = layout.training_dataset / "train"
    part = train.local / read_manifest(train)["shards"][0]["file"]
    part.write_bytes(part.read_bytes()[:-10])
    failed = dg.materialize(
        [finetuned_checkpoint],
        instance=instance,
        resources=resources,
        partition_key="tiny",
        raise_on_error=False,
    )
    failures = [e for e in failed.all_events if e.is_step_failure]
    assert len(failures) == 1  # not retried
    context = dg.build_run_status_sensor_context(
        sensor_name="corrupt_snapshot_repair_sensor",
        dagster_instance=instance,
        dagster_run=failed.dagster_run,
        dagster_event=failed.get_run_failure_event(),
    ).for_run_failure()
    [request] = corrupt_snapshot_repair_sensor(context)
    assert request.tags["llama/rebuild"] == "training_dataset"
    # The repair run: the snapshot is rewritten from the clean shards.
    assert dg.materialize([training_dataset], instance=instance, resources=resources).success
    assert read_table(layout.training_dataset / "train").height > 0
