"""Corruption: each damaged artifact is detected, named with the asset that owns
it, and rebuilt from upstream or failed without retries, with a sentence that
says what to do.

A flipped byte in a clean shard, with the repair sensor's run, is
tests/sensors/test_shard_repair.py; a corrupt dedup index is
tests/reliability/test_dedup_index.py; corrupt training checkpoints are skipped
for the previous valid one (tests/unit/test_training_resume.py). The ``chunks``
table's files are checked on both stores: a local folder and a real S3 server.
"""

from __future__ import annotations

import json
from pathlib import PurePosixPath

import dagster as dg
import polars as pl
import pytest

from llama_assets import cli
from llama_assets.base.layout import DataLayout
from llama_assets.base.shards import read_manifest
from llama_assets.base.store import Location, open_root
from llama_assets.curate.assets import clean_shards_table, validated_documents
from llama_assets.deployment.assets import eval_report
from llama_assets.partitions import BATCHES
from llama_assets.retrieval import index
from llama_assets.retrieval.assets import chunks, embeddings, rag_index
from llama_assets.retrieval.index_files import verify_checksums
from llama_assets.tables import CORRUPT_TABLE, map_table, read_table, staged, write_table
from resources.device import DeviceResource
from resources.embedder import EmbedderResource
from resources.storage import DataRoot
from resources.vector_store import LanceDBResource
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


@pytest.fixture(params=["local", "s3"])
def root(request, tmp_path) -> str:
    """A data root: a local folder, or a prefix of its own on the real S3 server."""
    if request.param == "local":
        return str(tmp_path / "data")
    return request.getfixturevalue("s3_uri")


def fragments(db: Location) -> list[Location]:
    """The data files of the ``chunks`` table under the LanceDB folder `db`."""
    data = db / "chunks.lance" / "data"
    return [data / o.key for o in data.files() if o.key.endswith(".lance")]


def test_a_damaged_lancedb_fragment_is_found_and_rebuilt_from_upstream(
    root, tmp_path, instance, monkeypatch, capsys
):
    layout = DataLayout(root)
    resources = {
        "storage": DataRoot(root=root),
        "vector_store": LanceDBResource(uri=f"{root}/lancedb"),
        "embedder": EmbedderResource(),
        "device": DeviceResource(preference="cpu"),
    }
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
    fragment = fragments(layout.lancedb)[0]
    fragment.unlink()
    kept = {f.name for f in fragments(layout.lancedb)}
    assert verify_checksums(layout.lancedb) == [f"data/{fragment.name}: missing"]

    # Search names the missing file and what to do, without a stack trace.
    monkeypatch.setenv("LLAMA_DATA_ROOT", root)
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))
    assert cli.main(["search", "statement", "--mode", "fts"]) == 1
    err = capsys.readouterr().err
    assert "cannot be read" in err and "restore-index" in err and "Traceback" not in err
    assert f"data/{fragment.name}: missing" in err

    # The next rag_index run (any batch) rebuilds the table from the embeddings.
    result = dg.materialize(
        [rag_index], instance=instance, resources=resources, partition_key=keys[1]
    )
    meta = result.asset_materializations_for_node("rag_index")[0].metadata
    assert meta["rebuilt_from_upstream"].value == [keys[0]]
    assert table_rows(layout) == before
    assert verify_checksums(layout.lancedb) == []
    aside = [p for p in layout.lancedb.iterdir() if p.name.startswith("chunks.lance.corrupt-")]
    assert len(aside) == 1
    assert kept and kept <= {PurePosixPath(o.key).name for o in aside[0].files()}


@pytest.mark.parametrize("damage", ["deleted", "truncated", "overwritten"])
def test_a_damaged_lancedb_file_is_found(root, damage):
    db = open_root(root) / "lancedb"
    table = index.open_table(index.connect(db), dim=4)
    index.upsert_batch(table, rows([f"a-{i}" for i in range(20)], "b1"), "s", "b1")
    index.maintain_indexes(table)
    assert verify_checksums(db) == []
    fragment = fragments(db)[0]
    data = bytearray(fragment.read_bytes())
    if damage == "deleted":
        fragment.unlink()
        expected = "missing"
    elif damage == "truncated":
        fragment.write_bytes(bytes(data[:100]))
        expected = f"size 100 != {len(data)} recorded"
    else:
        data[len(data) // 4] ^= 0x01  # may read back as a wrong value, without an error
        fragment.write_bytes(bytes(data))
        expected = f"{'sha256' if db.is_local else 'etag'} mismatch"
    assert verify_checksums(db) == [f"data/{fragment.name}: {expected}"]


def test_verifying_an_s3_table_reads_its_record_and_one_listing(s3_uri):
    db = open_root(s3_uri) / "lancedb"
    table = index.open_table(index.connect(db), dim=4)
    index.upsert_batch(table, rows([f"a-{i}" for i in range(20)], "b1"), "s", "b1")
    index.maintain_indexes(table)
    calls = []
    db.store.client.meta.events.register(
        "before-call.s3", lambda model, **_: calls.append(model.name)
    )
    assert verify_checksums(db) == []
    assert calls == ["GetObject", "ListObjectsV2"]  # no table file is downloaded


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
