"""Embedding drift of a batch (layer 3 once embeddings exist): an asset
downstream of `embeddings`, beside the text-statistics drift of `corpus_profile`."""

import json

import dagster as dg
import numpy as np

from llama_assets.base.atomic import atomic_write_json
from llama_assets.base.layout import split_batch_key
from llama_assets.base.sources import drift_baseline_keys, source_policy, sources_file
from llama_assets.curate.embedding_drift import EmbeddingSummary, pool_summaries
from llama_assets.curate.embedding_drift import embedding_drift as compare_embeddings
from llama_assets.partitions import batch_partitions, earlier_batch_keys
from llama_assets.retrieval.assets import embeddings
from llama_assets.tables import read_table, staged
from resources.storage import LocalDataRoot


@dg.asset(
    partitions_def=batch_partitions,
    deps=[embeddings],
    group_name="retrieval",
    kinds={"numpy"},
    description="Embedding drift of the batch against its source's baseline (rolling or "
    "pinned, as corpus_profile): cosine distance of mean embeddings, and MMD² (RBF kernel) "
    "on a 512-vector sample with a permutation p-value. drifted when MMD² > 0.015 and "
    "p < 0.05; the drift sensor acts on it.",
)
def embedding_drift(
    context: dg.AssetExecutionContext, storage: LocalDataRoot
) -> dg.MaterializeResult:
    layout, key = storage.layout, context.partition_key
    source, _ = split_batch_key(key)
    table = read_table(staged(layout, embeddings.key, key), ["chunk_id", "vector"])
    vectors = table["vector"].to_numpy().astype(np.float32) if table.height else np.zeros((0, 1))
    summary = EmbeddingSummary.of(table["chunk_id"].to_list(), vectors)
    summary.save(layout.embedding_summary(key))
    policy = source_policy(source, sources_file(layout.sources_config))
    keys, baseline_name = drift_baseline_keys(
        policy, key, earlier_batch_keys(context.instance, key)
    )
    baseline = pool_summaries(
        [
            EmbeddingSummary.load(layout.embedding_summary(k))
            for k in keys
            if layout.embedding_summary(k).is_file()
        ]
    )
    result = compare_embeddings(summary, baseline)
    result["baseline"] = baseline_name if baseline is not None and "mmd2" in result else None
    path = layout.embedding_drift(key)
    atomic_write_json(path, {"batch": key, "vectors": summary.count, "drift": result})
    metadata = {
        "vectors": summary.count,
        "drift_score": dg.MetadataValue.float(float(result["score"])),
        "drift_threshold": dg.MetadataValue.float(1.0),
        "drifted": dg.MetadataValue.bool(result["drifted"]),
        "baseline": dg.MetadataValue.text(result["baseline"] or "none"),
        "result": dg.MetadataValue.json(json.loads(json.dumps(result))),
        "path": dg.MetadataValue.path(str(path)),
    }
    for name in ("mmd2", "p_value", "mean_cosine_distance"):
        if name in result:
            metadata[name] = dg.MetadataValue.float(float(result[name]))
    return dg.MaterializeResult(metadata=metadata)
