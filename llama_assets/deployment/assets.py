"""Evaluation and promotion: eval_report per variant, and the champion gate."""

import json
import time

import dagster as dg

from evals.gate import evaluate_gate
from evals.report import render_markdown
from evals.suite import quality, serving
from llama_assets.base.atomic import atomic_write_json, atomic_write_text
from llama_assets.deployment.registry import nominate, promote, read_aliases
from llama_assets.partitions import variant_partitions
from llama_assets.policies import GPU_OP_TAGS, GPU_POOL
from llama_assets.retrieval.assets import rag_index
from llama_assets.retrieval.evaluation import evaluate_index, retrieval_metadata
from llama_assets.tables import read_table
from llama_assets.training.assets import (
    dataset_split,
    finetuned_checkpoint,
    read_dataset_manifest,
    training_dataset,
)
from llama_assets.training.checkpointer import (
    CorruptCheckpointError,
    read_trainer_state,
    verify_manifest,
)
from llama_assets.training.pipeline import load_checkpoint, pack
from llama_assets.training.variants import get_variant
from resources.device import DeviceResource
from resources.embedder import EmbedderResource
from resources.storage import LocalDataRoot
from resources.vector_store import LanceDBResource

MAX_VALIDATION_BLOCKS = 64
RETRIEVAL_QUERIES = 50


def damaged_checkpoint(checkpoint, variant: str, error: Exception) -> dg.Failure:
    """A non-retryable Failure naming the damaged fine-tune, its owner and what to do:
    reading it again cannot help, re-materialising its owner can (the training run
    resumes from its newest valid training checkpoint, so little is retrained)."""
    return dg.Failure(
        description=f"the fine-tune {checkpoint} is damaged ({error}). It is rebuilt by "
        f"re-materialising finetuned_checkpoint for partition {variant} (in the UI, or "
        f"`dagster asset materialize -m llama_assets.definitions --select "
        f"finetuned_checkpoint --partition {variant}`), then eval_report.",
        metadata={
            "damaged_checkpoint": dg.MetadataValue.path(str(checkpoint)),
            "owner_asset": "finetuned_checkpoint",
            "partition": variant,
        },
        allow_retries=False,
    )


def latest_version(storage: LocalDataRoot, variant: str) -> str:
    path = storage.layout.models(variant) / "latest.json"
    if not path.exists():
        raise dg.Failure(f"{path} is missing: materialise finetuned_checkpoint[{variant}] first")
    return json.loads(path.read_text())["version"]


@dg.asset(
    partitions_def=variant_partitions,
    deps=[
        finetuned_checkpoint,
        training_dataset,
        dg.AssetDep(rag_index, partition_mapping=dg.AllPartitionMapping()),
    ],
    group_name="deployment",
    kinds={"pytorch", "markdown"},
    pool=GPU_POOL,
    op_tags=GPU_OP_TAGS,
    description="Held-out perplexity of the base against the fine-tuned model, "
    "retrieval recall@k, MRR@k and nDCG@k (vector, fts and hybrid search; golden set "
    "and generated known-item queries), and serving latency and "
    "throughput; `reports/<variant>/<version>/report.json` and `report.md`.",
)
def eval_report(
    context: dg.AssetExecutionContext,
    storage: LocalDataRoot,
    device: DeviceResource,
    embedder: EmbedderResource,
    vector_store: LanceDBResource,
) -> dg.MaterializeResult:
    layout = storage.layout
    variant = get_variant(context.partition_key)
    version = latest_version(storage, variant.name)
    checkpoint = layout.models(variant.name, version)
    dev = device.device()
    started = time.perf_counter()
    try:
        verify_manifest(checkpoint)  # every file's sha256, before anything is loaded
        state = read_trainer_state(checkpoint)
        base, finetuned, tokenizer = load_checkpoint(variant, checkpoint, dev)
    except (CorruptCheckpointError, OSError, ValueError) as exc:
        raise damaged_checkpoint(checkpoint, variant.name, exc) from exc
    texts = read_table(dataset_split(layout, "validation"), ["text"])["text"].to_list()
    blocks = pack(tokenizer, texts, state["config"]["seq_len"])[:MAX_VALIDATION_BLOCKS]
    if blocks.shape[0] == 0:
        raise dg.Failure("the validation split packs into no block: ingest more text")
    quality_figures = quality(base, finetuned, blocks, dev)
    serving_figures = serving(finetuned, blocks[0, :32], dev)

    table = vector_store.chunks_table(embedder.dimension)
    retrieval_figures, golden_errors = evaluate_index(
        table, embedder, layout.retrieval_golden_set, RETRIEVAL_QUERIES
    )
    for error in golden_errors:
        context.log.warning(f"{layout.retrieval_golden_set}: {error}")
    report = {
        "variant": variant.name,
        "version": version,
        "data_version": read_dataset_manifest(storage)["data_version"],
        "device": device.describe(),
        "quality": quality_figures,
        "retrieval": retrieval_figures,
        "serving": serving_figures,
        "training": {k: state[k] for k in ("steps", "tokens_seen", "seconds")}
        | {"final_loss": state["losses"][-1]},
    }
    out = layout.reports(variant.name, version)
    markdown = render_markdown(report)
    atomic_write_json(out / "report.json", report)
    atomic_write_text(out / "report.md", markdown)
    recall_key = f"recall@{retrieval_figures['k']}"
    return dg.MaterializeResult(
        metadata={
            "version": version,
            "base_perplexity": dg.MetadataValue.float(quality_figures["base_perplexity"]),
            "finetuned_perplexity": dg.MetadataValue.float(quality_figures["finetuned_perplexity"]),
            "perplexity_improvement": dg.MetadataValue.float(quality_figures["improvement"]),
            recall_key: dg.MetadataValue.float(retrieval_figures[recall_key]),
            "mrr": dg.MetadataValue.float(retrieval_figures[f"mrr@{retrieval_figures['k']}"]),
            **retrieval_metadata(retrieval_figures),
            "generation_tokens_per_second": dg.MetadataValue.float(
                serving_figures["tokens_per_second"]
            ),
            "first_token_ms": dg.MetadataValue.float(serving_figures["first_token_ms"]),
            "seconds": dg.MetadataValue.float(round(time.perf_counter() - started, 2)),
            "report": dg.MetadataValue.md(markdown),
            "path": dg.MetadataValue.path(str(out / "report.json")),
        }
    )


@dg.asset(
    partitions_def=variant_partitions,
    deps=[eval_report],
    group_name="deployment",
    kinds={"json"},
    description="The variant's release: the newest checkpoint becomes the release candidate "
    "when its eval report passes the gate against the current champion's, and "
    "`serving_deployment` rolls it out; the champion alias moves only when the rollout "
    "reaches 100% (the first champion, with nothing serving yet, is promoted at once). "
    "History is kept in `models/<variant>/aliases.json`; `llama-platform rollback` "
    "moves it back.",
)
def promoted_model(
    context: dg.AssetExecutionContext, storage: LocalDataRoot
) -> dg.MaterializeResult:
    layout = storage.layout
    variant = context.partition_key
    version = latest_version(storage, variant)
    challenger = json.loads((layout.reports(variant, version) / "report.json").read_text())
    aliases = read_aliases(layout.aliases(variant))
    champion_version = aliases["champion"]
    if champion_version == version:
        decision, action = None, "already champion"
    elif aliases.get("candidate") == version:
        decision, action = None, "already the release candidate"
    else:
        champion = (
            json.loads((layout.reports(variant, champion_version) / "report.json").read_text())
            if champion_version
            else None
        )
        decision = evaluate_gate(challenger, champion)
        if decision.passed and champion_version:
            aliases = nominate(
                layout.aliases(variant),
                version,
                reason=f"passed the gate against champion {champion_version}",
            )
            action = "release candidate"
        elif decision.passed:
            aliases = promote(
                layout.aliases(variant),
                version,
                reason="first champion: passed the gate against its base model",
            )
            action = "promoted"
        else:
            action = "kept champion"
            context.log.warning(f"{version} did not pass the gate: {'; '.join(decision.reasons)}")
    return dg.MaterializeResult(
        metadata={
            "champion": str(aliases["champion"]),
            "candidate": str(aliases.get("candidate")),
            "challenger": version,
            "action": action,
            "gate_passed": dg.MetadataValue.bool(decision.passed if decision else True),
            "gate_reasons": dg.MetadataValue.json(decision.reasons if decision else []),
            "history_length": len(aliases["history"]),
            "path": dg.MetadataValue.path(str(layout.aliases(variant))),
        }
    )
