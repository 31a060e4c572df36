"""Every asset, the asset graph, and the jobs: the per-batch pipeline, the dataset
snapshot, and the per-variant chain.

The lists below say which assets exist and which job runs them, not in what
order: Dagster orders the steps of a run from the graph, and
`llama_assets.staleness` finds what is behind from it.
"""

from __future__ import annotations

import functools

import dagster as dg
from dagster._core.definitions.assets.graph.asset_graph import AssetGraph

from llama_assets.curate.assets import (
    clean_shards,
    corpus_profile,
    review_queue,
    validated_documents,
)
from llama_assets.deployment.assets import eval_history, eval_report, promoted_model
from llama_assets.deployment.rollout_assets import serving_deployment
from llama_assets.ingest.assets import raw_documents
from llama_assets.partitions import batch_partitions, variant_partitions
from llama_assets.retrieval.assets import chunks, embeddings, rag_index
from llama_assets.retrieval.drift_assets import embedding_drift
from llama_assets.training.assets import finetuned_checkpoint, training_dataset

ALL_ASSETS = [
    raw_documents,
    validated_documents,
    review_queue,
    corpus_profile,
    clean_shards,
    chunks,
    embeddings,
    embedding_drift,
    rag_index,
    training_dataset,
    finetuned_checkpoint,
    eval_report,
    promoted_model,
    serving_deployment,
    eval_history,
]
BATCH_ASSETS = [a for a in ALL_ASSETS if a.partitions_def == batch_partitions]
"""Every asset partitioned by landing batch: the batch pipeline."""
VARIANT_ASSETS = [a for a in ALL_ASSETS if a.partitions_def == variant_partitions]
"""Every asset partitioned by model variant: fine-tune, eval, promotion."""


@functools.cache
def asset_graph() -> AssetGraph:
    """The asset graph of the code location (parents, partition mappings, order)."""
    return AssetGraph.from_assets(ALL_ASSETS)


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
    description="Fine-tune a variant, evaluate it, make it the release candidate if the gate "
    "passes, and start its rollout.",
)
rollout_job = dg.define_asset_job(
    "serving_rollout",
    selection=dg.AssetSelection.assets(serving_deployment),
    partitions_def=variant_partitions,
    description="One move of a variant's rollout (advance, promote, abort, pause, resume, "
    "blue-green switch or switch back), decided by the canary sensor or a person.",
)
JOBS = [batch_job, dataset_job, model_job]
"""The jobs that bring assets up to date (`run` plans with them); `rollout_job` only moves
a rollout, one command at a time."""

QUIET_RUN_CONFIG = {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}
"""Run config of the CLI's in-process runs: the CLI reports progress and failures
in its own lines and sentences; Dagster's console logger would print every event
(and each failure again with its stack trace)."""


def job_for(partitions_def: dg.PartitionsDefinition | None) -> dg.UnresolvedAssetJobDefinition:
    """The job that runs assets with `partitions_def`."""
    return next(job for job in JOBS if job.partitions_def == partitions_def)
