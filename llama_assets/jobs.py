"""Jobs: the per-batch pipeline, the dataset snapshot, and the per-variant chain."""

from __future__ import annotations

import dagster as dg

from llama_assets.curate.assets import (
    clean_shards,
    corpus_profile,
    review_queue,
    validated_documents,
)
from llama_assets.deployment.assets import eval_report, promoted_model
from llama_assets.ingest.assets import raw_documents
from llama_assets.partitions import batch_partitions, variant_partitions
from llama_assets.retrieval.assets import chunks, embeddings, rag_index
from llama_assets.retrieval.drift_assets import embedding_drift
from llama_assets.training.assets import finetuned_checkpoint, training_dataset

BATCH_ASSETS = [
    raw_documents,
    validated_documents,
    review_queue,
    corpus_profile,
    clean_shards,
    chunks,
    embeddings,
    embedding_drift,
    rag_index,
]
VARIANT_ASSETS = [finetuned_checkpoint, eval_report, promoted_model]
ALL_ASSETS = [*BATCH_ASSETS, training_dataset, *VARIANT_ASSETS]

batch_job = dg.define_asset_job(
    "batch_pipeline",
    selection=dg.AssetSelection.assets(*BATCH_ASSETS),
    partitions_def=batch_partitions,
    description="Everything one landing batch feeds: raw -> validated -> review queue, profile, "
    "clean shards -> chunks -> embeddings -> rag_index.",
)
dataset_job = dg.define_asset_job(
    "training_dataset_snapshot", selection=dg.AssetSelection.assets(training_dataset)
)
model_job = dg.define_asset_job(
    "train_evaluate_promote",
    selection=dg.AssetSelection.assets(*VARIANT_ASSETS),
    partitions_def=variant_partitions,
    description="Fine-tune a variant, evaluate it, and move its champion alias if the gate passes.",
)
