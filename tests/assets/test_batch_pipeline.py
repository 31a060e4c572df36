"""The batch pipeline materialised for real: raw -> ... -> rag_index in tmp_path."""

from __future__ import annotations

import json
import random

import dagster as dg
import lancedb
import polars as pl
import pytest

from llama_assets.ingest.assets import raw_documents
from llama_assets.ingest.readers import make_doc_id
from llama_assets.jobs import BATCH_ASSETS
from llama_assets.partitions import BATCHES
from tests.landing import GERMAN, jsonl, land, part, read_jsonl, topic


def near_copy(text: str) -> str:
    words = text.split(" ")
    rng = random.Random(0)
    for i in rng.sample(range(len(words)), len(words) // 100):
        words[i] = "variant"
    return " ".join(words)


def materialize_batch(key, instance, resources):
    # One run of the whole batch pipeline: Dagster orders the steps from the graph.
    result = dg.materialize(BATCH_ASSETS, instance=instance, resources=resources, partition_key=key)
    assert result.success


@pytest.fixture
def first_batch(layout, instance):
    key = "docs/b1"
    # 3 of 11 records are planted bad: this source tolerates it (per-source policy).
    layout.sources_config.parent.mkdir(parents=True, exist_ok=True)
    layout.sources_config.write_text("[sources.docs]\nmax_reject_rate = 0.5\n")
    land(
        layout,
        key,
        {
            "a.md": f"# Topic A\n\n{topic(0)}\n",
            "nested/b.txt": topic(1),
            "records.jsonl": jsonl(
                {"id": "c", "text": topic(2)},
                {"id": "dup", "text": topic(2)},  # exact duplicate of record 0
                {"id": "near", "text": near_copy(topic(3))},
                {"id": "orig", "text": topic(3)},
                '{"id": "broken", "text": "unterminated',
                {"id": "empty", "text": "  "},
                {"id": "de", "text": GERMAN},
                {"id": "pii", "text": topic(4) + "\n\nMail jane.doe@example.org today."},
            ),
            "image.png": b"\x89PNG\r\n\x1a\n\x00\x00binary",
        },
    )
    instance.add_dynamic_partitions(BATCHES, [key])
    return key


def doc(key: str, path: str, record: int) -> str:
    source, batch = key.split("/")
    return make_doc_id(source, batch, path, record)


def test_batch_pipeline_writes_every_artifact(first_batch, layout, instance, resources):
    key = first_batch
    materialize_batch(key, instance, resources)

    raw_rejects = read_jsonl(layout.quarantine(key) / "raw_documents.jsonl")
    assert sorted(r["reason"] for r in raw_rejects) == sorted(
        ["invalid_json", "empty_text", "unsupported_format"]
    )
    validated_rejects = read_jsonl(layout.quarantine(key) / "validated_documents.jsonl")
    assert [(r["path"], r["record"], r["reason"]) for r in validated_rejects] == [
        ("records.jsonl", 6, "language:de")
    ]
    removed = {
        (r["path"], r["record"]): r["reason"].split(":")[0]
        for r in read_jsonl(layout.quarantine(key) / "clean_shards.jsonl")
    }
    # The survivor of each cluster is the smaller doc_id.
    dup_pair = sorted([(doc(key, "records.jsonl", 0), 0), (doc(key, "records.jsonl", 1), 1)])
    near_pair = sorted([(doc(key, "records.jsonl", 2), 2), (doc(key, "records.jsonl", 3), 3)])
    assert removed == {
        ("records.jsonl", dup_pair[1][1]): "exact_duplicate",
        ("records.jsonl", near_pair[1][1]): "near_duplicate",
    }

    manifest = json.loads((layout.shards(key) / "manifest.json").read_text())
    shards = pl.read_parquet(part(layout.shards(key)))
    assert manifest["rows"] == shards.height == 5  # a, b, c, orig-or-near, pii
    assert all(s["sha256"] for s in manifest["shards"])
    assert not shards["text"].str.contains("jane.doe@example.org").any()

    table = lancedb.connect(str(layout.lancedb)).open_table("chunks")
    rows = table.to_arrow().to_pylist()
    chunk_manifest = json.loads((layout.staging("chunks", key) / "manifest.json").read_text())
    assert len(rows) == chunk_manifest["rows"] > shards.height
    assert {r["doc_id"] for r in rows} == set(shards["doc_id"])
    assert len({r["chunk_id"] for r in rows}) == len(rows)
    assert not any("jane.doe@example.org" in r["text"] for r in rows)
    assert json.loads(layout.profile(key).read_text())["drift"]["baseline"] is None


def test_rematerialising_a_batch_is_idempotent(first_batch, layout, instance, resources):
    key = first_batch
    materialize_batch(key, instance, resources)
    table = lancedb.connect(str(layout.lancedb)).open_table("chunks")
    before = sorted(r["chunk_id"] for r in table.to_arrow().to_pylist())
    shards_before = part(layout.shards(key)).read_bytes()

    materialize_batch(key, instance, resources)
    after = sorted(r["chunk_id"] for r in table.to_arrow().to_pylist())
    assert after == before
    assert part(layout.shards(key)).read_bytes() == shards_before
    event = instance.get_latest_materialization_event(dg.AssetKey("rag_index"))
    metadata = event.asset_materialization.metadata
    assert metadata["inserted"].value == 0 and metadata["deleted"].value == 0
    assert metadata["table_rows"].value == len(before)


def test_later_batch_is_deduplicated_against_earlier_ones(first_batch, layout, instance, resources):
    materialize_batch(first_batch, instance, resources)
    key = "docs/b2"
    land(layout, key, {"copy.txt": topic(1), "new.txt": topic(5)})
    instance.add_dynamic_partitions(BATCHES, [key])
    materialize_batch(key, instance, resources)

    removed = read_jsonl(layout.quarantine(key) / "clean_shards.jsonl")
    assert [(r["path"], r["reason"].split(":")[:2]) for r in removed] == [
        ("copy.txt", ["exact_duplicate", doc(first_batch, "nested/b.txt", 0)])
    ]
    assert pl.read_parquet(part(layout.shards(key)))["path"].to_list() == ["new.txt"]
    # Re-materialising the first batch never dedups it against the later one.
    materialize_batch(first_batch, instance, resources)
    assert json.loads((layout.shards(first_batch) / "manifest.json").read_text())["rows"] == 5
    profile = json.loads(layout.profile(key).read_text())
    assert profile["drift"]["baseline"] == "pooled earlier batches"


def test_a_batch_of_nothing_but_bad_input_flows_through_every_stage(layout, instance, resources):
    key = "docs/junk"
    land(
        layout,
        key,
        {
            "broken.jsonl": '{"text": "unterminated\n{"text": 5}\n',
            "blob.bin": b"\x00\x01\x02",
            "short.txt": "This is the whole of a note that is far too short to be kept.",
        },
    )
    instance.add_dynamic_partitions(BATCHES, [key])
    # With the default policy (1%) the blocking reject-rate check fails the batch...
    blocked = dg.materialize(
        [raw_documents],
        instance=instance,
        resources=resources,
        partition_key=key,
        raise_on_error=False,
    )
    assert not blocked.success
    (check,) = blocked.get_asset_check_evaluations()
    assert check.check_name == "reject_rate_within_limit" and not check.passed
    assert check.metadata["reject_rate"].value == 0.75
    # ... and a source that tolerates it flows through every stage.
    layout.sources_config.write_text("[sources.docs]\nmax_reject_rate = 1.0\n")
    materialize_batch(key, instance, resources)
    reasons = sorted(
        r["reason"].split(":")[0]
        for stage in ("raw_documents", "validated_documents")
        for r in read_jsonl(layout.quarantine(key) / f"{stage}.jsonl")
    )
    assert reasons == ["invalid_json", "unsupported_format", "wrong_type"]
    # The short note fails the quality rules: searchable, never trained on.
    shards = pl.read_parquet(part(layout.shards(key)))
    assert shards.select("path", "for_index", "for_training").rows() == [("short.txt", True, False)]
    assert shards["training_exclusion"][0].startswith("quality:gopher_min_words")
    table = lancedb.connect(str(layout.lancedb)).open_table("chunks")
    assert table.count_rows() == 1
